"""Particle poses: cryoDRGN pose pickles, RELION .star and cryoSPARC .cs, in cryoDRGN's convention.

A pose is a rotation matrix (cryoDRGN's convention, equal to RELION's Euler matrix) and an
in-plane translation in fractions of the box, exactly as ``cryodrgn parse_pose_star`` and
``cryodrgn parse_pose_csparc`` write them: RELION origins and cryoSPARC shifts are divided by
the box size without a change of sign.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.rotations import check_rotations, cryosparc_to_cryodrgn, relion_euler_to_cryodrgn
from .cs import cs_box, open_cs
from .safepickle import load_pickle, save_pickle
from .star import read_star

log = logging.getLogger(__name__)


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
    """Poses of a RELION .star, per particle (each optics group's own pixel size and box).
    Origins in pixels are used when present (as cryoDRGN does), else those in Angstrom; a file
    with both must have them agree."""
    star = read_star(path)
    star.check_particles()
    hint = "(RELION Euler angles); the file does not hold poses"
    euler = np.stack(
        [star.require(f, hint=hint) for f in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")], 1
    )
    rot = relion_euler_to_cryodrgn(euler)
    has_px = star.has("rlnOriginX") and star.has("rlnOriginY")
    has_ang = star.has("rlnOriginXAngst") and star.has("rlnOriginYAngst")
    if not (has_px or has_ang):
        return rot, np.zeros((len(star), 2))
    psize = star.pixel_size()
    if psize is None and apix is not None:
        psize = np.full(len(star), float(apix))
    pix = np.stack([star.values("rlnOriginX"), star.values("rlnOriginY")], 1) if has_px else None
    if has_ang:
        if psize is None and pix is None:
            raise InputError(
                f"{path} gives origins in Angstrom but no pixel size "
                "(_rlnImagePixelSize); give the pixel size (--Apix)."
            )
        if psize is not None:
            ang = np.stack([star.values("rlnOriginXAngst"), star.values("rlnOriginYAngst")], 1)
            from_ang = ang / psize[:, None]
            if pix is not None and np.abs(pix - from_ang).max(initial=0) > 0.01:
                i = int(np.argmax(np.abs(pix - from_ang).max(axis=1)))
                raise InputError(
                    f"{path}: _rlnOriginX/Y (pixels) and _rlnOriginX/YAngst disagree for "
                    f"particle {i} ({pix[i, 0]:g}, {pix[i, 1]:g} px vs {ang[i, 0]:g}, "
                    f"{ang[i, 1]:g} A at {psize[i]:g} A/px); remove the stale pair of columns."
                )
            pix = from_ang if pix is None else pix
    return rot, pix / star.box(D)[:, None]


def _cs_prefix(table) -> str:
    """The slot holding the poses: ``alignments3D``, else the only ``alignments_class_0``
    (ab-initio, cryoDRGN's --abinit); InputError when there are none or several classes."""
    if table.has("alignments3D/pose"):
        return "alignments3D"
    classes = sorted({int(m.group(1)) for n in table.names
                      if (m := re.fullmatch(r"alignments_class_(\d+)/pose", n))})
    if classes == [0]:
        log.info("%s: poses from alignments_class_0 (single-class ab-initio, as cryoDRGN's "
                 "--abinit)", table.path)
        return "alignments_class_0"
    if len(classes) > 1:
        raise InputError(
            f"{table.path} holds 3D alignments for {len(classes)} classes (alignments_class_"
            f"{classes[0]}..{classes[-1]}, an ab-initio or heterogeneous refinement 'all "
            "classes' output) whose poses need not share one frame; use the particles of one "
            "class (e.g. J<n>_class_00_..._particles.cs) or refine the selection homogeneously."
        )
    two_d = " (it holds only 2D alignments)" if table.has("alignments2D/pose") else ""
    raise InputError(
        f"{table.path} has no 3D alignments (alignments3D/pose){two_d}: 2D classification, "
        "Select 2D and extraction jobs give none; use the particles of a Homogeneous or "
        "Non-uniform Refinement (or Ab-Initio) job, or a .pkl/.star with poses."
    )


def _from_cs(path: Path, D: int | None, apix: float | None = None):
    """Poses of a cryoSPARC .cs (or its passthrough file). Shifts are in pixels of the
    alignment (``<slot>/psize_A``), converted to the particles' pixels (``blob/psize_A``):
    equal for homogeneous refinements, twice as large for a heterogeneous refinement run at
    half the box (what cryoDRGN's --hetrefine assumes)."""
    table = open_cs(path)
    prefix = _cs_prefix(table)
    pose = table.field(f"{prefix}/pose")
    rot = cryosparc_to_cryodrgn(pose.astype(np.float64))
    if not table.has(f"{prefix}/shift"):
        return rot, np.zeros((len(table), 2))
    shift = table.field(f"{prefix}/shift").astype(np.float64)
    align_psize = (table.field(f"{prefix}/psize_A").astype(np.float64)
                   if table.has(f"{prefix}/psize_A") else None)
    if align_psize is not None and np.all(np.isfinite(align_psize) & (align_psize > 0)):
        blob_psize = (table.field("blob/psize_A").astype(np.float64) if table.has("blob/psize_A")
                      else None if apix is None else np.full(len(table), float(apix)))
        if blob_psize is None or not np.all(blob_psize > 0):
            log.warning("%s: no particle pixel size (blob/psize_A) to convert the shifts from "
                        "the alignment's pixels (%g A); used as particle pixels", path,
                        align_psize[0])
        elif np.any(np.abs(align_psize / blob_psize - 1) > 1e-4):
            shift *= (align_psize / blob_psize)[:, None]
            log.info("%s: shifts converted from the alignment's %g A pixels to the particles' "
                     "%g A pixels", path, align_psize[0], blob_psize[0])
    return rot, shift / cs_box(table, D, per_particle=True)[:, None]


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
    for star origins in Angstrom (cs: for alignment shifts) when the file lacks it.
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
        rot, trans = _from_cs(path, D, apix)
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
