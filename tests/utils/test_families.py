"""The encoder-family table: the only place the facts live, and every package's behaviour covers it
exactly."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from genhancer.utils.errors import ConfigError
from genhancer.utils.families import FAMILIES, family_for_model_type, known_model_types

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("genhancer", "eval", "llava_integration", "toyworld")


def test_packages_behaviour_registries_cover_exactly_the_table():
    from eval.encoders import LOGITS
    from genhancer.encoders import ENCODERS, GLOBAL_TOKEN_RULES

    assert set(ENCODERS) == set(FAMILIES)
    assert set(GLOBAL_TOKEN_RULES) == {f.global_token for f in FAMILIES.values()}
    assert set(LOGITS) == {f.logits for f in FAMILIES.values()}
    for fid, facts in FAMILIES.items():
        assert ENCODERS[fid].facts is facts and fid == facts.name


def test_class_names_exist_in_transformers():
    import transformers

    for facts in FAMILIES.values():
        for name in (facts.full_model_class, facts.vision_model_class, facts.processor_class):
            assert isinstance(getattr(transformers, name), type), name


def test_model_type_lookup_and_errors():
    assert family_for_model_type("clip_vision_model").name == "clip"
    assert family_for_model_type("siglip").name == "siglip"
    assert len(known_model_types()) == len(set(known_model_types())) == 2 * len(FAMILIES)
    with pytest.raises(
        ConfigError, match="'llama'; known model types: clip, clip_vision_model, siglip, siglip_vision_model"
    ):
        family_for_model_type("llama")
    with pytest.raises(
        ConfigError, match="unknown encoder family 'siglip3'; known encoder familys: clip, siglip"
    ):
        FAMILIES["siglip3"]


def test_the_facts_the_packages_need():
    clip, siglip = FAMILIES["clip"], FAMILIES["siglip"]
    assert (clip.extra_tokens, siglip.extra_tokens) == (1, 0)
    assert (clip.llava_feature_strategy, siglip.llava_feature_strategy) == ("default", "full")
    assert (clip.tokenizer_max_length, siglip.tokenizer_max_length) == (77, 64)
    assert clip.text_inputs == ("input_ids", "attention_mask") and siglip.text_inputs == ("input_ids",)
    assert clip.lora_targets == ("all-linear",) and "visual_projection" not in siglip.lora_targets


def _fact_constants() -> set[object]:
    """String and number values that identify a family (the ids themselves are used as lookup keys)."""
    out: set[object] = set()
    for f in FAMILIES.values():
        out |= {f.vision_model_type, f.full_model_class, f.vision_model_class, f.processor_class}
        out |= {x for x in (*f.image_mean, *f.image_std) if x != 0.5}  # 0.5 is too common to be a fact
    return out


def test_no_package_restates_a_family_fact():
    """A class name as a string, a vision model_type or a mean/std value outside the table is a copy."""
    facts = _fact_constants()
    table = REPO / "genhancer" / "utils" / "families.py"
    copies = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path == table:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Constant)
                    and type(node.value) in (str, float)
                    and node.value in facts
                ):
                    copies.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not copies, "family facts outside genhancer/utils/families.py:\n" + "\n".join(copies)
