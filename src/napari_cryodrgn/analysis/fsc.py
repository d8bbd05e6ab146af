"""Fourier shell correlation between maps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def fsc(vol1: np.ndarray, vol2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FSC of two cubic maps. Returns (freq, fsc) for shells k = 0 .. D/2 - 1, freq = k / D."""
    if vol1.shape != vol2.shape or len(set(vol1.shape)) != 1:
        raise ValueError(f"FSC needs two cubic maps of one size, got {vol1.shape} and {vol2.shape}")
    D = vol1.shape[0]
    f1 = np.fft.fftshift(np.fft.fftn(vol1))
    f2 = np.fft.fftshift(np.fft.fftn(vol2))
    ax = np.arange(D) - D // 2
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    shell = np.rint(np.sqrt(xx**2 + yy**2 + zz**2)).astype(int).ravel()
    n = D // 2
    keep = shell < n
    s = shell[keep]
    num = np.bincount(s, (f1 * np.conj(f2)).real.ravel()[keep], n)
    d1 = np.bincount(s, (np.abs(f1) ** 2).ravel()[keep], n)
    d2 = np.bincount(s, (np.abs(f2) ** 2).ravel()[keep], n)
    curve = num / np.sqrt(np.maximum(d1 * d2, 1e-30))
    return np.arange(n) / D, curve


def fsc_auc(vol1: np.ndarray, vol2: np.ndarray) -> float:
    """Area under the FSC over shells k = 1 .. D/2 - 1 on the k/D axis (trapezoid; a perfect
    map scores (D/2 - 2) / D, 0.44 at D=32 and 0.47 at D=64). Signed: a sign-inverted map
    scores as badly as a perfect one scores well, and unrelated maps about 0."""
    return _auc(*fsc(vol1, vol2))


def dfsc_auc(maps, refs) -> float:
    """Mean FSC-AUC of the moving part: each of ``maps`` minus their mean against the matching
    one of ``refs`` minus theirs. Density that every map shares scores nothing, so one
    consensus map repeated scores 0 however sharp it is."""
    maps = [np.asarray(m, np.float64) for m in maps]
    refs = [np.asarray(r, np.float64) for r in refs]
    if len(maps) != len(refs) or len(maps) < 2:
        raise ValueError(f"dFSC needs two or more map pairs, got {len(maps)} and {len(refs)}")
    dm, dr = np.mean(maps, 0), np.mean(refs, 0)
    return float(np.mean([fsc_auc(m - dm, r - dr) for m, r in zip(maps, refs, strict=True)]))


def _auc(freq: np.ndarray, curve: np.ndarray) -> float:
    return float(np.trapezoid(curve[1:], freq[1:]))


def real_space_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None
                           ) -> float:
    """Pearson correlation of two maps (inside ``mask`` when given); signed: an inverted map
    scores -1."""
    x = np.asarray(a, np.float64)[mask] if mask is not None else np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)[mask] if mask is not None else np.asarray(b, np.float64)
    x, y = x.ravel() - x.mean(), y.ravel() - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0


@dataclass(frozen=True)
class MapScore:
    """How well a map matches a reference: signed FSC-AUC, the frequencies (1/pixel) where
    the FSC first drops below 0.5 and 0.143 (None: never, i.e. beyond Nyquist), and the
    real-space correlation."""

    fsc_auc: float
    f05: float | None
    f0143: float | None
    rsc: float

    def as_dict(self) -> dict:
        return {"fsc_auc": self.fsc_auc, "fsc05": self.f05, "fsc0143": self.f0143,
                "rsc": self.rsc}


def map_score(vol: np.ndarray, ref: np.ndarray) -> MapScore:
    """:class:`MapScore` of ``vol`` against ``ref``."""
    freq, curve = fsc(vol, ref)
    return MapScore(_auc(freq, curve), threshold_crossing(freq, curve, 0.5),
                    threshold_crossing(freq, curve, 0.143), real_space_correlation(vol, ref))


def resolution_at(vol1: np.ndarray, vol2: np.ndarray, apix: float, threshold: float = 0.5):
    """Resolution (Angstrom) where the FSC first drops below ``threshold``; Nyquist if never."""
    freq, curve = fsc(vol1, vol2)
    below = np.nonzero(curve[1:] < threshold)[0]
    if len(below) == 0:
        return 2 * apix
    f = freq[1:][below[0]]
    return float(apix / f) if f > 0 else float("inf")


def threshold_crossing(freq: np.ndarray, curve: np.ndarray, threshold: float) -> float | None:
    """Frequency where an FSC curve first drops below ``threshold``, or None if it never does.

    Shell 0 (the mean) is skipped; the crossing is interpolated linearly between the last shell
    at or above the threshold and the first one below it (cryoDRGN reports the shell edge
    instead, which can differ by up to a shell).
    """
    freq, curve = np.asarray(freq, np.float64), np.asarray(curve, np.float64)
    below = np.nonzero(curve[1:] < threshold)[0]
    if len(below) == 0:
        return None
    i = int(below[0]) + 1
    f0, f1, c0, c1 = freq[i - 1], freq[i], curve[i - 1], curve[i]
    if i == 1 or c0 == c1:
        return float(f1 if i == 1 else f0)
    return float(f0 + (f1 - f0) * (c0 - threshold) / (c0 - c1))
