"""Judging convergence in the Explore dock (as cryoDRGN's analyze_convergence does): the
learning curve (loss per epoch from run.log, the explored epoch marked) and another epoch's
latent space beside this one: the same particles at their positions in that epoch's PCA,
coloured like the main scatter, with the selection linked both ways (a lasso there selects
the same particles here)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtWidgets import QComboBox, QGridLayout, QLabel, QWidget

from ..errors import InputError
from .jobs import LatestJob
from .notify import show_error
from .scatter import LatentScatter


def _other_epoch(session, epoch, colour: str):
    xy = session.epoch_pca(epoch)
    values = session.colouring(colour)
    return epoch, colour, xy, values


class ConvergencePanel(QWidget):
    """Learning curve + a second scatter of another epoch (``compare``)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session = None
        self.curve_plot = pg.PlotWidget()
        self.curve_plot.setMinimumHeight(110)
        self.curve_plot.setMaximumHeight(150)
        self.curve_plot.setLabel("bottom", "epoch")
        self.curve_plot.setLabel("left", "loss")
        self.curve = self.curve_plot.plot(pen=pg.mkPen("#4fc3f7", width=2), symbol="o",
                                          symbolSize=4)
        self.marker = pg.InfiniteLine(angle=90, pen=pg.mkPen("#ffb74d", width=1))
        self.curve_plot.addItem(self.marker)
        self.other = QComboBox()
        self.other.setToolTip("Another epoch: its latent space, the same particles")
        self.other.activated.connect(lambda _i: self.refresh())
        self.compare = LatentScatter(max_display=20_000)
        self.compare.plot.setMinimumHeight(220)
        self.compare.set_tool("lasso")
        self.compare.lassoFinished.connect(self._on_lasso)
        self.status = QLabel("")
        self.job = LatestJob("other epoch", on_result=self._on_other)
        self.losses: dict[int, float] = {}
        self._shown = None  # (epoch, colour) on the compare scatter
        # the other epoch (its latents, a PCA and a colouring: seconds at 1M particles) is
        # computed only while the panel is open, and once it opens after a change
        self.active = False
        self._stale = True
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.curve_plot, 0, 0, 1, 2)
        grid.addWidget(QLabel("Compare with epoch"), 1, 0)
        grid.addWidget(self.other, 1, 1)
        grid.addWidget(self.compare, 2, 0, 1, 2)
        grid.addWidget(self.status, 3, 0, 1, 2)
        self.setEnabled(False)

    def set_session(self, session) -> None:
        if self.session is not None:
            ev = self.session.events
            ev.epoch.disconnect(self._on_epoch)
            ev.colour_by.disconnect(self._on_colour)
            self.session.selection.changed.disconnect(self._on_selection)
        self.session = session
        session.events.epoch.connect(self._on_epoch, thread="main")
        session.events.colour_by.connect(self._on_colour, thread="main")
        session.selection.changed.connect(self._on_selection, thread="main")
        self.setEnabled(True)
        self.losses = session.learning_curve()
        ep = np.array(sorted(self.losses), float)
        self.curve.setData(ep, np.array([self.losses[int(e)] for e in ep], float))
        self._on_epoch(session.epoch)

    # -- following the session ---------------------------------------------------------------
    def _on_epoch(self, epoch, *_) -> None:
        s = self.session
        if epoch is not None:
            self.marker.setValue(epoch)
        others = [e for e in s.epochs if e != epoch]
        current = self.other.currentData()
        self.other.blockSignals(True)
        self.other.clear()
        for e in others:
            self.other.addItem(str(e), e)
        if others:
            pick = current if current in others else others[0]
            self.other.setCurrentIndex(self.other.findData(pick))
        self.other.blockSignals(False)
        self.refresh()

    def _on_colour(self, *_) -> None:
        self.refresh()

    def _on_selection(self, *_) -> None:
        s = self.session
        if self._shown is not None:
            self.compare.set_selection(s.selection.mask if s.n_selected else None)

    def set_active(self, on: bool) -> None:
        """The panel was opened (True) or folded away (False)."""
        self.active = on
        if on and self._stale:
            self.refresh()

    def refresh(self) -> None:
        """Show the chosen other epoch (computed in a worker; later if the panel is folded)."""
        s = self.session
        if not self.active:
            self._stale = True
            return
        self._stale = False
        epoch = self.other.currentData()
        if s is None or epoch is None:
            self.status.setText("this run has a single epoch" if s is not None else "")
            return
        self.status.setText(f"loading epoch {epoch}…")
        self.job.submit(_other_epoch, s, epoch, s.colour_by)

    def _on_other(self, result) -> None:
        epoch, colour, xy, values = result
        s = self.session
        if epoch != self.other.currentData() or colour != s.colour_by:
            self.refresh()
            return
        self.compare.set_points(xy, values, s.is_categorical(colour), ("PC1", "PC2"),
                                names=s.category_labels(colour), title=colour)
        self._shown = (epoch, colour)
        self._on_selection()
        loss = self.losses.get(epoch)
        self.status.setText(f"epoch {epoch}" + (f" (loss {loss:.5f})" if loss else "") +
                            f" beside epoch {s.epoch}; a lasso here selects those particles")

    def _on_lasso(self, polygon: np.ndarray, mode: str) -> None:
        if self._shown is None:
            return
        try:
            self.session.select_polygon_at(self.compare.xy, polygon, mode)
        except InputError as e:
            show_error(str(e))
