"""The Train dock in a real viewer: sample data -> train -> stop -> resume; bad input; close."""

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer

from napari_cryodrgn.model.load import load_run
from napari_cryodrgn.training.checkpoint import epochs_in

PLUGIN = "napari-cryodrgn"
TINY = "tiny, for a quick look (64 x 2)"


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    widget.form["device"].value = "cpu"
    return widget


def _start_tiny(qtbot, w, d, out, epochs: int) -> None:
    """Fill the dock with the tiny dataset and the tiny network, then press Start."""
    w.set_inputs(particles=d["particles"], poses=d["poses"], ctf=d["ctf"], outdir=out)
    w.form.preset.value = TINY
    w.form["num_epochs"].value = epochs
    _click(qtbot, w.start_btn)


def _click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _no_temp_files(folder: Path):
    return not [p for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_sample_train_stop_resume(viewer, qtbot, tmp_path, artifacts):
    viewer.open_sample(PLUGIN, "simulated_particles")
    w = _dock(viewer)
    viewer.layers.selection.active = viewer.layers["simulated particles"]
    form = w.form
    assert str(form["particles"].value).endswith("particles.mrcs")  # from the sample layer
    assert str(form["poses"].value).endswith("poses.pkl")
    assert str(form["ctf"].value).endswith("ctf.pkl")
    out = tmp_path / "run"
    w.set_inputs(outdir=out)
    form.preset.value = TINY
    form["num_epochs"].value = 40
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
    form["num_epochs"].value = stopped[-1] + 1
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
    w.form.preset.value = TINY
    w.form["lr"].value = 1.0
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
    w.form.preset.value = "small (256 x 3)"
    w.form["num_epochs"].value = 1
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


def test_form_is_made_from_the_settings_declaration(viewer, qtbot):
    """One widget per setting the declaration shows in the GUI (main form or the collapsible
    Advanced section), each holding the declared default (the dock's network preset
    applied); CLI-only and library-only settings have none; the preset sets the network."""
    from napari_cryodrgn.training.settings import GUI_PRESET, gui_defaults, network, specs

    w = _dock(viewer)
    form = w.form
    shown = specs("gui", "advanced")
    assert list(form.widgets) == list(shown)
    assert not set(form.widgets) & set(specs("cli", "api"))
    defaults = gui_defaults()
    for name, spec in shown.items():
        want = "cpu" if name == "device" else getattr(defaults, name)  # _dock picked cpu
        assert form[name].value == want, name
        assert form[name].label == spec.label
        section = form.main if spec.face == "gui" else form.more
        assert form[name] in list(section), name
    assert form.preset.value == GUI_PRESET
    assert w.settings() == replace(defaults, device="cpu")
    form.preset.value = TINY
    assert {k: form[k].value for k in network(TINY)} == network(TINY)
    form["qdim"].value = 100  # a network of no preset
    assert form.preset.value.startswith("custom")


def test_form_values_reach_the_run_config(viewer, qtbot, tmp_path, tiny_dataset):
    """Values changed in the form (main and Advanced) are those the trainer records in
    config.yaml; an existing empty output folder is accepted (the CLI's rule)."""
    import yaml

    w = _dock(viewer)
    out = tmp_path / "empty"
    out.mkdir()
    w.set_inputs(particles=tiny_dataset["particles"], poses=tiny_dataset["poses"],
                 ctf=tiny_dataset["ctf"], outdir=out)
    form = w.form
    form.preset.value = TINY
    form.set(num_epochs=1, zdim=3, seed=7, batch_size=12, beta=0.25, wd=1e-4,
             enc_inplane=False, enc_mask=6, checkpoint_minutes=5.0, precision="fp32")
    _click(qtbot, w.start_btn)
    assert w.worker is not None
    qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert epochs_in(out) == [1] and "finished" in w.status.text()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    ma, ta = cfg["model_args"], cfg["train_args"]
    assert (ma["zdim"], ma["qdim"], ma["qlayers"], ma["pdim"], ma["players"]) == (3, 64, 2, 64, 2)
    assert ma["enc_inplane"] is False and ma["enc_mask"] == 6
    assert (ta["num_epochs"], ta["seed"], ta["batch_size"]) == (1, 7, 12)
    assert ta["beta"] == 0.25 and ta["wd"] == 1e-4 and ta["checkpoint_minutes"] == 5.0
    assert ta["precision"] == "fp32" and ta["device"] == "cpu"
