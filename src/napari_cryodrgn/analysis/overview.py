"""A first look at a training folder: which epoch, and a typical map to show."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..model.load import load_run
from ..training.checkpoint import load_z
from .volumes import run_apix


def is_run_folder(path) -> bool:
    """True for a folder holding a training run (config.yaml and weights)."""
    p = Path(path)
    return (p.is_dir() and (p / "config.yaml").is_file()
            and any(p.glob("weights*.pkl")))


@dataclass
class Overview:
    """A typical map of a run: decoded at the particle whose latent is nearest the median."""

    volume: np.ndarray
    apix: float
    epoch: int | None
    z: np.ndarray
    particle: int


def typical_map(workdir, epoch: int | None = None, precision: str = "auto") -> Overview:
    """Decode the map of the particle nearest the median latent of ``epoch`` (latest: None)."""
    run = load_run(workdir, epoch)
    zfile = Path(workdir) / (f"z.{run.epoch}.pkl" if run.epoch is not None else "z.pkl")
    if not zfile.exists():
        raise InputError(f"{zfile}: latent file missing for the epoch of {run.weights.name}")
    mu, _ = load_z(zfile)
    med = np.median(mu, axis=0)
    i = int(np.argmin(((mu - med) ** 2).sum(1)))
    if precision == "auto":
        from ..training.trainer import pick_precision

        precision = pick_precision(next(run.model.parameters()).device)
    vol = run.volume_decoder(precision=precision)(mu[i])
    return Overview(vol, run_apix(run) or 1.0, run.epoch, mu[i], i)
