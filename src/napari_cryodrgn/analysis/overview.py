"""A first look at a training folder: which epoch, and a typical map to show."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.runfolder import RunFolder


def is_run_folder(path) -> bool:
    """True for a folder holding a training run (config.yaml and weights)."""
    p = Path(path)
    return (p.is_dir() and (p / "config.yaml").is_file()
            and any(p.glob("weights*.pkl")))


@dataclass
class Overview:
    """A typical map of a run: decoded at the particle whose latent is nearest the median."""

    volume: np.ndarray
    apix: float | None  # None: unknown (the run records none and its CTF file is not found)
    epoch: int | None
    z: np.ndarray
    particle: int


def typical_map(workdir, epoch: int | None = None, precision: str = "auto") -> Overview:
    """Decode the map of the particle nearest the median latent of ``epoch`` (latest: None)."""
    folder = RunFolder.of(workdir)
    run = folder.model(epoch)
    mu = folder.latents(run.epoch).z
    med = np.median(mu, axis=0)
    i = int(np.argmin(((mu - med) ** 2).sum(1)))
    if precision == "auto":
        from ..training.trainer import pick_precision

        precision = pick_precision(next(run.model.parameters()).device)
    vol = run.volume_decoder(precision=precision)(mu[i])
    return Overview(vol, folder.apix, run.epoch, mu[i], i)
