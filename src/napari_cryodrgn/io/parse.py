"""cryoDRGN's ``parse_pose_star``, ``parse_ctf_star``, ``parse_pose_csparc`` and
``parse_ctf_csparc``: pose and CTF tables from RELION .star and cryoSPARC .cs files, with
cryoDRGN 4.3.1's overrides, for pickles either tool can read.

The readers (:func:`.poses.load_poses`, :func:`.ctf.load_ctf`, :func:`.star.read_star`) give
the file's values; the options change them where cryoDRGN's do (found by running it):

- ``parse_pose_star``: ``D`` replaces the box that origins are divided by, even when the file
  has ``_rlnImageSize``; ``apix`` replaces the pixel size that origins in Angstrom are divided
  by (origins in pixels are used as they are). Both warn when they change the file's value.
- ``parse_ctf_star``: ``D``, ``apix``, ``kv``, ``cs``, ``w`` and ``ps`` replace the file's
  values for every particle (and supply missing ones). A file without ``_rlnPhaseShift`` gets
  phase shift 0, RELION's meaning (cryoDRGN 4.3.1 writes NaN there unless given ``--ps``).
- ``parse_pose_csparc`` / ``parse_ctf_csparc``: ``D`` and ``apix`` only supply a missing
  ``blob/shape`` / ``blob/psize_A``; a different value is ignored with a warning, as cryoDRGN
  ignores it. ``abinit`` reads ``alignments_class_0``; ``hetrefine`` doubles the shifts (a
  heterogeneous refinement run at half the box) unless the file records the alignment's pixel
  size, which the reader then uses instead. cryoDRGN needs ``ctf/phase_shift_rad``; a file
  without it gets 0 here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.rotations import check_rotations, cryosparc_to_cryodrgn
from .cs import cs_box, cs_pixel_size, open_cs
from .ctf import STAR_FIELDS, load_ctf
from .poses import load_poses
from .star import read_star

log = logging.getLogger(__name__)


@dataclass
class Parsed:
    """A parsed table and what the summary line reports."""

    n: int
    box: float | None  # None when unknown, NaN when particles differ
    apix: float | None  # None when unknown, NaN when particles differ
    rot: np.ndarray | None = None
    trans: np.ndarray | None = None
    ctf: np.ndarray | None = None


def _one(values) -> float | None:
    """The value all particles share; None when absent, NaN when they differ."""
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64)
    return float(v[0]) if len(v) and np.allclose(v, v[0], rtol=1e-5) else float("nan")


def _check_positive(name: str, value) -> None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise InputError(f"{name} {value}: give a positive value.")


# -- RELION ------------------------------------------------------------------------------------
def parse_pose_star(path: str | os.PathLike, D: int | None = None,
                    apix: float | None = None) -> Parsed:
    """Poses of a RELION .star as cryoDRGN's ``parse_pose_star`` writes them."""
    _check_positive("-D", D)
    _check_positive("--Apix", apix)
    path = Path(path)
    rot, trans = load_poses(path, D=D, apix=apix)  # D and apix fill what the file lacks
    star = read_star(path)
    box = star.values("rlnImageSize")
    psize = star.pixel_size()
    has_px = star.has("rlnOriginX") and star.has("rlnOriginY")
    has_ang = star.has("rlnOriginXAngst") and star.has("rlnOriginYAngst")
    if D is not None and box is not None:  # the override divides instead of the file's box
        if np.any(box != D):
            log.warning("%s: translations are divided by -D %d, not the file's box %g (as "
                        "cryoDRGN does); omit -D unless the file's _rlnImageSize is wrong",
                        path, D, box[0])
        trans = trans * (box / D)[:, None]
        box = np.full(len(rot), float(D))
    if apix is not None and psize is not None:
        if has_ang and not has_px:
            if np.any(np.abs(psize / apix - 1) > 1e-6):
                log.warning("%s: origins in Angstrom are divided by --Apix %g, not the file's "
                            "pixel size %g (as cryoDRGN does)", path, apix, psize[0])
            trans = trans * (psize / apix)[:, None]
        psize = np.full(len(rot), float(apix))
    box = box if box is not None else (np.full(len(rot), float(D)) if D else None)
    psize = psize if psize is not None else (np.full(len(rot), apix) if apix else None)
    return Parsed(len(rot), _one(box), _one(psize), rot=rot, trans=trans)


def parse_ctf_star(path: str | os.PathLike, D: int | None = None, apix: float | None = None,
                   kv: float | None = None, cs: float | None = None, w: float | None = None,
                   ps: float | None = None) -> Parsed:
    """CTF table (N x 9) of a RELION .star as cryoDRGN's ``parse_ctf_star`` writes it; every
    given value replaces the file's for all particles."""
    for name, v in (("-D", D), ("--Apix", apix), ("--kv", kv)):
        _check_positive(name, v)
    if cs is not None and not (np.isfinite(cs) and cs >= 0):
        raise InputError(f"--cs {cs}: give a spherical aberration of 0 mm or more.")
    if w is not None and not (np.isfinite(w) and 0 <= w < 1):
        raise InputError(f"-w {w}: the amplitude contrast ratio is between 0 and 1.")
    path = Path(path)
    star = read_star(path)
    n = len(star)
    out = np.zeros((n, 9))
    out[:, 0] = D if D is not None else star.box()
    if apix is not None:
        out[:, 1] = apix
    else:
        psize = star.pixel_size()
        if psize is None:
            raise InputError(f"{path} has no pixel size (_rlnImagePixelSize, or "
                             "_rlnDetectorPixelSize and _rlnMagnification); give it (--Apix).")
        out[:, 1] = psize
    given = {"rlnVoltage": (kv, "--kv"), "rlnSphericalAberration": (cs, "--cs"),
             "rlnAmplitudeContrast": (w, "-w")}
    for j, name in enumerate(STAR_FIELDS, start=2):
        value, flag = given.get(name, (None, None))
        if value is not None:
            out[:, j] = value
        else:
            hint = f"(a CTF parameter); give it with {flag}" if flag else \
                "(a CTF parameter); the file does not hold CTF"
            out[:, j] = star.require(name, hint=hint)
    if ps is not None:
        out[:, 8] = ps
    else:
        phase = star.values("rlnPhaseShift")
        if phase is None:
            log.info("%s has no _rlnPhaseShift: phase shift 0 (no phase plate; cryoDRGN 4.3.1 "
                     "writes NaN here unless given --ps 0)", path)
        out[:, 8] = 0.0 if phase is None else phase
    if not np.isfinite(out).all():
        i = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise InputError(f"{path}: the CTF parameters of particle {i} are not all numbers.")
    return Parsed(n, _one(out[:, 0]), _one(out[:, 1]), ctf=out.astype(np.float32))


# -- cryoSPARC ---------------------------------------------------------------------------------
def _cs_fill(table, path: Path, field: str, given, flag: str, file_value):
    """``given`` when the file lacks ``field``, else None (with a warning if it differs)."""
    if given is None or not table.has(field):
        return given
    if file_value is not None and abs(float(given) / file_value - 1) > 1e-6:
        log.warning("%s gives %s %g; %s %g is ignored (as cryoDRGN ignores it)", path, field,
                    file_value, flag, given)
    return None


def parse_pose_csparc(path: str | os.PathLike, D: int | None = None, abinit: bool = False,
                      hetrefine: bool = False) -> Parsed:
    """Poses of a cryoSPARC .cs as cryoDRGN's ``parse_pose_csparc`` writes them."""
    _check_positive("-D", D)
    path = Path(path)
    table = open_cs(path)
    has_box = table.has("blob/shape")
    D_fill = _cs_fill(table, path, "blob/shape", D, "-D", cs_box(table) if has_box else None)
    prefix = "alignments3D"
    if abinit and table.has("alignments3D/pose"):
        # cryoDRGN's --abinit reads alignments_class_0 even when 3D alignments are there too
        prefix = "alignments_class_0"
        rot = cryosparc_to_cryodrgn(table.field(
            f"{prefix}/pose", "(ab-initio poses); drop --abinit").astype(np.float64))
        check_rotations(rot, str(path))
        trans = np.zeros((len(table), 2))
        if table.has(f"{prefix}/shift"):
            trans = (table.field(f"{prefix}/shift").astype(np.float64)
                     / cs_box(table, D_fill, per_particle=True)[:, None])
        rot, trans = rot.astype(np.float32), trans.astype(np.float32)
    else:
        if not table.has("alignments3D/pose"):
            prefix = "alignments_class_0"
        rot, trans = load_poses(path, D=D_fill)
    if hetrefine:
        if table.has(f"{prefix}/psize_A") and table.has("blob/psize_A"):
            log.info("%s records the alignment's pixel size (%s/psize_A): shifts were "
                     "converted with it, so --hetrefine's doubling is not applied again",
                     path, prefix)
        else:
            trans = trans * 2
    box = D_fill if D_fill is not None else cs_box(table)
    return Parsed(len(rot), float(box), cs_pixel_size(table), rot=rot, trans=trans)


def parse_ctf_csparc(path: str | os.PathLike, D: int | None = None,
                     apix: float | None = None) -> Parsed:
    """CTF table (N x 9) of a cryoSPARC .cs as cryoDRGN's ``parse_ctf_csparc`` writes it."""
    _check_positive("-D", D)
    _check_positive("--Apix", apix)
    path = Path(path)
    table = open_cs(path)
    D_fill = _cs_fill(table, path, "blob/shape", D, "-D",
                      cs_box(table) if table.has("blob/shape") else None)
    apix_fill = _cs_fill(table, path, "blob/psize_A", apix, "--Apix", cs_pixel_size(table))
    if not table.has("ctf/phase_shift_rad"):
        log.info("%s has no ctf/phase_shift_rad: phase shift 0", path)
    ctf = load_ctf(path, D=D_fill, apix=apix_fill)
    return Parsed(len(ctf), _one(ctf[:, 0]), _one(ctf[:, 1]), ctf=ctf)
