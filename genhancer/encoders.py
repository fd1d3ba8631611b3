"""CLIP-family vision encoders behind one interface: pixels -> (global token, patch tokens).

``ENCODERS`` maps a family id (``encoder.family``) to an ``EncoderFamily``: the family's facts from the
shared table (``genhancer.utils.families``: HF classes, CLS token, LoRA targets, tokenizer max length) plus
the behaviour of its global-token rule (``GLOBAL_TOKEN_RULES``: how to split the full model and read the
token). ``encoder.path`` is any local directory or hub id of the *full* model (``CLIPModel`` /
``SiglipModel``); nothing dispatches on string prefixes of the path.

Only the vision side is kept (``VisionEncoder.backbone``): a container whose submodule names are exactly
the full model's (``vision_model`` [+ ``visual_projection``]), so a peft LoRA adapter trained here applies
unchanged to the full model at export time, and cannot touch the text tower.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genhancer.utils.cards import RANDOM, RANDOM_INIT_NOTE, card_dir
from genhancer.utils.errors import ConfigError, ModelDirError
from genhancer.utils.families import ALL_LINEAR, FAMILIES, POOLER, PROJECTED_POOLER, FamilyFacts
from genhancer.utils.logging import get_logger
from genhancer.utils.registry import Registry
from genhancer.utils.weights import require_safetensors


@dataclass
class EncoderOutput:
    """global_token: (B, D_global) — the only condition GenHancer uses; patch_tokens: (B, N, D_vision)."""

    global_token: torch.Tensor
    patch_tokens: torch.Tensor


class _VisionSide(nn.Module):
    """Holds the full model's vision submodules under their full-model names (for adapter portability)."""

    def __init__(self, **modules: nn.Module) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)


# ------------------------------------------------------------------------------------- global-token rules
class GlobalTokenRule:
    """How to cut the vision side out of a full model and read its global token from the tower's output."""

    def vision_side(self, full_model: nn.Module) -> _VisionSide:  # pragma: no cover - abstract
        raise NotImplementedError

    def global_dim(self, vision_side: nn.Module) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def global_token(self, vision_side: nn.Module, out: Any) -> torch.Tensor:  # pragma: no cover - abstract
        """``out``: the vision tower's output (pooler_output (B, hidden), ...) -> (B, D_global)."""
        raise NotImplementedError


class ProjectedPooler(GlobalTokenRule):
    """CLIP: the *projected* pooled CLS, visual_projection(pooler_output)."""

    def vision_side(self, full_model: nn.Module) -> _VisionSide:
        # transformers v5: CLIPModel.vision_model is a CLIPVisionModel whose children are embeddings,
        # pre_layrnorm, encoder, post_layernorm (no inner .vision_model wrapper any more).
        return _VisionSide(
            vision_model=full_model.vision_model, visual_projection=full_model.visual_projection
        )

    def global_dim(self, vision_side: nn.Module) -> int:
        return vision_side.visual_projection.out_features

    def global_token(self, vision_side: nn.Module, out: Any) -> torch.Tensor:
        # [IMPORTANT] CLIP's global token is the image embedding used for contrastive matching
        # (768-d for L/14, 1024-d for MetaCLIP H/14), not the raw pooled CLS.
        return vision_side.visual_projection(out.pooler_output)  # (B, projection_dim)


class Pooler(GlobalTokenRule):
    """SigLIP: the attention-pool (MAP head) output, pooler_output, with no further projection."""

    def vision_side(self, full_model: nn.Module) -> _VisionSide:
        if not getattr(full_model.config.vision_config, "vision_use_head", True):
            raise ModelDirError(
                "this SigLIP has no attention-pool head (vision_use_head=False): no global token"
            )
        return _VisionSide(vision_model=full_model.vision_model)

    def global_dim(self, vision_side: nn.Module) -> int:
        return vision_side.vision_model.config.hidden_size

    def global_token(self, vision_side: nn.Module, out: Any) -> torch.Tensor:
        # [IMPORTANT] SigLIP has no CLS token: pooler_output (1152-d for so400m) is what it matches to text.
        return out.pooler_output  # (B, hidden)


# Global-token rules named by the family table (genhancer.utils.families).
GLOBAL_TOKEN_RULES: Registry[GlobalTokenRule] = Registry("global-token rule")
GLOBAL_TOKEN_RULES.register(PROJECTED_POOLER, ProjectedPooler())
GLOBAL_TOKEN_RULES.register(POOLER, Pooler())


# -------------------------------------------------------------------------------------------- families
class EncoderFamily:
    """One ``ENCODERS`` entry: a family's facts (``facts``) and its global-token rule (``rule``)."""

    def __init__(self, facts: FamilyFacts, rule: GlobalTokenRule) -> None:
        self.facts = facts
        self.rule = rule

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def model_type(self) -> str:  # config.json "model_type" of the full model
        return self.facts.model_type

    @property
    def full_model_class(self) -> str:
        return self.facts.full_model_class

    @property
    def default_lora_targets(self) -> tuple[str, ...]:
        return self.facts.lora_targets

    @property
    def tokenizer_max_length(self) -> int:
        return self.facts.tokenizer_max_length

    def full_model_cls(self) -> type:
        import transformers

        return getattr(transformers, self.full_model_class)

    def vision_side(self, full_model: nn.Module) -> _VisionSide:
        return self.rule.vision_side(full_model)

    def global_dim(self, vision_side: nn.Module) -> int:
        return self.rule.global_dim(vision_side)

    def encode(self, vision_side: nn.Module, pixel_values: torch.Tensor) -> EncoderOutput:
        out = vision_side.vision_model(pixel_values=pixel_values)
        global_token = self.rule.global_token(vision_side, out)  # (B, D_global)
        patch_tokens = out.last_hidden_state[:, self.facts.extra_tokens :]  # (B, N, hidden): CLS dropped
        return EncoderOutput(global_token, patch_tokens)

    def read_config(self, path: str) -> Any:
        """``path``'s config.json (a local dir, hub id or architecture card), checked to be this family's."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ModelDirError(
                f"cannot read a model config from encoder.path={path!r} ({e}); "
                f"give a local directory of a full {self.full_model_class} (config.json + model.safetensors) "
                "or a hub id available offline"
            ) from None
        if config.model_type != self.model_type:
            raise ConfigError(
                f"encoder.path={path!r} holds a {config.model_type!r} model "
                f"but encoder.family={self.name!r} "
                f"expects the full {self.full_model_class} (model_type {self.model_type!r}); "
                "fix encoder.family or point encoder.path at the full image+text model"
            )
        return config

    def load_full_model(self, path: str, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The full HF model from a local dir or hub id (safetensors only), after checking its type."""
        self.read_config(path)
        require_safetensors(path, loader=f"transformers.{self.full_model_class}", what="encoder.path")
        try:
            return self.full_model_cls().from_pretrained(path, dtype=dtype, use_safetensors=True)
        except OSError as e:
            raise ModelDirError(f"cannot load {self.full_model_class} from {path!r}: {e}") from None

    def random_full_model(self, card: str | Path) -> nn.Module:
        """The full HF model with random weights, built from an architecture card (float32)."""
        return self.full_model_cls()(self.read_config(str(card)))


ENCODERS: Registry[EncoderFamily] = Registry("encoder family")
for _id, _facts in FAMILIES.items():
    ENCODERS.register(_id, EncoderFamily(_facts, GLOBAL_TOKEN_RULES[_facts.global_token]))


def lora_target_regex(vision_side: nn.Module, targets: list[str] | tuple[str, ...]) -> str:
    """A peft ``target_modules`` regex naming exactly the vision-side linear layers ``targets`` selects.

    ``targets``: leaf names (``q_proj``, ``fc1``, ``visual_projection``...) or ``all-linear``. Layer indices
    are generalised (``layers\\.\\d+\\.``) so the regex stays short; it only matches ``vision_model...`` /
    vision-side names, so applied to the full model at export it never reaches the text tower.
    """
    # [IMPORTANT] nn.MultiheadAttention (SigLIP's MAP head) reads out_proj.weight directly in its functional
    # forward, so a LoRA wrapped around it is silently bypassed (its lora_A/B never get gradients). Skip it.
    mha = [name + "." for name, m in vision_side.named_modules() if isinstance(m, nn.MultiheadAttention)]
    linear = [
        name
        for name, m in vision_side.named_modules()
        if isinstance(m, nn.Linear) and not any(name.startswith(p) for p in mha)
    ]
    leaves_present = {n.rsplit(".", 1)[-1] for n in linear}
    wanted = leaves_present if ALL_LINEAR in targets else set(targets)
    unknown = sorted(wanted - leaves_present)
    if unknown:
        raise ConfigError(
            f"lora.targets {unknown} match no linear layer of the encoder; linear layers here are named "
            f"{sorted(leaves_present)} (or use '{ALL_LINEAR}')"
        )
    patterns = sorted(
        {
            re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", p)
            for p in (re.escape(n) for n in linear if n.rsplit(".", 1)[-1] in wanted)
        }
    )
    return "^(?:" + "|".join(patterns) + ")$"


def read_image_spec(path: str, image_size: int | None = None) -> dict[str, Any]:
    """{image_size, mean, std} from the encoder's image processor (``image_size`` overrides the size)."""
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelDirError(
            f"no image processor in encoder.path={path!r} ({e}); "
            "the directory needs preprocessor_config.json "
            "(save it with AutoProcessor.from_pretrained(<base>).save_pretrained(<dir>))"
        ) from None
    size = image_size
    if size is None:
        crop = getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None
        src = crop or getattr(proc, "size", None) or {}
        size = src.get("height") or src.get("shortest_edge")
    if not size:
        raise ModelDirError(
            f"cannot tell the input size from the image processor in {path!r}; set encoder.image_size"
        )
    return {
        "image_size": int(size),
        "mean": [float(x) for x in proc.image_mean],
        "std": [float(x) for x in proc.image_std],
    }


class VisionEncoder(nn.Module):
    """The vision side of a CLIP-family model + optional peft LoRA.

    ``forward(pixel_values (B, 3, H, W) normalised with the processor's mean/std) -> EncoderOutput``.
    """

    def __init__(
        self, family: EncoderFamily, vision_side: nn.Module, source: str, image_spec: dict[str, Any]
    ) -> None:
        super().__init__()
        self.family = family
        self.backbone = vision_side  # becomes a peft PeftModel once LoRA is attached
        self.source = source
        self.image_spec = dict(image_spec)
        self.global_dim = family.global_dim(vision_side)
        self.patch_dim = vision_side.vision_model.config.hidden_size
        self._lora_trainable: frozenset[str] = frozenset()

    @classmethod
    def load(
        cls, family_id: str, path: str, image_size: int | None = None, init: str = "pretrained"
    ) -> VisionEncoder:
        """The vision side of ``path``'s full model: its weights, or (``init="random"``) its card's shapes."""
        family = ENCODERS[family_id]
        source: str | Path = path
        if init == RANDOM:
            source = card_dir(path, key="encoder.path")
            get_logger("genhancer.encoders").warning(
                "encoder %s: %s (card %s)", path, RANDOM_INIT_NOTE, source
            )
            full = family.random_full_model(source)
        else:
            full = family.load_full_model(path)
        spec = read_image_spec(str(source), image_size)
        encoder = cls(family, family.vision_side(full), path, spec)
        del full  # the text tower is dropped here; export reloads the base model whole
        return encoder

    # -- LoRA ---------------------------------------------------------------------------------------
    @property
    def has_lora(self) -> bool:
        from peft import PeftModel

        return isinstance(self.backbone, PeftModel)

    def attach_lora(self, lora_cfg: Any) -> None:
        """Wrap the vision side with a fresh peft LoRA (``lora_cfg``: genhancer.config.LoraConfig)."""
        from peft import LoraConfig, get_peft_model

        if self.has_lora:
            raise RuntimeError("the encoder already has a LoRA adapter")
        targets = self.lora_targets(lora_cfg.targets)
        config = LoraConfig(
            r=lora_cfg.r,
            lora_alpha=lora_cfg.alpha,
            lora_dropout=lora_cfg.dropout,
            bias=lora_cfg.bias,
            target_modules=lora_target_regex(self.backbone, targets),
        )
        self.backbone = get_peft_model(self.backbone, config)
        self._remember_lora_trainable()

    def lora_targets(self, configured: list[str] | tuple[str, ...]) -> list[str]:
        """``lora.targets`` as given, or (empty) this encoder family's default targets."""
        return list(configured) or list(self.family.default_lora_targets)

    def load_lora(self, adapter_dir: str | Path, trainable: bool = True) -> None:
        """Attach a LoRA saved by ``save_lora`` (peft format: adapter_config.json +
        adapter_model.safetensors)."""
        from peft import PeftModel

        if self.has_lora:
            raise RuntimeError("the encoder already has a LoRA adapter")
        require_safetensors(adapter_dir, loader="peft", what="LoRA adapter")
        self.backbone = PeftModel.from_pretrained(self.backbone, str(adapter_dir), is_trainable=trainable)
        self._remember_lora_trainable()

    def save_lora(self, adapter_dir: str | Path) -> None:
        if not self.has_lora:
            raise RuntimeError("the encoder has no LoRA adapter to save")
        self.backbone.save_pretrained(str(adapter_dir), safe_serialization=True)

    def _remember_lora_trainable(self) -> None:
        # peft has just marked exactly the adapter params (+ lora_only biases) trainable: remember them, so a
        # stage can re-freeze/unfreeze the encoder later without re-deriving peft's rules.
        self._lora_trainable = frozenset(n for n, p in self.named_parameters() if p.requires_grad)
        get_logger("genhancer.encoders").info(
            "encoder LoRA: %d adapter tensors trainable", len(self._lora_trainable)
        )

    def set_trainable(self, mode: str) -> None:
        """frozen: nothing trains; lora: only the adapter (+ lora_only biases); full: everything."""
        if mode == "lora" and not self.has_lora:
            raise RuntimeError("set_trainable('lora') needs an attached LoRA")
        for name, p in self.named_parameters():
            p.requires_grad_(mode == "full" or (mode == "lora" and name in self._lora_trainable))

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor) -> EncoderOutput:
        return self.family.encode(self.backbone, pixel_values)
