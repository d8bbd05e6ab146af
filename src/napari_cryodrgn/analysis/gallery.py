"""Particle gallery: each raw particle beside the model's projection at its pose and latent.

The projection of particle ``r`` is what the trained model predicts the image to be: the
decoder's central slice at the particle's pose and latent point ``z[r]``, times its CTF, moved
to its recorded translation, brought back to real space with the run's normalisation and sign
convention (``invert_data``), so bright density is bright in both images of a pair::

    raw, proj = particle_pairs(session, rows)             # (B, D, D) float32 each
    raw, proj = particle_pairs("run/", rows, epoch=12, lowpass=0.5, normalize=True)

``rows`` are the run's particle rows (the rows of ``z``; ``Session.selected_indices()``), not
original-stack indices. The model's projection holds only the frequencies the model was trained
on (the circle of radius D/2) and no DC term (cryoDRGN ignores it), so it has zero mean; use
``normalize=True`` to compare the two on one grey scale.

A :class:`Projector` holds the model, the run's dataset (particles, poses, CTF) and its latents;
:func:`particle_pairs` keeps one per open Session (rebuilt when the session's epoch changes).
Qt-free: the napari gallery calls this from a worker thread.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..geometry.ctf import ctf_for_params
from ..geometry.lattice import translate_ht
from ..geometry.transforms import fft_center, ifft_center, iht2_center
from ..io.runfolder import RunFolder
from ..training.preprocess import Preprocessor


class Projector:
    """Renders raw particles and the model's projections for one run and epoch.

    ``z`` overrides the latents (default: the epoch's ``z.N.pkl``, or ``z.pkl`` for None).
    """

    def __init__(self, workdir, epoch: int | None = None, z: np.ndarray | None = None,
                 device="cpu"):
        folder = RunFolder.of(workdir)
        self.workdir = folder.workdir
        self.run = folder.model(epoch, device=device)
        self.epoch = epoch
        self.device = torch.device(device)
        cfg = self.run.config
        self.z = np.asarray(folder.latents(epoch).z if z is None else z, np.float32)
        self.data = folder.particle_data(len(self.z), "the gallery shows the particles' images")
        dargs = cfg.get("dataset_args", {})
        self.invert = bool(dargs.get("invert_data", True))
        self.norm_std = float(self.run.norm[1])
        self.prep = Preprocessor(self.data.D, self.invert, window=False,
                                 norm_std=self.norm_std, device=self.device)
        self._lock = threading.Lock()

    @property
    def n(self) -> int:
        return self.data.n

    @property
    def D(self) -> int:
        return self.data.D

    def _rows(self, rows) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if rows.ndim != 1:
            raise InputError(f"particle rows must be a 1-D list, got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise InputError(f"particle rows must lie in 0..{self.n - 1}")
        return rows

    def raw(self, rows) -> np.ndarray:
        """The particle images as stored on disk, (B, D, D) float32."""
        return self.data.images(self._rows(rows))

    @torch.no_grad()
    def project(self, rows, rot=None, trans=None, z=None, ctf: bool = True) -> np.ndarray:
        """The model's projections (B, D, D) float32 for ``rows``, in the raw images' units and
        sign. ``rot`` (B, 3, 3), ``trans`` (B, 2, fractions of the box) and ``z`` (B, zdim)
        replace the particles' own; ``ctf=False`` leaves the CTF out."""
        rows = self._rows(rows)
        B, prep, lat = len(rows), self.prep, self.prep.lattice
        r = torch.as_tensor(self.data.rot[rows] if rot is None else rot, dtype=torch.float32,
                            device=self.device)
        zt = torch.as_tensor(self.z[rows] if z is None else z, dtype=torch.float32,
                             device=self.device).reshape(B, -1)
        model = self.run.model
        with self._lock:
            h, hm = model.decoder.hartley_pair(prep.coords_half @ r, zt)
        rec = torch.cat([h, hm], 1).float()
        if ctf and self.data.ctf is not None:
            p = torch.as_tensor(self.data.ctf[rows], dtype=torch.float32, device=self.device)
            rec = rec * ctf_for_params(lat.freqs2d, p)[:, prep.order]
        full = torch.zeros(B, lat.D * lat.D, device=self.device)
        full[:, prep.order] = rec
        t = self.data.trans[rows] if trans is None and self.data.trans is not None else trans
        if t is not None:  # the model is centred: move it to where the particle sits
            t_px = torch.as_tensor(t, dtype=torch.float32, device=self.device) * self.D
            full = translate_ht(full, full.flip(1), lat.freqs2d, -t_px)
        ht = full.view(B, lat.D, lat.D)[:, :-1, :-1] * self.norm_std
        img = iht2_center(ht)
        if self.invert:
            img = -img
        return img.cpu().numpy().astype(np.float32)

    def pairs(self, rows, lowpass: float | None = None, normalize: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
        """(raw, projection), each (B, D, D) float32; see :func:`particle_pairs`."""
        raw, proj = self.raw(rows), self.project(rows)
        if lowpass is not None:
            raw, proj = lowpass_filter(raw, lowpass), lowpass_filter(proj, lowpass)
        if normalize:
            raw, proj = standardize(raw), standardize(proj)
        return raw, proj


def lowpass_filter(imgs: np.ndarray, cutoff: float) -> np.ndarray:
    """Keep frequencies up to ``cutoff`` x Nyquist (0 < cutoff <= 1) with a soft edge (a cosine
    over the last 10% of the radius)."""
    if not 0 < cutoff <= 1:
        raise InputError(f"low-pass cutoff {cutoff} must be a fraction of Nyquist in (0, 1]")
    D = imgs.shape[-1]
    k = (np.arange(D) - D // 2) / (D / 2)
    r = np.hypot(k[None, :], k[:, None]) / cutoff
    filt = np.clip((1.0 - r) / 0.1, 0.0, 1.0)
    filt = 0.5 - 0.5 * np.cos(np.pi * filt)
    out = ifft_center(fft_center(np.asarray(imgs, np.float64)) * filt).real
    return out.astype(np.float32)


def standardize(imgs: np.ndarray) -> np.ndarray:
    """Each image shifted to zero mean and scaled to unit standard deviation."""
    x = np.asarray(imgs, np.float64)
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = x.std(axis=(-2, -1), keepdims=True)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


_PROJECTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROJECTORS_LOCK = threading.Lock()


def projector_for(session) -> Projector:
    """The :class:`Projector` of an open Session at its current epoch (built once)."""
    with _PROJECTORS_LOCK:
        cached = _PROJECTORS.get(session)
    if cached is not None and cached.epoch == session.epoch and cached.z is session.z:
        return cached
    proj = Projector(session.workdir, session.epoch, z=session.z)
    proj.z = session.z  # the session's own array: identity marks the epoch it belongs to
    with _PROJECTORS_LOCK:
        _PROJECTORS[session] = proj
    return proj


def particle_pairs(session_or_run, indices, *, epoch: int | None = None,
                   lowpass: float | None = None, normalize: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Raw particle images and the model's projections at their poses and latents.

    ``session_or_run``: a Session (its epoch), a :class:`Projector`, or a training folder
    (``epoch``: latest when None). ``indices``: the run's particle rows. ``lowpass``: a
    cutoff as a fraction of Nyquist applied to both; ``normalize``: each image to zero mean and
    unit standard deviation. Returns (raw (B, D, D), projection (B, D, D)) float32.
    """
    if isinstance(session_or_run, Projector):
        proj = session_or_run
    elif isinstance(session_or_run, (str, Path)):
        proj = Projector(session_or_run, epoch)
    else:
        proj = projector_for(session_or_run)
    return proj.pairs(indices, lowpass=lowpass, normalize=normalize)
