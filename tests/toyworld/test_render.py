"""The renderer: deterministic, any size, and every attribute changes the pixels it should."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest

from toyworld.render import BACKGROUND_RGB, RGB, render_scene
from toyworld.scene import PATTERNS, Scene, make_pair, sample_scene

WHITE = np.array(BACKGROUND_RGB["white"])


def arr(scene: Scene, size: int = 64) -> np.ndarray:
    return np.asarray(render_scene(scene, size), dtype=np.int32)


def object_mask(a: np.ndarray, bg: str = "white") -> np.ndarray:
    """Pixels clearly different from the background."""
    return np.abs(a - np.array(BACKGROUND_RGB[bg])).sum(-1) > 60


def components(mask: np.ndarray) -> int:
    """Number of 4-connected components of a boolean mask."""
    seen = np.zeros_like(mask, dtype=bool)
    n = 0
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        n += 1
        queue = deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    queue.append((yy, xx))
    return n


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return xs.mean() / mask.shape[1], ys.mean() / mask.shape[0]


def test_deterministic_and_any_size():
    rng = random.Random(0)
    for _ in range(30):
        s = sample_scene(rng)
        assert render_scene(s).tobytes() == render_scene(s).tobytes()
    s = sample_scene(random.Random(1))
    for size in (16, 32, 64, 100, 224):
        img = render_scene(s, size)
        assert img.mode == "RGB" and img.size == (size, size)
    assert render_scene(s, 48, supersample=1).size == (48, 48)


def test_background_colour_fills_the_corners():
    for bg in BACKGROUND_RGB:
        a = arr(Scene(background=bg, size="small"))
        assert tuple(a[0, 0]) == BACKGROUND_RGB[bg]
        assert tuple(a[-1, -1]) == BACKGROUND_RGB[bg]


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_every_pair_differs_in_many_pixels(pattern):
    """A detail must cost pixels: at 64 px every benchmark pair differs in >= 40 pixels."""
    rng = random.Random(4)
    for _ in range(25):
        a, b, _, _ = make_pair(rng, pattern)
        diff = (np.abs(arr(a) - arr(b)).sum(-1) > 60).sum()
        assert diff >= 40, (pattern, a, b, diff)


def test_orientation_turns_the_shape():
    for shape in ("arrow", "triangle"):
        left, right = (
            arr(Scene(shape=shape, orientation="left")),
            arr(Scene(shape=shape, orientation="right")),
        )
        up, down = arr(Scene(shape=shape, orientation="up")), arr(Scene(shape=shape, orientation="down"))
        # left is the mirror image of right, up of down (to within edge rounding), and they really differ
        assert np.abs(left - right[:, ::-1]).mean() < 3
        assert np.abs(up - down[::-1]).mean() < 3
        assert (np.abs(left - right).sum(-1) > 60).mean() > 0.05
        assert (np.abs(up - left).sum(-1) > 60).mean() > 0.05
        # the wide part (arrow head / triangle base vs tip) is on the side it points to for an arrow
    m_left, m_right = (
        object_mask(arr(Scene(shape="arrow", orientation="left"))),
        object_mask(arr(Scene(shape="arrow", orientation="right"))),
    )
    assert m_left[:, :32].sum() > m_left[:, 32:].sum()
    assert m_right[:, 32:].sum() > m_right[:, :32].sum()


def test_position_moves_the_object():
    cx = {
        p: centroid(object_mask(arr(Scene(shape="square", position=p))))
        for p in ("left", "right", "top", "bottom", "center")
    }
    assert cx["left"][0] < 0.35 < 0.65 < cx["right"][0]
    assert cx["top"][1] < 0.35 < 0.65 < cx["bottom"][1]
    assert abs(cx["center"][0] - 0.5) < 0.03 and abs(cx["center"][1] - 0.5) < 0.03
    # a close-up keeps the object in its half of the picture
    assert centroid(object_mask(arr(Scene(shape="square", position="left", viewpoint="close"))))[0] < 0.4


def test_colour_is_the_named_colour():
    for name, rgb in RGB.items():
        a = arr(Scene(shape="square", color=name))
        assert np.abs(a[32, 32] - np.array(rgb)).max() <= 2


def test_count_is_the_number_of_blobs():
    for shape in ("circle", "square", "star", "arrow"):
        for n in (1, 2, 3):
            s = sample_scene(
                random.Random(n),
                shape=shape,
                count=n,
                fill="solid",
                texture="plain",
                feature=None,
                text=None,
                viewpoint="normal",
                size="large",
            )
            assert components(object_mask(arr(s))) == n


def test_fill_empties_the_inside():
    solid, outline = arr(Scene(shape="square")), arr(Scene(shape="square", fill="outline"))
    assert tuple(outline[32, 32]) == tuple(WHITE)
    assert tuple(solid[32, 32]) == RGB["red"]
    assert object_mask(outline).sum() < 0.5 * object_mask(solid).sum()
    assert components(object_mask(outline)) == 1


def test_feature_marks_the_middle():
    plain = arr(Scene(shape="circle"))
    dot = arr(Scene(shape="circle", feature="dot"))
    ring = arr(Scene(shape="circle", feature="ring"))
    black = lambda a: a.sum(-1) < 60  # noqa: E731
    assert black(plain).sum() == 0
    assert tuple(dot[32, 32]) == (0, 0, 0) and black(dot).sum() >= 40
    assert tuple(ring[32, 32]) == RGB["red"] and black(ring).sum() >= 40  # a ring is empty in the middle
    # on an arrow the mark sits in the head, i.e. on the side the arrow points to
    for orient, side in (("right", slice(32, 64)), ("left", slice(0, 32))):
        a = arr(Scene(shape="arrow", orientation=orient, feature="dot"))
        assert black(a)[:, side].sum() > 0.8 * black(a).sum()


def test_texture_stripes_rows_checkers_both_ways():
    dark = lambda a: np.abs(a - np.array(RGB["blue"]) // 2).sum(-1) < 40  # noqa: E731
    plain = dark(arr(Scene(shape="square", color="blue")))
    striped = dark(arr(Scene(shape="square", color="blue", texture="striped")))[20:44, 20:44]
    checkered = dark(arr(Scene(shape="square", color="blue", texture="checkered")))[20:44, 20:44]
    assert plain.sum() == 0
    assert 0.25 < striped.mean() < 0.75 and 0.25 < checkered.mean() < 0.75
    # stripes: every row is (almost) all dark or all light; checkers: rows mix dark and light
    row_frac = striped.mean(1)
    assert ((row_frac < 0.1) | (row_frac > 0.9)).mean() > 0.8
    row_frac = checkered.mean(1)
    assert ((row_frac > 0.2) & (row_frac < 0.8)).mean() > 0.8


def test_letters_are_drawn_and_distinct():
    black = {ch: arr(Scene(shape="square", text=ch)).sum(-1) < 100 for ch in "AEHLTX"}
    for ch, m in black.items():
        assert m.sum() >= 40, ch
    for c1 in black:
        for c2 in black:
            if c1 < c2:
                assert (black[c1] ^ black[c2]).sum() >= 30, (c1, c2)


def test_viewpoint_zooms():
    area = {
        v: object_mask(arr(Scene(shape="circle", size="small", viewpoint=v))).sum()
        for v in ("close", "normal", "far")
    }
    assert area["close"] > 2.5 * area["normal"] > 2.5 * 2.5 * area["far"]


def test_size_changes_the_area():
    large = object_mask(arr(Scene(shape="square", size="large"))).sum()
    small = object_mask(arr(Scene(shape="square", size="small"))).sum()
    assert large > 1.8 * small


def test_every_scene_renders_at_tiny_sizes_without_supersampling():
    """Textures at 16-32 px, 1x: bands thinner than a pixel must still draw (regression: PIL y1 < y0)."""
    rng = random.Random(0)
    for _ in range(300):
        scene = sample_scene(rng)
        for size in (16, 32):
            assert render_scene(scene, size, supersample=1).size == (size, size)
