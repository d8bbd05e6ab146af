"""One interface over particle images in .mrcs/.mrc stacks, .star, .cs and .txt files.

Stacks are memory-mapped: opening a source reads headers only, and ``images`` reads just the
requested images. Every problem with the inputs raises InputError naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import InputError
from .cs import cs_box, cs_paths, cs_pixel_size, open_cs
from .mrc import MrcHeader, read_mrc_header
from .star import read_star

log = logging.getLogger(__name__)
MAX_OPEN_STACKS = 64
SUFFIXES = (".mrcs", ".mrc", ".star", ".cs", ".txt")


class ParticleSource:
    """Particle images from one or more MRC stacks, numbered 0..n-1 in the source's order.

    Attributes: ``path`` (the file opened), ``n``, ``D`` (box side), ``apix`` (pixel size in
    Angstrom, or None when the source does not say), ``stacks`` (headers of the stacks),
    ``stack_id`` and ``local_index`` (for each particle, its stack and 0-based image in it).

    Images are read with positioned reads (``os.preadv``) into a fresh buffer, one read per run
    of consecutive images, rather than through a memory map: every page of a map that training
    touches counts towards the process's RSS (a stack larger than RAM read once through maps
    shows up as RSS until the kernel reclaims it), whereas positioned reads copy only what was
    asked for and leave caching to the page cache. Reads are safe from several threads at once
    (each thread keeps its own open files), for background prefetching.
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
        self._local = threading.local()  # per thread: stack number -> open file descriptor
        self._eager: np.ndarray | None = None
        if not lazy:
            self._eager = self._read(np.arange(self.n))

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"ParticleSource({str(self.path)!r}, n={self.n}, D={self.D}, apix={self.apix})"

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_local")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def close(self) -> None:
        """Close the stack files this thread has open (they reopen on the next read)."""
        fds = getattr(getattr(self, "_local", None), "fds", None)
        while fds:
            _, fd = fds.popitem()
            with contextlib.suppress(OSError):
                os.close(fd)

    def _fd(self, i: int) -> int:
        """An open descriptor of stack ``i``, from this thread's own LRU cache: a descriptor is
        never closed while another thread reads through it (descriptor numbers are reused)."""
        fds = getattr(self._local, "fds", None)
        if fds is None:
            fds = self._local.fds = _FdCache()
        fd = fds.get(i)
        if fd is not None:
            fds.move_to_end(i)
            return fd
        try:
            fd = os.open(self.stacks[i].path, os.O_RDONLY)
        except OSError as e:
            raise InputError(f"Cannot read {self.stacks[i].path}: {e.strerror}.") from None
        fds[i] = fd
        while len(fds) > MAX_OPEN_STACKS:
            os.close(fds.popitem(last=False)[1])
        return fd

    def _read_stack(self, s: int, local: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Images ``local`` (sorted, unique, 0-based) of stack ``s``, in their stored dtype or
        straight into ``out`` (a C-contiguous array of that dtype)."""
        h = self.stacks[s]
        per = h.shape[1] * h.shape[2] * h.dtype.itemsize
        buf = out if out is not None else np.empty((len(local), h.shape[1], h.shape[2]),
                                                   dtype=h.dtype)
        if not len(local):
            return buf
        flat = buf.reshape(len(local), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(local) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(local)]])
        fd = self._fd(s)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            _pread_into(fd, flat[a:b].reshape(-1), h.offset + int(local[a]) * per, h.path)
        return buf

    def _read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.D, self.D), dtype=np.float32)
        sid = self.stack_id[idx]
        for s in np.unique(sid):
            rows = np.flatnonzero(sid == s)
            local = self.local_index[idx[rows]]
            order = np.argsort(local, kind="stable")
            srt = local[order]
            uniq, inv = np.unique(srt, return_inverse=True)
            direct = (self.stacks[s].dtype == out.dtype and len(uniq) == len(rows)
                      and rows[-1] - rows[0] + 1 == len(rows)
                      and bool((order == np.arange(len(order))).all()))
            if direct:  # sorted, unique, one block of the output: no intermediate copy
                self._read_stack(int(s), uniq, out[rows[0] : rows[-1] + 1])
            else:
                out[rows[order]] = self._read_stack(int(s), uniq)[inv]
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


class _FdCache(OrderedDict):
    """One thread's open stack files; closed when the thread (or the source) goes away."""

    def __del__(self):
        for fd in self.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def _pread_into(fd: int, dest: np.ndarray, offset: int, path: Path) -> None:
    """Fill the uint8 array ``dest`` from ``fd`` at ``offset`` (looping over short reads)."""
    view = memoryview(dest)
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view[done:]], offset + done)
        else:  # pragma: no cover - platforms without preadv
            chunk = os.pread(fd, len(view) - done, offset + done)
            got = len(chunk)
            view[done : done + got] = chunk
        if got <= 0:
            raise InputError(f"{path} ended early while reading images at byte {offset + done}; "
                             "the stack is truncated or was changed while reading.")
        done += got


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


def _search_folders(meta: Path, up: bool = True) -> list[Path]:
    """Folders that relative stack paths of ``meta`` are looked up in (after --datadir): the
    metadata file's folder and, when ``up``, every folder above it (RELION and cryoSPARC write
    paths relative to their project folder: Extract/job005/... in
    Refine3D/job012/run_data.star, J5/extract/... in J12/J12_005_particles.cs), then the
    working folder (where RELION runs)."""
    here = Path(os.path.abspath(meta)).parent
    return list(dict.fromkeys([here, *(here.parents if up else []), Path.cwd()]))


def _resolve(name: str, meta: Path, datadir: Path | None,
             first: Path | None = None) -> Path | None:
    """Find a stack named in a metadata file. An absolute path is taken as it is. A relative
    one is looked up under ``first`` (where the previous stack was found), ``datadir`` (by
    path, then by file name alone: --datadir wins, as in cryoDRGN), then the other
    :func:`_search_folders` (the folders above the metadata file only for paths with a folder
    part, such as Extract/job005/Micrographs/a.mrcs: a bare file name is never taken from
    elsewhere). Last resort for both: the file name alone in the metadata file's folder."""
    p = Path(name)
    here = Path(os.path.abspath(meta)).parent
    if p.is_absolute():
        candidates = [p] + ([datadir / p.name] if datadir is not None else [])
    else:
        candidates = [first / p] if first is not None else []
        if datadir is not None:
            candidates += [datadir / p, datadir / p.name]
        candidates += [f / p for f in _search_folders(meta, up=len(p.parts) > 1)]
    candidates.append(here / p.name)
    return next((c for c in candidates if c.is_file()), None)


def _not_found(meta: Path, missing: list[str], datadir: Path | None) -> InputError:
    here = Path(os.path.abspath(meta)).parent
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    where = f"--datadir {datadir}, " if datadir is not None else ""
    if Path(missing[0]).is_absolute():
        tried = f"at that path, nor by its file name in {where}{here}"
    elif len(Path(missing[0]).parts) == 1:
        tried = f"in {where}{here} or the working folder {Path.cwd()}"
    else:
        tried = (f"under {where}{here} or any folder above it, nor in the working folder "
                 f"{Path.cwd()}")
    return InputError(
        f"{meta} refers to stack {missing[0]}{more}, which was not found {tried}. Pass "
        "--datadir with the folder that holds the stacks (for RELION and cryoSPARC files, the "
        "project folder)."
    )


def _from_names(meta: Path, names: np.ndarray, local: np.ndarray, datadir: Path | None,
                apix: float | None, lazy: bool,
                whole: np.ndarray | None = None) -> ParticleSource:
    """Build a source from per-particle stack names and 0-based image numbers. ``whole``
    marks particles named without an image number (the file is one image)."""
    uniq, stack_id = np.unique(names, return_inverse=True)
    paths, missing, hit = [], [], None
    for u in uniq:
        found = _resolve(str(u), meta, datadir, hit)
        paths.append(found)
        if found is None:
            missing.append(str(u))
        elif not Path(str(u)).is_absolute():  # try this folder first for the next stacks
            rel = Path(str(u))
            base = found.parents[len(rel.parts) - 1]
            hit = base if base / rel == found else hit
    if missing:
        raise _not_found(meta, missing, datadir)
    here = Path(os.path.abspath(meta)).parent
    if hit is not None and hit not in (here, datadir):
        log.info("%s: stacks found relative to %s", meta, hit)
    stacks = [read_mrc_header(p) for p in paths]
    counts = np.array([h.shape[0] for h in stacks])
    if whole is not None and np.any(whole & (counts[stack_id] > 1)):
        i = int(np.flatnonzero(whole & (counts[stack_id] > 1))[0])
        h = stacks[stack_id[i]]
        raise InputError(
            f"{meta}: particle {i} is named without an image number ({names[i]}) but "
            f"{h.path} holds {h.shape[0]} images (a stack or a 3D volume); single-particle "
            "files name each image as NNNNNN@stack.mrcs."
        )
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
    star.check_particles(images=True)
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
    for tag in (":mrcs", ":mrc"):  # RELION's file-type suffix (stack.mrc:mrcs)
        tagged = np.char.endswith(stack, tag)
        if tagged.any():
            stack = np.array([s[: -len(tag)] if t else s
                              for s, t in zip(stack.tolist(), tagged.tolist(), strict=True)])
    try:
        number = np.where(has_at, parts[:, 0], "1").astype(np.int64)
    except ValueError:
        raise InputError(
            f"{path}: _rlnImageName values must look like 000012@stack.mrcs."
        ) from None
    if len(number) and number.min() < 1:
        raise InputError(f"{path}: _rlnImageName numbers start at 1 but one is {number.min()}.")
    psize = star.pixel_size()
    apix = None if psize is None else star.agreed(psize, "pixel size", " A")
    if star.has("rlnImageSize"):
        star.agreed(star.values("rlnImageSize"), "box size", " px")
    return _from_names(path, stack, number - 1, datadir, apix, lazy, whole=~has_at)


def _open_cs(path: Path, datadir: Path | None, lazy: bool) -> ParticleSource:
    table = open_cs(path)
    names = cs_paths(table)
    local = table.field("blob/idx", "(the image number in each stack)").astype(np.int64)
    if table.has("blob/shape"):
        cs_box(table)  # all particles must share one box
    return _from_names(path, names, local, datadir, cs_pixel_size(table), lazy)


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
            raise _not_found(path, [name], datadir)
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
