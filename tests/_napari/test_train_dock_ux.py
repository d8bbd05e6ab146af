"""The Train dock as a biologist meets it (issue 13): no dead ends after a stop, readable loss
plots, path fields that show file names, "Explore this run", and a dock that fits a 1080p
screen. Real viewer, real clicks on the real buttons."""

import time
from pathlib import Path

import yaml
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QApplication

from napari_cryodrgn.training.checkpoint import INPROGRESS, epochs_in

PLUGIN = "napari-cryodrgn"
TINY = "tiny, for a quick look (64 x 2)"
EXPLORE = f"Explore ({PLUGIN})"  # napari's name of the plugin's Explore dock


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    widget.form["device"].value = "cpu"
    return widget


def _click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _fill_tiny(w, d, out, epochs: int) -> None:
    w.set_inputs(particles=d["particles"], poses=d["poses"], ctf=d["ctf"], outdir=out)
    w.form.preset.value = TINY
    w.form["num_epochs"].value = epochs


def _errors(notes):
    return [m for s, m in notes if s == "error"]


def _started_then_killed(d, out, **settings) -> None:
    """The folder of a run killed after it started and before its first checkpoint: the
    trainer writes config.yaml and run.log when its run begins."""
    from napari_cryodrgn.training.api import make_trainer

    trainer = make_trainer(d["particles"], d["poses"], out, settings.pop("zdim", 3),
                           ctf=d["ctf"], device="cpu", **settings)
    events = trainer.run()
    assert next(events).kind == "start"
    events.close()
    trainer.ctx.close()


# -- 1. no dead ends -------------------------------------------------------------------------
def test_stop_at_the_first_progress_event_then_resume(viewer, qtbot, tmp_path, notes,
                                                      tiny_dataset, monkeypatch):
    """Stop pressed when the first progress event arrives (the trainer waits for the press,
    so the run is stopped inside epoch 1 however fast it is): Start refuses the folder and
    says to press Resume; Resume trains the run to its end."""
    import threading

    from napari_cryodrgn.training.trainer import Trainer

    pressed = threading.Event()
    real_run = Trainer.run

    def run_waiting_for_stop(self):
        events = real_run(self)
        yield next(events)  # 'start'
        if not pressed.is_set():
            pressed.wait(30)
        yield from events

    monkeypatch.setattr(Trainer, "run", run_waiting_for_stop)
    w = _dock(viewer)
    out = tmp_path / "run"
    _fill_tiny(w, tiny_dataset, out, 1)
    seen = []

    def stop_at_first_event(item):
        if item[0] == "event" and not seen:
            seen.append(item[1].kind)
            _click(qtbot, w.stop_btn)
            pressed.set()

    _click(qtbot, w.start_btn)
    w.worker.yielded.connect(stop_at_first_event)
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert seen == ["start"] and "stopped" in w.status.text()
    assert not epochs_in(out) and (out / "config.yaml").is_file()
    assert not w.explore_btn.isEnabled()  # nothing to explore yet
    _click(qtbot, w.start_btn)
    assert w.worker is None and "Press Resume" in _errors(notes)[-1]
    monkeypatch.setattr(Trainer, "run", real_run)
    _click(qtbot, w.resume_btn)
    assert w.worker is not None
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert epochs_in(out) == [1] and not (out / INPROGRESS).exists()
    assert "finished" in w.status.text() and w.explore_btn.isEnabled()


def test_resume_a_run_killed_before_its_first_checkpoint(viewer, qtbot, tmp_path, notes,
                                                         tiny_dataset):
    """A folder with only config.yaml and run.log (killed before its first checkpoint): Start
    points to Resume, and Resume trains it from epoch 1 with the settings it recorded (not
    the form's), as --load latest does on the command line."""
    out = tmp_path / "killed"
    _started_then_killed(tiny_dataset, out, zdim=3, qdim=32, qlayers=1, pdim=32, players=1,
                         num_epochs=5, seed=11)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "run.log"]
    before = (out / "run.log").read_text()
    w = _dock(viewer)
    _fill_tiny(w, tiny_dataset, out, 1)  # the form: zdim 8, tiny network, 1 epoch
    _click(qtbot, w.start_btn)
    msg = _errors(notes)[-1]
    assert w.worker is None and "stopped before its first checkpoint" in msg
    assert "Press Resume to train it again from epoch 1" in msg
    assert "--overwrite" not in msg  # a command-line flag is no answer in the dock
    _click(qtbot, w.resume_btn)
    assert "from epoch 1 with its recorded settings" in w.status.text()
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert epochs_in(out) == [1] and "finished" in w.status.text()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model_args"]["zdim"] == 3 and cfg["model_args"]["qdim"] == 32
    assert cfg["seed"] == 11 and cfg["train_args"]["num_epochs"] == 1  # Epochs of the form
    log = (out / "run.log").read_text()
    assert log.startswith(before) and "epochs 1..1" in log  # the old log is kept


def test_resume_a_folder_left_with_only_its_log(viewer, qtbot, tmp_path, notes, tiny_dataset):
    """A run stopped before it recorded its settings leaves run.log (and perhaps a temporary
    file): Start points to Resume, which trains there with the form's settings. Folders of
    other things are refused by both, untouched."""
    w = _dock(viewer)
    out = tmp_path / "logonly"
    out.mkdir()
    (out / "run.log").write_text("2024-01-01 00:00:00 stopped: napari closed the worker\n")
    (out / ".config.yaml.0123abcd.tmp").write_text("half")
    _fill_tiny(w, tiny_dataset, out, 1)
    _click(qtbot, w.start_btn)
    assert w.worker is None and "Press Resume" in _errors(notes)[-1]
    _click(qtbot, w.resume_btn)
    assert "with the settings in the form" in w.status.text()
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert epochs_in(out) == [1] and "finished" in w.status.text()
    assert not (out / ".config.yaml.0123abcd.tmp").exists()  # the run's own leftover
    assert (out / "run.log").read_text().startswith("2024-01-01 00:00:00 stopped")
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model_args"]["qdim"] == 64  # the form's tiny network
    # a folder of someone else's files, and one with only a final weights.pkl
    for name, files in (("busy", ("keep.txt",)), ("final", ("weights.pkl", "z.pkl"))):
        folder = tmp_path / name
        folder.mkdir()
        for f in files:
            (folder / f).write_text("precious")
        w.set_inputs(outdir=folder)
        n_err = len(_errors(notes))
        _click(qtbot, w.start_btn)
        _click(qtbot, w.resume_btn)
        assert w.worker is None and len(_errors(notes)) == n_err + 2
        assert "no training run to resume" in _errors(notes)[-1]
        assert sorted(p.name for p in folder.iterdir()) == sorted(files)
        assert all((folder / f).read_text() == "precious" for f in files)


# -- 2. loss plot labels ----------------------------------------------------------------------
def _scene_rect(item):
    return item.mapRectToScene(item.boundingRect())


def _text_rects(lp):
    """(text, scene rectangle) of every visible text of a LossPlot: the plots' titles and
    axis labels."""
    rects = []
    for plot in (lp.recon_plot, lp.kl_plot):
        if plot.titleLabel.isVisible() and plot.titleLabel.text:
            rects.append((plot.titleLabel.text, _scene_rect(plot.titleLabel.item)))
        for name in ("left", "bottom", "right", "top"):
            axis = plot.getAxis(name)
            if axis.isVisible() and axis.label.isVisible() and axis.labelText:
                rects.append((axis.labelText, _scene_rect(axis.label)))
    return rects


def test_loss_plot_labels_do_not_overlap(viewer, qtbot, artifacts):
    """In a narrow dock in a tall and a short window: both left axes as wide, the plots'
    names and labels whole and apart, none over a plot's data area."""
    w = _dock(viewer)
    lp = w.loss_plot
    qt_window = viewer.window._qt_window
    dock = viewer.window._wrapped_dock_widgets[f"Train ({PLUGIN})"]
    for x, r, k in ((0.5, 1.0, 3.0), (1.0, 0.5, 1200.0)):
        lp.add(x, r, k)
    for height in (1100, 700):
        qt_window.resize(1000, height)
        qt_window.resizeDocks([dock], [200], Qt.Orientation.Horizontal)  # as narrow as it goes
        qtbot.wait(100)
        QApplication.processEvents()
        assert lp.width() < 700
        left = (lp.recon_plot.getAxis("left"), lp.kl_plot.getAxis("left"))
        assert left[0].width() == left[1].width() > 0
        boxes = [_scene_rect(p.getViewBox()) for p in (lp.recon_plot, lp.kl_plot)]
        assert abs(boxes[0].left() - boxes[1].left()) < 1  # the x axes line up
        assert all(b.height() >= 45 for b in boxes), boxes  # room for the curves
        texts = _text_rects(lp)
        names = [t for t, _ in texts]
        assert {"reconstruction error", "KL divergence", "epoch"} <= set(names)
        shown = lp.view.mapToScene(lp.view.viewport().rect()).boundingRect().adjusted(
            -1, -1, 1, 1)
        for i, (a, ra) in enumerate(texts):
            assert shown.contains(ra), (a, ra, shown, height)  # whole, not clipped
            for b, rb in texts[i + 1:]:
                assert not ra.intersects(rb), (a, b, ra, rb, height)
            for box in boxes:
                assert not ra.intersects(box), (a, ra, box, height)
    lp.grab().save(str(artifacts / "train_loss_plot_narrow.png"))


# -- 3. path fields show the file name --------------------------------------------------------
def _first_visible(edit) -> int:
    """Index of the first character shown at the left edge of a line edit (the line edit
    scrolls its text when it paints)."""
    edit.update()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        QApplication.processEvents()
    return edit.cursorPositionAt(QPoint(edit.contentsRect().left() + 4, edit.height() // 2))


def _shows_end(edit, name: str) -> bool:
    text = edit.text()
    return (edit.cursorPosition() == len(text) and text.endswith(name)
            and _first_visible(edit) <= len(text) - len(name))


def test_path_fields_show_the_file_name(viewer, qtbot, tmp_path):
    from napari_cryodrgn._napari.widgets import PathEdit

    w = _dock(viewer)
    qt_window = viewer.window._qt_window
    dock = viewer.window._wrapped_dock_widgets[f"Train ({PLUGIN})"]
    qt_window.resizeDocks([dock], [200], Qt.Orientation.Horizontal)  # as narrow as it goes
    deep = tmp_path.joinpath(*["a_folder_with_a_long_name"] * 6)
    names = {"particles": "particles_of_my_sample.mrcs", "poses": "refined_poses.pkl",
             "ctf": "ctf_params.pkl", "outdir": "run_zdim8"}
    w.set_inputs(**{k: deep / v for k, v in names.items()})
    qtbot.wait(100)
    viewport = w.settings_area.viewport()
    for key, name in names.items():
        edit = w.form[key].line_edit.native
        assert len(edit.text()) > 150 and edit.width() < 600
        # the whole field is in view: the settings never scroll sideways, cutting its end
        right = edit.mapTo(viewport, QPoint(edit.width() - 1, 0)).x()
        assert 0 <= edit.mapTo(viewport, QPoint(0, 0)).x() and right < viewport.width(), key
        assert _first_visible(edit) > 0, key  # the start is scrolled away ...
        assert _shows_end(edit, name), key  # ... the file name shows
    # the user clicks into a field, goes to its start and leaves it: the end shows again
    edit = w.form["particles"].line_edit.native
    qt_window.activateWindow()  # keyboard focus needs the active window
    qtbot.waitUntil(qt_window.isActiveWindow)
    _click(qtbot, edit)
    qtbot.waitUntil(edit.hasFocus)
    qtbot.keyClick(edit, Qt.Key.Key_Home)
    assert edit.cursorPosition() == 0 and _first_visible(edit) == 0
    _click(qtbot, w.form["poses"].line_edit.native)
    qtbot.waitUntil(lambda: not edit.hasFocus())
    assert _shows_end(edit, names["particles"])
    # the shared PathEdit (e.g. the Explore dock's run folder) in a narrow dock
    pe = PathEdit("dir")
    viewer.window.add_dock_widget(pe, name="path", area="right")
    pe.setText(str(deep / names["outdir"]))
    qtbot.wait(100)
    assert pe.edit.width() < 600 and _shows_end(pe.edit, names["outdir"])


# -- 4. Explore this run ----------------------------------------------------------------------
def test_explore_this_run_opens_it_in_the_explore_dock(viewer, qtbot, tmp_path, tiny_dataset):
    w = _dock(viewer)
    out = tmp_path / "run"
    _fill_tiny(w, tiny_dataset, out, 2)
    assert not w.explore_btn.isEnabled()  # no run there yet
    _click(qtbot, w.start_btn)
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert epochs_in(out) == [1, 2] and w.explore_btn.isEnabled()
    assert EXPLORE not in viewer.window._wrapped_dock_widgets
    _click(qtbot, w.explore_btn)
    docks = viewer.window._wrapped_dock_widgets
    assert EXPLORE in docks
    explore = docks[EXPLORE].inner_widget()
    qtbot.waitUntil(lambda: explore.idle, timeout=60_000)  # its view is drawn in a worker
    assert explore.session is not None
    assert Path(explore.session.workdir).resolve() == out.resolve()
    # the Explore dock shares the Train dock's place as a tab, and is the tab shown
    train_dock = docks[f"Train ({PLUGIN})"]
    assert docks[EXPLORE] in viewer.window._qt_window.tabifiedDockWidgets(train_dock)
    qtbot.waitUntil(lambda: not explore.visibleRegion().isEmpty(), timeout=10_000)
    # another folder with no checkpoint disables the button; the first one enables it again
    w.set_inputs(outdir=tmp_path / "elsewhere")
    assert not w.explore_btn.isEnabled()
    w.set_inputs(outdir=out)
    assert w.explore_btn.isEnabled()
    _click(qtbot, w.explore_btn)  # the same dock is reused
    qtbot.waitUntil(lambda: explore.idle, timeout=60_000)
    assert [k for k in viewer.window._wrapped_dock_widgets if k.startswith("Explore")] == [
        EXPLORE]
    assert docks[EXPLORE].inner_widget() is explore


# -- 5. the dock fits a 1080p screen -----------------------------------------------------------
def test_train_dock_fits_a_1080p_screen(viewer, qtbot, artifacts):
    import json

    w = _dock(viewer)
    dock = viewer.window._wrapped_dock_widgets[f"Train ({PLUGIN})"]
    sizes = {"min_height": w.minimumSizeHint().height(),
             "min_width": w.minimumSizeHint().width(),
             "dock_min_height": dock.minimumSizeHint().height()}
    assert w.minimumSizeHint().height() < 1000
    assert dock.minimumSizeHint().height() < 1000
    w.form.advanced.expand(animate=False)  # even with the advanced settings open
    QApplication.processEvents()
    assert w.minimumSizeHint().height() < 1000
    # folding the plots makes it smaller still
    h = sizes["min_height_advanced_open"] = w.minimumSizeHint().height()
    _click(qtbot, w.loss_section.header)
    _click(qtbot, w.latent_section.header)
    assert not w.loss_plot.isVisible() and not w.latent.isVisible()
    assert w.minimumSizeHint().height() < h - 250
    sizes["min_height_plots_folded"] = w.minimumSizeHint().height()
    (artifacts / "train_dock_sizes.json").write_text(json.dumps(sizes, indent=1))
    _click(qtbot, w.loss_section.header)
    _click(qtbot, w.latent_section.header)
    assert w.loss_plot.isVisible() and w.latent.isVisible()
    # in a window of a 1080p screen, Start and the plots are on screen, the settings scroll
    qt_window = viewer.window._qt_window
    qt_window.resize(1900, 1000)
    qtbot.wait(200)
    assert w.height() <= 1000
    for widget in (w.start_btn, w.resume_btn, w.progress, w.explore_btn):
        assert not widget.visibleRegion().isEmpty()
    assert w.loss_plot.height() >= 180 and w.latent.height() >= 160
    assert w.settings_area.verticalScrollBar().maximum() > 0  # Advanced is open: it scrolls
    viewer.screenshot(str(artifacts / "train_dock_1080p.png"), canvas_only=False)
