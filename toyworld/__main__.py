"""``python -m toyworld <command> ...``: the toy world's tools.

Commands (each is a ``main(argv) -> int`` of a module):
  build          write the world: train/val image folders + scene JSONL, the MMVP-VLM-style benchmark,
                 and the derived datasets (LLaVA JSON, lmms-eval parquet)
  pretrain-clip  train the toy "OpenAI CLIP" contrastively on the toy captions -> HF CLIPModel directory
  pretrain-llm   build the toy LLM (tiny Llama + sentencepiece tokenizer) -> HF causal-LM directory
  check-llm      per question type: does the toy LLM answer from a text description of the scene?
  check-llava    per question type, free-form and by letter: what does a toy LLaVA read from val images?
  train-vq       fit the patch k-means VQ tokenizer (latent.space=vq) on an image folder
  eval-vq        reconstruction error of a VQ tokenizer on an image folder
  pretrain-vae   train the toy "FLUX.1 VAE" (diffusers AutoencoderKL, factors measured) -> its directory
  train-attributes  train the attribute classifier (one head per scene attribute) on the world's images
  judge          per-attribute accuracy of a folder of images against their scene labels
  imagine        what a GenHancer denoiser draws from val images' global tokens, judged per attribute
  oracle-draw    what the stage-1 denoiser learns to draw when handed the scene labels instead
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {  # command -> (module, function)
    "build": ("toyworld.build", "main"),
    "pretrain-clip": ("toyworld.pretrain_clip", "main"),
    "pretrain-llm": ("toyworld.llm", "main"),
    "check-llm": ("toyworld.llm_check", "main"),
    "check-llava": ("toyworld.llava_check", "main"),
    "pretrain-vae": ("toyworld.vae", "main"),
    "train-attributes": ("toyworld.attributes", "main"),
    "judge": ("toyworld.judge", "main"),
    "imagine": ("toyworld.imagine", "main"),
    "oracle-draw": ("toyworld.oracle", "main"),
    "train-vq": ("toyworld.vq", "main"),
    "eval-vq": ("toyworld.vq", "eval_main"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print(__doc__.strip())
        if args and args[0] not in ("-h", "--help"):
            print(
                f"\nerror: unknown command {args[0]!r}; known commands: {', '.join(COMMANDS)}",
                file=sys.stderr,
            )
            return 2
        return 0 if args else 2
    module, function = COMMANDS[args[0]]
    return getattr(importlib.import_module(module), function)(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
