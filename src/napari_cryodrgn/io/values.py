"""Per-particle values from a file (.npy, .txt/.csv, or a .pkl holding one array): the
numbers a user brings to colour the latent space (a score from another program, a class,
a local-resolution estimate...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

SUFFIXES = (".npy", ".txt", ".csv", ".pkl")


def load_values(path) -> np.ndarray:
    """A 1D float array from ``path``; InputError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; check the file name.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            v = np.load(path, allow_pickle=False)
        elif suffix in (".txt", ".csv"):
            v = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, ndmin=1)
        elif suffix == ".pkl":
            from .safepickle import load_pickle

            v = load_pickle(path)
        else:
            raise InputError(f"{path}: per-particle values are read from "
                             f"{', '.join(SUFFIXES)} files.")
    except (ValueError, OSError) as e:
        raise InputError(f"{path} does not hold per-particle numbers ({e}).") from None
    v = np.asarray(v)
    if v.ndim == 2 and 1 in v.shape:
        v = v.ravel()
    if v.ndim != 1 or v.dtype.kind not in "biuf":
        raise InputError(f"{path} holds an array of shape {v.shape} ({v.dtype}); a colouring "
                         "needs one number per particle.")
    return v.astype(np.float32)
