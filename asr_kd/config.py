"""Where the Hydra configs live, and composing them without the command line.

Hydra stays at the edge (STYLE.md rule 3): entry points are ``@hydra.main`` wrappers
around plain functions that take a ``DictConfig``; tests call those functions with a
config from :func:`compose`.

Usage:
    cfg = compose("train", ["model=student_tiny", "data.dir=data/synth"])
    metrics = asr_kd.train.train(cfg)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as _hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

__all__ = ["CONF_DIR", "compose"]

# Top-level ``conf/`` of the source tree; the package is installed editable (``pip install -e``),
# so this resolves to the checkout the user is working in.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the primary config ``conf/<config_name>.yaml`` with command-line style overrides."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _hydra_compose(config_name=config_name, overrides=list(overrides))
