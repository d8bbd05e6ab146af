"""Decode and write maps at latent points of a trained run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.mrc import write_mrc
from ..io.runfolder import RunFolder
from ..model.load import LoadedRun, load_weights_config
from ..training.trainer import pick_device

log = logging.getLogger(__name__)


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


def open_model(workdir, epoch=None, config=None, device="cpu") -> tuple[LoadedRun, RunFolder]:
    """A run's model and its folder: from the training folder (``epoch``: latest when None), or
    from a weights file with ``config`` (cryoDRGN's ``WEIGHTS -c CONFIG``; the folder's
    config.yaml when None)."""
    path = Path(workdir)
    if path.is_dir():
        if config is not None:
            raise InputError(f"-c {config}: give -c with a weights file, not with a folder")
        folder = RunFolder.open(path)
        return folder.model(epoch, device=device), folder
    if not path.is_file():
        raise InputError(f"{path}: no such training folder or weights file")
    if epoch is not None:
        raise InputError("--epoch goes with a training folder; a weights file is one epoch")
    config = Path(config) if config is not None else path.parent / "config.yaml"
    run = load_weights_config(path, config, device=device)
    return run, RunFolder(config.parent, run.config)


def eval_volumes(workdir, z=None, zfile=None, out=None, epoch=None, apix=None, device="auto",
                 precision="fp32", config=None, prefix: str = "vol_", start_index: int = 1,
                 flip: bool = False, invert: bool = False) -> list[Path]:
    """Decode maps at ``z`` (one point, or rows) or every row of ``zfile`` and write them as MRC.

    ``workdir`` is a training folder, or a weights file (with ``config``: cryoDRGN's form).
    ``out`` is a folder (``{prefix}{start_index:03d}.mrc``, ...) or, for a single point, a path
    ending in .mrc. ``flip`` mirrors the maps (the other hand), ``invert`` negates them.
    """
    dev = pick_device(device)
    run, folder = open_model(workdir, epoch, config, device=dev)
    zdim = run.model.zdim
    if zfile is not None:
        zs = read_zfile(zfile, zdim)
    else:
        zs = np.atleast_2d(np.asarray(z, np.float32))
        if zs.shape[1] != zdim:
            raise InputError(f"-z has {zs.shape[1]} values but the model has zdim {zdim}")
    if apix is None:
        apix = folder.require_apix("the maps")
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
