"""Particle generation: labels, poses and CTF per particle, then images block by block.

Stored image = -(CTF * projection) + noise: sign-inverted like RELION-extracted data, which
cryoDRGN inverts back by default. Noise is white Gaussian with variance
``var(all clean CTF-filtered pixels of the dataset) / snr``, so images are made in two passes
over an output array (which may be a memory map): write the clean images, then add noise.
Every random draw comes from a stream keyed by (seed, purpose, block), so a seed gives the same
bytes whatever the caller does with the blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._rotations import random_rotations
from .config import SimConfig
from .junk import junk_blobs
from .optics import apply_ctf, sample_ctf
from .phantom import Phantom, default_phantom
from .project import project_blobs

BLOCK = 256  # particles per block; part of the random-stream keys, so changing it changes data
_META, _JUNK, _NOISE = 0, 1, 2

Progress = Callable[[int, int], None]


def _rng(cfg: SimConfig, stream: int, block: int = 0) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, stream, block])


@dataclass
class SimData:
    """An in-memory simulated dataset.

    images: (N, D, D) float32 as stored (sign-inverted, with noise); rot (N, 3, 3) and trans
    (N, 2) float32 in cryoDRGN's convention (trans = -shift / D); ctf (N, 9) float32;
    conf (N,) float64 (NaN for junk); state (N,) int64 (-1 for junk); is_junk (N,) bool;
    clean: (N, D, D) float32 CTF-filtered projections before inversion and noise, if kept.
    """

    images: np.ndarray
    rot: np.ndarray
    trans: np.ndarray
    ctf: np.ndarray
    conf: np.ndarray
    state: np.ndarray
    is_junk: np.ndarray
    config: SimConfig
    signal_var: float
    noise_std: float
    clean: np.ndarray | None = None


def sample_metadata(cfg: SimConfig) -> dict[str, np.ndarray]:
    """Per-particle labels, poses and CTF (all drawn up front; cheap)."""
    rng = _rng(cfg, _META)
    n = cfg.n
    is_junk = np.zeros(n, bool)
    is_junk[rng.permutation(n)[: cfg.n_junk]] = True
    conf = rng.uniform(0.0, 1.0, n)
    state = (rng.uniform(size=n) < cfg.p_state1).astype(np.int64)
    if cfg.fixed_conf is not None:  # after the draws, so the random streams stay the same
        conf[:] = cfg.fixed_conf
    if cfg.fixed_state is not None:
        state[:] = cfg.fixed_state
    conf[is_junk] = np.nan
    state[is_junk] = -1
    rot = random_rotations(n, rng).astype(np.float32)
    shift = rng.uniform(-cfg.shift_px, cfg.shift_px, (n, 2))
    trans = (-shift / cfg.D).astype(np.float32)
    ctf = sample_ctf(n, cfg.D, cfg.apix, rng, df_min=cfg.df_min, df_max=cfg.df_max,
                     astig_max=cfg.df_astig_max, volt_kv=cfg.voltage_kv, cs_mm=cfg.cs_mm,
                     w=cfg.amp_contrast, phase_shift_deg=cfg.phase_shift_deg)
    return dict(rot=rot, trans=trans, ctf=ctf, conf=conf, state=state, is_junk=is_junk)


def clean_block(cfg: SimConfig, meta: dict, block: int, phantom: Phantom) -> torch.Tensor:
    """CTF-filtered, noise-free, non-inverted images of one block: (B, D, D) float32."""
    sl = slice(block * BLOCK, min((block + 1) * BLOCK, cfg.n))
    junk = meta["is_junk"][sl]
    conf = np.where(junk, 0.0, meta["conf"][sl])
    pos, w = phantom.batch_blobs(conf, np.maximum(meta["state"][sl], 0), cfg.D)
    if junk.any():  # batch_blobs returns fresh arrays
        pos[junk], w[junk] = junk_blobs(_rng(cfg, _JUNK, block), int(junk.sum()), pos.shape[1],
                                        cfg.D)
    shift = -meta["trans"][sl].astype(np.float64) * cfg.D  # pixels the density sits off-centre
    img = project_blobs(torch.from_numpy(pos.astype(np.float32)), w, meta["rot"][sl], shift,
                        cfg.D, phantom.sigma(cfg.D))
    return apply_ctf(img, meta["ctf"][sl])


def generate_into(out, cfg: SimConfig, meta: dict, progress: Progress | None = None,
                  clean_out=None, phantom: Phantom | None = None) -> dict[str, float]:
    """Fill ``out`` (N, D, D) float32 (an array or memory map) with the stored images.

    ``progress(done, total)`` counts work units: total = 2 N (projection, then noise).
    ``clean_out``, if given, receives the clean CTF-filtered images. Returns signal_var,
    noise_std and the stored images' min, max, mean and rms (standard deviation).
    """
    phantom = phantom or default_phantom()
    n, total = cfg.n, 2 * cfg.n
    blocks = [slice(b * BLOCK, min((b + 1) * BLOCK, n)) for b in range(-(-n // BLOCK))]
    m = n * cfg.D * cfg.D
    s1 = s2 = 0.0
    for b, sl in enumerate(blocks):
        clean = clean_block(cfg, meta, b, phantom).numpy()
        out[sl] = -clean
        if clean_out is not None:
            clean_out[sl] = clean
        s1 += float(clean.sum(dtype=np.float64))
        s2 += float(np.square(clean, dtype=np.float64).sum())
        if progress:
            progress(sl.stop, total)
    signal_var = max(s2 / m - (s1 / m) ** 2, 0.0)
    noise_std = float(np.sqrt(signal_var / cfg.snr))
    lo, hi, s1, s2 = np.inf, -np.inf, 0.0, 0.0
    for b, sl in enumerate(blocks):
        shape = (sl.stop - sl.start, cfg.D, cfg.D)
        img = out[sl] + _rng(cfg, _NOISE, b).standard_normal(shape, np.float32) * np.float32(
            noise_std)
        out[sl] = img
        lo, hi = min(lo, float(img.min())), max(hi, float(img.max()))
        s1 += float(img.sum(dtype=np.float64))
        s2 += float(np.square(img, dtype=np.float64).sum())
        if progress:
            progress(n + sl.stop, total)
    mean = s1 / m
    rms = float(np.sqrt(max(s2 / m - mean * mean, 0.0)))
    return dict(signal_var=signal_var, noise_std=noise_std, min=lo, max=hi, mean=mean, rms=rms)


def simulate_particles(cfg: SimConfig, keep_clean: bool = False,
                       progress: Progress | None = None) -> SimData:
    """Simulate ``cfg.n`` particles in memory (see :class:`SimData`)."""
    cfg.validate()
    meta = sample_metadata(cfg)
    images = np.empty((cfg.n, cfg.D, cfg.D), np.float32)
    clean = np.empty_like(images) if keep_clean else None
    stats = generate_into(images, cfg, meta, progress, clean)
    return SimData(images=images, config=cfg, signal_var=stats["signal_var"],
                   noise_std=stats["noise_std"], clean=clean, **meta)
