"""Homogeneous reconstruction by regularized backprojection (cryoDRGN's ``backproject_voxel``).

The check to run before training: if the poses, CTF and translations are right, one map made
from all particles shows the consensus structure and the gold-standard FSC between the maps of
the even and odd particles reports a sensible resolution.

Method (cryoDRGN 4.3.1's, established by running it): each image is windowed, sign-inverted
(unless ``invert=False``), Hartley-transformed and centred by phase shifts of ``trans * D``
pixels, as for training. The lattice points within radius ``D/2`` (without the DC term) are
placed on the image's central slice, ``k R`` for row vectors ``k``, in the centred 3D Hartley
grid of ``(D+1)^3`` voxels, and each point is spread to the 8 voxels around it with weight
``max(0, 1 - distance)``. The numerator sums ``weight * image * CTF`` and the denominator
``weight * CTF^2`` (``ctf_alg="mul"``); ``"flip"`` sums ``weight * image * sign(CTF)`` and
``weight``; without a CTF, ``weight * image`` and ``weight``. Voxels no image reaches count 1
in the denominator (as in cryoDRGN; it matters only for tiny sets). The map is the inverse
Hartley transform of the first ``D^3`` voxels of
``numerator * (1 + reg) / (denominator + reg * mean(denominator))``, the mean over all
``(D+1)^3`` voxels (the factor ``1 + reg`` keeps the regularized denominator's mean). Half-maps
sum the particles at even and odd positions (after ``--ind`` and ``--first``) separately; the
full map sums both.

Known differences from cryoDRGN 4.3.1 (measured against it, see the interop test):

- its ``backproject_voxel`` shifts images by ``trans * (D + 1)`` pixels, ours by
  ``trans * D`` as in training (and as the pose files define); with zero translations the maps
  agree to float32 precision, and with cryoDRGN's shift the maps agree too;
- a lattice point lying exactly on a voxel counts once here; cryoDRGN counts it 8 times (its
  corner voxels coincide). That happens only for special poses (e.g. the identity);
- our FSC is the unmasked one, in shells of rounded radius ``k`` reported at ``k / D``; cryoDRGN
  bins by radius rounded down and labels each shell by its outer edge, and its printed
  resolution comes from a phase-randomisation-corrected tight-mask FSC.

Images are read and processed a batch at a time, so memory does not grow with the number of
particles: two ``(D+1)^3`` sums per half-map plus one batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..geometry.ctf import ctf_for_params
from ..geometry.lattice import Lattice, translate_ht
from ..geometry.transforms import ht2_center, iht3_center, symmetrize_ht
from ..geometry.window import window_mask
from .fsc import fsc, threshold_crossing

Progress = Callable[[int, int], None]
CTF_ALGS = ("mul", "flip")
FSC_THRESHOLDS = (0.5, 0.143)


class Backprojector:
    """Sums of backprojected images for two half-sets on the centred ``(D+1)^3`` Hartley grid.

    ``add`` takes raw images (as stored) with their poses and CTF rows; ``volume`` makes a map
    from the sums of one half-set or both.
    """

    def __init__(self, D: int, ctf_alg: str = "mul", invert: bool = True, window: bool = True,
                 device: str | torch.device = "cpu"):
        if D % 2 or D < 4:
            raise InputError(f"backprojection needs an even box of at least 4 pixels, got {D}")
        if ctf_alg not in CTF_ALGS:
            raise InputError(f"--ctf-alg must be one of {', '.join(CTF_ALGS)}, not {ctf_alg!r}")
        self.D, self.ctf_alg, self.invert = D, ctf_alg, invert
        self.device = torch.device(device)
        # float64 sums (float32 where the device has no float64)
        self.dtype = torch.float32 if self.device.type == "mps" else torch.float64
        lat = Lattice(D + 1, device=self.device)
        mask = lat.circular_mask()
        mask[lat.center] = False
        self._idx = torch.nonzero(mask).squeeze(1)  # lattice points used, flat (D+1)^2 order
        self._mirror = (D + 1) ** 2 - 1 - self._idx  # their reflections -k
        self._k = lat.freqs2d[self._idx]  # (P, 2) cycles/pixel
        self._coords = lat.coords[self._idx]  # (P, 3), z = 0
        self._window = (torch.tensor(window_mask(D), device=self.device) if window else None)
        Dl = D + 1
        self.n_voxels = Dl**3
        self._offsets = torch.tensor([(oz * Dl + oy) * Dl + ox for oz in (0, 1)
                                      for oy in (0, 1) for ox in (0, 1)], device=self.device)
        # images per scatter step: about 2^18 lattice points, so the temporaries stay under
        # ~100 MB whatever the batch size (on CPU larger steps were no faster)
        self._chunk = max(1, 2**18 // len(self._idx))
        self.num = torch.zeros(2, self.n_voxels, dtype=self.dtype, device=self.device)
        self.den = torch.zeros_like(self.num)
        self.counts = [0, 0]

    def hartley(self, images, trans=None) -> torch.Tensor:
        """(B, P) centred Hartley values of raw images at the used lattice points."""
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32, device=self.device)
        if self._window is not None:
            x = x * self._window
        if self.invert:
            x = -x
        h = symmetrize_ht(ht2_center(x)).reshape(x.shape[0], -1)
        y = h[:, self._idx]
        if trans is not None:
            t_px = torch.as_tensor(np.asarray(trans), dtype=torch.float32,
                                   device=self.device) * self.D
            y = translate_ht(y, h[:, self._mirror], self._k, t_px)
        return y

    def add(self, images, rot, trans=None, ctf=None, half=None) -> None:
        """Backproject a batch: images (B, D, D) as stored, rot (B, 3, 3), trans (B, 2)
        fractions of the box or None, ctf (B, 9) rows or None, half (B,) 0/1 (default 0)."""
        B = len(images)
        if B == 0:
            return
        y = self.hartley(images, trans)
        if ctf is not None:
            c = ctf_for_params(self._k, torch.as_tensor(np.asarray(ctf), dtype=torch.float32,
                                                        device=self.device))
            if self.ctf_alg == "mul":
                num, den = y * c, c * c
            else:
                num, den = y * torch.sign(c), torch.ones_like(y)
        else:
            num, den = y, torch.ones_like(y)
        R = torch.as_tensor(np.asarray(rot), dtype=torch.float32, device=self.device)
        half_t = (torch.zeros(B, dtype=torch.long, device=self.device) if half is None
                  else torch.as_tensor(np.asarray(half), dtype=torch.long, device=self.device))
        for s in range(0, B, self._chunk):
            sl = slice(s, s + self._chunk)
            self._scatter(R[sl], num[sl], den[sl], half_t[sl])
        for h in (0, 1):
            self.counts[h] += int((half_t == h).sum())

    def _scatter(self, R, num, den, half) -> None:
        """Spread (b, P) numerator and denominator terms onto the grid of each image's half."""
        b, P = num.shape
        D, Dl = self.D, self.D + 1
        # slice coordinates k R on the grid (x, y, z in 0..D), one GEMM for the b images
        p = (self._coords @ R.permute(1, 0, 2).reshape(3, -1)).view(P, b, 3)
        p = p.transpose(0, 1).contiguous().add_(0.5).mul_(D)  # (b, P, 3): image by image
        # lower corner kept in 0..D-1 so that all 8 corners are on the grid; a point on the far
        # face gets offset 1 there, and rounding below 0 or above D only moves a zero weight
        f = torch.floor(p).clamp_(0, D - 1)
        d = p.sub_(f)
        fl = f.long()
        base = (fl[..., 2] * Dl + fl[..., 1]) * Dl + fl[..., 0] + (half * self.n_voxels)[:, None]
        # squared distance to corner (ox, oy, oz) is the sum over axes of d^2 (offset 0) or
        # (1 - d)^2 (offset 1); weights in the order of self._offsets (z, y, x; x fastest)
        sq0, sq1 = d * d, (1 - d).square_()
        X, Y, Z = (torch.stack([sq0[..., a], sq1[..., a]], -1) for a in range(3))
        w = (Z[..., :, None] + Y[..., None, :]).view(b, P, 4)
        w = (w[..., :, None] + X[..., None, :]).view(b, P, 8)
        w = w.sqrt_().neg_().add_(1).clamp_(min=0)
        idx = (base[..., None] + self._offsets).view(-1)
        self.num.view(-1).index_add_(0, idx, (num[..., None] * w).view(-1).to(self.dtype))
        self.den.view(-1).index_add_(0, idx, (den[..., None] * w).view(-1).to(self.dtype))

    def volume(self, halves=(0, 1), reg_weight: float = 1.0) -> np.ndarray:
        """The (D, D, D) float32 map from the sums of ``halves``."""
        num = self.num[list(halves)].sum(0).cpu().double()
        den = self.den[list(halves)].sum(0).cpu().double()
        den = torch.where(den == 0, torch.ones_like(den), den)
        reg = float(reg_weight)
        v = num * (1 + reg) / (den + reg * den.mean())
        Dl = self.D + 1
        v = v.view(Dl, Dl, Dl)[: self.D, : self.D, : self.D]
        return iht3_center(v).float().numpy()


@dataclass
class Reconstruction:
    """Maps and FSC of a backprojection.

    ``volume`` (D, D, D) float32 from all particles; ``half_a`` / ``half_b`` from those at even /
    odd positions (None without half-maps); ``freq`` (1/pixel) and ``fsc`` between the
    half-maps; ``resolution``: {threshold: Angstrom, or None when the FSC stays above it}.
    """

    volume: np.ndarray
    apix: float
    n: int
    half_a: np.ndarray | None = None
    half_b: np.ndarray | None = None
    n_half: tuple[int, int] = (0, 0)
    freq: np.ndarray | None = None
    fsc: np.ndarray | None = None
    resolution: dict = field(default_factory=dict)
    ctf: str | None = None  # "mul" / "flip", None without CTF correction

    @property
    def nyquist_limit(self) -> float:
        """Resolution (Angstrom) of the last FSC shell."""
        D = self.volume.shape[0]
        return self.apix * D / (D // 2 - 1)


def check_options(batch_size: int = 256, reg_weight: float = 1.0, ctf_alg: str = "mul",
                  **_) -> None:
    """InputError for a bad batch size, regularization weight or CTF algorithm."""
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    if not (np.isfinite(reg_weight) and reg_weight >= 0):
        raise InputError(f"--reg-weight must be a non-negative number, got {reg_weight}")
    if ctf_alg not in CTF_ALGS:
        raise InputError(f"--ctf-alg must be one of {', '.join(CTF_ALGS)}, not {ctf_alg!r}")


def backproject(images: Callable[[np.ndarray], np.ndarray], n: int, D: int, rot, trans=None,
                ctf=None, *, apix: float, batch_size: int = 256, half_maps: bool = True,
                reg_weight: float = 1.0, ctf_alg: str = "mul", invert: bool = True,
                window: bool = True, device="cpu",
                progress: Progress | None = None) -> Reconstruction:
    """Reconstruct one map (and half-maps with their FSC) from ``n`` particles.

    ``images(rows)`` returns the raw (B, D, D) images of rows ``0..n-1``, read a batch at a
    time; ``rot`` (n, 3, 3), ``trans`` (n, 2) fractions of the box or None, ``ctf`` (n, 9)
    rows at box ``D`` or None. ``progress(done, total)`` is called after each batch.
    """
    if n < 1:
        raise InputError("no particles to backproject")
    if half_maps and n < 2:
        raise InputError("half-maps need at least 2 particles; pass --no-half-maps")
    check_options(batch_size=batch_size, reg_weight=reg_weight, ctf_alg=ctf_alg)
    bp = Backprojector(D, ctf_alg=ctf_alg, invert=invert, window=window, device=device)
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        bp.add(images(rows), rot[rows], None if trans is None else trans[rows],
               None if ctf is None else ctf[rows], half=rows % 2)
        if progress:
            progress(int(rows[-1]) + 1, n)
    rec = Reconstruction(bp.volume((0, 1), reg_weight), float(apix), n,
                         ctf=None if ctf is None else ctf_alg)
    if half_maps:
        rec.half_a, rec.half_b = bp.volume((0,), reg_weight), bp.volume((1,), reg_weight)
        rec.n_half = (bp.counts[0], bp.counts[1])
        rec.freq, rec.fsc = fsc(rec.half_a, rec.half_b)
        for t in FSC_THRESHOLDS:
            f = threshold_crossing(rec.freq, rec.fsc, t)
            rec.resolution[t] = None if f is None else float(apix / f)
    return rec


@dataclass
class Inputs:
    """Particles, poses and CTF rows checked against each other, ready for :func:`backproject`."""

    images: Callable[[np.ndarray], np.ndarray]
    n: int
    D: int
    rot: np.ndarray
    trans: np.ndarray | None
    ctf: np.ndarray | None
    apix: float


def load_inputs(particles, poses, ctf=None, *, ind=None, first: int | None = None,
                datadir=None, apix: float | None = None) -> Inputs:
    """Open and cross-check the inputs as training does.

    ``ind``: index file (original numbering); ``first``: use the first N particles after
    ``ind``. The voxel size comes from the CTF (rescaled to the stack's box), else ``apix``
    (--Apix), else the stack header; with none of these it is an InputError.
    """
    from ..training.data import load_particle_data

    if first is not None and first <= 0:
        raise InputError(f"--first must be a positive number of particles, got {first}")
    data = load_particle_data(particles, poses, ctf=ctf, ind=ind, datadir=datadir, apix=apix)
    n = data.n if first is None else min(first, data.n)
    if n == 0:
        raise InputError(f"{ind} selects no particles; nothing to backproject")
    pix = float(np.median(data.ctf[:, 1])) if data.ctf is not None else data.apix
    if pix is None:
        raise InputError(
            f"The pixel size of {particles} is unknown (no CTF file and no pixel size in the "
            "stack's header); pass it with --Apix."
        )
    return Inputs(data.images, n, data.D, data.rot[:n],
                  None if data.trans is None else data.trans[:n],
                  None if data.ctf is None else data.ctf[:n], pix)


def backproject_dataset(particles, poses, ctf=None, *, ind=None, first: int | None = None,
                        datadir=None, apix: float | None = None, **kwargs) -> Reconstruction:
    """:func:`load_inputs`, then :func:`backproject` (``kwargs``: its options)."""
    x = load_inputs(particles, poses, ctf, ind=ind, first=first, datadir=datadir, apix=apix)
    return backproject(x.images, x.n, x.D, x.rot, x.trans, x.ctf, apix=x.apix, **kwargs)


# -- outputs ------------------------------------------------------------------------------------
def output_paths(out, half_maps: bool = True) -> dict[str, Path]:
    """Files written for ``out``: a folder (cryoDRGN's names: backproject.mrc, half_map_a.mrc,
    half_map_b.mrc, fsc-vals.txt, fsc-plot.png) or a ``MAP.mrc`` path (MAP.mrc, MAP_half_a.mrc,
    MAP_half_b.mrc, MAP_fsc.txt, MAP_fsc.png beside it). Keys: map, half_a, half_b, fsc_txt,
    fsc_png (only map without half-maps)."""
    out = Path(out)
    if out.suffix.lower() == ".mrc" and not out.is_dir():
        stem = out.with_suffix("")
        paths = {"map": out, "half_a": Path(f"{stem}_half_a.mrc"),
                 "half_b": Path(f"{stem}_half_b.mrc"), "fsc_txt": Path(f"{stem}_fsc.txt"),
                 "fsc_png": Path(f"{stem}_fsc.png")}
    else:
        if out.exists() and not out.is_dir():
            raise InputError(f"Output {out} is an existing file; give a folder or a .mrc path.")
        paths = {"map": out / "backproject.mrc", "half_a": out / "half_map_a.mrc",
                 "half_b": out / "half_map_b.mrc", "fsc_txt": out / "fsc-vals.txt",
                 "fsc_png": out / "fsc-plot.png"}
    return paths if half_maps else {"map": paths["map"]}


def check_outputs(paths: dict[str, Path], overwrite: bool = False) -> None:
    """No output may exist (unless ``overwrite``) or be a folder."""
    if not overwrite:
        existing = [p for p in paths.values() if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise InputError(f"{existing[0]}{more} already exists; pass --overwrite to replace "
                             "it or choose another output.")
    for p in paths.values():
        if p.is_dir():
            raise InputError(f"Output {p} is a folder; remove it or choose another output.")


def fsc_table(rec: Reconstruction) -> str:
    """The FSC curve as text: frequency (1/pixel), frequency (1/Angstrom), FSC."""
    lines = [f"# FSC between the unmasked half-maps ({rec.n_half[0]} + {rec.n_half[1]} "
             f"particles), voxel size {rec.apix:g} A",
             "# pixres(1/pixel) freq(1/A) fsc"]
    for f, c in zip(rec.freq, rec.fsc, strict=True):
        lines.append(f"{f:.6f} {f / rec.apix:.6f} {c:.6f}")
    return "\n".join(lines) + "\n"


def resolution_text(rec: Reconstruction, threshold: float) -> str:
    r = rec.resolution.get(threshold)
    return f"< {rec.nyquist_limit:.2f} A" if r is None else f"{r:.2f} A"


def plot_fsc(rec: Reconstruction, path) -> Path:
    """FSC curve against frequency in 1/Angstrom, with the 0.5 and 0.143 lines (PNG, atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io.atomic import atomic_write

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(rec.freq / rec.apix, rec.fsc, "o-", ms=3, label="half-maps (unmasked)")
    for t, colour in zip(FSC_THRESHOLDS, ("tab:orange", "tab:red"), strict=True):
        ax.axhline(t, color=colour, lw=0.8, ls="--",
                   label=f"FSC = {t}: {resolution_text(rec, t)}")
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("Fourier shell correlation")
    ax.set_ylim(min(-0.05, float(np.nanmin(rec.fsc)) - 0.05), 1.05)
    ax.set_title(f"{rec.n} particles, {rec.apix:g} A/pixel", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=150)
    return path


def write_reconstruction(rec: Reconstruction, paths: dict[str, Path]) -> list[Path]:
    """Write the maps (voxel size ``rec.apix``), the FSC table and its plot, each atomically."""
    from ..io.atomic import atomic_write
    from ..io.mrc import write_mrc

    written = []
    write_mrc(paths["map"], rec.volume, rec.apix)
    written.append(paths["map"])
    if rec.half_a is not None and "half_a" in paths:
        write_mrc(paths["half_a"], rec.half_a, rec.apix)
        write_mrc(paths["half_b"], rec.half_b, rec.apix)
        with atomic_write(paths["fsc_txt"], "w") as f:
            f.write(fsc_table(rec))
        plot_fsc(rec, paths["fsc_png"])
        written += [paths[k] for k in ("half_a", "half_b", "fsc_txt", "fsc_png")]
    return written


def run_backproject(particles, poses, out, ctf=None, *, overwrite: bool = False,
                    half_maps: bool = True, ind=None, first: int | None = None, datadir=None,
                    apix: float | None = None, **kwargs) -> tuple[Reconstruction, list[Path]]:
    """Check the outputs and inputs (before creating any folder), reconstruct and write the
    files (:func:`output_paths`). ``kwargs``: the options of :func:`backproject`."""
    from ..io.atomic import check_writable_dir

    paths = output_paths(os.fspath(out), half_maps)
    check_outputs(paths, overwrite)
    check_options(**kwargs)
    x = load_inputs(particles, poses, ctf, ind=ind, first=first, datadir=datadir, apix=apix)
    check_writable_dir(paths["map"].parent)
    rec = backproject(x.images, x.n, x.D, x.rot, x.trans, x.ctf, apix=x.apix,
                      half_maps=half_maps, **kwargs)
    return rec, write_reconstruction(rec, paths)
