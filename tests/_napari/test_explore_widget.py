"""The Explore dock in a real viewer, driven by real Qt mouse events on the scatter."""

import shutil
import threading
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import yaml
from qtpy.QtCore import Qt

from napari_cryodrgn._napari.explore_widget import MAP_LAYER
from napari_cryodrgn._napari.map_view import is_surface
from napari_cryodrgn.session import Session

PLUGIN = "napari-cryodrgn"
LEFT = Qt.MouseButton.LeftButton


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the tiny run: the explorer writes its state into the run folder."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


@pytest.fixture
def explore(viewer, qtbot, run_copy):
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Explore")
    qtbot.waitUntil(lambda: w.scatter.plot.viewport().isVisible(), timeout=10_000)
    assert w.open_run(run_copy) is not None
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)  # the view is computed in a worker
    qtbot.wait(50)  # let the layout settle before mapping data to pixels
    return w


def _click(qtbot, w, xy, tol=0.01):
    """A real click at data position ``xy``; asserts it landed there (within ``tol`` of the
    view's extent) and returns where it landed."""
    pos = w.scatter.widget_pos(*xy)
    qtbot.mouseClick(w.scatter.plot.viewport(), LEFT, pos=pos)
    landed = np.asarray(w.scatter.data_pos(pos))
    extent = np.ptp(w.scatter.xy, axis=0)
    assert np.all(np.abs(landed - np.asarray(xy)) <= tol * extent), (landed, xy)
    return landed


def _assert_surface_of(layer, vol, level):
    """The layer's mesh lies where ``vol`` crosses ``level`` (trilinear samples at its
    vertices), inside the box."""
    from scipy.ndimage import map_coordinates

    verts, faces = layer.data[0], layer.data[1]
    assert len(faces) > 100 and verts.min() >= 0 and verts.max() <= vol.shape[0] - 1
    off = np.abs(map_coordinates(vol, verts.T, order=1, mode="nearest") - level) / np.ptp(vol)
    # vertices lie on voxel edges (exact); Lewiner's marching cubes adds a few inside cubes,
    # where trilinear sampling departs from the level by up to a few percent of the range
    q99 = np.quantile(off, 0.99)
    assert np.median(off) < 1e-5 and q99 < 0.01 and off.max() < 0.05, (np.median(off), q99,
                                                                        off.max())


def test_click_shows_the_decoders_map_at_that_point(viewer, qtbot, explore):
    w, s = explore, explore.session
    target = s.embedding("pca")[7]
    xy = _click(qtbot, w, target)
    qtbot.waitUntil(lambda: MAP_LAYER in viewer.layers and w.map_request_done, timeout=30_000)
    z, _ = s.latent_at("pca", xy)
    layer = viewer.layers[MAP_LAYER]
    vol = w.shown_volume()
    np.testing.assert_allclose(vol, s.decode(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.scale, [s.apix] * 3)
    qtbot.waitUntil(lambda: viewer.dims.ndisplay == 3, timeout=5_000)
    assert is_surface(layer)  # the map's iso-surface
    level = layer.metadata["iso_level"]
    assert vol.min() < level < vol.max() and level == pytest.approx(w.level.value(), rel=1e-4)
    _assert_surface_of(layer, vol, level)
    # a second click updates the same layer in place
    other = _click(qtbot, w, s.embedding("pca")[40])
    qtbot.waitUntil(lambda: w.map_request_done, timeout=30_000)
    assert [ly.name for ly in viewer.layers].count(MAP_LAYER) == 1
    z2, _ = s.latent_at("pca", other)
    np.testing.assert_allclose(w.shown_volume(), s.decode(z2), rtol=1e-5, atol=1e-6)
    _assert_surface_of(viewer.layers[MAP_LAYER], w.shown_volume(),
                       viewer.layers[MAP_LAYER].metadata["iso_level"])


def test_iso_level_and_display_mode(viewer, qtbot, explore, tmp_path):
    w, s = explore, explore.session
    _click(qtbot, w, s.embedding("pca")[7])
    qtbot.waitUntil(lambda: MAP_LAYER in viewer.layers and w.map_request_done, timeout=30_000)
    vol = w.shown_volume()
    auto = viewer.layers[MAP_LAYER].metadata["iso_level"]
    faces = len(viewer.layers[MAP_LAYER].data[1])
    new = float(vol.mean() + 0.5 * (auto - vol.mean()))  # lower: a larger surface
    w.level.setValue(new)  # the user's level: no longer each map's own
    assert not w.auto_threshold.isChecked()
    qtbot.waitUntil(lambda: w.map_request_done and viewer.layers[MAP_LAYER].metadata[
        "iso_level"] == pytest.approx(new, rel=1e-4), timeout=30_000)
    _assert_surface_of(viewer.layers[MAP_LAYER], vol, new)
    assert len(viewer.layers[MAP_LAYER].data[1]) != faces
    _click(qtbot, w, s.embedding("pca")[40])  # the next map keeps the user's level
    qtbot.waitUntil(lambda: w.map_request_done and not np.array_equal(w.shown_volume(), vol),
                    timeout=30_000)
    assert viewer.layers[MAP_LAYER].metadata["iso_level"] == pytest.approx(new, rel=1e-4)
    vol = w.shown_volume()
    w.show_as.setCurrentIndex(w.show_as.findData("volume"))  # napari's ray-cast iso volume
    qtbot.waitUntil(lambda: w.map_request_done and not is_surface(viewer.layers[MAP_LAYER]),
                    timeout=30_000)
    layer = viewer.layers[MAP_LAYER]
    assert layer.rendering == "iso" and layer.iso_threshold == pytest.approx(new, rel=1e-4)
    np.testing.assert_array_equal(layer.data, vol)
    assert [ly.name for ly in viewer.layers] == [MAP_LAYER]
    w.auto_threshold.setChecked(True)  # back to the map's own level
    qtbot.waitUntil(lambda: w.map_request_done, timeout=30_000)
    from napari_cryodrgn.analysis.export import iso_level

    assert viewer.layers[MAP_LAYER].iso_threshold == pytest.approx(iso_level(vol), rel=1e-4)
    w.show_as.setCurrentIndex(w.show_as.findData("surface"))
    qtbot.waitUntil(lambda: w.map_request_done and is_surface(viewer.layers[MAP_LAYER]),
                    timeout=30_000)
    # File > Save Selected Layers on the surface writes the map it shows, voxel size and all
    out = tmp_path / "picked.mrc"
    viewer.layers[MAP_LAYER].save(str(out), plugin=PLUGIN)
    with mrcfile.open(out) as m:
        np.testing.assert_array_equal(m.data, vol)
        assert m.voxel_size.x == pytest.approx(s.apix, rel=1e-5)


def test_axes_offer_pcs_umap_and_z_dims(viewer, qtbot, explore, train_tiny):
    w = explore
    s = w.open_run(train_tiny("explore_z3", zdim=3))
    views = [w.view.itemData(i) for i in range(w.view.count())]
    assert views[:3] == ["pca", "pca:0,2", "pca:1,2"] and "umap" in views
    assert {"z:0,1", "z:0,2", "z:1,2"} <= set(views)
    w.view.setCurrentIndex(views.index("z:1,2"))
    assert s.space == "z:1,2"
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    np.testing.assert_array_equal(w.scatter.xy, s.z[:, [1, 2]])
    assert w.scatter.plot.getPlotItem().getAxis("bottom").labelText == s.axis_labels()[0]


def test_rapid_clicks_coalesce_latest_wins(viewer, qtbot, explore):
    w, s = explore, explore.session
    decoded = []
    real = s.decode
    s.decode = lambda z: (decoded.append(z), real(z))[1]
    emb = s.embedding("pca")
    landed = [_click(qtbot, w, emb[i]) for i in range(12)]  # real clicks, no waiting
    qtbot.waitUntil(lambda: w.map_request_done, timeout=30_000)
    assert len(decoded) < 12  # intermediate requests were dropped
    last, _ = s.latent_at("pca", landed[-1])
    np.testing.assert_array_equal(decoded[-1], last)
    np.testing.assert_allclose(w.shown_volume(), real(last), rtol=1e-5, atol=1e-6)


def test_drawn_path_gives_a_series_that_plays_and_exports(viewer, qtbot, explore, tmp_path, notes,
                                                    monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    w, s = explore, explore.session
    w.tool_buttons["path"].click()
    w.n_frames.setValue(6)
    emb = s.embedding("pca")
    lo, hi = np.percentile(emb, [10, 90], axis=0)
    _click(qtbot, w, lo)
    _click(qtbot, w, (lo[0], hi[1]))
    qtbot.wait(400)  # not a double click
    _click(qtbot, w, hi)
    assert len(w.scatter._vertices) == 3
    qtbot.mouseClick(w.finish_btn, LEFT)
    name = "drawn path"
    qtbot.waitUntil(lambda: name in w.series and w.map_request_done, timeout=60_000)
    sm = w.series[name]
    assert sm.vols.shape == (6, s.D, s.D, s.D)
    z = s.paths["drawn path"].z
    np.testing.assert_allclose(sm.vols[-1], s.decode(z[-1]), rtol=1e-5, atol=1e-6)
    # its maps play in the one map layer: no layer per series, one map drawn per frame
    assert [ly.name for ly in viewer.layers] == [MAP_LAYER]
    np.testing.assert_array_equal(w.shown_volume(), sm.vols[0])
    assert w.player.n == 6 and [b.text() for b in w.player.thumbs][:2] == ["map 1", "map 2"]
    qtbot.mouseClick(w.player.thumbs[4], LEFT)  # a thumbnail of the grid
    qtbot.waitUntil(lambda: w.map_request_done, timeout=30_000)
    np.testing.assert_array_equal(w.shown_volume(), sm.vols[4])
    md = viewer.layers[MAP_LAYER].metadata
    assert md["frame"] == 4 and md["series"] == name and md["epoch"] == s.epoch
    assert f"epoch {s.epoch}" in w.player.caption.text() and "5 of 6" in w.player.caption.text()
    assert md["iso_level"] == pytest.approx(sm.level)  # one level for the whole series
    shown = []
    viewer.layers[MAP_LAYER].events.data.connect(lambda e: shown.append(w.player.frame))
    qtbot.mouseClick(w.player.play_btn, LEFT)
    qtbot.waitUntil(lambda: len(set(shown)) >= 3, timeout=30_000)
    qtbot.mouseClick(w.player.play_btn, LEFT)  # pause
    assert not w.player.playing and shown[:2] == [5, 0]  # it went round
    assert [ly.name for ly in viewer.layers] == [MAP_LAYER]
    qtbot.mouseClick(w.player.play_btn, LEFT)
    assert w.player.playing
    w.request_map(s.z[3], "a pick", particle=3)  # a pick stops the playing series
    assert not w.player.playing
    qtbot.waitUntil(lambda: w.map_request_done, timeout=30_000)
    assert viewer.layers[MAP_LAYER].metadata["particle"] == 3
    np.testing.assert_allclose(w.shown_volume(), s.decode(s.z[3]), rtol=1e-5, atol=1e-6)
    out = tmp_path / "series"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
    w.series_box.setCurrentText("drawn path")
    qtbot.mouseClick(w.export_btn, LEFT)  # the real button, its dialog answered
    qtbot.waitUntil(lambda: w.idle and (out / "open_series.cxc").exists(), timeout=60_000)
    paths = sorted(out.glob("vol_*.mrc"))
    assert [p.name for p in paths] == [f"vol_{i:03d}.mrc" for i in range(1, 7)]
    for p, vol in zip(paths, sm.vols, strict=True):
        with mrcfile.open(p) as m:
            assert m.voxel_size.x == pytest.approx(s.apix, rel=1e-5)
            np.testing.assert_array_equal(m.data, vol)
    np.testing.assert_allclose(np.loadtxt(out / "z_values.txt"), z, rtol=1e-6)
    cxc = (out / "open_series.cxc").read_text()
    assert "vol_001.mrc" in cxc and "vseries true" in cxc
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    qtbot.mouseClick(w.export_btn, LEFT)  # a non-empty folder is never overwritten
    qtbot.waitUntil(lambda: w.idle and notes and "not empty" in notes[-1][1], timeout=30_000)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # Escape forgets a path being drawn; Enter in the plot finishes one
    _click(qtbot, w, lo)
    qtbot.keyClick(w.scatter.plot, Qt.Key.Key_Escape)
    assert w.scatter._vertices == []
    finished = []
    w.scatter.pathFinished.connect(lambda v: finished.append(v))
    qtbot.wait(400)  # not a double click
    _click(qtbot, w, lo)
    qtbot.wait(400)
    _click(qtbot, w, hi)
    qtbot.keyClick(w.scatter.plot, Qt.Key.Key_Return)
    assert len(finished) == 1 and len(finished[0]) == 2
    # the second path's series replaces the first
    qtbot.waitUntil(lambda: w.idle and name in w.series and len(w.series[name].z) == len(
        s.paths[name].z) and np.allclose(w.series[name].z, s.paths[name].z), timeout=60_000)
    assert w.series_box.count() == 1 and [ly.name for ly in viewer.layers] == [MAP_LAYER]


def test_traversal_buttons_make_series(viewer, qtbot, explore):
    w, s = explore, explore.session
    w.n_frames.setValue(5)
    w.pc_btn.click()
    qtbot.waitUntil(lambda: "pc1" in w.series, timeout=60_000)
    assert w.series["pc1"].vols.shape[0] == 5
    w.k.setValue(4)
    w.kmeans_btn.click()
    qtbot.waitUntil(lambda: "kmeans4" in w.series, timeout=60_000)
    # the grid of k-means centre maps, numbered as the legend and select --kmeans-labels
    assert w.series["kmeans4"].vols.shape[0] == 4 and w.series_box.currentText() == "kmeans4"
    assert [b.text() for b in w.player.thumbs] == [f"cluster {i}" for i in range(4)]
    assert all(not b.icon().isNull() for b in w.player.thumbs)
    centres = s.paths["kmeans4"].z
    qtbot.mouseClick(w.player.thumbs[2], LEFT)
    qtbot.waitUntil(lambda: w.map_request_done, timeout=30_000)
    np.testing.assert_allclose(viewer.layers[MAP_LAYER].metadata["z"], centres[2], rtol=1e-6)
    # graph path between two picked particles of the neighbour graph's main part
    from napari_cryodrgn.analysis.traverse import largest_component

    main = largest_component(s.neighbour_graph())
    emb = s.embedding("pca")
    a, b = main[np.argmin(emb[main, 0])], main[np.argmax(emb[main, 0])]
    w.picks = []
    _click(qtbot, w, emb[a])
    _click(qtbot, w, emb[b])
    qtbot.waitUntil(lambda: w.map_request_done, timeout=30_000)
    w.graph_btn.click()
    qtbot.waitUntil(lambda: any(n.startswith("graph") for n in s.paths), timeout=60_000)
    (name,) = [n for n in s.paths if n.startswith("graph")]
    qtbot.waitUntil(lambda: name in w.series, timeout=60_000)
    p = s.paths[name]
    assert w.picks == [a, b] and p.indices[0] == a and p.indices[-1] == b


def test_loss_colouring_is_computed_in_a_worker(viewer, qtbot, explore):
    w, s = explore, explore.session
    assert "loss" in [w.colour.itemText(i) for i in range(w.colour.count())]
    w.colour.setCurrentText("loss")
    qtbot.waitUntil(lambda: s.colour_by == "loss", timeout=60_000)
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    assert s.loss_ready()
    assert np.isfinite(s.colouring("loss")).all() and len(w.scatter._layers) > 1


def test_bad_runs_are_notified(viewer, explore, run_copy, tmp_path, notes):
    tiny_run = run_copy
    w = explore
    assert w.open_run(tiny_run, epoch=99) is None
    assert "99" in notes[-1][1]
    no_z = tmp_path / "no_z"
    no_z.mkdir()
    for f in ("config.yaml", "weights.2.pkl"):
        shutil.copy(tiny_run / f, no_z / f)
    assert w.open_run(no_z) is None and "z" in notes[-1][1]
    bad = tmp_path / "bad_cfg"
    shutil.copytree(tiny_run, bad)
    cfg = yaml.safe_load((bad / "config.yaml").read_text())
    cfg["model_args"]["qdim"] = 48
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert w.open_run(bad) is None and "do not match" in notes[-1][1]
    assert all(s == "error" for s, _ in notes[-3:])
    assert w.session is not None and w.session.workdir == tiny_run  # still on the good run


def test_toy_model_iso_surface_screenshot(viewer, qtbot, artifacts):
    viewer.open_sample(PLUGIN, "trained_toy_model")
    qtbot.waitUntil(lambda: any("Explore" in k for k in viewer.window.dock_widgets),
                    timeout=10_000)
    explore = next(d for k, d in viewer.window.dock_widgets.items() if "Explore" in k)
    qtbot.waitUntil(lambda: explore.session is not None, timeout=30_000)
    assert explore.session.workdir.name == "toy_model" and explore.session.n == 4000
    layer = viewer.layers[MAP_LAYER]
    assert is_surface(layer)
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    img = viewer.screenshot(str(artifacts / "toy_model_iso.png"), canvas_only=True)
    lit = (img[..., :3].max(axis=-1) > 60).mean()
    assert 0.005 < lit < 0.9, lit


def test_rotating_movie_of_the_map_and_a_series(viewer, qtbot, explore, tmp_path, notes,
                                                 monkeypatch):
    import imageio.v2 as imageio
    from qtpy.QtWidgets import QFileDialog

    w, s = explore, explore.session
    assert w.record_movie(tmp_path / "m.gif") is None  # no map yet
    w.request_map(s.z[0])
    qtbot.waitUntil(lambda: w.map_request_done and MAP_LAYER in viewer.layers, timeout=30_000)
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(tmp_path / "m.gif"), ""))
    qtbot.mouseClick(w.movie_btn, LEFT)  # the real button, its dialog answered
    rec = w._movie
    qtbot.waitUntil(lambda: rec.done and (tmp_path / "m.gif").exists(), timeout=60_000)
    frames = imageio.mimread(tmp_path / "m.gif")
    assert len(frames) == 36 and frames[0].shape[-1] == 3
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).mean() > 0  # it turned
    assert w.record_movie(tmp_path / "m.gif") is None and "exists" in notes[-1][1]
    w.n_frames.setValue(4)
    w.pc_btn.click()
    qtbot.waitUntil(lambda: "pc1" in w.series, timeout=60_000)
    rec = w.record_movie(tmp_path / "pc1.gif", series="pc1", frames=2)
    qtbot.waitUntil(lambda: rec.done and (tmp_path / "pc1.gif").exists(), timeout=60_000)
    assert len(imageio.mimread(tmp_path / "pc1.gif")) == 4  # at least one frame per map


def test_the_dock_follows_the_session_changed_from_python(viewer, qtbot, explore):
    # a notebook user changes the Session; the dock's scatter, combos, counts and layers follow
    w, s = explore, explore.session
    s.space = "z:0,1"
    assert w.view.currentData() == "z:0,1"
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    np.testing.assert_array_equal(w.scatter.xy, s.z[:, [0, 1]])
    s.colour_by = "z1"
    assert w.colour.currentData() == "z1"
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    s.select(np.arange(30))
    assert "selected 30 of" in w.selection_panel.count.text() and "selected 30" in w.info.text()
    s.k = 5
    assert w.k.value() == 5
    p = s.pc_traversal(1, n=4)
    qtbot.waitUntil(lambda: "pc1" in w.series and w.idle, timeout=60_000)
    assert w.series["pc1"].vols.shape[0] == 4
    np.testing.assert_allclose(w.series["pc1"].z, p.z)
    np.testing.assert_allclose(viewer.layers[MAP_LAYER].metadata["z"], p.z[0], rtol=1e-6)
    assert w.scatter.path_names == ["pc1"]
    s.set_epoch(1)  # paths are cleared with the old latent space, and their series go
    assert w.epoch.currentData() == 1
    assert "pc1" not in w.series and w.series_box.count() == 0 and w.player.n == 0
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    np.testing.assert_array_equal(w.scatter.xy, s.z[:, [0, 1]])
    # a change made in another thread reaches the dock in the GUI thread
    t = threading.Thread(target=s.select, args=(np.arange(7),))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: "selected 7 of" in w.selection_panel.count.text(), timeout=5_000)


def test_slow_work_runs_in_workers(viewer, qtbot, explore, monkeypatch, tmp_path):
    # epoch switch, k-means series, series decoding and export never run on the GUI thread
    w, s = explore, explore.session
    threads = {}

    def spy(name, fn):
        def wrapped(*a, **k):
            threads.setdefault(name, set()).add(threading.current_thread())
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(s, "set_epoch", spy("epoch", s.set_epoch))
    monkeypatch.setattr(s, "kmeans_path", spy("kmeans", s.kmeans_path))
    monkeypatch.setattr(s, "decode", spy("decode", s.decode))
    import napari_cryodrgn._napari.explore_widget as ew

    monkeypatch.setattr(ew, "iso_surface", spy("surface", ew.iso_surface))
    w.epoch.setCurrentIndex(w.epoch.findData(1))
    w.epoch.activated.emit(w.epoch.currentIndex())
    qtbot.waitUntil(lambda: w.idle and s.epoch == 1, timeout=30_000)
    w.k.setValue(3)
    qtbot.mouseClick(w.kmeans_btn, LEFT)
    qtbot.waitUntil(lambda: w.idle and "kmeans3" in w.series, timeout=60_000)
    monkeypatch.setattr(ew, "export_series", spy("export", ew.export_series))
    out = tmp_path / "k3"
    assert w.export("kmeans3", out) is not None
    qtbot.waitUntil(lambda: w.idle and (out / "z_values.txt").exists(), timeout=60_000)
    main = threading.main_thread()
    assert set(threads) == {"epoch", "kmeans", "decode", "surface", "export"}
    assert all(main not in ts for ts in threads.values()), threads


def test_a_second_session_on_the_same_dock_drops_the_first(viewer, qtbot, explore, run_copy):
    w = explore
    first = w.session
    second = Session.open(run_copy)
    w.set_session(second)
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    first.select(np.arange(3))  # the old session no longer drives the dock
    assert "selected 3 of" not in w.selection_panel.count.text()
    second.select(np.arange(4))
    assert "selected 4 of" in w.selection_panel.count.text()


def test_nothing_stale_after_a_change_of_view_or_epoch(viewer, qtbot, explore):
    w, s = explore, explore.session
    panel = w.selection_panel
    emb = s.embedding("pca")
    landed = _click(qtbot, w, emb[7])
    qtbot.waitUntil(lambda: MAP_LAYER in viewer.layers and w.map_request_done, timeout=30_000)
    md = viewer.layers[MAP_LAYER].metadata
    assert md["epoch"] == s.epoch and w.picks[-1] == s.nearest("pca", landed)

    def marker():
        x, y = w.scatter.marker.getData()
        return None if not len(x) else np.array([x[0], y[0]])

    np.testing.assert_allclose(marker(), landed, rtol=1e-4, atol=1e-5)
    s.space = "z:0,1"  # the marker moves to the map's latent point in the new view
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    np.testing.assert_allclose(marker(), np.asarray(md["z"])[[0, 1]], rtol=1e-5, atol=1e-6)
    picked = w.picks[-1]
    # a gallery of the selection, then the selection changes: the old pairs go
    s.select(np.arange(20))
    panel.n_gallery.setValue(8)
    qtbot.mouseClick(panel.gallery_btn, LEFT)
    qtbot.waitUntil(lambda: panel.gallery_ready, timeout=60_000)
    assert "8 of 20" in panel.gallery.caption.text()
    thumbs = panel.gallery.thumbnails
    assert all(t.label.text() == f"particle {t.index}" for t in thumbs)  # labelled
    qtbot.wait(50)
    rows_in_view = panel.gallery.inner.parentWidget().height() / thumbs[0].height()
    assert rows_in_view >= 4, rows_in_view  # 4 rows of pairs without scrolling
    s.select(np.arange(50))
    assert not panel.gallery.thumbnails and "selection changed" in panel.gallery.caption.text()
    # another epoch: the map is the same particle's, decoded by that epoch's model
    s.set_epoch(1)
    qtbot.waitUntil(lambda: w.idle and viewer.layers[MAP_LAYER].metadata["epoch"] == 1,
                    timeout=30_000)
    md = viewer.layers[MAP_LAYER].metadata  # the picked particle, by the new model
    assert md["particle"] == picked
    np.testing.assert_allclose(md["z"], s.z[picked], rtol=1e-6)
    np.testing.assert_allclose(w.shown_volume(), s.decode(s.z[picked]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(marker(), s.z[picked, [0, 1]], rtol=1e-5, atol=1e-6)


def test_the_dock_fits_a_1080p_screen(viewer, qtbot, explore):
    # sections collapse and the dock scrolls instead of forcing the window taller
    w = explore
    assert w.minimumSizeHint().height() < 1000
    assert viewer.window._qt_window.minimumSizeHint().height() < 1000
    # nor wider than a dock beside the canvas (no sideways scrolling; a long hint wraps)
    assert "Select particles first" in w.selection_panel.count.text()
    assert w.scroll.widget().minimumSizeHint().width() < 480
    assert w.scatter.plot.height() >= 300  # the scatter keeps a usable size inside
    w.series_section.collapse(animate=False)
    w.selection_section.collapse(animate=False)
    qtbot.wait(50)
    assert not w.selection_section.isExpanded() and w.selection_panel.visibleRegion().isEmpty()
    assert w.minimumSizeHint().height() < 1000


def test_dropped_values_file_colours_the_scatter(viewer, qtbot, explore, tmp_path, notes):
    from qtpy.QtCore import QMimeData, QPoint, QUrl
    from qtpy.QtGui import QDragEnterEvent, QDropEvent

    w, s = explore, explore.session
    classes = np.arange(s.n) % 3
    np.save(tmp_path / "class.npy", classes)
    np.save(tmp_path / "wrong.npy", np.arange(s.n + 5))

    def drop(path):
        md = QMimeData()
        md.setUrls([QUrl.fromLocalFile(str(path))])
        ev = QDropEvent(QPoint(20, 20).toPointF(), Qt.DropAction.CopyAction, md,
                        Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        enter = QDragEnterEvent(QPoint(20, 20), Qt.DropAction.CopyAction, md,
                                Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        w.dragEnterEvent(enter)  # QTest cannot drag; the handlers get Qt's own events
        assert enter.isAccepted()
        w.dropEvent(ev)

    drop(tmp_path / "class.npy")
    assert s.colour_by == "file: class.npy" and w.colour.currentData() == "file: class.npy"
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    np.testing.assert_array_equal(s.colouring("file: class.npy"), classes)
    drop(tmp_path / "wrong.npy")  # one line, and the colouring stays
    assert any("has 125 values but the run has 120" in m for k, m in notes if k == "error")
    assert s.colour_by == "file: class.npy"


def test_legend_for_categories_and_colour_bar_for_values(viewer, qtbot, explore):
    w, s = explore, explore.session
    s.k = 4
    s.colour_by = "kmeans"
    qtbot.waitUntil(lambda: w.idle and w._drawn[2] == "kmeans", timeout=30_000)
    # the cluster numbers that select --kmeans-labels takes, read off the screen
    labels = np.unique(s.kmeans(4)[0])
    assert w.scatter.legend is not None and w.scatter.colour_bar is None
    assert w.scatter.legend_entries == [f"{c:g}" for c in labels]
    s.k = 3  # another k: the k-means colouring is drawn again
    qtbot.waitUntil(lambda: w.idle and len(w.scatter.legend_entries) == 3, timeout=30_000)
    s.colour_by = "z0"
    qtbot.waitUntil(lambda: w.idle and w._drawn[2] == "z0", timeout=30_000)
    assert w.scatter.legend is None and w.scatter.colour_bar is not None
    lo, hi = w.scatter.colour_bar.levels()
    np.testing.assert_allclose((lo, hi), np.percentile(s.z[:, 0], [1, 99]), rtol=1e-4)


def test_learning_curve_and_another_epoch_with_linked_selection(viewer, qtbot, explore):
    from napari_cryodrgn.analysis.runlog import read_losses

    w, s = explore, explore.session
    c = w.convergence
    w.convergence_section.expand(animate=False)
    losses = read_losses(s.workdir / "run.log")
    assert sorted(losses) == [1, 2]
    np.testing.assert_allclose(c.curve.yData, [losses[1], losses[2]])
    assert c.marker.value() == s.epoch == 2
    assert c.other.currentData() == 1
    qtbot.waitUntil(lambda: w.idle and c._shown == (1, s.colour_by), timeout=30_000)
    np.testing.assert_allclose(c.compare.xy, s.epoch_pca(1))
    # a lasso drawn on epoch 1 selects the same particles in epoch 2's scatter (linked)
    xy = c.compare.xy
    box = np.array([[xy[:, 0].min() - 1, xy[:, 1].min() - 1], [np.median(xy[:, 0]),
                    xy[:, 1].min() - 1], [np.median(xy[:, 0]), xy[:, 1].max() + 1],
                    [xy[:, 0].min() - 1, xy[:, 1].max() + 1]])
    c.compare.lassoFinished.emit(box, "replace")
    expect = xy[:, 0] <= np.median(xy[:, 0])
    np.testing.assert_array_equal(s.selection.mask, expect)
    shown_main = w.scatter.selected_item.getData()[0]
    assert len(shown_main) == expect.sum()  # highlighted on the main scatter too
    s.set_epoch(1)  # the marker moves; the other epoch is now 2
    qtbot.waitUntil(lambda: w.idle and c._shown == (2, s.colour_by), timeout=30_000)
    assert c.marker.value() == 1


def test_match_reference_maps_colours_and_shows_the_best_beside_it(viewer, qtbot, explore,
                                                                    tmp_path, notes,
                                                                    monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    from napari_cryodrgn.analysis.match import resample
    from napari_cryodrgn.io.mrc import write_mrc

    w, s = explore, explore.session
    w.k.setValue(4)
    res = s.kmeans_result(4)
    # the centre whose map differs most from the others' (the tiny run's maps are alike)
    maps = np.stack([s.decode(x).ravel() for x in res.centers])
    maps = maps - maps.mean(0)
    c = int(np.argmax(np.linalg.norm(maps, axis=1)))
    fine = resample(s.decode(res.centers[c]), s.apix, 2 * s.D + 6, s.apix / 2)
    write_mrc(tmp_path / "known.mrc", fine, apix=s.apix / 2)  # another grid, as from elsewhere
    monkeypatch.setattr(QFileDialog, "getOpenFileNames",
                        lambda *a, **k: ([str(tmp_path / "known.mrc")], ""))
    qtbot.mouseClick(w.match_btn, LEFT)  # the real button, its dialog answered
    qtbot.waitUntil(lambda: w.idle and s.colour_by == "match: known", timeout=60_000)
    assert w.colour.currentData() == "match: known"
    values = s.colouring("match: known")
    assert values.shape == (s.n,) and int(np.argmax(w.last_match.corr[0])) == c
    np.testing.assert_allclose(values, w.last_match.corr[0][res.labels], rtol=1e-6)
    qtbot.waitUntil(lambda: w._drawn is not None and w._drawn[2] == "match: known",
                    timeout=30_000)
    md = viewer.layers[MAP_LAYER].metadata
    assert md["particle"] == int(res.centers_ind[c]) and f"cluster {c}" in md["where"]
    np.testing.assert_allclose(w.shown_volume(), s.decode(res.centers[c]), rtol=1e-5,
                               atol=1e-6)
    ref = viewer.layers["reference: known"]
    assert is_surface(ref) and ref.translate[2] > s.D * s.apix  # beside the map
    # a reference without a voxel size: one clear notification, nothing else changes
    write_mrc(tmp_path / "bare.mrc", fine, apix=None)
    assert w.match([tmp_path / "bare.mrc"]) is not None
    qtbot.waitUntil(lambda: w.idle and notes and "voxel size" in notes[-1][1], timeout=30_000)
    assert s.colour_by == "match: known"


def test_landscape_button_adds_the_view_and_a_click_gives_a_sampled_map(viewer, qtbot, explore,
                                                                         notes):
    w, s = explore, explore.session
    w.land_n.setValue(10)
    w.land_m.setValue(2)
    w.land_selected.setChecked(True)
    assert w.compute_landscape() is None and "Nothing is selected" in notes[-1][1]
    keep = np.arange(s.n) % 5 != 0  # the maps come from the selected particles only
    s.select(keep)
    qtbot.mouseClick(w.land_btn, LEFT)
    qtbot.waitUntil(lambda: w.idle and s.space == "landscape", timeout=120_000)
    assert w.view.currentData() == "landscape" and w.colour.currentData() == "landscape cluster"
    assert (s.workdir / f"landscape.{s.epoch}" / "landscape.npz").is_file()
    qtbot.waitUntil(lambda: w._drawn is not None and w._drawn[1] == "landscape", timeout=30_000)
    land = s.landscape()
    np.testing.assert_array_equal(land.included, keep)
    assert keep[land.centres_ind].all()
    np.testing.assert_allclose(w.scatter.xy, land.coords[land.labels][:, :2], rtol=1e-6)
    qtbot.wait(50)
    _click(qtbot, w, land.coords[4, :2])
    qtbot.waitUntil(lambda: MAP_LAYER in viewer.layers and w.map_request_done, timeout=30_000)
    md = viewer.layers[MAP_LAYER].metadata
    assert md["particle"] == int(land.centres_ind[np.argmin(
        ((land.coords[:, :2] - land.coords[4, :2]) ** 2).sum(1))])
    np.testing.assert_allclose(w.shown_volume(), s.decode(s.z[md["particle"]]), rtol=1e-5,
                               atol=1e-6)
    qtbot.mouseClick(w.land_btn, LEFT)  # an existing analysis is never overwritten
    assert notes and "exists" in notes[-1][1]
