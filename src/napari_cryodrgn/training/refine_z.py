"""Each particle's latent refined after training: z moved to the maximum of its posterior
under the trained decoder, at the particle's pose and CTF.

::

    ref = LatentRefiner.fit(model, prep, y, c, rot, z, population)  # from a sample
    z_new = ref.refine(model, y, c, rot, z0)      # one batch (fp32, no autocast)
    refine_run(workdir, epoch=None, steps=20, device="auto", progress=None)   # a run folder

The encoder reads z from the image alone; the decoder, given a particle's pose and CTF,
tells how well any z explains that particle's image. Following the decoder closes part of
the gap between the two (the amortisation gap, ``benchmarks/amortization.py``).

A particle's objective (:meth:`LatentRefiner.objective`) is its image's negative
log-likelihood, Gaussian with one noise variance per frequency shell (the mean squared
residual of a sample of particles at their encoder's z, so coloured noise and the decoder's
own error weigh less), plus a Gaussian prior fitted to the encoder's z of all particles
(:func:`population_prior`). Only the lattice points up to the band that carries
:data:`INFO_FRACTION` of the latent information count: the Fisher information of z per
shell, ``sum |d(CTF x slice)/dz|^2 / noise`` on the sample, falls steeply beyond the
decoder's resolution (95% is reached at 0.156 cycles/pixel on the hard preset, D=64 at SNR
0.1, and at 0.375 on the CI set, D=32 at SNR 3); points beyond cost time and add nothing.
``steps`` Adam steps of ``lr`` from the encoder's z; each particle keeps the best point it
visited. The decoder's positional encoding and the coordinate part of its first layer are
computed once per batch (:meth:`..model.decoder.CoordDecoder.pair_at`).

Files (:func:`refine_run`, and the trainer after its last epoch): the encoder's z_mu and
z_logvar are kept in ``z.N.encoder.pkl``; ``z.N.pkl`` (and ``z.pkl`` when it is that
epoch's copy) then hold the refined z_mu with the encoder's z_logvar, in cryoDRGN's format,
so that cryoDRGN's analyses and ours read the refined latents. Refining again starts from
``z.N.encoder.pkl``. Qt-free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.safepickle import save_pickle
from .checkpoint import finalize, load_z
from .trainer import model_images

#: part of the latent information (Fisher, summed over shells) the refinement's band keeps
INFO_FRACTION = 0.95
#: Adam's step (latent units; the latents' spread is of order 1)
LR = 0.05
#: particles whose residuals and Fisher information choose the noise and the band
SAMPLE = 256
#: decoder activations per refinement chunk (points x hidden units), ~0.5 GiB in fp32 with
#: the backward pass's copies
BUDGET = 2**25
#: z.N.pkl's name for the encoder's latents once z.N.pkl holds the refined ones
ENCODER_Z = "z.{epoch}.encoder.pkl"
NEEDS = "refining the latents needs the particles the run was trained on"


def shells(prep) -> torch.Tensor:
    """Shell (integer radius in pixels of the image's transform) of each loss point (N,)."""
    return torch.round(prep.k.norm(dim=1) * prep.D_img).long()


@dataclass
class LatentRefiner:
    """The refinement's points (``half``: indices of the Hermitian-pair half the decoder
    evaluates), their likelihood weights ``w`` = 1 / (2 noise variance of their shell) over
    ``[half, mirror]``, the band (cycles/pixel), the steps and the step length."""

    half: torch.Tensor
    coords_half: torch.Tensor
    sel: torch.Tensor
    w: torch.Tensor
    band: float
    noise: np.ndarray
    info: np.ndarray
    prior_mean: torch.Tensor
    prior_prec: torch.Tensor
    steps: int = 20
    lr: float = LR

    @classmethod
    def fit(cls, model, prep, y, c, rot, z, population: np.ndarray, steps: int = 20,
            lr: float = LR, info_fraction: float = INFO_FRACTION) -> LatentRefiner:
        """Noise per shell and band from a sample: images ``y`` (B, N), CTF ``c``, poses
        ``rot`` (B, 3, 3) and the encoder's ``z`` (B, zdim), on the model's device; the prior
        from the encoder's z of all particles, ``population`` (N, zdim)."""
        from torch.func import jvp

        sh = shells(prep)
        n_sh = int(sh.max()) + 1
        z = z.float()
        with torch.no_grad():
            pair = model.decoder.pair_at(prep.coords_half @ rot.float())

            def f(zz):
                return model_images(pair, zz, c)

            rec = f(z)
            res = (rec - y.float()).pow(2).mean(0)
            j2 = torch.zeros_like(rec)
            for i in range(z.shape[1]):
                e = torch.zeros_like(z)
                e[:, i] = 1.0
                j2 += jvp(f, (z,), (e,))[1].pow(2)
            count = torch.bincount(sh, minlength=n_sh).clamp_min(1).float()
            noise = torch.bincount(sh, res, minlength=n_sh) / count
            noise = noise.clamp_min(float(noise[noise > 0].min()) if (noise > 0).any() else 1.0)
            info = torch.bincount(sh, j2.mean(0), minlength=n_sh) / noise
        info_np = info.cpu().double().numpy()
        cum = np.cumsum(info_np)
        # the floor (2 pixels) when the decoder ignores z
        top = max(int(np.searchsorted(cum, info_fraction * cum[-1])) if cum[-1] > 0 else 0, 2)
        half = torch.nonzero(sh[: prep.n_half] <= top).squeeze(1)
        sel = torch.cat([half, half + prep.n_half])
        w = 0.5 / noise[sh[sel]]
        mean, prec = population_prior(population)
        return cls(half, prep.coords_half[half], sel, w, top / prep.D_img,
                   noise.cpu().numpy(), info_np, torch.from_numpy(mean).to(z.device),
                   torch.from_numpy(prec).to(z.device), int(steps), float(lr))

    def objective(self, model, y, c, rot):
        """``f(z)``: each particle's negative log-posterior (B,) up to a constant, for the
        batch's images ``y``, CTF ``c`` and poses ``rot``."""
        with torch.no_grad():
            pair = model.decoder.pair_at(self.coords_half @ rot.float())
        ys = y[:, self.sel].float()
        cs = None if c is None else c[:, self.sel].float()

        def f(z):
            d = z - self.prior_mean
            return (((model_images(pair, z, cs) - ys).pow(2) * self.w).sum(1)
                    + 0.5 * ((d @ self.prior_prec) * d).sum(1))

        return f

    def refine(self, model, y, c, rot, z0) -> torch.Tensor:
        """Refined z (B, zdim) fp32 of one batch, from ``z0``; see the module docstring. Each
        particle's steps depend on its own image only (Adam's moments are per element), and
        each particle keeps the best point it visited, so none ends below the encoder's."""
        f = self.objective(model, y, c, rot)
        z = z0.detach().float().clone().requires_grad_(True)
        best = z.detach().clone()
        best_f = torch.full((len(z),), float("inf"), device=z.device)
        opt = torch.optim.Adam([z], lr=self.lr)
        for step in range(self.steps + 1):
            with torch.enable_grad() if step < self.steps else torch.no_grad():
                fz = f(z)
            with torch.no_grad():
                better = fz < best_f
                best[better] = z[better]
                best_f = torch.where(better, fz, best_f)
            if step == self.steps:
                break
            (z.grad,) = torch.autograd.grad(fz.sum(), z)
            opt.step()
        return best

    def chunk(self, model) -> int:
        """Particles per refinement call within :data:`BUDGET`."""
        return max(1, BUDGET // max(len(self.half) * int(model.args.pdim), 1))

    def describe(self) -> str:
        return (f"band {self.band:.3f} cycles/pixel ({len(self.sel)} points), "
                f"{self.steps} steps")


def population_prior(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (zdim,), precision (zdim, zdim)) float32 of the Gaussian fitted to the encoder's
    z of all particles: the prior of the refinement. The VAE's own N(0, I) is too narrow for
    the latents it learns (variances of 0.1-4.8 per dimension on the presets) and pulls the
    refined points inwards: hard preset R^2 0.919 with N(0, I) against 0.925 with this one."""
    z = np.asarray(z, np.float64)
    cov = np.atleast_2d(np.cov(z, rowvar=False)) if len(z) > 1 else np.eye(z.shape[1])
    cov = cov + 1e-6 * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
    return z.mean(0).astype(np.float32), np.linalg.inv(cov).astype(np.float32)


def sample_rows(n: int) -> np.ndarray:
    """The rows whose residuals and information choose the noise and the band (every rank
    takes the same ones)."""
    return np.unique(np.linspace(0, n - 1, min(SAMPLE, n)).astype(np.int64))


def fit_on_sample(model, prep, images, mu: np.ndarray, steps: int) -> LatentRefiner:
    """:meth:`LatentRefiner.fit` on the :func:`sample_rows` of the encoder's ``mu`` (all
    particles); ``images(rows)`` gives their (y, c, rot) on the model's device."""
    rows = sample_rows(len(mu))
    y, c, rot = images(rows)
    zs = torch.from_numpy(np.ascontiguousarray(mu[rows], np.float32)).to(y.device)
    return LatentRefiner.fit(model, prep, y, c, rot, zs, mu, steps=steps)


def refine_rows(model, ref: LatentRefiner, batches, z0: np.ndarray, out: np.ndarray):
    """Refine the rows the ``batches`` yield as (rows, y, c, rot), rows being indices into
    ``z0`` (their encoder's z), into ``out`` (an array like ``z0``); yields the number of
    rows done after each batch."""
    step = ref.chunk(model)
    done = 0
    for rows, y, c, rot in batches:
        zb = torch.from_numpy(np.ascontiguousarray(z0[rows], np.float32)).to(y.device)
        for a in range(0, len(rows), step):
            b = slice(a, a + step)
            zr = ref.refine(model, y[b], None if c is None else c[b], rot[b], zb[b])
            out[rows[b]] = zr.cpu().numpy()
        done += len(rows)
        yield done


def write_refined(workdir, epoch: int, z: np.ndarray, mu: np.ndarray,
                  logvar: np.ndarray | None, final: bool) -> Path:
    """Keep the encoder's latents (``mu``, ``logvar``) in ``z.N.encoder.pkl`` (unless it is
    there), then replace ``z.N.pkl`` with the refined ``z`` and ``logvar``, and ``z.pkl``
    when ``final``; each file atomically. Returns z.N.pkl's path."""
    workdir = Path(workdir)
    enc = encoder_file(workdir, epoch)
    objs = (mu,) if logvar is None else (mu, logvar)
    if not enc.is_file():
        save_pickle(enc, *[np.asarray(o, np.float32) for o in objs])
    objs = (z,) if logvar is None else (z, logvar)
    zfile = workdir / f"z.{epoch}.pkl"
    save_pickle(zfile, *[np.asarray(o, np.float32) for o in objs])
    if final:
        finalize(workdir, epoch, stems=("z",))
    return zfile


def encoder_file(workdir, epoch: int) -> Path:
    """Where ``epoch``'s encoder latents go once its z.N.pkl is refined (z.N.encoder.pkl)."""
    return Path(workdir) / ENCODER_Z.format(epoch=epoch)


def encoder_zfile(workdir, epoch: int) -> Path:
    """The file with the encoder's latents of ``epoch``: z.N.encoder.pkl when the epoch was
    refined, else z.N.pkl (what eval_images reproduces)."""
    enc = encoder_file(workdir, epoch)
    return enc if enc.is_file() else Path(workdir) / f"z.{epoch}.pkl"


def is_refined(workdir, epoch: int) -> bool:
    """Whether ``epoch``'s z.N.pkl holds refined latents: z.N.encoder.pkl is there and
    differs from it (a process killed between the two writes left them equal)."""
    before = encoder_latents(workdir, epoch)
    if before is None:
        return False
    try:
        now = load_z(Path(workdir) / f"z.{epoch}.pkl")[0]
    except InputError:
        return False
    return not np.array_equal(now, before[0])


def encoder_latents(workdir, epoch: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The encoder's (z_mu, z_logvar) of a refined epoch, or None when it was not refined."""
    enc = encoder_file(workdir, epoch)
    return load_z(enc) if enc.is_file() else None


def _final_copy(workdir: Path, *zs: np.ndarray) -> bool:
    """Whether z.pkl is a copy of this epoch's latents (encoder's or refined ones)."""
    p = workdir / "z.pkl"
    if not p.is_file():
        return False
    try:
        final = load_z(p)[0]
    except InputError:
        return False
    return any(final.shape == z.shape and np.array_equal(final, z) for z in zs)


def refine_run(workdir, epoch: int | None = None, steps: int = 20, device: str = "auto",
               batch_size: int = 256,
               progress: Callable[[int, int], object] | None = None) -> tuple[Path, Path, str]:
    """Refine the latents of a trained run (ours or cryoDRGN's) at ``epoch`` (latest when
    None) and write them (:func:`write_refined`). Returns (z.N.pkl, z.N.encoder.pkl, a
    description of the band and steps). InputError when the particles, poses or CTF cannot
    be found."""
    from ..analysis.particle_loss import run_preprocessor
    from ..io.runfolder import RunFolder
    from .trainer import batch_tensors, data_tensors, pick_device

    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be a positive integer, not {steps!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    folder = RunFolder.of(workdir)
    lat = folder.latents(epoch)
    if lat.epoch is None:
        raise InputError(f"{folder.workdir}: only z.pkl is there; refine a numbered epoch "
                         "(z.N.pkl with its weights.N.pkl)")
    before = encoder_latents(folder.workdir, lat.epoch)
    mu, logvar = before if before is not None else (lat.z, lat.z_logvar)
    n = len(mu)
    dev = pick_device(device)
    run = folder.model(lat.epoch, device=dev)
    model = run.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    data = folder.particle_data(n, NEEDS)
    prep = run_preprocessor(run, dev)
    tables = data_tensors(data)

    def batch(rows):
        y, c, _, r = batch_tensors(data, prep, rows, *tables)
        return rows, y, c, r

    ref = fit_on_sample(model, prep, lambda rows: batch(rows)[1:], mu, steps)
    rows = (np.arange(s, min(s + batch_size, n), dtype=np.int64)
            for s in range(0, n, batch_size))
    z = np.array(mu, np.float32, copy=True)
    for done in refine_rows(model, ref, map(batch, rows), mu, z):
        if progress is not None:
            progress(done, n)
    final = _final_copy(folder.workdir, mu, lat.z)
    zfile = write_refined(folder.workdir, lat.epoch, z, mu, logvar, final)
    return zfile, encoder_file(folder.workdir, lat.epoch), ref.describe()
