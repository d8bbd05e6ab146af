"""Per-particle metadata of a run's dataset for colouring the latent views: defocus and pose
angles, and every informative column of the run's RELION .star or cryoSPARC .cs (class numbers,
class posteriors, optics/micrograph groups, likelihoods...).

The files are the ones the run's config.yaml names, found by
:class:`..io.runfolder.RunFolder`; a colouring whose file is not found, or whose rows cannot be
matched to the run's particles (an index file that is not found), is not offered, and the
reason is kept for the user (``reasons``). Columns that say nothing (one value for all, or text
that differs for every particle, such as image names) are not offered. Integer columns with
few values and text columns are categorical (``categorical``: drawn with discrete colours;
text values are numbered in sorted order, ``labels`` keeps the names).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


MAX_CATEGORIES = 50  # an integer column with at most this many values is categorical
SKIP_COLUMNS = {"uid", "rlnImageName", "rlnOriginalImageName", "blob/idx"}


def column_colourings(columns: dict, n_rows: int, prefix: str) -> tuple[dict, dict, set]:
    """Colourings of a table's columns (``{name: 1D array}``, all ``n_rows`` long): numeric
    columns as float32, text columns as category numbers. Returns (colourings, labels,
    categorical names)."""
    out, labels, categorical = {}, {}, set()
    for key, raw in columns.items():
        if key in SKIP_COLUMNS:
            continue
        v = np.asarray(raw)
        if v.ndim != 1 or len(v) != n_rows or not len(v):
            continue
        name = f"{prefix}{key}"
        if v.dtype.kind in "biuf":
            v = v.astype(np.float64)
            finite = np.isfinite(v)
            if not finite.any():
                continue
            uniq = np.unique(v[finite])
            if len(uniq) < 2:
                continue
            out[name] = v.astype(np.float32)
            if len(uniq) <= MAX_CATEGORIES and np.all(uniq == np.round(uniq)):
                categorical.add(name)
        elif v.dtype.kind in "OSU":
            text = np.asarray([x.decode() if isinstance(x, bytes) else str(x) for x in v])
            uniq, codes = np.unique(text, return_inverse=True)
            if len(uniq) < 2 or len(uniq) > max(2, n_rows // 2):
                continue
            out[name] = codes.astype(np.float32)
            labels[name] = [str(u) for u in uniq]
            categorical.add(name)
    return out, labels, categorical


def _table_columns(path) -> tuple[dict, int]:
    """(columns, rows) of the particle table of a .star or .cs file."""
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() == ".star":
        from ..io.star import read_star

        df = read_star(path).particles
        return {c: df[c].to_numpy() for c in df.columns}, len(df)
    from ..io.cs import read_cs

    arr = read_cs(path)
    return {f: arr[f] for f in arr.dtype.names or ()}, len(arr)


def _table_meta(run, n: int, ind, out: dict) -> None:
    """The columns of the run's .star/.cs files (particles, poses or CTF) as colourings."""
    seen = set()
    for key in ("particles", "poses", "ctf"):
        path = run.recorded(key)
        if path is None or path.suffix.lower() not in (".star", ".cs") or path in seen:
            continue
        seen.add(path)
        if not path.is_file():
            out["reasons"][f"{path.name} columns"] = f"{path} (the run's {key} file) is not found"
            continue
        try:
            columns, rows = _table_columns(path)
        except InputError as e:
            out["reasons"][f"{path.name} columns"] = str(e)
            continue
        if ind is not None:
            if len(ind) and ind.max() >= rows:
                out["reasons"][f"{path.name} columns"] = (
                    f"{path} has {rows} rows but the run's index goes up to {ind.max()}")
                continue
            columns = {k: np.asarray(v)[ind] if np.ndim(v) == 1 and len(v) == rows else v
                       for k, v in columns.items()}
        cols, labels, cat = column_colourings(columns, n, f"{path.suffix.lstrip('.')}: ")
        for name, values in cols.items():
            out["colourings"].setdefault(name, values)
        out["labels"].update(labels)
        out["categorical"].update(cat)


def dataset_meta(run, n: int) -> dict:
    """``{"colourings": {name: (n,) float32}, "categorical": {names}, "labels": {name:
    [category names]}, "reasons": {what: why not}}`` for a :class:`..io.runfolder.RunFolder`
    whose latents have ``n`` rows."""
    out: dict = {"colourings": {}, "reasons": {}, "categorical": set(), "labels": {}}
    try:
        ind = run.ind
        run.check_rows(n, "the latents")
    except InputError as e:
        out["reasons"]["metadata"] = str(e)
        log.info("metadata colourings skipped: %s", e)
        return out
    ctf_path = run.ctf
    if ctf_path is not None:
        from ..io.ctf import load_ctf

        try:
            ctf = load_ctf(ctf_path, ind=ind)
            if len(ctf) == n:
                out["colourings"]["defocus"] = ctf[:, 2:4].mean(axis=1).astype(np.float32)
        except InputError as e:
            out["reasons"]["defocus"] = str(e)
    elif run.recorded("ctf") is not None:
        out["reasons"]["defocus"] = f"{run.recorded('ctf')} (the run's CTF file) is not found"
    pose_path = run.poses
    if pose_path is not None:
        from ..geometry.rotations import cryodrgn_to_relion_euler
        from ..io.poses import load_poses

        try:
            rot, _ = load_poses(pose_path, D=run.D, ind=ind)
            if len(rot) == n:
                eul = cryodrgn_to_relion_euler(rot).astype(np.float32)
                for c, name in enumerate(("rot", "tilt", "psi")):
                    out["colourings"][name] = np.ascontiguousarray(eul[:, c])
        except InputError as e:
            out["reasons"]["pose angles"] = str(e)
    elif run.recorded("poses") is not None:
        out["reasons"]["pose angles"] = (f"{run.recorded('poses')} (the run's pose file) is not "
                                         "found")
    _table_meta(run, n, ind, out)
    for what, why in out["reasons"].items():
        log.info("%s colouring skipped: %s", what, why)
    return out
