"""cryoSPARC .cs files (numpy structured arrays): reading fields, writing particle tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.rotations import cryodrgn_to_cryosparc
from .atomic import atomic_write


def read_cs(path: str | os.PathLike) -> np.ndarray:
    """Open a .cs file as a (memory-mapped) numpy structured array."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; check the file name.")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise InputError(
            f"{path} is not a readable cryoSPARC .cs file ({type(e).__name__}: {e})."
        ) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None or arr.ndim != 1:
        raise InputError(f"{path} is not a cryoSPARC .cs file (no named fields).")
    return arr


def cs_field(arr: np.ndarray, name: str, path: str | os.PathLike, hint: str = "") -> np.ndarray:
    """A field of a .cs table as an in-memory array; InputError naming the file if absent."""
    if name not in arr.dtype.names:
        raise InputError(
            f"{path} has no '{name}' field{' ' + hint if hint else ''}."
        )
    return np.array(arr[name])


def cs_box(arr: np.ndarray, path: str | os.PathLike, D: int | None = None) -> int:
    """Box size from ``blob/shape`` (as cryoDRGN reads it: first particle), else ``D``."""
    if "blob/shape" in arr.dtype.names:
        return int(np.asarray(arr["blob/shape"][0]).ravel()[0])
    if D is None:
        raise InputError(f"{path} has no 'blob/shape' field; give the box size (-D).")
    return int(D)


def cs_paths(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """``blob/path`` as str, with the leading '>' of cryoSPARC exports removed."""
    raw = cs_field(arr, "blob/path", path, "(it does not list particle images)")
    names = np.char.decode(raw.astype("S"), "utf-8") if raw.dtype.kind == "S" else raw.astype(str)
    return np.char.lstrip(names, ">")


def write_particles_cs(
    path: str | os.PathLike,
    stack_relpath: str,
    rot: np.ndarray | None,
    trans: np.ndarray | None,
    ctf: np.ndarray | None,
    apix: float,
    D: int,
    image_indices: np.ndarray | None = None,
) -> None:
    """Write a minimal cryoSPARC particle .cs file (atomically), e.g. for tests and exports.

    rot: (N, 3, 3) cryoDRGN matrices (stored as axis-angle of the transpose); trans: (N, 2)
    fractions of the box (stored in pixels); ctf: (N, 9) cryoDRGN CTF table.
    """
    sizes = {len(a) for a in (rot, trans, ctf, image_indices) if a is not None}
    if len(sizes) != 1:
        raise ValueError(f"write_particles_cs: rot, trans, ctf and image_indices (at least one "
                         f"given) must agree on the particle count, got {sizes}")
    n = sizes.pop()
    rel = str(stack_relpath).encode()
    fields = [
        ("uid", "<u8"), ("blob/path", f"S{max(len(rel), 1)}"), ("blob/idx", "<u4"),
        ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"), ("blob/sign", "<f4"),
    ]
    if rot is not None:
        fields.append(("alignments3D/pose", "<f4", (3,)))
    if trans is not None:
        fields.append(("alignments3D/shift", "<f4", (2,)))
    ctf_fields = ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm",
                  "ctf/amp_contrast", "ctf/phase_shift_rad")
    if ctf is not None:
        fields += [(name, "<f4") for name in ctf_fields]
    out = np.zeros(n, dtype=fields)
    out["uid"] = np.arange(n, dtype=np.uint64)
    out["blob/path"] = rel
    out["blob/idx"] = np.arange(n) if image_indices is None else image_indices
    out["blob/shape"] = int(D)
    out["blob/psize_A"] = apix
    out["blob/sign"] = -1.0
    if rot is not None:
        out["alignments3D/pose"] = cryodrgn_to_cryosparc(rot)
    if trans is not None:
        out["alignments3D/shift"] = np.asarray(trans, dtype=np.float64) * D
    if ctf is not None:
        ctf = np.asarray(ctf, dtype=np.float64)
        for j, name in enumerate(ctf_fields, start=2):
            scale = np.pi / 180 if name.endswith("_rad") else 1.0
            out[name] = ctf[:, j] * scale
    with atomic_write(path, "wb") as f:
        np.save(f, out, allow_pickle=False)
