"""Particle gallery: raw particle images beside the model's projections at their pose and
latent; clicking a pair reports the particle."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

THUMB = 72  # pixels per image
ROWS = 4  # rows of pairs the gallery shows without scrolling
ROW_EXTRA = 24  # the particle-number label and spacing under each pair


def to_pixmap(img: np.ndarray, size: int = THUMB) -> QPixmap:
    """A grey pixmap of ``img`` scaled between its 1st and 99th percentiles."""
    lo, hi = np.percentile(img, [1, 99])
    g = np.clip((img - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
    g = np.ascontiguousarray(g)
    h, w = g.shape
    qimg = QImage(g.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    return QPixmap.fromImage(qimg).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                          Qt.TransformationMode.SmoothTransformation)


class Thumbnail(QWidget):
    """One raw | projection pair of a particle, labelled with its particle number; a click
    emits its index."""

    clicked = Signal(int)

    def __init__(self, index: int, raw: np.ndarray, proj: np.ndarray, parent=None):
        super().__init__(parent)
        self.index = index
        pair = np.concatenate([raw, np.full((raw.shape[0], 2), np.nan), proj], axis=1)
        pair = np.nan_to_num(pair, nan=float(np.nanmin(pair)))
        self.image = QLabel()
        self.image.setPixmap(to_pixmap(pair, 2 * THUMB))
        self.label = QLabel(f"particle {index}")
        self.label.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.image)
        lay.addWidget(self.label)
        self.setToolTip(f"particle {index}: raw image | model projection at its pose and z "
                        "(click to locate it on the scatter)")
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def pixmap(self):
        return self.image.pixmap()

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
        scroll.setMinimumHeight(ROWS * (THUMB + ROW_EXTRA) + 8)  # 4 rows of pairs in view
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
