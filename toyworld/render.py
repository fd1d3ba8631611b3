"""Draw a ``Scene`` with PIL: deterministic (no randomness at all: the scene says everything), any size.

Geometry lives in picture units (the picture is the unit square, y pointing down); the viewpoint is a zoom
of those units around a centre. Drawing happens at ``supersample`` x the output size and is reduced with a
box filter, so edges are anti-aliased and small sizes stay faithful.

Details are made to cost pixels (the toy world's lesson: a detail that moves a handful of pixels is not
learned): objects are large (a large object is ~54% of the picture wide), arrows and triangles have big
heads, marks and letters are thick black strokes in the middle of the object.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from toyworld.scene import Scene

Point = tuple[float, float]

RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 90, 220),
    "yellow": (240, 200, 30),
    "purple": (150, 60, 190),
    "orange": (250, 130, 20),
}
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "gray": (200, 200, 200),
    "beige": (238, 226, 200),
}
MARK_RGB = (0, 0, 0)

# Radius (half the width) of one copy, in picture units.
RADIUS = {"large": 0.27, "small": 0.18}
COUNT_SCALE = {1: 1.0, 2: 0.75, 3: 0.68}
POSITION_CENTRE: dict[str, Point] = {
    "center": (0.5, 0.5),
    "left": (0.29, 0.5),
    "right": (0.71, 0.5),
    "top": (0.5, 0.29),
    "bottom": (0.5, 0.71),
}
COPY_CENTRES: dict[int, list[Point]] = {
    1: [(0.5, 0.5)],
    2: [(0.28, 0.5), (0.72, 0.5)],
    3: [(0.28, 0.7), (0.72, 0.7), (0.5, 0.29)],
}
# Zoom factor; a close-up zooms toward the object but only 40% of the way, so it stays in its half.
ZOOM = {"normal": 1.0, "close": 1.8, "far": 0.55}
CLOSE_PULL = 0.4

# Shapes in object units (radius 1, y down), in their base direction.
_SQUARE = [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]
_TRIANGLE_UP = [(0.0, -1.0), (0.95, 0.85), (-0.95, 0.85)]
_ARROW_RIGHT = [
    (-1.0, -0.32),
    (-0.1, -0.32),
    (-0.1, -0.85),
    (1.0, 0.0),
    (-0.1, 0.85),
    (-0.1, 0.32),
    (-1.0, 0.32),
]
_STAR = [
    (
        (1.0 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5),
        -(1.0 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5),
    )
    for i in range(10)
]
# Where the mark / letter sits (object units, base direction): inside the widest part of the shape.
_ANCHOR: dict[str, Point] = {
    "circle": (0, 0),
    "square": (0, 0),
    "triangle": (0, 0.27),
    "arrow": (0.25, 0),
    "star": (0, 0),
}
# Quarter turns clockwise from the base direction (triangle: up, arrow: right).
_TURNS = {
    "triangle": {"up": 0, "right": 1, "down": 2, "left": 3},
    "arrow": {"right": 0, "down": 1, "left": 2, "up": 3},
}
# Capital letters as strokes in a [-1, 1] box (y down): no font files, identical on every machine.
GLYPHS: dict[str, list[list[Point]]] = {
    "A": [[(-0.8, 1), (0, -1), (0.8, 1)], [(-0.45, 0.3), (0.45, 0.3)]],
    "E": [[(0.75, -1), (-0.7, -1), (-0.7, 1), (0.75, 1)], [(-0.7, 0), (0.5, 0)]],
    "H": [[(-0.75, -1), (-0.75, 1)], [(0.75, -1), (0.75, 1)], [(-0.75, 0), (0.75, 0)]],
    "L": [[(-0.6, -1), (-0.6, 1), (0.75, 1)]],
    "T": [[(-0.85, -1), (0.85, -1)], [(0, -1), (0, 1)]],
    "X": [[(-0.8, -1), (0.8, 1)], [(0.8, -1), (-0.8, 1)]],
}
OUTLINE_WIDTH = 0.2  # border of an outline object, object units
OUTLINE_WIDTH_STAR = 0.12  # a star's arms are thin: a thinner border keeps its outline visibly empty
STRIPE_PERIOD = 0.5  # object units; dark band = half a period
CHECKER_CELL = 0.4
DOT_RADIUS = 0.3
RING_RADIUS, RING_WIDTH = 0.45, 0.14
GLYPH_HALF, GLYPH_WIDTH = 0.45, 0.2


def _turn(p: Point, quarter_turns: int) -> Point:
    x, y = p
    for _ in range(quarter_turns % 4):
        x, y = -y, x  # 90 degrees clockwise on screen (y down)
    return x, y


def object_centres(scene: Scene) -> tuple[list[Point], float]:
    """Centres of the copies and their radius, in picture units before the viewpoint zoom."""
    r = RADIUS[scene.size] * COUNT_SCALE[scene.count]
    dx, dy = scene.offset
    if scene.count == 1:
        cx, cy = POSITION_CENTRE[scene.position]
        return [(cx + dx, cy + dy)], r
    return [(x + dx, y + dy) for x, y in COPY_CENTRES[scene.count]], r


def view_transform(scene: Scene) -> tuple[float, Point]:
    """``(zoom, centre)``: picture point p is drawn at ``(p - centre) * zoom + 0.5``."""
    zoom = ZOOM[scene.viewpoint]
    if scene.viewpoint != "close":
        return zoom, (0.5, 0.5)
    centres, _ = object_centres(scene)
    gx = sum(c[0] for c in centres) / len(centres)
    gy = sum(c[1] for c in centres) / len(centres)
    return zoom, (0.5 + CLOSE_PULL * (gx - 0.5), 0.5 + CLOSE_PULL * (gy - 0.5))


def _shape_points(scene: Scene) -> list[Point]:
    if scene.shape == "square":
        pts = _SQUARE
    elif scene.shape == "triangle":
        pts = _TRIANGLE_UP
    elif scene.shape == "arrow":
        pts = _ARROW_RIGHT
    elif scene.shape == "star":
        pts = _STAR
    else:
        raise ValueError(f"no polygon for shape {scene.shape!r}")
    turns = _TURNS.get(scene.shape, {}).get(scene.orientation or "", 0)
    return [_turn(p, turns) for p in pts]


def _paint_layer(
    scene: Scene, big: int, centre: Point, r_px: float, colour: tuple[int, ...], dark: tuple[int, ...]
) -> Image.Image:
    """The object's paint at canvas size ``big``: plain ``colour``, or with ``dark`` stripes / squares."""
    ox, oy = centre
    layer = Image.new("RGB", (big, big), colour)
    if scene.texture != "plain":
        ldraw = ImageDraw.Draw(layer)
        left, top, right, bottom = ox - r_px, oy - r_px, ox + r_px, oy + r_px
        if scene.texture == "striped":
            period = STRIPE_PERIOD * r_px
            k = 0
            while top + k * period < bottom:
                y0 = top + k * period
                # max(): at tiny sizes a half period is under a pixel; keep the band at least one
                # pixel tall
                ldraw.rectangle([left, y0, right, max(y0, y0 + period / 2 - 1)], fill=dark)
                k += 1
        else:  # checkered
            cell = CHECKER_CELL * r_px
            n = int(math.ceil(2 * r_px / cell)) + 1
            for i in range(n):
                for j in range(n):
                    if (i + j) % 2 == 0:
                        x0, y0 = left + i * cell, top + j * cell
                        ldraw.rectangle([x0, y0, max(x0, x0 + cell - 1), max(y0, y0 + cell - 1)], fill=dark)
    return layer


def render_scene(scene: Scene, size: int = 64, supersample: int = 2) -> Image.Image:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image (deterministic: same scene, same pixels)."""
    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    big = size * max(1, int(supersample))
    img = Image.new("RGB", (big, big), BACKGROUND_RGB[scene.background])
    zoom, (vx, vy) = view_transform(scene)
    centres, radius = object_centres(scene)
    r_px = radius * zoom * big  # one object unit, in pixels
    turns = _TURNS.get(scene.shape, {}).get(scene.orientation or "", 0)
    colour = RGB[scene.color]
    dark = tuple(int(c * 0.5) for c in colour)
    draw = ImageDraw.Draw(img)

    for ux, uy in centres:
        ox = ((ux - vx) * zoom + 0.5) * big
        oy = ((uy - vy) * zoom + 0.5) * big

        def px(p: Point, ox: float = ox, oy: float = oy) -> Point:
            return (ox + p[0] * r_px, oy + p[1] * r_px)

        # Shape mask of this copy.
        mask = Image.new("L", (big, big), 0)
        mdraw = ImageDraw.Draw(mask)
        outline_w = max(1, round((OUTLINE_WIDTH_STAR if scene.shape == "star" else OUTLINE_WIDTH) * r_px))
        if scene.shape == "circle":
            box = [ox - 0.95 * r_px, oy - 0.95 * r_px, ox + 0.95 * r_px, oy + 0.95 * r_px]
            if scene.fill == "solid":
                mdraw.ellipse(box, fill=255)
            else:
                mdraw.ellipse(box, outline=255, width=outline_w)
        else:
            poly = [px(p) for p in _shape_points(scene)]
            if scene.fill == "solid":
                mdraw.polygon(poly, fill=255)
            else:
                mdraw.polygon(poly, outline=255, width=outline_w)

        # Paint: plain colour, or the colour with dark bands / squares (object-aligned, not turned).
        layer = _paint_layer(scene, big, (ox, oy), r_px, colour, dark)
        img.paste(layer, (0, 0), mask)

        # Marks: a black dot / ring, or a letter, in the middle of the object.
        ax, ay = px(_turn(_ANCHOR[scene.shape], turns))
        if scene.feature == "dot":
            d = DOT_RADIUS * r_px
            draw.ellipse([ax - d, ay - d, ax + d, ay + d], fill=MARK_RGB)
        elif scene.feature == "ring":
            d = RING_RADIUS * r_px
            draw.ellipse(
                [ax - d, ay - d, ax + d, ay + d], outline=MARK_RGB, width=max(1, round(RING_WIDTH * r_px))
            )
        if scene.text is not None:
            g = GLYPH_HALF * r_px
            w = max(1, round(GLYPH_WIDTH * r_px))
            for stroke in GLYPHS[scene.text]:
                draw.line(
                    [(ax + x * g, ay + y * g) for x, y in stroke], fill=MARK_RGB, width=w, joint="curve"
                )

    if big != size:
        img = img.resize((size, size), Image.Resampling.BOX)
    return img
