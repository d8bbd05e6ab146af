"""Particle gallery: raw particle images beside the model's projections at their pose and
latent; clicking a pair reports the particle."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

THUMB = 72  # pixels per image


def to_pixmap(img: np.ndarray, size: int = THUMB) -> QPixmap:
    """A grey pixmap of ``img`` scaled between its 1st and 99th percentiles."""
    lo, hi = np.percentile(img, [1, 99])
    g = np.clip((img - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
    g = np.ascontiguousarray(g)
    h, w = g.shape
    qimg = QImage(g.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QPixmap.fromImage(qimg).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.SmoothTransformation)


class Thumbnail(QLabel):
    """One raw | projection pair of a particle; a click emits its index."""

    clicked = Signal(int)

    def __init__(self, index: int, raw: np.ndarray, proj: np.ndarray, parent=None):
        super().__init__(parent)
        self.index = index
        pair = np.concatenate([raw, np.full((raw.shape[0], 2), np.nan), proj], axis=1)
        pair = np.nan_to_num(pair, nan=float(np.nanmin(pair)))
        self.setPixmap(to_pixmap(pair, 2 * THUMB))
        self.setToolTip(f"particle {index}: raw image | model projection at its pose and z")
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def mousePressEvent(self, ev):  # noqa: N802 - Qt override
        if ev.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(self.index)
        super().mousePressEvent(ev)


class Gallery(QWidget):
    """A scrolling grid of :class:`Thumbnail` pairs."""

    particleClicked = Signal(int)

    def __init__(self, columns: int = 2, parent=None):
        super().__init__(parent)
        self.columns = columns
        self.inner = QWidget()
        self.grid = QGridLayout(self.inner)
        self.grid.setSpacing(4)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.inner)
        scroll.setMinimumHeight(2 * THUMB + 24)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel("")
        lay.addWidget(self.caption)
        lay.addWidget(scroll)
        self.thumbnails: list[Thumbnail] = []

    def set_pairs(self, indices, raw: np.ndarray, proj: np.ndarray, caption: str = "") -> None:
        for t in self.thumbnails:
            t.setParent(None)
            t.deleteLater()
        self.thumbnails = []
        for k, (i, r, p) in enumerate(zip(indices, raw, proj, strict=True)):
            t = Thumbnail(int(i), r, p)
            t.clicked.connect(self.particleClicked)
            self.grid.addWidget(t, k // self.columns, k % self.columns)
            self.thumbnails.append(t)
        self.caption.setText(caption)
