"""Session: the Qt-free model the explorer docks share."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.model.load import load_run
from napari_cryodrgn.session import Session
from napari_cryodrgn.training.checkpoint import load_z


@pytest.fixture(scope="module")
def trained(train_tiny):
    return train_tiny("session_run", zdim=3, seed=4)


@pytest.fixture
def run(trained, tmp_path):
    """A private copy (the session writes its state into the run folder)."""
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


def _record(s, *names):
    """(signal name, args) of the Session's signals ``names`` ("selection" and "paths" are the
    selection's and the paths' own), in the order they fired."""
    got = []
    for n in names:
        if n == "selection":
            s.selection.changed.connect(lambda *a: got.append(("selection", a)))
        elif n == "paths":
            s.paths.events.added.connect(lambda k, v: got.append(("added", k)))
            s.paths.events.changed.connect(lambda k, old, new: got.append(("changed", k)))
            s.paths.events.removed.connect(lambda k, v: got.append(("removed", k)))
        else:
            getattr(s.events, n).connect(lambda *a, n=n: got.append((n, a)))
    return got


def test_open_facts_and_errors(run, tmp_path):
    s = Session.open(run)
    z, _ = load_z(run / "z.2.pkl")
    assert s.epoch == 2 and s.epochs == [1, 2] and (s.n, s.zdim, s.D) == (120, 3, 16)
    np.testing.assert_array_equal(s.z, z)
    assert s.apix == pytest.approx(3.0) and s.z.dtype == np.float32
    assert Session.open(run, epoch=1).epoch == 1
    with pytest.raises(InputError, match=r"no z\.5\.pkl"):
        Session.open(run, epoch=5)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.yaml", bare)
    with pytest.raises(InputError, match="no latent files"):
        Session.open(bare)
    with pytest.raises(InputError, match="config.yaml"):
        Session.open(tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model_args"]["qdim"] = 64
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match="do not match config.yaml"):
        Session.open(run)


def test_embeddings_inverse_and_picking(run):
    s = Session.open(run)
    pca = s.embedding("pca")
    assert pca.shape == (120, 2) and pca.dtype == np.float32
    assert s.embedding("pca") is pca  # cached
    z, ind = s.latent_at("pca", (0.3, -0.2))
    assert ind is None
    np.testing.assert_allclose(s.pca.transform(z[None])[0], [0.3, -0.2, 0.0], atol=1e-5)
    z, ind = s.latent_at("pca:1,2", (0.1, 0.05))
    np.testing.assert_allclose(s.pca.transform(z[None])[0], [0.0, 0.1, 0.05], atol=1e-5)
    zz = s.embedding("z:2,0")
    np.testing.assert_array_equal(zz, s.z[:, [2, 0]])
    q = np.array([0.1, 0.2])
    i = s.nearest("z:2,0", q)
    assert i == int(np.argmin(((zz - q) ** 2).sum(1)))
    z, ind = s.latent_at("z:2,0", q)
    assert ind == i and np.array_equal(z, s.z[i])
    z, ind = s.latent_at("pca", pca[7], snap=True)
    assert ind == 7
    np.testing.assert_allclose(s.project(s.z[:5], "pca"), pca[:5], atol=1e-5)
    assert s.axis_labels("pca")[0].startswith("PC1 (")
    with pytest.raises(InputError, match="view"):
        s.embedding("z:0,3")
    with pytest.raises(InputError, match="unknown view"):
        s.space = "tsne"


def test_colourings(run, tiny_dataset):
    s = Session.open(run)
    names = s.colouring_names()
    assert names[:2] == ["density", "kmeans"] and {"z0", "z2", "defocus", "tilt"} <= set(names)
    assert "loss" in names
    cols = s.colourings()
    ctf = load_ctf(tiny_dataset["ctf"])
    np.testing.assert_allclose(cols["defocus"], ctf[:, 2:4].mean(1), rtol=1e-5)
    np.testing.assert_array_equal(cols["z1"], s.z[:, 1])
    dens = cols["density"]
    assert dens.shape == (120,) and np.all(dens > 0)
    for name in ("rot", "tilt", "psi"):
        assert cols[name].shape == (120,) and np.all(np.abs(cols[name]) <= 180)
    labels, centers_ind = s.kmeans(5)
    assert labels.shape == (120,) and centers_ind.shape == (5,)
    assert s.kmeans(5)[0] is labels  # cached
    s.k = 5
    np.testing.assert_array_equal(s.colouring("kmeans"), labels)
    got = _record(s, "colour_by")
    s.colour_by = "tilt"
    assert got[-1] == ("colour_by", ("tilt",))


def test_selection_modes_undo_invert_and_persistence(run):
    s = Session.open(run)
    got = _record(s, "selection")
    assert s.n_selected == 0 and not s.can_undo
    s.select([1, 2, 3])
    s.select(np.arange(2, 10), mode="add")
    assert s.selected_indices().tolist() == list(range(1, 10))
    s.select([5, 6], mode="subtract")
    assert s.selected_indices().tolist() == [1, 2, 3, 4, 7, 8, 9]
    s.select(np.arange(0, 4), mode="intersect")
    assert s.selected_indices().tolist() == [1, 2, 3]
    assert s.invert() == 117 and not s.selection.mask[1] and s.selection.mask[0]
    assert s.undo() and s.selected_indices().tolist() == [1, 2, 3]
    assert s.undo() and s.selected_indices().tolist() == [1, 2, 3, 4, 7, 8, 9]
    assert [a[1] for _, a in got] == ["replace", "add", "subtract", "intersect", "invert",
                                      "undo", "undo"]
    assert got[-1][1][0] == 7
    s.select([1, 2, 3, 4, 7, 8, 9])  # no change: no signal
    assert len(got) == 7
    with pytest.raises(ValueError):
        s.selection.mask[0] = True  # read-only view
    xy = s.embedding("pca")
    poly = np.array([[0, -10], [10, -10], [10, 10], [0, 10]], float)
    assert s.select_polygon("pca", poly) == int((xy[:, 0] > 0).sum())
    s.select_rect("pca", (-10, -10), (0, 10), mode="add")
    assert s.n_selected == 120
    s.clear()
    s.select_clusters([0, 2], k=4)
    lab = s.kmeans(4)[0]
    np.testing.assert_array_equal(s.selection.mask, np.isin(lab, [0, 2]))
    # saved on every change and restored on reopening
    again = Session.open(run)
    np.testing.assert_array_equal(again.selection.mask, s.selection.mask)
    # cryoDRGN index pickles
    p, inv = s.save_selection(run / "sel.pkl")
    a, b = load_pickle(p), load_pickle(inv)
    assert a.dtype == np.int64 and np.array_equal(np.sort(np.r_[a, b]), np.arange(120))
    np.testing.assert_array_equal(a, s.selected_indices(original=True))
    # a selection file of another size is ignored
    np.save(s.selection.file, np.ones(7, bool))
    assert Session.open(run).n_selected == 0


def test_paths_and_events(run):
    s = Session.open(run)
    got = _record(s, "paths", "space")
    p = s.pc_traversal(2, n=6)
    assert p.z.shape == (6, 3) and p.indices is None and "pc2" in s.paths
    t = s.pca.transform(p.z)
    np.testing.assert_allclose(t[:, [0, 2]], 0, atol=1e-5)
    assert s.path_xy("pc2", "pca").shape == (6, 2)
    k = s.kmeans_path(4)
    assert k.name == "kmeans4" and np.array_equal(k.z, s.z[k.indices])
    g = s.neighbour_graph()
    a = 0
    from scipy.sparse.csgraph import dijkstra

    reach = np.flatnonzero(np.isfinite(dijkstra(g, directed=False, indices=a)))
    b = int(reach[-1]) if reach[-1] != a else int(reach[0])
    gp = s.graph_path(a, b)
    assert gp.indices[0] == a and gp.indices[-1] == b and gp.name == f"graph {a}-{b}"
    line = s.straight_path(3, s.z[9], n=4, add=False)
    np.testing.assert_allclose(line.z[[0, -1]], s.z[[3, 9]], atol=1e-6)
    assert "line" not in s.paths
    xy = np.array([[-0.5, 0.0], [0.5, 0.0], [0.5, 0.3]])
    poly = s.polyline_path("pca", xy, n=9)
    verts = s.pca.inverse(xy)
    np.testing.assert_allclose(poly.z[[0, -1]], verts[[0, -1]], atol=1e-5)
    # the PCA inverse is an isometry: arc length 1.3 in 8 equal steps (a chord at the corner)
    steps = np.linalg.norm(np.diff(poly.z, axis=0), axis=1)
    assert np.isclose(steps, 1.3 / 8, rtol=1e-4).sum() == 7 and steps.max() < 1.3 / 8 + 1e-5
    s.remove_path("pc2")
    s.pc_traversal(1, n=3)
    s.pc_traversal(1, n=4)  # the same name again: changed
    assert got == [("added", "pc2"), ("added", "kmeans4"), ("added", gp.name),
                   ("added", "polyline"), ("removed", "pc2"), ("added", "pc1"),
                   ("changed", "pc1")]
    s.space = "z:0,1"
    s.space = "z:0,1"  # no change: no signal
    assert got[-1] == ("space", ("z:0,1",)) and got.count(("space", ("z:0,1",))) == 1
    s.clear_paths()
    assert dict(s.paths) == {} and got[-1][0] == "removed"
    with s.events.space.blocked():
        s.space = "pca"
    assert got[-1][0] == "removed"


def test_signals_fire_only_on_change(run):
    s = Session.open(run)
    got = _record(s, "colour_by", "k", "epoch", "space")
    s.colour_by = "z1"
    s.colour_by = "z1"
    s.k = 7
    s.k = 7
    s.set_epoch(2)  # already epoch 2
    s.space = "pca"  # already pca
    assert got == [("colour_by", ("z1",)), ("k", (7,))]


def test_set_epoch_keeps_selection_and_clears_paths(run):
    s = Session.open(run)
    s.select([4, 5])
    s.pc_traversal(1)
    got = _record(s, "epoch", "paths", "space")
    before = s.embedding("pca")
    s.set_epoch(1)
    z1, _ = load_z(run / "z.1.pkl")
    np.testing.assert_array_equal(s.z, z1)
    assert dict(s.paths) == {} and s.selected_indices().tolist() == [4, 5]
    assert got == [("removed", "pc1"), ("epoch", (1,))]
    assert not np.array_equal(s.embedding("pca"), before)


def test_decode_matches_the_run_decoder(run):
    s = Session.open(run)
    vol = s.decode(s.z[3], precision="fp32")
    ref = load_run(run, 2).volume_decoder("fp32")(s.z[3])
    assert vol.shape == (16, 16, 16) and vol.dtype == np.float32
    np.testing.assert_allclose(vol, ref, rtol=1e-5, atol=1e-6)
    assert s.decoder("fp32") is s.decoder("fp32")
    with pytest.raises(InputError, match="3 latent values"):
        s.decode([0.0, 1.0])


def test_umap_reads_an_existing_analysis_without_recomputing(run, monkeypatch):
    from napari_cryodrgn.analysis import embed
    from napari_cryodrgn.analysis.embed import write_umap

    emb = np.random.default_rng(0).normal(size=(120, 2)).astype(np.float32)
    assert not Session.open(run).umap_ready()
    (run / "analyze.2").mkdir()
    write_umap(run / "analyze.2" / "umap.pkl", emb)  # as cryoDRGN's analyze leaves it
    monkeypatch.setattr(embed, "run_umap", lambda *a, **k: pytest.fail("UMAP recomputed"))
    s = Session.open(run)
    assert s.umap_ready()
    assert "umap" in s.spaces()
    np.testing.assert_array_equal(s.embedding("umap"), emb)
    i = s.nearest("umap", emb[17])
    z, ind = s.latent_at("umap", emb[17])
    assert i == ind == 17 and np.array_equal(z, s.z[17])
    np.testing.assert_array_equal(s.project(s.z[[3, 4]], "umap"), emb[[3, 4]])


def test_session_core_is_qt_free():
    code = ("import sys\nimport napari_cryodrgn.session\nimport napari_cryodrgn.analysis.analyze\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy', 'pyqtgraph')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
