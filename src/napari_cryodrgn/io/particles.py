"""One interface over particle images in .mrcs/.mrc stacks, .star, .cs and .txt files.

Stacks are memory-mapped: opening a source reads headers only, and ``images`` reads just the
requested images. Every problem with the inputs raises InputError naming the file.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import InputError
from .cs import cs_field, cs_paths, read_cs
from .mrc import MrcHeader, memmap_mrc, read_mrc_header
from .star import read_star

MAX_OPEN_STACKS = 64
SUFFIXES = (".mrcs", ".mrc", ".star", ".cs", ".txt")


class ParticleSource:
    """Particle images from one or more MRC stacks, numbered 0..n-1 in the source's order.

    Attributes: ``path`` (the file opened), ``n``, ``D`` (box side), ``apix`` (pixel size in
    Angstrom, or None when the source does not say), ``stacks`` (headers of the stacks),
    ``stack_id`` and ``local_index`` (for each particle, its stack and 0-based image in it).
    """

    def __init__(
        self,
        path: Path,
        stacks: list[MrcHeader],
        stack_id: np.ndarray,
        local_index: np.ndarray,
        apix: float | None,
        lazy: bool = True,
    ):
        self.path = Path(path)
        if not len(local_index):
            raise InputError(f"{self.path} holds no particles.")
        self.stacks = stacks
        self.stack_id = np.asarray(stack_id, dtype=np.int32)
        self.local_index = np.asarray(local_index, dtype=np.int64)
        self.n = len(self.local_index)
        self.D = _check_boxes(self.path, stacks)
        self.apix = apix
        self._maps: OrderedDict[int, np.memmap] = OrderedDict()
        self._eager: np.ndarray | None = None
        if not lazy:
            self._eager = self._read(np.arange(self.n))

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"ParticleSource({str(self.path)!r}, n={self.n}, D={self.D}, apix={self.apix})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = OrderedDict()
        return state

    def _stack(self, i: int) -> np.memmap:
        mm = self._maps.get(i)
        if mm is None:
            mm = memmap_mrc(self.stacks[i])
            self._maps[i] = mm
            if len(self._maps) > MAX_OPEN_STACKS:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(i)
        return mm

    def _read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.D, self.D), dtype=np.float32)
        sid = self.stack_id[idx]
        for s in np.unique(sid):
            rows = np.flatnonzero(sid == s)
            local = self.local_index[idx[rows]]
            order = np.argsort(local, kind="stable")
            out[rows[order]] = self._stack(int(s))[local[order]]
        return out

    def _as_indices(self, indices) -> np.ndarray:
        if isinstance(indices, slice):
            return np.arange(self.n)[indices]
        idx = np.atleast_1d(np.asarray(indices))
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"particle indices must be a 1-D integer array or a slice, not "
                            f"{idx.dtype} with shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"particle index out of range 0..{self.n - 1}")
        return idx.astype(np.int64, copy=False)

    def images(self, indices) -> np.ndarray:
        """Images ``indices`` (int array or slice, source numbering) as float32 (B, D, D)."""
        idx = self._as_indices(indices)
        out = self._eager[idx] if self._eager is not None else self._read(idx)
        finite = np.isfinite(out).all(axis=(1, 2))
        if not finite.all():
            b = int(np.flatnonzero(~finite)[0])
            i = int(idx[b])
            stack = self.stacks[self.stack_id[i]].path
            where = "" if stack == self.path else f" (image {self.local_index[i] + 1} of {stack})"
            raise InputError(
                f"{self.path}: particle {i}{where} contains NaN or Inf pixels. Exclude it with "
                "an index file or re-extract the particles."
            )
        return out


def _check_boxes(meta: Path, stacks: list[MrcHeader]) -> int:
    first = stacks[0]
    _, ny, nx = first.shape
    if ny != nx:
        raise InputError(
            f"{first.path} holds non-square images ({ny} x {nx} pixels); cryoDRGN needs square "
            "particle images. Re-extract with a square box."
        )
    if nx % 2:
        raise InputError(
            f"{first.path} has an odd box size ({nx} pixels); cryoDRGN needs an even box. "
            "Re-extract, crop or downsample to an even size."
        )
    for h in stacks[1:]:
        if h.shape[1:] != first.shape[1:]:
            raise InputError(
                f"{meta}: stacks have different box sizes: {first.path} holds "
                f"{ny} x {nx} images but {h.path} holds {h.shape[1]} x {h.shape[2]}. "
                "All particles must share one box size."
            )
    return nx


def _resolve(name: str, meta: Path, datadir: Path | None) -> Path | None:
    """Find a stack named in a metadata file: under ``datadir``, the metadata file's folder,
    then the working folder; by relative path first, then by file name alone."""
    p = Path(name)
    bases = ([datadir] if datadir is not None else []) + [meta.parent]
    candidates = [p] if p.is_absolute() else []
    for base in bases:
        if not p.is_absolute():
            candidates.append(base / p)
        candidates.append(base / p.name)
    if not p.is_absolute():
        candidates.append(p)
    return next((c for c in candidates if c.is_file()), None)


def _from_names(meta: Path, names: np.ndarray, local: np.ndarray, datadir: Path | None,
                apix: float | None, lazy: bool) -> ParticleSource:
    """Build a source from per-particle stack names and 0-based image numbers."""
    uniq, stack_id = np.unique(names, return_inverse=True)
    paths = [_resolve(str(u), meta, datadir) for u in uniq]
    missing = [str(u) for u, p in zip(uniq, paths, strict=True) if p is None]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        where = f"{datadir} or " if datadir is not None else ""
        raise InputError(
            f"{meta} refers to stack {missing[0]}{more}, which was not found in {where}"
            f"{meta.parent}. Pass --datadir with the folder that holds the stacks."
        )
    stacks = [read_mrc_header(p) for p in paths]
    counts = np.array([h.shape[0] for h in stacks])
    bad = (local < 0) | (local >= counts[stack_id])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        h = stacks[stack_id[i]]
        raise InputError(
            f"{meta}: particle {i} refers to image {local[i] + 1} of {h.path}, which holds "
            f"{h.shape[0]} images. Is the stack from another extraction?"
        )
    return ParticleSource(meta, stacks, stack_id, local, apix, lazy)


def _single_apix(values: np.ndarray | None) -> float | None:
    if values is None or len(values) == 0:
        return None
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.ptp(v) > 1e-3 * abs(v[0]):
        return None
    return float(v[0])


def _open_star(path: Path, datadir: Path | None, lazy: bool) -> ParticleSource:
    star = read_star(path)
    names = star.values("rlnImageName", dtype=None)
    if names is None:
        raise InputError(
            f"{path} has no _rlnImageName column, so it does not say where the particle "
            "images are. Use the particles .star file of a RELION extract/refine job."
        )
    names = names.astype(str)
    has_at = np.char.find(names, "@") >= 0
    parts = np.char.partition(names, "@")
    stack = np.where(has_at, parts[:, 2], names)
    try:
        number = np.where(has_at, parts[:, 0], "1").astype(np.int64)
    except ValueError:
        raise InputError(
            f"{path}: _rlnImageName values must look like 000012@stack.mrcs."
        ) from None
    if len(number) and number.min() < 1:
        raise InputError(f"{path}: _rlnImageName numbers start at 1 but one is {number.min()}.")
    return _from_names(path, stack, number - 1, datadir, _single_apix(star.pixel_size()), lazy)


def _open_cs(path: Path, datadir: Path | None, lazy: bool) -> ParticleSource:
    arr = read_cs(path)
    names = cs_paths(arr, path)
    local = cs_field(arr, "blob/idx", path).astype(np.int64)
    apix = _single_apix(arr["blob/psize_A"]) if "blob/psize_A" in arr.dtype.names else None
    return _from_names(path, names, local, datadir, apix, lazy)


def _open_txt(path: Path, datadir: Path | None, lazy: bool) -> ParticleSource:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"Cannot read {path} as a list of stacks ({e}).") from None
    names = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not names:
        raise InputError(f"{path} lists no particle stacks (one .mrcs path per line).")
    resolved = []
    for name in names:
        p = _resolve(name, path, datadir)
        if p is None:
            raise InputError(
                f"{path} refers to stack {name}, which was not found next to it. Fix the "
                "path (relative to the .txt file's folder) or pass --datadir."
            )
        resolved.append(read_mrc_header(p))
    counts = [h.shape[0] for h in resolved]
    stack_id = np.repeat(np.arange(len(resolved)), counts)
    local = np.concatenate([np.arange(c) for c in counts])
    apixes = [h.apix for h in resolved]
    apix = None if None in apixes else _single_apix(np.array(apixes))
    return ParticleSource(path, resolved, stack_id, local, apix, lazy)


def open_particles(
    path: str | os.PathLike, datadir: str | os.PathLike | None = None, lazy: bool = True
) -> ParticleSource:
    """Open particle images from a .mrcs/.mrc stack, RELION .star, cryoSPARC .cs or .txt list.

    Relative stack paths in .star/.cs/.txt files are looked up under ``datadir``, then the
    metadata file's folder, then the working folder. ``lazy=False`` loads all images now.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"{path}: unsupported particle file type '{suffix}'; use .mrcs, .mrc, .star, "
            ".cs or .txt."
        )
    if not path.is_file():
        raise InputError(f"{path} does not exist; check the file name.")
    datadir = Path(datadir) if datadir else None
    if datadir is not None and not datadir.is_dir():
        raise InputError(f"--datadir {datadir} is not a folder.")
    if suffix == ".star":
        return _open_star(path, datadir, lazy)
    if suffix == ".cs":
        return _open_cs(path, datadir, lazy)
    if suffix == ".txt":
        return _open_txt(path, datadir, lazy)
    header = read_mrc_header(path)
    n = header.shape[0]
    return ParticleSource(path, [header], np.zeros(n, np.int32), np.arange(n), header.apix, lazy)
