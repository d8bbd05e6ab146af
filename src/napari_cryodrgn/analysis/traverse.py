"""Paths through the latent space: PC traversals, nearest-neighbour graph paths between
particles, and straight or polyline paths resampled at equal arc length."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .embed import PCAFit


# -- PC traversal -----------------------------------------------------------------------------
def pc_traversal(pca: PCAFit, pc_scores, pc: int, n: int = 10, lo: float = 5.0,
                 hi: float = 95.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` latent points along principal component ``pc`` (1-based), evenly spaced from the
    ``lo``-th to the ``hi``-th percentile of the particles' coordinates on it, every other PC at
    the mean (cryoDRGN's ``pcN/z_values.txt``). Returns (z (n, zdim), PC values (n,))."""
    if not 1 <= pc <= pca.zdim:
        raise InputError(f"PC {pc} does not exist: the latent space has {pca.zdim} dimensions")
    if n < 1:
        raise InputError(f"a traversal needs at least one point, not {n}")
    start, end = np.percentile(np.asarray(pc_scores)[:, pc - 1], (lo, hi))
    values = np.linspace(start, end, n)
    return pca.inverse(values[:, None], dims=[pc - 1]), values


# -- graph traversal --------------------------------------------------------------------------
def neighbour_graph(z, max_neighbors: int = 10, avg_neighbors: float = 5.0):
    """Directed nearest-neighbour graph of latent points, as a scipy CSR matrix of distances.

    Each point links to its ``max_neighbors`` nearest other points; then only the shortest
    ``N * avg_neighbors`` of those links are kept (a global distance cut), so the graph averages
    about ``avg_neighbors`` links per point and long jumps across empty space are dropped. This
    is cryoDRGN's ``graph_traversal`` rule, except that a point is not counted as its own
    neighbour. A zero distance (duplicate points) is stored as a tiny positive one so the link
    survives in the sparse matrix.
    """
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    z = np.asarray(z, np.float64)
    n = len(z)
    if n < 2:
        raise InputError("a neighbour graph needs at least 2 particles")
    k = min(int(max_neighbors), n - 1)
    dist, nbr = cKDTree(z).query(z, k=k + 1, workers=-1)
    dist, nbr = dist[:, 1:], nbr[:, 1:]
    rows = np.repeat(np.arange(n), k)
    dist, nbr = dist.reshape(-1), nbr.reshape(-1)
    keep_n = min(len(dist), max(1, int(round(n * avg_neighbors))))
    cut = np.partition(dist, keep_n - 1)[keep_n - 1]
    keep = dist <= cut
    w = np.maximum(dist[keep], 1e-12)
    return csr_matrix((w, (rows[keep], nbr[keep])), shape=(n, n))


def largest_component(graph) -> np.ndarray:
    """Indices of the particles in the largest connected part of a neighbour graph."""
    from scipy.sparse.csgraph import connected_components

    _, lab = connected_components(graph, directed=False)
    return np.flatnonzero(lab == np.bincount(lab).argmax())


@dataclass
class GraphPath:
    """Particle indices along the path (anchors included, each once), their latent points and
    the length of each step (0 for the first point)."""

    indices: np.ndarray
    z: np.ndarray
    steps: np.ndarray

    @property
    def length(self) -> float:
        return float(self.steps.sum())


def graph_path(z, anchors, graph=None, max_neighbors: int = 10, avg_neighbors: float = 5.0,
               directed: bool = False) -> GraphPath:
    """Shortest path through the neighbour graph visiting ``anchors`` (particle indices) in
    order (Dijkstra, scipy.sparse.csgraph). Links are walked both ways unless ``directed``.
    """
    from scipy.sparse.csgraph import dijkstra

    z = np.asarray(z)
    anchors = [int(a) for a in anchors]
    if len(anchors) < 2:
        raise InputError("a graph path needs at least two anchor particles")
    for a in anchors:
        if not 0 <= a < len(z):
            raise InputError(f"anchor {a} is not a particle index (0..{len(z) - 1})")
    if graph is None:
        graph = neighbour_graph(z, max_neighbors, avg_neighbors)
    sources = sorted(set(anchors[:-1]))
    dist, pred = dijkstra(graph, directed=directed, indices=sources, return_predecessors=True)
    row = {s: r for r, s in enumerate(sources)}
    full: list[int] = []
    for a, b in zip(anchors[:-1], anchors[1:], strict=True):
        r = row[a]
        if not np.isfinite(dist[r, b]):
            raise InputError(
                f"particles {a} and {b} lie in parts of the neighbour graph that are not "
                "connected; choose other anchors or raise the average number of neighbours")
        seg = [b]
        while seg[-1] != a:
            seg.append(int(pred[r, seg[-1]]))
        seg.reverse()
        full.extend(seg if not full else seg[1:])
    ind = np.asarray(full, np.int64)
    zp = np.asarray(z[ind], np.float32)
    steps = np.concatenate([[0.0], np.linalg.norm(np.diff(zp.astype(np.float64), axis=0),
                                                  axis=1)])
    return GraphPath(ind, zp, steps)


# -- straight and polyline paths --------------------------------------------------------------
def resample_polyline(points, n: int) -> np.ndarray:
    """``n`` points at equal arc length along the polyline through ``points`` (M, d), from the
    first vertex to the last. A path of zero length gives ``n`` copies of its point."""
    p = np.atleast_2d(np.asarray(points, np.float64))
    if n < 1:
        raise InputError(f"a path needs at least one point, not {n}")
    if len(p) == 0:
        raise InputError("a path needs at least one vertex")
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 0])
    p, seg = p[keep], seg[seg > 0]
    if len(p) == 1:
        return np.repeat(p, n, axis=0).astype(np.float32)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], n)
    j = np.clip(np.searchsorted(s, t, side="right") - 1, 0, len(seg) - 1)
    f = ((t - s[j]) / seg[j])[:, None]
    return (p[j] * (1 - f) + p[j + 1] * f).astype(np.float32)


def straight_path(z0, z1, n: int = 10) -> np.ndarray:
    """``n`` evenly spaced latent points on the segment from ``z0`` to ``z1`` (both included)."""
    return resample_polyline(np.stack([np.ravel(z0), np.ravel(z1)]), n)
