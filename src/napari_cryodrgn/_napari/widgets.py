"""Small Qt building blocks shared by the docks."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QSize, Qt, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


def show_path_end(edit: QLineEdit) -> None:
    """Make a path field show the end of its path (the file name) rather than its start:
    after the program sets it, and when the user leaves it after editing, the cursor goes to
    the end (the line edit scrolls to keep the cursor in view)."""

    def to_end(*_):
        if not edit.hasFocus():
            edit.end(False)

    edit.textChanged.connect(to_end)
    edit.editingFinished.connect(lambda: edit.end(False))


class PathEdit(QWidget):
    """A line edit for a file or folder path with a browse button; it shows the path's end."""

    def __init__(self, mode: str = "file", filter: str = "", placeholder: str = "",
                 parent=None):
        super().__init__(parent)
        self.mode, self.filter = mode, filter
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText(placeholder)
        show_path_end(self.edit)
        self.button = QToolButton(self)
        self.button.setText("…")
        self.button.setToolTip("Browse")
        self.button.clicked.connect(self._browse)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit)
        lay.addWidget(self.button)
        self.textChanged = self.edit.textChanged

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, value) -> None:
        self.edit.setText("" if value is None else str(value))
        self.edit.end(False)

    def _browse(self) -> None:
        if self.mode == "dir":
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.text())
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.text(), self.filter)
        if path:
            self.setText(path)


class Section(QWidget):
    """A titled part of a dock that the user can fold away: a header button (an arrow and
    the title) above a body. A folded section takes only its header's height, so the dock
    fits smaller screens; an open one grows with the dock (plots). Hand-written because
    superqt's QCollapsible pins its content to a fixed height once open, so the loss curves
    could not grow with the dock."""

    toggled = Signal(bool)

    def __init__(self, title: str, body: QWidget, expanded: bool = True, parent=None):
        super().__init__(parent)
        self.header = QToolButton(self)
        self.header.setText(title)
        self.header.setCheckable(True)
        self.header.setAutoRaise(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.header.setToolTip(f"Show or hide: {title}")
        self.body = body
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.header)
        lay.addWidget(body, 1)
        self.header.toggled.connect(self.setExpanded)
        self.setExpanded(expanded)

    def isExpanded(self) -> bool:
        return self.header.isChecked()

    def setExpanded(self, on: bool) -> None:
        if self.header.isChecked() != on:
            self.header.setChecked(on)  # comes back here through toggled
            return
        self.header.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.body.setVisible(on)
        self.setSizePolicy(QSizePolicy.Policy.Preferred,
                           QSizePolicy.Policy.Expanding if on else QSizePolicy.Policy.Maximum)
        self.toggled.emit(on)


class FitScrollArea(QScrollArea):
    """A vertical scroll area around a long form: it asks for the form's whole height (a plain
    QScrollArea caps its size hint), so the form shows whole where there is room, yet it can
    shrink to ``min_height`` and scroll, so the dock also fits a small screen. It never
    scrolls sideways: it is as wide as the form needs (a form cut at its right edge would hide
    the ends of its path fields, the file names)."""

    def __init__(self, content: QWidget, min_height: int = 140, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(content)
        self.min_height = min_height
        content.installEventFilter(self)

    def _width_for(self, content_width: int) -> int:
        # room for the vertical scroll bar, whether or not it shows now
        return content_width + 2 * self.frameWidth() + self.verticalScrollBar().sizeHint().width()

    def sizeHint(self) -> QSize:
        w = self.widget()
        if w is None:
            return super().sizeHint()
        hint = w.sizeHint().expandedTo(w.minimumSizeHint())
        return QSize(self._width_for(hint.width()), hint.height() + 2 * self.frameWidth())

    def minimumSizeHint(self) -> QSize:
        w = self.widget()
        if w is None:
            return super().minimumSizeHint()
        return QSize(self._width_for(w.minimumSizeHint().width()), self.min_height)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the form grew or shrank (e.g. Advanced opened)
        return super().eventFilter(obj, event)
