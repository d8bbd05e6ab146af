"""Contrast transfer function with cryoDRGN's sign conventions (Angstrom, volts, degrees)."""

from __future__ import annotations

import numpy as np
import torch

# Column order of a cryoDRGN CTF pickle (N x 9).
CTF_COLUMNS = (
    "D", "Apix", "dfU", "dfV", "dfang", "volt_kv", "cs_mm", "w", "phase_shift_deg",
)


def wavelength(volt: float | np.ndarray | torch.Tensor):
    """Relativistic electron wavelength in Angstrom for an accelerating voltage in volts."""
    return 12.2639 / (volt + 0.97845e-6 * volt * volt) ** 0.5


def compute_ctf(freqs, dfu, dfv, dfang, volt, cs, w, phase_shift=0.0, bfactor=None):
    """CTF at 2D spatial frequencies.

    freqs: (..., N, 2) in 1/Angstrom. dfu, dfv: defocus in Angstrom; dfang and phase_shift in
    degrees; volt in kV; cs in mm; w amplitude contrast. Per-image parameters broadcast as
    (..., 1) arrays. Returns (..., N). Works on numpy arrays and torch tensors.
    """
    xp = torch if isinstance(freqs, torch.Tensor) else np
    deg = np.pi / 180.0
    volt_v = volt * 1000.0
    cs_a = cs * 1e7
    lam = wavelength(volt_v)
    x, y = freqs[..., 0], freqs[..., 1]
    ang = xp.arctan2(y, x)
    s2 = x * x + y * y
    df = 0.5 * (dfu + dfv + (dfu - dfv) * xp.cos(2 * (ang - dfang * deg)))
    gamma = 2 * np.pi * (-0.5 * df * lam * s2 + 0.25 * cs_a * lam**3 * s2 * s2) - phase_shift * deg
    ctf = (1 - w * w) ** 0.5 * xp.sin(gamma) - w * xp.cos(gamma)
    if bfactor is not None:
        ctf = ctf * xp.exp(-bfactor / 4 * s2)
    return ctf


def ctf_for_params(freqs_px, params):
    """CTF for rows of a cryoDRGN CTF table.

    freqs_px: (N, 2) in cycles per pixel; params: (B, 9) table rows. Returns (B, N).
    """
    p = params

    def col(i):
        return p[:, i : i + 1]

    freqs = freqs_px[None] / p[:, 1, None, None]
    return compute_ctf(freqs, col(2), col(3), col(4), col(5), col(6), col(7), col(8))
