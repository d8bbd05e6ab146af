"""Analytic projection and rendering of isotropic Gaussian blobs (cryoDRGN pixel conventions).

A blob of weight ``w`` at ``c`` (pixels, relative to the box centre) has density
``w * exp(-|r - c|^2 / (2 sigma^2))``. Pixel ``[iy, ix]`` sits at ``x = ix - D/2, y = iy - D/2``
and voxel ``[iz, iy, ix]`` likewise. Projection under a pose ``R`` integrates along z the map
whose points ``r`` moved to ``R r``, so the blob lands at ``((R c)_x, (R c)_y) + shift``.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _as_tensor(x, dtype=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _profiles(centres: torch.Tensor, D: int, sigma: float) -> torch.Tensor:
    """exp(-(u - c)^2 / (2 sigma^2)) on the pixel axis ``u = i - D/2``; (..., A) -> (..., A, D)."""
    axis = torch.arange(D, dtype=centres.dtype, device=centres.device) - D // 2
    d = axis - centres[..., None]
    return torch.exp(d * d * (-0.5 / sigma**2))


def project_blobs(positions, weights, rot, shift, D: int, sigma: float):
    """Batched exact line integrals of Gaussian blobs along z after rotation and shift.

    positions: (A, 3) or (B, A, 3) pixels (x, y, z); weights: (A,) or (B, A); rot: (B, 3, 3);
    shift: (B, 2) in pixels (x, y), the particle's displacement from the centre (stored
    translation is ``-shift / D``), or None. Returns (B, D, D), numpy if ``positions`` is numpy,
    in the dtype of ``positions`` (float32 unless given float64).
    """
    as_numpy = not isinstance(positions, torch.Tensor)
    pos = _as_tensor(positions)
    if not pos.is_floating_point():
        pos = pos.to(torch.float32)
    dt = pos.dtype
    w = _as_tensor(weights, dt).to(pos.device)
    R = _as_tensor(rot, dt).to(pos.device)
    if pos.ndim == 2:
        pos = pos.expand(R.shape[0], -1, -1)
    if w.ndim == 1:
        w = w.expand(R.shape[0], -1)
    moved = (pos @ R.transpose(1, 2))[..., :2]  # rows (R c)^T, keep x and y
    if shift is not None:
        moved = moved + _as_tensor(shift, dt).to(pos.device)[:, None, :]
    gx = _profiles(moved[..., 0], D, sigma)  # (B, A, D)
    gy = _profiles(moved[..., 1], D, sigma) * (w * (math.sqrt(2 * math.pi) * sigma))[..., None]
    img = gy.transpose(1, 2) @ gx  # (B, D[y], D[x])
    return img.cpu().numpy() if as_numpy else img


def render_blobs(positions, weights, D: int, sigma: float) -> np.ndarray:
    """Sample Gaussian blobs on the (D, D, D) voxel grid ``vol[iz, iy, ix]``; float32 numpy.

    positions: (A, 3) pixels (x, y, z) relative to the box centre; weights: (A,).
    """
    pos = _as_tensor(positions, torch.float64)
    w = _as_tensor(weights, torch.float64)
    gx, gy, gz = (_profiles(pos[:, i], D, sigma) for i in range(3))  # (A, D) each
    zy = (gz * w[:, None])[:, :, None] * gy[:, None, :]  # (A, Dz, Dy)
    vol = zy.reshape(len(w), D * D).T @ gx  # (Dz*Dy, Dx)
    return vol.reshape(D, D, D).to(torch.float32).numpy()
