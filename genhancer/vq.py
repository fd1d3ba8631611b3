"""Token spaces for the discrete denoiser: VQ tokenizer directories and the ``vq`` latent space.

``vq`` (a ``LATENT_SPACES`` entry) turns an image into a grid of codebook ids and back:

    encode(x (B, 3, H, W) in [-1, 1]) -> ids (B, h, w) int64 in [0, codebook_size)
    decode(ids (B, h, w))              -> images (B, 3, H, W) in about [-1, 1]

It reads ``latent.vae_path`` (+ ``latent.vae_subfolder``): the directory of a *VQ*-VAE. Which tokenizer class
reads it is decided by the ``_class_name`` of its ``config.json`` (``TOKENIZERS`` registry):

  * ``VQModel`` — any diffusers VQ-GAN, e.g. aMUSEd's (``amused/amused-256``, subfolder ``vqvae``: 8192 codes,
    16x downsampling, so 224 px -> 14x14 tokens, 384 px -> 24x24).
  * ``PatchKMeansTokenizer`` — the toy world's tokenizer: a k-means codebook over p x p pixel patches
    (each token *is* a patch; decode pastes the centroids), written by ``python -m toyworld train-vq``.

A token space never trains (``LatentSpace.train`` keeps it in eval mode); ``latent.patch_size`` must be 1
(one token = one code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genhancer.latents import LATENT_SPACES, LatentSpace
from genhancer.utils.errors import ConfigError, ModelDirError
from genhancer.utils.fsio import read_json, write_json
from genhancer.utils.registry import Registry
from genhancer.utils.weights import require_safetensors

CONFIG_FILE = "config.json"
KMEANS_WEIGHTS = "model.safetensors"


# --------------------------------------------------------------------------------------------- tokenizers
class VQTokenizer(nn.Module):
    """An image <-> token-grid codec. ``downsample``: pixels per token side; ``codebook_size``: number of
    codes."""

    codebook_size: int
    downsample: int

    @classmethod
    def load(cls, path: str, subfolder: str | None) -> VQTokenizer:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, 3, H, W) in [-1, 1] -> ids (B, H/f, W/f) int64."""
        raise NotImplementedError

    def decode(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """ids (B, h, w) -> (B, 3, h*f, w*f) in about [-1, 1]."""
        raise NotImplementedError


TOKENIZERS: Registry[type[VQTokenizer]] = Registry("VQ tokenizer class")


@TOKENIZERS.register("VQModel")
class DiffusersVQTokenizer(VQTokenizer):
    """A diffusers ``VQModel`` (VQ-GAN): ids are its quantizer's nearest-code indices."""

    def __init__(self, vqmodel: nn.Module) -> None:
        super().__init__()
        self.vq = vqmodel.requires_grad_(False).eval()
        self.codebook_size = int(vqmodel.config.num_vq_embeddings)
        self.downsample = 2 ** (len(vqmodel.config.block_out_channels) - 1)

    @classmethod
    def load(cls, path: str, subfolder: str | None) -> DiffusersVQTokenizer:
        from diffusers import VQModel

        kwargs = {"subfolder": subfolder} if subfolder else {}
        require_safetensors(path, loader="diffusers.VQModel", subfolder=subfolder, what="VQ tokenizer")
        return cls(VQModel.from_pretrained(path, use_safetensors=True, **kwargs))

    @property
    def _dtype(self) -> torch.dtype:
        return self.vq.quantize.embedding.weight.dtype

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = self.vq.encode(x.to(self._dtype)).latents  # (B, C, h, w) before quantization
        _, _, (_, _, idx) = self.vq.quantize(h)  # idx: (B*h*w,) or (B, h, w) -- reshape covers both
        return idx.reshape(b, h.shape[2], h.shape[3]).long()

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        b, h, w = ids.shape
        dim = self.vq.quantize.embedding.weight.shape[1]
        shape = (b, h, w, dim)
        if self.vq.config.lookup_from_codebook:  # aMUSEd: decode() looks the ids up itself
            out = self.vq.decode(ids.reshape(-1), force_not_quantize=True, shape=shape)
        else:
            quant = self.vq.quantize.get_codebook_entry(ids.reshape(-1), shape)  # (B, C, h, w)
            out = self.vq.decode(quant, force_not_quantize=True)
        return out.sample.float()


@TOKENIZERS.register("PatchKMeansTokenizer")
class PatchKMeansTokenizer(VQTokenizer):
    """Each non-overlapping p x p pixel patch -> the id of its nearest centroid (L2 in [-1, 1] RGB).

    ``codebook``: (K, 3*p*p), a patch flattened channels-first, in (c, dy, dx) order.
    """

    def __init__(self, codebook: torch.Tensor, patch_size: int) -> None:
        super().__init__()
        if codebook.ndim != 2 or codebook.shape[1] != 3 * patch_size * patch_size:
            raise ModelDirError(
                f"codebook of shape {tuple(codebook.shape)} does not fit patch size {patch_size}"
            )
        self.register_buffer("codebook", codebook.float().contiguous())
        self.codebook_size = int(codebook.shape[0])
        self.downsample = int(patch_size)

    @classmethod
    def load(cls, path: str, subfolder: str | None) -> PatchKMeansTokenizer:
        from safetensors.torch import load_file

        d = Path(path) / (subfolder or "")
        cfg = _read_tokenizer_config(d)
        weights = d / KMEANS_WEIGHTS
        if not weights.is_file():
            raise ModelDirError(
                f"{d} has no {KMEANS_WEIGHTS} (a PatchKMeansTokenizer directory holds the codebook)"
            )
        return cls(load_file(str(weights))["codebook"], int(cfg["patch_size"]))

    def save_pretrained(self, directory: str | Path, extra_config: dict[str, Any] | None = None) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"codebook": self.codebook.detach().cpu().contiguous()}, str(d / KMEANS_WEIGHTS))
        write_json(
            d / CONFIG_FILE,
            {
                "_class_name": "PatchKMeansTokenizer",
                "patch_size": self.downsample,
                "codebook_size": self.codebook_size,
                **(extra_config or {}),
            },
        )

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h*w, 3*p*p) non-overlapping patches in row-major order."""
        p = self.downsample
        b, c, hh, ww = x.shape
        if hh % p or ww % p:
            raise ConfigError(f"image size {(hh, ww)} is not divisible by the tokenizer patch size {p}")
        x = x.float().reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p)
        return x.reshape(b, (hh // p) * (ww // p), c * p * p)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hh, ww = x.shape
        p = self.downsample
        flat = self.patches(x).reshape(-1, self.codebook.shape[1])  # (B*N, D)
        ids = nearest_code(flat, self.codebook)
        return ids.reshape(b, hh // p, ww // p)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        b, h, w = ids.shape
        p = self.downsample
        patches = self.codebook[ids.reshape(b, h, w)].reshape(b, h, w, 3, p, p)  # (B, h, w, C, p, p)
        return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, 3, h * p, w * p)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """x (N, D), codebook (K, D) -> (N,) index of the nearest code (squared L2), in chunks to bound memory."""
    cb = codebook.float()
    cb_sq = (cb * cb).sum(1)  # (K,)
    out = []
    for part in x.float().split(chunk):
        d = cb_sq[None, :] - 2.0 * part @ cb.T  # (n, K); |x|^2 is the same for every code
        out.append(d.argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def _read_tokenizer_config(d: Path) -> dict[str, Any]:
    return read_json(
        d / CONFIG_FILE, ModelDirError, missing=f"{d} is not a VQ tokenizer directory (no {CONFIG_FILE})"
    )


def _tokenizer_config(path: str, subfolder: str | None) -> dict[str, Any]:
    """config.json of a local directory, or of a hub repository (through the local cache; offline-safe)."""
    local = Path(path) / (subfolder or "")
    if Path(path).is_dir():
        return _read_tokenizer_config(local)
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, CONFIG_FILE, subfolder=subfolder)).read_text())
    except Exception as e:  # any hub/cache failure is one user-facing message
        raise ModelDirError(
            f"latent.vae_path={path!r}{f' (subfolder {subfolder})' if subfolder else ''} "
            "is neither a local VQ "
            f"tokenizer directory nor a hub repository available here ({type(e).__name__}: {e})"
        ) from None


def load_tokenizer(path: str, subfolder: str | None = None) -> VQTokenizer:
    """Load a VQ tokenizer directory (or hub id); its config.json ``_class_name`` picks the class."""
    cfg = _tokenizer_config(path, subfolder)
    kind = cfg.get("_class_name")
    if kind not in TOKENIZERS:
        raise ModelDirError(
            f"latent.vae_path={path!r}: config.json _class_name {kind!r} is not a VQ tokenizer; known: "
            f"{', '.join(sorted(TOKENIZERS))} (an AutoencoderKL belongs to latent.space=vae)"
        )
    try:
        return TOKENIZERS[kind].load(path, subfolder)
    except (OSError, ValueError) as e:
        raise ModelDirError(f"cannot load the {kind} from latent.vae_path={path!r}: {e}") from None


# -------------------------------------------------------------------------------------------- the space
@LATENT_SPACES.register("vq")
class VqSpace(LatentSpace):
    """Discrete tokens: ``encode`` gives ids (B, h, w) int64, ``decode`` gives images. ``channels`` is 1."""

    channels = 1

    def __init__(self, tokenizer: VQTokenizer) -> None:
        super().__init__(1)
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        self.downsample = tokenizer.downsample

    @property
    def codebook_size(self) -> int:
        return self.tokenizer.codebook_size

    @classmethod
    def from_config(cls, latent_cfg: Any) -> VqSpace:
        if not latent_cfg.vae_path:
            raise ConfigError(
                "latent.space=vq needs latent.vae_path: a VQ tokenizer directory (diffusers VQModel, e.g. "
                "amused/amused-256 with latent.vae_subfolder=vqvae, "
                "or one written by `python -m toyworld train-vq`)"
            )
        if latent_cfg.patch_size != 1:
            raise ConfigError(
                f"latent.space=vq: one token is one code, so latent.patch_size must be 1 "
                f"(got {latent_cfg.patch_size})"
            )
        return cls(load_tokenizer(latent_cfg.vae_path, latent_cfg.vae_subfolder))

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        if image_size % self.downsample:
            raise ConfigError(
                f"image size {image_size} must be divisible by the VQ tokenizer's downsampling "
                f"{self.downsample}"
            )
        return 1, image_size // self.downsample, image_size // self.downsample

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> ids (B, h, w) int64 (deterministic: ``generator`` is unused)."""
        return self.tokenizer.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w) -> (B, 3, H, W) float32 in about [-1, 1]."""
        return self.tokenizer.decode(z.long())
