"""Particle index files (1-D int64 arrays into the original stack) and selections."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .safepickle import load_pickle, save_pickle


def _read_txt(path: Path) -> np.ndarray:
    try:
        words = path.read_text().split()
        return np.array([int(w) for w in words], dtype=np.int64)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(
            f"{path} is not an index file (one integer per line expected): {e}."
        ) from None


def check_index(path: str | os.PathLike, ind, n: int | None) -> np.ndarray:
    """Validate an index array: 1-D, integers, no duplicates, all in 0..n-1."""
    arr = np.asarray(ind)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iuf"):
        raise InputError(
            f"{path} is not an index file: expected a 1-D integer array, found "
            f"{arr.dtype} with shape {arr.shape}."
        )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"{path}: index values must be whole numbers.")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise InputError(f"{path} holds a negative index ({arr.min()}); indices start at 0.")
    if n is not None and arr.size and arr.max() >= n:
        raise InputError(
            f"index file {path} holds indices up to {arr.max()} but the stack has {n} "
            "particles: is it from another dataset?"
        )
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != len(arr):
        raise InputError(
            f"{path} lists particle {uniq[counts > 1][0]} more than once; an index file must "
            "not hold duplicates."
        )
    return arr


def load_index(path: str | os.PathLike, n: int | None) -> np.ndarray:
    """Read an index .pkl (restricted unpickler) or .txt (one integer per line) as int64."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Index file {path} does not exist; check the file name.")
    obj = _read_txt(path) if path.suffix.lower() == ".txt" else load_pickle(path)
    if isinstance(obj, (list, tuple)):
        obj = np.asarray(obj)
    if not isinstance(obj, np.ndarray):
        raise InputError(
            f"{path} is not an index file: expected an integer array, found "
            f"{type(obj).__name__}."
        )
    return check_index(path, obj, n)


def save_index(path: str | os.PathLike, ind) -> None:
    """Write an index pickle (1-D int64) atomically."""
    save_pickle(path, check_index(path, ind, None))


def inverse_path(path: str | os.PathLike) -> Path:
    """``name.pkl`` -> ``name_inverse.pkl`` in the same folder."""
    path = Path(path)
    return path.with_name(f"{path.stem}_inverse.pkl")


def save_selection(path: str | os.PathLike, ind, n: int) -> tuple[Path, Path]:
    """Save a selection (sorted) to ``path`` and the rest of 0..n-1 to ``<stem>_inverse.pkl``."""
    path = Path(path)
    ind = np.sort(check_index(path, ind, n))
    inverse = np.setdiff1d(np.arange(n, dtype=np.int64), ind, assume_unique=True)
    save_pickle(path, ind)
    inv = inverse_path(path)
    save_pickle(inv, inverse)
    return path, inv


def compose_index(run_ind, rows) -> np.ndarray:
    """Original-stack indices of ``rows`` of a run trained on the particles ``run_ind`` (its
    ``--ind``; None: the whole stack, so rows are already original indices)."""
    rows = np.asarray(rows, dtype=np.int64)
    if run_ind is None:
        return rows
    run_ind = np.asarray(run_ind, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(run_ind)):
        raise InputError(f"rows go up to {rows.max()} but the run has {len(run_ind)} particles")
    return run_ind[rows]


def save_selection_within(path: str | os.PathLike, selected, universe) -> tuple[Path, Path]:
    """Save ``selected`` (original numbering, sorted) to ``path`` and the rest of ``universe``
    (the particles of the run the selection was made on) to ``<stem>_inverse.pkl``, as
    cryoDRGN's ``filter`` does. An empty selection, or one outside ``universe``, is refused."""
    path = Path(path)
    sel = np.sort(check_index(path, selected, None))
    universe = np.asarray(universe, dtype=np.int64)
    if sel.size == 0:
        raise InputError(f"{path}: the selection is empty; nothing to save")
    outside = np.setdiff1d(sel, universe, assume_unique=True)
    if outside.size:
        raise InputError(f"{path}: {outside.size} selected particles (first: {outside[0]}) are "
                         "not among the run's particles")
    save_pickle(path, sel)
    inv = inverse_path(path)
    save_pickle(inv, np.setdiff1d(universe, sel))
    return path, inv
