"""Positional encodings of 3D frequency coordinates in ``[-0.5, 0.5]^3`` (cryoDRGN's schedules)."""

from __future__ import annotations

import math

import torch
from torch import nn

PE_TYPES = ("gaussian", "geom_lowf", "geom_ft", "geom_full", "geom_nohighf", "linear_lowf")


def _geometric_freqs(pe_type: str, n: int, D2: int) -> torch.Tensor:
    """Per-axis angular frequencies of the deterministic schedules."""
    i = torch.arange(n, dtype=torch.float32)
    frac = i / max(n - 1, 1)
    DD = 2 * D2
    if pe_type == "geom_ft":
        return DD * math.pi * (2.0 / DD) ** frac
    if pe_type == "geom_full":
        return DD * math.pi * (1.0 / DD / math.pi) ** frac
    if pe_type == "geom_lowf":
        return D2 * (1.0 / D2) ** frac
    if pe_type == "geom_nohighf":
        return D2 * (2.0 * math.pi / D2) ** frac
    if pe_type == "linear_lowf":
        return torch.arange(1, D2 + 1, dtype=torch.float32)
    raise ValueError(f"unknown positional encoding {pe_type!r}; choose from {', '.join(PE_TYPES)}")


class PositionalEncoding(nn.Module):
    """sin/cos features of 3D coordinates; output width ``6 * n``.

    ``gaussian``: ``3n`` random directions ``B ~ N(0, feat_sigma^2)`` scaled by ``D2``, features
    ``[sin(D2 B k), cos(D2 B k)]``. Ladders: per axis ``[sin(f k_a), cos(f k_a)]`` for a ladder f.
    """

    def __init__(self, pe_type: str, D2: int, n: int | None = None, feat_sigma: float = 0.5):
        super().__init__()
        if pe_type not in PE_TYPES:
            choices = ", ".join(PE_TYPES)
            raise ValueError(f"unknown positional encoding {pe_type!r}; choose from {choices}")
        self.pe_type = pe_type
        self.D2 = D2
        self.n = D2 if n is None else n
        if pe_type == "linear_lowf":
            self.n = D2
        self.out_dim = 6 * self.n
        if pe_type != "gaussian":
            self.register_buffer("freqs", _geometric_freqs(pe_type, self.n, D2), persistent=False)

    def forward(self, coords: torch.Tensor, rand_freqs: torch.Tensor | None = None) -> torch.Tensor:
        if self.pe_type == "gaussian":
            k = coords @ (rand_freqs * self.D2).T  # (..., 3n)
            return torch.cat([torch.sin(k), torch.cos(k)], -1)
        k = coords[..., :, None] * self.freqs  # (..., 3, n)
        x = torch.cat([torch.sin(k), torch.cos(k)], -1)  # (..., 3, 2n)
        return x.flatten(-2)
