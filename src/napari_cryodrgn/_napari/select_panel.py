"""The Select panel of the Explore dock: count, invert / clear / undo, k-means clusters,
gallery, index and .star/.cs/.mrcs export, and Train on selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..errors import InputError
from .gallery import Gallery
from .jobs import LatestJob
from .notify import show_error, show_info

EMPTY_TIP = "Select particles first (Lasso, Rectangle or Clusters on the scatter)."


def _pairs(session, indices):
    from ..analysis.gallery import particle_pairs

    raw, proj = particle_pairs(session, indices, lowpass=0.5, normalize=True)
    return indices, raw, proj


def _export(ind, workdir, out: Path):
    from ..analysis.filtering import export_subsets

    kind = out.suffix.lower().lstrip(".")
    return export_subsets(ind, workdir=workdir, **{kind: out})


class SelectPanel(QGroupBox):
    """Acts on the Explore dock's session (``explore.session``)."""

    def __init__(self, explore, parent=None):
        super().__init__("Selection", parent)
        self.explore = explore
        self.session = None
        self._gallery_key = None  # (epoch, selection version) the gallery shows
        self.count = QLabel("no selection")
        self.count.setWordWrap(True)  # the hint after the count must not widen the dock
        self.invert_btn = QPushButton("Invert")
        self.clear_btn = QPushButton("Clear")
        self.undo_btn = QPushButton("Undo")
        self.gallery_btn = QPushButton("Gallery")
        self.save_btn = QPushButton("Save index…")
        self.export_btn = QPushButton("Export subset…")
        self.train_btn = QPushButton("Train on selection")
        self.locate_btn = QPushButton("Locate index file…")
        self.locate_btn.setToolTip("The run was trained on a subset whose index file is not "
                                   "where config.yaml says: give it to save, export or train "
                                   "in original-stack numbering")
        self.locate_btn.clicked.connect(self._on_locate_clicked)
        self.n_gallery = QSpinBox()
        self.n_gallery.setRange(1, 64)
        self.n_gallery.setValue(12)
        self.save_btn.setToolTip("cryoDRGN index .pkl (original-stack numbering) + _inverse.pkl")
        self.export_btn.setToolTip(".star (RELION), .cs (cryoSPARC) or .mrcs subset")
        self.train_btn.setToolTip("A new run with the same settings on the selected particles")
        self.invert_btn.clicked.connect(lambda: self.session and self.session.invert())
        self.clear_btn.clicked.connect(lambda: self.session and self.session.clear())
        self.undo_btn.clicked.connect(lambda: self.session and self.session.undo())
        self.gallery_btn.clicked.connect(self.show_gallery)
        self.save_btn.clicked.connect(self._on_save_clicked)
        self.export_btn.clicked.connect(self._on_export_clicked)
        self.train_btn.clicked.connect(self._on_train_clicked)
        self.gallery = Gallery()
        self.gallery.particleClicked.connect(self.highlight)
        self.gallery_job = LatestJob("gallery", on_result=self._on_pairs,
                                     on_error=self._on_gallery_error)
        self.export_job = LatestJob("subset export", on_result=self._on_exported)
        grid = QGridLayout()
        grid.addWidget(self.count, 0, 0, 1, 3)
        for k, b in enumerate((self.invert_btn, self.clear_btn, self.undo_btn)):
            grid.addWidget(b, 1, k)
        grid.addWidget(self.gallery_btn, 2, 0)
        grid.addWidget(QLabel("particles:"), 2, 1)
        grid.addWidget(self.n_gallery, 2, 2)
        grid.addWidget(self.save_btn, 3, 0)
        grid.addWidget(self.export_btn, 3, 1)
        grid.addWidget(self.train_btn, 3, 2)
        grid.addWidget(self.locate_btn, 4, 0, 1, 3)
        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addWidget(self.gallery)
        self.update_state()

    def set_session(self, session) -> None:
        if self.session is not None:
            self.session.selection.changed.disconnect(self._on_selection)
            self.session.events.colourings.disconnect(self._update_locate)
            self.session.events.epoch.disconnect(self._on_epoch)
        self.session = session
        session.selection.changed.connect(self._on_selection, thread="main")
        session.events.colourings.connect(self._update_locate, thread="main")  # located
        session.events.epoch.connect(self._on_epoch, thread="main")
        self._clear_gallery("")
        self._update_locate()
        self.update_state()

    def _update_locate(self, *_) -> None:
        """Show "Locate index file…" while the run's index file is not found (file lookups:
        on opening and when an index is located, not on every selection change)."""
        s = self.session
        self.locate_btn.setVisible(s is not None and s.folder.index_missing)

    def _selection_key(self):
        return (self.session.epoch, self.session.selection.version)

    def _on_selection(self, *_) -> None:
        self.update_state()
        if self._gallery_key is not None and self._gallery_key != self._selection_key():
            self._clear_gallery("the selection changed: press Gallery for its particles")

    def _on_epoch(self, *_) -> None:
        if self._gallery_key is not None:
            self._clear_gallery("another epoch: press Gallery for its model's projections")

    def _clear_gallery(self, why: str) -> None:
        """Never show pairs of an older selection or epoch (their caption would be wrong)."""
        self.gallery_job.cancel()
        self._gallery_key = None
        if self.gallery.thumbnails or why == "":
            self.gallery.set_pairs([], [], [], why)

    def update_state(self, *_) -> None:
        s = self.session
        n_sel = s.n_selected if s is not None else 0
        if s is None:
            self.count.setText("no run open")
        else:
            self.count.setText(f"selected {n_sel} of {s.n} ({100.0 * n_sel / s.n:.1f}%)")
        for b in (self.gallery_btn, self.save_btn, self.export_btn, self.train_btn):
            b.setEnabled(n_sel > 0)
        for b in (self.save_btn, self.export_btn, self.train_btn):
            b.setToolTip(b.toolTip() if n_sel else EMPTY_TIP)
        self.invert_btn.setEnabled(s is not None)
        self.clear_btn.setEnabled(n_sel > 0)
        self.undo_btn.setEnabled(s is not None and s.can_undo)
        if s is not None and n_sel == 0:
            self.count.setText(self.count.text() + " · " + EMPTY_TIP)

    # -- gallery -------------------------------------------------------------------------------
    def show_gallery(self) -> None:
        """Raw | projection pairs for up to N selected particles (an even sample)."""
        s = self.session
        if s is None or not s.n_selected:
            show_error(EMPTY_TIP)
            return
        rows = s.selection.indices()
        n = min(self.n_gallery.value(), len(rows))
        pick = rows[np.linspace(0, len(rows) - 1, n).astype(int)]
        self.gallery.caption.setText(f"computing {n} projections…")
        self._gallery_key = self._selection_key()  # the selection and epoch it shows
        self.gallery_job.submit(_pairs, s, pick)

    def _on_gallery_error(self, message: str) -> None:
        show_error(message)
        self.gallery.caption.setText(message)

    def _on_pairs(self, result) -> None:
        idx, raw, proj = result
        self.gallery.set_pairs(idx, raw, proj, f"{len(idx)} of {self.session.n_selected} "
                               "selected: raw | model projection (click to locate)")

    @property
    def gallery_ready(self) -> bool:
        return not self.gallery_job.busy and bool(self.gallery.thumbnails)

    def highlight(self, index: int) -> None:
        """Mark particle ``index`` on the scatter (and remember it as a pick)."""
        s, ex = self.session, self.explore
        xy = s.embedding(s.space)[index]
        ex.scatter.set_marker(xy)
        ex.picks = (ex.picks + [int(index)])[-2:]
        ex.info.setText(f"particle {index} at ({xy[0]:.3g}, {xy[1]:.3g})")

    # -- saving ----------------------------------------------------------------------------------
    def save_index(self, path) -> tuple[Path, Path] | None:
        try:
            if not self.session or not self.session.n_selected:
                raise InputError(EMPTY_TIP)
            paths = self.session.save_selection(path)
        except InputError as e:
            show_error(str(e))
            return None
        show_info(f"saved {self.session.n_selected} particles to {paths[0]} (+ inverse)")
        return paths

    def export_subset(self, path):
        """Save the index next to ``path`` (…_ind.pkl), then write the .star/.cs/.mrcs subset
        in a worker. Returns the job's request id (or None on bad input)."""
        path = Path(path)
        if path.suffix.lower() not in (".star", ".cs", ".mrcs"):
            show_error(f"{path.name}: choose a .star, .cs or .mrcs file name")
            return None
        if path.exists():
            show_error(f"{path} exists; nothing was overwritten. Choose another name.")
            return None
        saved = self.save_index(path.with_name(path.stem + "_ind.pkl"))
        if saved is None:
            return None
        return self.export_job.submit(_export, saved[0], self.session.folder, path)

    def _on_exported(self, result) -> None:
        for e in result:
            show_info(f"wrote {e.count} particles to {e.path}")

    def _on_save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the selection as a cryoDRGN index",
                                              str(self.session.workdir / "selection.pkl"),
                                              "Index (*.pkl)")
        if path:
            self.save_index(path)

    def _on_export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the selected particles", str(self.session.workdir / "selected.star"),
            "RELION (*.star);;cryoSPARC (*.cs);;Stack (*.mrcs)")
        if path:
            self.export_subset(path)

    def locate_index(self, path) -> bool:
        """Give the run's index file (the recorded one is not found)."""
        try:
            self.session.locate_index(path)
        except InputError as e:
            show_error(str(e))
            return False
        show_info(f"{self.session.workdir.name}: particle numbering from {path}")
        self._update_locate()
        return True

    def _on_locate_clicked(self) -> None:
        rec = self.session.folder.recorded("ind")
        path, _ = QFileDialog.getOpenFileName(
            self, f"Locate the index file the run was trained with ({rec.name if rec else ''})",
            str(self.session.workdir.parent), "Index (*.pkl *.txt);;All files (*)")
        if path:
            self.locate_index(path)

    # -- re-training ---------------------------------------------------------------------------
    def train_on_selection(self, outdir=None, **overrides):
        """Save the selection into the new run's folder and start training there in the Train
        dock; the new run opens in this explorer when it finishes."""
        s = self.session
        if s is None or not s.n_selected:
            show_error(EMPTY_TIP)
            return None
        outdir = Path(outdir) if outdir else _free_name(s.workdir.parent /
                                                         f"{s.workdir.name}_sel{s.n_selected}")
        ind = self.save_index(outdir.parent / f"{outdir.name}_selection.pkl")
        if ind is None:
            return None
        viewer = self.explore.viewer
        _, train = viewer.window.add_plugin_dock_widget("napari-cryodrgn", "Train")
        train.start_selection_run(s.workdir, ind[0], outdir, parent_epoch=s.epoch,
                                  on_done=self.explore.open_run, **overrides)
        return train

    def _on_train_clicked(self) -> None:
        self.train_on_selection()


def _free_name(p: Path) -> Path:
    if not p.exists():
        return p
    k = 2
    while p.with_name(f"{p.name}_{k}").exists():
        k += 1
    return p.with_name(f"{p.name}_{k}")
