"""Export an enhanced encoder: base full model + trained LoRA, merged, as a plain HF directory.

    python -m genhancer.export --run runs/x/stage2 --out runs/x/encoder [--mmvp RESULT.json]
    python -m genhancer.export --run runs/x/stage2 --print-config     # the run's resolved config, as YAML

``--run`` is a stage run directory holding ``final/`` (or the stage output directory itself) whose
``encoder_lora/`` holds the adapter. The base ``CLIPModel`` / ``SiglipModel`` is loaded from the config's
``encoder.path`` (``--base`` overrides it when the base moved), the adapter applied and merged
(peft ``merge_and_unload``), and the result written with the base's processor + tokenizer, safetensors only,
a model card ``README.md`` and ``provenance.json``. The adapter only names vision-side modules, so the text
tower stays bit-identical to the base's: ``transformers.CLIPModel.from_pretrained(out)`` just works.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genhancer.config import GenHancerConfig, load_genhancer_config
from genhancer.encoders import ENCODERS
from genhancer.module import CONFIG_FILE, LORA_DIR, resolve_stage_dir
from genhancer.utils.cards import RANDOM_INIT_NOTE
from genhancer.utils.cli import add_print_config_argument, entry_point, print_config_and_exit
from genhancer.utils.errors import DataError, ModelDirError
from genhancer.utils.fsio import atomic_directory, read_json
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import read_provenance, write_provenance
from genhancer.utils.weights import require_safetensors

log = get_logger("genhancer.export")


def _save_processor(base: str, out: Path) -> None:
    """Copy the base's processor (image processor + tokenizer) so the export is a complete HF directory."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        AutoProcessor.from_pretrained(base).save_pretrained(out)
        return
    except (OSError, ValueError, TypeError) as e:
        log.warning(
            "AutoProcessor could not load %s (%s); copying image processor and tokenizer separately", base, e
        )
    try:
        AutoImageProcessor.from_pretrained(base).save_pretrained(out)
        AutoTokenizer.from_pretrained(base).save_pretrained(out)
    except (OSError, ValueError) as e:
        raise ModelDirError(
            f"the base {base} has no loadable processor/tokenizer to ship with the export: {e}"
        ) from None


def _load_mmvp(path: str | Path) -> dict[str, Any]:
    res = read_json(path)
    if not isinstance(res, dict) or not isinstance(res.get("scores"), dict) or "average" not in res:
        raise DataError(f"{path}: not an MMVP-VLM result (needs 'scores' and 'average'; see eval.mmvp_vlm)")
    return res


def _off_recipe_rows(cfg: GenHancerConfig) -> list[str]:
    """Card rows for the settings that leave the paper's recipe, so the model says so wherever it goes."""
    rows = []
    if cfg.conditioning.whiten:
        rows.append("| condition | global token whitened (ZCA from the stage-1 cache; conditioning.whiten) |")
    if cfg.flow.detail_weight:
        rows.append(f"| flow loss | MSE + {cfg.flow.detail_weight} x high-passed MSE (flow.detail_weight) |")
    return rows


def model_card(
    cfg: GenHancerConfig, base: str, stage_dir: Path, step: Any, mmvp: dict[str, Any] | None
) -> str:
    family = ENCODERS[cfg.encoder.family]
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {base}",
        "tags: [genhancer, clip, vision-encoder]",
        "---",
        "",
        f"# {cfg.name}: GenHancer-enhanced {family.full_model_class}",
        "",
        f"The vision tower of `{base}` post-trained with GenHancer (arXiv 2503.19480): "
        "a lightweight denoiser "
        "reconstructs each image from the encoder's global token only; stage 2 tunes the encoder through the "
        "frozen stage-1 denoiser with LoRA, merged here. The text tower is the base model's, unchanged.",
        "",
        "| | |",
        "|---|---|",
        f"| base | `{base}` |",
        f"| family | {cfg.encoder.family} ({family.full_model_class}) |",
        f"| stage | {cfg.stage} |",
        f"| steps | {step} |",
        f"| denoiser | {cfg.denoiser.type} / {cfg.denoiser.preset} in {cfg.latent.space} space |",
        f"| LoRA | r {cfg.lora.r}, alpha {cfg.lora.alpha}, dropout {cfg.lora.dropout}, bias {cfg.lora.bias}, "
        f"targets {', '.join(cfg.lora.targets)} (merged) |",
        f"| t sampling | {cfg.flow.t_sampling}, m = {cfg.flow.logit_mean}, s = {cfg.flow.logit_scale} |",
        *_off_recipe_rows(cfg),
        f"| stage directory | `{stage_dir}` |",
        "",
    ]
    if mmvp is not None:
        lines += ["## MMVP-VLM", "", "| pattern | score |", "|---|---|"]
        lines += [f"| {p} | {float(s):.1f} |" for p, s in mmvp["scores"].items()]
        lines += [f"| **average** | **{float(mmvp['average']):.1f}** |", ""]
    lines += [
        "Load it like the base model:",
        "",
        "```python",
        "from transformers import AutoModel, AutoProcessor",
        "model = AutoModel.from_pretrained('<this directory>')",
        "processor = AutoProcessor.from_pretrained('<this directory>')",
        "```",
        "",
    ]
    return "\n".join(lines)


def randomise_update(peft_model: torch.nn.Module, seed: int) -> dict[str, float]:
    """Control: replace every trained LoRA update by a random one of the same size, in place.

    Each adapted layer's update ``scaling * B @ A`` becomes a random rank-r update with the same Frobenius
    norm, and each trained bias (``bias: lora_only``) a random shift of the same norm. A gain that such an
    update also shows is not GenHancer's. Returns the total norms {"weight": ..., "bias": ...}.
    """
    gen = torch.Generator().manual_seed(seed)
    totals = {"weight": 0.0, "bias": 0.0}
    for module in peft_model.modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight  # (r, in), (out, r)
        scaling = module.scaling["default"]
        norm = float((b @ a).norm()) * scaling
        a_new, b_new = torch.randn(a.shape, generator=gen), torch.randn(b.shape, generator=gen)
        b_new *= norm / max(float((b_new @ a_new).norm()) * scaling, 1e-12)
        a.data.copy_(a_new.to(a.dtype))
        b.data.copy_(b_new.to(b.dtype))
        totals["weight"] += norm**2
    return {k: v**0.5 for k, v in totals.items()}


def _randomise_biases(base_biases: dict[str, torch.Tensor], adapted: torch.nn.Module, seed: int) -> float:
    """The bias half of the control: each bias the adapter changed moves by a random vector of the same
    norm."""
    gen = torch.Generator().manual_seed(seed + 1)
    total = 0.0
    for name, param in adapted.named_parameters():
        ref = base_biases.get(name)
        if ref is None or torch.equal(ref, param):
            continue
        delta = float((param - ref).norm())
        direction = torch.randn(param.shape, generator=gen)
        param.data.copy_(ref + direction / direction.norm() * delta)
        total += delta**2
    return total**0.5


def export_encoder(
    run: str | Path,
    out: str | Path,
    base: str | None = None,
    mmvp_result: str | Path | None = None,
    random_update_seed: int | None = None,
) -> Path:
    """Merge the stage's encoder LoRA into the base full model and write an HF directory at ``out``.

    ``random_update_seed``: write the *control* instead — the same base with a random update of the trained
    update's size (``randomise_update``), marked as such in the card and provenance."""
    from peft import PeftModel
    from transformers import AutoConfig

    stage_dir = resolve_stage_dir(run, what="--run", encoder_only=True)
    if not (stage_dir / LORA_DIR / "adapter_config.json").is_file():
        raise ModelDirError(
            f"{stage_dir} has no {LORA_DIR}/adapter_config.json: "
            "it is a stage-1 output (the encoder was frozen, "
            "nothing to export); export the stage-2 run instead"
        )
    cfg = load_genhancer_config(stage_dir / CONFIG_FILE)
    if cfg.random_init:
        raise ModelDirError(
            f"{stage_dir} was trained with {', '.join(f'{k}=random' for k in cfg.random_init)} "
            f"({RANDOM_INIT_NOTE}); export refuses it: a LoRA trained on random weights means nothing for "
            f"{cfg.encoder.path}. Train with pretrained weights (drop the *.init=random overrides) to export"
        )
    base = base or cfg.encoder.path
    family = ENCODERS[cfg.encoder.family]
    mmvp = _load_mmvp(mmvp_result) if mmvp_result else None

    base_dtype = getattr(AutoConfig.from_pretrained(base), "dtype", None)
    full = family.load_full_model(base, dtype=torch.float32)  # merge in float32, cast back below
    base_state = {n: p.detach().clone() for n, p in full.named_parameters() if n.endswith("bias")}
    require_safetensors(stage_dir / LORA_DIR, loader="peft", what="LoRA adapter")
    adapted = PeftModel.from_pretrained(full, str(stage_dir / LORA_DIR))
    control = None
    if random_update_seed is not None:
        control = randomise_update(adapted, random_update_seed)
        control["bias"] = _randomise_biases(base_state, adapted.get_base_model(), random_update_seed)
        log.info(
            "control export: random update of the trained size (seed %d): %s", random_update_seed, control
        )
    merged = adapted.merge_and_unload()
    if isinstance(base_dtype, torch.dtype) and base_dtype in (torch.float16, torch.bfloat16):
        merged = merged.to(base_dtype)  # keep the base's storage dtype (text tower casts back losslessly)

    prov = read_provenance(stage_dir) or {}
    extra = prov.get("extra") or {}  # save_pretrained(extra={"step": n}) or the trainer's {"steps": n}
    step = extra.get("step", extra.get("steps", f"{cfg.current_schedule.steps} (configured)"))
    with atomic_directory(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        _save_processor(base, tmp)
        (tmp / "README.md").write_text(model_card(cfg, base, stage_dir, step, mmvp))
        write_provenance(
            tmp,
            "genhancer-encoder",
            config=cfg,
            parents=[stage_dir, base],
            extra={
                "stage": cfg.stage,
                "step": step,
                "base": base,
                "mmvp_vlm_average": mmvp["average"] if mmvp else None,
                "control": None
                if control is None
                else {"kind": "random-update", "seed": random_update_seed, "norms": control},
            },
        )
    log.info("exported %s + %s -> %s", base, stage_dir / LORA_DIR, out)
    return Path(out)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genhancer.export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run",
        required=True,
        help="stage-2 run directory (containing final/), its final/ dir or a sweep/step-NNNNNN snapshot",
    )
    parser.add_argument("--out", help="output HF directory (required unless --print-config)")
    parser.add_argument(
        "--base", default=None, help="base model dir/hub id (default: the config's encoder.path)"
    )
    parser.add_argument("--mmvp", default=None, help="an MMVP-VLM RESULT.json to quote in the model card")
    parser.add_argument(
        "--random-update",
        type=int,
        default=None,
        metavar="SEED",
        help="control: export a random update of the trained update's size instead",
    )
    add_print_config_argument(parser, "the run's resolved config (its config.yaml)")
    args = parser.parse_args(argv)
    if args.print_config:
        stage_dir = resolve_stage_dir(args.run, what="--run", encoder_only=True)
        print_config_and_exit(load_genhancer_config(stage_dir / CONFIG_FILE))
    if not args.out:
        parser.error("the following arguments are required: --out")
    out = export_encoder(
        args.run, args.out, base=args.base, mmvp_result=args.mmvp, random_update_seed=args.random_update
    )
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
