"""``python -m toyworld oracle-draw``: what the stage-1 denoiser learns to draw when handed the scene itself.

    python -m toyworld oracle-draw [key.sub=value ...] --world runs/toyworld --classifier runs/toy/attributes
        --out DIR [--config configs/genhancer/toy.yaml] [--condition scene|token] [--steps N]
        [--n 1000] [--eval-at N ...] [--attributes NAME ...]

``toyworld imagine`` judges what a trained denoiser draws from the encoder's global token. When the drawings
miss an attribute it cannot say why: the token may not hold it, or the denoiser may not have learned to draw
it. This command tells the two apart. It trains the config's stage-1 conditioner and denoiser from scratch
with the config's batch, learning rate, warmup, AdamW and gradient clipping (``--steps``: the config's
stage-1 steps unless given), on one view of every train image (the whole image, no crop), conditioned on

- ``scene`` (default): a code of the image's scene labels in place of the global token. Every class of every
  attribute has a fixed random vector (seeded by ``--code-seed``); an image's code is the sum of its classes'
  vectors over ``--attributes`` (default: all), scaled to unit variance. It is as wide as the encoder's
  global token, so the conditioner is the config's own. It holds each chosen attribute exactly and linearly.
- ``token``: the frozen encoder's global token of the same image: stage 1 itself, in the same loop, as the
  reference for the scene code.

At each step of ``--eval-at`` it draws from the conditions of the first ``--n`` val images and judges the
drawings as ``imagine`` does. ``OUT/step-NNNNNN/`` holds ``imagine.json``, ``attributes.png``, ``grid.png``
and ``reconstructions/``, so ``python -m toyworld imagine --compare`` compares two arms or two steps.
``OUT/oracle-draw.json`` holds the settings, the loss curve and the fine-attribute mean at each step.

An attribute drawn from the scene code but not from the token is missing from the token, or not in a form
the denoiser can use. An attribute drawn from neither is beyond what this denoiser learns in these steps.
The loop is plain PyTorch on one process, with no DeepSpeed and no feature cache. It is a diagnostic, not a
training stage, and it saves no weights.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genhancer.config import GenHancerConfig, load_genhancer_config
from genhancer.sample import load_batch
from genhancer.train import DEFAULT_CONFIG  # the embedded default: the toy recipe
from genhancer.utils.cli import add_config_arguments, config_from_args, entry_point
from genhancer.utils.errors import UserError
from genhancer.utils.fsio import write_json
from genhancer.utils.logging import get_logger, progress
from toyworld.attributes import ATTRIBUTES, IGNORE, format_accuracy, label_matrix, load_classifier, read_split
from toyworld.cached_run import MetricsLog
from toyworld.imagine import COARSE, judge_drawings

SUMMARY_FILE = "oracle-draw.json"
CONDITIONS = ("scene", "token")
log = get_logger("toyworld.oracle")


def scene_code(labels: torch.Tensor, width: int, attributes: Sequence[str], seed: int = 0) -> torch.Tensor:
    """Labels (N, A) in ``ATTRIBUTES`` order -> codes (N, width): per image, the sum over ``attributes`` of
    its class's fixed random vector (none where the attribute does not apply), over sqrt(len(attributes)).
    Every attribute's vectors are drawn whichever are chosen, so a class has one vector for a given seed."""
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or not attributes:
        raise UserError(f"--attributes: {unknown or 'none given'}; choose from {list(ATTRIBUTES)}")
    gen = torch.Generator().manual_seed(seed)
    code = torch.zeros(len(labels), width)
    for j, (name, classes) in enumerate(ATTRIBUTES.items()):
        table = torch.randn(len(classes), width, generator=gen)
        if name in attributes:
            label = labels[:, j]
            code += torch.where((label == IGNORE)[:, None], 0.0, table[label.clamp(min=0)])
    return code / len(attributes) ** 0.5


@dataclass
class Split:
    """One world split as stage 1 sees it: image paths, scenes, global tokens, latent inputs (what the
    stage-1 cache would hold for the whole image) and, when kept, the images in [-1, 1]."""

    paths: list[Path]
    scenes: list[dict[str, Any]]
    tokens: torch.Tensor
    latents: torch.Tensor
    images: torch.Tensor | None


@torch.no_grad()
def encode_split(model: Any, world: str | Path, split: str, n: int | None, keep_images: bool) -> Split:
    """Encode the first ``n`` images of ``world/split`` (all when None) with the frozen encoder and latent
    space."""
    paths, scenes = read_split(world, split)
    paths, scenes = paths[:n], scenes[:n]
    spec, batch = model.encoder_image_spec(), 256
    tokens, latents, images = [], [], []
    for i in progress(range(0, len(paths), batch), desc=f"encode {split}", unit="batch"):
        pixel_values, image = load_batch(paths[i : i + batch], spec)
        features = model.cache_features(pixel_values, image)
        tokens.append(features["global_token"].float())
        latents.append(features["latent_input"])
        if keep_images:
            images.append(image)
    kept = torch.cat(images) if keep_images else None
    return Split(paths, scenes, torch.cat(tokens), torch.cat(latents), kept)


def train(
    model: Any,
    cfg: GenHancerConfig,
    codes: torch.Tensor,
    latents: torch.Tensor,
    steps: int,
    on_eval: Callable[[int], None],
    eval_at: Sequence[int],
) -> list[dict[str, float]]:
    """Stage 1's optimisation of the trainable parts on (code, latent) pairs; ``on_eval(step)`` at
    ``eval_at`` (in eval mode). Returns the loss rows."""
    from genhancer.stages import make_optimizer

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    batch = min(cfg.train.batch_size, len(codes))
    metrics = MetricsLog(steps, 50)  # a row of mean loss every 50 steps and at the last
    model.train()
    bar = progress(range(steps), desc="oracle-draw", unit="step")
    for step in bar:
        idx = torch.randint(0, len(codes), (batch,), generator=gen)
        loss = model(global_token=codes[idx], latent_input=latents[idx], generator=gen)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        if metrics.add(step, loss=loss):
            bar.set_postfix(loss=f"{metrics.flush(step)['loss']:.4f}")
        if step + 1 in eval_at:
            model.eval()
            on_eval(step + 1)
            model.train()
    model.eval()
    return metrics.rows


@torch.no_grad()
def draw(model: Any, codes: torch.Tensor, seed: int, batch_size: int = 64) -> torch.Tensor:
    """The denoiser's drawings from conditions ``codes`` (N, D): (N, 3, S, S) in about [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(codes), batch_size):
        pooled, context = model.conditioner(codes[i : i + batch_size], None, gen)
        out.append(model.draw(pooled, context, generator=gen).float())
    return torch.cat(out)


def fine_mean(result: dict[str, Any], coarse: Sequence[str] = COARSE) -> float:
    """Mean drawing accuracy over the fine attributes (all but ``coarse``) of an imagine result."""
    accs = [v["accuracy"] for k, v in result["reconstructions"]["attributes"].items() if k not in coarse]
    return sum(accs) / len(accs)


def _check_args(cfg: GenHancerConfig, args: argparse.Namespace, steps: int, eval_at: list[int]) -> None:
    if cfg.stage != "stage1" or cfg.init_from:
        raise UserError(
            f"oracle-draw trains stage 1 from scratch: the config has stage={cfg.stage!r}, "
            f"init_from={cfg.init_from!r} (drop both)"
        )
    too_few = [v < 1 for v in (steps, eval_at[0], args.n, 1 if args.train_n is None else args.train_n)]
    if any(too_few) or eval_at[-1] > steps:
        raise UserError(
            f"need --steps >= 1, every --eval-at in 1..{steps}, --n >= 1 and --train-n >= 1 (got --steps "
            f"{steps}, --eval-at {eval_at}, --n {args.n}, --train-n {args.train_n})"
        )
    if args.attributes and args.condition != "scene":
        raise UserError("--attributes chooses what the scene code holds: use it with --condition scene")


def _check_model(model: Any) -> None:
    if model.uses_patch_tokens:
        raise UserError(
            "oracle-draw conditions on one token: set conditioning.local_token_fraction=0 (the config "
            "appends patch tokens, which the scene code has no counterpart of)"
        )


def oracle_draw(cfg: GenHancerConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Train, draw and judge as the module docstring says; write OUT; return the summary."""
    from genhancer.module import GenHancerModel  # local: heavy (pulls transformers, diffusers)

    steps = cfg.current_schedule.steps if args.steps is None else args.steps
    eval_at = sorted(set(args.eval_at or [steps]))
    _check_args(cfg, args, steps, eval_at)
    clf = load_classifier(args.classifier)
    torch.manual_seed(cfg.train.seed)
    model = GenHancerModel.build(cfg)
    _check_model(model)
    attributes = args.attributes or list(ATTRIBUTES)
    train_split = encode_split(model, args.world, "train", args.train_n, keep_images=False)
    val = encode_split(model, args.world, "val", args.n, keep_images=True)
    codes = {"train": train_split.tokens, "val": val.tokens}
    if args.condition == "scene":
        width = train_split.tokens.shape[1]
        codes = {
            name: scene_code(label_matrix(split.scenes), width, attributes, args.code_seed)
            for name, split in (("train", train_split), ("val", val))
        }
    out, evals = Path(args.out), {}

    def judge(step: int) -> None:
        settings = {"config": args.config, "condition": args.condition, "seed": args.seed}
        settings["train_steps"] = step
        result = judge_drawings(
            clf,
            val.images,
            draw(model, codes["val"], args.seed),
            val.paths,
            val.scenes,
            out / f"step-{step:06d}",
            settings,
            f"oracle-draw, {args.condition} condition: {len(val.paths)} val images after {step} steps",
        )
        evals[step] = {"fine_mean": fine_mean(result), "mean": result["reconstructions"]["mean"]}
        print(f"after {step} steps ({args.condition} condition):")
        print(format_accuracy(result["originals"], result["reconstructions"], ("sources", "drawings")))

    start = time.perf_counter()
    rows = train(model, cfg, codes["train"], train_split.latents, steps, judge, eval_at)
    summary = {
        "diagnostic": "oracle_draw",
        "config": args.config,
        "overrides": list(args.overrides),
        "condition": args.condition,
        "attributes": attributes if args.condition == "scene" else None,
        "code_seed": args.code_seed,
        "steps": steps,
        "train_images": len(train_split.paths),
        "val_images": len(val.paths),
        "evals": {str(k): v for k, v in evals.items()},
        "loss": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(out / SUMMARY_FILE, summary)
    log.info("wrote %s and step-*/ (%d evaluations)", out / SUMMARY_FILE, len(evals))
    return summary


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m toyworld oracle-draw",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p, default=DEFAULT_CONFIG)  # overrides go first: the lists below take every word
    p.add_argument("--world", required=True, help="toy world directory (train and val splits)")
    p.add_argument("--classifier", required=True, help="directory of python -m toyworld train-attributes")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--condition", choices=CONDITIONS, default="scene", help="what the denoiser is given")
    p.add_argument("--attributes", nargs="+", help="attributes in the scene code (default: all)")
    p.add_argument("--code-seed", type=int, default=0, help="seed of the scene code's class vectors")
    p.add_argument("--steps", type=int, help="training steps (default: the config's stage-1 steps)")
    p.add_argument("--eval-at", type=int, nargs="+", help="steps to draw and judge at (default: the last)")
    p.add_argument("--n", type=int, default=1000, help="val images drawn and judged (default 1000)")
    p.add_argument("--train-n", type=int, help="train images used (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawings' noise")
    args = p.parse_args(argv)
    oracle_draw(config_from_args(load_genhancer_config, args), args)
    return 0
