"""A selection of particles: a boolean mask with modes, undo and autosave, and a psygnal event.

::

    sel = Selection(n, file=WORKDIR/explore/selection.npy, autosave=True)  # restored from
                                             # file when it fits; saved after each change
    sel.changed.connect(callback)            # callback(count, mode), only when the mask changes
    sel.set(mask_or_indices, mode="replace") # modes: replace, add, subtract, intersect
    sel.invert(); sel.clear(); sel.undo() -> bool; sel.can_undo
    sel.mask (read-only (n,) bool), sel.count, sel.indices() -> int64 rows

Qt-free; the Session, the CLI (``select --saved``) and the Explore dock share it. The mask is
saved (atomically) after each change when ``file`` is given, so a closed window or a crash
keeps the user's work.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from psygnal import Signal

from .errors import InputError
from .io.atomic import atomic_write

log = logging.getLogger(__name__)

MODES = ("replace", "add", "subtract", "intersect")
UNDO_DEPTH = 100


class Selection:
    """See the module docstring."""

    changed = Signal(int, str)  # count, mode ("replace", ..., "invert", "clear", "undo")

    def __init__(self, n: int, file: str | Path | None = None, autosave: bool = True,
                 undo_depth: int = UNDO_DEPTH):
        self.n = int(n)
        self.file = Path(file) if file is not None else None
        self.autosave = autosave
        self._mask = np.zeros(self.n, bool)
        self.version = 0  # counts the changes: equal versions, equal selections
        self._undo: list[bytes] = []
        self._depth = undo_depth
        self._restore()

    # -- reading ---------------------------------------------------------------------------
    @property
    def mask(self) -> np.ndarray:
        view = self._mask.view()
        view.flags.writeable = False
        return view

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self._mask))

    def indices(self) -> np.ndarray:
        """Selected rows, 0-based int64."""
        return np.flatnonzero(self._mask).astype(np.int64)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"Selection({self.count} of {self.n})"

    # -- changing --------------------------------------------------------------------------
    def as_mask(self, which) -> np.ndarray:
        """A bool mask from a mask or an array of row indices (checked)."""
        arr = np.asarray(which)
        if arr.dtype == bool:
            if arr.shape != (self.n,):
                raise InputError(f"a selection mask needs {self.n} values, got {arr.shape}")
            return arr.copy()
        idx = arr.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise InputError(f"particle indices must be in 0..{self.n - 1}")
        mask = np.zeros(self.n, bool)
        mask[idx] = True
        return mask

    def set(self, which, mode: str = "replace") -> int:
        """Combine ``which`` (mask or indices) with the selection; returns the new count."""
        if mode not in MODES:
            raise InputError(f"selection mode {mode!r}: use one of {', '.join(MODES)}")
        m = self.as_mask(which)
        new = {"replace": m, "add": self._mask | m, "subtract": self._mask & ~m,
               "intersect": self._mask & m}[mode]
        self._apply(new, mode)
        return self.count

    def invert(self) -> None:
        self._apply(~self._mask, "invert")

    def clear(self) -> None:
        self._apply(np.zeros(self.n, bool), "clear")

    def undo(self) -> bool:
        """Go back to the selection before the last change; False when there is none."""
        if not self._undo:
            return False
        bits = np.frombuffer(self._undo.pop(), np.uint8)
        self._apply(np.unpackbits(bits, count=self.n).astype(bool), "undo", record=False)
        return True

    def _apply(self, new: np.ndarray, mode: str, record: bool = True) -> None:
        if np.array_equal(new, self._mask):
            return  # signals fire only on change
        if record:
            self._undo.append(np.packbits(self._mask).tobytes())
            del self._undo[:-self._depth]
        self._mask = np.asarray(new, bool)
        self.version += 1
        self._save()
        self.changed.emit(self.count, mode)

    # -- persistence -----------------------------------------------------------------------
    def _save(self) -> None:
        if self.file is None or not self.autosave:
            return
        try:
            self.file.parent.mkdir(exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, self._mask)
            with atomic_write(self.file, "wb") as f:
                f.write(buf.getvalue())
        except (OSError, InputError) as e:
            log.warning("selection not saved (%s)", e)

    def _restore(self) -> None:
        if self.file is None or not self.file.is_file():
            return
        try:
            saved = np.load(self.file, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("ignoring saved selection %s (%s)", self.file, e)
            return
        if saved.dtype == bool and saved.shape == (self.n,):
            self._mask = saved.copy()
        else:
            log.warning("ignoring saved selection %s: %s values for %d particles", self.file,
                        saved.shape, self.n)
