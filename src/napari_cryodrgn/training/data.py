"""Training inputs: a particle source aligned with poses and CTF, and the chosen subset."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io.ctf import load_ctf
from ..io.index import load_index
from ..io.particles import open_particles
from ..io.poses import load_poses

log = logging.getLogger(__name__)


@dataclass
class ParticleData:
    """Particles (lazy), poses and CTF for the particles a run trains on.

    ``ind`` maps this dataset's rows to the original stack's numbering.
    """

    source: object
    rot: np.ndarray
    trans: np.ndarray | None
    ctf: np.ndarray | None
    ind: np.ndarray
    D: int
    apix: float | None

    @property
    def n(self) -> int:
        return len(self.ind)

    def images(self, rows: np.ndarray) -> np.ndarray:
        """Raw images for dataset rows (B, D, D)."""
        return self.source.images(self.ind[np.asarray(rows)])


def load_particle_data(particles, poses, ctf=None, ind=None, datadir=None, lazy=True,
                       apix: float | None = None) -> ParticleData:
    """Open and cross-check particles, poses, CTF and an optional index file."""
    src = open_particles(particles, datadir=datadir, lazy=lazy)
    n_all, D = src.n, src.D
    if ind is None:
        index = np.arange(n_all)
    elif isinstance(ind, np.ndarray):
        index = ind.astype(np.int64)
        if len(index) and (index.min() < 0 or index.max() >= n_all):
            raise InputError(f"index array out of range for {particles} ({n_all} particles)")
    else:
        index = load_index(ind, n_all)
    rot, trans = load_poses(poses, n=n_all, D=D, ind=index)
    ctf_arr = None
    if ctf is not None:
        ctf_arr = load_ctf(ctf, n=n_all, ind=index).astype(np.float32)
        ctf_arr = _ctf_for_box(ctf_arr, D, str(ctf), src, apix)
    pix = apix or (float(ctf_arr[0, 1]) if ctf_arr is not None else getattr(src, "apix", None))
    return ParticleData(src, rot, trans, ctf_arr, index, D, pix)


def _ctf_for_box(ctf: np.ndarray, D: int, name: str, src, apix: float | None) -> np.ndarray:
    """Rescale the CTF pixel size to the stack's box (as cryoDRGN does for downsampled stacks)
    and check it against the stack header and ``--Apix`` when those are known."""
    boxes = np.unique(ctf[:, 0])
    if len(boxes) != 1:
        raise InputError(f"{name}: CTF rows disagree on the box size ({boxes.tolist()})")
    d_ctf = float(boxes[0])
    ctf = ctf.copy()
    if d_ctf != D:
        log.info("CTF box %d differs from particle box %d: pixel size rescaled by %.4f",
                 d_ctf, D, d_ctf / D)
        ctf[:, 1] *= d_ctf / D
        ctf[:, 0] = D
    pix = float(np.median(ctf[:, 1]))
    header = getattr(src, "apix", None)
    if apix is not None and abs(apix - pix) > 0.01 * pix:
        raise InputError(
            f"{name}: CTF pixel size {pix:.4g} A (at box {D}) disagrees with --Apix {apix:.4g} A"
        )
    if header and header not in (0.0, 1.0) and abs(header - pix) > 0.02 * pix:
        raise InputError(
            f"{name}: CTF pixel size {pix:.4g} A (at box {D}) disagrees with the particle stack's "
            f"header ({header:.4g} A); check that the CTF file belongs to these particles"
        )
    return ctf
