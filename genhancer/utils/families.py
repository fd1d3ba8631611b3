"""The one table of facts about CLIP-family encoders, shared by genhancer, eval, llava_integration and
toyworld.

Model-free data only: no transformers import, no behaviour. Each package keeps its own *behaviour* (how to
split a model into its vision side, how to compute logits) in a registry keyed by the rule ids named here,
so a family that reuses known rules is one ``FAMILIES.register(...)`` entry below and nothing else.

Lookups: ``FAMILIES[family_id]`` (the ``encoder.family`` config value) and ``family_for_model_type(t)``
(``config.json``'s ``model_type``, of the full model or of its bare vision tower). An unknown id or model
type is a ``ConfigError`` listing the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from genhancer.utils.errors import ConfigError
from genhancer.utils.registry import Registry

ALL_LINEAR = "all-linear"  # a LoRA target meaning: every nn.Linear of the vision side

# Global-token rules (what GenHancer conditions on; genhancer.encoders implements each):
PROJECTED_POOLER = "projected_pooler"  # visual_projection(pooler_output): the projected pooled CLS
POOLER = "pooler"  # pooler_output as is: SigLIP's attention-pool (MAP head) output, no projection

# Logit rules (eval.encoders implements each): logits_per_text from L2-normalised embeddings.
SCALED_COSINE = "scaled_cosine"  # logit_scale.exp() * cosine
SCALED_COSINE_PLUS_BIAS = "scaled_cosine_plus_bias"  # logit_scale.exp() * cosine + logit_bias


@dataclass(frozen=True)
class FamilyFacts:
    """What is known about one encoder family without loading a model.

    ``model_type`` / ``vision_model_type``: config.json ``model_type`` of the full (image + text) model and
    of the bare vision tower. ``*_class``: transformers class names. ``image_mean`` / ``image_std``: the
    family's published normalisation. ``cls_token``: the vision tower's sequence starts with one CLS token
    before the patch tokens. ``text_inputs``: the tokenizer outputs the text tower is given (padded to
    ``tokenizer_max_length``). ``lora_targets``: default LoRA target leaf names (or ``all-linear``).
    ``llava_feature_strategy``: LLaVA's default vision_feature_select_strategy ("default" drops the CLS).
    """

    name: str
    model_type: str
    vision_model_type: str
    full_model_class: str
    vision_model_class: str
    processor_class: str
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    cls_token: bool
    global_token: str
    logits: str
    tokenizer_max_length: int
    text_inputs: tuple[str, ...]
    lora_targets: tuple[str, ...]
    llava_feature_strategy: str

    @property
    def model_types(self) -> tuple[str, str]:
        return (self.model_type, self.vision_model_type)

    @property
    def extra_tokens(self) -> int:
        """Tokens before the patch tokens in the vision tower's output sequence (CLS: 1, none: 0)."""
        return int(self.cls_token)


FAMILIES: Registry[FamilyFacts] = Registry("encoder family")
FAMILIES.register(
    "clip",
    FamilyFacts(
        # OpenAI CLIP and MetaCLIP
        name="clip",
        model_type="clip",
        vision_model_type="clip_vision_model",
        full_model_class="CLIPModel",
        vision_model_class="CLIPVisionModel",
        processor_class="CLIPProcessor",
        image_mean=(0.48145466, 0.4578275, 0.40821073),
        image_std=(0.26862954, 0.26130258, 0.27577711),
        cls_token=True,
        global_token=PROJECTED_POOLER,
        logits=SCALED_COSINE,
        tokenizer_max_length=77,
        text_inputs=("input_ids", "attention_mask"),
        lora_targets=(ALL_LINEAR,),  # every vision-side linear, visual_projection included
        llava_feature_strategy="default",
    ),
)
FAMILIES.register(
    "siglip",
    FamilyFacts(
        name="siglip",
        model_type="siglip",
        vision_model_type="siglip_vision_model",
        full_model_class="SiglipModel",
        vision_model_class="SiglipVisionModel",
        processor_class="SiglipProcessor",
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        # [IMPORTANT] SigLIP has no CLS token (LLaVA keeps every patch: "full") and was trained on text padded
        # to max_length *without* an attention mask: giving it one changes its text embeddings.
        cls_token=False,
        global_token=POOLER,
        logits=SCALED_COSINE_PLUS_BIAS,
        tokenizer_max_length=64,
        text_inputs=("input_ids",),
        lora_targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
        llava_feature_strategy="full",
    ),
)


def known_model_types() -> list[str]:
    return sorted(t for facts in FAMILIES.values() for t in facts.model_types)


def family_for_model_type(model_type: str) -> FamilyFacts:
    """The family whose full model or vision tower has this config.json ``model_type``."""
    for facts in FAMILIES.values():
        if model_type in facts.model_types:
            return facts
    raise ConfigError(
        f"unknown encoder model_type {model_type!r}; known model types: {', '.join(known_model_types())}"
    )
