"""Architecture cards: the published configs of the paper's models, shipped without weights.

``configs/cards/<hub id>/`` mirrors the hub repository of each model the recipes name (``config.json``,
``preprocessor_config.json`` for encoders, ``vae/config.json`` for the FLUX.1 VAE), in the format
``from_pretrained`` / ``from_config`` read. A part configured with ``init: random`` (``encoder.init``,
``latent.init``, LLaVA's ``model.init``) is built from its card -- real shapes, random weights, no hub --
for smoke runs and memory/FLOP estimates (``docs/performance.md``). Such a model is marked in every output
and refused by the exports: its weights mean nothing.

Plumbing only (no model code): which directory holds the config of a path or hub id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from genhancer.utils.errors import ConfigError

# the repository's cards, found from this package's location (like provenance's git revision)
CARDS_ROOT = Path(__file__).resolve().parents[2] / "configs" / "cards"

Init = Literal["pretrained", "random"]
RANDOM: Init = "random"
# what every output of a random-init build says about its weights
RANDOM_INIT_NOTE = "RANDOM INIT (architecture card, no pretrained weights): a smoke/shape run, not a model"


def known_cards() -> list[str]:
    """Hub ids (with subfolder) that have a card, e.g. ``openai/clip-vit-large-patch14-336``."""
    return sorted(str(p.parent.relative_to(CARDS_ROOT)) for p in CARDS_ROOT.rglob("config.json"))


def card_dir(path: str, subfolder: str | None = None, key: str = "path") -> Path:
    """The directory whose ``config.json`` describes ``path`` (+ ``subfolder``).

    A local directory holding a config describes itself (a toy model's directory, or a card given by path);
    a hub id is looked up under ``configs/cards/``. ``key`` names the config setting in the error.
    """
    for root in (Path(path), CARDS_ROOT / path):
        if (root / (subfolder or "") / "config.json").is_file():
            return root
    where = f"{path!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    raise ConfigError(
        f"{key}={where}: random init needs an architecture card, and there is none; known cards "
        f"(under {CARDS_ROOT}): {', '.join(known_cards())}; or point {key} at a directory with a config.json"
    )
