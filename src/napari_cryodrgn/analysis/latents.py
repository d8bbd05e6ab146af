"""The latent points of a training folder (ours or cryoDRGN's): which epochs have them, reading
and checking ``z.N.pkl`` against ``config.yaml``, and where analyses and caches live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import InputError
from ..training.checkpoint import epochs_in, load_z
from ..training.config import load_config

STATE_DIR = "explore"  # WORKDIR/explore/: the explorer's selection and UMAP cache


def z_epochs(workdir) -> list[int]:
    """Sorted epoch numbers N with a z.N.pkl in ``workdir``."""
    return epochs_in(workdir, "z")


def resolve_z(workdir, epoch: int | None = None) -> tuple[Path, int | None]:
    """The latent file of ``epoch``; by default the latest epoch whose weights are complete
    (weights.N.pkl is written after z.N.pkl), else the final z.pkl."""
    workdir = Path(workdir)
    eps = z_epochs(workdir)
    if epoch is None:
        done = sorted(set(eps) & set(epochs_in(workdir)))
        if done or eps:
            e = (done or eps)[-1]
            return workdir / f"z.{e}.pkl", e
        if (workdir / "z.pkl").is_file():
            return workdir / "z.pkl", None
        raise InputError(
            f"{workdir}: no latent files (z.N.pkl or z.pkl); train a model into this folder "
            "first, or open the training folder itself rather than a folder above or below it")
    if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool):
        raise InputError(f"epoch must be a whole number, not {epoch!r}")
    p = workdir / f"z.{epoch}.pkl"
    if not p.is_file():
        have = ", ".join(map(str, eps)) or "none"
        raise InputError(f"{workdir}: no z.{epoch}.pkl for epoch {epoch} (epochs with latents: "
                         f"{have}); choose one of those")
    return p, int(epoch)


@dataclass
class Latents:
    """z_mu (N, zdim) float32 of one epoch, with the run's config."""

    workdir: Path
    epoch: int | None
    zfile: Path
    z: np.ndarray
    z_logvar: np.ndarray | None
    config: dict

    @property
    def D(self) -> int:
        """Image box (pixels) the run was trained on."""
        return int(self.config["lattice_args"]["D"]) - 1

    def apix(self) -> float | None:
        """Voxel size of the run's maps, when the config or its CTF file records it."""
        from .volumes import run_apix

        return run_apix(SimpleNamespace(config=self.config, D_img=self.D))


def load_latents(workdir, epoch: int | None = None) -> Latents:
    """Open a training folder's config and the latents of ``epoch`` (latest when None), with a
    clear InputError for a missing folder, config or epoch, or latents that do not fit."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise InputError(f"{workdir}: no such training folder")
    cfg = load_config(workdir / "config.yaml")
    zfile, ep = resolve_z(workdir, epoch)
    mu, logvar = load_z(zfile)
    if mu.ndim != 2 or len(mu) == 0:
        raise InputError(f"{zfile}: expected an N x zdim array of latents, found shape "
                         f"{mu.shape}")
    zdim = cfg["model_args"].get("zdim")
    if zdim is not None and int(zdim) != mu.shape[1]:
        raise InputError(f"{zfile}: latents have {mu.shape[1]} dimensions but config.yaml's "
                         f"model has zdim {zdim}; the files come from different runs")
    bad = ~np.isfinite(mu).all(axis=1)
    if bad.any():
        raise InputError(f"{zfile}: latents of {int(bad.sum())} particles are NaN or infinite "
                         f"(first: particle {int(np.flatnonzero(bad)[0])}); did training "
                         "diverge? Choose an earlier epoch")
    if mu.shape[1] < 2:
        raise InputError(f"{zfile}: the latent space has 1 dimension; PCA/UMAP views and "
                         "traversals need zdim >= 2")
    return Latents(workdir, ep, zfile, mu, logvar, cfg)


def analysis_dir(workdir, epoch: int | None) -> Path:
    """cryoDRGN's default analysis folder: WORKDIR/analyze.N (WORKDIR/analyze for z.pkl)."""
    return Path(workdir) / ("analyze" if epoch is None else f"analyze.{epoch}")


def umap_cache_paths(workdir, epoch: int | None) -> list[Path]:
    """Where an embedding of ``epoch`` may already be: the analysis folder's umap.pkl (ours or
    cryoDRGN's), then the explorer's cache."""
    tag = "final" if epoch is None else str(epoch)
    return [analysis_dir(workdir, epoch) / "umap.pkl",
            Path(workdir) / STATE_DIR / f"umap.{tag}.pkl"]
