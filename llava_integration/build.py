"""Assemble a Hugging Face LLaVA directory from a vision-encoder directory and a causal-LM directory.

::

    python -m llava_integration.build [--config configs/llava/X.yaml] [--encoder DIR] [--llm DIR]
        --out DIR [KEY=VALUE ...]

Flags name paths only; what is built is the config's ``model`` section (template, projector, feature
layer and strategy, weights dtype, ...) and ``seed`` (the projector's initialisation), set in the YAML or
with overrides such as ``model.template=qwen2 model.dtype=bfloat16 seed=1``.

The result is a plain ``LlavaForConditionalGeneration`` directory (safetensors) with a ``LlavaProcessor``:
- vision tower: the encoder's vision weights, unchanged (CLIP or SigLIP; a GenHancer export is a CLIP dir);
- projector: a fresh ``mlp2x_gelu`` (Linear -> GELU -> Linear);
- language model + head: the LLM's weights, embeddings resized for the added ``<image>`` (and pad) tokens;
- processor: the encoder's image processor, the LLM's tokenizer, and the chosen conversation template;
- ``provenance.json`` naming the encoder and LLM it was made from.

Before anything is loaded, the encoder's config and its image processor are checked against each other
(output size, patch grid, normalisation); every difference is named.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genhancer.utils.cards import RANDOM, RANDOM_INIT_NOTE, card_dir
from genhancer.utils.cli import add_print_config_argument, entry_point, print_config_and_exit
from genhancer.utils.config import load_config
from genhancer.utils.errors import ConfigError, ModelDirError
from genhancer.utils.families import FamilyFacts, family_for_model_type, known_model_types
from genhancer.utils.fsio import atomic_directory
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import write_provenance
from genhancer.utils.weights import require_safetensors
from llava_integration.config import PROJECTORS, LlavaTrainConfig, ModelConfig
from llava_integration.templates import IMAGE_TOKEN, get_template

log = get_logger("llava_integration.build")


@dataclass
class EncoderInfo:
    family: FamilyFacts  # vision class, CLS token, default feature strategy, published mean/std
    vision_config: Any
    image_processor: Any
    image_size: int
    patch_size: int


def resolve_attn_implementation(requested: str) -> str:
    """``auto`` -> flash_attention_2 when the package is importable (and CUDA is up), else sdpa."""
    if requested != "auto":
        return requested
    import torch
    from transformers.utils import is_flash_attn_2_available

    return "flash_attention_2" if torch.cuda.is_available() and is_flash_attn_2_available() else "sdpa"


def feature_strategy(cfg: ModelConfig, family: FamilyFacts) -> str:
    """``auto`` -> the family's default (drop CLIP's CLS: "default"; SigLIP has none: "full")."""
    if cfg.vision_feature_select_strategy == "auto":
        return family.llava_feature_strategy
    return cfg.vision_feature_select_strategy


def num_image_tokens(image_size: int, patch_size: int, family: FamilyFacts, strategy: str) -> int:
    """Tokens one image becomes in the LLM sequence (576 for CLIP-L/14 at 336 px with CLS dropped)."""
    n = (image_size // patch_size) ** 2 + family.extra_tokens
    return n - 1 if strategy == "default" else n


def inspect_encoder(path: str, trust_remote_code: bool = False) -> EncoderInfo:
    """Read the encoder's config and image processor and check that they agree.

    Raises ``ModelDirError`` listing every disagreement (output size vs the model's image size, a size that
    is not a whole number of patches, missing or invalid normalisation); a normalisation that differs from
    the family's published one is only logged (custom encoders may use other statistics).
    """
    import numpy as np
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelDirError(f"encoder {path!r}: cannot read its config.json ({_remote_hint(e)})") from None
    if config.model_type not in known_model_types():
        raise ModelDirError(
            f"encoder {path!r} is a {config.model_type!r} model; supported encoder model types: "
            f"{', '.join(known_model_types())}"
        )
    family = family_for_model_type(config.model_type)
    vision_config = getattr(config, "vision_config", None) or config
    try:
        processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelDirError(
            f"encoder {path!r} has no image processor (preprocessor_config.json / processor_config.json): {e}"
        ) from None
    size, patch = int(vision_config.image_size), int(vision_config.patch_size)
    problems = []
    if size % patch:
        problems.append(f"image_size {size} is not a multiple of patch_size {patch}")
    # The definitive check: what the processor really outputs for a non-square image.
    probe = Image.fromarray(np.full((size + 13, size + 29, 3), 127, dtype=np.uint8))
    out = processor(images=[probe], return_tensors="pt")["pixel_values"]
    if tuple(out.shape[-3:]) != (3, size, size):
        problems.append(
            f"the image processor outputs {tuple(out.shape[-3:])} "
            f"but the encoder expects (3, {size}, {size}) "
            f"(processor size={getattr(processor, 'size', None)}, "
            f"crop_size={getattr(processor, 'crop_size', None)})"
        )
    mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
    if not getattr(processor, "do_normalize", True):
        problems.append("the image processor does not normalise (do_normalize=False)")
    elif mean is None or std is None or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        problems.append(f"the image processor's normalisation is invalid: image_mean={mean}, image_std={std}")
    else:
        for name, got, ref in (("image_mean", mean, family.image_mean), ("image_std", std, family.image_std)):
            if any(abs(float(a) - b) > 1e-3 for a, b in zip(got, ref)):
                log.warning(
                    "encoder %s: %s %s differs from the %s family's %s",
                    path,
                    name,
                    [round(float(x), 4) for x in got],
                    family.name,
                    list(ref),
                )
    if problems:
        raise ModelDirError(f"encoder {path!r}: its processor and model disagree: " + "; ".join(problems))
    return EncoderInfo(family, vision_config, processor, size, patch)


def load_tokenizer(cfg: ModelConfig, trust_remote_code: bool = False) -> Any:
    """The LLM's tokenizer with ``<image>`` (a special token) and a pad token added."""
    from transformers import AutoTokenizer

    if cfg.init == RANDOM and not cfg.tokenizer:
        raise ConfigError(
            "model.init=random builds the LLM from its architecture card, which ships no tokenizer: "
            "set model.tokenizer=DIR (any fast tokenizer directory)"
        )
    where = cfg.tokenizer or cfg.llm
    try:
        tok = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelDirError(
            f"{where!r}: cannot load the LLM's tokenizer ({_remote_hint(e)}); set model.tokenizer"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise ModelDirError(
            f"tokenizer {where!r}: a fast tokenizer is needed (character offsets for label masks)"
        )
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_special_tokens(
            {"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False
        )
    tok.image_token = IMAGE_TOKEN  # read by LlavaProcessor; saved with the tokenizer config
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": cfg.pad_token})
    return tok


def make_processor(info: EncoderInfo, tokenizer: Any, strategy: str, template: str) -> Any:
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=info.image_processor,
        tokenizer=tokenizer,
        patch_size=info.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=info.family.extra_tokens,
        chat_template=get_template(template).chat_template,
        image_token=IMAGE_TOKEN,
    )


def stop_token_ids(tokenizer: Any, template: str) -> list[int]:
    """EOS plus the template's end-of-turn token when that is a single token of the vocabulary."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stop = get_template(template).stop
    stop_ids = tokenizer.encode(stop, add_special_tokens=False)
    if len(stop_ids) == 1 and stop_ids[0] not in ids and stop.strip():
        ids.append(stop_ids[0])
    return ids


def _dtype(name: str, llm_config: Any) -> Any:
    import torch

    if name == "auto":
        d = getattr(llm_config, "dtype", None) or getattr(llm_config, "torch_dtype", None)
        if isinstance(d, str):
            d = getattr(torch, d, None)
        return d if isinstance(d, torch.dtype) else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _remote_hint(e: Exception) -> str:
    """The library's message, plus how to allow a model's own code when that is what it asks for."""
    if "trust_remote_code" not in str(e):
        return str(e)
    return f"{e} -- if you trust that code, pass --trust-remote-code to python -m llava_integration.build"


def source_dir(cfg: ModelConfig, key: str) -> str:
    """Where ``model.<key>`` (encoder / llm) is read from: itself, or under random init its card."""
    path = getattr(cfg, key)
    return str(card_dir(path, key=f"model.{key}")) if cfg.init == RANDOM else path


def read_text_config(cfg: ModelConfig, trust_remote_code: bool = False) -> Any:
    """The LLM's config, cut to ``model.llm_layers`` decoder layers when set."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source_dir(cfg, "llm"), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelDirError(f"LLM {cfg.llm!r}: cannot read its config.json ({_remote_hint(e)})") from None
    if cfg.llm_layers is not None:
        if not 0 < cfg.llm_layers <= config.num_hidden_layers:
            raise ConfigError(
                f"model.llm_layers={cfg.llm_layers}: the LLM has {config.num_hidden_layers} decoder layers"
            )
        config.num_hidden_layers = cfg.llm_layers
        if getattr(config, "layer_types", None):  # per-layer attention kinds (Qwen2 ...) follow the cut
            config.layer_types = config.layer_types[: cfg.llm_layers]
    return config


def llava_config(cfg: ModelConfig, info: EncoderInfo, text_config: Any, image_token_id: int) -> Any:
    """The ``LlavaConfig`` of the assembly: both towers' configs, the projector and the image tokens."""
    from transformers import LlavaConfig

    strategy = feature_strategy(cfg, info.family)
    return LlavaConfig(
        vision_config=info.vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_id=image_token_id,
        image_seq_length=num_image_tokens(info.image_size, info.patch_size, info.family, strategy),
        projector_hidden_act=PROJECTORS[cfg.projector],
        vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=strategy,
    )


def _towers(
    cfg: ModelConfig, info: EncoderInfo, text_config: Any, dtype: Any, trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """(vision tower, causal LM): their pretrained weights, or random weights in their cards' shapes."""
    import transformers
    from transformers import AutoModelForCausalLM

    vision_cls = getattr(transformers, info.family.vision_model_class)
    remote = trust_remote_code
    if cfg.init == RANDOM:
        log.warning("LLaVA %s + %s: %s", cfg.encoder, cfg.llm, RANDOM_INIT_NOTE)
        vision = vision_cls._from_config(info.vision_config, dtype=dtype)
        return vision, AutoModelForCausalLM.from_config(text_config, dtype=dtype, trust_remote_code=remote)
    log.info("loading vision tower %s from %s", info.family.vision_model_class, cfg.encoder)
    vision = vision_cls.from_pretrained(cfg.encoder, dtype=dtype, use_safetensors=True)
    log.info("loading language model from %s", cfg.llm)
    lm = AutoModelForCausalLM.from_pretrained(
        cfg.llm, config=text_config, dtype=dtype, trust_remote_code=remote, use_safetensors=True
    )
    return vision, lm


def fresh_projector(config: Any, init_scale: float = 1.0) -> Any:
    """A newly initialised projector whose output layer (weights and bias) is multiplied by ``init_scale``."""
    import torch
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    projector = LlavaMultiModalProjector(config)
    if init_scale != 1.0:
        with torch.no_grad():
            for p in projector.linear_2.parameters():
                p.mul_(init_scale)
    return projector


def assemble(cfg: ModelConfig, seed: int = 0, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Build ``(LlavaForConditionalGeneration, LlavaProcessor)`` in memory (see the module docstring).

    ``trust_remote_code`` lets transformers run code shipped with the encoder/LLM directories; it comes from
    the ``--trust-remote-code`` command-line flag only, never from a config file."""
    import torch
    from transformers import LlavaForConditionalGeneration

    for key in ("encoder", "llm"):
        if not getattr(cfg, key):
            raise ConfigError(
                f"model.{key} is empty: set it in the YAML (configs/llava/*.yaml), with "
                f"model.{key}=DIR, or with --{key} DIR"
            )
    get_template(cfg.template)  # an unknown template fails before anything heavy is loaded
    info = inspect_encoder(source_dir(cfg, "encoder"), trust_remote_code)
    if cfg.init != RANDOM:
        # both weight sets are checked before either is loaded: a pickle-only directory costs no loading time
        vision_loader = f"transformers.{info.family.vision_model_class}"
        require_safetensors(cfg.encoder, loader=vision_loader, what="encoder")
        require_safetensors(cfg.llm, loader="transformers.AutoModelForCausalLM", what="LLM")
    tokenizer = load_tokenizer(cfg, trust_remote_code)
    text_config = read_text_config(cfg, trust_remote_code)
    torch_dtype = _dtype(cfg.dtype, text_config)
    config = llava_config(cfg, info, text_config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    vision, lm = _towers(cfg, info, text_config, torch_dtype, trust_remote_code)

    # The shell is built on the meta device (no memory, no random init), then the real parts are put in.
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = getattr(lm, lm.base_model_prefix)
    model.lm_head = lm.get_output_embeddings()
    torch.manual_seed(seed)
    model.model.multi_modal_projector = fresh_projector(config, cfg.projector_init_scale).to(torch_dtype)
    meta = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if meta:
        raise RuntimeError(f"assembly left tensors on the meta device: {meta[:5]}")
    # a random-init LLM keeps its card's vocabulary rows (real shapes) whatever the stand-in tokenizer's size
    vocab = len(tokenizer) if cfg.init != RANDOM else max(len(tokenizer), text_config.vocab_size)
    model.resize_token_embeddings(
        vocab, pad_to_multiple_of=cfg.pad_embeddings_to_multiple_of, mean_resizing=True
    )
    model.config.dtype = torch_dtype
    if cfg.init == RANDOM:
        model.config.random_init = RANDOM_INIT_NOTE  # travels with the weights into every later directory
    stops = stop_token_ids(tokenizer, cfg.template)
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    processor = make_processor(info, tokenizer, config.vision_feature_select_strategy, cfg.template)
    log.info(
        "assembled LLaVA: %s vision + %s projector + %s LLM parameters (%d total); %d image tokens",
        f"{sum(p.numel() for p in vision.parameters()):,}",
        f"{sum(p.numel() for p in model.model.multi_modal_projector.parameters()):,}",
        f"{sum(p.numel() for p in model.model.language_model.parameters()):,}",
        sum(p.numel() for p in model.parameters()),
        config.image_seq_length,
    )
    return model, processor


def random_init_marks(config: Any) -> dict[str, Any]:
    """What provenance says about a random-init LLaVA (its config's mark; nothing for a pretrained one)."""
    note = getattr(config, "random_init", None)
    return {"random_init": note} if note else {}


def save_llava_dir(model: Any, processor: Any, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def build(
    cfg: ModelConfig,
    out: str | Path,
    seed: int = 0,
    provenance_config: Any = None,
    trust_remote_code: bool = False,
) -> Path:
    """Assemble and write the LLaVA directory ``out`` (atomically) with its provenance manifest."""
    out = Path(out)
    model, processor = assemble(cfg, seed=seed, trust_remote_code=trust_remote_code)
    with atomic_directory(out) as tmp:
        save_llava_dir(model, processor, tmp)
        write_provenance(
            tmp,
            "llava",
            config=provenance_config or cfg,
            parents=[cfg.encoder, cfg.llm],
            extra={
                "stage": "assembled",
                "template": cfg.template,
                "image_seq_length": model.config.image_seq_length,
                **random_init_marks(model.config),
            },
        )
    log.info("LLaVA directory written to %s", out)
    return out


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llava_integration.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--config", type=Path, help="a configs/llava/*.yaml file (its `model` section and seed)"
    )
    parser.add_argument("--encoder", help="CLIP/SigLIP directory (or hub id); overrides model.encoder")
    parser.add_argument("--llm", help="causal-LM directory (or hub id); overrides model.llm")
    parser.add_argument("--out", type=Path, help="LLaVA directory to write (required unless --print-config)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run Python code shipped with the encoder/LLM directories (only for code you "
        "trust; a config file cannot turn this on)",
    )
    add_print_config_argument(parser)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. model.template=qwen2 model.dtype=bfloat16 seed=1",
    )
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for flag, key in (("encoder", "model.encoder"), ("llm", "model.llm")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    cfg = load_config(LlavaTrainConfig, args.config, overrides)
    if args.print_config:
        print_config_and_exit(cfg)
    if args.out is None:
        parser.error("the following arguments are required: --out")
    build(
        cfg.model,
        args.out,
        seed=cfg.seed,
        provenance_config={"model": dataclasses.asdict(cfg.model), "seed": cfg.seed},
        trust_remote_code=args.trust_remote_code,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
