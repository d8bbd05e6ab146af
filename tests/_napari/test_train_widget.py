"""The Train dock in a real viewer: sample data -> train -> stop -> resume; bad input; close."""

import json
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer

from napari_cryodrgn.model.load import load_run
from napari_cryodrgn.training.checkpoint import epochs_in

PLUGIN = "napari-cryodrgn"
TINY = "tiny, for a quick look (64 x 2)"


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    widget.device.setCurrentText("cpu")
    return widget


def _start_tiny(qtbot, w, d, out, epochs: int) -> None:
    """Fill the dock with the tiny dataset and the tiny network, then press Start."""
    w.set_inputs(particles=d["particles"], poses=d["poses"], ctf=d["ctf"], outdir=out)
    w.preset.setCurrentText(TINY)
    w.epochs.setValue(epochs)
    _click(qtbot, w.start_btn)


def _click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _no_temp_files(folder: Path):
    return not [p for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_sample_train_stop_resume(viewer, qtbot, tmp_path, artifacts):
    viewer.open_sample(PLUGIN, "simulated_particles")
    w = _dock(viewer)
    viewer.layers.selection.active = viewer.layers["simulated particles"]
    assert w.particles.text().endswith("particles.mrcs")  # filled from the sample layer
    assert w.poses.text().endswith("poses.pkl") and w.ctf.text().endswith("ctf.pkl")
    out = tmp_path / "run"
    w.set_inputs(outdir=out)
    w.preset.setCurrentText(TINY)
    w.epochs.setValue(40)
    _click(qtbot, w.start_btn)
    worker = w.worker
    assert worker is not None and not w.start_btn.isEnabled()
    _click(qtbot, w.start_btn)  # a second press starts nothing
    assert w.worker is worker
    qtbot.waitUntil(lambda: len(w.loss_plot.x) >= 3, timeout=120_000)
    viewer.screenshot(str(artifacts / "train_dock_during_training.png"), canvas_only=False)
    qtbot.waitUntil(lambda: len(epochs_in(out)) >= 2, timeout=300_000)
    _click(qtbot, w.stop_btn)
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    stopped = epochs_in(out)
    assert stopped[:2] == [1, 2] and stopped[-1] < 40
    assert "stopped" in w.status.text() and _no_temp_files(out)
    assert load_run(out).epoch == stopped[-1]  # the last checkpoint loads
    assert w.start_btn.isEnabled() and w.resume_btn.isEnabled()
    # Start refuses the folder that now holds a run; Resume continues it
    _click(qtbot, w.start_btn)
    assert w.worker is None and "holds a training run" in w.status.text()
    w.epochs.setValue(stopped[-1] + 1)
    _click(qtbot, w.resume_btn)
    qtbot.waitUntil(lambda: not w.running, timeout=300_000)
    assert epochs_in(out) == [*stopped, stopped[-1] + 1]
    assert (out / "weights.pkl").exists() and (out / "z.pkl").exists()
    assert w.progress.value() == 1000 and "finished" in w.status.text()
    assert f"epochs {stopped[-1] + 1}..{stopped[-1] + 1}" in (out / "run.log").read_text()
    x, recon = np.asarray(w.loss_plot.x), np.asarray(w.loss_plot.recon)
    assert np.all(np.diff(x) > 0) and np.isfinite(recon).all()


def test_stop_in_the_first_epoch_then_resume(viewer, qtbot, tmp_path, tiny_dataset):
    # a run stopped before its first epoch ends keeps its position (checkpoint.inprogress.pkl):
    # Start refuses the folder (it holds a run), Resume continues inside epoch 1
    from napari_cryodrgn.training.checkpoint import INPROGRESS, resume_point

    w = _dock(viewer)
    out = tmp_path / "run"
    _start_tiny(qtbot, w, tiny_dataset, out, 1)
    _click(qtbot, w.stop_btn)  # at once: the run stops after its first batches
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert not epochs_in(out) and resume_point(out) == (out / INPROGRESS, "mid-epoch")
    assert "stopped" in w.status.text()
    _click(qtbot, w.start_btn)
    assert w.worker is None and "holds a training run" in w.status.text()
    _click(qtbot, w.resume_btn)
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert epochs_in(out) == [1] and not (out / INPROGRESS).exists()
    assert "finished" in w.status.text()
    log = (out / "run.log").read_text()
    assert "cancelled during epoch 1" in log and log.count("epoch 1/1:") == 1


def test_bad_inputs_are_notified_and_start_nothing(viewer, qtbot, tmp_path, notes,
                                                   tiny_dataset):
    w = _dock(viewer)
    d = tiny_dataset
    _click(qtbot, w.start_btn)
    assert w.worker is None and any("particle file" in m for s, m in notes if s == "error")
    w.set_inputs(particles=tmp_path / "missing.mrcs", poses=d["poses"], outdir=tmp_path / "o")
    _click(qtbot, w.start_btn)
    assert w.worker is None and "missing.mrcs does not exist" in notes[-1][1]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("precious")
    w.set_inputs(particles=d["particles"], ctf=d["ctf"], outdir=busy)
    _click(qtbot, w.start_btn)
    assert w.worker is None and "not empty" in notes[-1][1]
    assert (busy / "keep.txt").read_text() == "precious"
    # counts that do not match: found while loading, reported, nothing trained
    from napari_cryodrgn.io.poses import load_poses, save_poses

    rot, trans = load_poses(d["poses"])
    save_poses(tmp_path / "short.pkl", rot[:50], trans[:50])
    w.set_inputs(poses=tmp_path / "short.pkl", outdir=tmp_path / "o2")
    _click(qtbot, w.start_btn)
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    err = [m for s, m in notes if s == "error"][-1]
    assert "short.pkl" in err and "50" in err
    assert not epochs_in(tmp_path / "o2")
    w.set_inputs(outdir=tmp_path / "nothing")
    _click(qtbot, w.resume_btn)
    assert w.worker is None and "no training run to resume" in notes[-1][1]
    # a loss that becomes NaN (learning rate 1) stops the run with a notification that says
    # what to try
    w.set_inputs(poses=d["poses"], outdir=tmp_path / "nan")
    w.preset.setCurrentText(TINY)
    w.lr.setValue(1.0)
    _click(qtbot, w.start_btn)
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    err = [m for s, m in notes if s == "error"][-1]
    assert "loss became nan" in err and "lower --lr" in err
    assert w.start_btn.isEnabled()


def test_closing_napari_stops_training_cleanly(make_napari_viewer, qtbot, tmp_path,
                                               tiny_dataset):
    viewer = make_napari_viewer(show=True)
    w = _dock(viewer)
    out = tmp_path / "run"
    _start_tiny(qtbot, w, tiny_dataset, out, 10_000)
    qtbot.waitUntil(lambda: len(epochs_in(out)) >= 1, timeout=120_000)
    run = w.run_control
    viewer.close()
    qtbot.waitUntil(run.done.is_set, timeout=60_000)  # stopped and joined on close
    assert run.trainer.cancelled
    eps = epochs_in(out)
    assert eps and eps[-1] < 10_000 and _no_temp_files(out)
    assert load_run(out).epoch == eps[-1]
    log = (out / "run.log").read_text()
    assert "cancelled during epoch" in log or "napari closed the training worker" in log


def test_training_runs_in_a_worker(viewer, qtbot, tmp_path, artifacts, monkeypatch):
    """The epoch runs off the GUI thread. The gaps between 10 ms QTimer ticks during it are
    recorded in test-artifacts/ as a measurement (timings are not asserted on shared cores)."""
    import threading

    from napari_cryodrgn.training.trainer import Trainer

    threads = []
    real_run = Trainer.run

    def spy(self):
        threads.append(threading.current_thread())
        yield from real_run(self)

    monkeypatch.setattr(Trainer, "run", spy)
    viewer.open_sample(PLUGIN, "simulated_particles")
    w = _dock(viewer)
    viewer.layers.selection.active = viewer.layers["simulated particles"]
    w.set_inputs(outdir=tmp_path / "run")
    w.preset.setCurrentText("small (256 x 3)")
    w.epochs.setValue(1)
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    _click(qtbot, w.start_btn)
    timer.start()
    qtbot.waitUntil(lambda: not w.running, timeout=600_000)
    timer.stop()
    gaps = np.diff(ticks) * 1000.0
    stats = {"ticks": len(ticks), "max_ms": float(gaps.max()),
             "p50_ms": float(np.percentile(gaps, 50)), "p99_ms": float(np.percentile(gaps, 99)),
             "p999_ms": float(np.percentile(gaps, 99.9)),
             "over_50ms": int((gaps > 50).sum()), "over_100ms": int((gaps > 100).sum())}
    (artifacts / "train_responsiveness.json").write_text(json.dumps(stats, indent=1))
    assert epochs_in(tmp_path / "run") == [1]
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    assert len(ticks) > 100  # the event loop kept turning while the epoch ran


def test_loss_plot_shows_interval_means(qtbot):
    from napari_cryodrgn._napari.loss_plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    # epoch 1: the first 100 images average 2.0, the next 100 average 1.0 (running mean 1.5)
    plot.add_progress(1, 100, 200, 2.0, 10.0)
    plot.add_progress(1, 200, 200, 1.5, 8.0)
    # epoch 2 starts afresh: its first report is its own mean
    plot.add_progress(2, 100, 200, 0.9, 7.0)
    np.testing.assert_allclose(plot.x, [0.5, 1.0, 1.5])
    np.testing.assert_allclose(plot.recon, [2.0, 1.0, 0.9])
    np.testing.assert_allclose(plot.kl, [10.0, 6.0, 7.0])
