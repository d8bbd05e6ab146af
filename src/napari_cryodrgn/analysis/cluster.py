"""k-means on latent points, with centres snapped to the nearest particle (cryoDRGN's
``kmeansK/centers_ind.txt``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass
class KMeansResult:
    """``labels`` (N,) int64 in 0..k-1; ``centers_ind`` (k,) the particle nearest each cluster
    mean; ``centers`` (k, zdim) their latent points (``z[centers_ind]``); ``means`` the cluster
    means themselves. Clusters are numbered along the leaf order of an average-linkage tree of
    their means, so neighbouring numbers tend to be similar maps."""

    labels: np.ndarray
    centers_ind: np.ndarray
    centers: np.ndarray
    means: np.ndarray

    @property
    def k(self) -> int:
        return len(self.centers_ind)


def nearest_points(data, query, chunk: int = 1 << 16) -> np.ndarray:
    """Index of the row of ``data`` nearest (Euclidean) to each row of ``query``.

    A few queries (k-means centres, path ends) are answered by brute force in chunks, which
    beats building a KD-tree over a million high-dimensional points; many by a KD-tree."""
    data = np.asarray(data)
    q = np.atleast_2d(np.asarray(query, np.float64))
    if len(q) > 256:
        from scipy.spatial import cKDTree

        _, ind = cKDTree(np.asarray(data, np.float64)).query(q, k=1)
        return np.asarray(ind, np.int64)
    best = np.full(len(q), np.inf)
    ind = np.zeros(len(q), np.int64)
    qq = (q * q).sum(1)
    for s in range(0, len(data), chunk):
        d = np.asarray(data[s : s + chunk], np.float64)
        dist = (d * d).sum(1)[:, None] - 2 * d @ q.T + qq  # squared distances
        j = dist.argmin(axis=0)
        v = dist[j, np.arange(len(q))]
        better = v < best
        best[better], ind[better] = v[better], j[better] + s
    return ind


def _leaf_order(means: np.ndarray) -> np.ndarray:
    if len(means) < 3:
        return np.arange(len(means))
    from scipy.cluster.hierarchy import leaves_list, linkage

    return np.asarray(leaves_list(linkage(means, "average")), np.int64)


def kmeans(z, k: int = 20, seed: int = 0, max_iter: int = 300, reorder: bool = True,
           fit_max: int = 200_000) -> KMeansResult:
    """k-means (scikit-learn, k-means++ start, ``seed``) on latent points ``z`` (N, zdim).

    Beyond ``fit_max`` particles the means are fitted on a random subset of that size (seeded)
    and every particle is then labelled by its nearest mean: a million particles take seconds
    instead of minutes, with means that differ from a full fit by far less than the spread of
    a cluster."""
    from sklearn.cluster import KMeans

    z = np.asarray(z, np.float32)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k-means needs a positive number of clusters, not {k!r}")
    if len(z) < k:
        raise InputError(f"k-means with K={k} needs at least {k} particles; this run has "
                         f"{len(z)} (choose a smaller --ksample)")
    km = KMeans(n_clusters=int(k), random_state=seed, n_init=1, max_iter=max_iter)
    if len(z) > fit_max:
        sub = np.random.default_rng(seed).choice(len(z), fit_max, replace=False)
        km.fit(z[np.sort(sub)])
        labels = km.predict(z).astype(np.int64)
    else:
        labels = km.fit_predict(z).astype(np.int64)
    means = km.cluster_centers_.astype(np.float32)
    if reorder:
        order = _leaf_order(means)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        labels, means = rank[labels], means[order]
    ind = nearest_points(z, means)
    return KMeansResult(labels, ind, z[ind], means)
