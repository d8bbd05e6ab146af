"""Centred Fourier and Hartley transforms (numpy and torch), cryoDRGN's conventions.

Images are centred at pixel ``D // 2``; the centred transform is
``fftshift(fftn(fftshift(x)))`` and the Hartley transform is its real minus imaginary part.
"""

from __future__ import annotations

import numpy as np
import torch


def _shift(x, axes):
    if isinstance(x, torch.Tensor):
        return torch.fft.fftshift(x, dim=axes)
    return np.fft.fftshift(x, axes=axes)


def _ishift(x, axes):
    if isinstance(x, torch.Tensor):
        return torch.fft.ifftshift(x, dim=axes)
    return np.fft.ifftshift(x, axes=axes)


def fft_center(x, ndim: int = 2):
    """Centred forward FFT over the last ``ndim`` axes."""
    axes = tuple(range(-ndim, 0))
    if isinstance(x, torch.Tensor):
        f = torch.fft.fftn(_ishift(x, axes), dim=axes)
    else:
        f = np.fft.fftn(_ishift(x, axes), axes=axes)
    return _shift(f, axes)


def ifft_center(f, ndim: int = 2):
    """Inverse of :func:`fft_center`."""
    axes = tuple(range(-ndim, 0))
    if isinstance(f, torch.Tensor):
        x = torch.fft.ifftn(_ishift(f, axes), dim=axes)
    else:
        x = np.fft.ifftn(_ishift(f, axes), axes=axes)
    return _shift(x, axes)


def ht_center(x, ndim: int = 2):
    """Centred Hartley transform over the last ``ndim`` axes (real in, real out)."""
    f = fft_center(x, ndim)
    return f.real - f.imag


def iht_center(h, ndim: int = 2):
    """Inverse centred Hartley transform: the forward transform divided by the voxel count."""
    n = int(np.prod(h.shape[-ndim:]))
    return ht_center(h, ndim) / n


def ht2_center(x):
    return ht_center(x, 2)


def iht2_center(h):
    return iht_center(h, 2)


def ht3_center(x):
    return ht_center(x, 3)


def iht3_center(h):
    return iht_center(h, 3)


def symmetrize_ht(h):
    """Pad a centred even-sized Hartley image (..., D, D) to (..., D+1, D+1).

    The first row and column are repeated at the end so that the result is point symmetric
    about its centre, which is what the ``D + 1`` lattice expects.
    """
    if isinstance(h, torch.Tensor):
        h = torch.cat([h, h[..., :1, :]], dim=-2)
        return torch.cat([h, h[..., :, :1]], dim=-1)
    h = np.concatenate([h, h[..., :1, :]], axis=-2)
    return np.concatenate([h, h[..., :, :1]], axis=-1)
