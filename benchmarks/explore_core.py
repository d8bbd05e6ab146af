"""Speed of the latent explorer's Qt-free core on a million particles.

Times lasso membership (``points_in_polygon``, a 12-vertex lasso and a smooth 300-vertex one,
with matplotlib's ``Path.contains_points`` on all points as a reference), nearest-point picking
(KD-tree build and single-click queries), the density colouring, PCA on 1M x 8 latents and
k-means (K=20) on 100k x 8 (and on all points, fitted on a 200k subset). Prints a table and
writes ``benchmarks/results/explore_core.json``.

    .venv/bin/python benchmarks/explore_core.py [--n 1000000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, save_json  # noqa: E402


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out, ts = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return ts, out


def summary(name: str, ts: list[float], scale: float = 1e3, unit: str = "ms", **extra) -> dict:
    return {"what": name, "unit": unit, "min": min(ts) * scale,
            "median": float(np.median(ts)) * scale, "repeats": len(ts), **extra}


def latents(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered, anisotropic latents (a few blobs, as trained runs give)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, size=(6, d))
    lab = rng.integers(0, 6, n)
    return (centres[lab] + rng.normal(size=(n, d)) * np.linspace(1, 0.2, d)).astype(np.float32)


def lasso(m: int, noise: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, m, endpoint=False)
    r = 1 + 0.3 * np.sin(3 * t) + noise * rng.normal(size=m)
    return np.c_[np.cos(t) * r * 2.5, np.sin(t) * r * 2.0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="points for lasso/picking/PCA")
    p.add_argument("--n-kmeans", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="explore_core")
    args = p.parse_args(argv)
    from matplotlib.path import Path as MplPath

    from napari_cryodrgn.analysis.cluster import kmeans
    from napari_cryodrgn.analysis.embed import fit_pca, point_density
    from napari_cryodrgn.analysis.select import PointPicker, points_in_polygon

    rows = []
    z = latents(args.n, 8)
    pca = fit_pca(z)
    xy = np.ascontiguousarray(pca.transform(z)[:, :2])

    for m, noise in ((12, 0.0), (300, 0.0)):
        poly = lasso(m, noise)
        ts, mask = timed(lambda poly=poly: points_in_polygon(xy, poly), args.repeats)
        ref_ts, ref = timed(lambda poly=poly: MplPath(poly).contains_points(xy), 3)
        assert np.array_equal(mask, ref), "points_in_polygon disagrees with matplotlib"
        rows.append(summary(f"lasso {m} vertices, {args.n} points", ts,
                            inside=int(mask.sum()), target_ms=100))
        rows.append(summary(f"  reference: matplotlib contains_points, {m} vertices", ref_ts))

    ts, picker = timed(lambda: PointPicker(xy), 3)
    rows.append(summary(f"pick: KD-tree build, {args.n} points", ts))
    rng = np.random.default_rng(2)
    clicks = xy[rng.integers(0, len(xy), 2000)] + rng.normal(0, 0.05, (2000, 2))
    t0 = time.perf_counter()
    for q in clicks:
        picker.nearest(q)
    per = (time.perf_counter() - t0) / len(clicks)
    rows.append({"what": "pick: one click (nearest point)", "unit": "us", "min": per * 1e6,
                 "median": per * 1e6, "repeats": len(clicks)})

    ts, _ = timed(lambda: point_density(xy), 3)
    rows.append(summary(f"density colouring, {args.n} points", ts))
    ts, _ = timed(lambda: fit_pca(z), 3)
    rows.append(summary(f"PCA fit, {args.n} x 8", ts))
    ts, _ = timed(lambda: pca.transform(z), 3)
    rows.append(summary(f"PCA transform, {args.n} x 8", ts))
    zk = z[: args.n_kmeans]
    ts, _ = timed(lambda: kmeans(zk, 20, seed=0), 3)
    rows.append(summary(f"k-means K=20, {len(zk)} x 8 (centres snapped)", ts, scale=1.0,
                        unit="s"))
    if args.n > 200_000:
        ts, _ = timed(lambda: kmeans(z, 20, seed=0), 1)
        rows.append(summary(f"k-means K=20, {args.n} x 8 (fit on 200k, all labelled)", ts,
                            scale=1.0, unit="s"))

    info = machine_info()
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    save_json(args.out, {"machine": info, "n": args.n, "rows": rows}, rows=rows,
              columns=["what", "min", "median", "unit", "repeats"],
              title="latent explorer core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
