"""Checkpoints in cryoDRGN's format (weights.N.pkl, z.N.pkl), written atomically."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_write
from ..io.safepickle import load_pickles, load_torch_checkpoint, save_pickle


def save_checkpoint(outdir, epoch: int, model, optim, z_mu, z_logvar, extra: dict | None = None):
    """Write z.{epoch}.pkl then weights.{epoch}.pkl, each via a temporary file and rename.

    The weights file is written last, so its presence marks a complete epoch.
    """
    outdir = Path(outdir)
    save_pickle(outdir / f"z.{epoch}.pkl", np.asarray(z_mu, np.float32),
                np.asarray(z_logvar, np.float32))
    state = {
        "epoch": int(epoch),
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optim.state_dict() if optim is not None else None,
    }
    if extra:
        state.update(extra)
    with atomic_write(outdir / f"weights.{epoch}.pkl", "wb") as f:
        torch.save(state, f)


def finalize(outdir, epoch: int, stems=("weights", "z")) -> None:
    """Copy the last epoch to weights.pkl / z.pkl (cryoDRGN's final files), atomically;
    ``stems`` chooses which."""
    outdir = Path(outdir)
    for stem in stems:
        src = outdir / f"{stem}.{epoch}.pkl"
        tmp = outdir / f".{stem}.pkl.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, outdir / f"{stem}.pkl")


def epochs_in(outdir, stem: str = "weights") -> list[int]:
    """Sorted epoch numbers N with a ``{stem}.N.pkl`` (weights, or z) in ``outdir``."""
    out = []
    for p in Path(outdir).glob(f"{stem}.*.pkl"):
        m = re.fullmatch(rf"{re.escape(stem)}\.(\d+)\.pkl", p.name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


INPROGRESS = "checkpoint.inprogress.pkl"


def save_inprogress(outdir, state: dict) -> Path:
    """Write the mid-epoch checkpoint (``checkpoint.inprogress.pkl``) atomically.

    ``state`` holds the epoch in progress, the next global batch, the images done and the
    model, optimizer (and grad scaler) states: enough for ``--load latest`` to continue at the
    same position of the same order. The name does not match ``weights.*.pkl``, so tools that
    list completed epochs (ours, cryoDRGN's) never take it for one.
    """
    path = Path(outdir) / INPROGRESS
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    return path


def resume_point(outdir) -> tuple[Path | None, str]:
    """Where ``--load latest`` continues: (path, 'mid-epoch') for an in-progress checkpoint
    newer than the last complete epoch, (weights.N.pkl, 'epoch'), or (None, 'none')."""
    outdir = Path(outdir)
    eps = epochs_in(outdir)
    last = eps[-1] if eps else 0
    mid = outdir / INPROGRESS
    if mid.is_file():
        try:
            state = load_torch_checkpoint(mid, "cpu")
        except InputError:
            state = None
        if isinstance(state, dict) and int(state.get("epoch", 0)) > last:
            return mid, "mid-epoch"
    if eps:
        return outdir / f"weights.{last}.pkl", "epoch"
    return None, "none"


def remove_inprogress(outdir) -> None:
    """Delete a mid-epoch checkpoint that a complete epoch has superseded."""
    p = Path(outdir) / INPROGRESS
    if p.exists():
        p.unlink()


def latest_checkpoint(outdir) -> Path:
    """Path of the highest-numbered weights.N.pkl, or an InputError if there is none."""
    eps = epochs_in(outdir)
    if not eps:
        raise InputError(f"{outdir}: no weights.N.pkl checkpoint to resume from")
    return Path(outdir) / f"weights.{eps[-1]}.pkl"


def load_weights(path, map_location="cpu") -> dict:
    """Load a checkpoint safely (weights_only) and check it holds a model state dict."""
    ckpt = load_torch_checkpoint(path, map_location)
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise InputError(f"{path}: not a training checkpoint (no model_state_dict)")
    return ckpt


def load_z(path) -> tuple[np.ndarray, np.ndarray | None]:
    """z_mu and z_logvar (None when absent) from a z.N.pkl."""
    objs = load_pickles(path)
    mu = np.asarray(objs[0], np.float32)
    logvar = np.asarray(objs[1], np.float32) if len(objs) > 1 else None
    return mu, logvar
