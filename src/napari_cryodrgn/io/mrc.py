"""MRC volumes and image stacks, read and written through mrcfile.

mrcfile (CCP-EM's maintained MRC2014 library) parses every header (either byte order, a wrong
machine stamp, old files without the map ID), memory-maps the data and writes the files. This
module adds what mrcfile leaves to its callers: one-line errors that name the file and say what
to do, atomic writes (a temporary file beside the target, moved over it only when whole), and
:class:`StackWriter`, the one writer of stacks too large for memory.

Hand-written on purpose, with the measurement: :class:`StackWriter` puts the images into the
file with positioned writes instead of through mrcfile's writable memory map, because pages
written through a map count in the process's resident memory until the kernel writes them back
(``benchmarks/downsample.py`` keeps peak RSS flat on a stack larger than 4 GiB); mrcfile still
makes and finishes its header.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import mrcfile.utils
import numpy as np

from ..errors import InputError
from .atomic import temp_name

HEADER_BYTES = 1024
#: MRC modes we read (complex modes 3 and 4 are not image data we can use).
MODES = (0, 1, 2, 6, 12)
_PWRITE_MAX = 1 << 30  # bytes per os.pwrite call (Linux writes at most ~2 GiB per call)


@dataclass(frozen=True)
class MrcHeader:
    """What we need from an MRC header. ``shape`` is (nz, ny, nx) as stored."""

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    offset: int
    apix: float | None
    stack: bool = False  # an image stack (space group 0, one section per image)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


@contextlib.contextmanager
def _quiet():
    """mrcfile warns (RuntimeWarning) where it is permissive; our checks say what matters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _not_mrc(path: Path) -> InputError:
    return InputError(
        f"{path} is not an MRC file (no valid dimensions and data mode in its header); "
        "particle stacks must be .mrcs/.mrc files."
    )


def read_mrc_header(path: str | os.PathLike) -> MrcHeader:
    """Parse and check an MRC header; raise InputError for missing, foreign or truncated files."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the file name.") from None
    except OSError as e:
        raise InputError(f"Cannot read {path}: {e.strerror}.") from e
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an MRC file.")
    if size < HEADER_BYTES:
        raise InputError(
            f"{path} is not an MRC file: it has only {size} bytes, less than an MRC header."
        )
    try:
        with _quiet(), mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
            h = mrc.header
            nx, ny, nz, mode = (int(v) for v in (h.nx, h.ny, h.nz, h.mode))
            if mode not in MODES or min(nx, ny, nz) <= 0 or max(nx, ny) >= 1 << 16:
                raise _not_mrc(path)
            dtype = mrcfile.utils.data_dtype_from_header(h)
            nsymbt = max(int(h.nsymbt), 0)
            mx, cella_x = int(h.mx), float(h.cella.x)
            ispg, mz = int(h.ispg), int(h.mz)
    except PermissionError as e:
        raise InputError(f"Cannot read {path}: {e.strerror}.") from e
    except (ValueError, OSError):
        raise _not_mrc(path) from None
    apix = cella_x / mx if mx > 0 and np.isfinite(cella_x) and cella_x > 0 else None
    stack = nz > 1 and ispg == 0 and mz != nz
    header = MrcHeader(path, (nz, ny, nx), np.dtype(dtype), HEADER_BYTES + nsymbt, apix, stack)
    if size < header.offset + header.nbytes:
        per_image = ny * nx * header.dtype.itemsize
        held = max(size - header.offset, 0) // per_image
        raise InputError(
            f"{path} is truncated: its header describes {nz} images of {ny} x {nx} pixels "
            f"({header.offset + header.nbytes} bytes) but the file has {size} bytes "
            f"(about {held} complete images). Copy or extract it again."
        )
    return header


def memmap_mrc(header: MrcHeader) -> np.memmap:
    """Read-only memory map (mrcfile's) of the data described by ``header``, shape (nz, ny, nx)."""
    try:
        with _quiet(), mrcfile.mmap(header.path, mode="r", permissive=True) as mrc:
            data = mrc.data
    except (OSError, ValueError) as e:
        raise InputError(f"Cannot memory-map {header.path}: {e}.") from e
    if data is None or data.size != int(np.prod(header.shape)):
        raise InputError(f"Cannot memory-map {header.path}: its data block does not match its "
                         "header.")
    return data.reshape(header.shape)


def read_mrc(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """Read a volume or stack into memory as float32, shape (nz, ny, nx), and its voxel size
    (None when the header does not give one)."""
    header = read_mrc_header(path)
    return np.array(memmap_mrc(header), dtype=np.float32), header.apix


def _check_apix(path, apix) -> float:
    """The voxel size to record: a positive number, or 0.0 for None (an empty cell: unknown)."""
    if apix is None:
        return 0.0
    apix = float(apix)
    if not (np.isfinite(apix) and apix > 0):
        raise InputError(f"Cannot write {path}: voxel size {apix} must be positive.")
    return apix


def _label(mrc) -> None:
    """Our one header label, without mrcfile's timestamp (the same data give the same bytes)."""
    mrc.header.nlabl = 1
    mrc.header.label[0] = b"napari-cryodrgn"


@contextlib.contextmanager
def _staged(path: Path, atomic: bool):
    """Yield the name to write; when ``atomic``, a temporary one moved onto ``path`` at the end
    (removed if the block raises)."""
    if not atomic:
        yield path
        return
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_mrc(path: str | os.PathLike, data: np.ndarray, apix: float | None = 1.0,
              stack: bool | None = None, *, atomic: bool = True) -> None:
    """Write a 2D image or a 3D volume/stack as float32 MRC (mode 2, origin 0) with mrcfile.

    ``stack`` marks an image stack in the header (space group 0); by default a ``.mrcs``
    suffix or 2D data means a stack and anything else a volume. ``apix`` None records no
    voxel size (an empty cell). ``atomic``: written under a temporary name beside ``path``
    and moved onto it when complete (False for callers that stage several files themselves).
    """
    path = Path(path)
    data = np.asarray(data, dtype=np.float32)
    if stack is None:
        stack = data.ndim == 2 or path.suffix.lower() == ".mrcs"
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"write_mrc needs a 2D or 3D array, got shape {data.shape}")
    voxel = _check_apix(path, apix)
    try:
        with _staged(path, atomic) as name:
            with _quiet(), mrcfile.new(name, overwrite=True) as mrc:
                mrc.set_data(np.ascontiguousarray(data))
                mrc.set_image_stack() if stack else mrc.set_volume()
                mrc.voxel_size = voxel
                _label(mrc)
            _fsync(name)
    except OSError as e:
        raise InputError(f"Cannot write {path}: {e.strerror}; choose a writable folder.") from e


class StackWriter:
    """A float32 stack of ``n`` images of ``D`` x ``D`` pixels written block by block.

    mrcfile makes the header (image stack, voxel size ``apix``, None: unknown) and finishes it
    with the statistics (min, max, mean, rms) of what was written; the images go in with
    positioned writes (see the module docstring). Use as a context manager: on success the
    file is complete (``atomic``: moved onto ``path``); on error the partial file is removed.
    Writing fewer or more than ``n`` images is an error.
    """

    def __init__(self, path: str | os.PathLike, n: int, D: int, apix: float | None = None, *,
                 atomic: bool = True):
        self.final = Path(path)
        self.path = temp_name(self.final) if atomic else self.final
        self.n, self.D, self.done = int(n), int(D), 0
        voxel = _check_apix(self.final, apix)
        self.lo, self.hi, self.s1, self.s2 = np.inf, -np.inf, 0.0, 0.0
        self._fd = None
        try:
            with _quiet():
                self._mrc = mrcfile.new_mmap(self.path, shape=(self.n, self.D, self.D),
                                             mrc_mode=2, overwrite=not atomic)
                self._mrc.set_image_stack()
                self._mrc.voxel_size = voxel
                _label(self._mrc)
            self.offset = HEADER_BYTES + int(self._mrc.header.nsymbt)
            self._fd = os.open(self.path, os.O_WRONLY)
        except (OSError, ValueError) as e:
            self._remove()
            why = getattr(e, "strerror", None) or str(e)
            raise InputError(f"Cannot write {self.final}: {why}; choose a writable "
                             "folder.") from e

    def write(self, imgs: np.ndarray) -> None:
        """Append images (shape (k, D, D))."""
        imgs = np.ascontiguousarray(imgs, dtype="<f4")
        if imgs.ndim != 3 or imgs.shape[1:] != (self.D, self.D):
            raise ValueError(f"images of shape {imgs.shape} for a stack of {self.D} x {self.D}")
        if self.done + len(imgs) > self.n:
            raise ValueError(f"more than the {self.n} images announced for {self.final}")
        if not len(imgs):
            return
        self.lo, self.hi = min(self.lo, float(imgs.min())), max(self.hi, float(imgs.max()))
        self.s1 += float(imgs.sum(dtype=np.float64))
        self.s2 += float(np.square(imgs, dtype=np.float64).sum())
        view = memoryview(imgs).cast("B")
        pos = self.offset + self.done * self.D * self.D * 4
        while len(view):
            k = os.pwrite(self._fd, view[:_PWRITE_MAX], pos)
            view, pos = view[k:], pos + k
        self.done += len(imgs)

    def close(self) -> None:
        """Finish the header, sync the file and (``atomic``) move it onto its name."""
        if self.done != self.n:
            raise ValueError(f"{self.done} of the {self.n} images announced for {self.final} "
                             "were written")
        count = max(self.n * self.D * self.D, 1)
        mean = self.s1 / count
        h = self._mrc.header
        if self.n:
            h.dmin, h.dmax, h.dmean = self.lo, self.hi, mean
            h.rms = float(np.sqrt(max(self.s2 / count - mean * mean, 0.0)))
        with _quiet():
            self._mrc.close()  # writes the header
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        if self.path != self.final:
            os.replace(self.path, self.final)

    def _remove(self) -> None:
        with contextlib.suppress(Exception):
            if getattr(self, "_mrc", None) is not None:
                with _quiet():
                    self._mrc.close()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def abort(self) -> None:
        """Remove the partial file."""
        self._remove()

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
