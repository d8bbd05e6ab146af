"""Atomic file writes and output-folder checks."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and move it onto ``path``.

    ``mode`` is "wb" or "w" (UTF-8 text). If the block raises, the temporary file is removed
    and ``path`` is left as it was. Permissions follow the umask, as for a plain ``open``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', not {mode!r}")
    path = Path(path)
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise InputError(f"Cannot write {path}: {e.strerror}; choose a writable folder.") from e
    try:
        kwargs = {"encoding": "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_TEMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def temp_name(path: Path) -> Path:
    """The temporary name a file is written under before it is moved onto ``path``
    (``.NAME.<8 hex digits>.tmp`` beside it; :func:`is_temp_name` and :func:`remove_stale_temps`
    know them)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file left by an interrupted atomic write."""
    return _TEMP.match(name) is not None


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` leaves when its process is killed
    mid-write (``.NAME.<8 hex digits>.tmp``); call it only where no other writer is active."""
    gone = []
    for p in Path(folder).iterdir():
        if is_temp_name(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                gone.append(p)
    return gone


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` if needed and check that files can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"Output folder {path} is an existing file; choose a folder name.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"Cannot create output folder {path}: {e.strerror}; choose another location."
        ) from e
    probe = path / f".write_test.{secrets.token_hex(4)}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as e:
        raise InputError(
            f"Output folder {path} is not writable ({e.strerror}); choose another location."
        ) from e
    return path


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder onto ``out``, replacing an old one only after it is complete."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out: Path, tag: str = "partial") -> Iterator[Path]:
    """A hidden folder beside ``out`` to write a result folder into; moved onto ``out``
    (:func:`replace_dir`) when the block ends normally, removed when it does not (an error, or
    a generator writing it closed early), so ``out`` is never half-written."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.{tag}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
