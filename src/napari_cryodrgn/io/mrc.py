"""MRC volumes and image stacks: header parsing, memory mapping, atomic writing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_write

HEADER_BYTES = 1024
# MRC mode -> numpy dtype (complex modes 3 and 4 are not image data we can use)
MODES = {0: np.int8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}


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


def _parse(raw: bytes, order: str) -> tuple[np.ndarray, np.ndarray]:
    return np.frombuffer(raw, dtype=order + "i4"), np.frombuffer(raw, dtype=order + "f4")


def read_mrc_header(path: str | os.PathLike) -> MrcHeader:
    """Parse and check an MRC header; raise InputError for missing, foreign or truncated files."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the file name.") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not an MRC file.") from None
    except OSError as e:
        raise InputError(f"Cannot read {path}: {e.strerror}.") from e
    if len(raw) < HEADER_BYTES:
        raise InputError(
            f"{path} is not an MRC file: it has only {size} bytes, less than an MRC header."
        )
    for order in ("<", ">"):
        ints, floats = _parse(raw, order)
        nx, ny, nz, mode = (int(v) for v in ints[:4])
        if mode in MODES and min(nx, ny, nz) > 0 and max(nx, ny) < 1 << 16:
            break
    else:
        raise InputError(
            f"{path} is not an MRC file (no valid dimensions and data mode in its header); "
            "particle stacks must be .mrcs/.mrc files."
        )
    nsymbt = max(int(ints[23]), 0)
    dtype = np.dtype(MODES[mode]).newbyteorder(order)
    mx, cella_x = int(ints[7]), float(floats[10])
    apix = cella_x / mx if mx > 0 and np.isfinite(cella_x) and cella_x > 0 else None
    ispg, mz = int(ints[22]), int(ints[9])
    stack = nz > 1 and ispg == 0 and mz != nz
    header = MrcHeader(path, (nz, ny, nx), dtype, HEADER_BYTES + nsymbt, apix, stack)
    if size < header.offset + header.nbytes:
        per_image = ny * nx * dtype.itemsize
        held = max(size - header.offset, 0) // per_image
        raise InputError(
            f"{path} is truncated: its header describes {nz} images of {ny} x {nx} pixels "
            f"({header.offset + header.nbytes} bytes) but the file has {size} bytes "
            f"(about {held} complete images). Copy or extract it again."
        )
    return header


def memmap_mrc(header: MrcHeader) -> np.memmap:
    """Read-only memory map of the data block described by ``header``, shape (nz, ny, nx)."""
    try:
        return np.memmap(header.path, dtype=header.dtype, mode="r", offset=header.offset,
                         shape=header.shape)
    except (OSError, ValueError) as e:
        raise InputError(f"Cannot memory-map {header.path}: {e}.") from e


def read_mrc(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a volume or stack into memory as float32, shape (nz, ny, nx), and its voxel size.

    The voxel size is 1.0 when the header does not set one.
    """
    header = read_mrc_header(path)
    data = np.array(memmap_mrc(header), dtype=np.float32)
    return data, header.apix if header.apix is not None else 1.0


def _header_bytes(data: np.ndarray, apix: float, stack: bool) -> bytes:
    stats = None
    if data.size:
        stats = (data.min(), data.max(), data.mean(dtype=np.float64), data.std(dtype=np.float64))
    return header_bytes(data.shape, apix, stack, stats)


def header_bytes(shape, apix: float, stack: bool, stats=None) -> bytes:
    """A 1024-byte float32 (mode 2) MRC header for data of ``shape`` (nz, ny, nx); ``stats``
    (min, max, mean, rms) when known (for writers that stream the data after the header)."""
    nz, ny, nx = (int(v) for v in shape)
    mz = 1 if stack else nz
    ints = np.zeros(256, dtype="<i4")
    floats = ints.view("<f4")
    ints[:4] = (nx, ny, nz, 2)
    ints[7:10] = (nx, ny, mz)
    floats[10:13] = (nx * apix, ny * apix, mz * apix)
    floats[13:16] = 90.0
    ints[16:19] = (1, 2, 3)
    if stats is not None:
        floats[19:22] = stats[:3]
        floats[54] = stats[3]
    ints[22] = 0 if stack else 1  # space group 0 marks an image stack
    ints[27] = 20140  # nversion
    raw = bytearray(ints.tobytes())
    raw[208:212] = b"MAP "
    raw[212:216] = b"\x44\x44\x00\x00"  # little-endian machine stamp
    return bytes(raw)


def write_mrc(
    path: str | os.PathLike, data: np.ndarray, apix: float = 1.0, stack: bool | None = None
) -> None:
    """Write a 2D image or 3D volume/stack as float32 MRC (mode 2), origin 0, atomically.

    ``stack`` marks an image stack in the header (space group 0); by default a ``.mrcs``
    suffix or 2D data means a stack and anything else a volume.
    """
    data = np.asarray(data, dtype=np.float32)
    if stack is None:
        stack = data.ndim == 2 or Path(path).suffix.lower() == ".mrcs"
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"write_mrc needs a 2D or 3D array, got shape {data.shape}")
    if not (np.isfinite(apix) and apix > 0):
        raise InputError(f"Cannot write {path}: voxel size {apix} must be positive.")
    with atomic_write(path, "wb") as f:
        f.write(_header_bytes(data, float(apix), stack))
        f.write(np.ascontiguousarray(data, dtype="<f4").data)
