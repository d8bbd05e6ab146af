"""Whole-volume decoding, vectorised over the sphere in bounded-memory chunks."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import numpy as np
import torch

from ..geometry.transforms import iht3_center
from .mlp import ResidLinear
from .vae import HetVAE


def autocast_context(device: torch.device, precision: str):
    """Mixed-precision context for ``precision`` in {'fp32', 'bf16', 'fp16'} on ``device``."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class VolumeDecoder:
    """Decodes real-space maps (D_img^3) from latent points with a trained model.

    Fourier models are evaluated once per Hermitian pair (the half of the sphere of radius 0.5
    with ``kz <= 0``), the other half filled by symmetry; Hartley models on the whole cube.
    The decoder keeps its own inference copy of the network (in ``precision``) and caches the
    z-independent part of the first layer (positional features times their weights) when it fits
    in ``cache_mb``, so a new latent point only pays for the z term and the hidden layers.
    The copy is a snapshot: build a new decoder after the model's weights change.
    """

    def __init__(self, model: HetVAE, D_lat: int, norm=(0.0, 1.0), device=None,
                 precision: str = "fp32", chunk: int = 1 << 14, cache_mb: float = 512):
        self.model = model.eval()
        self.D_lat = D_lat
        self.norm = (float(norm[0]), float(norm[1]))
        self.device = (torch.device(device) if device is not None
                       else next(model.parameters()).device)
        self.precision = precision
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16,
                      "fp16": torch.float16}[precision]
        self.chunk = chunk
        D = D_lat
        ax = torch.linspace(-0.5, 0.5, D, device=self.device)
        zz, yy, xx = torch.meshgrid(ax, ax, ax, indexing="ij")
        coords = torch.stack([xx.reshape(-1), yy.reshape(-1), zz.reshape(-1)], 1)
        dec = model.decoder
        self.fourier = dec.domain == "fourier"
        if self.fourier:
            keep = coords.pow(2).sum(1) <= 0.25
            idx = torch.nonzero(keep).squeeze(1)
            self.idx = idx[idx <= (D**3 - 1) // 2]  # all have kz <= 0: no mirroring needed
            self.mirror = D**3 - 1 - self.idx
        else:
            self.idx = torch.arange(D**3, device=self.device)
            self.mirror = None
        self.coords = coords[self.idx]
        mlp = copy.deepcopy(dec.decoder).to(self.device, self.dtype).eval()
        for p in mlp.parameters():
            p.requires_grad_(False)
        self.layers = list(mlp.main)
        first = dec.decoder.main[0]
        self.split = isinstance(first, torch.nn.Linear)  # False: residual first layer
        n_feat = dec.pe.out_dim
        if self.split:
            w = first.weight.detach().to(self.device)
            self.w_pe = w[:, :n_feat].to(self.dtype)
            self.w_z = w[:, n_feat:].float()
            self.b = first.bias.detach().to(self.device).float()
        hidden = self.layers[0].out_features if self.split else 0
        nbytes = len(self.idx) * hidden * torch.finfo(self.dtype).bits // 8
        self._h0 = None
        self._cache_ok = self.split and nbytes <= cache_mb * 2**20

    def _features(self, c: torch.Tensor) -> torch.Tensor:
        dec = self.model.decoder
        return dec.pe(c, dec.rand_freqs).to(self.dtype)

    def _first_pe(self, s: int, e: int) -> torch.Tensor:
        """z-independent first-layer term for points s:e (cached when it fits)."""
        if self._cache_ok:
            if self._h0 is None:
                self._h0 = torch.cat([self._features(self.coords[a : a + self.chunk]) @ self.w_pe.T
                                      for a in range(0, len(self.coords), self.chunk)])
            return self._h0[s:e]
        return self._features(self.coords[s:e]) @ self.w_pe.T

    def _tail(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden and output layers, in place where possible."""
        for layer in self.layers[1:]:
            if isinstance(layer, ResidLinear):
                h = layer.linear(h).add_(h)
            elif isinstance(layer, torch.nn.Linear):
                h = layer(h)
            elif isinstance(layer, torch.nn.LeakyReLU):
                h = torch.nn.functional.leaky_relu(h, layer.negative_slope, inplace=True)
            else:
                h = torch.relu_(h)
        return h

    def _network(self, s: int, e: int, zt: torch.Tensor | None) -> torch.Tensor:
        if not self.split:  # generic path: concatenate z to every point
            c = self.coords[s:e]
            x = self._features(c)
            if zt is not None:
                x = torch.cat([x, zt.to(self.dtype).expand(len(c), -1)], 1)
            return self._tail(self.layers[0](x))
        zterm = self.b if zt is None else self.b + zt[0] @ self.w_z.T
        h = self._first_pe(s, e) + zterm.to(self.dtype)
        return self._tail(h)

    @torch.inference_mode()
    def hartley_volume(self, z) -> torch.Tensor:
        """Hartley-domain volume (D_lat^3, float32) at latent z, zero outside the sphere."""
        D = self.D_lat
        zt = None
        if z is not None and self.model.zdim > 0:
            zt = torch.as_tensor(np.asarray(z, np.float32).reshape(1, -1), device=self.device)
        flat = torch.zeros(D**3, device=self.device)
        for s in range(0, len(self.idx), self.chunk):
            e = min(s + self.chunk, len(self.idx))
            out = self._network(s, e, zt).float()
            if self.fourier:
                flat[self.mirror[s:e]] = out[:, 0] + out[:, 1]
                flat[self.idx[s:e]] = out[:, 0] - out[:, 1]
            else:
                flat[self.idx[s:e]] = out[:, 0]
        return flat.view(D, D, D) * self.norm[1] + self.norm[0]

    @torch.inference_mode()
    def __call__(self, z) -> np.ndarray:
        """Real-space map (D_img^3 float32 numpy array, axes z, y, x) at latent z."""
        vol_ht = self.hartley_volume(z)[:-1, :-1, :-1]
        vol = iht3_center(vol_ht.float())
        return vol.cpu().numpy().astype(np.float32)
