"""2D views of the latent space: PCA (with an exact inverse) and UMAP (cached in ``umap.pkl``).

``umap.pkl`` holds one pickled float32 (N, 2) array, as cryoDRGN's ``analyze`` writes it, so
either tool reuses the other's embedding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.safepickle import load_pickle, save_pickle

log = logging.getLogger(__name__)


@dataclass
class PCAFit:
    """Principal axes of a set of latent points.

    ``components`` rows are the unit principal axes, sorted by decreasing variance, each with
    its largest-magnitude entry positive (a fixed sign, so reruns agree).
    """

    mean: np.ndarray  # (zdim,) float64
    components: np.ndarray  # (zdim, zdim) float64, one axis per row
    explained_variance: np.ndarray  # (zdim,)
    explained_variance_ratio: np.ndarray  # (zdim,), sums to 1

    def __post_init__(self):
        # float32 and contiguous: a transposed float64 view takes numpy's slow matmul path
        self._mean32 = self.mean.astype(np.float32)
        self._proj32 = np.ascontiguousarray(self.components.T, dtype=np.float32)

    @property
    def zdim(self) -> int:
        return len(self.mean)

    def transform(self, z, chunk: int = 1 << 18) -> np.ndarray:
        """PC coordinates (N, zdim) float32 of latent points (N, zdim)."""
        z = np.atleast_2d(np.asarray(z, np.float32))
        out = np.empty((len(z), self.zdim), np.float32)
        for s in range(0, len(z), chunk):
            np.matmul(z[s : s + chunk] - self._mean32, self._proj32, out=out[s : s + chunk])
        return out

    def inverse(self, pcs, dims=None) -> np.ndarray:
        """Latent points (M, zdim) float32 at PC coordinates ``pcs`` (M, k).

        Column c of ``pcs`` is the coordinate along PC ``dims[c]`` (0-based; default 0..k-1);
        every other PC is 0, i.e. at the mean: ``z = mean + sum_c pcs[:, c] * axis[dims[c]]``.
        """
        pcs = np.atleast_2d(np.asarray(pcs, np.float64))
        dims = list(range(pcs.shape[1])) if dims is None else list(dims)
        if len(dims) != pcs.shape[1] or any(not 0 <= d < self.zdim for d in dims):
            raise ValueError(f"PC dims {dims} do not fit {pcs.shape[1]} columns / zdim "
                             f"{self.zdim}")
        return (self.mean + pcs @ self.components[dims]).astype(np.float32)


def fit_pca(z) -> PCAFit:
    """PCA of latent points (N, zdim) by an eigendecomposition of their covariance (float64)."""
    z = np.asarray(z)
    if z.ndim != 2 or len(z) < 2:
        raise InputError(f"PCA needs at least 2 latent points, got an array of shape {z.shape}")
    mean = z.mean(axis=0, dtype=np.float64)
    cov = np.zeros((z.shape[1], z.shape[1]))
    for s in range(0, len(z), 1 << 18):
        c = z[s : s + (1 << 18)] - mean
        cov += c.T @ c
    cov /= len(z) - 1
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    val = np.clip(val[order], 0.0, None)
    comps = vec[:, order].T
    big = np.argmax(np.abs(comps), axis=1)
    comps *= np.sign(comps[np.arange(len(comps)), big])[:, None]
    total = val.sum()
    ratio = val / total if total > 0 else np.zeros_like(val)
    return PCAFit(mean, comps, val, ratio)


def umap_available() -> bool:
    """True when umap-learn can be imported."""
    import importlib.util

    return importlib.util.find_spec("umap") is not None


def run_umap(z, seed: int | None = None, **kwargs) -> np.ndarray:
    """UMAP of latent points with umap-learn's defaults (``seed`` makes it reproducible but
    single-threaded). Returns (N, 2) float32."""
    try:
        import umap
    except ImportError:
        raise InputError("UMAP needs umap-learn: pip install 'napari-cryodrgn[umap]' "
                         "(or skip UMAP)") from None
    z = np.asarray(z, np.float32)
    if len(z) < 4:
        raise InputError(f"UMAP needs at least 4 latent points, got {len(z)}")
    n_neighbors = kwargs.pop("n_neighbors", min(15, len(z) - 1))
    reducer = umap.UMAP(n_neighbors=n_neighbors, random_state=seed, **kwargs)
    return np.asarray(reducer.fit_transform(z), np.float32)


def read_umap(path, n: int | None = None) -> np.ndarray | None:
    """An (N, 2) embedding from a ``umap.pkl`` (ours or cryoDRGN's), or None when the file is
    absent, unreadable or holds another number of points than ``n`` (logged)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        emb = np.asarray(load_pickle(path))
    except (InputError, ValueError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None
    if emb.ndim != 2 or emb.shape[1] != 2 or (n is not None and len(emb) != n):
        log.warning("ignoring %s: shape %s, expected (%s, 2)", path, emb.shape, n)
        return None
    return emb.astype(np.float32)


def write_umap(path, emb) -> None:
    """Write an (N, 2) embedding as cryoDRGN's ``umap.pkl`` (one pickled float32 array)."""
    save_pickle(path, np.asarray(emb, np.float32))


def cached_umap(z, cache_paths, write_to=None, seed: int | None = None
                ) -> tuple[np.ndarray, Path | None]:
    """UMAP of ``z`` from the first of ``cache_paths`` that holds one for N points, else
    computed (and written to ``write_to`` when given). Returns (embedding, path read or None)."""
    for p in cache_paths:
        emb = read_umap(p, len(z))
        if emb is not None:
            return emb, Path(p)
    emb = run_umap(z, seed=seed)
    if write_to is not None:
        try:
            Path(write_to).parent.mkdir(parents=True, exist_ok=True)
            write_umap(write_to, emb)
        except (OSError, InputError) as e:
            log.warning("UMAP not cached (%s)", e)
    return emb, None


def point_density(xy: np.ndarray, bins: int = 128) -> np.ndarray:
    """log(1 + smoothed 2D histogram count) at each point."""
    from scipy.ndimage import gaussian_filter

    x, y = xy[:, 0], xy[:, 1]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    ix = np.clip(((x - lo[0]) / span[0] * bins).astype(np.int64), 0, bins - 1)
    iy = np.clip(((y - lo[1]) / span[1] * bins).astype(np.int64), 0, bins - 1)
    h = np.bincount(ix * bins + iy, minlength=bins * bins).reshape(bins, bins).astype(float)
    h = gaussian_filter(h, 1.0)
    return np.log1p(h[ix, iy]).astype(np.float32)
