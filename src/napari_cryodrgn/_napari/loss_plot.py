"""Live training curves (reconstruction error and KL divergence) with pyqtgraph.

Each plot is named by its title, a line of its own above it, not by a rotated left-axis label:
two rotated labels taller than their short plots ran into each other ("KLreconstruction").
Both left axes have the same fixed width, so the plots' x axes line up at any dock width; the
upper plot's epoch ticks carry no numbers (the lower plot's do), which leaves the curves room
in a short dock.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtWidgets import QVBoxLayout, QWidget

AXIS_WIDTH = 52  # px: the left axes' width (tick labels such as 0.0123 or 1.2e+03)
TITLE_SIZE = "9pt"
TITLE_HEIGHT = 24  # px: the title's row, its text whole (pyqtgraph's own is 30)


class _TitledPlot(pg.PlotItem):
    """A PlotItem whose title row is :data:`TITLE_HEIGHT` high, however often the title is
    set again (the theme sets it with its colour)."""

    def setTitle(self, title=None, **args):
        super().setTitle(title, **args)
        if title is not None:
            self.titleLabel.setMaximumHeight(TITLE_HEIGHT)
            self.layout.setRowFixedHeight(0, TITLE_HEIGHT)


class LossPlot(QWidget):
    """Two stacked plots sharing the epoch axis: reconstruction error and KL divergence."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.view = pg.GraphicsLayoutWidget(self)
        self.view.setMinimumHeight(200)
        self.view.ci.setSpacing(0)
        self.recon_plot = _TitledPlot()
        self.kl_plot = _TitledPlot()
        self.view.addItem(self.recon_plot, row=0, col=0)
        self.view.addItem(self.kl_plot, row=1, col=0)
        self.recon_plot.setTitle("reconstruction error", size=TITLE_SIZE)
        self.kl_plot.setTitle("KL divergence", size=TITLE_SIZE)
        self.kl_plot.setLabel("bottom", "epoch")
        self.recon_plot.getAxis("bottom").setStyle(showValues=False)
        for plot in (self.recon_plot, self.kl_plot):
            plot.getAxis("left").setWidth(AXIS_WIDTH)
        self.kl_plot.setXLink(self.recon_plot)
        self.recon_curve = self.recon_plot.plot(pen=pg.mkPen("#4fc3f7", width=2))
        self.kl_curve = self.kl_plot.plot(pen=pg.mkPen("#ffb74d", width=2))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.view)
        self.clear()

    def clear(self) -> None:
        self._last = (0, 0, 0.0, 0.0)  # epoch, images, summed reconstruction and KL
        self.x: list[float] = []
        self.recon: list[float] = []
        self.kl: list[float] = []
        self.recon_curve.setData([], [])
        self.kl_curve.setData([], [])

    def add_progress(self, epoch: int, done: int, total: int, recon: float, kl: float) -> None:
        """Add a point from a trainer report, whose losses are means since the epoch began:
        plot the mean over the images since the previous report instead, so the curve does
        not jump back at each new epoch."""
        last_epoch, last_done, last_r, last_k = self._last
        if epoch != last_epoch or done <= last_done:
            last_done, last_r, last_k = 0, 0.0, 0.0
        n = done - last_done
        r_sum, k_sum = recon * done, kl * done
        self._last = (epoch, done, r_sum, k_sum)
        self.add(epoch - 1 + done / max(total, 1), (r_sum - last_r) / n, (k_sum - last_k) / n)

    def add(self, x: float, recon: float, kl: float) -> None:
        """Append one point (x in epochs) and redraw."""
        if self.x and x <= self.x[-1]:
            return
        self.x.append(x)
        self.recon.append(recon)
        self.kl.append(kl)
        xs = np.asarray(self.x)
        self.recon_curve.setData(xs, np.asarray(self.recon))
        self.kl_curve.setData(xs, np.asarray(self.kl))
