"""Particle subsets for the next program: RELION .star, cryoSPARC .cs and .mrcs stacks.

``rows`` are original-stack indices (0-based rows of the source file, as in cryoDRGN index
pickles). Every writer validates them against the source (an index from another dataset or an
empty selection raises InputError naming the file, the largest index and the dataset size),
writes the subset in the source's order (sorted indices) and writes atomically: a temporary
file beside the output, renamed when complete.

- :func:`write_star_subset` copies the .star file line by line and drops the unselected rows of
  its particle table: every column, every other table (the RELION 3.1 optics table included),
  comments and number formatting stay byte for byte as they were. Stack paths in
  ``_rlnImageName`` are kept as written (RELION reads them relative to its project folder).
- :func:`write_cs_subset` keeps every field of the cryoSPARC table (``np.save`` format).
- :func:`write_mrcs_subset` streams the selected images into a new float32 stack in bounded
  memory (a chunk of images at a time).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_write
from .cs import read_cs
from .mrc import StackWriter

log = logging.getLogger(__name__)


def check_rows(rows, n: int, source, name=None) -> np.ndarray:
    """Validate a selection of ``n``-particle ``source``; return it sorted (int64).

    ``name`` names the selection in messages (an index file's path), default "the selection".
    """
    label = str(name) if name is not None else "the selection"
    arr = np.asarray(rows)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise InputError(f"{label}: a selection mask needs {n} values for {source}, got "
                             f"{arr.shape}")
        arr = np.flatnonzero(arr)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InputError(f"{label}: expected a 1-D array of particle indices, found {arr.dtype} "
                         f"with shape {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size == 0:
        raise InputError(f"{label} selects no particles; an empty selection cannot be exported "
                         "or trained on")
    if arr.min() < 0:
        raise InputError(f"{label} holds a negative index ({arr.min()}); indices start at 0")
    if arr.max() >= n:
        raise InputError(f"{label} holds indices up to {arr.max()} but {source} has {n} "
                         f"particles (0..{n - 1}): is it from another dataset?")
    out = np.sort(arr)
    dup = out[1:] == out[:-1]
    if dup.any():
        raise InputError(f"{label} lists particle {out[1:][dup][0]} more than once")
    return out


def _check_out(src: Path, out: Path) -> Path:
    out = Path(out)
    if out.exists() and src.exists() and os.path.samefile(src, out):
        raise InputError(f"{out} is the source file itself; choose another output name")
    return out


# -- .star -------------------------------------------------------------------------------------
def _walk_star(lines):
    """Classify the lines of a .star file: yield (line, data block name, loop index (-1
    before the first ``loop_``), whether the line is a row of that loop's table)."""
    block, loop, state = "", -1, "outside"  # states: outside, labels, rows
    for raw in lines:
        s = raw.strip()
        is_row = False
        if s.startswith(b"data_"):
            block = (s[5:].split() or [b""])[0].decode("utf-8", "replace")
            state = "outside"
        elif s.startswith(b"loop_"):
            loop, state = loop + 1, "labels"
        elif not s or s.startswith(b"_"):
            if state == "rows":
                state = "outside"
        elif s.startswith(b"#"):
            pass
        elif state in ("labels", "rows"):
            state, is_row = "rows", True
        yield raw, block, loop, is_row


class _StarScan:
    """Where the loops of a .star file are: per line, the loop and row it belongs to."""

    def __init__(self, path: Path):
        self.path = path
        self.loops: list[tuple[str, int]] = []  # (block name, number of rows) per loop
        try:
            with open(path, "rb") as f:
                for _raw, block, loop, is_row in _walk_star(f):
                    if loop == len(self.loops):
                        self.loops.append((block, 0))
                    if is_row:
                        name, count = self.loops[loop]
                        self.loops[loop] = (name, count + 1)
        except OSError as e:
            raise InputError(f"Cannot read {path}: {e.strerror}") from None
        # the particle table: the largest loop that is not the optics table (as read_star)
        cands = [i for i, (b, c) in enumerate(self.loops) if b != "optics" and c > 0]
        if not cands:
            raise InputError(f"{path} contains no particle table (a data_ block with a loop_)")
        self.particle_loop = max(cands, key=lambda i: self.loops[i][1])
        self.n = self.loops[self.particle_loop][1]

    def copy(self, out, keep: np.ndarray) -> int:
        """Write the file to ``out`` with only the particle rows where ``keep`` is True."""
        row, written = 0, 0
        with open(self.path, "rb") as f, atomic_write(out, "wb") as g:
            for raw, _block, loop, is_row in _walk_star(f):
                if is_row and loop == self.particle_loop:
                    row += 1
                    if not keep[row - 1]:
                        continue
                    written += 1
                g.write(raw)
        if row != self.n:  # the file changed between the two passes
            raise InputError(f"{self.path} changed while it was being copied; try again")
        return written


def star_particle_count(path) -> int:
    """Rows of the particle table of a .star file (a fast line scan, no parsing of values)."""
    return _StarScan(Path(path)).n


def write_star_subset(src_star, rows, out, name=None) -> int:
    """Write the particles ``rows`` of ``src_star`` to ``out``; returns the count written.

    Every line other than the unselected particle rows is copied unchanged, so all columns,
    the optics table and the formatting are kept (see the module docstring)."""
    src = Path(src_star)
    if not src.is_file():
        raise InputError(f"{src} does not exist; check the file name")
    scan = _StarScan(src)
    sel = check_rows(rows, scan.n, src, name)
    out = _check_out(src, out)
    keep = np.zeros(scan.n, bool)
    keep[sel] = True
    return scan.copy(out, keep)


# -- .cs ---------------------------------------------------------------------------------------
def write_cs_subset(src_cs, rows, out, name=None) -> int:
    """Write the rows ``rows`` of cryoSPARC table ``src_cs`` (every field) to ``out``."""
    src = Path(src_cs)
    arr = read_cs(src)
    sel = check_rows(rows, len(arr), src, name)
    out = _check_out(src, out)
    sub = np.asarray(arr[sel])
    with atomic_write(out, "wb") as f:
        np.save(f, sub, allow_pickle=False)
    return len(sub)


# -- .mrcs -------------------------------------------------------------------------------------
def write_mrcs_subset(source, rows, out, apix: float | None = None, name=None,
                      chunk: int = 256,
                      progress: Callable[[int, int], None] | None = None) -> int:
    """Stream the images ``rows`` of ``source`` (a ParticleSource or a particle file) into a
    float32 .mrcs stack ``out``, ``chunk`` images at a time; returns the count written.

    ``apix`` defaults to the source's pixel size; when neither gives one the stack records
    none (an empty cell), never a guess. ``progress(done, total)`` is called after each
    chunk."""
    from .particles import ParticleSource, open_particles

    src = source if isinstance(source, ParticleSource) else open_particles(source)
    sel = check_rows(rows, src.n, src.path, name)
    out = _check_out(src.path, out)
    if apix is None:
        apix = src.apix
    if apix is None:
        log.warning("%s gives no pixel size, so %s records none (pass the pixel size to set "
                    "it)", src.path, out)
    n = len(sel)
    with StackWriter(out, n, src.D, apix) as w:
        for s in range(0, n, chunk):
            w.write(src.images(sel[s : s + chunk]))
            if progress is not None:
                progress(min(s + chunk, n), n)
    return n
