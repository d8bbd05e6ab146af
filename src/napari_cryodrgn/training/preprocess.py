"""Per-batch preprocessing: window, sign inversion, centred Hartley transform, normalisation,
centring by phase shift and CTF at the lattice points the loss uses."""

from __future__ import annotations

import numpy as np
import torch

from ..geometry.ctf import ctf_for_params
from ..geometry.lattice import Lattice, translate_ht
from ..geometry.transforms import ht2_center, symmetrize_ht
from ..geometry.window import window_mask

#: the band (cycles/pixel) in which --robust compares the errors of images: a quarter of Nyquist
LOW_BAND = 0.125


class Preprocessor:
    """Turns raw particle images into the masked Hartley vectors the model trains on.

    Masked lattice points (a circle of radius ``D_img / 2`` without the DC term) are ordered as
    ``[half, mirror]``: ``half`` are the points below the centre in flat order and ``mirror``
    their reflections, so the decoder evaluates the network once per Hermitian pair.
    """

    def __init__(self, D_img: int, invert: bool = True, window: bool = True,
                 window_r: float = 0.85, norm_std: float = 1.0, enc_radius: int | None = None,
                 device="cpu"):
        self.D_img = D_img
        self.invert = invert
        self.norm_std = float(norm_std)
        self.device = torch.device(device)
        self.window = (torch.tensor(window_mask(D_img, window_r), device=self.device)
                       if window else None)
        lat = Lattice(D_img + 1, device=self.device)
        self.lattice = lat
        mask = lat.circular_mask()
        mask[lat.center] = False
        half, mirror = lat.half_indices(mask)
        self.n_half = len(half)
        self.order = torch.cat([half, mirror])
        self.n = len(self.order)
        self.k = lat.freqs2d[self.order]  # (N, 2) cycles/pixel
        self.coords_half = lat.coords[half] / lat.extent / 2  # (Nh, 3)
        # the points up to a quarter of Nyquist, where a particle's signal stands well above
        # the noise: the outlier weights of --robust compare errors there
        self.low_band = torch.nonzero(self.k.norm(dim=1) <= LOW_BAND).squeeze(1)
        # Encoder input: the masked points in flat lattice order (cryoDRGN's layout).
        enc_radius = D_img // 2 if enc_radius in (None, -2) else enc_radius
        if enc_radius == -1:
            enc_mask = torch.ones(lat.D * lat.D, dtype=torch.bool, device=self.device)
        else:
            enc_mask = lat.circular_mask(enc_radius)
            enc_mask[lat.center] = False
        self.enc_flat = torch.nonzero(enc_mask).squeeze(1)
        self.enc_in_dim = len(self.enc_flat)
        pos = torch.full((lat.D * lat.D,), -1, dtype=torch.long, device=self.device)
        pos[self.order] = torch.arange(self.n, device=self.device)
        # where each encoder point sits in ``order`` (-1: outside the loss mask)
        self.enc_pos = pos[self.enc_flat]
        self.enc_outside = bool((self.enc_pos < 0).any())

    def hartley(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, D, D) raw images -> (B, (D+1)^2) windowed, inverted, normalised Hartley images."""
        x = imgs.to(self.device, torch.float32)
        if self.window is not None:
            x = x * self.window
        if self.invert:
            x = -x
        h = symmetrize_ht(ht2_center(x))
        return h.reshape(h.shape[0], -1) / self.norm_std

    def batch(self, imgs, trans=None, ctf_rows=None, inplane=None):
        """Preprocess a batch.

        imgs: (B, D, D); trans: (B, 2) fractions of the box or None; ctf_rows: (B, 9) or None.
        inplane: (B,) angles to rotate the encoder's copy of the image by, or None.
        Returns (y (B, N) centred Hartley values at ``self.order``, ctf (B, N) or None,
        enc (B, enc_in_dim) encoder input, phase-flipped by the CTF sign).
        """
        full = self.hartley(imgs)
        if trans is not None and self.enc_outside:
            # the encoder reads points outside the loss mask (--enc-mask -1 or > D/2): centre
            # the whole lattice, as cryoDRGN does; full.flip(1) holds each point's value at -k
            t_px = torch.as_tensor(trans, device=self.device, dtype=torch.float32) * self.D_img
            full = translate_ht(full, full.flip(1), self.lattice.freqs2d, t_px)
            y = full[:, self.order]
        elif trans is not None:
            t_px = torch.as_tensor(trans, device=self.device, dtype=torch.float32) * self.D_img
            order = torch.cat([self.order, self.lattice.D**2 - 1 - self.order])
            vals = full[:, order]
            y = translate_ht(vals[:, : self.n], vals[:, self.n :], self.k, t_px)
            full = full.clone()
            full[:, self.order] = y
        else:
            y = full[:, self.order]
        c = None
        if ctf_rows is not None:
            p = torch.as_tensor(ctf_rows, device=self.device, dtype=torch.float32)
            c_full = ctf_for_params(self.lattice.freqs2d, p)
            c = c_full[:, self.order]
            full = full * torch.sign(c_full)
        if inplane is not None:
            full = rotate_lattice_images(full, inplane.to(full), self.lattice.D)
        enc = full[:, self.enc_flat]
        return y, c, enc


def inplane_angles(rot: torch.Tensor) -> torch.Tensor:
    """In-plane angle per pose that turns each image to a canonical in-plane orientation.

    Rotating lattice coordinates k by ``a`` (k -> k Q) changes the pose to ``Q R``; ``a`` is
    chosen so that the first row of ``Q R`` has no z component, i.e. the image's x axis lies
    in the map's xy plane. That removes in-plane rotation as a nuisance for the encoder.
    """
    return torch.atan2(-rot[:, 0, 2], rot[:, 1, 2])


def rotate_lattice_images(img: torch.Tensor, angles: torch.Tensor, D: int) -> torch.Tensor:
    """Resample (B, D*D) lattice images at coordinates rotated by ``angles`` (bilinear)."""
    B = img.shape[0]
    c, s = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(B, 2, 3, device=img.device, dtype=img.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = c, -s
    theta[:, 1, 0], theta[:, 1, 1] = s, c
    grid = torch.nn.functional.affine_grid(theta, (B, 1, D, D), align_corners=True)
    out = torch.nn.functional.grid_sample(img.view(B, 1, D, D), grid, mode="bilinear",
                                          padding_mode="zeros", align_corners=True)
    return out.view(B, D * D)


def estimate_norm_std(images_fn, n_total: int, invert: bool, n_sample: int = 1000) -> float:
    """Global std of symmetrised Hartley images from about ``n_sample`` evenly strided particles."""
    step = max(n_total // min(n_sample, n_total), 1)
    idx = np.arange(0, n_total, step)
    vals = []
    for s in range(0, len(idx), 256):
        x = torch.as_tensor(images_fn(idx[s : s + 256]), dtype=torch.float64)
        h = symmetrize_ht(ht2_center(-x if invert else x))
        vals.append(h.reshape(-1))
    v = torch.cat(vals)
    return float(v.std())
