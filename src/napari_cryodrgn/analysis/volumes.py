"""Decode and write maps at latent points of a trained run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.mrc import write_mrc
from ..model.load import LoadedRun, load_run, load_weights_config
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


def open_model(workdir, epoch=None, config=None, device="cpu") -> LoadedRun:
    """A run's model from its folder (``epoch``: latest when None), or from a weights file with
    ``config`` (cryoDRGN's ``WEIGHTS -c CONFIG``; the folder's config.yaml when None)."""
    path = Path(workdir)
    if path.is_dir():
        if config is not None:
            raise InputError(f"-c {config}: give -c with a weights file, not with a folder")
        return load_run(path, epoch, device=device)
    if not path.is_file():
        raise InputError(f"{path}: no such training folder or weights file")
    if epoch is not None:
        raise InputError("--epoch goes with a training folder; a weights file is one epoch")
    config = Path(config) if config is not None else path.parent / "config.yaml"
    return load_weights_config(path, config, device=device)


def eval_volumes(workdir, z=None, zfile=None, out=None, epoch=None, apix=None, device="auto",
                 precision="fp32", config=None, prefix: str = "vol_", start_index: int = 1,
                 flip: bool = False, invert: bool = False) -> list[Path]:
    """Decode maps at ``z`` (one point, or rows) or every row of ``zfile`` and write them as MRC.

    ``workdir`` is a training folder, or a weights file (with ``config``: cryoDRGN's form).
    ``out`` is a folder (``{prefix}{start_index:03d}.mrc``, ...) or, for a single point, a path
    ending in .mrc. ``flip`` mirrors the maps (the other hand), ``invert`` negates them.
    """
    dev = pick_device(device)
    run = open_model(workdir, epoch, config, device=dev)
    zdim = run.model.zdim
    if zfile is not None:
        zs = read_zfile(zfile, zdim)
    else:
        zs = np.atleast_2d(np.asarray(z, np.float32))
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
        if flip:
            vol = vol[::-1]
        if invert:
            vol = -vol
        path = out if single else out / f"{prefix}{i + start_index:03d}.mrc"
        write_mrc(path, vol, apix)
        paths.append(path)
    if not single:
        np.savetxt(out / "z_values.txt", zs)
    return paths
