"""Each particle's latent refined after training: z moved up its posterior under the
trained decoder, at the particle's pose and CTF.

::

    ref = LatentRefiner.fit(model, prep, y, c, rot, z, population)  # from a sample
    z_new = ref.refine(model, y, c, rot, z0)      # one batch
    refine_run(workdir, epoch=None, steps=3, device="auto", progress=None)   # a run folder

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
``steps`` Levenberg-Marquardt iterations from the encoder's z (:meth:`LatentRefiner.refine`);
each particle keeps the best point it visited. The decoder's positional encoding and the
coordinate part of its first layer are computed once per batch
(:meth:`..model.decoder.CoordDecoder.pair_at`), and each iteration's Jacobian costs two
backward passes (:meth:`LatentRefiner.linearized`). Measured on the hard preset's epoch 10,
1500 particles, 2 CPU cores (``benchmarks/refine_z.py`` for a whole run): 20 Adam steps
(the first version) took 48.6 s for R^2 0.918 from the encoder's 0.890; 3 iterations take
17.3 s for 0.918 and reach a lower objective; 2 / 5 / 8 iterations give 0.920 / 0.916 /
0.916 (the posterior's mode is not the best point estimate: a few iterations regularise).
The decoder runs in bf16 where training does (:func:`refine_precision`): 1.4x faster than
fp32 on this CPU for the same R^2.

Files (:func:`refine_run`, and the trainer after its last epoch): the encoder's z_mu and
z_logvar are kept in ``z.N.encoder.pkl``; ``z.N.pkl`` (and ``z.pkl`` when it is that
epoch's copy) then hold the refined z_mu with the encoder's z_logvar, in cryoDRGN's format,
so that cryoDRGN's analyses and ours read the refined latents. Refining again starts from
``z.N.encoder.pkl``. Qt-free.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io.safepickle import save_pickle
from ..model.volume import autocast_context
from .checkpoint import finalize, load_z
from .settings import default
from .trainer import model_images

#: part of the latent information (Fisher, summed over shells) the refinement's band keeps
INFO_FRACTION = 0.95
#: iterations per particle: training's --z-refine-steps default
STEPS = default("z_refine_steps")
#: Levenberg-Marquardt: the first damping (a fraction of the Hessian's diagonal), its factor
#: after a step that lowers a particle's objective and after one that does not
LM_DAMPING, LM_DOWN, LM_UP = 0.1, 0.3, 4.0
#: the longest Gauss-Newton step (latent units)
MAX_STEP = 1.0
#: particles per pass of the sample fit (whole images: ~0.4 GiB of activations at D=64 with
#: 256-wide layers)
FIT_CHUNK = 32
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
    ``[half, mirror]``, the band (cycles/pixel), the iterations and the decoder's
    precision."""

    half: torch.Tensor
    coords_half: torch.Tensor
    sel: torch.Tensor
    w: torch.Tensor
    band: float
    noise: np.ndarray
    info: np.ndarray
    prior_mean: torch.Tensor
    prior_prec: torch.Tensor
    steps: int = STEPS
    precision: str = "fp32"

    @classmethod
    def fit(cls, model, prep, y, c, rot, z, population: np.ndarray, steps: int = STEPS,
            info_fraction: float = INFO_FRACTION,
            precision: str = "fp32") -> LatentRefiner:
        """Noise per shell and band from a sample: images ``y`` (B, N), CTF ``c``, poses
        ``rot`` (B, 3, 3) and the encoder's ``z`` (B, zdim), on the model's device; the prior
        from the encoder's z of all particles, ``population`` (N, zdim). ``precision``
        ('fp32' or 'bf16') is the decoder's, here and in :meth:`refine`."""
        sh = shells(prep)
        n_sh = int(sh.max()) + 1
        z = z.float()
        ctx = functools.partial(autocast_context, rot.device, precision)
        res = j2 = 0.0
        for a in range(0, len(z), FIT_CHUNK):
            b = slice(a, a + FIT_CHUNK)
            with torch.no_grad(), ctx():
                pair = model.decoder.pair_at(prep.coords_half @ rot[b].float())
            rec, jac = slices_jacobian(pair, z[b], None if c is None else c[b].float(),
                                       prep.n_half, ctx)
            with torch.no_grad():
                res = res + (rec - y[b].float()).pow(2).sum(0) / len(z)
                j2 = j2 + jac.pow(2).sum((0, 2)) / len(z)
        with torch.no_grad():
            count = torch.bincount(sh, minlength=n_sh).clamp_min(1).float()
            noise = torch.bincount(sh, res, minlength=n_sh) / count
            noise = noise.clamp_min(float(noise[noise > 0].min()) if (noise > 0).any() else 1.0)
            info = torch.bincount(sh, j2, minlength=n_sh) / noise
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
                   torch.from_numpy(prec).to(z.device), int(steps), precision)

    def objective(self, model, y, c, rot, precision: str = "fp32"):
        """``f(z)``: each particle's negative log-posterior (B,) up to a constant, for the
        batch's images ``y``, CTF ``c`` and poses ``rot``; the decoder runs in ``precision``
        (the sums are fp32)."""
        return functools.partial(self.linearized(model, y, c, rot, precision), jac=False)

    def linearized(self, model, y, c, rot, precision: str | None = None):
        """``g(z, jac=True)``: (f, gradient, Gauss-Newton Hessian) of :meth:`objective` at
        ``z`` (B,), (B, zdim), (B, zdim, zdim) (with ``jac=False``: f alone). Each point's
        slice depends on z only through its own first layer, so one backward pass per output
        (the slice and its mirror) through a per-point copy of z gives every point's row of
        the Jacobian (:func:`slices_jacobian`). The decoder runs in ``precision`` (default:
        the refiner's)."""
        ctx = functools.partial(autocast_context, rot.device, precision or self.precision)
        with torch.no_grad(), ctx():
            pair = model.decoder.pair_at(self.coords_half @ rot.float())
        ys = y[:, self.sel].float()
        cs = None if c is None else c[:, self.sel].float()
        n = len(self.half)

        def g(z, jac=True):
            d = z - self.prior_mean
            dp = d @ self.prior_prec
            if jac:
                rec, jac_ = slices_jacobian(pair, z, cs, n, ctx)
            else:
                with torch.no_grad(), ctx():
                    rec = model_images(pair, z, cs)
            r = rec - ys
            f = (r.pow(2) * self.w).sum(1) + 0.5 * (dp * d).sum(1)
            if not jac:
                return f
            wj = jac_ * self.w[:, None]
            grad = 2 * (wj * r[..., None]).sum(1) + dp
            hess = 2 * wj.transpose(1, 2) @ jac_ + self.prior_prec
            return f, grad, hess

        return g

    def refine(self, model, y, c, rot, z0) -> torch.Tensor:
        """Refined z (B, zdim) fp32 of one batch, from ``z0``: ``steps`` Levenberg-Marquardt
        iterations on :meth:`objective` (Gauss-Newton steps, damped per particle: a step
        that does not lower a particle's objective is taken back and its damping raised).
        Each particle's iterations depend on its own image only and it keeps the best point
        it visited, so none ends below the encoder's (in bf16 the iterations run in bf16 and
        the end point is checked against ``z0`` in fp32)."""
        g = self.linearized(model, y, c, rot)
        z0 = z0.detach().float()
        best = z0.clone()
        with torch.no_grad():
            fb, gb, hb = g(best)
            lam = torch.full_like(fb, LM_DAMPING)
            eye = torch.eye(best.shape[1], device=best.device)
            for it in range(self.steps):
                a = hb + lam[:, None, None] * (hb * eye)
                step = torch.linalg.solve(a, -gb[..., None])[..., 0]
                step = step * (MAX_STEP / step.norm(dim=1, keepdim=True).clamp_min(MAX_STEP))
                cand = best + step
                last = it == self.steps - 1
                fc, gc, hc = (g(cand, jac=False), None, None) if last else g(cand)
                ok = fc < fb
                best = torch.where(ok[:, None], cand, best)
                fb = torch.where(ok, fc, fb)
                if not last:
                    gb = torch.where(ok[:, None], gc, gb)
                    hb = torch.where(ok[:, None, None], hc, hb)
                    lam = torch.where(ok, lam * LM_DOWN, lam * LM_UP)
        if self.precision != "fp32":
            exact = self.objective(model, y, c, rot)
            with torch.no_grad():
                best = torch.where((exact(best) <= exact(z0))[:, None], best, z0)
        return best

    def chunk(self, model) -> int:
        """Particles per refinement call within :data:`BUDGET`."""
        return max(1, BUDGET // max(len(self.half) * int(model.args.pdim), 1))

    def describe(self) -> str:
        return (f"band {self.band:.3f} cycles/pixel ({len(self.sel)} points), "
                f"{self.steps} Gauss-Newton iterations, {self.precision}")


def slices_jacobian(pair, z, cs, n: int, ctx):
    """(CTF x slices and mirrors (B, 2n), their Jacobian in z (B, 2n, zdim)), fp32, at the
    ``n`` points of ``pair`` (:meth:`..model.decoder.CoordDecoder.pair_at`), the decoder in
    the autocast context ``ctx()``. Each point's value depends on z only through that point's
    first layer, so one backward pass per output (slice, mirror) through a per-point copy of
    z gives every point's row of the Jacobian: the cost of two gradients, against zdim
    forward-mode passes (measured: the refinement's sample fit on the hard preset, 256
    particles at D=64, went from 59 s to 4.8 s in fp32 and 2.4 s in bf16 on 2 CPU cores)."""
    zp = z[:, None, :].expand(-1, pair.points, -1).contiguous().requires_grad_(True)
    with torch.enable_grad(), ctx():
        h, hm = pair(zp)
    rows = []
    for i, out in enumerate((h, hm)):
        (gp,) = torch.autograd.grad(out, zp, torch.ones_like(out), retain_graph=i == 0)
        rows.append(gp.float().view(len(z), -1, n, z.shape[1]).sum(1))
    jac = torch.cat(rows, 1)
    rec = torch.cat([h, hm], 1).detach().float()
    if cs is not None:
        rec, jac = rec * cs, jac * cs[..., None]
    return rec, jac


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


def fit_on_sample(model, prep, images, mu: np.ndarray, steps: int,
                  precision: str = "fp32") -> LatentRefiner:
    """:meth:`LatentRefiner.fit` on the :func:`sample_rows` of the encoder's ``mu`` (all
    particles); ``images(rows)`` gives their (y, c, rot) on the model's device; the
    refinement's precision follows the run's (:func:`refine_precision`)."""
    rows = sample_rows(len(mu))
    y, c, rot = images(rows)
    zs = torch.from_numpy(np.ascontiguousarray(mu[rows], np.float32)).to(y.device)
    return LatentRefiner.fit(model, prep, y, c, rot, zs, mu, steps=steps,
                             precision=refine_precision(precision))


def refine_precision(precision: str) -> str:
    """The refinement's decoder precision for a run's training ``precision``: bf16 where
    training uses it (GPUs, and CPUs with bf16 units), else fp32 (fp16 would need a gradient
    scaler for z)."""
    return "bf16" if precision == "bf16" else "fp32"


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


def refine_run(workdir, epoch: int | None = None, steps: int = STEPS, device: str = "auto",
               batch_size: int = 256,
               progress: Callable[[int, int], object] | None = None,
               precision: str = "auto") -> tuple[Path, Path, str]:
    """Refine the latents of a trained run (ours or cryoDRGN's) at ``epoch`` (latest when
    None) and write them (:func:`write_refined`); ``precision`` 'auto' (bf16 where the
    device has it, as training), 'bf16' or 'fp32'. Returns (z.N.pkl, z.N.encoder.pkl, a
    description of the band and steps). InputError when the particles, poses or CTF cannot
    be found."""
    from ..analysis.particle_loss import run_preprocessor
    from ..io.runfolder import RunFolder
    from .trainer import batch_tensors, data_tensors, pick_device, pick_precision

    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be a positive integer, not {steps!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    if precision not in ("auto", "bf16", "fp32"):
        raise InputError(f"precision must be auto, bf16 or fp32, not {precision!r}")
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

    ref = fit_on_sample(model, prep, lambda rows: batch(rows)[1:], mu, steps,
                        pick_precision(dev, precision))
    rows = (np.arange(s, min(s + batch_size, n), dtype=np.int64)
            for s in range(0, n, batch_size))
    z = np.array(mu, np.float32, copy=True)
    for done in refine_rows(model, ref, map(batch, rows), mu, z):
        if progress is not None:
            progress(done, n)
    final = _final_copy(folder.workdir, mu, lat.z)
    zfile = write_refined(folder.workdir, lat.epoch, z, mu, logvar, final)
    return zfile, encoder_file(folder.workdir, lat.epoch), ref.describe()
