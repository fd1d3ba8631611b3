"""Scene schema, sampling and pairs of the toy world."""

from __future__ import annotations

import json
import random

import pytest

from genhancer.utils.errors import DataError
from toyworld.captions import CaptionProbs, caption_scene, statement_in_caption_words
from toyworld.mmvp_bench import BenchItem, in_caption_words
from toyworld.scene import (
    ORIENTED_SHAPES,
    PATTERNS,
    Scene,
    make_pair,
    sample_scene,
    statement,
)

MMVP_ORDER = [
    "Orientation and Direction",
    "Presence of Specific Features",
    "State and Condition",
    "Quantity and Count",
    "Positional and Relational Context",
    "Color and Appearance",
    "Structural Characteristics",
    "Texts",
    "Viewpoint and Perspective",
]


def test_patterns_are_the_official_nine_in_order():
    assert list(PATTERNS) == MMVP_ORDER


def test_sampling_is_deterministic_and_round_trips_through_json():
    ra, rb = random.Random(7), random.Random(7)
    a = [sample_scene(ra) for _ in range(300)]
    b = [sample_scene(rb) for _ in range(300)]
    assert a == b
    assert len({s.key() for s in a}) > 200  # varied
    for s in a:
        back = Scene.from_dict(json.loads(json.dumps(s.to_dict())))
        assert back == s


def test_sampled_scenes_obey_the_schema_rules():
    rng = random.Random(3)
    scenes = [sample_scene(rng) for _ in range(2000)]
    for s in scenes:
        assert (s.orientation is not None) == (s.shape in ORIENTED_SHAPES)
        assert s.count == 1 or s.position == "center"
        assert s.fill == "solid" or s.texture == "plain"
        assert s.feature is None or s.text is None
    # every value of every attribute occurs
    for attr, n_values in [
        ("shape", 5),
        ("color", 6),
        ("count", 3),
        ("position", 5),
        ("texture", 3),
        ("viewpoint", 3),
        ("fill", 2),
        ("background", 3),
    ]:
        assert len({getattr(s, attr) for s in scenes}) == n_values, attr


def test_fixed_attributes_are_kept():
    rng = random.Random(0)
    for _ in range(50):
        s = sample_scene(rng, shape="arrow", count=1, position="left", text="A")
        assert (s.shape, s.count, s.position, s.text, s.feature) == ("arrow", 1, "left", "A", None)
        assert s.orientation in ("up", "down", "left", "right")


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"shape": "circle", "orientation": "left"}, "orientation"),
        ({"count": 2, "position": "left"}, "position"),
        ({"fill": "outline", "texture": "striped"}, "texture"),
        ({"feature": "dot", "text": "A"}, "feature"),
        ({"color": "pink"}, "color"),
        ({"offset": (0.5, 0.0)}, "offset"),
    ],
)
def test_invalid_scenes_are_rejected(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Scene(**kwargs)


def test_from_dict_names_the_bad_key_and_record():
    with pytest.raises(DataError, match=r"line 3.*unknown scene key.*'colour'"):
        Scene.from_dict({"colour": "red"}, where="scenes.jsonl, line 3")
    with pytest.raises(DataError, match="line 4.*shape"):
        Scene.from_dict({"shape": "hexagon"}, where="scenes.jsonl, line 4")


@pytest.mark.parametrize("pattern", MMVP_ORDER)
def test_pairs_differ_in_exactly_their_attribute(pattern):
    rng = random.Random(11)
    attr = PATTERNS[pattern]
    values = set()
    for _ in range(40):
        a, b, sa, sb = make_pair(rng, pattern)
        da, db = a.to_dict(), b.to_dict()
        assert [k for k in da if da[k] != db[k]] == [attr]
        assert sa != sb
        assert sa == statement(a, pattern) and sb == statement(b, pattern)
        if pattern != "Quantity and Count":
            assert a.count == b.count == 1
        values.add(da[attr])
    assert len(values) >= 2  # both orders / several values occur


def test_statements_name_the_value():
    s = Scene(shape="arrow", orientation="left", position="right", color="blue", text="E")
    assert statement(s, "Orientation and Direction") == "The arrow points to the left."
    assert (
        statement(s, "Positional and Relational Context") == "The arrow is on the right side of the picture."
    )
    assert statement(s, "Color and Appearance") == "The arrow is blue."
    assert statement(s, "Texts") == "The arrow has the letter E on it."
    assert statement(Scene(shape="star", count=3), "Quantity and Count") == "There are three stars."
    assert (
        statement(Scene(feature="dot"), "Presence of Specific Features")
        == "The circle has a black dot on it."
    )
    assert statement(Scene(), "Presence of Specific Features") == "The circle has no mark on it."
    assert statement(Scene(fill="outline"), "State and Condition") == "The circle is empty inside."
    assert (
        statement(Scene(viewpoint="far"), "Viewpoint and Perspective") == "The circle is seen from far away."
    )


def test_captions_follow_their_probabilities():
    rng = random.Random(5)
    scenes = [sample_scene(rng, shape="arrow", count=1, position="left", fill="solid") for _ in range(2000)]
    crng = random.Random(1)
    caps = [caption_scene(s, crng) for s in scenes]
    frac = lambda words: sum(any(w in c for w in words) for c in caps) / len(caps)  # noqa: E731
    assert frac(["arrow"]) > 0.93
    assert 0.7 < frac(["red", "green", "blue", "yellow", "purple", "orange"]) < 0.9
    assert frac(["pointing"]) < 0.15
    assert frac(["on the left"]) < 0.15
    # fixed probabilities: always / never
    always = CaptionProbs(shape=1, color=1, orientation=1, position=1)
    never = CaptionProbs(
        shape=1,
        color=0,
        size=0,
        count=0,
        orientation=0,
        position=0,
        fill=0,
        texture=0,
        feature=0,
        text=0,
        viewpoint=0,
    )
    s = Scene(shape="arrow", orientation="up", position="left", color="green", text="T", texture="striped")
    for _ in range(20):
        c = caption_scene(s, crng, always)
        assert "green" in c and "arrow" in c and "pointing up" in c and "on the left" in c
        c = caption_scene(s, crng, never)
        assert "arrow" in c
        assert not any(w in c for w in ("green", "pointing", "left", "letter", "striped", "large"))


def test_captions_are_reproducible_and_probs_validated():
    s = sample_scene(random.Random(2))
    assert caption_scene(s, random.Random(9)) == caption_scene(s, random.Random(9))
    with pytest.raises(ValueError, match="color"):
        CaptionProbs(color=1.5)


@pytest.mark.parametrize(
    "scene, pattern, expected",
    [
        (
            Scene(shape="arrow", orientation="left", color="blue"),
            "Orientation and Direction",
            "an arrow pointing left",
        ),
        (Scene(feature="dot"), "Presence of Specific Features", "a circle with a black dot"),
        (Scene(feature=None), "Presence of Specific Features", "a circle"),
        (Scene(shape="star", fill="outline"), "State and Condition", "an outlined star"),
        (Scene(shape="star", count=3), "Quantity and Count", "three stars"),
        (Scene(shape="star", count=1), "Quantity and Count", "a star"),
        (Scene(position="bottom"), "Positional and Relational Context", "a circle at the bottom"),
        (Scene(color="green", fill="outline"), "Color and Appearance", "a green circle"),
        (Scene(texture="checkered"), "Structural Characteristics", "a checkered circle"),
        (Scene(text="H"), "Texts", "a circle with the letter H"),
        (Scene(viewpoint="close"), "Viewpoint and Perspective", "a close-up of a circle"),
    ],
)
def test_statements_in_caption_words_name_the_shape_and_the_pattern_attribute_only(scene, pattern, expected):
    assert statement_in_caption_words(scene, pattern) == f"a photo of {expected}"


def test_every_pair_in_caption_words_tells_its_two_images_apart():
    rng = random.Random(4)
    for pattern in PATTERNS:
        for _ in range(100):
            a, b, _, _ = make_pair(rng, pattern)
            assert statement_in_caption_words(a, pattern) != statement_in_caption_words(b, pattern), (a, b)
    same = [BenchItem(1, "Quantity and Count", "", Scene()), BenchItem(2, "Quantity and Count", "", Scene())]
    with pytest.raises(ValueError, match="pair 1/2"):
        in_caption_words(same)
    with pytest.raises(ValueError, match="unknown pattern"):
        statement_in_caption_words(Scene(), "Size")
