"""Random CTF parameters (cryoDRGN's N x 9 table) and their application in Fourier space."""

from __future__ import annotations

import numpy as np
import torch

from napari_cryodrgn.geometry.ctf import ctf_for_params
from napari_cryodrgn.geometry.transforms import fft_center, ifft_center


def sample_ctf(n: int, D: int, apix: float, rng: np.random.Generator, *,
               df_min: float = 10000.0, df_max: float = 30000.0, astig_max: float = 500.0,
               volt_kv: float = 300.0, cs_mm: float = 2.7, w: float = 0.1,
               phase_shift_deg: float = 0.0) -> np.ndarray:
    """(n, 9) float32 rows: D, Apix, DefocusU, DefocusV (= U - U(0, astig_max)), angle U(0, 180),
    voltage, Cs, amplitude contrast, phase shift."""
    dfu = rng.uniform(df_min, df_max, n)
    dfv = dfu - rng.uniform(0.0, astig_max, n)
    ang = rng.uniform(0.0, 180.0, n)
    cols = [np.full(n, D), np.full(n, apix), dfu, dfv, ang, np.full(n, volt_kv),
            np.full(n, cs_mm), np.full(n, w), np.full(n, phase_shift_deg)]
    return np.stack(cols, 1).astype(np.float32)


def ctf_images(ctf: np.ndarray, D: int) -> np.ndarray:
    """CTF values on the centred (D, D) grid for each table row: (B, D, D) float64.

    Frequencies are ``((i - D/2) / D) / Apix`` for x (column) and y (row).
    """
    ax = (np.arange(D) - D // 2) / D
    fx, fy = np.meshgrid(ax, ax)
    freqs = np.stack([fx.ravel(), fy.ravel()], 1)
    return ctf_for_params(freqs, np.asarray(ctf, np.float64)).reshape(-1, D, D)


def apply_ctf(images: torch.Tensor, ctf: np.ndarray) -> torch.Tensor:
    """Multiply the centred 2D FFT of ``images`` (B, D, D) by the CTF of each row; real result."""
    D = images.shape[-1]
    c = torch.as_tensor(ctf_images(ctf, D), dtype=images.dtype)
    return ifft_center(fft_center(images) * c).real
