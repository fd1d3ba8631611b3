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
from genhancer.utils.cli import add_print_config_argument, entry_point, print_config_and_exit
from genhancer.utils.errors import DataError, ModelDirError
from genhancer.utils.fsio import atomic_directory, read_json
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import read_provenance, write_provenance

log = get_logger("genhancer.export")


def _save_processor(base: str, out: Path) -> None:
    """Copy the base's processor (image processor + tokenizer) so the export is a complete HF directory."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    try:
        AutoProcessor.from_pretrained(base).save_pretrained(out)
        return
    except (OSError, ValueError, TypeError) as e:
        log.warning("AutoProcessor could not load %s (%s); copying image processor and tokenizer separately", base, e)
    try:
        AutoImageProcessor.from_pretrained(base).save_pretrained(out)
        AutoTokenizer.from_pretrained(base).save_pretrained(out)
    except (OSError, ValueError) as e:
        raise ModelDirError(f"the base {base} has no loadable processor/tokenizer to ship with the export: {e}") from None


def _load_mmvp(path: str | Path) -> dict[str, Any]:
    res = read_json(path)
    if not isinstance(res, dict) or not isinstance(res.get("scores"), dict) or "average" not in res:
        raise DataError(f"{path}: not an MMVP-VLM result (needs 'scores' and 'average'; see eval.mmvp_vlm)")
    return res


def model_card(cfg: GenHancerConfig, base: str, stage_dir: Path, step: Any, mmvp: dict[str, Any] | None) -> str:
    family = ENCODERS[cfg.encoder.family]
    lines = [
        "---", "library_name: transformers", f"base_model: {base}", "tags: [genhancer, clip, vision-encoder]", "---",
        "",
        f"# {cfg.name}: GenHancer-enhanced {family.full_model_class}",
        "",
        f"The vision tower of `{base}` post-trained with GenHancer (arXiv 2503.19480): a lightweight denoiser "
        "reconstructs each image from the encoder's global token only; stage 2 tunes the encoder through the "
        "frozen stage-1 denoiser with LoRA, merged here. The text tower is the base model's, unchanged.",
        "",
        "| | |", "|---|---|",
        f"| base | `{base}` |",
        f"| family | {cfg.encoder.family} ({family.full_model_class}) |",
        f"| stage | {cfg.stage} |",
        f"| steps | {step} |",
        f"| denoiser | {cfg.denoiser.type} / {cfg.denoiser.preset} in {cfg.latent.space} space |",
        f"| LoRA | r {cfg.lora.r}, alpha {cfg.lora.alpha}, dropout {cfg.lora.dropout}, bias {cfg.lora.bias}, "
        f"targets {', '.join(cfg.lora.targets)} (merged) |",
        f"| t sampling | {cfg.flow.t_sampling}, s = {cfg.flow.logit_scale} |",
        f"| stage directory | `{stage_dir}` |",
        "",
    ]
    if mmvp is not None:
        lines += ["## MMVP-VLM", "", "| pattern | score |", "|---|---|"]
        lines += [f"| {p} | {float(s):.1f} |" for p, s in mmvp["scores"].items()]
        lines += [f"| **average** | **{float(mmvp['average']):.1f}** |", ""]
    lines += ["Load it like the base model:", "", "```python", "from transformers import AutoModel, AutoProcessor",
              "model = AutoModel.from_pretrained('<this directory>')",
              "processor = AutoProcessor.from_pretrained('<this directory>')", "```", ""]
    return "\n".join(lines)


def export_encoder(run: str | Path, out: str | Path, base: str | None = None,
                   mmvp_result: str | Path | None = None) -> Path:
    """Merge the stage's encoder LoRA into the base full model and write an HF directory at ``out``."""
    from peft import PeftModel
    from transformers import AutoConfig

    stage_dir = resolve_stage_dir(run, what="--run")
    if not (stage_dir / LORA_DIR / "adapter_config.json").is_file():
        raise ModelDirError(
            f"{stage_dir} has no {LORA_DIR}/adapter_config.json: it is a stage-1 output (the encoder was frozen, "
            "nothing to export); export the stage-2 run instead"
        )
    cfg = load_genhancer_config(stage_dir / CONFIG_FILE)
    base = base or cfg.encoder.path
    family = ENCODERS[cfg.encoder.family]
    mmvp = _load_mmvp(mmvp_result) if mmvp_result else None

    base_dtype = getattr(AutoConfig.from_pretrained(base), "dtype", None)
    full = family.load_full_model(base, dtype=torch.float32)  # merge in float32, cast back below
    merged = PeftModel.from_pretrained(full, str(stage_dir / LORA_DIR)).merge_and_unload()
    if isinstance(base_dtype, torch.dtype) and base_dtype in (torch.float16, torch.bfloat16):
        merged = merged.to(base_dtype)  # keep the base's storage dtype (text tower casts back losslessly)

    prov = read_provenance(stage_dir) or {}
    extra = prov.get("extra") or {}  # save_pretrained(extra={"step": n}) or the trainer's {"steps": n}
    step = extra.get("step", extra.get("steps", f"{cfg.current_schedule.steps} (configured)"))
    with atomic_directory(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        _save_processor(base, tmp)
        (tmp / "README.md").write_text(model_card(cfg, base, stage_dir, step, mmvp))
        write_provenance(tmp, "genhancer-encoder", config=cfg, parents=[stage_dir, base],
                         extra={"stage": cfg.stage, "step": step, "base": base,
                                "mmvp_vlm_average": mmvp["average"] if mmvp else None})
    log.info("exported %s + %s -> %s", base, stage_dir / LORA_DIR, out)
    return Path(out)


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genhancer.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="stage-2 run directory (containing final/) or the final/ dir")
    parser.add_argument("--out", help="output HF directory (required unless --print-config)")
    parser.add_argument("--base", default=None, help="base model dir/hub id (default: the config's encoder.path)")
    parser.add_argument("--mmvp", default=None, help="an MMVP-VLM RESULT.json to quote in the model card")
    add_print_config_argument(parser, "the run's resolved config (its config.yaml)")
    args = parser.parse_args(argv)
    if args.print_config:
        print_config_and_exit(load_genhancer_config(resolve_stage_dir(args.run, what="--run") / CONFIG_FILE))
    if not args.out:
        parser.error("the following arguments are required: --out")
    out = export_encoder(args.run, args.out, base=args.base, mmvp_result=args.mmvp)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
