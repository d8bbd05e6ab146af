"""Particle poses: cryoDRGN pose pickles, RELION .star and cryoSPARC .cs, in cryoDRGN's convention.

A pose is a rotation matrix (cryoDRGN's convention, equal to RELION's Euler matrix) and an
in-plane translation in fractions of the box, exactly as ``cryodrgn parse_pose_star`` and
``cryodrgn parse_pose_csparc`` write them: RELION origins and cryoSPARC shifts are divided by
the box size without a change of sign.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.rotations import check_rotations, cryosparc_to_cryodrgn, relion_euler_to_cryodrgn
from .cs import cs_box, cs_field, read_cs
from .safepickle import load_pickle, save_pickle
from .star import read_star


def _from_pickle(path: Path):
    obj = load_pickle(path)
    if isinstance(obj, (tuple, list)) and len(obj) in (1, 2):
        rot = obj[0]
        trans = obj[1] if len(obj) == 2 else None
    else:
        rot, trans = obj, None
    if not isinstance(rot, np.ndarray) or not (trans is None or isinstance(trans, np.ndarray)):
        raise InputError(
            f"{path} is not a cryoDRGN pose file: expected a tuple (rotations N x 3 x 3, "
            f"translations N x 2) of numpy arrays, found {type(obj).__name__}."
        )
    return rot, trans


def _from_star(path: Path, D: int | None, apix: float | None):
    star = read_star(path)
    hint = "(RELION Euler angles); the file does not hold poses"
    euler = np.stack(
        [star.require(f, hint=hint) for f in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")], 1
    )
    rot = relion_euler_to_cryodrgn(euler)
    if star.has("rlnOriginX") and star.has("rlnOriginY"):
        pix = np.stack([star.values("rlnOriginX"), star.values("rlnOriginY")], 1)
    elif star.has("rlnOriginXAngst") and star.has("rlnOriginYAngst"):
        psize = star.pixel_size()
        if psize is None:
            if apix is None:
                raise InputError(
                    f"{path} gives origins in Angstrom but no pixel size "
                    "(_rlnImagePixelSize); give the pixel size (--Apix)."
                )
            psize = np.full(len(star), float(apix))
        ang = np.stack([star.values("rlnOriginXAngst"), star.values("rlnOriginYAngst")], 1)
        pix = ang / psize[:, None]
    else:
        return rot, np.zeros((len(star), 2))
    return rot, pix / star.box(D)[:, None]


def _from_cs(path: Path, D: int | None):
    arr = read_cs(path)
    names = arr.dtype.names
    # ab-initio jobs store poses under alignments_class_0 (cryodrgn's --abinit)
    abinit = "alignments3D/pose" not in names and "alignments_class_0/pose" in names
    prefix = "alignments_class_0" if abinit else "alignments3D"
    pose = cs_field(arr, f"{prefix}/pose", path, "(cryoSPARC 3D alignments); it holds no poses")
    rot = cryosparc_to_cryodrgn(pose.astype(np.float64))
    if f"{prefix}/shift" not in names:
        return rot, np.zeros((len(arr), 2))
    shift = cs_field(arr, f"{prefix}/shift", path).astype(np.float64)
    return rot, shift / cs_box(arr, path, D)


def _check_count(path: Path, count: int, n: int | None, what: str) -> None:
    if n is not None and count != n:
        raise InputError(
            f"{path} holds {what} for {count} particles but the stack has {n}: is it from "
            "another dataset, or was the stack filtered?"
        )


def select_rows(path: Path, arrays: list, ind, what: str) -> list:
    """Rows ``ind`` of each array (None stays None), with a range check naming ``path``."""
    if ind is None:
        return arrays
    ind = np.asarray(ind, dtype=np.int64)
    count = len(next(a for a in arrays if a is not None))
    if ind.size and (ind.min() < 0 or ind.max() >= count):
        raise InputError(
            f"The index selects particle {int(ind.max())} but {path} holds {what} for "
            f"{count} particles: is the index from another dataset?"
        )
    return [None if a is None else a[ind] for a in arrays]


def load_poses(
    path: str | os.PathLike,
    n: int | None = None,
    D: int | None = None,
    ind=None,
    *,
    apix: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read poses as (rot (N, 3, 3) float32, trans (N, 2) float32 fractions of the box, or None).

    ``path``: cryoDRGN .pkl, RELION .star or cryoSPARC .cs. ``n``: particles in the full stack
    (checked before ``ind`` selects rows). ``D``: box size used only when the file does not
    give one (star without ``_rlnImageSize``, cs without ``blob/shape``). ``apix``: pixel size
    for star origins in Angstrom when the file lacks it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Pose file {path} does not exist; check the file name.")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        rot, trans = _from_pickle(path)
    elif suffix == ".star":
        rot, trans = _from_star(path, D, apix)
    elif suffix == ".cs":
        rot, trans = _from_cs(path, D)
    else:
        raise InputError(f"{path}: pose files must be .pkl, .star or .cs, not '{suffix}'.")
    check_rotations(rot, str(path))
    _check_count(path, len(rot), n, "poses")
    if trans is not None:
        trans = np.asarray(trans)
        if trans.shape != (len(rot), 2):
            raise InputError(
                f"{path}: translations have shape {trans.shape} but {len(rot)} x 2 was "
                "expected (one x, y shift per rotation)."
            )
        if not np.isfinite(trans).all():
            i = int(np.flatnonzero(~np.isfinite(trans).all(axis=1))[0])
            raise InputError(f"{path}: translation of particle {i} is NaN or Inf.")
        if np.abs(trans).max(initial=0.0) > 1:
            raise InputError(
                f"{path}: translations look like pixels (up to {np.abs(trans).max():.3g}); "
                "cryoDRGN pose files store fractions of the box. Divide them by the box size."
            )
    rot, trans = select_rows(path, [rot, trans], ind, "poses")
    return rot.astype(np.float32), None if trans is None else trans.astype(np.float32)


def save_poses(path: str | os.PathLike, rot: np.ndarray, trans: np.ndarray | None) -> None:
    """Write a cryoDRGN pose pickle (rot, trans) atomically; rotations only if trans is None."""
    rot = np.asarray(rot, dtype=np.float32)
    if trans is None:
        save_pickle(path, rot)
    else:
        save_pickle(path, (rot, np.asarray(trans, dtype=np.float32)))
