"""Rotating movies (GIF) of the 3D view: a map turning once around, or a map series played
while it turns. Frames are rendered one per event-loop tick, so the window stays live."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from qtpy.QtCore import QObject, QTimer, Signal

from ..errors import InputError


def _camera(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


class MovieRecorder(QObject):
    """Render ``frames`` views turning 360 degrees about the vertical axis and write them as a
    looping GIF at ``path``. With ``show_frame`` (a callable that puts map ``i`` of a series
    of ``n_series`` on screen) the series plays while the view turns; ``ready()`` says when
    the asked map is on screen (a frame whose surface is still being made is waited for)."""

    finished = Signal(object)  # the written Path, or an InputError

    def __init__(self, viewer, path, frames: int = 36, fps: int = 12, show_frame=None,
                 n_series: int = 0, ready=None):
        super().__init__()
        path = Path(path)
        if path.suffix.lower() != ".gif":
            raise InputError(f"{path.name}: movies are written as .gif files")
        if path.exists():
            raise InputError(f"{path} exists; nothing was overwritten. Choose another name.")
        if not path.parent.is_dir():
            raise InputError(f"{path.parent} does not exist")
        if viewer.dims.ndisplay != 3:
            viewer.dims.ndisplay = 3
        self.viewer, self.path, self.fps = viewer, path, fps
        self.show_frame, self.ready = show_frame, ready or (lambda: True)
        self.n_series = n_series if show_frame is not None else 0
        self.frames = max(frames, self.n_series)
        self._asked = -1  # the last frame whose map was asked for
        self.cam = _camera(viewer)
        self.start_angles = tuple(self.cam.angles)
        self.images: list = []
        self.timer = QTimer(self)
        self.timer.setInterval(0)
        self.timer.timeout.connect(self._frame)

    def start(self) -> None:
        self.timer.start()

    @property
    def done(self) -> bool:
        return not self.timer.isActive() and len(self.images) == self.frames

    def _frame(self) -> None:
        k = len(self.images)
        if self.show_frame is not None:
            if self._asked != k:
                self._asked = k
                self.show_frame(k * self.n_series // self.frames)
            if not self.ready():
                return  # its surface is still being made: film it on a later tick
        a = self.start_angles
        self.cam.angles = (a[0], a[1] + 360.0 * k / self.frames, a[2])
        self.images.append(self.viewer.screenshot(canvas_only=True))
        if len(self.images) == self.frames:
            self.timer.stop()
            self.cam.angles = self.start_angles
            self.finished.emit(self._write())

    def _write(self):
        import imageio.v2 as imageio

        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp.gif")
        # the canvas may change size while recording (a dims slider appears): crop to common
        h = min(im.shape[0] for im in self.images)
        w = min(im.shape[1] for im in self.images)
        frames = [im[(im.shape[0] - h) // 2:(im.shape[0] - h) // 2 + h,
                     (im.shape[1] - w) // 2:(im.shape[1] - w) // 2 + w, :3]
                  for im in self.images]
        try:
            imageio.mimsave(tmp, frames,
                            duration=1000.0 / self.fps, loop=0)
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            return InputError(f"could not write {self.path}: {e}")
        return self.path
