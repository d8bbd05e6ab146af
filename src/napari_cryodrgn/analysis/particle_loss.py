"""Per-particle reconstruction error of a trained run, for colouring the latent views.

::

    losses = particle_losses(workdir, epoch=None, batch_size=256, device="auto",
                             progress=None)         # (N,) float32, one per row of z.N.pkl
    particles_available(run)                        # cheap: are the run's particle files there?
    cached_losses(workdir, epoch, n)                # the cached array, or None

Row ``r`` is the trainer's generative loss term (:func:`..training.trainer.recon_error`, the
masked Hartley MSE) of particle ``r`` alone: its image, preprocessed as in training (window,
``invert_data`` and the normalisation of config.yaml, translation, CTF), against the decoder's
central slice at the particle's pose and its stored latent point ``z_mu`` (the epoch's
z.N.pkl, not re-encoded, so the values belong to the points the explorer draws). The mean over
the particles is the eval-mode generative loss of the epoch. Only the decoder is used, so the
encoder's settings (mask, in-plane turning, input) do not matter and cryoDRGN's runs work too.
Computed in fp32, without gradients.

The result is cached in ``WORKDIR/explore/loss.{epoch}.npy`` (``loss.final.npy`` for
``z.pkl``), written atomically; the cache is used when it holds N values and is not older
than the epoch's z and weights files, else recomputed. A read-only run folder is not cached
(a warning is logged). ``progress(done, total)`` is called after each batch (a GUI worker's
progress bar). Qt-free.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_write
from ..io.runfolder import STATE_DIR, RunFolder

log = logging.getLogger(__name__)

NEEDS = "the per-particle loss colouring needs the particles the run was trained on"
DECODE_BUDGET = 2**27  # decoder activations per chunk (points x hidden units, ~0.5 GiB fp32)


def loss_cache_path(workdir, epoch: int | None) -> Path:
    """``WORKDIR/explore/loss.{epoch}.npy`` (``loss.final.npy`` for the final z.pkl)."""
    return Path(workdir) / STATE_DIR / f"loss.{'final' if epoch is None else epoch}.npy"


def _latent_files(workdir: Path, epoch: int | None) -> list[Path]:
    if epoch is None:
        return [workdir / "z.pkl", workdir / "weights.pkl"]
    return [workdir / f"z.{epoch}.pkl", workdir / f"weights.{epoch}.pkl"]


def cached_losses(workdir, epoch: int | None, n: int) -> np.ndarray | None:
    """The cached losses of ``epoch`` (an epoch number, None: z.pkl) when the cache holds
    ``n`` values and is not older than the epoch's z and weights files; else None."""
    workdir = Path(workdir)
    path = loss_cache_path(workdir, epoch)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        log.warning("ignoring %s (%s); the losses are recomputed", path, e)
        return None
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.floating):
        log.warning("ignoring %s: %s values of type %s for %d particles", path, arr.shape,
                     arr.dtype, n)
        return None
    for f in _latent_files(workdir, epoch):
        try:
            if f.stat().st_mtime > mtime:
                log.info("ignoring %s: older than %s", path, f.name)
                return None
        except OSError:
            pass
    return arr.astype(np.float32, copy=False)


def _save_cache(path: Path, losses: np.ndarray) -> None:
    try:
        path.parent.mkdir(exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, losses)
        with atomic_write(path, "wb") as f:
            f.write(buf.getvalue())
    except (OSError, InputError) as e:
        log.warning("per-particle losses not cached in %s (%s)", path, e)


def particles_available(run) -> bool:
    """Whether the files the run's config.yaml names for its particles and poses (and CTF and
    index when recorded) are found; a cheap check that reads nothing."""
    run = RunFolder.of(run)
    return (run.recorded("particles") is not None and run.recorded("poses") is not None
            and not run.missing())


def run_preprocessor(run, device, invert_data: bool | None = None, window: bool | None = None,
                     window_r: float | None = None):
    """The :class:`..training.preprocess.Preprocessor` a run (``model.load.LoadedRun``) was
    trained with: window, ``invert_data`` and the normalisation of its config.yaml (never
    re-estimated) and its encoder mask. The keyword arguments, when not None, replace the
    config's values (cryoDRGN's ``eval_images`` flags)."""
    from ..training.preprocess import Preprocessor

    dargs = run.config.get("dataset_args") or {}
    if run.norm[0] != 0.0:
        raise InputError(f"config.yaml: dataset_args.norm has a mean of {run.norm[0]}; only "
                         "a mean of 0 (as cryoDRGN and napari-cryodrgn write) is supported")
    inv = bool(dargs.get("invert_data", True)) if invert_data is None else bool(invert_data)
    win = bool(dargs.get("window", True)) if window is None else bool(window)
    r = float(dargs.get("window_r", 0.85)) if window_r is None else float(window_r)
    return Preprocessor(run.D_img, inv, win, r, run.norm[1], enc_radius=run.model.args.enc_mask,
                        device=device)


def decode_chunk(model, prep) -> int:
    """Particles per decoder call that keep its activations within ``DECODE_BUDGET``."""
    return max(1, DECODE_BUDGET // max(prep.n_half * int(model.args.pdim), 1))


def particle_losses(workdir, epoch: int | None = None, batch_size: int = 256,
                    device: str = "auto",
                    progress: Callable[[int, int], object] | None = None) -> np.ndarray:
    """Reconstruction error (N,) float32 of every particle of the run (a folder or a
    :class:`..io.runfolder.RunFolder`) at ``epoch`` (latest when None); see the module
    docstring. InputError when the run's particle files cannot be found or do not fit it."""
    from ..training.trainer import batch_tensors, data_tensors, pick_device, recon_error

    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    folder = RunFolder.of(workdir)
    workdir = folder.workdir
    lat = folder.latents(epoch)
    n = len(lat.z)
    cached = cached_losses(workdir, lat.epoch, n)
    if cached is not None:
        if progress is not None:
            progress(n, n)
        return cached
    dev = pick_device(device)
    run = folder.model(lat.epoch, device=dev)
    data = folder.particle_data(n, NEEDS)
    prep = run_preprocessor(run, dev)
    rot, trans, ctf = data_tensors(data)
    z = torch.from_numpy(np.ascontiguousarray(lat.z, np.float32))
    chunk = decode_chunk(run.model, prep)
    out = np.empty(n, np.float32)
    model = run.model.eval()
    with torch.no_grad():
        for s in range(0, n, batch_size):
            rows = np.arange(s, min(s + batch_size, n), dtype=np.int64)
            # the encoder's input (and its in-plane turning) is not needed: enc_inplane off
            y, c, _, r = batch_tensors(data, prep, rows, rot, trans, ctf)
            coords = prep.coords_half.to(r.dtype) @ r
            zb = z[rows].to(dev)
            for a in range(0, len(rows), chunk):
                b = slice(a, a + chunk)
                per = recon_error(model, y[b], None if c is None else c[b], coords[b], zb[b])
                out[s + a : s + a + len(per)] = per.cpu().numpy()
            if progress is not None:
                progress(int(rows[-1]) + 1, n)
    _save_cache(loss_cache_path(workdir, lat.epoch), out)
    return out
