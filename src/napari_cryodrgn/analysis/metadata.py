"""Per-particle metadata of a run's dataset (index, CTF, poses) for colouring the latent
views: read from the files config.yaml names, skipped (and logged) when absent or not of the
run's length."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


def _resolve(workdir: Path, p) -> Path | None:
    if not p or not isinstance(p, str):
        return None
    path = Path(p)
    if not path.is_absolute():
        path = workdir / path
    if path.is_file():
        return path
    # a run moved together with its data: the same folder name beside the run folder
    moved = workdir.parent / path.parent.name / path.name
    return moved if moved.is_file() else None


def dataset_meta(workdir: Path, config: dict, n: int) -> dict:
    """'ind' (original-stack indices) and extra colourings from the dataset files named in
    config.yaml, when present and of the run's length; anything else is skipped (logged)."""
    ds = config.get("dataset_args", {}) or {}
    out: dict = {"colourings": {}}
    ind = None
    ind_path = _resolve(workdir, ds.get("ind"))
    if ind_path is not None:
        from ..io.index import load_index

        try:
            ind = load_index(ind_path, None)
            if len(ind) != n:
                log.info("%s holds %d indices for %d particles; ignored", ind_path, len(ind), n)
                ind = None
        except InputError as e:
            log.info("index file skipped: %s", e)
    out["ind"] = ind
    ctf_path = _resolve(workdir, ds.get("ctf"))
    if ctf_path is not None:
        from ..io.ctf import load_ctf

        try:
            ctf = load_ctf(ctf_path, ind=ind)
            if len(ctf) == n:
                out["colourings"]["defocus"] = ctf[:, 2:4].mean(axis=1).astype(np.float32)
        except InputError as e:
            log.info("CTF colouring skipped: %s", e)
    pose_path = _resolve(workdir, ds.get("poses"))
    if pose_path is not None:
        from ..geometry.rotations import cryodrgn_to_relion_euler
        from ..io.poses import load_poses

        try:
            rot, _ = load_poses(pose_path, D=int(config["lattice_args"]["D"]) - 1, ind=ind)
            if len(rot) == n:
                eul = cryodrgn_to_relion_euler(rot).astype(np.float32)
                for c, name in enumerate(("rot", "tilt", "psi")):
                    out["colourings"][name] = np.ascontiguousarray(eul[:, c])
        except InputError as e:
            log.info("pose colourings skipped: %s", e)
    return out
