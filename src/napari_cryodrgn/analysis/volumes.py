"""Decode and write maps at latent points of a trained run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.mrc import write_mrc
from ..model.load import LoadedRun, load_run
from ..training.trainer import pick_device

log = logging.getLogger(__name__)


def run_apix(run: LoadedRun) -> float | None:
    """Voxel size of a run's maps: recorded pixel size, else the CTF file's (rescaled to box)."""
    ds = run.config.get("dataset_args", {})
    if ds.get("apix"):
        return float(ds["apix"])
    ctf_path = ds.get("ctf")
    if ctf_path and Path(ctf_path).exists():
        from ..io.ctf import load_ctf

        try:
            ctf = load_ctf(ctf_path)
        except InputError:
            return None
        return float(ctf[0, 1] * ctf[0, 0] / run.D_img)
    return None


def read_zfile(path: Path, zdim: int) -> np.ndarray:
    """Latent points from a text file, one per row, checked against the model's zdim."""
    if not Path(path).exists():
        raise InputError(f"{path}: no such file")
    try:
        z = np.loadtxt(path, ndmin=2, dtype=np.float32)
    except ValueError as e:
        raise InputError(f"{path}: not a table of numbers ({e})") from None
    if z.shape[1] != zdim:
        raise InputError(f"{path}: rows have {z.shape[1]} values but the model has zdim {zdim}")
    return z


def eval_volumes(workdir, z=None, zfile=None, out=None, epoch=None, apix=None, device="auto",
                 precision="fp32") -> list[Path]:
    """Decode maps at ``z`` (one point) or every row of ``zfile`` and write them as MRC files.

    ``out`` is a folder (vol_001.mrc, ...) or, for a single point, a path ending in .mrc.
    """
    dev = pick_device(device)
    run = load_run(workdir, epoch, device=dev)
    zdim = run.model.zdim
    if zfile is not None:
        zs = read_zfile(zfile, zdim)
    else:
        zs = np.asarray(z, np.float32).reshape(1, -1)
        if zs.shape[1] != zdim:
            raise InputError(f"-z has {zs.shape[1]} values but the model has zdim {zdim}")
    if apix is None:
        apix = run_apix(run)
        if apix is None:
            log.warning("pixel size unknown (pass --Apix); writing maps with 1.0 A voxels")
            apix = 1.0
    out = Path(out)
    single = out.suffix.lower() in (".mrc", ".map") and len(zs) == 1
    if not single:
        out.mkdir(parents=True, exist_ok=True)
    dec = run.volume_decoder(precision=precision, device=dev)
    paths = []
    for i, zi in enumerate(zs):
        vol = dec(zi)
        path = out if single else out / f"vol_{i + 1:03d}.mrc"
        write_mrc(path, vol, apix)
        paths.append(path)
    if not single:
        np.savetxt(out / "z_values.txt", zs)
    return paths
