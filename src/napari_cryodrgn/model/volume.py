"""Whole-volume decoding, vectorised over the sphere in bounded-memory chunks."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from ..geometry.transforms import iht3_center
from .vae import HetVAE


def autocast_context(device: torch.device, precision: str):
    """Mixed-precision context for ``precision`` in {'fp32', 'bf16', 'fp16'} on ``device``."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class VolumeDecoder:
    """Decodes real-space maps (D_img^3) from latent points with a trained model.

    Fourier models are evaluated once per Hermitian pair (half the sphere of radius 0.5), the
    other half filled by symmetry; Hartley models on the whole cube. Coordinates are built once
    and reused, so repeated clicks only pay for the network.
    """

    def __init__(self, model: HetVAE, D_lat: int, norm=(0.0, 1.0), device=None,
                 precision: str = "fp32", chunk: int = 1 << 17):
        self.model = model.eval()
        self.D_lat = D_lat
        self.norm = (float(norm[0]), float(norm[1]))
        self.device = (torch.device(device) if device is not None
                       else next(model.parameters()).device)
        self.precision = precision
        self.chunk = chunk
        D = D_lat
        ax = torch.linspace(-0.5, 0.5, D, device=self.device)
        zz, yy, xx = torch.meshgrid(ax, ax, ax, indexing="ij")
        coords = torch.stack([xx.reshape(-1), yy.reshape(-1), zz.reshape(-1)], 1)
        if model.decoder.domain == "fourier":
            keep = coords.pow(2).sum(1) <= 0.25
            idx = torch.nonzero(keep).squeeze(1)
            self.idx = idx[idx <= (D**3 - 1) // 2]
            self.mirror = D**3 - 1 - self.idx
        else:
            self.idx = torch.arange(D**3, device=self.device)
            self.mirror = None
        self.coords = coords[self.idx]

    @torch.no_grad()
    def hartley_volume(self, z) -> torch.Tensor:
        """Hartley-domain volume (D_lat^3, float32) at latent z, zero outside the sphere."""
        D = self.D_lat
        zt = None
        if z is not None and self.model.zdim > 0:
            zt = torch.as_tensor(np.asarray(z, np.float32).reshape(1, -1), device=self.device)
        flat = torch.zeros(D**3, device=self.device)
        dec = self.model.decoder
        with autocast_context(self.device, self.precision):
            for s in range(0, len(self.idx), self.chunk):
                c = self.coords[s : s + self.chunk][None]
                if self.mirror is None:
                    flat[self.idx[s : s + self.chunk]] = dec.hartley(c, zt)[0].float()
                    continue
                h, hm = dec.hartley_pair(c, zt)
                flat[self.mirror[s : s + self.chunk]] = hm[0].float()
                flat[self.idx[s : s + self.chunk]] = h[0].float()
        return flat.view(D, D, D) * self.norm[1] + self.norm[0]

    @torch.no_grad()
    def __call__(self, z) -> np.ndarray:
        """Real-space map (D_img^3 float32 numpy array, axes z, y, x) at latent z."""
        vol_ht = self.hartley_volume(z)[:-1, :-1, :-1]
        vol = iht3_center(vol_ht.float())
        return vol.cpu().numpy().astype(np.float32)
