"""Selecting particles on a 2D embedding: points in a lasso polygon or a rectangle, and the
particle nearest a clicked point.

``points_in_polygon`` is built for a million points: after a bounding-box cut the box is split
into a ``grid`` x ``grid`` raster; cells that no polygon edge touches take the inside/outside
answer of their centre, and only the points in cells an edge passes through get an exact
even-odd (crossing-number) test, against just the edges that span their row of cells.
"""

from __future__ import annotations

import numpy as np


def _even_odd(px, py, poly) -> np.ndarray:
    """Even-odd rule for points (px, py) against the closed polygon ``poly`` (M, 2)."""
    inside = np.zeros(len(px), bool)
    if len(px) == 0:
        return inside
    xj, yj = poly[-1]
    for xi, yi in poly:
        if yi != yj:
            cross = (yi > py) != (yj > py)
            xint = xi + (py - yi) * ((xj - xi) / (yj - yi))
            inside ^= cross & (px < xint)
        xj, yj = xi, yi
    return inside


def _even_odd_rows(px, py, rows, poly, edge_rows) -> np.ndarray:
    """Even-odd test of points grouped by raster row; each row only meets the polygon edges
    whose y-span overlaps it (``edge_rows``: (n_rows, M) bool)."""
    out = np.zeros(len(px), bool)
    if len(px) == 0:
        return out
    order = np.argsort(rows, kind="stable")
    r_sorted = rows[order]
    starts = np.flatnonzero(np.r_[True, r_sorted[1:] != r_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        sel = order[s:e]
        edges = np.flatnonzero(edge_rows[r_sorted[s]])
        if len(edges) == 0:
            continue
        a = poly[edges]
        b = poly[(edges - 1) % len(poly)]
        x, y = px[sel, None], py[sel, None]
        ya, yb = a[:, 1], b[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = a[:, 0] + (y - ya) * ((b[:, 0] - a[:, 0]) / (yb - ya))
        hit = ((ya > y) != (yb > y)) & (x < xint)
        out[sel] = (hit.sum(axis=1) & 1).astype(bool)
    return out


def _centres_inside(poly, edge_rows, lo, w, n) -> np.ndarray:
    """Even-odd answer (n, n) at every raster cell centre, one scanline per row."""
    out = np.zeros((n, n), np.int8)
    cx = lo[0] + (np.arange(n) + 0.5) * w[0]
    for r in range(n):
        edges = np.flatnonzero(edge_rows[r])
        if len(edges) == 0:
            continue
        y = lo[1] + (r + 0.5) * w[1]
        a, b = poly[edges], poly[(edges - 1) % len(poly)]
        cross = (a[:, 1] > y) != (b[:, 1] > y)
        a, b = a[cross], b[cross]
        xs = np.sort(a[:, 0] + (y - a[:, 1]) * ((b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])))
        # inside when an odd number of crossings lies to the right of the centre
        out[r] = (len(xs) - np.searchsorted(xs, cx, side="right")) & 1
    return out


def _clean(polygon) -> np.ndarray:
    poly = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(poly) > 1 and np.array_equal(poly[0], poly[-1]):
        poly = poly[:-1]
    return poly


def points_in_polygon(xy, polygon, grid: int = 256, direct_work: int = 500_000) -> np.ndarray:
    """Bool mask (N,) of the points ``xy`` (N, 2) inside ``polygon`` (M, 2 vertices; closed
    implicitly) by the even-odd rule, like matplotlib's ``Path.contains_points``. Small jobs
    (points in the bounding box times vertices up to ``direct_work``) skip the raster."""
    xy = np.asarray(xy)
    poly = _clean(polygon)
    out = np.zeros(len(xy), bool)
    if len(poly) < 3 or len(xy) == 0:
        return out
    x, y = xy[:, 0], xy[:, 1]
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    idx = np.flatnonzero((x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]))
    if len(idx) == 0 or np.any(hi <= lo):  # a polygon of zero area holds nothing
        return out
    px, py = x[idx], y[idx]
    if len(idx) * len(poly) <= direct_work:
        out[idx] = _even_odd(px.astype(np.float64), py.astype(np.float64), poly)
        return out
    n = grid
    w = (hi - lo) / n
    lo32, w32 = lo.astype(np.float32), w.astype(np.float32)

    def cell(v, axis):
        # float32 throughout: monotonic in v, so the rows an edge spans hold its points' rows
        c = (np.asarray(v, np.float32) - lo32[axis]) / w32[axis]
        return np.clip(c.astype(np.int32), 0, n - 1)

    b = np.roll(poly, 1, axis=0)  # edge i runs from b[i] = poly[i - 1] to poly[i]
    rr = np.arange(n)[:, None]
    edge_rows = ((rr >= cell(np.minimum(poly[:, 1], b[:, 1]), 1))
                 & (rr <= cell(np.maximum(poly[:, 1], b[:, 1]), 1)))
    # cells an edge touches: sample each edge at most a quarter cell apart and mark the cells
    # of each sample and, for consecutive samples in diagonal cells, the two cells between
    k = np.ceil(4 * (np.abs(poly - b) / w).max(axis=1)).astype(np.int64) + 1
    t = np.concatenate([np.linspace(0.0, 1.0, m) for m in k])
    e = np.repeat(np.arange(len(poly)), k)
    samples = b[e] + (poly[e] - b[e]) * t[:, None]
    ci, cj = cell(samples[:, 0], 0), cell(samples[:, 1], 1)
    near = np.zeros((n, n), bool)
    near[cj, ci] = True
    near[cj[1:], ci[:-1]] = True
    near[cj[:-1], ci[1:]] = True
    # untouched cells are wholly inside or outside: the answer at their centre holds for all
    status = np.full((n, n), 2, np.int8)
    status[~near] = _centres_inside(poly, edge_rows, lo, w, n)[~near]
    ix, iy = cell(px, 0), cell(py, 1)
    s = status[iy, ix]
    res = s == 1
    amb = np.flatnonzero(s == 2)
    res[amb] = _even_odd_rows(px[amb].astype(np.float64), py[amb].astype(np.float64),
                              iy[amb], poly, edge_rows)
    out[idx] = res
    return out


def points_in_rect(xy, corner0, corner1) -> np.ndarray:
    """Bool mask (N,) of the points inside the axis-aligned rectangle with opposite corners
    ``corner0`` and ``corner1`` (edges included)."""
    xy = np.asarray(xy)
    (x0, y0), (x1, y1) = np.asarray(corner0, float), np.asarray(corner1, float)
    x, y = xy[:, 0], xy[:, 1]
    return ((x >= min(x0, x1)) & (x <= max(x0, x1)) & (y >= min(y0, y1)) & (y <= max(y0, y1)))


class PointPicker:
    """Nearest-point queries on fixed 2D (or any-D) points, with a KD-tree built once."""

    def __init__(self, points):
        from scipy.spatial import cKDTree

        self.points = np.asarray(points)
        # sliding-midpoint tree without compaction: builds ~2x faster, queries as fast
        self.tree = cKDTree(np.asarray(self.points, np.float64), balanced_tree=False,
                            compact_nodes=False)

    def __len__(self) -> int:
        return len(self.points)

    def nearest(self, xy, max_dist: float | None = None) -> int:
        """Index of the point nearest ``xy``; -1 when none lies within ``max_dist``."""
        d, i = self.tree.query(np.asarray(xy, np.float64).reshape(-1), k=1,
                               distance_upper_bound=np.inf if max_dist is None else max_dist)
        return int(i) if np.isfinite(d) else -1

    def query(self, xy, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices of the ``k`` nearest points to each row of ``xy``."""
        return self.tree.query(np.atleast_2d(np.asarray(xy, np.float64)), k=k)
