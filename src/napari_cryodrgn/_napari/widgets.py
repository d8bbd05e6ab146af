"""Small Qt building blocks shared by the docks."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QToolButton, QWidget


class PathEdit(QWidget):
    """A line edit for a file or folder path with a browse button."""

    def __init__(self, mode: str = "file", filter: str = "", placeholder: str = "",
                 parent=None):
        super().__init__(parent)
        self.mode, self.filter = mode, filter
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText(placeholder)
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

    def _browse(self) -> None:
        if self.mode == "dir":
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.text())
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.text(), self.filter)
        if path:
            self.setText(path)
