"""Soft circular real-space window applied to particle images before transforming."""

from __future__ import annotations

import numpy as np


def window_mask(D: int, in_rad: float = 0.85, out_rad: float = 0.99) -> np.ndarray:
    """A (D, D) float32 mask: 1 inside ``in_rad``, linear ramp to 0 at ``out_rad``.

    Radii are fractions of the half box on a ``[-1, 1)`` grid
    (``linspace(-1, 1, D, endpoint=False)``).
    """
    if not 0 < in_rad < out_rad:
        raise ValueError("window radii must satisfy 0 < in_rad < out_rad")
    x = np.linspace(-1, 1, D, endpoint=False, dtype=np.float32)
    r = np.sqrt(x[None, :] ** 2 + x[:, None] ** 2)
    mask = np.clip((out_rad - r) / (out_rad - in_rad), 0.0, 1.0)
    return mask.astype(np.float32)
