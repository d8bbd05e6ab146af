"""The VAE trainer: an iterator of progress events with cooperative cancel and exact resume."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, TrainingDiverged
from ..io.atomic import check_writable_dir, remove_stale_temps
from ..io.runfolder import RUN_LOG
from ..model.vae import HetVAE
from ..model.volume import autocast_context
from .checkpoint import (
    INPROGRESS,
    finalize,
    load_weights,
    remove_inprogress,
    resume_point,
    save_checkpoint,
    save_inprogress,
)
from .config import save_config
from .data import ParticleData
from .distributed import DistContext, init_distributed
from .events import Progress
from .loader import BatchStream, EpochPlan, default_chunking
from .preprocess import Preprocessor, estimate_norm_std, inplane_angles
from .settings import TrainConfig  # declared with the settings; re-exported here

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU."""
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA GPU is available")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_precision(device: torch.device, name: str = "auto") -> str:
    """Mixed precision where it is fast and safe: bf16 on CPUs and GPUs that support it."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        try:
            ok = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        except (AttributeError, RuntimeError):
            ok = False
        return "bf16" if ok else "fp32"
    return "fp32"


def encoder_input(model: HetVAE, prep: Preprocessor, y, c, enc, coords):
    """The encoder's input: the phase-flipped image, or with ``enc_input='residual'`` the
    phase-flipped difference between the image and the model's projection at z = 0.

    Subtracting the pose-dependent projection of the mean map leaves the encoder the part of
    the image that differs between particles. Measured on the CI science set (12 epochs) it
    does not help: conformation R^2 0.068 against 0.837 with the image (benchmarks/maps.py
    ablation), so it stays an option, off by default.
    """
    if model.args.enc_input != "residual":
        return enc
    with torch.no_grad():
        z0 = torch.zeros(y.shape[0], model.zdim, device=y.device)
        h, hm = model.decoder.hartley_pair(coords, z0)
        ref = torch.cat([h, hm], 1).float()
        if c is not None:
            ref = ref * c
        r = y - ref
        if c is not None:
            r = r * torch.sign(c)
        return r[:, prep.enc_pos].to(enc.dtype)


def refine_latent(model: HetVAE, prep: Preprocessor, y, c, coords, z, steps: int,
                  step: float) -> torch.Tensor:
    """Move each latent ``steps`` times by ``step`` (latent units) down the gradient of its own
    image's reconstruction error. The decoder knows the particle's pose, so this direction is
    pose-aware information the encoder (which sees only the image) lacks early in training."""
    zr = z.detach()
    with torch.no_grad():  # the z-free part of the decoder, once for all steps
        pair = model.decoder.pair_at(coords.detach())
    for _ in range(steps):
        zr = zr.clone().requires_grad_(True)
        with torch.enable_grad():
            rec = model_images(pair, zr, c)
            err = (rec - y).pow(2).sum()
            (g,) = torch.autograd.grad(err, zr)
        g = g.float()
        zr = (zr - step * g / (g.norm(dim=1, keepdim=True) + 1e-12)).detach().to(z.dtype)
    return z + (zr - z).detach()


def outlier_weights(err: torch.Tensor, power: torch.Tensor, c: float,
                    gather=None) -> torch.Tensor:
    """Per-image weights (B,) from the reconstruction errors ``err`` (B,) in a low band
    (:data:`.preprocess.LOW_BAND`): an image whose error exceeds the batch median by
    ``excess`` more than ``c`` times the median power of the model's images there ``power``
    (B,) gets ``c * power / excess``, the others 1. Junk, which the model cannot explain,
    exceeds the median by about half the signal power there, while noise moves a particle's
    error by a few percent of it even at SNR 0.1 (D=64: junk 0.47, particles' spread 0.05);
    so junk pulls on the networks no harder than an image with an excess of ``c``.
    ``gather`` (several ranks): takes the medians over the whole global batch
    (:meth:`.distributed.DistContext.gather_batch`), so that the weights do not depend on
    the number of ranks."""
    p, pw = err.detach().float(), power.detach().float()
    if gather is not None:
        p_all, pw_all = gather(p), gather(pw)
    else:
        p_all, pw_all = p, pw
    excess = p - p_all.nanmedian()
    cap = c * pw_all.nanmedian()
    return torch.where(excess > cap, cap / excess.clamp_min(1e-30), torch.ones_like(p))


def model_images(pair, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """(B, 2 Nh) fp32: the decoder's slices and their mirrors at latents ``z``, times the CTF
    ``c`` (None: none); ``pair`` is the decoder's :meth:`~..model.decoder.CoordDecoder.pair_at`
    of the batch's points."""
    h, hm = pair(z)
    rec = torch.cat([h, hm], 1).float()
    return rec if c is None else rec * c


def recon_error(model: HetVAE, y, c, coords, z, band: torch.Tensor | None = None):
    """Per-image reconstruction error (B,): the mean squared difference over the masked
    lattice points between ``y`` and the decoder's slice at ``coords`` (the poses) and ``z``,
    times the CTF ``c`` (None: no CTF). The generative term of :func:`vae_loss`. With
    ``band`` (indices of lattice points), also each image's error and model power (mean
    square of the model image) over those points: (error, band error, band power), the last
    two without gradient."""
    recon = model_images(model.decoder.pair_at(coords), z, c)
    diff = recon - y
    per = diff.pow(2).mean(1)
    if band is None:
        return per
    with torch.no_grad():
        return per, diff[:, band].pow(2).mean(1), recon[:, band].pow(2).mean(1)


def batch_tensors(data: ParticleData, prep: Preprocessor, rows: np.ndarray, rot: torch.Tensor,
                  trans: torch.Tensor | None = None, ctf: torch.Tensor | None = None,
                  enc_inplane: bool = False, imgs: torch.Tensor | None = None):
    """(y, c, enc, rot) of dataset ``rows`` (int64 array): the preprocessed images (see
    :meth:`Preprocessor.batch`), with ``rot``/``trans``/``ctf`` the whole dataset's poses and
    CTF rows as float32 CPU tensors; ``enc_inplane`` turns the encoder's copy of each image to
    its canonical in-plane orientation. ``imgs``: the rows' raw images when already read (a
    :class:`~.loader.BatchStream` batch, copied to the device without blocking)."""
    if imgs is None:
        imgs = torch.from_numpy(np.ascontiguousarray(data.images(rows)))
    imgs = imgs.to(prep.device, non_blocking=True)
    r = torch.from_numpy(rows).to(rot.device, non_blocking=True)
    trans = None if trans is None else trans[r]
    ctf = None if ctf is None else ctf[r]
    rot = rot[r].to(prep.device)
    ang = inplane_angles(rot) if enc_inplane else None
    y, c, enc = prep.batch(imgs, trans, ctf, ang)
    return y, c, enc, rot


def data_tensors(data: ParticleData):
    """(rot, trans or None, ctf or None) of the whole dataset as float32 CPU tensors."""
    rot = torch.as_tensor(data.rot, dtype=torch.float32)
    trans = None if data.trans is None else torch.as_tensor(data.trans, dtype=torch.float32)
    ctf = None if data.ctf is None else torch.as_tensor(data.ctf, dtype=torch.float32)
    return rot, trans, ctf


def vae_loss(model: HetVAE, prep: Preprocessor, y, c, enc, rot, beta: float, gen=None,
             refine_steps: int = 0, refine_step: float = 0.5, eps=None, robust: float = 0.0,
             gather=None):
    """Masked Hartley MSE + beta * KL / Npix for one batch. Returns (loss, gen, kld, mu, per).

    In training mode z = mu + eps * sigma with ``eps`` given, else drawn from ``gen``."""
    coords = prep.coords_half.to(rot.dtype) @ rot  # (B, Nh, 3)
    mu, logvar = model.encode(encoder_input(model, prep, y, c, enc, coords))
    if model.training:
        if eps is None:
            eps = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
        z = mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)
    else:
        z = mu
    if refine_steps and model.training:
        z = refine_latent(model, prep, y, c, coords, z, refine_steps, refine_step)
    weigh = bool(robust) and model.training
    per = recon_error(model, y, c, coords, z, band=prep.low_band if weigh else None)
    if weigh:
        per, band_err, band_power = per
    gen_loss = per.mean()
    mu32, lv32 = mu.float(), logvar.float()
    kld = torch.mean(-0.5 * torch.sum(1 + lv32 - mu32.pow(2) - lv32.exp(), dim=1))
    fit = ((per * outlier_weights(band_err, band_power, robust, gather)).mean() if weigh
           else gen_loss)
    loss = fit + beta * kld / prep.n
    return loss, gen_loss, kld, mu, logvar, per


SIGTERM_STOP = "stopped on SIGTERM"
#: checkpoint key of the trained weights when ``model_state_dict`` holds their average
TRAIN_STATE = "train_state_dict"


class _Tally:
    """Loss sums and position of the epoch in progress, updated from each batch's status."""

    def __init__(self, epoch: int, plan: EpochPlan, done: int, sums: np.ndarray):
        self.epoch, self.plan, self.done, self.sums = epoch, plan, done, sums
        self.images = 0  # images trained since this process started the epoch
        self.sigterm = False  # some rank received SIGTERM

    def settle(self, j: int, status: torch.Tensor):
        """Read batch ``j``'s status (waits for the device): (stop, checkpoint) as agreed by
        all ranks, or the error message when the loss is not finite."""
        v = status.tolist()
        if not math.isfinite(v[0]):
            return (f"loss became {v[0]} at epoch {self.epoch}, batch {j + 1}; training stopped "
                    "and the last good checkpoint was kept. Try a lower --lr or check the "
                    "input images.")
        self.sums = self.sums + v[:3]
        end = self.plan.batch_start(j + 1)
        self.images += end - self.done
        self.done = end
        if v[6] > 0:
            self.sigterm = True
        return v[4] > 0, v[5] > 0


class _LossModule(torch.nn.Module):
    """The training loss as a module's forward, so that DistributedDataParallel can wrap it
    (DDP prepares its gradient all-reduce in ``forward``)."""

    def __init__(self, model: HetVAE, prep: Preprocessor, gather=None):
        super().__init__()
        self.model = model
        self.prep = prep
        self.gather = gather  # batch statistics over all ranks (see outlier_weights)

    def forward(self, y, c, enc, rot, beta, eps, refine_steps, refine_step, robust):
        return vae_loss(self.model, self.prep, y, c, enc, rot, beta, eps=eps,
                        refine_steps=refine_steps, refine_step=refine_step, robust=robust,
                        gather=self.gather)


def resolve_shuffle(shuffler_size: int | None, n: int, D: int) -> tuple[int, int]:
    """(window, chunk) of the epoch order (see :mod:`.loader`): ``None`` (auto) shuffles the
    whole epoch when the stack fits in half of this machine's RAM (the page cache keeps it)
    and uses the chunked shuffle otherwise; 0 is a full shuffle; ``W > 0`` a chunked one with
    windows of W particles (at least 16 chunks each)."""
    window, chunk = default_chunking(D)
    if shuffler_size is None:
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            ram = 0
        return ((window, chunk) if ram and n * D * D * 4 > ram // 2 else (0, 0))
    if shuffler_size <= 0:
        return 0, 0
    return int(shuffler_size), max(1, min(chunk, int(shuffler_size) // 16))


class Trainer:
    """Trains a HetVAE on ``data``; :meth:`run` yields :class:`Progress` events.

    Under torchrun each process is one rank of DistributedDataParallel (``ctx``, made from the
    environment when not given): every rank trains its part of each global batch, gradients are
    averaged, and rank 0 alone writes the run folder. One process is the special case world=1.

    Stopping: :meth:`cancel` (any thread) stops after the current batch; :meth:`request_stop`
    and :meth:`request_checkpoint` are what SIGTERM and SIGUSR1 do in the CLI. A stop or a
    checkpoint request, and every ``checkpoint_minutes``, writes ``checkpoint.inprogress.pkl``
    (see :func:`.checkpoint.save_inprogress`) from which ``load='latest'`` continues at the same
    position of the same order. All ranks agree on these decisions through a small status
    all-reduce per batch, which also carries the loss sums and the NaN check. A NaN loss stops
    the run and raises :class:`TrainingDiverged`; the last good checkpoint stays.
    """

    def __init__(self, data: ParticleData, cfg: TrainConfig, ctx: DistContext | None = None):
        self.data = data
        self.cfg = cfg
        self._cancel = False
        self._stop_reason: str | None = None
        self._refine_stopped = False  # a stop came during the latent refinement
        self._ckpt_asked = False
        self.outdir = Path(cfg.outdir)
        self.ctx = ctx if ctx is not None else init_distributed(cfg.device, cfg.launcher)
        check_writable_dir(self.outdir)
        self.device = self.ctx.device
        self.precision = pick_precision(self.device, cfg.precision)
        margs = cfg.model
        if margs.zdim < 1:
            raise InputError("--zdim must be at least 1")
        self.beta = 1.0 / margs.zdim if cfg.beta is None else float(cfg.beta)
        torch.manual_seed(cfg.seed)
        D = data.D
        self.window, self.chunk = resolve_shuffle(cfg.shuffler_size, data.n, D)
        self.norm_std = cfg.dataset_args.get("norm_std") or estimate_norm_std(
            data.images, data.n, cfg.invert_data)
        self.prep = Preprocessor(D, cfg.invert_data, cfg.window, cfg.window_r, self.norm_std,
                                 enc_radius=margs.enc_mask, device=self.device)
        if margs.enc_mask == -2:
            margs.enc_mask = D // 2
        if margs.enc_input == "residual" and bool((self.prep.enc_pos < 0).any()):
            raise InputError("--enc-input residual needs an encoder mask inside the loss mask "
                             f"(--enc-mask <= {D // 2})")
        self.model = HetVAE(D + 1, self.prep.enc_in_dim, margs).to(self.device)
        self.optim = _adam(self.model, cfg, self.device)
        batches = math.ceil(data.n / (cfg.batch_size * self.ctx.world))
        self.ema_decay = ema_decay(cfg.ema, batches)
        self.ema = _weight_average(self.model, self.ema_decay) if cfg.ema else None
        self.scaler = (torch.amp.GradScaler("cuda") if self.precision == "fp16"
                       and self.device.type == "cuda" else None)
        gen_device = self.device if self.device.type in ("cpu", "cuda") else "cpu"
        self.gen = torch.Generator(device=gen_device)  # re-seeded for every global batch
        self.start_epoch = 1
        self._resume_state: dict | None = None
        if cfg.load:
            self._resume(cfg.load)
        # pose and CTF tables live on the GPU (4M particles: ~0.3 GB) so that a batch needs
        # no small host-to-device copies
        tables = data_tensors(data)
        if self.device.type == "cuda":
            tables = tuple(None if t is None else t.to(self.device) for t in tables)
        self.rot, self.trans, self.ctf = tables
        # --robust's batch medians over every rank's images (a rank holds at most batch_size)
        gather = (functools.partial(self.ctx.gather_batch, rows=cfg.batch_size)
                  if self.ctx.distributed else None)
        self._forward = _LossModule(self.model, self.prep, gather)
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # the buffers (the frozen positional-encoding matrix) are equal on every rank
            quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers"
                     in inspect.signature(DDP.__init__).parameters else
                     {"broadcast_buffers": False})
            self._forward = DDP(self._forward, device_ids=ids, **quiet)

    # -- control -------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop after the current batch, keeping the position in a mid-epoch checkpoint."""
        self._cancel = True
        self.request_stop("stopped")

    def request_stop(self, reason: str = "stopped") -> None:
        """Write a mid-epoch checkpoint after the current batch, then stop (SIGTERM)."""
        self._stop_reason = self._stop_reason or reason

    def request_checkpoint(self) -> None:
        """Write a mid-epoch checkpoint after the current batch and go on (SIGUSR1)."""
        self._ckpt_asked = True

    @property
    def cancelled(self) -> bool:
        return self._cancel or self._stop_reason is not None

    def _resume(self, load: str) -> None:
        if load == "latest":
            path, kind = resume_point(self.outdir)
            if path is None:
                log.info("%s holds no checkpoint yet: training starts from the beginning",
                         self.outdir)
                return
        else:
            path = Path(load)
            kind = "mid-epoch" if path.name == INPROGRESS else "epoch"
        ckpt = load_weights(path, map_location=self.device)
        try:
            self.model.load_state_dict(ckpt.get(TRAIN_STATE) or ckpt["model_state_dict"])
            if self.ema is not None:
                self.ema.module.load_state_dict(ckpt["model_state_dict"])
                self.ema.n_averaged.fill_(1)  # continue the average, do not restart it
        except RuntimeError as e:
            raise InputError(f"{path}: checkpoint does not match this model ({e})") from None
        if ckpt.get("optimizer_state_dict"):
            self.optim.load_state_dict(ckpt["optimizer_state_dict"])
        if kind == "mid-epoch":
            self.start_epoch = int(ckpt["epoch"])
            self._resume_state = {k: ckpt[k] for k in ("next_batch", "done", "sums", "world",
                                                        "global_batch", "window", "chunk")}
            if self.scaler is not None and ckpt.get("scaler_state_dict"):
                self.scaler.load_state_dict(ckpt["scaler_state_dict"])
            log.info("resumed from %s: epoch %d at image %d", path, self.start_epoch,
                     ckpt["done"])
        else:
            self.start_epoch = int(ckpt.get("epoch", 0)) + 1
            log.info("resumed from %s at epoch %d", path, self.start_epoch)

    # -- helpers ---------------------------------------------------------------------------
    def _batch_tensors(self, rows: np.ndarray, imgs: torch.Tensor | None = None):
        return batch_tensors(self.data, self.prep, rows, self.rot, self.trans, self.ctf,
                             self.cfg.model.enc_inplane, imgs)

    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.ctx.world

    def _plan(self, epoch: int, window: int | None = None, chunk: int | None = None):
        return EpochPlan.make(self.data.n, self.global_batch, self.cfg.seed, epoch,
                              self.ctx.world, self.window if window is None else window,
                              self.chunk if chunk is None else chunk)

    def _eps(self, epoch: int, plan: EpochPlan, j: int) -> torch.Tensor:
        """Reparameterisation noise of this rank's rows of global batch ``j``: drawn for the
        whole global batch from a generator seeded by (seed, epoch, j), so it does not depend
        on the number of ranks and a resumed run draws the same numbers."""
        self.gen.manual_seed((self.cfg.seed * 1_000_003 + epoch) * 10_000_019 + j)
        e = torch.randn(plan.global_size(j), self.model.zdim, generator=self.gen,
                        device=self.gen.device)
        a, b = plan.rank_span(j, self.ctx.rank, self.ctx.world)
        return e[a:b].to(self.device, non_blocking=True)

    @property
    def averaged(self) -> HetVAE:
        """The network checkpoints save and every particle is encoded with: the moving average
        of the weights with ``--ema``, else the last weights."""
        return self.model if self.ema is None else self.ema.module

    def _train_state(self) -> dict:
        """What a checkpoint holds beside ``model_state_dict`` (:attr:`averaged`, what cryoDRGN
        and the analyses read): with ``--ema``, the trained weights to resume from."""
        return {} if self.ema is None else {TRAIN_STATE: self.model.state_dict()}

    @torch.no_grad()
    def encode_all(self) -> tuple[np.ndarray, np.ndarray]:
        """z_mu and z_logvar of every particle with :attr:`averaged` (eval mode); under
        DDP each rank encodes a contiguous block and every rank receives all of them."""
        model = self.averaged
        model.eval()
        n, rank, world = self.data.n, self.ctx.rank, self.ctx.world
        rows = np.arange(rank * n // world, (rank + 1) * n // world)
        plan = EpochPlan.sequential(rows, self.cfg.eval_batch_size)
        empty = np.zeros((0, self.model.zdim), np.float32)
        mus, lvs = [empty], [empty]
        for _, r, imgs in BatchStream(self.data, plan, pin=self.device.type == "cuda"):
            y, c, enc, rot = self._batch_tensors(r, imgs)
            with autocast_context(self.device, self.precision):
                coords = self.prep.coords_half @ rot
                mu, lv = model.encode(encoder_input(model, self.prep, y, c, enc, coords))
            mus.append(mu.float().cpu().numpy())
            lvs.append(lv.float().cpu().numpy())
        model.train()
        return self.ctx.gather_rows(np.concatenate(mus)), self.ctx.gather_rows(np.concatenate(lvs))

    def _refinement_due(self, epoch: int) -> bool:
        """Whether ``epoch``'s latents are still to be refined (``--z-refine-steps``): its
        checkpoint is there and its z.N.pkl still holds the encoder's z."""
        from .refine_z import is_refined

        return (bool(self.cfg.z_refine_steps) and (self.outdir / f"weights.{epoch}.pkl").is_file()
                and not is_refined(self.outdir, epoch))

    def _refine_latents(self, epoch: int, mu: np.ndarray, lv: np.ndarray, mean):
        """After the last epoch: every particle's z refined through the decoder
        (:mod:`.refine_z`), each rank a block; z.N.pkl replaced, the encoder's z kept in
        z.N.encoder.pkl. Stopping leaves the encoder's z (``napari-cryodrgn refine_z``
        refines later). Yields 'refine' progress and a 'checkpoint' with the refined z."""
        from .refine_z import fit_on_sample, refine_rows, write_refined

        cfg, n = self.cfg, self.data.n
        t0 = last = time.perf_counter()
        model = self.averaged
        model.eval()

        def images(rows):
            y, c, _, rot = self._batch_tensors(rows)
            return y, c, rot

        ref = fit_on_sample(model, self.prep, images, mu, cfg.z_refine_steps, self.precision)
        self._log(f"refining the latents: {ref.describe()}")
        rank, world = self.ctx.rank, self.ctx.world
        rows = np.arange(rank * n // world, (rank + 1) * n // world)
        plan = EpochPlan.sequential(rows, cfg.eval_batch_size)
        z = np.array(mu, np.float32, copy=True)

        def batches(stream):
            for _, r, imgs in stream:
                y, c, _, rot = self._batch_tensors(r, imgs)
                yield r, y, c, rot

        stopped = False
        with BatchStream(self.data, plan, pin=self.device.type == "cuda") as stream:
            for done in refine_rows(model, ref, batches(stream), mu, z):
                now = time.perf_counter()
                if now - last >= cfg.log_interval_s:
                    last = now
                    yield Progress("refine", epoch, cfg.num_epochs, done, len(rows),
                                   message=f"refining the latents: {done}/{len(rows)}")
                if self.cancelled:
                    stopped = True
                    break
        model.train()
        if self.ctx.distributed:  # every rank stops when one does
            flag = torch.tensor([float(stopped)], device=self.device)
            stopped = bool(self.ctx.all_reduce_sum(flag).item() > 0)
        self._refine_stopped = stopped
        if stopped:
            reason = self._stop_reason or "stopped"
            msg = (f"{reason} while refining the latents: z.{epoch}.pkl keeps the encoder's "
                   "latents; resume with --load latest (or run napari-cryodrgn refine_z) to "
                   "refine them")
            self._log(f"latent refinement stopped ({reason})")
            yield Progress("cancelled", epoch, cfg.num_epochs, n, n, message=msg)
            return
        z = self.ctx.gather_rows(z[rows])
        if self.ctx.is_main:
            write_refined(self.outdir, epoch, z, mu, lv, final=False)
        self._log(f"latents refined in {time.perf_counter() - t0:.1f} s")
        yield Progress("checkpoint", epoch, cfg.num_epochs, n, n, *mean,
                       message=f"z.{epoch}.pkl (refined)", extra={"z": z})

    def write_config(self) -> None:
        if not self.ctx.is_main:
            return
        ds = dict(self.cfg.dataset_args)
        ds.pop("norm_std", None)
        ds.update(norm=[0.0, float(self.norm_std)], invert_data=self.cfg.invert_data,
                  window=self.cfg.window, window_r=self.cfg.window_r, keepreal=False,
                  do_pose_sgd=False)
        lattice = {"D": self.data.D + 1, "extent": 0.5, "ignore_DC": True}
        ta = {k: v for k, v in asdict(self.cfg).items()
              if k not in ("model", "dataset_args", "lineage")}
        ta.update(precision=self.precision, beta=self.beta, world_size=self.ctx.world,
                  global_batch_size=self.global_batch, shuffler_size=self.window,
                  shuffle_chunk=self.chunk)
        extra = {"train_args": ta}
        if self.cfg.lineage:
            extra["lineage"] = dict(self.cfg.lineage)
        save_config(self.outdir / "config.yaml", ds, lattice, self.cfg.model.to_dict(),
                    self.cfg.seed, extra)

    def note(self, msg: str) -> None:
        """Append a line to the run's run.log (for callers that drive the trainer)."""
        self._log(msg)

    def _log(self, msg: str) -> None:
        if not self.ctx.is_main:
            return
        with open(self.outdir / RUN_LOG, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    # -- one batch -------------------------------------------------------------------------
    def _step(self, epoch: int, plan: EpochPlan, j: int, rows: np.ndarray,
              imgs: torch.Tensor) -> torch.Tensor:
        """Train on this rank's part of global batch ``j``; returns the batch's status
        [loss, gen, kld sums, images, stop, checkpoint, SIGTERM], summed over ranks, on the
        device (read it later: reading waits for the GPU)."""
        cfg = self.cfg
        y, c, enc, rot = self._batch_tensors(rows, imgs)
        eps = self._eps(epoch, plan, j)
        with autocast_context(self.device, self.precision):
            loss, gen_loss, kld, *_ = self._forward(y, c, enc, rot, self.beta, eps,
                                                    cfg.refine_steps, cfg.refine_step,
                                                    cfg.robust)
        b = len(rows)
        # the gradient of the global batch's mean loss: DDP averages over ranks
        scale = b * self.ctx.world / plan.global_size(j)
        if cfg.lr_anneal:
            lr = cfg.lr * lr_factor(epoch, j, plan.n_batches, cfg.num_epochs, cfg.lr_anneal)
            for g in self.optim.param_groups:
                g["lr"] = lr
        self.optim.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss * scale).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            (loss * scale).backward()
            self.optim.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        due = (self.cfg.checkpoint_minutes > 0 and time.monotonic() - self._last_save
               >= 60 * self.cfg.checkpoint_minutes)
        flags = torch.tensor([b, self._stop_reason is not None, self._ckpt_asked or due,
                              self._stop_reason == SIGTERM_STOP], dtype=torch.float32)
        status = torch.cat([torch.stack([loss, gen_loss, kld]).detach().float() * b,
                            flags.to(self.device, non_blocking=True)])
        return self.ctx.all_reduce_sum(status)

    def _save_inprogress(self, epoch: int, next_batch: int, done: int, sums) -> None:
        self._ckpt_asked = False
        self._last_save = time.monotonic()
        if not self.ctx.is_main:
            return
        save_inprogress(self.outdir, {
            "epoch": int(epoch), "next_batch": int(next_batch), "done": int(done),
            "sums": [float(v) for v in sums], "world": self.ctx.world,
            "global_batch": self.global_batch, "window": self.window, "chunk": self.chunk,
            "model_state_dict": self.averaged.state_dict(), **self._train_state(),
            "optimizer_state_dict": self.optim.state_dict(),
            "scaler_state_dict": None if self.scaler is None else self.scaler.state_dict(),
        })
        self._log(f"checkpoint: epoch {epoch} at image {done} of {self.data.n} ({INPROGRESS})")

    def _epoch_start(self, epoch: int):
        """(plan, first global batch, images done, loss sums) of ``epoch``: from the start,
        or where a mid-epoch checkpoint left it."""
        st = self._resume_state
        if st is None or epoch != self.start_epoch:
            return self._plan(epoch), 0, 0, np.zeros(3)
        self._resume_state = None
        plan = self._plan(epoch, st["window"], st["chunk"])
        done = int(st["done"])
        if st["global_batch"] == self.global_batch:
            j = int(st["next_batch"])
        else:
            j = int(np.searchsorted(plan.bounds, done))
            log.warning("the run was checkpointed with global batch %d and continues with %d: "
                        "the epoch goes on from image %d of the same order", st["global_batch"],
                        self.global_batch, int(plan.bounds[min(j, plan.n_batches)]))
            done = int(plan.bounds[min(j, plan.n_batches)])
        return plan, j, done, np.asarray(st["sums"], dtype=np.float64)

    # -- main loop -------------------------------------------------------------------------
    def run(self):
        """Generator of :class:`Progress` events; trains until done or stopped."""
        cfg, n = self.cfg, self.data.n
        if self.ctx.is_main:
            for p in remove_stale_temps(self.outdir):
                log.info("removed %s, left by a process killed while writing", p.name)
        self.write_config()
        where = f"device={self.device}"
        if self.ctx.distributed:
            where = f"{self.ctx.world} processes ({self.ctx.backend}), rank 0 on {self.device}"
        avg = f", weight average decay {self.ema_decay:.4g}" if self.ema is not None else ""
        self._log(f"start: {n} particles, D={self.data.D}, {where}, "
                  f"precision={self.precision}{avg}, epochs {self.start_epoch}..{cfg.num_epochs}")
        yield Progress("start", self.start_epoch, cfg.num_epochs, 0, n,
                       message=f"{where}, precision {self.precision}")
        if self.start_epoch > cfg.num_epochs:
            if self.start_epoch == cfg.num_epochs + 1 and self._refinement_due(cfg.num_epochs):
                # stopped or killed while refining the last epoch's latents: refine them now
                from .checkpoint import load_z

                mu, lv = load_z(self.outdir / f"z.{cfg.num_epochs}.pkl")
                yield from self._refine_latents(cfg.num_epochs, mu, lv, np.full(3, np.nan))
                if self._refine_stopped:
                    return
                if self.ctx.is_main:
                    finalize(self.outdir, cfg.num_epochs)
                yield Progress("done", cfg.num_epochs, cfg.num_epochs, n, n,
                               message=str(self.outdir))
                return
            yield Progress("done", cfg.num_epochs, cfg.num_epochs, n, n,
                           message="nothing to do: already trained for the requested epochs")
            return
        t_run = time.perf_counter()
        self._last_save = time.monotonic()
        images_run = 0
        self.model.train()
        pin = self.device.type == "cuda"
        for epoch in range(self.start_epoch, cfg.num_epochs + 1):
            plan, j0, done0, sums = self._epoch_start(epoch)
            t_ep = last_report = time.perf_counter()
            tally = _Tally(epoch, plan, done0, sums)
            pending = None  # the last batch's status, read after the next batch is queued
            stop = False
            with BatchStream(self.data, plan, self.ctx.rank, self.ctx.world, j0,
                             prefetch=cfg.prefetch, pin=pin) as stream:
                for j, rows, imgs in stream:
                    item = (j, self._step(epoch, plan, j, rows, imgs))
                    outcome = [] if pending is None else [tally.settle(*pending)]
                    pending = item
                    if outcome and not isinstance(outcome[0], str) and any(outcome[0]):
                        outcome.append(tally.settle(*pending))  # act after the batch just trained
                        pending = None
                    for o in outcome:
                        if isinstance(o, str):
                            self._log(o)
                            yield Progress("error", epoch, cfg.num_epochs, tally.done, n,
                                           message=o)
                            raise TrainingDiverged(o)
                    if len(outcome) == 2:
                        stop = stop or outcome[0][0] or outcome[1][0]
                        self._save_inprogress(epoch, j + 1, tally.done, tally.sums)
                        if stop:
                            break
                    now = time.perf_counter()
                    done = tally.done
                    if outcome and (now - last_report >= cfg.log_interval_s or done == n):
                        last_report = now
                        ips = (images_run + tally.images) / max(now - t_run, 1e-9)
                        remaining = (cfg.num_epochs - epoch) * n + (n - done)
                        yield Progress("batch", epoch, cfg.num_epochs, done, n,
                                       *(tally.sums / done), images_per_s=ips,
                                       eta_s=remaining / max(ips, 1e-9))
            epoch_ckpt = epoch % cfg.checkpoint == 0 or epoch == cfg.num_epochs
            if pending is not None:
                o = tally.settle(*pending)
                if isinstance(o, str):
                    self._log(o)
                    yield Progress("error", epoch, cfg.num_epochs, tally.done, n, message=o)
                    raise TrainingDiverged(o)
                stop = stop or o[0]
                if o[1] and not (epoch_ckpt or stop):
                    self._save_inprogress(epoch, plan.n_batches, tally.done, tally.sums)
            done, sums = tally.done, tally.sums
            images_run += tally.images
            if tally.sigterm:
                self._stop_reason = SIGTERM_STOP
            if stop and done < n:
                reason = self._stop_reason or "stopped"
                msg = (f"{reason}: epoch {epoch} stopped at image {done} of {n}; "
                       f"{INPROGRESS} keeps the position (resume with --load latest)")
                self._log(f"cancelled during epoch {epoch} after {done} images ({reason})")
                yield Progress("cancelled", epoch, cfg.num_epochs, done, n, message=msg)
                return
            mean = sums / max(done, 1)
            dt = time.perf_counter() - t_ep
            rate = (done - done0) / max(dt, 1e-9)
            self._log(f"epoch {epoch}/{cfg.num_epochs}: loss {mean[0]:.6f} gen {mean[1]:.6f} "
                      f"kld {mean[2]:.4f} ({rate:.1f} images/s, {dt:.1f} s)")
            ips = images_run / max(time.perf_counter() - t_run, 1e-9)
            yield Progress("epoch", epoch, cfg.num_epochs, n, n, *mean, images_per_s=ips,
                           eta_s=(cfg.num_epochs - epoch) * n / max(ips, 1e-9),
                           extra={"epoch_s": dt})
            if epoch_ckpt or stop:
                mu, lv = self.encode_all()
                if self.ctx.is_main:
                    save_checkpoint(self.outdir, epoch, self.averaged, self.optim, mu, lv,
                                    self._train_state())
                    remove_inprogress(self.outdir)
                self._last_save = time.monotonic()
                yield Progress("checkpoint", epoch, cfg.num_epochs, n, n, *mean,
                               message=f"weights.{epoch}.pkl", extra={"z": mu})
                if epoch == cfg.num_epochs and not stop and cfg.z_refine_steps:
                    yield from self._refine_latents(epoch, mu, lv, mean)
                    if self._refine_stopped:
                        return
            if stop:
                reason = self._stop_reason or "stopped"
                self._log(f"cancelled after epoch {epoch} ({reason})")
                msg = f"{reason} after epoch {epoch}"
                yield Progress("cancelled", epoch, cfg.num_epochs, n, n, message=msg)
                return
        if self.ctx.is_main:
            finalize(self.outdir, cfg.num_epochs)
        total = time.perf_counter() - t_run
        self._log(f"done in {total:.1f} s")
        yield Progress("done", cfg.num_epochs, cfg.num_epochs, n, n,
                       images_per_s=images_run / max(total, 1e-9), message=str(self.outdir))


def lr_factor(epoch: int, j: int, n_batches: int, num_epochs: int, anneal: int) -> float:
    """The learning rate's factor at global batch ``j`` (of ``n_batches``) of ``epoch``
    (1-based): 1 until the last ``anneal`` epochs, then a cosine from 1 to 0 over them (a
    function of the position alone, so a resumed run continues the same schedule)."""
    if anneal <= 0:
        return 1.0
    start = max(num_epochs - anneal, 0)
    t = (epoch - 1) + (j + 0.5) / max(n_batches, 1)  # the middle of the batch
    if t < start:
        return 1.0
    u = min((t - start) / max(num_epochs - start, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * u))


def ema_decay(decay: float, batches_per_epoch: int) -> float:
    """The per-batch decay of the weight average: ``decay`` (``--ema``), lowered so that the
    average spans at most the last quarter of an epoch (at most ``1 - 4 / batches``): a
    checkpoint then holds the network of its own epoch, however small the dataset."""
    return max(0.0, min(float(decay), 1.0 - 4.0 / max(int(batches_per_epoch), 1)))


def _weight_average(model: HetVAE, decay: float):
    """The exponential moving average of ``model``'s weights (``decay`` per batch), torch's
    :class:`~torch.optim.swa_utils.AveragedModel`."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _adam(model, cfg: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch build has it for the device."""
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.wd, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.wd)
