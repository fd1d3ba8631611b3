"""What does the denoiser imagine from a global token? Reconstruct images and write a comparison grid.

    python -m genhancer.sample --stage-dir runs/x/stage1/final --images some/dir --out grid.png [--n 8]
        [--steps 20] [--seed 0]
    python -m genhancer.sample --stage-dir runs/x/stage1/final --print-config   # the model's config, as YAML

Each image is resized (shorter side, bicubic) and centre-cropped to the encoder's input size, encoded to its
global token, and the denoiser samples conditioned on that token alone: from noise (Euler, t = 1 -> 0) for the
continuous family, from an all-mask grid (MaskGIT parallel decoding) for the discrete one.
The PNG has the originals on the top row and the reconstructions below.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from genhancer.config import load_genhancer_config
from genhancer.module import CONFIG_FILE, GenHancerModel, resolve_stage_dir
from genhancer.utils.cli import add_print_config_argument, entry_point, print_config_and_exit
from genhancer.utils.errors import DataError
from genhancer.utils.logging import get_logger

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
log = get_logger("genhancer.sample")


def list_images(sources: Sequence[str | Path], n: int) -> list[Path]:
    """The first ``n`` image files from files and/or directories (searched recursively, sorted)."""
    files: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"--images: {p} is neither an image file nor a directory")
    if not files:
        raise DataError(
            f"--images: no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, sources))}"
        )
    return files[:n]


def load_batch(paths: Sequence[Path], spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (pixel_values (B, 3, S, S) normalised with spec mean/std, images (B, 3, S, S) in [-1, 1])."""
    from PIL import Image

    size = spec["image_size"]
    tensors = []
    for path in paths:
        try:
            img = Image.open(path).convert("RGB")
        except OSError as e:
            raise DataError(f"{path}: cannot read image ({e})") from None
        scale = size / min(img.size)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((w, h), Image.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
        tensors.append(data.permute(2, 0, 1).float() / 255.0)  # (3, S, S) in [0, 1]
    x = torch.stack(tensors)
    mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
    return (x - mean) / std, x * 2 - 1


def save_grid(rows: Sequence[torch.Tensor], out: str | Path, pad: int = 2) -> Path:
    """rows: tensors (B, 3, S, S) in [-1, 1], one grid row each -> PNG."""
    from PIL import Image

    b, _, s, _ = rows[0].shape
    canvas = torch.ones(3, len(rows) * (s + pad) + pad, b * (s + pad) + pad)
    for r, row in enumerate(rows):
        for i in range(b):
            y, x = pad + r * (s + pad), pad + i * (s + pad)
            canvas[:, y : y + s, x : x + s] = (row[i].float().clamp(-1, 1) + 1) / 2
    arr = (canvas.permute(1, 2, 0) * 255).round().to(torch.uint8).contiguous().numpy()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(out)
    return out


def reconstruct_images(
    model: GenHancerModel,
    paths: Sequence[Path],
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(originals, reconstructions), both (N, 3, S, S) in [-1, 1] at the encoder's input size S.

    One generator (seeded once) serves the batches in order, so a run with the same seed, images and batch
    size reproduces; the reconstruction of an image does depend on the batch it falls in.
    """
    generator = torch.Generator().manual_seed(seed)
    spec = model.encoder_image_spec()
    originals, recons = [], []
    for i in range(0, len(paths), batch_size):
        pixel_values, images = load_batch(paths[i : i + batch_size], spec)
        recon = model.reconstruct(pixel_values, steps=steps, generator=generator)
        if recon.shape[-2:] != images.shape[-2:]:
            recon = torch.nn.functional.interpolate(recon, size=images.shape[-2:], mode="bilinear")
        originals.append(images)
        recons.append(recon.float())
    return torch.cat(originals), torch.cat(recons)


def sample_grid(
    stage_dir: str | Path,
    images: Sequence[str | Path],
    out: str | Path,
    n: int = 8,
    steps: int | None = None,
    seed: int = 0,
) -> Path:
    model = GenHancerModel.from_pretrained(resolve_stage_dir(stage_dir, what="--stage-dir"))
    paths = list_images(images, n)
    originals, recon = reconstruct_images(model, paths, steps=steps, seed=seed, batch_size=len(paths))
    path = save_grid([originals, recon], out)
    log.info("wrote %s (%d images, %d steps)", path, len(paths), steps or model.cfg.flow.sample_steps)
    return path


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genhancer.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stage-dir", required=True, help="a stage output directory (or a run dir with final/)"
    )
    parser.add_argument("--images", nargs="+", help="image files and/or directories (unless --print-config)")
    parser.add_argument("--out", help="output PNG (unless --print-config)")
    parser.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampling steps: Euler (continuous) or decoding (discrete); default flow.sample_steps",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_print_config_argument(parser, "the stage's resolved config (its config.yaml)")
    args = parser.parse_args(argv)
    if args.print_config:
        stage_dir = resolve_stage_dir(args.stage_dir, what="--stage-dir")
        print_config_and_exit(load_genhancer_config(stage_dir / CONFIG_FILE))
    if not (args.images and args.out):
        parser.error("the following arguments are required: --images, --out")
    print(sample_grid(args.stage_dir, args.images, args.out, n=args.n, steps=args.steps, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
