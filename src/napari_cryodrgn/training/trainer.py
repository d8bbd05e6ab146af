"""The VAE trainer: an iterator of progress events with cooperative cancel and exact resume."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, TrainingDiverged
from ..io.atomic import check_writable_dir
from ..model.vae import HetVAE, ModelArgs
from ..model.volume import autocast_context
from .checkpoint import finalize, latest_checkpoint, load_weights, save_checkpoint
from .config import save_config
from .data import ParticleData
from .events import Progress
from .preprocess import Preprocessor, estimate_norm_std, inplane_angles

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything a run needs besides the data."""

    outdir: str
    num_epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    wd: float = 0.0
    beta: float | None = None  # None: 1 / zdim
    seed: int = 0
    checkpoint: int = 1  # save every N epochs
    invert_data: bool = True
    window: bool = True
    window_r: float = 0.85
    device: str = "auto"
    precision: str = "auto"  # auto, fp32, bf16, fp16
    load: str | None = None  # a weights file or "latest"
    model: ModelArgs = field(default_factory=ModelArgs)
    dataset_args: dict = field(default_factory=dict)  # paths recorded in config.yaml
    refine_steps: int = 0  # gradient steps on z per batch (semi-amortized inference)
    refine_step: float = 0.5
    log_interval_s: float = 0.5
    eval_batch_size: int = 256
    lineage: dict | None = None  # where the run came from (parent run, selection file)


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
    the image that differs between particles, which it learns to read much sooner.
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
    for _ in range(steps):
        zr = zr.clone().requires_grad_(True)
        with torch.enable_grad():
            h, hm = model.decoder.hartley_pair(coords.detach(), zr)
            rec = torch.cat([h, hm], 1).float()
            if c is not None:
                rec = rec * c
            err = (rec - y).pow(2).sum()
            (g,) = torch.autograd.grad(err, zr)
        g = g.float()
        zr = (zr - step * g / (g.norm(dim=1, keepdim=True) + 1e-12)).detach().to(z.dtype)
    return z + (zr - z).detach()


def recon_error(model: HetVAE, y, c, coords, z) -> torch.Tensor:
    """Per-image reconstruction error (B,): the mean squared difference over the masked
    lattice points between ``y`` and the decoder's slice at ``coords`` (the poses) and ``z``,
    times the CTF ``c`` (None: no CTF). The generative term of :func:`vae_loss`."""
    h, hm = model.decoder.hartley_pair(coords, z)
    recon = torch.cat([h, hm], 1).float()
    if c is not None:
        recon = recon * c
    return (recon - y).pow(2).mean(1)


def batch_tensors(data: ParticleData, prep: Preprocessor, rows: np.ndarray, rot: torch.Tensor,
                  trans: torch.Tensor | None = None, ctf: torch.Tensor | None = None,
                  enc_inplane: bool = False):
    """(y, c, enc, rot) of dataset ``rows`` (int64 array): the preprocessed images (see
    :meth:`Preprocessor.batch`), with ``rot``/``trans``/``ctf`` the whole dataset's poses and
    CTF rows as float32 CPU tensors; ``enc_inplane`` turns the encoder's copy of each image to
    its canonical in-plane orientation."""
    imgs = torch.from_numpy(np.ascontiguousarray(data.images(rows)))
    r = torch.from_numpy(rows)
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
             refine_steps: int = 0, refine_step: float = 0.5):
    """Masked Hartley MSE + beta * KL / Npix for one batch. Returns (loss, gen, kld, mu, per)."""
    coords = prep.coords_half.to(rot.dtype) @ rot  # (B, Nh, 3)
    mu, logvar = model.encode(encoder_input(model, prep, y, c, enc, coords))
    if model.training:
        eps = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
    else:
        z = mu
    if refine_steps and model.training:
        z = refine_latent(model, prep, y, c, coords, z, refine_steps, refine_step)
    per = recon_error(model, y, c, coords, z)
    gen_loss = per.mean()
    mu32, lv32 = mu.float(), logvar.float()
    kld = torch.mean(-0.5 * torch.sum(1 + lv32 - mu32.pow(2) - lv32.exp(), dim=1))
    loss = gen_loss + beta * kld / prep.n
    return loss, gen_loss, kld, mu, logvar, per


class Trainer:
    """Trains a HetVAE on ``data``; :meth:`run` yields :class:`Progress` events.

    Call :meth:`cancel` from any thread to stop after the current batch; the last complete
    checkpoint stays on disk. A NaN loss stops the run and raises :class:`TrainingDiverged`.
    """

    def __init__(self, data: ParticleData, cfg: TrainConfig):
        self.data = data
        self.cfg = cfg
        self._cancel = False
        self.outdir = Path(cfg.outdir)
        check_writable_dir(self.outdir)
        self.device = pick_device(cfg.device)
        self.precision = pick_precision(self.device, cfg.precision)
        margs = cfg.model
        if margs.zdim < 1:
            raise InputError("--zdim must be at least 1")
        self.beta = 1.0 / margs.zdim if cfg.beta is None else float(cfg.beta)
        torch.manual_seed(cfg.seed)
        D = data.D
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
        self.scaler = (torch.amp.GradScaler("cuda") if self.precision == "fp16"
                       and self.device.type == "cuda" else None)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.start_epoch = 1
        if cfg.load:
            self._resume(cfg.load)
        self.rot, self.trans, self.ctf = data_tensors(data)

    # -- control -------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the run to stop after the current batch."""
        self._cancel = True

    @property
    def cancelled(self) -> bool:
        return self._cancel

    def _resume(self, load: str) -> None:
        path = latest_checkpoint(self.outdir) if load == "latest" else Path(load)
        ckpt = load_weights(path, map_location=self.device)
        try:
            self.model.load_state_dict(ckpt["model_state_dict"])
        except RuntimeError as e:
            raise InputError(f"{path}: checkpoint does not match this model ({e})") from None
        if ckpt.get("optimizer_state_dict"):
            self.optim.load_state_dict(ckpt["optimizer_state_dict"])
        if "rng_state" in ckpt and self.device.type == "cpu":
            self.gen.set_state(ckpt["rng_state"])
        self.start_epoch = int(ckpt.get("epoch", 0)) + 1
        log.info("resumed from %s at epoch %d", path, self.start_epoch)

    # -- helpers ---------------------------------------------------------------------------
    def _batch_tensors(self, rows: np.ndarray):
        return batch_tensors(self.data, self.prep, rows, self.rot, self.trans, self.ctf,
                             self.cfg.model.enc_inplane)

    def _order(self, epoch: int) -> np.ndarray:
        """Shuffle order for an epoch: a function of seed and epoch, so resume is exact."""
        g = torch.Generator().manual_seed(self.cfg.seed * 100003 + epoch)
        return torch.randperm(self.data.n, generator=g).numpy()

    @torch.no_grad()
    def encode_all(self) -> tuple[np.ndarray, np.ndarray]:
        """z_mu and z_logvar of every particle with the current encoder (eval mode)."""
        self.model.eval()
        mus, lvs = [], []
        bs = self.cfg.eval_batch_size
        for s in range(0, self.data.n, bs):
            rows = np.arange(s, min(s + bs, self.data.n))
            y, c, enc, rot = self._batch_tensors(rows)
            with autocast_context(self.device, self.precision):
                coords = self.prep.coords_half @ rot
                mu, lv = self.model.encode(encoder_input(self.model, self.prep, y, c, enc, coords))
            mus.append(mu.float().cpu().numpy())
            lvs.append(lv.float().cpu().numpy())
        self.model.train()
        return np.concatenate(mus), np.concatenate(lvs)

    def write_config(self) -> None:
        ds = dict(self.cfg.dataset_args)
        ds.pop("norm_std", None)
        ds.update(norm=[0.0, float(self.norm_std)], invert_data=self.cfg.invert_data,
                  window=self.cfg.window, window_r=self.cfg.window_r, keepreal=False,
                  do_pose_sgd=False)
        lattice = {"D": self.data.D + 1, "extent": 0.5, "ignore_DC": True}
        extra = {"train_args": {k: v for k, v in asdict(self.cfg).items()
                                if k not in ("model", "dataset_args", "lineage")}}
        extra["train_args"]["precision"] = self.precision
        extra["train_args"]["beta"] = self.beta
        if self.cfg.lineage:
            extra["lineage"] = dict(self.cfg.lineage)
        save_config(self.outdir / "config.yaml", ds, lattice, self.cfg.model.to_dict(),
                    self.cfg.seed, extra)

    def note(self, msg: str) -> None:
        """Append a line to the run's run.log (for callers that drive the trainer)."""
        self._log(msg)

    def _log(self, msg: str) -> None:
        with open(self.outdir / "run.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    # -- main loop -------------------------------------------------------------------------
    def run(self):
        """Generator of :class:`Progress` events; trains until done or cancelled."""
        cfg, n = self.cfg, self.data.n
        bs = cfg.batch_size
        self.write_config()
        self._log(f"start: {n} particles, D={self.data.D}, device={self.device}, "
                  f"precision={self.precision}, epochs {self.start_epoch}..{cfg.num_epochs}")
        yield Progress("start", self.start_epoch, cfg.num_epochs, 0, n,
                       message=f"device {self.device}, precision {self.precision}")
        if self.start_epoch > cfg.num_epochs:
            yield Progress("done", cfg.num_epochs, cfg.num_epochs, n, n,
                           message="nothing to do: already trained for the requested epochs")
            return
        t_run = time.perf_counter()
        images_run = 0
        self.model.train()
        for epoch in range(self.start_epoch, cfg.num_epochs + 1):
            order = self._order(epoch)
            t_ep = time.perf_counter()
            sums = np.zeros(3)
            last_report = time.perf_counter()
            done = 0
            for s in range(0, n, bs):
                if self._cancel:
                    self._log(f"cancelled during epoch {epoch} after {done} images")
                    yield Progress("cancelled", epoch, cfg.num_epochs, done, n,
                                   message=f"stopped; last checkpoint is epoch {epoch - 1}")
                    return
                rows = order[s : s + bs]
                y, c, enc, rot = self._batch_tensors(rows)
                with autocast_context(self.device, self.precision):
                    loss, gen_loss, kld, *_ = vae_loss(
                        self.model, self.prep, y, c, enc, rot, self.beta, self.gen,
                        cfg.refine_steps, cfg.refine_step)
                if not torch.isfinite(loss):
                    msg = (f"loss became {loss.item()} at epoch {epoch}, batch {s // bs + 1}; "
                           f"training stopped and the last good checkpoint was kept "
                           f"(epoch {epoch - 1}). Try a lower --lr or check the input images.")
                    self._log(msg)
                    yield Progress("error", epoch, cfg.num_epochs, done, n, message=msg)
                    raise TrainingDiverged(msg)
                self.optim.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optim)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.optim.step()
                B = len(rows)
                done += B
                images_run += B
                sums += np.array([loss.item(), gen_loss.item(), kld.item()]) * B
                now = time.perf_counter()
                if now - last_report >= cfg.log_interval_s or done == n:
                    last_report = now
                    ips = images_run / max(now - t_run, 1e-9)
                    remaining = (cfg.num_epochs - epoch) * n + (n - done)
                    yield Progress("batch", epoch, cfg.num_epochs, done, n, *(sums / done),
                                   images_per_s=ips, eta_s=remaining / max(ips, 1e-9))
            mean = sums / n
            dt = time.perf_counter() - t_ep
            self._log(f"epoch {epoch}/{cfg.num_epochs}: loss {mean[0]:.6f} gen {mean[1]:.6f} "
                      f"kld {mean[2]:.4f} ({n / dt:.1f} images/s, {dt:.1f} s)")
            ips = images_run / max(time.perf_counter() - t_run, 1e-9)
            yield Progress("epoch", epoch, cfg.num_epochs, n, n, *mean, images_per_s=ips,
                           eta_s=(cfg.num_epochs - epoch) * n / max(ips, 1e-9),
                           extra={"epoch_s": dt})
            if epoch % cfg.checkpoint == 0 or epoch == cfg.num_epochs:
                mu, lv = self.encode_all()
                save_checkpoint(self.outdir, epoch, self.model, self.optim, mu, lv,
                                extra={"rng_state": self.gen.get_state()}
                                if self.device.type == "cpu" else None)
                yield Progress("checkpoint", epoch, cfg.num_epochs, n, n, *mean,
                               message=f"weights.{epoch}.pkl", extra={"z": mu})
        finalize(self.outdir, cfg.num_epochs)
        total = time.perf_counter() - t_run
        self._log(f"done in {total:.1f} s")
        yield Progress("done", cfg.num_epochs, cfg.num_epochs, n, n,
                       images_per_s=images_run / max(total, 1e-9), message=str(self.outdir))


def _adam(model, cfg: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch build has it for the device."""
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.wd, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.wd)
