"""Coordinate decoder V(k, z): positional encoding + MLP, in the Fourier or Hartley domain."""

from __future__ import annotations

import torch
from torch import nn

from .encoding import PositionalEncoding
from .mlp import MLP


class CoordDecoder(nn.Module):
    """Decodes density at 3D frequency coordinates for a latent z.

    Domain ``fourier``: the MLP outputs (Re, Im) and is only ever evaluated on the half-space
    ``kz <= 0``; a point with ``kz > 0`` is read from ``-k`` with Im negated (Hermitian
    symmetry). The Hartley value is ``Re - Im``. Domain ``hartley``: one output, the Hartley value.
    Attribute names (``decoder.main.*``, ``rand_freqs``) match cryoDRGN checkpoints.
    """

    def __init__(
        self,
        D_lat: int,
        zdim: int,
        nlayers: int,
        hidden_dim: int,
        pe_type: str = "gaussian",
        pe_dim: int | None = None,
        feat_sigma: float = 0.5,
        domain: str = "fourier",
        activation: str = "relu",
        resid: bool = True,
    ):
        super().__init__()
        if domain not in ("fourier", "hartley"):
            raise ValueError(f"domain must be 'fourier' or 'hartley', not {domain!r}")
        D2 = D_lat // 2
        self.domain = domain
        self.zdim = zdim
        self.pe = PositionalEncoding(pe_type, D2, pe_dim, feat_sigma)
        out = 2 if domain == "fourier" else 1
        self.decoder = MLP(self.pe.out_dim + zdim, nlayers, hidden_dim, out, activation, resid)
        if pe_type == "gaussian":
            freqs = torch.randn(3 * self.pe.n, 3) * feat_sigma
            self.rand_freqs = nn.Parameter(freqs, requires_grad=False)
        else:
            self.rand_freqs = None

    def raw(self, coords: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """MLP output at coords (B, N, 3) for latents z (B, zdim), no symmetry applied."""
        return self._at(coords)(z)

    def fourier(self, coords: torch.Tensor, z: torch.Tensor | None):
        """(Re, Im) at coords (B, N, 3), evaluating the network on ``kz <= 0`` only."""
        flip = coords[..., 2] > 0
        c = torch.where(flip[..., None], -coords, coords)
        out = self.raw(c, z)
        re, im = out[..., 0], out[..., 1]
        return re, torch.where(flip, -im, im)

    def hartley_pair(self, coords: torch.Tensor, z: torch.Tensor | None):
        """Hartley values at ``coords`` and at ``-coords``: two (B, N) tensors."""
        return self.pair_at(coords)(z)

    def pair_at(self, coords: torch.Tensor):
        """``lambda z: hartley_pair(coords, z)`` with what does not depend on z (the points'
        positional encoding and their part of the first layer) computed now, once: many
        latents at the same points cost only the rest of the network. ``pair.points`` is the
        number of points the network evaluates (N, or 2N for Hartley); ``z`` may be (B, zdim)
        or (B, pair.points, zdim), one copy per point."""
        if self.domain == "fourier":
            flip = coords[..., 2] > 0
            run = self._at(torch.where(flip[..., None], -coords, coords))

            def pair(z):
                out = run(z)
                re, im = out[..., 0], torch.where(flip, -out[..., 1], out[..., 1])
                return re - im, re + im

            pair.points = coords.shape[-2]
            return pair
        n = coords.shape[1]
        run = self._at(torch.cat([coords, -coords], 1))

        def pair(z):
            both = run(z)[..., 0]
            return both[:, :n], both[:, n:]

        pair.points = 2 * n
        return pair

    def _at(self, coords: torch.Tensor):
        """``lambda z: raw(coords, z)``, the z-free part computed once."""
        feats = self.pe(coords, self.rand_freqs)
        split = self.decoder.split(feats) if self.zdim else None
        return lambda z: self.decoder(feats) if z is None or split is None else split(z)

    def hartley(self, coords: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Hartley values at coords (B, N, 3)."""
        if self.domain == "fourier":
            re, im = self.fourier(coords, z)
            return re - im
        return self.raw(coords, z)[..., 0]
