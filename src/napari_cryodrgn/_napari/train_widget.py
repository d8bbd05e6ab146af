"""The Train dock: inputs, Start / Stop / Resume, live progress, loss curves and latent preview,
and "Explore this run" (opens the output folder in the Explore dock once it has a checkpoint).

Training runs the engine's :class:`~napari_cryodrgn.training.trainer.Trainer` in a napari
generator worker; only the main thread touches widgets and layers. The worker leaves the GUI a
CPU core (torch thread count) so the window keeps serving events.

No dead ends: whatever a stopped, killed or failed run left in its folder, Resume works there
and Start's refusal says so (see :func:`folder_state`). Resume on a run that stopped before its
first checkpoint trains it again from epoch 1, as ``--load latest`` does on the command line;
only the run's own partial outputs (config.yaml, run.log, temporary files) are replaced or
added to, never other files.

The dock fits a 1080p screen: the settings scroll when the dock is short, and the loss curves
and the latent preview are sections the user can fold.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..analysis.embed import fit_pca
from ..errors import InputError, TrainingDiverged
from ..io.mrc import read_mrc_header
from ..training.checkpoint import INPROGRESS, epochs_in
from ..training.events import format_duration
from ..training.outdir import check_new_run_folder, folder_state
from ..training.settings import TrainSettings, batch_for_box, preset_for_box
from .jobs import gui_threads, leave_a_core_for_the_gui
from .loss_plot import LossPlot
from .notify import show_error, show_info
from .plot_theme import follow_theme
from .settings_form import SettingsForm
from .widgets import FitScrollArea, Section

log = logging.getLogger(__name__)

PLUGIN = "napari-cryodrgn"
SHUTDOWN_WAIT_S = 60.0
def has_checkpoint(outdir) -> bool:
    """Whether the run in ``outdir`` has a complete epoch to explore (weights.N.pkl and
    z.N.pkl of one epoch, or cryoDRGN's final weights.pkl and z.pkl)."""
    if not outdir:
        return False
    p = Path(outdir)
    if not p.is_dir():
        return False
    if set(epochs_in(p)) & set(epochs_in(p, "z")):
        return True
    return (p / "weights.pkl").is_file() and (p / "z.pkl").is_file()


def start_refusal(outdir) -> str | None:
    """Why Start will not train a new run in ``outdir``, saying what works instead (None: it
    may). The rule is the command line's (training/outdir.py), worded for the dock."""
    p = Path(outdir)
    state, detail = folder_state(p)
    keep = "nothing was overwritten"
    new = "or choose a new or empty output folder"
    if state == "checkpoint":
        return (f"Output folder {p} already holds a training run ({detail}); {keep}. Press "
                f"Resume to continue it (up to Epochs), {new}.")
    if state == "no-checkpoint":
        return (f"Output folder {p} already holds a training run that {detail}; {keep}. Press "
                "Resume to train it again from epoch 1 with its recorded settings, or choose a "
                "new or empty output folder to train with the settings above.")
    if state == "log-only":
        return (f"Output folder {p} holds only the run.log of a run that stopped before it "
                f"began training; {keep}. Press Resume to train there from epoch 1 with these "
                f"settings, {new}.")
    if state == "final-only":
        return (f"Output folder {p} already holds a trained run ({detail}); {keep}. Explore it, "
                "or choose a new or empty output folder to train a new run.")
    if state == "other":
        if detail.endswith("is a file"):
            return f"Output folder {p} is an existing file; choose a folder name."
        return (f"Output folder {p} is not empty (it holds {detail}); {keep}. Choose a new or "
                "empty output folder.")
    return None


def pca2(z: np.ndarray) -> np.ndarray:
    """First two principal components of z (N x 2; zeros for a 1D latent's second column)."""
    pc = fit_pca(z).transform(z)[:, :2]
    return pc if pc.shape[1] == 2 else np.c_[pc, np.zeros(len(pc), np.float32)]


class RunControl:
    """What a running job needs to be stopped, free of Qt so it outlives a closed widget."""

    def __init__(self):
        self.trainer = None
        self.stop_requested = False
        self.done = threading.Event()
        self.events = None  # the job's generator (see _train_events)

    def close_events(self) -> None:
        """Close the job's generator; napari abandons it when it aborts a worker on close."""
        if self.events is not None:
            self.events.close()

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer
        if self.stop_requested:
            trainer.cancel()

    def stop(self, wait: float | None = None) -> bool:
        """Ask the trainer to stop after its batch; optionally wait for the worker to end."""
        self.stop_requested = True
        if self.trainer is not None:
            self.trainer.cancel()
        return self.done.wait(wait) if wait is not None else self.done.is_set()


def _stop_on_close(holder: dict, wait: float | None = None) -> None:
    run = holder.get("run")
    if run is not None:
        run.stop(wait=wait)


def _train_events(factory, done: threading.Event):
    """The job: build the trainer, then forward its events ('trainer' first); errors become
    ('error', message) items. Sets ``done`` however it ends."""
    import torch

    trainer = events = None
    try:
        torch.set_num_threads(gui_threads())
        trainer = factory()
        yield ("trainer", trainer)
        events = trainer.run()
        for ev in events:
            if ev.kind == "checkpoint" and "z" in ev.extra:
                ev.extra["pca"] = pca2(ev.extra.pop("z"))
            yield ("event", ev)
    except GeneratorExit:
        if trainer is not None:
            trainer.note("stopped: napari closed the training worker")
        raise
    except (InputError, TrainingDiverged) as e:
        yield ("error", str(e))
    except Exception as e:  # noqa: BLE001 - reported to the user, logged with traceback
        log.exception("training failed")
        yield ("error", f"training failed unexpectedly: {type(e).__name__}: {e}")
    finally:
        if events is not None:
            events.close()
        done.set()


@thread_worker
def _drive(events):
    """napari generator worker over the job's events."""
    yield from events


class TrainWidget(QWidget):
    """Dock widget that trains a model on particles with known poses and CTF."""

    def __init__(self, napari_viewer):
        super().__init__()
        leave_a_core_for_the_gui()
        self.viewer = napari_viewer
        self.worker = None
        self._on_done = None
        self._holder = {"run": None}
        self._build()
        self._register_close_hook()
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._on_active_layer()

    # -- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        # the settings: one widget per setting the declaration shows (training/settings.py)
        self.form = SettingsForm()
        self.form["particles"].changed.connect(self._on_particles_changed)
        inputs = QGroupBox("Inputs and settings")
        QVBoxLayout(inputs).addWidget(self.form.native)

        self.form["outdir"].changed.connect(self._update_explore)
        self.start_btn = QPushButton("Start")
        self.stop_btn = QPushButton("Stop")
        self.resume_btn = QPushButton("Resume")
        self.start_btn.setToolTip("Train a new run in an empty or new output folder")
        self.stop_btn.setToolTip("Stop after the current batch; the last checkpoint is kept")
        self.resume_btn.setToolTip("Continue the run in the output folder up to Epochs (a run "
                                   "stopped before its first checkpoint starts again)")
        self.start_btn.clicked.connect(self._on_start)
        self.stop_btn.clicked.connect(self._on_stop)
        self.resume_btn.clicked.connect(self._on_resume)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.stop_btn, self.resume_btn):
            buttons.addWidget(b)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.setFormat("idle")
        self.status = QLabel("Choose particles, poses, CTF and an output folder.")
        self.status.setWordWrap(True)
        self.explore_btn = QPushButton("Explore this run")
        self.explore_btn.setToolTip("Open the run in the output folder in the Explore dock "
                                    "(once it has a checkpoint)")
        self.explore_btn.clicked.connect(self._on_explore)
        self.loss_plot = LossPlot()
        self.latent = pg.PlotWidget()
        self.latent.setMinimumHeight(160)
        self.latent.setLabel("bottom", "PC1")
        self.latent.setLabel("left", "PC2")
        self.latent_points = pg.ScatterPlotItem(size=3, pen=None,
                                                brush=pg.mkBrush(120, 200, 255, 90))
        self.latent.addItem(self.latent_points)
        follow_theme(self.viewer, self.loss_plot.view, self.latent)

        # the settings scroll when the dock is short; the plots are sections one can fold
        self.settings_area = FitScrollArea(inputs)
        self.loss_section = Section("Loss", self.loss_plot)
        self.latent_section = Section("Latent space (PCA), after each checkpoint", self.latent)
        lay = QVBoxLayout(self)
        lay.addWidget(self.settings_area)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.explore_btn)
        lay.addWidget(self.loss_section, 1)
        lay.addWidget(self.latent_section, 1)
        self._set_running(False)

    def _register_close_hook(self) -> None:
        """Closing napari's window (which destroys the dock) stops a running training after
        its current batch; quitting the application also waits for the worker to end, so the
        last checkpoint on disk is complete. Checkpoints are written atomically either way."""
        from functools import partial

        from qtpy.QtWidgets import QApplication

        holder = self._holder
        self.destroyed.connect(lambda *_: _stop_on_close(holder))
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(partial(_stop_on_close, holder, SHUTDOWN_WAIT_S))

    @property
    def run_control(self) -> RunControl | None:
        """The current (or last) job's control: trainer, stop flag, done event."""
        return self._holder["run"]

    # -- public helpers ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def set_inputs(self, particles=None, poses=None, ctf=None, outdir=None) -> None:
        """Fill the path fields (used by sample data, tests and 'Train on selection')."""
        given = {"particles": particles, "poses": poses, "ctf": ctf, "outdir": outdir}
        self.form.set(**{k: str(v) for k, v in given.items() if v is not None})

    def use_layer_files(self, layer) -> bool:
        """Fill empty path fields from a layer that knows its files (e.g. the sample data)."""
        meta = getattr(layer, "metadata", None) or {}
        if "particles" not in meta or self.form["particles"].value is not None:
            return False
        self.set_inputs(particles=meta["particles"], poses=meta.get("poses"),
                        ctf=meta.get("ctf"))
        return True

    def settings(self) -> TrainSettings:
        """The training settings in the form (not yet checked)."""
        return self.form.settings()

    # -- slots -------------------------------------------------------------------------------
    def _on_active_layer(self, event=None) -> None:
        layer = self.viewer.layers.selection.active
        if layer is not None and self.use_layer_files(layer):
            self.status.setText(f"Using the files of layer '{layer.name}'.")

    def _on_particles_changed(self, value) -> None:
        if value is None:
            return
        p = Path(value)
        if p.suffix.lower() in (".star", ".cs"):
            for key in ("poses", "ctf"):
                if self.form[key].value is None:
                    self.form[key].value = p
        elif p.suffix.lower() in (".mrcs", ".mrc") and p.is_file():
            try:
                D = read_mrc_header(p).shape[-1]
            except InputError:
                return
            self.form.preset.value = preset_for_box(D)
            self.form["batch_size"].value = batch_for_box(D)

    def _outdir(self) -> str | None:
        v = self.form["outdir"].value
        return None if v is None or not str(v) else str(v)

    def _on_start(self) -> None:
        if self.running:
            return
        try:
            settings = self.settings().checked()
            refusal = start_refusal(settings.outdir)
            if refusal:
                raise InputError(refusal)
            check_new_run_folder(settings.outdir)  # the CLI's rule (training/outdir.py)
        except InputError as e:
            show_error(str(e))
            self.status.setText(str(e))
            return
        outdir = settings.outdir

        def factory():
            from ..training.api import trainer_for

            return trainer_for(settings)

        self.loss_plot.clear()
        self.latent_points.setData([], [])
        self._on_done = None
        self._launch(factory, f"starting a new run in {outdir}")

    def _on_resume(self) -> None:
        """Continue the run in the output folder; one stopped before its first checkpoint is
        trained again from epoch 1 (the command line's ``--load latest``)."""
        if self.running:
            return
        outdir = self._outdir()
        n = self.form["num_epochs"].value
        try:
            if not outdir:
                raise InputError("Choose the output folder of the run to resume.")
            factory, where = self._resume_plan(outdir, n)
        except InputError as e:
            show_error(str(e))
            self.status.setText(str(e))
            return
        self._on_done = None
        if where.startswith("from epoch 1"):
            self.loss_plot.clear()
            self.latent_points.setData([], [])
        self._launch(factory, f"resuming {outdir} {where}")

    def _resume_plan(self, outdir: str, n: int):
        """(trainer factory, what it does) for Resume on ``outdir``; InputError saying what
        works instead where nothing can be resumed."""
        state, detail = folder_state(outdir)
        if state == "new":
            raise InputError(f"{outdir} holds no training run to resume; press Start to train "
                             "a new run there.")
        if state in ("other", "final-only"):
            raise InputError(f"{outdir} holds no training run to resume ({detail}); nothing was "
                             "changed. Choose the folder of a run, or press Start with a new "
                             "or empty output folder.")
        if state == "log-only":
            # no recorded settings: the form's, as the command line's --load latest does
            settings = replace(self.settings(), outdir=outdir, load="latest").checked()

            def fresh():
                from ..training.api import trainer_for

                return trainer_for(settings)

            return fresh, ("from epoch 1 with the settings in the form (the run stopped "
                           "before it recorded its own)")
        eps = epochs_in(outdir)
        done = eps[-1] if eps else 0
        inside = (Path(outdir) / INPROGRESS).is_file()
        if state == "checkpoint" and not inside and n <= done:
            raise InputError(f"{outdir} already has {done} epochs; set Epochs above {done} "
                             "to train further.")

        def factory():
            from ..training.api import resume_trainer

            return resume_trainer(outdir, num_epochs=n)

        if state == "no-checkpoint":
            return factory, ("from epoch 1 with its recorded settings (it stopped before its "
                             "first checkpoint)")
        return factory, ("inside the epoch it stopped in" if inside else f"after epoch {done}")

    def start_selection_run(self, parent, ind_path, outdir, parent_epoch=None, on_done=None,
                            **overrides) -> None:
        """Train a new run in ``outdir`` on the particles of ``ind_path`` with the parent run's
        settings (lineage recorded in config.yaml); ``on_done(outdir)`` when it finishes."""
        if self.running:
            show_error("A training is already running in the Train dock; stop it first.")
            return
        try:
            check_new_run_folder(outdir)
        except InputError as e:
            show_error(str(e))
            return
        self.set_inputs(outdir=outdir)

        def factory():
            from ..training.api import train_on_selection

            return train_on_selection(parent, ind_path, outdir, parent_epoch=parent_epoch,
                                      **overrides)

        self.loss_plot.clear()
        self.latent_points.setData([], [])
        self._on_done = (lambda: on_done(outdir)) if on_done else None
        self._launch(factory, f"training on the selection {ind_path} in {outdir}")

    def _update_explore(self, *_) -> None:
        self.explore_btn.setEnabled(has_checkpoint(self._outdir()))

    def _on_explore(self) -> None:
        """Open the run in the output folder in the Explore dock (made, or the one open)."""
        outdir = self._outdir()
        if not has_checkpoint(outdir):
            show_error(f"{outdir} has no checkpoint to explore yet: train at least one epoch.")
            self._update_explore()
            return
        # a new Explore dock shares the Train dock's place (a tab): both stacked need more
        # height than a 1080p screen has
        dock, explore = self.viewer.window.add_plugin_dock_widget(PLUGIN, "Explore",
                                                                  tabify=True)
        dock.show()
        dock.raise_()
        explore.open_run(outdir)

    def _on_stop(self) -> None:
        if not self.running:
            return
        self.run_control.stop()
        self.stop_btn.setEnabled(False)
        self.progress.setFormat("stopping after this batch…")

    def _launch(self, factory, message: str) -> None:
        from qtpy.QtCore import Qt

        run = self._holder["run"] = RunControl()
        run.events = _train_events(factory, run.done)
        self.worker = _drive(run.events)
        # napari aborts its workers when the window closes; close the job in that thread
        self.worker.aborted.connect(run.close_events, Qt.ConnectionType.DirectConnection)
        self.worker.yielded.connect(self._on_yield)
        self.worker.finished.connect(self._on_finished)
        self._set_running(True)
        self.status.setText(message)
        self.progress.setValue(0)
        self.progress.setFormat("preparing…")
        self.worker.start()

    def _on_yield(self, item) -> None:
        kind, payload = item
        if kind == "trainer":
            self.run_control.set_trainer(payload)
        elif kind == "error":
            show_error(payload)
            self.status.setText(payload)
        else:
            self._on_progress(payload)

    def _on_progress(self, ev) -> None:
        if ev.kind == "start":
            self.status.setText(f"training {ev.n_epochs} epochs on {ev.total} particles "
                                f"({ev.message})")
        elif ev.kind == "batch":
            self.progress.setValue(int(1000 * ev.fraction))
            self.progress.setFormat(
                f"epoch {ev.epoch}/{ev.n_epochs} · {ev.images_per_s:.0f} images/s · "
                f"ETA {format_duration(ev.eta_s)}")
            self.loss_plot.add_progress(ev.epoch, ev.done, ev.total, ev.gen_loss, ev.kld)
        elif ev.kind == "epoch":
            self.status.setText(f"epoch {ev.epoch}/{ev.n_epochs}: loss {ev.loss:.5f} "
                                f"(reconstruction {ev.gen_loss:.5f}, KL {ev.kld:.3f})")
        elif ev.kind == "refine":
            self.progress.setFormat(ev.message)
        elif ev.kind == "checkpoint":
            pc = ev.extra.get("pca")
            if pc is not None:
                show = pc[:: max(1, len(pc) // 20000)]
                self.latent_points.setData(show[:, 0], show[:, 1])
            self.status.setText(f"epoch {ev.epoch}: saved {ev.message}")
            self._update_explore()
        elif ev.kind in ("cancelled", "done"):
            if ev.kind == "done":
                self.progress.setValue(1000)
                if self._on_done is not None:
                    self._on_done()
            msg = ev.message if ev.kind == "cancelled" else f"training finished: {ev.message}"
            self.status.setText(msg)
            show_info(msg)

    def _on_finished(self) -> None:
        self.worker = None
        self._set_running(False)
        self._update_explore()
        self.progress.setFormat("idle" if self.progress.value() < 1000 else "done")

    def _set_running(self, running: bool) -> None:
        for w in (self.start_btn, self.resume_btn):
            w.setEnabled(not running)
        self.stop_btn.setEnabled(running)
        self._update_explore()
