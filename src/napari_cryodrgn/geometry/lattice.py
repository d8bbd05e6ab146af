"""Frequency lattice of ``D = D_img + 1`` points per side on ``[-0.5, 0.5]`` (cycles/pixel)."""

from __future__ import annotations

import numpy as np
import torch


class Lattice:
    """The 2D lattice of a symmetrised Hartley image, with the masks and index maps training uses.

    Points are ordered row-major with x fastest, so flat index ``i = iy * D + ix``; the point
    reflection ``-k`` of index ``i`` is ``D * D - 1 - i``.
    """

    def __init__(self, D: int, extent: float = 0.5, device: torch.device | str = "cpu"):
        if D % 2 != 1 or D < 5:
            raise ValueError(f"lattice size must be odd (D_img + 1), got {D}")
        self.D = D
        self.D_img = D - 1
        self.extent = extent
        ax = np.linspace(-extent, extent, D, dtype=np.float32)
        x0, x1 = np.meshgrid(ax, ax)
        coords = np.stack([x0.ravel(), x1.ravel(), np.zeros(D * D, np.float32)], 1)
        self.coords = torch.tensor(coords, device=device)
        self.freqs2d = self.coords[:, :2] / extent / 2
        self.center = (D * D - 1) // 2
        self.device = torch.device(device)

    def circular_mask(self, radius: float | None = None) -> torch.Tensor:
        """Boolean mask of points within ``radius`` pixels (default ``D_img / 2``) of the centre."""
        radius = self.D_img / 2 if radius is None else radius
        r = radius / (self.D_img / 2) * self.extent
        c = self.coords
        return (c[:, 0] ** 2 + c[:, 1] ** 2) <= r * r + 1e-9

    def half_indices(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split a point-symmetric mask into (half, mirror) flat indices.

        ``half`` holds the masked indices ``<= center`` (the centre included once) and ``mirror``
        their reflections (``-k``); together they cover every masked point.
        """
        idx = torch.nonzero(mask, as_tuple=False).squeeze(1)
        half = idx[idx <= self.center]
        mirror = self.D * self.D - 1 - half
        return half, mirror



def translate_ht(img: torch.Tensor, img_flip: torch.Tensor, k: torch.Tensor, t: torch.Tensor):
    """Shift Hartley-domain images by ``t`` pixels.

    img: (B, N) values at lattice points ``k`` (N, 2, cycles/pixel); img_flip: (B, N) the values
    at ``-k``; t: (B, 2) shift in pixels (x, y). Returns (B, N): the Hartley transform of the image
    moved by ``+t``.
    """
    phase = -2 * np.pi * (t @ k.T)
    return torch.cos(phase) * img - torch.sin(phase) * img_flip
