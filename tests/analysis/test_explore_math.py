"""Latent-space maths of the explorer: PCA inverse, traversals, k-means, graph paths,
arc-length resampling, lasso membership, picking, run.log parsing and the UMAP cache."""

import heapq
import pickle

import numpy as np
import pytest

from napari_cryodrgn.analysis import embed, figures
from napari_cryodrgn.analysis.cluster import kmeans, nearest_points
from napari_cryodrgn.analysis.embed import cached_umap, fit_pca, read_umap, write_umap
from napari_cryodrgn.analysis.runlog import read_losses
from napari_cryodrgn.analysis.select import PointPicker, points_in_polygon, points_in_rect
from napari_cryodrgn.analysis.traverse import (
    graph_path,
    largest_component,
    neighbour_graph,
    pc_traversal,
    resample_polyline,
    straight_path,
)
from napari_cryodrgn.errors import InputError


def _aniso(n=2000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * np.array([5, 2, 1, 0.5, 0.1][:d]) @ q.T + 3).astype(
        np.float32)


def test_pca_matches_sklearn_and_inverts_exactly():
    from sklearn.decomposition import PCA

    z = _aniso()
    p = fit_pca(z)
    ref = PCA(z.shape[1]).fit(z.astype(np.float64))
    np.testing.assert_allclose(p.explained_variance_ratio, ref.explained_variance_ratio_,
                               rtol=1e-5)
    np.testing.assert_allclose(np.abs(p.components @ ref.components_.T), np.eye(5), atol=1e-4)
    pc = p.transform(z)
    np.testing.assert_allclose(p.inverse(pc), z, atol=1e-4)  # all PCs: the points themselves
    # a 2D PCA point maps to z with the other PCs at the mean, and projects back onto itself
    xy = np.array([[1.5, -0.7], [0.0, 0.0]])
    zz = p.inverse(xy)
    back = p.transform(zz)
    np.testing.assert_allclose(back[:, :2], xy, atol=1e-5)
    np.testing.assert_allclose(back[:, 2:], 0, atol=1e-5)
    np.testing.assert_allclose(zz[1], z.mean(0), atol=1e-4)
    # other PC pairs
    back = p.transform(p.inverse(xy, dims=[2, 4]))
    np.testing.assert_allclose(back[:, [2, 4]], xy, atol=1e-5)
    np.testing.assert_allclose(back[:, [0, 1, 3]], 0, atol=1e-5)


def test_pc_traversal_spans_5th_to_95th_percentile():
    z = _aniso()
    p = fit_pca(z)
    pc = p.transform(z)
    for k in (1, 2):
        traj, values = pc_traversal(p, pc, k, n=10)
        lo, hi = np.percentile(pc[:, k - 1], [5, 95])
        np.testing.assert_allclose(values, np.linspace(lo, hi, 10), rtol=1e-6)
        t = p.transform(traj)
        np.testing.assert_allclose(t[:, k - 1], values, atol=1e-4)
        others = np.delete(t, k - 1, axis=1)
        np.testing.assert_allclose(others, 0, atol=1e-4)
    with pytest.raises(InputError, match="PC 6"):
        pc_traversal(p, pc, 6)


def test_kmeans_centres_are_particles_nearest_the_means():
    z = _aniso(600)
    r = kmeans(z, 7, seed=1)
    assert r.labels.shape == (600,) and set(np.unique(r.labels)) <= set(range(7))
    assert r.centers_ind.dtype == np.int64 and r.centers_ind.shape == (7,)
    np.testing.assert_array_equal(r.centers, z[r.centers_ind])
    d = ((z[None] - r.means[:, None]) ** 2).sum(-1)
    np.testing.assert_array_equal(r.centers_ind, d.argmin(1))
    for lab in range(7):  # labels and means stay paired after the reordering
        np.testing.assert_allclose(z[r.labels == lab].mean(0), r.means[lab], atol=1e-3)
    again = kmeans(z, 7, seed=1)
    np.testing.assert_array_equal(again.labels, r.labels)
    with pytest.raises(InputError, match="at least 9"):
        kmeans(z[:5], 9)
    # many particles: means fitted on a subset, every particle labelled by its nearest mean
    big = kmeans(z, 7, seed=1, fit_max=200)
    d = ((z[None] - big.means[:, None]) ** 2).sum(-1)
    np.testing.assert_array_equal(big.labels, d.argmin(0))
    np.testing.assert_array_equal(big.centers_ind, d.argmin(1))


def test_nearest_points_brute_force_and_tree_agree():
    rng = np.random.default_rng(6)
    data = rng.normal(size=(5000, 8)).astype(np.float32)
    q = rng.normal(size=(300, 8))
    ref = np.array([((data - x) ** 2).sum(1).argmin() for x in q])
    np.testing.assert_array_equal(nearest_points(data, q), ref)  # KD-tree (> 256 queries)
    np.testing.assert_array_equal(nearest_points(data, q[:20], chunk=777), ref[:20])


def _dijkstra(graph, a, b):
    """Plain-Python reference over the graph's links walked both ways."""
    g = graph.tocoo()
    adj = {}
    for i, j, w in zip(g.row, g.col, g.data, strict=True):
        adj.setdefault(i, {})[j] = min(w, adj.get(i, {}).get(j, np.inf))
        adj.setdefault(j, {})[i] = min(w, adj.get(j, {}).get(i, np.inf))
    dist, heap = {a: 0.0}, [(0.0, a)]
    while heap:
        d, u = heapq.heappop(heap)
        if u == b:
            return d
        if d > dist[u]:
            continue
        for v, w in adj.get(u, {}).items():
            if d + w < dist.get(v, np.inf):
                dist[v] = d + w
                heapq.heappush(heap, (d + w, v))
    return np.inf


def test_graph_path_follows_graph_links_between_anchors():
    rng = np.random.default_rng(2)
    t = rng.permutation(np.linspace(0, 4 * np.pi, 400))  # a helix: ends near, far along it
    z = np.c_[np.cos(t), np.sin(t), 0.3 * t].astype(np.float32)
    z += rng.normal(0, 0.01, z.shape).astype(np.float32)
    g = neighbour_graph(z, max_neighbors=10, avg_neighbors=5)
    assert g.nnz == 400 * 5  # the global cut keeps N x 5 links
    assert g.diagonal().sum() == 0
    a, b, c = int(np.argmin(t)), int(np.argmax(t)), int(np.argsort(t)[200])
    gp = graph_path(z, [a, c, b], graph=g)
    assert gp.indices[0] == a and gp.indices[-1] == b and c in gp.indices
    assert len(set(gp.indices.tolist())) == len(gp.indices)
    sym = (g + g.T).tocsr()
    for u, v in zip(gp.indices[:-1], gp.indices[1:], strict=True):
        assert sym[u, v] > 0, (u, v)
    np.testing.assert_allclose(gp.z, z[gp.indices])
    steps = np.linalg.norm(np.diff(gp.z, axis=0), axis=1)
    np.testing.assert_allclose(gp.steps[1:], steps, rtol=1e-5)
    seg1 = graph_path(z, [a, c], graph=g).length
    seg2 = graph_path(z, [c, b], graph=g).length
    assert seg1 == pytest.approx(_dijkstra(g, a, c), rel=1e-6)
    assert gp.length == pytest.approx(seg1 + seg2, rel=1e-5)
    # the path winds along the helix (arc length ~13) instead of jumping between turns (~4)
    assert gp.length > 2.5 * np.linalg.norm(z[a] - z[b]) and len(gp.indices) > 20


def test_graph_path_reports_disconnected_anchors():
    z = np.r_[np.zeros((60, 2)), np.full((40, 2), 100.0)] + np.random.default_rng(0).normal(
        size=(100, 2))
    with pytest.raises(InputError, match="not .*connected"):
        graph_path(z, [0, 99])
    main = largest_component(neighbour_graph(z))  # the bigger blob, less its loose outliers
    assert main.max() < 60 and len(main) > 40


def test_resample_polyline_equal_arc_length():
    pts = np.array([[0, 0], [3, 0], [3, 0], [3, 4]], float)  # a repeated vertex is harmless
    r = resample_polyline(pts, 8)
    expected = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]])
    np.testing.assert_allclose(r, expected, atol=1e-6)
    rng = np.random.default_rng(1)
    poly = rng.normal(size=(6, 8))
    r = resample_polyline(poly, 50)
    np.testing.assert_allclose(r[[0, -1]], poly[[0, -1]], atol=1e-6)
    # arc-length position of each sample along the polyline: evenly spaced
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    cum = np.r_[0, np.cumsum(seg)]
    pos = []
    for p in r:
        best = min(range(len(seg)), key=lambda i: _dist_to_seg(p, poly[i], poly[i + 1]))
        f = np.dot(p - poly[best], poly[best + 1] - poly[best]) / seg[best] ** 2
        pos.append(cum[best] + f * seg[best])
    np.testing.assert_allclose(np.diff(pos), cum[-1] / 49, rtol=1e-4)
    s = straight_path(np.zeros(3), np.ones(3), 5)
    np.testing.assert_allclose(s[:, 0], [0, 0.25, 0.5, 0.75, 1], atol=1e-6)
    np.testing.assert_allclose(resample_polyline(np.ones((2, 3)), 4), np.ones((4, 3)))


def _dist_to_seg(p, a, b):
    f = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return np.linalg.norm(p - (a + f * (b - a)))


def _ray_cast(x, y, poly):
    inside = False
    n = len(poly)
    for i in range(n):
        (x1, y1), (x2, y2) = poly[i - 1], poly[i]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def test_points_in_polygon_matches_brute_force():
    rng = np.random.default_rng(3)
    xy = rng.normal(size=(3000, 2)).astype(np.float32)
    t = np.sort(rng.uniform(0, 2 * np.pi, 12))
    r = rng.uniform(0.5, 2.0, 12)
    star = np.c_[np.cos(t) * r, np.sin(t) * r]
    crossing = rng.normal(size=(9, 2))  # self-intersecting: even-odd rule
    for poly in (star, crossing):
        ref = np.array([_ray_cast(float(x), float(y), poly) for x, y in xy])
        np.testing.assert_array_equal(points_in_polygon(xy, poly), ref)
        closed = np.r_[poly, poly[:1]]
        np.testing.assert_array_equal(points_in_polygon(xy, closed), ref)
    assert not points_in_polygon(xy, star[:2]).any()


def test_points_in_polygon_raster_path_matches_matplotlib():
    from matplotlib.path import Path

    rng = np.random.default_rng(4)
    xy = rng.normal(size=(300_000, 2)).astype(np.float32)
    for m, noise in ((12, 0.0), (300, 0.0), (150, 0.2)):
        t = np.linspace(0, 2 * np.pi, m, endpoint=False)
        r = 1 + 0.3 * np.sin(5 * t) + noise * rng.normal(size=m)
        poly = np.c_[np.cos(t) * r, np.sin(t) * r] * 1.3
        np.testing.assert_array_equal(points_in_polygon(xy, poly),
                                      Path(poly).contains_points(xy))
    poly = rng.normal(size=(20, 2)) * 1.5
    np.testing.assert_array_equal(points_in_polygon(xy, poly), Path(poly).contains_points(xy))


def test_points_in_rect_and_picker():
    rng = np.random.default_rng(5)
    xy = rng.uniform(-1, 1, size=(5000, 2))
    m = points_in_rect(xy, (0.5, 0.2), (-0.3, -0.1))
    ref = (xy[:, 0] >= -0.3) & (xy[:, 0] <= 0.5) & (xy[:, 1] >= -0.1) & (xy[:, 1] <= 0.2)
    np.testing.assert_array_equal(m, ref)
    pk = PointPicker(xy)
    for q in rng.uniform(-1.2, 1.2, size=(20, 2)):
        assert pk.nearest(q) == int(np.argmin(((xy - q) ** 2).sum(1)))
    assert pk.nearest((10.0, 10.0), max_dist=0.5) == -1


def test_read_losses_ours_and_cryodrgn(tmp_path):
    ours = tmp_path / "ours.log"
    ours.write_text("2026-01-01 10:00:00 start: 10 particles\n"
                    "2026-01-01 10:00:01 epoch 1/3: loss 0.800000 gen 0.79 kld 3.0 (x)\n"
                    "2026-01-01 10:00:02 epoch 2/3: loss 0.700000 gen 0.69 kld 3.0 (x)\n"
                    "2026-01-01 10:00:03 epoch 2/3: loss 0.650000 gen 0.64 kld 3.0 (x)\n")
    assert read_losses(ours) == {1: 0.8, 2: 0.65}
    theirs = tmp_path / "cd.log"
    theirs.write_text("# =====> Epoch: 1 Average gen loss = 0.61, KLD = 20.2, total loss = "
                      "0.62873; Finished in 0:03:25\n# [Train Epoch: 2/2] [10/10 particles]\n"
                      "# =====> Epoch: 2 Average gen loss = 0.6, KLD = 20.1, total loss = "
                      "0.608399; Finished in 0:03:20\n")
    assert read_losses(theirs) == {1: 0.62873, 2: 0.608399}
    assert read_losses(tmp_path / "missing.log") == {}


def test_umap_cache_round_trip(tmp_path, monkeypatch):
    emb = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    p = tmp_path / "umap.pkl"
    write_umap(p, emb)
    with open(p, "rb") as f:  # cryoDRGN's format: one pickled array
        np.testing.assert_array_equal(pickle.load(f), emb)
    np.testing.assert_array_equal(read_umap(p, 40), emb)
    assert read_umap(p, 41) is None and read_umap(tmp_path / "none.pkl") is None

    def boom(*a, **k):
        raise AssertionError("UMAP recomputed despite a cache")

    monkeypatch.setattr(embed, "run_umap", boom)
    got, src = cached_umap(np.zeros((40, 4)), [tmp_path / "other.pkl", p])
    assert src == p
    np.testing.assert_array_equal(got, emb)
    monkeypatch.setattr(embed, "run_umap", lambda z, seed=None: np.ones((len(z), 2), np.float32))
    out = tmp_path / "sub" / "u.pkl"
    got, src = cached_umap(np.zeros((41, 4)), [p], write_to=out)
    assert src is None and read_umap(out, 41) is not None


def test_figures_are_png(tmp_path):
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(500, 2))
    paths = [
        figures.scatter_plot(tmp_path / "a.png", xy, "x", "y", colour=xy[:, 0]),
        figures.density_plot(tmp_path / "b.png", xy, "x", "y"),
        figures.path_plot(tmp_path / "c.png", xy, xy[:10], "x", "y"),
        figures.learning_curve_plot(tmp_path / "d.png", {1: 0.9, 2: 0.8}, 2),
        figures.learning_curve_plot(tmp_path / "e.png", {}, None),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
