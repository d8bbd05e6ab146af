"""The Map series section's player: a frame slider, Play, and a grid of labelled thumbnails
(one per map: the k-means centre maps, the steps of a traversal) to jump to a map. The dock
shows the chosen frame in its one map layer; this widget only says which frame."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QSize, Qt, QTimer, Signal
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

THUMB_PX = 64
GRID_COLUMNS = 5


def thumbnail(vol: np.ndarray, size: int = THUMB_PX) -> np.ndarray:
    """A map's projection along its first axis (the view down z), 8-bit, about ``size`` px:
    a picture of the map's shape for the grid, computed in the worker that decoded it."""
    proj = np.asarray(vol, np.float32).sum(axis=0)
    step = max(1, proj.shape[0] // size)
    n = proj.shape[0] // step * step
    proj = proj[:n, :n].reshape(n // step, step, n // step, step).mean(axis=(1, 3))
    lo, hi = np.percentile(proj, [1, 99.8])
    scaled = np.clip((proj - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.ascontiguousarray((scaled * 255).astype(np.uint8))


def _icon(img: np.ndarray) -> QIcon:
    h, w = img.shape
    qimg = QImage(img.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QIcon(QPixmap.fromImage(qimg).scaled(
        THUMB_PX, THUMB_PX, Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.SmoothTransformation))


class SeriesPlayer(QWidget):
    """Frames of one series. ``frameChosen(i)`` when the user (slider, Play, a thumbnail)
    asks for frame ``i``; ``ready`` (a callable) tells Play whether the last frame is on
    screen yet, so playing never queues frames faster than they are drawn."""

    frameChosen = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.ready = lambda: True
        self.caption_prefix = ""  # the series and its epoch, set by the dock
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self._on_slider)
        self.play_btn = QPushButton("Play")
        self.play_btn.setCheckable(True)
        self.play_btn.toggled.connect(self._on_play)
        self.fps = QSpinBox()
        self.fps.setRange(1, 30)
        self.fps.setValue(6)
        self.fps.setSuffix(" fps")
        self.fps.valueChanged.connect(lambda v: self.timer.setInterval(int(1000 / v)))
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / self.fps.value()))
        self.timer.timeout.connect(self._tick)
        row = QHBoxLayout()
        row.addWidget(self.play_btn)
        row.addWidget(self.slider, 1)
        row.addWidget(self.fps)
        self.grid = QGridLayout()
        self.grid.setSpacing(2)
        self.thumbs: list[QToolButton] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.caption)
        lay.addLayout(self.grid)
        self.set_series([], [])

    @property
    def n(self) -> int:
        return len(self.thumbs)

    @property
    def frame(self) -> int:
        return self.slider.value()

    def set_series(self, thumbnails: list[np.ndarray], labels: list[str]) -> None:
        """Show a series' frames (none: an empty player)."""
        self.stop()
        for b in self.thumbs:
            self.grid.removeWidget(b)
            b.deleteLater()
        self.thumbs = []
        for i, (img, label) in enumerate(zip(thumbnails, labels, strict=True)):
            b = QToolButton()
            b.setIcon(_icon(img))
            b.setIconSize(QSize(THUMB_PX, THUMB_PX))
            b.setText(label)
            b.setToolTip(f"{label}: show this map")
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            b.setCheckable(True)
            b.clicked.connect(lambda _=False, i=i: self.slider.setValue(i))
            self.grid.addWidget(b, i // GRID_COLUMNS, i % GRID_COLUMNS)
            self.thumbs.append(b)
        self.labels = list(labels)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, self.n - 1))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        for w in (self.slider, self.play_btn, self.fps):
            w.setEnabled(self.n > 1)
        self._mark(0)

    def set_frame(self, i: int) -> None:
        """Show frame ``i`` as chosen without asking for it (the dock showed it)."""
        self.slider.blockSignals(True)
        self.slider.setValue(i)
        self.slider.blockSignals(False)
        self._mark(i)

    def _mark(self, i: int) -> None:
        for j, b in enumerate(self.thumbs):
            b.setChecked(j == i)
        self.caption.setText(f"{self.caption_prefix}{self.labels[i]} ({i + 1} of {self.n})"
                             if self.n else "")

    def _on_slider(self, i: int) -> None:
        self._mark(i)
        self.frameChosen.emit(i)

    def _on_play(self, on: bool) -> None:
        self.play_btn.setText("Pause" if on else "Play")
        if on and self.n > 1:
            self.timer.start()
        else:
            self.timer.stop()

    def _tick(self) -> None:
        if self.ready():
            self.slider.setValue((self.frame + 1) % max(self.n, 1))

    def stop(self) -> None:
        if self.play_btn.isChecked():
            self.play_btn.setChecked(False)

    @property
    def playing(self) -> bool:
        return self.timer.isActive()
