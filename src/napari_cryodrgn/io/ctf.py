"""CTF parameter tables (N x 9, cryoDRGN's column order) from .pkl, RELION .star and .cs files.

Columns (see ``geometry.ctf.CTF_COLUMNS``): box D, Apix, DefocusU (A), DefocusV (A),
DefocusAngle (deg), Voltage (kV), Cs (mm), amplitude contrast, phase shift (deg) -- the
values ``cryodrgn parse_ctf_star`` / ``parse_ctf_csparc`` write.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.ctf import CTF_COLUMNS
from .cs import cs_box, cs_pixel_size, open_cs
from .poses import select_rows
from .safepickle import load_pickle, save_pickle
from .star import read_star

STAR_FIELDS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
               "rlnSphericalAberration", "rlnAmplitudeContrast")
CS_FIELDS = ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm",
             "ctf/amp_contrast", "ctf/phase_shift_rad")


def _from_star(path: Path, D: int | None, apix: float | None) -> np.ndarray:
    """CTF rows of a RELION .star; all particles must share one box and pixel size (optics
    groups that disagree are named in the error)."""
    star = read_star(path)
    star.check_particles()
    out = np.zeros((len(star), 9))
    out[:, 0] = star.agreed(star.box(D), "box size", " px")
    psize = star.pixel_size()
    if psize is None:
        if apix is None:
            raise InputError(
                f"{path} has no pixel size (_rlnImagePixelSize, or _rlnDetectorPixelSize and "
                "_rlnMagnification); give it (--Apix)."
            )
        psize = np.full(len(star), float(apix))
    out[:, 1] = star.agreed(psize, "pixel size", " A")
    for j, field in enumerate(STAR_FIELDS, start=2):
        out[:, j] = star.require(field, hint="(a CTF parameter); the file does not hold CTF")
    phase = star.values("rlnPhaseShift")
    out[:, 8] = 0.0 if phase is None else phase
    return out


def _from_cs(path: Path, D: int | None, apix: float | None) -> np.ndarray:
    """CTF rows of a cryoSPARC .cs (fields it lacks come from its passthrough file)."""
    table = open_cs(path)
    out = np.zeros((len(table), 9))
    out[:, 0] = cs_box(table, D)
    psize = cs_pixel_size(table)
    if psize is None:
        if apix is None:
            raise InputError(f"{path} has no 'blob/psize_A' field (nor a passthrough file with "
                             "it); give the pixel size (--Apix).")
        psize = apix
    out[:, 1] = psize
    hint = "(a CTF parameter)"
    for j, field in enumerate(CS_FIELDS, start=2):
        if field == "ctf/phase_shift_rad" and not table.has(field):
            continue
        vals = table.field(field, hint)
        out[:, j] = np.rad2deg(vals) if field.endswith("_rad") else vals
    return out


def _from_pickle(path: Path) -> np.ndarray:
    obj = load_pickle(path)
    if not isinstance(obj, np.ndarray) or obj.ndim != 2 or obj.shape[1] != 9:
        shape = obj.shape if isinstance(obj, np.ndarray) else type(obj).__name__
        raise InputError(
            f"{path} is not a cryoDRGN CTF file: expected an N x 9 array "
            f"({', '.join(CTF_COLUMNS)}), found {shape}."
        )
    return obj.astype(np.float64)


def rescale_ctf(ctf: np.ndarray, D: int) -> np.ndarray:
    """CTF table for images downsampled to box ``D``, as cryoDRGN does when training:
    Apix becomes Apix * D_orig / D and column 0 becomes D."""
    out = np.array(ctf, dtype=np.float32)
    out[:, 1] = out[:, 1] * out[:, 0] / D
    out[:, 0] = D
    return out


def _validate(path: Path, ctf: np.ndarray, D: int | None, apix: float | None,
              rescale: bool) -> np.ndarray:
    bad = ~np.isfinite(ctf).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        hint = ""
        if np.isfinite(ctf[i, :8]).all():
            hint = (" (only the phase shift: cryodrgn parse_ctf_star writes NaN there when the "
                    ".star has no _rlnPhaseShift; re-parse with --ps 0 or load the .star itself)")
        raise InputError(f"{path}: CTF parameters of particle {i} contain NaN or Inf{hint}.")
    for j, what in ((1, "pixel size"), (5, "voltage")):
        if len(ctf) and ctf[:, j].min() <= 0:
            i = int(np.argmin(ctf[:, j]))
            raise InputError(
                f"{path}: particle {i} has a non-positive {what} ({ctf[i, j]:g}); "
                "the CTF file is damaged or incomplete."
            )
    if D is not None and len(ctf) and np.any(ctf[:, 0] != D):
        i = int(np.flatnonzero(ctf[:, 0] != D)[0])
        box, orig_apix = int(ctf[i, 0]), ctf[i, 1]
        if rescale:
            ctf = rescale_ctf(ctf, D)
        else:
            raise InputError(
                f"{path}: CTF was made for box {box} but particles are {D}: if you "
                f"downsampled them, rescale the CTF to the new box (cryoDRGN rescales Apix as "
                f"Apix*D_orig/D_img, here {orig_apix:g}*{box}/{D}); otherwise the CTF belongs "
                "to another dataset."
            )
    if apix is not None and len(ctf):
        off = np.abs(ctf[:, 1] / apix - 1)
        if off.max() > 0.01:
            i = int(np.argmax(off))
            raise InputError(
                f"{path}: CTF pixel size {ctf[i, 1]:g} A (particle {i}) differs from the "
                f"particles' pixel size {apix:g} A by more than 1%: check --Apix or the CTF file."
            )
    return ctf


def load_ctf(
    path: str | os.PathLike,
    n: int | None = None,
    D: int | None = None,
    apix: float | None = None,
    ind=None,
    *,
    rescale: bool = False,
) -> np.ndarray:
    """Read a CTF table as float32 (N, 9).

    ``n``: particles in the full stack (checked before ``ind`` selects rows). ``D``: the
    particles' box; fills a missing box in star/cs files and must equal column 0 unless
    ``rescale`` applies cryoDRGN's rescaling for downsampled images. ``apix``: fills a missing
    pixel size and must agree within 1% with the file's.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CTF file {path} does not exist; check the file name.")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        ctf = _from_pickle(path)
    elif suffix == ".star":
        ctf = _from_star(path, D, apix)
    elif suffix == ".cs":
        ctf = _from_cs(path, D, apix)
    else:
        raise InputError(f"{path}: CTF files must be .pkl, .star or .cs, not '{suffix}'.")
    if n is not None and len(ctf) != n:
        raise InputError(
            f"{path} holds CTF parameters for {len(ctf)} particles but the stack has {n}: "
            "is it from another dataset, or was the stack filtered?"
        )
    ctf = _validate(path, ctf, D, apix, rescale)
    (ctf,) = select_rows(path, [ctf], ind, "CTF parameters")
    return np.asarray(ctf, dtype=np.float32)


def save_ctf(path: str | os.PathLike, ctf: np.ndarray) -> None:
    """Write a cryoDRGN CTF pickle (float32 N x 9) atomically."""
    ctf = np.asarray(ctf, dtype=np.float32)
    if ctf.ndim != 2 or ctf.shape[1] != 9:
        raise ValueError(f"save_ctf needs an N x 9 array, got {ctf.shape}")
    save_pickle(path, ctf)

