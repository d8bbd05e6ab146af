"""Selecting in the Explore dock with real mouse drags and clicks; gallery; saving; retraining."""

import numpy as np
import pytest
import yaml
from qtpy.QtCore import QEvent, QPoint, QPointF, Qt
from qtpy.QtGui import QMouseEvent
from qtpy.QtWidgets import QApplication

from napari_cryodrgn.analysis.select import points_in_polygon
from napari_cryodrgn.io.index import load_index
from napari_cryodrgn.io.mrc import read_mrc

PLUGIN = "napari-cryodrgn"
LEFT = Qt.MouseButton.LeftButton


@pytest.fixture
def explore(viewer, qtbot, tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"  # a private copy: selections are saved in the run folder
    shutil.copytree(tiny_run, run)
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Explore")
    qtbot.waitUntil(lambda: w.scatter.plot.viewport().isVisible(), timeout=10_000)
    assert w.open_run(run) is not None
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)  # the view is computed in a worker
    qtbot.wait(50)
    return w


def _send(vp, kind, pos, buttons, modifier):
    ev = QMouseEvent(kind, QPointF(pos), QPointF(vp.mapToGlobal(pos)), LEFT, buttons, modifier)
    QApplication.sendEvent(vp, ev)


def _drag(qtbot, w, xys, modifier=Qt.KeyboardModifier.NoModifier):
    """Press at the first point, move (button held) through the others and back to the first,
    at a hand's pace, release; returns the polygon of the pixel positions in data
    coordinates."""
    vp = w.scatter.plot.viewport()
    pix = [w.scatter.widget_pos(*xy) for xy in xys]
    _send(vp, QEvent.Type.MouseButtonPress, pix[0], LEFT, modifier)
    path = []
    for a, b in zip(pix, pix[1:] + pix[:1], strict=True):
        for t in np.linspace(0, 1, 6)[1:]:
            p = QPoint(round(a.x() + t * (b.x() - a.x())), round(a.y() + t * (b.y() - a.y())))
            qtbot.wait(20)  # pyqtgraph drops mouse moves closer than ~17 ms (60 Hz)
            _send(vp, QEvent.Type.MouseMove, p, LEFT, modifier)
            path.append(p)
    _send(vp, QEvent.Type.MouseButtonRelease, pix[0], Qt.MouseButton.NoButton, modifier)
    qtbot.wait(10)
    return np.array([w.scatter.data_pos(p) for p in [pix[0], *path]])


def _ring(centre, radius, n=12):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(centre[0] + radius[0] * np.cos(t), centre[1] + radius[1] * np.sin(t)) for t in a]


def test_lasso_add_subtract_invert_undo(viewer, qtbot, explore):
    w, s = explore, explore.session
    panel = w.selection_panel
    assert not panel.train_btn.isEnabled() and not panel.export_btn.isEnabled()
    emb = s.embedding("pca")
    c, r = emb.mean(0), emb.std(0)
    w.tool_buttons["lasso"].click()
    _drag(qtbot, w, _ring(c, r))
    assert s.n_selected > 0
    first = s.selection.mask.copy()
    assert panel.train_btn.isEnabled() and f"selected {s.n_selected} of {s.n}" in \
        panel.count.text()
    # Shift adds a second region, Ctrl subtracts a third
    _drag(qtbot, w, _ring(c + 1.5 * r, 0.6 * r), Qt.KeyboardModifier.ShiftModifier)
    assert s.n_selected >= first.sum() and np.all(s.selection.mask[first])
    added = s.selection.mask.copy()
    _drag(qtbot, w, _ring(c, 0.4 * r), Qt.KeyboardModifier.ControlModifier)
    assert s.n_selected < added.sum()
    qtbot.mouseClick(panel.undo_btn, LEFT)
    np.testing.assert_array_equal(s.selection.mask, added)
    qtbot.mouseClick(panel.invert_btn, LEFT)
    np.testing.assert_array_equal(s.selection.mask, ~added)
    qtbot.mouseClick(panel.clear_btn, LEFT)
    assert s.n_selected == 0 and not panel.save_btn.isEnabled()
    assert "Select particles first" in panel.count.text()


def test_lasso_matches_polygon_maths(viewer, qtbot, explore):
    w, s = explore, explore.session
    w.tool_buttons["lasso"].click()
    emb = s.embedding("pca")
    poly = _drag(qtbot, w, _ring(emb.mean(0), 1.2 * emb.std(0), n=16))
    inside = points_in_polygon(emb, poly)
    # the same polygon through the Session's maths (pixel-exact vertices): identical
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(s.selection.mask, inside)
    # the selection is shown on the scatter
    shown = w.scatter.selected_item.data
    assert len(shown) == s.n_selected


def test_cluster_click_gallery_and_saving(viewer, qtbot, explore, tmp_path, monkeypatch):
    w, s = explore, explore.session
    w.k.setValue(4)
    w.tool_buttons["cluster"].click()
    emb = s.embedding("pca")
    qtbot.mouseClick(w.scatter.plot.viewport(), LEFT, pos=w.scatter.widget_pos(*emb[10]))
    qtbot.waitUntil(lambda: w.idle and s.n_selected > 0, timeout=30_000)
    labels, _ = s.kmeans(4)
    clicked = w.scatter.data_pos(w.scatter.widget_pos(*emb[10]))
    lab = labels[s.nearest(s.space, clicked)]
    np.testing.assert_array_equal(s.selection.mask, labels == lab)
    panel = w.selection_panel
    panel.n_gallery.setValue(4)
    qtbot.mouseClick(panel.gallery_btn, LEFT)
    qtbot.waitUntil(lambda: panel.gallery_ready, timeout=60_000)
    thumbs = panel.gallery.thumbnails
    assert len(thumbs) == min(4, s.n_selected)
    assert all(s.selection.mask[t.index] for t in thumbs)
    qtbot.mouseClick(thumbs[-1], LEFT)
    np.testing.assert_allclose(w.scatter.marker.data["x"][0], emb[thumbs[-1].index, 0])
    # index pickles in original numbering, with the inverse: the real button, its dialog
    # answered
    from qtpy.QtWidgets import QFileDialog

    ind, inv = tmp_path / "sel.pkl", tmp_path / "sel_inverse.pkl"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(ind), ""))
    qtbot.mouseClick(panel.save_btn, LEFT)
    np.testing.assert_array_equal(load_index(ind, None), np.flatnonzero(s.selection.mask))
    np.testing.assert_array_equal(np.sort(np.r_[load_index(ind, None), load_index(inv, None)]),
                                  np.arange(s.n))
    # an .mrcs subset of the selected particles (written in a worker)
    out = tmp_path / "sel.mrcs"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    qtbot.mouseClick(panel.export_btn, LEFT)
    qtbot.waitUntil(lambda: out.exists() and not panel.export_job.busy, timeout=60_000)
    stack, _ = read_mrc(out)
    assert len(stack) == s.n_selected
    # reopening the run restores the selection
    before = s.selection.mask.copy()
    s2 = w.open_run(s.workdir)
    np.testing.assert_array_equal(s2.selection.mask, before)


def test_train_on_selection_opens_the_new_run(viewer, qtbot, explore, tmp_path):
    w, s = explore, explore.session
    s.select(np.arange(0, s.n, 2))
    out = s.workdir.parent / f"{s.workdir.name}_sel{s.n_selected}"  # the button's folder
    qtbot.mouseClick(w.selection_panel.train_btn, LEFT)
    train = next(d for k, d in viewer.window.dock_widgets.items() if "Train" in k)
    assert train.running
    qtbot.waitUntil(lambda: not train.running, timeout=300_000)
    qtbot.waitUntil(lambda: w.session.workdir == out, timeout=30_000)
    assert w.session.n == (s.n + 1) // 2
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["lineage"]["parent"] == str(s.workdir)
    assert cfg["lineage"]["n_selected"] == (s.n + 1) // 2


def test_missing_index_is_located_not_guessed(viewer, qtbot, tiny_dataset, tmp_path, notes,
                                               monkeypatch):
    # a run trained on 70 of 120 particles whose index file is no longer where config.yaml
    # says: saving refuses (naming the file), "Locate index file..." fixes it
    import shutil

    from qtpy.QtWidgets import QFileDialog

    from napari_cryodrgn.io.index import save_index
    from napari_cryodrgn.training.api import make_trainer

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset["particles"].parent, data)
    ind = np.sort(np.random.default_rng(2).choice(120, 70, replace=False))
    save_index(data / "subset.pkl", ind)
    run = tmp_path / "run"
    for _ in make_trainer(data / "particles.mrcs", data / "poses.pkl", run, 2,
                          ctf=data / "ctf.pkl", ind=data / "subset.pkl", num_epochs=1,
                          qdim=32, qlayers=1, pdim=32, players=1, precision="fp32").run():
        pass
    kept = tmp_path / "kept" / "subset.pkl"
    kept.parent.mkdir()
    (data / "subset.pkl").rename(kept)
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Explore")
    assert w.open_run(run) is not None
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    panel, s = w.selection_panel, w.session
    assert not panel.locate_btn.isHidden()
    s.select(np.arange(5))
    out = tmp_path / "sel.pkl"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    qtbot.mouseClick(panel.save_btn, LEFT)
    assert not out.exists()
    err = [m for sev, m in notes if sev == "error"][-1]
    assert "subset.pkl" in err and "Locate index file" in err
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(kept), ""))
    qtbot.mouseClick(panel.locate_btn, LEFT)
    assert panel.locate_btn.isHidden()
    qtbot.mouseClick(panel.save_btn, LEFT)
    np.testing.assert_array_equal(load_index(out, None), ind[:5])


def test_threshold_selection_with_histogram_and_lasso(viewer, qtbot, explore):
    w, s = explore, explore.session
    t = w.threshold
    w.threshold_section.expand(animate=False)
    t.value.setCurrentText("|z|")
    qtbot.waitUntil(lambda: w.idle and t.hist.xData is not None, timeout=30_000)
    norm = np.linalg.norm(s.z, axis=1)
    counts = t.hist.yData
    assert counts.sum() == s.n  # the histogram holds every particle
    lo, hi = np.percentile(norm, [20, 70])
    t.region.setRegion((lo, hi))  # as a drag of the band leaves it
    assert t.range == pytest.approx((lo, hi), abs=1e-5)
    t.mode.setCurrentText("replace")
    w.scroll.ensureWidgetVisible(t.apply_btn)  # the user scrolls the dock down to it
    qtbot.wait(20)
    qtbot.mouseClick(t.apply_btn, LEFT)
    expect = (norm >= t.range[0]) & (norm <= t.range[1])
    np.testing.assert_array_equal(s.selection.mask, expect)
    # combined with a lasso-like selection: intersect keeps only the particles in both
    s.select(np.arange(s.n // 2))
    t.mode.setCurrentText("intersect")
    qtbot.mouseClick(t.apply_btn, LEFT)
    both = expect.copy()
    both[s.n // 2:] = False
    np.testing.assert_array_equal(s.selection.mask, both)
    assert f"selected {both.sum()} of" in w.selection_panel.count.text()
