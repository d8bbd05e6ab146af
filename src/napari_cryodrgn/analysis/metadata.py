"""Per-particle metadata of a run's dataset (CTF, poses) for colouring the latent views.

The files are the ones the run's config.yaml names, found by
:class:`..io.runfolder.RunFolder`; a colouring whose file is not found, or whose rows cannot be
matched to the run's particles (an index file that is not found), is not offered, and the
reason is kept for the user (``reasons``).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


def dataset_meta(run, n: int) -> dict:
    """``{"colourings": {name: (n,) float32}, "reasons": {what: why not}}`` for a
    :class:`..io.runfolder.RunFolder` whose latents have ``n`` rows."""
    out: dict = {"colourings": {}, "reasons": {}}
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
    for what, why in out["reasons"].items():
        log.info("%s colouring skipped: %s", what, why)
    return out
