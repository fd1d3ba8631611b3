"""``GenHancerModel``: encoder -> global token -> conditioner -> denoiser, with its stage applied.

    model = GenHancerModel.build(cfg)              # stage 1: fresh conditioner + denoiser, encoder frozen
    out = model(pixel_values, target)              # {"loss": scalar, "t_mean": scalar (detached)}
    out = model(**model.cache_features(pixel_values, target))  # the same, from precomputed features (stage 1)
    model.save_pretrained("runs/x/stage1/final")   # the stage output directory (below)
    cfg2 = ... stage=stage2 init_from=runs/x/stage1/final
    model2 = GenHancerModel.build(cfg2)            # loads conditioner + denoiser, attaches encoder LoRA

Stage output directory (the only stage -> stage hand-off):
    genhancer.yaml            the resolved config
    conditioner.safetensors   GlobalTokenConditioner weights
    denoiser/                 the denoiser (diffusers save_pretrained, safetensors)
    encoder_lora/             peft LoRA adapter of the encoder (adapter_config.json +
                              adapter_model.safetensors), only when the stage attached one
    provenance.json
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genhancer.conditioning import GlobalTokenConditioner
from genhancer.config import GenHancerConfig, load_genhancer_config
from genhancer.denoisers import DENOISERS, Denoiser, check_latent_space
from genhancer.encoders import EncoderOutput, VisionEncoder
from genhancer.latents import LatentSpace, build_latent_space
from genhancer.stages import STAGES, StageSpec, apply_stage
from genhancer.utils.cards import RANDOM_INIT_NOTE
from genhancer.utils.config import dump_yaml, load_yaml, to_dict
from genhancer.utils.errors import ConfigError, ModelDirError
from genhancer.utils.fsio import atomic_directory
from genhancer.utils.logging import get_logger
from genhancer.utils.provenance import write_provenance

CONFIG_FILE = "genhancer.yaml"
CONDITIONER_FILE = "conditioner.safetensors"
DENOISER_DIR = "denoiser"
LORA_DIR = "encoder_lora"
# sections that define the architecture: a stage-2 config should agree with its stage-1 directory on them
_MODEL_SECTIONS = ("encoder", "conditioning", "denoiser", "latent")


def check_stage_dir(directory: str | Path, what: str = "init_from", encoder_only: bool = False) -> Path:
    """``directory`` if it is a stage output directory, else a ModelDirError naming the missing files.
    ``encoder_only``: an encoder snapshot (``<run>/sweep/step-N``: config + encoder LoRA) is enough."""
    d = Path(directory)
    if not d.is_dir():
        raise ModelDirError(
            f"{what}={d} is not a directory; give a stage output directory such as <run>/final"
        )
    needed = (
        (CONFIG_FILE,) if encoder_only else (CONFIG_FILE, CONDITIONER_FILE, f"{DENOISER_DIR}/config.json")
    )
    missing = [f for f in needed if not (d / f).is_file()]
    if missing:
        raise ModelDirError(
            f"{what}={d} is not a GenHancer stage output directory: missing {', '.join(missing)} "
            "(it is written by GenHancerModel.save_pretrained, e.g. <run>/final of a stage-1 run)"
        )
    return d


def load_stage_config(directory: str | Path) -> GenHancerConfig:
    """The config a stage output directory was written with. Directories written before
    ``conditioning.hidden_width`` existed built their projectors as wide as the input: they read back so."""
    path = Path(directory) / CONFIG_FILE
    legacy = "hidden_width" not in (load_yaml(path).get("conditioning") or {})
    return load_genhancer_config(path, ["conditioning.hidden_width=input"] if legacy else [])


def resolve_stage_dir(path: str | Path, what: str = "stage directory", encoder_only: bool = False) -> Path:
    """``path`` itself if it is a stage output directory, else ``path/final`` (a run directory)."""
    p = Path(path)
    if not (p / CONFIG_FILE).is_file() and (p / "final").is_dir():
        p = p / "final"
    return check_stage_dir(p, what=what, encoder_only=encoder_only)


class GenHancerModel(nn.Module):
    """The trainable whole. Submodules: ``encoder`` (VisionEncoder), ``conditioner``, ``denoiser``; plus
    ``latent``, the fixed latent space (VAE / VQ tokenizer), held beside them rather than as a submodule.

    [IMPORTANT] The latent space is not part of ``parameters()`` / ``state_dict()``, so the module that
    accelerate/DeepSpeed prepare does not contain it: a bf16 engine never casts it and ZeRO never partitions
    it. It stays float32 and frozen, follows the model's device moves (``.to(device)``, an engine's
    ``module.to(device)``) but not its dtype casts, and encodes targets in float32 outside any autocast -- as
    the official code keeps its VAE fp32 outside the DeepSpeed module.
    """

    def __init__(
        self,
        cfg: GenHancerConfig,
        encoder: VisionEncoder,
        conditioner: GlobalTokenConditioner,
        denoiser: Denoiser,
        latent: LatentSpace,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.conditioner = conditioner
        self.denoiser = denoiser
        # object.__setattr__: nn.Module would register it as a submodule (see the class docstring)
        object.__setattr__(self, "latent", latent.float().requires_grad_(False))

    def _apply(self, fn: Any, recurse: bool = True) -> GenHancerModel:
        super()._apply(fn, recurse)
        tensors = [*self.latent.parameters(), *self.latent.buffers()]
        if tensors:  # follow the device the move gives a float32 tensor; never the dtype
            probe = fn(torch.zeros((), dtype=torch.float32, device=tensors[0].device))
            self.latent.to(device=probe.device)
        return self

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: GenHancerConfig) -> GenHancerModel:
        """Model for training ``cfg.stage``: fresh, or from ``cfg.init_from``; stage applied (requires_grad
        set)."""
        spec = STAGES[cfg.stage]
        if spec.needs_init_from and not cfg.init_from:
            raise ConfigError(
                f"stage {cfg.stage!r} starts from a stage-1 output directory: "
                "set init_from=<stage-1 run>/final"
            )
        init_dir = check_stage_dir(cfg.init_from) if cfg.init_from else None
        if init_dir is not None:
            _warn_on_architecture_drift(cfg, init_dir)
        model = cls._assemble(cfg, init_dir, lora_trainable=True)
        apply_stage(model, spec)
        return model

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> GenHancerModel:
        """Load a stage output directory for inference (everything frozen, eval mode)."""
        d = check_stage_dir(directory, what="stage directory")
        cfg = load_stage_config(d)
        try:
            model = cls._assemble(cfg, d, lora_trainable=False)
        except ModelDirError as e:
            used = [cfg.encoder.path, cfg.latent.vae_path if cfg.latent.space != "pixel" else None]
            relative = [p for p in used if p and not Path(p).is_absolute() and not Path(p).exists()]
            if not relative:
                raise
            raise ModelDirError(
                f"stage directory {d}: {e}. Its {CONFIG_FILE} names {', '.join(map(repr, relative))} as "
                f"given at training time; a relative path is read from the current directory ({Path.cwd()}): "
                "run from the directory it was trained in"
            ) from None
        model.requires_grad_(False)
        return model.eval()

    @classmethod
    def _assemble(
        cls, cfg: GenHancerConfig, weights_dir: Path | None, lora_trainable: bool
    ) -> GenHancerModel:
        check_latent_space(cfg.denoiser.type, cfg.latent.space)
        encoder = VisionEncoder.load(
            cfg.encoder.family, cfg.encoder.path, cfg.encoder.image_size, init=cfg.encoder.init
        )
        latent = build_latent_space(cfg.latent)
        latent.latent_shape(encoder.image_spec["image_size"])  # fail early on an indivisible image size
        family = DENOISERS[cfg.denoiser.type]
        if weights_dir is None:
            denoiser = family.build(cfg, latent)
        else:
            denoiser = family.from_pretrained(weights_dir / DENOISER_DIR, cfg, latent)
        conditioner = GlobalTokenConditioner.from_config(
            cfg.conditioning,
            global_dim=encoder.global_dim,
            pooled_dim=denoiser.pooled_dim,
            context_dim=denoiser.context_dim,
            patch_dim=encoder.patch_dim,
        )
        if weights_dir is not None:
            _load_conditioner(conditioner, weights_dir / CONDITIONER_FILE)
            if (weights_dir / LORA_DIR).is_dir():
                encoder.load_lora(weights_dir / LORA_DIR, trainable=lora_trainable)
        return cls(cfg, encoder, conditioner, denoiser, latent)

    # -- properties ---------------------------------------------------------------------------------
    @property
    def stage(self) -> StageSpec:
        return STAGES[self.cfg.stage]

    def encoder_image_spec(self) -> dict[str, Any]:
        """{"image_size": int, "mean": [3 floats], "std": [3 floats]} from the encoder's image processor."""
        return dict(self.encoder.image_spec)

    # -- compute ------------------------------------------------------------------------------------
    def condition(
        self, pixel_values: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (B, 3, H, W), processor-normalised -> (pooled (B, P), context (B, T, J))."""
        if any(p.requires_grad for p in self.encoder.parameters()):
            tokens = self._encode(pixel_values)
        else:
            with torch.no_grad():  # a frozen encoder (stage 1) needs no activation memory
                tokens = self._encode(pixel_values)
        patches = tokens.patch_tokens if self.uses_patch_tokens else None
        return self.conditioner(tokens.global_token, patches, generator)

    def _encode(self, pixel_values: torch.Tensor) -> EncoderOutput:
        # under DeepSpeed bf16 the weights themselves are bf16: feed the encoder its own dtype
        return self.encoder(pixel_values.to(next(self.encoder.parameters()).dtype))

    @property
    def uses_patch_tokens(self) -> bool:
        """True when the conditioner appends local (patch) tokens: the local_token_fraction ablation."""
        return self.conditioner.local_proj is not None

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        global_token: torch.Tensor | None = None,
        patch_tokens: torch.Tensor | None = None,
        latent_input: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Training loss, from pixels or from a stage-1 cache's precomputed features.

        Pixels: pixel_values (B, 3, H, W) normalised with the encoder processor's mean/std; target
        (B, 3, H', W') in [-1, 1] (the same crop). Precomputed (``cache_features`` of the same crop):
        global_token (B, D), patch_tokens (B, N, Dp) when ``uses_patch_tokens``, latent_input (what
        ``latent.encode_for_cache`` gave); only with a frozen encoder. Either way the generator is drawn in
        the same order, so the same crop and generator give the same loss. Returns {"loss": scalar tensor,
        "t_mean": scalar tensor, detached}.
        """
        if global_token is None:
            pooled, context = self.condition(pixel_values, generator)
            with _float32(target):
                latents = self.latent.encode(target.float(), generator)  # (B, C, h, w), no grad
        else:
            self._check_precomputed_allowed()
            pooled, context = self.conditioner(
                global_token, patch_tokens if self.uses_patch_tokens else None, generator
            )
            with _float32(latent_input):
                latents = self.latent.from_cache(_as_float32(latent_input), generator)
        return self.denoiser.training_loss(latents, pooled, context, generator)

    @torch.no_grad()
    def cache_features(self, pixel_values: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a stage-1 cache stores for a batch of crop views (inputs as for ``forward``):
        {"global_token": (B, D), "patch_tokens": (B, N, Dp) only when ``uses_patch_tokens``,
        "latent_input": ``latent.encode_for_cache(target)``}, computed as ``forward`` would compute them."""
        tokens = self._encode(pixel_values)
        with _float32(target):
            latent_input = self.latent.encode_for_cache(target.float())
        out = {"global_token": tokens.global_token, "latent_input": latent_input}
        if self.uses_patch_tokens:
            out["patch_tokens"] = tokens.patch_tokens
        return out

    def _check_precomputed_allowed(self) -> None:
        if any(p.requires_grad for p in self.encoder.parameters()):
            raise ConfigError(
                f"precomputed encoder features (the stage-1 cache) need a frozen encoder, but stage "
                f"{self.cfg.stage!r} trains it; feed pixels (cache.enabled=false)"
            )

    @torch.no_grad()
    def reconstruct(
        self,
        pixel_values: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        image_size: int | None = None,
    ) -> torch.Tensor:
        """What the denoiser imagines from each image's global token: (B, 3, S, S) in about [-1, 1]."""
        pooled, context = self.condition(pixel_values, generator)
        return self.draw(pooled, context, steps, generator, image_size)

    @torch.no_grad()
    def draw(
        self,
        pooled: torch.Tensor,
        context: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        image_size: int | None = None,
    ) -> torch.Tensor:
        """What the denoiser draws from a condition (the conditioner's outputs): (B, 3, S, S) in about [-1, 1]
        (``reconstruct`` with the condition given)."""
        _, h, w = self.latent.latent_shape(image_size or self.encoder.image_spec["image_size"])
        z = self.denoiser.generate(pooled, context, (h, w), steps or self.cfg.flow.sample_steps, generator)
        return self.latent.decode(z)

    # -- state --------------------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """{name: tensor} of every trainable parameter: CPU copies, contiguous, no shared storage."""
        return {
            n: p.detach().to("cpu", copy=True).contiguous()
            for n, p in self.named_parameters()
            if p.requires_grad
        }

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``trainable_state_dict``; the key sets must match exactly."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ModelDirError(
                f"checkpoint does not fit this model/stage: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}) "
                "— was it saved by another stage/config?"
            )
        with torch.no_grad():
            for name, p in params.items():
                if state[name].shape != p.shape:
                    raise ModelDirError(
                        f"checkpoint tensor {name}: shape {tuple(state[name].shape)} != {tuple(p.shape)}"
                    )
                p.copy_(state[name])

    def save_pretrained(
        self, out_dir: str | Path, extra: dict[str, Any] | None = None, encoder_only: bool = False
    ) -> Path:
        """Write the stage output directory atomically (see the module docstring). ``extra`` (e.g.
        {"step": 1000}) goes into provenance.json. ``encoder_only``: config + encoder LoRA only (a sweep
        snapshot, exportable with ``genhancer.export``). Call it on the main process only."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        with atomic_directory(out_dir) as tmp:
            if not encoder_only:
                state = self.conditioner.state_dict()
                save_file(
                    {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()},
                    str(tmp / CONDITIONER_FILE),
                )
                self.denoiser.save_pretrained(tmp / DENOISER_DIR)
            if self.encoder.has_lora:
                self.encoder.save_lora(tmp / LORA_DIR)
            dump_yaml(self.cfg, tmp / CONFIG_FILE)
            parents = [p for p in (self.cfg.encoder.path, self.cfg.init_from) if p]
            write_provenance(
                tmp,
                "genhancer-stage",
                config=self.cfg,
                parents=parents,
                extra={"stage": self.cfg.stage, **random_init_marks(self.cfg), **(extra or {})},
            )
        get_logger("genhancer.module").info("saved stage %s output to %s", self.cfg.stage, out_dir)
        return out_dir


def _float32(t: torch.Tensor) -> AbstractContextManager:
    """No autocast on ``t``'s device around the latent space (plain accelerate's bf16 wraps forward in one):
    the VAE computes in float32. The meta device (shape-only runs) has no autocast to turn off."""
    if t.device.type == "meta":
        return nullcontext()
    return torch.autocast(t.device.type, enabled=False)


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    """Cached latent inputs in float32 (VAE moments); VQ token ids stay integers."""
    return t.float() if t.is_floating_point() else t


def random_init_marks(cfg: GenHancerConfig) -> dict[str, Any]:
    """What provenance / summaries say about a random-init build (nothing for a pretrained one)."""
    return {"random_init": cfg.random_init, "note": RANDOM_INIT_NOTE} if cfg.random_init else {}


def _load_conditioner(conditioner: GlobalTokenConditioner, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path))
    try:
        conditioner.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelDirError(
            f"{path} does not fit the configured conditioner "
            "(conditioning.* or the encoder differ from the run "
            f"that wrote it): {str(e).splitlines()[0]}"
        ) from None


def _warn_on_architecture_drift(cfg: GenHancerConfig, init_dir: Path) -> None:
    saved = to_dict(load_stage_config(init_dir))
    now = to_dict(cfg)
    drift = [
        f"{s}.{k}"
        for s in _MODEL_SECTIONS
        for k in now.get(s, {})
        if s in saved and isinstance(saved[s], dict) and saved[s].get(k) != now[s][k]
    ]
    if drift:
        get_logger("genhancer.module").warning(
            "config differs from %s/%s in %s; the saved weights decide the architecture",
            init_dir,
            CONFIG_FILE,
            ", ".join(drift),
        )
