"""Score a trained run against a simulated dataset's ground truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..io.mrc import read_mrc
from ..io.safepickle import load_pickle
from .fsc import fsc_auc
from .metrics import conformation_r2, junk_auc, state_accuracy


@dataclass
class Truth:
    """Per-particle labels and the true maps of a simulated dataset."""

    conf: np.ndarray
    state: np.ndarray
    is_junk: np.ndarray
    maps: list[tuple[Path, float, int]]  # (file, conf, state)

    @classmethod
    def load(cls, simdir, ind=None) -> Truth:
        simdir = Path(simdir)
        lab = load_pickle(simdir / "labels.pkl")
        conf, state, junk = (np.asarray(lab[k]) for k in ("conf", "state", "is_junk"))
        if ind is not None:
            conf, state, junk = conf[ind], state[ind], junk[ind]
        maps = []
        for line in (simdir / "truth" / "grid.txt").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, c, s = line.split()
                maps.append((simdir / "truth" / name, float(c), int(s)))
        return cls(conf.astype(float), state.astype(int), junk.astype(bool), maps)


def latent_for(z: np.ndarray, truth: Truth, conf: float, state: int, width: float = 0.05):
    """Mean latent of the non-junk particles of ``state`` within ``width`` of ``conf``."""
    sel = (truth.state == state) & (np.abs(truth.conf - conf) <= width)
    if sel.sum() < 3:
        d = np.where(truth.state == state, np.abs(truth.conf - conf), np.inf)
        sel = np.argsort(d)[:10]
    return z[sel].mean(0)


@dataclass
class Scores:
    r2: float
    state_acc: float
    junk_auc: float
    fsc_auc: float | None = None
    fsc_own_vs_other: float | None = None  # mean FSC-AUC to own map minus to the other extreme

    def as_dict(self) -> dict:
        return asdict(self)


def latent_scores(z: np.ndarray, truth: Truth) -> Scores:
    """R^2 of the conformation, state accuracy and junk AUC from z (cross-validated)."""
    return Scores(conformation_r2(z, truth.conf), state_accuracy(z, truth.state),
                  junk_auc(z, truth.is_junk))


def map_scores(decode, z: np.ndarray, truth: Truth, every: int = 3) -> tuple[float, float]:
    """Mean FSC-AUC of maps decoded at the truth grid's latents against the true maps, and the
    mean margin by which each decoded map matches its own true map better than the map at the
    opposite end of the conformation range (same state)."""
    aucs, margins = [], []
    by_key = {(round(c, 4), s): p for p, c, s in truth.maps}
    for p, c, s in truth.maps[::every]:
        vol = decode(latent_for(z, truth, c, s))
        ref, _ = read_mrc(p)
        own = fsc_auc(vol, ref)
        aucs.append(own)
        confs = sorted({k[0] for k in by_key if k[1] == s})
        far = confs[-1] if c < 0.5 else confs[0]
        other, _ = read_mrc(by_key[(far, s)])
        margins.append(own - fsc_auc(vol, other))
    return float(np.mean(aucs)), float(np.mean(margins))
