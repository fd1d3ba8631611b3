"""Scene descriptions of the toy world: what a picture shows, independent of how it is drawn.

A scene is one kind of object (``count`` copies of it) on a plain background, seen from a viewpoint.
``Scene.to_dict()`` is the JSON saved beside every image (``scenes.jsonl``); its keys are:

================  =======================================================================================
key               values (vocabularies below; all strings are plain lower-case words)
================  =======================================================================================
``shape``         one of ``SHAPES``: circle, square, triangle, arrow, star
``color``         one of ``COLORS``: red, green, blue, yellow, purple, orange
``size``          ``large`` or ``small`` (of each copy; copies of a count > 1 are drawn smaller still)
``count``         1, 2 or 3 copies
``position``      where the object is: center, left, right, top, bottom. Always ``center`` when count > 1
                  (the copies then fill the picture side by side / in a triangle).
``orientation``   up, down, left, right -- the way an arrow or triangle points; ``null`` for other shapes
``fill``          ``solid`` (filled with its colour) or ``outline`` (only the border, empty inside)
``texture``       plain, striped, checkered (dark bands / squares of the same hue); always ``plain`` for
                  an ``outline`` object
``feature``       ``null``, ``dot`` or ``ring``: a black mark in the middle of each copy
``text``          ``null`` or a capital letter from ``LETTERS`` drawn large in black on each copy.
                  At most one of ``feature`` / ``text`` is set (both sit in the middle of the object).
``viewpoint``     ``normal``, ``close`` (zoomed in 1.8x, the object may be cut by the frame) or ``far``
                  (zoomed out 0.55x). Zooming keeps the object in its half of the picture, so
                  ``position`` stays true in every viewpoint.
``background``    white, gray, beige
``offset``        [dx, dy]: a small shift of the whole object (fractions of the picture, |d| <= 0.03)
================  =======================================================================================

Orientation and position are stated in picture coordinates (left = left side of the image, up = towards
the top of the image). Nothing is ever mirrored, so the description is exactly what is visible.

``sample_scene(rng, **fixed)`` draws a random scene (any attribute may be fixed); ``make_pair(rng,
pattern)`` draws two scenes that differ only in the attribute of one MMVP-VLM pattern, with one statement
for each (see ``PATTERNS``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from genhancer.utils.errors import DataError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "arrow", "star")
ORIENTED_SHAPES: tuple[str, ...] = ("triangle", "arrow")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES: tuple[str, ...] = ("large", "small")
COUNTS: tuple[int, ...] = (1, 2, 3)
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")
ORIENTATIONS: tuple[str, ...] = ("up", "down", "left", "right")
FILLS: tuple[str, ...] = ("solid", "outline")
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered")
FEATURES: tuple[str, ...] = ("dot", "ring")
LETTERS: tuple[str, ...] = ("A", "E", "H", "L", "T", "X")
VIEWPOINTS: tuple[str, ...] = ("normal", "close", "far")
BACKGROUNDS: tuple[str, ...] = ("white", "gray", "beige")
MAX_OFFSET = 0.03

# The 9 MMVP-VLM patterns, in the official order, and the scene attribute each one varies.
PATTERNS: dict[str, str] = {
    "Orientation and Direction": "orientation",
    "Presence of Specific Features": "feature",
    "State and Condition": "fill",
    "Quantity and Count": "count",
    "Positional and Relational Context": "position",
    "Color and Appearance": "color",
    "Structural Characteristics": "texture",
    "Texts": "text",
    "Viewpoint and Perspective": "viewpoint",
}

NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


def vocabularies() -> dict[str, list[Any]]:
    """Every attribute's allowed values (written into ``world.json``)."""
    return {
        "shapes": list(SHAPES),
        "oriented_shapes": list(ORIENTED_SHAPES),
        "colors": list(COLORS),
        "sizes": list(SIZES),
        "counts": list(COUNTS),
        "positions": list(POSITIONS),
        "orientations": list(ORIENTATIONS),
        "fills": list(FILLS),
        "textures": list(TEXTURES),
        "features": list(FEATURES),
        "letters": list(LETTERS),
        "viewpoints": list(VIEWPOINTS),
        "backgrounds": list(BACKGROUNDS),
        "patterns": list(PATTERNS),
    }


@dataclass(frozen=True)
class Scene:
    """One toy-world scene (see the module docstring for the meaning of every field)."""

    shape: str = "circle"
    color: str = "red"
    size: str = "large"
    count: int = 1
    position: str = "center"
    orientation: str | None = None
    fill: str = "solid"
    texture: str = "plain"
    feature: str | None = None
    text: str | None = None
    viewpoint: str = "normal"
    background: str = "white"
    offset: tuple[float, float] = field(default=(0.0, 0.0))

    def __post_init__(self) -> None:
        problems = scene_problems(self)
        if problems:
            raise ValueError("invalid scene: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``scene`` field of ``scenes.jsonl``)."""
        d = dataclasses.asdict(self)
        d["offset"] = [round(float(v), 4) for v in self.offset]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "scene") -> Scene:
        """Inverse of ``to_dict``; unknown keys or bad values raise ``DataError`` naming ``where``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DataError(f"{where}: unknown scene key(s) {unknown}; valid keys: {sorted(names)}")
        kwargs = dict(data)
        if "offset" in kwargs:
            off = kwargs["offset"]
            if not (isinstance(off, (list, tuple)) and len(off) == 2):
                raise DataError(f"{where}: 'offset' must be a list [dx, dy], got {off!r}")
            kwargs["offset"] = (float(off[0]), float(off[1]))
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: {e}") from None

    def replace(self, **changes: Any) -> Scene:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def key(self) -> tuple[Any, ...]:
        """Identity of the scene up to its small ``offset`` jitter (used to keep splits disjoint)."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "offset")


def scene_problems(s: Scene) -> list[str]:
    """Every way ``s`` breaks the schema (empty when valid)."""
    p = []

    def check(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
        if value not in allowed:
            p.append(f"{name}={value!r} is not one of {list(allowed)}")

    check("shape", s.shape, SHAPES)
    check("color", s.color, COLORS)
    check("size", s.size, SIZES)
    check("count", s.count, COUNTS)
    check("position", s.position, POSITIONS)
    check("fill", s.fill, FILLS)
    check("texture", s.texture, TEXTURES)
    check("viewpoint", s.viewpoint, VIEWPOINTS)
    check("background", s.background, BACKGROUNDS)
    if s.feature is not None:
        check("feature", s.feature, FEATURES)
    if s.text is not None:
        check("text", s.text, LETTERS)
    if s.shape in ORIENTED_SHAPES:
        check("orientation", s.orientation, ORIENTATIONS)
    elif s.orientation is not None:
        p.append(f"orientation must be null for a {s.shape} (only {list(ORIENTED_SHAPES)} point somewhere)")
    if s.count > 1 and s.position != "center":
        p.append("position must be 'center' when count > 1")
    if s.fill == "outline" and s.texture != "plain":
        p.append("texture must be 'plain' for an outline object")
    if s.feature is not None and s.text is not None:
        p.append("feature and text cannot both be set")
    if len(s.offset) != 2 or any(abs(float(v)) > MAX_OFFSET + 1e-9 for v in s.offset):
        p.append(f"offset must be [dx, dy] with |d| <= {MAX_OFFSET}")
    return p


def _weighted(rng: random.Random, options: Mapping[Any, float]) -> Any:
    return rng.choices(list(options), weights=list(options.values()))[0]


def sample_scene(rng: random.Random, **fixed: Any) -> Scene:
    """Draw a random scene; keyword arguments fix attributes (e.g. ``shape="arrow", count=1``).

    Attributes that depend on fixed ones are drawn consistently (an arrow gets an orientation, an outline
    object a plain texture, count > 1 puts the object in the center).
    """
    unknown = set(fixed) - {f.name for f in dataclasses.fields(Scene)}
    if unknown:
        raise ValueError(f"sample_scene: unknown attribute(s) {sorted(unknown)}")

    def pick(name: str, draw: Any) -> Any:
        return fixed[name] if name in fixed else draw()

    shape = pick("shape", lambda: rng.choice(SHAPES))
    color = pick("color", lambda: rng.choice(COLORS))
    size = pick("size", lambda: _weighted(rng, {"large": 0.7, "small": 0.3}))
    count = pick("count", lambda: _weighted(rng, {1: 0.6, 2: 0.2, 3: 0.2}))
    position = pick(
        "position",
        lambda: (
            "center"
            if count > 1
            else _weighted(rng, {"center": 0.4, "left": 0.15, "right": 0.15, "top": 0.15, "bottom": 0.15})
        ),
    )
    orientation = pick("orientation", lambda: rng.choice(ORIENTATIONS) if shape in ORIENTED_SHAPES else None)
    fill = pick("fill", lambda: _weighted(rng, {"solid": 0.7, "outline": 0.3}))
    texture = pick(
        "texture",
        lambda: (
            "plain"
            if fill == "outline"
            else _weighted(rng, {"plain": 0.5, "striped": 0.25, "checkered": 0.25})
        ),
    )
    if "feature" in fixed or "text" in fixed:
        feature = fixed.get("feature")
        text = fixed.get("text")
        if "feature" not in fixed and text is None:
            feature = rng.choice((None, None, *FEATURES))
        if "text" not in fixed and feature is None:
            text = rng.choice((None, None, *LETTERS))
    else:
        mark = _weighted(rng, {"none": 0.5, "feature": 0.25, "text": 0.25})
        feature = rng.choice(FEATURES) if mark == "feature" else None
        text = rng.choice(LETTERS) if mark == "text" else None
    viewpoint = pick("viewpoint", lambda: _weighted(rng, {"normal": 0.7, "close": 0.15, "far": 0.15}))
    background = pick("background", lambda: _weighted(rng, {"white": 0.6, "gray": 0.2, "beige": 0.2}))
    offset = pick(
        "offset",
        lambda: (
            round(rng.uniform(-MAX_OFFSET, MAX_OFFSET), 4),
            round(rng.uniform(-MAX_OFFSET, MAX_OFFSET), 4),
        ),
    )
    return Scene(
        shape=shape,
        color=color,
        size=size,
        count=count,
        position=position,
        orientation=orientation,
        fill=fill,
        texture=texture,
        feature=feature,
        text=text,
        viewpoint=viewpoint,
        background=background,
        offset=tuple(offset),
    )


# ----------------------------------------------------------------------------------------------------------
# Statements (one sentence that is true of one image of a pair and false of the other)
# ----------------------------------------------------------------------------------------------------------

_ORIENTATION_WORDS = {"up": "up", "down": "down", "left": "to the left", "right": "to the right"}
_POSITION_WORDS = {
    "center": "in the middle of the picture",
    "left": "on the left side of the picture",
    "right": "on the right side of the picture",
    "top": "at the top of the picture",
    "bottom": "at the bottom of the picture",
}
_TEXTURE_WORDS = {
    "plain": "is one flat color",
    "striped": "has stripes",
    "checkered": "has a checkered pattern",
}


def plural(shape: str) -> str:
    """Plural of a shape name."""
    return shape + "es" if shape.endswith("s") else shape + "s"


def statement(scene: Scene, pattern: str) -> str:
    """The sentence naming ``scene``'s value of ``pattern``'s attribute (single-object scenes except
    count)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; known patterns: {list(PATTERNS)}")
    attr = PATTERNS[pattern]
    the = f"The {scene.shape}"
    if attr == "orientation":
        return f"{the} points {_ORIENTATION_WORDS[scene.orientation]}."
    if attr == "feature":
        return f"{the} has a black {scene.feature} on it." if scene.feature else f"{the} has no mark on it."
    if attr == "fill":
        return f"{the} is filled with color." if scene.fill == "solid" else f"{the} is empty inside."
    if attr == "count":
        if scene.count == 1:
            return f"There is one {scene.shape}."
        return f"There are {NUMBER_WORDS[scene.count]} {plural(scene.shape)}."
    if attr == "position":
        return f"{the} is {_POSITION_WORDS[scene.position]}."
    if attr == "color":
        return f"{the} is {scene.color}."
    if attr == "texture":
        return f"{the} {_TEXTURE_WORDS[scene.texture]}."
    if attr == "text":
        return f"{the} has the letter {scene.text} on it."
    # viewpoint
    return {
        "close": f"{the} is seen up close.",
        "far": f"{the} is seen from far away.",
        "normal": f"{the} is seen from a normal distance.",
    }[scene.viewpoint]


def _two(rng: random.Random, values: tuple[Any, ...]) -> tuple[Any, Any]:
    a, b = rng.sample(list(values), 2)
    return a, b


def make_pair(rng: random.Random, pattern: str, **fixed_other: Any) -> tuple[Scene, Scene, str, str]:
    """Two scenes differing only in ``pattern``'s attribute, and one statement true of each.

    Returns ``(scene_a, scene_b, statement_a, statement_b)``. All scenes show a single object except for
    "Quantity and Count"; the attribute's two values are always different and always visible: unless the
    pattern is the viewpoint, the pair is seen at normal distance or close up (never from far away, where
    a dot or a letter is a handful of pixels). ``fixed_other`` fixes other attributes (not the pattern's).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; known patterns: {list(PATTERNS)}")
    attr = PATTERNS[pattern]
    if attr in fixed_other:
        raise ValueError(
            f"make_pair: {attr!r} is the attribute pattern {pattern!r} varies; it cannot be fixed"
        )
    fixed: dict[str, Any] = {"count": 1}
    if attr != "viewpoint":
        fixed["viewpoint"] = _weighted(rng, {"normal": 0.75, "close": 0.25})
    if attr != "count" and fixed_other.get("count", 1) != 1:
        raise ValueError(f"make_pair: pattern {pattern!r} uses single-object scenes (count=1)")
    fixed.update(fixed_other)
    if attr == "orientation":
        shape = fixed["shape"] if fixed.get("shape") in ORIENTED_SHAPES else rng.choice(ORIENTED_SHAPES)
        a, b = _two(rng, ORIENTATIONS)
        fixed.update(shape=shape, orientation=a)
    elif attr == "feature":
        a, b = rng.choice(FEATURES), None
        fixed.update(feature=a, text=None)
    elif attr == "fill":
        a, b = _two(rng, FILLS)
        fixed.update(fill=a, texture="plain")
    elif attr == "count":
        a, b = _two(rng, COUNTS)
        fixed.update(count=a, position="center")
    elif attr == "position":
        a, b = _two(rng, ("left", "right")) if rng.random() < 0.5 else _two(rng, ("top", "bottom"))
        fixed.update(position=a)
    elif attr == "color":
        a, b = _two(rng, COLORS)
        fixed.update(color=a)
    elif attr == "texture":
        a, b = _two(rng, TEXTURES)
        fixed.update(texture=a, fill="solid")
    elif attr == "text":
        a, b = _two(rng, LETTERS)
        fixed.update(text=a, feature=None)
    else:  # viewpoint: the two ends of the zoom, so the difference is large
        a, b = _two(rng, ("close", "far"))
        fixed.update(viewpoint=a)
    if rng.random() < 0.5:  # the attribute's values come in either order
        a, b = b, a
        fixed[attr] = a
    scene_a = sample_scene(rng, **fixed)
    scene_b = scene_a.replace(**{attr: b})
    return scene_a, scene_b, statement(scene_a, pattern), statement(scene_b, pattern)
