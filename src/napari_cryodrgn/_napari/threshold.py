"""Select by value: a histogram of any per-particle value (per-particle loss, |z|, a z
coordinate, defocus, a .star/.cs column, an imported file) with a draggable range, applied to
the selection as replace, add, subtract or intersect (so it combines with a lasso)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from ..selection import MODES
from .jobs import LatestJob
from .notify import show_error

BINS = 80


def _values(session, name: str):
    """The colouring's values and their histogram (computed in a worker: loss takes long)."""
    v = np.asarray(session.colouring(name), np.float64)
    finite = v[np.isfinite(v)]
    if not len(finite):
        return name, None, None, None
    counts, edges = np.histogram(finite, bins=BINS)
    return name, counts, edges, (float(finite.min()), float(finite.max()))


class ThresholdPanel(QWidget):
    """Histogram + range + mode + Select; acts on ``session`` (set with :meth:`set_session`)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session = None
        self.value = QComboBox()
        self.value.setToolTip("The per-particle value to threshold")
        self.value.currentTextChanged.connect(self._on_value_changed)
        self.plot = pg.PlotWidget()
        self.plot.setMinimumHeight(120)
        self.plot.setMaximumHeight(160)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        # stepMode: one more edge than counts, from the start
        self.hist = pg.PlotCurveItem(x=np.array([0.0, 1.0]), y=np.array([0.0]),
                                     stepMode="center", fillLevel=0,
                                     brush=(120, 200, 255, 120), pen=(120, 200, 255))
        self.plot.addItem(self.hist)
        self.region = pg.LinearRegionItem(values=(0, 1))
        self.region.sigRegionChanged.connect(self._on_region)
        self.plot.addItem(self.region)
        self.lo, self.hi = QDoubleSpinBox(), QDoubleSpinBox()
        for box in (self.lo, self.hi):
            box.setDecimals(6)
            box.setRange(-1e12, 1e12)
            box.valueChanged.connect(self._on_spin)
        self.mode = QComboBox()
        self.mode.addItems(MODES)
        self.mode.setToolTip("replace the selection, or add to, subtract from or intersect "
                             "with it (e.g. a lasso)")
        self.apply_btn = QPushButton("Select range")
        self.apply_btn.clicked.connect(self.apply)
        self.status = QLabel("")
        self.job = LatestJob("values", on_result=self._on_values)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(QLabel("Value"), 0, 0)
        grid.addWidget(self.value, 0, 1, 1, 3)
        grid.addWidget(self.plot, 1, 0, 1, 4)
        grid.addWidget(QLabel("from"), 2, 0)
        grid.addWidget(self.lo, 2, 1)
        grid.addWidget(QLabel("to"), 2, 2)
        grid.addWidget(self.hi, 2, 3)
        grid.addWidget(self.mode, 3, 0, 1, 2)
        grid.addWidget(self.apply_btn, 3, 2, 1, 2)
        grid.addWidget(self.status, 4, 0, 1, 4)
        self._syncing = False
        self.active = False  # values are computed only while the panel is open
        self._stale = True
        self.setEnabled(False)

    # -- session ---------------------------------------------------------------------------
    def set_session(self, session) -> None:
        if self.session is not None:
            self.session.events.colourings.disconnect(self._fill)
            self.session.events.epoch.disconnect(self._refresh)
        self.session = session
        session.events.colourings.connect(self._fill, thread="main")
        session.events.epoch.connect(self._refresh, thread="main")
        self.setEnabled(True)
        self._fill()

    def _fill(self, *_) -> None:
        names = [n for n in self.session.colouring_names() if n != "density"]
        current = self.value.currentText()
        self.value.blockSignals(True)
        self.value.clear()
        self.value.addItems(names)
        self.value.setCurrentText(current if current in names else "|z|")
        self.value.blockSignals(False)
        self._refresh()

    def set_active(self, on: bool) -> None:
        """The panel was opened (True) or folded away (False)."""
        self.active = on
        if on and self._stale:
            self._refresh()

    def _refresh(self, *_) -> None:
        if not self.active:
            self._stale = True  # computed when the panel opens (a loss takes minutes at 1M)
            return
        self._stale = False
        if self.session is not None and self.value.currentText():
            self.status.setText("computing the values…")
            self.job.submit(_values, self.session, self.value.currentText())

    def _on_value_changed(self, _name: str) -> None:
        self._refresh()

    # -- histogram and range ----------------------------------------------------------------
    def _on_values(self, result) -> None:
        name, counts, edges, span = result
        if name != self.value.currentText():
            return
        if counts is None:
            self.status.setText(f"{name}: no finite values")
            return
        self.hist.setData(edges, counts)
        lo, hi = span
        pad = (hi - lo) * 0.02 or 1.0
        self.plot.setXRange(lo - pad, hi + pad, padding=0)
        self.region.setBounds((lo - pad, hi + pad))
        self.set_range(lo, hi)
        self.status.setText(f"{name}: {lo:.4g} to {hi:.4g}; drag the band or type a range")

    def set_range(self, lo: float, hi: float) -> None:
        """Move the band (and the spin boxes) to [lo, hi]."""
        self._syncing = True
        self.region.setRegion((lo, hi))
        self.lo.setValue(lo)
        self.hi.setValue(hi)
        self._syncing = False

    def _on_region(self) -> None:
        if self._syncing:
            return
        lo, hi = self.region.getRegion()
        self._syncing = True
        self.lo.setValue(lo)
        self.hi.setValue(hi)
        self._syncing = False

    def _on_spin(self, _v) -> None:
        if not self._syncing:
            self._syncing = True
            self.region.setRegion((self.lo.value(), self.hi.value()))
            self._syncing = False

    @property
    def range(self) -> tuple[float, float]:
        return float(self.lo.value()), float(self.hi.value())

    def apply(self) -> int | None:
        """Select the particles in the range (with the chosen mode); returns the count."""
        from ..errors import InputError

        if self.session is None:
            return None
        lo, hi = self.range
        try:
            n = self.session.select_range(self.value.currentText(), lo, hi,
                                          self.mode.currentText())
        except InputError as e:
            show_error(str(e))
            return None
        self.status.setText(f"{self.value.currentText()} in [{lo:.4g}, {hi:.4g}] "
                            f"({self.mode.currentText()}): {n} selected")
        return n
