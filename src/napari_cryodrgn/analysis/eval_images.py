"""Latent points and losses of a particle stack through a trained run's encoder (cryoDRGN's
``eval_images``).

::

    res = eval_images(particles, poses, ctf=None, workdir=RUN, epoch=None,   # our run, or
                      weights=W, config=C,                                   # cryoDRGN's pair
                      ind=None, datadir=None, batch_size=64, device="auto", beta=None,
                      invert_data=None, window=None, window_r=None, progress=None)
    res.z_mu, res.z_logvar      # (N, zdim) float32, rows in the order of the (indexed) particles
    res.recon, res.kld, res.loss  # (N,) per particle
    res.summary()               # {"loss", "recon", "kld"}: the means (cryoDRGN's losses pickle)
    save_z(path, res); save_losses(path, res)

The images are preprocessed as the run was trained (:func:`.particle_loss.run_preprocessor`):
window, ``invert_data``, ``window_r`` and the normalisation of config.yaml (the run's std, not
re-estimated from the new stack, as cryoDRGN does too); ``invert_data``/``window``/
``window_r`` given here replace the config's values (cryoDRGN's ``eval_images`` takes them from
its flags only, with defaults that ignore the config). The encoder sees what it saw in
training: the run's ``enc_inplane`` (canonical in-plane turn) and ``enc_input`` (image or
residual) settings (cryoDRGN's runs have neither). Translations are fractions of the box, turned
into pixels with the box D_img; cryoDRGN 4.3.1 multiplies them by D_img + 1, so its z differ
slightly from ours for shifted particles (by a factor (D_img + 1) / D_img on the shifts).

Per particle, in eval mode (z = z_mu), fp32 and without gradients: ``recon`` is the trainer's
generative term (:func:`..training.trainer.recon_error`, the masked Hartley MSE), ``kld`` the
KL divergence of the posterior from the prior, and ``loss = recon + beta * kld / Npix``
(:func:`..training.trainer.vae_loss` per particle; beta defaults to 1/zdim). Their means are
what cryoDRGN writes to its losses pickle. ``progress(done, total)`` is called after each
batch. Qt-free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import check_writable_dir
from ..io.safepickle import save_pickle
from .particle_loss import decode_chunk, run_preprocessor

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Latents and per-particle losses of the evaluated particles (rows in their order)."""

    z_mu: np.ndarray
    z_logvar: np.ndarray
    recon: np.ndarray
    kld: np.ndarray
    beta: float
    n_pix: int  # lattice points in the loss mask
    ind: np.ndarray  # original-stack index of each row
    weights: Path
    epoch: int | None

    @property
    def n(self) -> int:
        return len(self.z_mu)

    @property
    def loss(self) -> np.ndarray:
        """Per-particle total loss: recon + beta * kld / n_pix."""
        return (self.recon.astype(np.float64) + self.beta * self.kld / self.n_pix).astype(
            np.float32)

    def summary(self) -> dict:
        """The means over the particles as plain floats: cryoDRGN's losses pickle."""
        return {"loss": float(self.loss.astype(np.float64).mean()),
                "recon": float(self.recon.astype(np.float64).mean()),
                "kld": float(self.kld.astype(np.float64).mean())}


def check_output(path, overwrite: bool = False, what: str = "output") -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; create its folder and check that it is
    writable. Called before any work so that a bad output fails at once."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name (e.g. {path}/z.pkl)")
    if path.exists() and not overwrite:
        raise InputError(f"{what} {path} exists; choose another name or pass --overwrite")
    check_writable_dir(path.parent)
    return path


def _load(workdir, epoch, weights, config, device):
    from ..model.load import load_run, load_weights_config

    if workdir is not None:
        if weights is not None or config is not None:
            raise ValueError("give either workdir (and epoch) or weights and config")
        return load_run(workdir, epoch, device=device)
    if weights is None:
        raise ValueError("give workdir or weights")
    weights = Path(weights)
    if not weights.is_file():
        raise InputError(f"{weights}: weights file not found")
    config = Path(config) if config is not None else weights.parent / "config.yaml"
    if config.suffix.lower() == ".pkl":
        raise InputError(f"{config}: config.pkl (cryoDRGN before 1.0) is not supported; give "
                         "the run's config.yaml")
    if not config.is_file():
        raise InputError(f"{config}: config file not found; give the run's config.yaml "
                         "with -c")
    return load_weights_config(weights, config, device=device)


def _warn_overrides(run, **given) -> None:
    dargs = run.config.get("dataset_args") or {}
    defaults = {"invert_data": True, "window": True, "window_r": 0.85}
    for key, value in given.items():
        if value is None:
            continue
        trained = dargs.get(key, defaults[key])
        if value != trained:
            log.warning("%s=%s differs from the run's training (%s in config.yaml); the "
                        "images are preprocessed with %s", key, value, trained, value)


def eval_images(particles, poses, ctf=None, *, workdir=None, epoch: int | None = None,
                weights=None, config=None, ind=None, datadir=None, batch_size: int = 64,
                device: str = "auto", beta: float | None = None,
                invert_data: bool | None = None, window: bool | None = None,
                window_r: float | None = None,
                progress: Callable[[int, int], object] | None = None) -> EvalResult:
    """Encode ``particles`` (with their ``poses``, ``ctf`` and optional index ``ind``) with a
    trained run: ``workdir`` (and ``epoch``, latest when None) or ``weights`` and ``config``
    (default: the config.yaml beside the weights). See the module docstring."""
    from ..training.data import load_particle_data
    from ..training.trainer import (
        batch_tensors,
        data_tensors,
        pick_device,
        vae_loss,
    )

    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, not {batch_size!r}")
    dev = pick_device(device)
    run = _load(workdir, epoch, weights, config, dev)
    _warn_overrides(run, invert_data=invert_data, window=window, window_r=window_r)
    data = load_particle_data(particles, poses, ctf=ctf, ind=ind, datadir=datadir)
    if data.D != run.D_img:
        raise InputError(f"{particles}: images of {data.D} pixels but the run was trained on "
                         f"{run.D_img}; downsample the stack to {run.D_img} first "
                         f"(downsample -D {run.D_img})")
    model = run.model.eval()
    prep = run_preprocessor(run, dev, invert_data, window, window_r)
    beta = 1.0 / model.zdim if beta is None else float(beta)
    rot, trans, ctf_t = data_tensors(data)
    n, zdim = data.n, model.zdim
    mu_all = np.empty((n, zdim), np.float32)
    lv_all = np.empty((n, zdim), np.float32)
    recon = np.empty(n, np.float32)
    step = min(int(batch_size), decode_chunk(model, prep))
    inplane = bool(model.args.enc_inplane)
    with torch.no_grad():
        for s in range(0, n, step):
            rows = np.arange(s, min(s + step, n), dtype=np.int64)
            y, c, enc, r = batch_tensors(data, prep, rows, rot, trans, ctf_t, inplane)
            _, _, _, mu, lv, per = vae_loss(model, prep, y, c, enc, r, beta)
            mu_all[rows] = mu.float().cpu().numpy()
            lv_all[rows] = lv.float().cpu().numpy()
            recon[rows] = per.cpu().numpy()
            if progress is not None:
                progress(int(rows[-1]) + 1, n)
    mu64, lv64 = mu_all.astype(np.float64), lv_all.astype(np.float64)
    kld = (-0.5 * np.sum(1 + lv64 - mu64**2 - np.exp(lv64), axis=1)).astype(np.float32)
    return EvalResult(mu_all, lv_all, recon, kld, beta, prep.n, data.ind, run.weights,
                      run.epoch)


def save_z(path, res: EvalResult) -> None:
    """z_mu then z_logvar, two pickles back to back (cryoDRGN's z.N.pkl layout)."""
    save_pickle(path, res.z_mu, res.z_logvar)


def save_losses(path, res: EvalResult) -> None:
    """cryoDRGN's losses pickle (a dict of the mean ``loss``, ``recon`` and ``kld``) with the
    per-particle values added under ``loss_per_particle``, ``recon_per_particle`` and
    ``kld_per_particle`` ((N,) float32 in row order) and ``beta``."""
    out = res.summary()
    out.update(loss_per_particle=res.loss, recon_per_particle=res.recon,
               kld_per_particle=res.kld, beta=float(res.beta))
    save_pickle(path, out)
