"""Memory and FLOPs of every paper recipe on paper: models built from the architecture cards on the meta
device (no weights, no GPU), counted per training stage.

    python -m benchmarks.paper_estimates                      # print the table (markdown)
    python -m benchmarks.paper_estimates --write docs/performance.md   # refresh the table kept there

Per recipe and stage: parameters (total / trainable), FLOPs of one optimizer step on one GPU (forward +
backward at the recipe's per-GPU batch x gradient accumulation, ``torch.utils.flop_counter``), activations
(what autograd saves for backward in one micro-batch, bf16), and the model states per GPU under ZeRO-0 / 2 / 3
on 1 and 8 GPUs: bf16 weights (2 bytes per parameter) + bf16 gradients (2 per trainable) + fp32 master
weights and AdamW moments (12 per trainable), partitioned as each ZeRO stage partitions them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.paper_shapes import (
    GENHANCER_CONFIGS,
    LLAVA_CONFIGS,
    genhancer_config,
    genhancer_cost,
    llava_config,
    llava_cost,
)

BEGIN, END = "<!-- paper-estimates:begin -->", "<!-- paper-estimates:end -->"
GPUS = (1, 8)
ZERO = (0, 2, 3)


@dataclass
class Row:
    config: str
    stage: str
    batch: str  # per GPU: micro-batch x accumulation (x sequence)
    total: int
    trainable: int
    flops_per_step: int  # one optimizer step on one GPU
    activation_bytes: int  # one micro-batch
    recipe_zero: int

    def cells(self) -> list[str]:
        states = [
            " / ".join(f"{model_state_bytes(self.total, self.trainable, z, n) / 1e9:.1f}" for n in GPUS)
            for z in ZERO
        ]
        return [
            self.config,
            self.stage,
            self.batch,
            f"{self.total / 1e9:.3f} B",
            f"{self.trainable / 1e6:,.1f} M",
            f"{self.flops_per_step / 1e12:,.0f}",
            f"{self.activation_bytes / 1e9:.1f}",
            *states,
            f"ZeRO-{self.recipe_zero}",
        ]


def model_state_bytes(total: int, trainable: int, zero: int, gpus: int) -> float:
    """Bytes per GPU of weights, gradients and optimizer states (bf16 training, fp32 AdamW) under ZeRO."""
    weights, grads, optim = 2.0 * total, 2.0 * trainable, 12.0 * trainable
    optim /= gpus if zero >= 1 else 1
    grads /= gpus if zero >= 2 else 1
    weights /= gpus if zero >= 3 else 1
    return weights + grads + optim


def genhancer_rows(name: str) -> list[Row]:
    cfg = genhancer_config(name)
    batch, accum = cfg.train.batch_size, cfg.train.grad_accum
    zero = 3 if cfg.train.deepspeed and "zero3" in cfg.train.deepspeed else 2 if cfg.train.deepspeed else 0
    costs = genhancer_cost(cfg, ("stage1", "stage2"), batch)
    return [
        Row(
            name,
            stage,
            f"{batch} x {accum}",
            c["trainable"] + c["frozen"],
            c["trainable"],
            c["flops"] * accum,
            c["activation_bytes"],
            zero,
        )
        for stage, c in costs.items()
    ]


def llava_rows(name: str) -> list[Row]:
    cfg = llava_config(name)
    rows = []
    for stage in ("pretrain", "finetune"):
        sc = getattr(cfg, stage)
        batch, accum, seq = sc.per_device_batch_size, sc.gradient_accumulation_steps, sc.data.max_length
        c = llava_cost(cfg, stage, batch, seq)
        total = sum(p["trainable"] + p["frozen"] for p in c["parameters"].values())
        trainable = sum(p["trainable"] for p in c["parameters"].values())
        zero = 3 if "zero3" in (sc.deepspeed or "") else 2 if sc.deepspeed else 0
        rows.append(
            Row(
                f"llava-{name}",
                stage,
                f"{batch} x {accum} x {seq} tok",
                total,
                trainable,
                c["flops"] * accum,
                c["activation_bytes"],
                zero,
            )
        )
    return rows


HEADER = [
    "recipe",
    "stage",
    "batch / GPU",
    "params",
    "trainable",
    "TFLOP / step / GPU",
    "activations GB",
    "ZeRO-0 GB (1 / 8 GPUs)",
    "ZeRO-2 GB (1 / 8)",
    "ZeRO-3 GB (1 / 8)",
    "recipe",
]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def all_rows(
    genhancer: tuple[str, ...] = GENHANCER_CONFIGS, llava: tuple[str, ...] = LLAVA_CONFIGS
) -> list[Row]:
    return [r for n in genhancer for r in genhancer_rows(n)] + [r for n in llava for r in llava_rows(n)]


def replace_block(text: str, table: str) -> str:
    """``text`` with the table between the BEGIN / END markers replaced."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"the document has no {BEGIN} ... {END} block to write the table into")
    head, rest = text.split(BEGIN, 1)
    return head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.paper_estimates", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--genhancer", nargs="*", default=list(GENHANCER_CONFIGS), help="configs/genhancer names"
    )
    parser.add_argument("--llava", nargs="*", default=list(LLAVA_CONFIGS), help="configs/llava names")
    parser.add_argument("--write", type=Path, help="replace the table block of this markdown file")
    args = parser.parse_args(argv)
    table = markdown(all_rows(tuple(args.genhancer), tuple(args.llava)))
    print(table)
    if args.write:
        args.write.write_text(replace_block(args.write.read_text(), table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
