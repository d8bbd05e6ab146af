"""Pickles that can hold only numpy arrays and plain Python data, never code.

cryoDRGN stores poses, CTF tables, latent vectors and indices as pickles. A plain
``pickle.load`` would run whatever a crafted file asks for, so every pickle is read through
a restricted unpickler that admits a short list of numpy reconstruction functions.
"""

from __future__ import annotations

import builtins
import codecs
import io
import os
import pickle
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_write

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (latin-1 only)."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591", "utf8"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding)


_NUMPY = {
    "_reconstruct": _multiarray._reconstruct,
    "scalar": _multiarray.scalar,
    "_frombuffer": _numeric._frombuffer,
}
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _NUMPY["_reconstruct"]
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _NUMPY["scalar"]
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _NUMPY["_frombuffer"]
for _name in ("int", "float", "complex", "bool", "str", "bytes", "bytearray", "tuple", "list",
              "dict", "set", "frozenset"):
    _ALLOWED[("builtins", _name)] = _ALLOWED[("__builtin__", _name)] = getattr(builtins, _name)


class RefusedPickle(pickle.UnpicklingError):
    """A pickle asked for something outside the allowed list."""

    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{module}.{name}") from None


def _refuse(path: Path, err: RefusedPickle) -> InputError:
    return InputError(
        f"{path} refuses to load: it contains {err.qualname}, which could run code. "
        "Only pickles of numpy arrays and plain data are accepted; re-save it with numpy."
    )


def load_pickles(path: str | os.PathLike, n: int | None = None) -> list:
    """Read consecutive pickles from one file (all of them, or the first ``n``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the file name.") from None
    except OSError as e:
        raise InputError(f"Cannot read {path}: {e.strerror}.") from e
    buf = io.BytesIO(data)
    objs = []
    while (n is None or len(objs) < n) and buf.tell() < len(data):
        try:
            objs.append(_SafeUnpickler(buf).load())
        except RefusedPickle as e:
            raise _refuse(path, e) from None
        except Exception as e:
            raise InputError(
                f"{path} is not a readable pickle (object {len(objs) + 1}: "
                f"{type(e).__name__}: {e}); is the file truncated or of another format?"
            ) from None
    if not objs or (n is not None and len(objs) < n):
        raise InputError(
            f"{path} holds {len(objs)} pickled objects but {n or 1} or more were expected; "
            "is the file empty or truncated?"
        )
    return objs


def load_pickle(path: str | os.PathLike):
    """Read the first pickled object of a file through the restricted unpickler."""
    return load_pickles(path, n=1)[0]


def save_pickle(path: str | os.PathLike, *objs) -> None:
    """Write one or more pickles back to back, atomically (protocol 4)."""
    if not objs:
        raise ValueError("save_pickle needs at least one object")
    with atomic_write(path, "wb") as f:
        for obj in objs:
            pickle.dump(obj, f, protocol=4)


def load_torch_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with the failures turned into InputError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Checkpoint {path} does not exist; check the training folder.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise InputError(
            f"Checkpoint {path} refuses to load with weights_only=True: it holds objects "
            f"other than tensors and plain data ({str(e).splitlines()[0]}). "
            "Only checkpoints from cryoDRGN or napari-cryodrgn are supported."
        ) from None
    except Exception as e:
        raise InputError(
            f"Checkpoint {path} is not a readable torch file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); is it truncated?"
        ) from None
