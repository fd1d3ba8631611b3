"""Alt-text captions for toy scenes: they nearly always name the object, often its colour, rarely details.

A CLIP trained on such captions, like web CLIP, learns shape and colour well and under-encodes the fine
detail that GenHancer is meant to recover (orientation, count, position, fill, texture, marks, letters,
viewpoint). Each detail is mentioned with its own probability (``CaptionProbs``); when the count is not
mentioned the caption names one object ("a red star" for three red stars), as alt-text often does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from toyworld.scene import NUMBER_WORDS, PATTERNS, Scene, plural

_TEMPLATES = (
    "{np}",
    "a photo of {np}",
    "an image of {np}",
    "{np} on a {bg} background",
    "a picture showing {np}",
    "simple drawing of {np}",
    "{np}, clip art",
)
_ORIENTATION = {
    "up": "pointing up",
    "down": "pointing down",
    "left": "pointing left",
    "right": "pointing right",
}
_POSITION = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the middle",
}
_TEXTURE = {"striped": "striped", "checkered": "checkered"}


@dataclass
class CaptionProbs:
    """Probability that a caption mentions each attribute (independently)."""

    shape: float = 0.97
    color: float = 0.8
    size: float = 0.1
    count: float = 0.1
    orientation: float = 0.08
    position: float = 0.08
    fill: float = 0.08
    texture: float = 0.1
    feature: float = 0.08
    text: float = 0.08
    viewpoint: float = 0.05

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"caption probability {name}={value} must be between 0 and 1")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_scene(
    scene: Scene, rng: random.Random, probs: CaptionProbs | None = None, template: str | None = None
) -> str:
    """An alt-text caption of ``scene`` (random, reproducible through ``rng``); ``template`` (with ``{np}``
    for the noun phrase) fixes the sentence frame, else one of the alt-text frames is drawn."""
    p = probs or CaptionProbs()

    def says(name: str) -> bool:
        return rng.random() < getattr(p, name)

    adjectives = []
    if says("size"):
        adjectives.append(scene.size)
    if scene.texture in _TEXTURE and says("texture"):
        adjectives.append(_TEXTURE[scene.texture])
    if says("fill"):
        adjectives.append("outlined" if scene.fill == "outline" else "solid")
    if says("color"):
        adjectives.append(scene.color)
    noun = scene.shape if says("shape") else "shape"
    with_count = scene.count > 1 and says("count")
    head = " ".join([*adjectives, plural(noun) if with_count else noun])
    np = f"{NUMBER_WORDS[scene.count]} {head}" if with_count else f"{_article(head)} {head}"

    details = []
    if scene.orientation is not None and says("orientation"):
        details.append(_ORIENTATION[scene.orientation])
    if scene.count == 1 and scene.position != "center" and says("position"):
        details.append(_POSITION[scene.position])
    if scene.feature is not None and says("feature"):
        details.append(f"with a black {scene.feature}")
    if scene.text is not None and says("text"):
        details.append(f"with the letter {scene.text}")
    if details:
        np = " ".join([np, *details])
    if scene.viewpoint != "normal" and says("viewpoint"):
        np = f"a close-up of {np}" if scene.viewpoint == "close" else f"{np} seen from far away"

    frame = template if template is not None else rng.choice(_TEMPLATES)
    return frame.format(np=np, bg=scene.background)


def statement_in_caption_words(scene: Scene, pattern: str) -> str:
    """The MMVP-VLM statement of ``scene`` for ``pattern``, said in the training captions' own words:
    "a photo of" + a caption naming the shape and the pattern's attribute only (e.g. "a photo of an outlined
    star" for "The star is empty inside."). A value the captions never name (one object, the middle, no mark,
    plain, a normal distance) is left unsaid, as in the captions.

    The toy text tower learns only the words of its captions, while a real CLIP's text tower knows the
    benchmark's phrasing from web text; scoring the same pairs in these words separates "the image features
    miss the detail" from "the text tower does not know the words"."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; known patterns: {list(PATTERNS)}")
    names = {name: 0.0 for name in vars(CaptionProbs())}
    probs = CaptionProbs(**{**names, "shape": 1.0, PATTERNS[pattern]: 1.0})
    return caption_scene(scene, random.Random(0), probs, template="a photo of {np}")
