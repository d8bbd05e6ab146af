"""One entry point for the CLI and the GUI: validate inputs, build a Trainer, drive it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..model.vae import ModelArgs
from .checkpoint import epochs_in
from .data import load_particle_data
from .trainer import TrainConfig, Trainer


def check_outdir(outdir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write a new run over an existing one unless asked to."""
    if resume or overwrite or not outdir.exists():
        return
    if epochs_in(outdir) or (outdir / "weights.pkl").exists():
        raise InputError(
            f"{outdir} already holds a training run; resume it with --load latest, choose "
            "another folder, or pass --overwrite"
        )


def make_trainer(particles, poses, outdir, zdim: int, ctf=None, ind=None, datadir=None,
                 apix=None, overwrite: bool = False, **kwargs) -> Trainer:
    """Open and check the inputs and return a ready :class:`Trainer`.

    kwargs: TrainConfig fields (num_epochs, batch_size, lr, ...) and ModelArgs fields
    (qdim, qlayers, pdim, players, pe_type, domain, ...).
    """
    outdir = Path(outdir)
    _check_settings(zdim, kwargs)
    check_outdir(outdir, bool(kwargs.get("load")), overwrite)
    margs_fields = ModelArgs.__dataclass_fields__.keys()
    margs = ModelArgs(zdim=zdim, **{"enc_inplane": True, **{
        k: v for k, v in kwargs.items() if k in margs_fields and v is not None}})
    cfg_fields = TrainConfig.__dataclass_fields__.keys()
    tkw = {k: v for k, v in kwargs.items() if k in cfg_fields and k not in margs_fields}
    data = load_particle_data(particles, poses, ctf=ctf, ind=ind, datadir=datadir, apix=apix)
    ds = {
        "particles": _abs(particles), "poses": _abs(poses), "ctf": _abs(ctf), "ind": _abs(ind),
        "datadir": _abs(datadir), "apix": data.apix, "n_particles": int(data.n),
    }
    cfg = TrainConfig(outdir=str(outdir), model=margs, dataset_args=ds, **tkw)
    return Trainer(data, cfg)


_POSITIVE_INT = ("num_epochs", "batch_size", "qdim", "pdim", "checkpoint", "eval_batch_size")
_NONNEG_INT = ("qlayers", "players", "refine_steps")
_NONNEG_FLOAT = ("lr", "wd", "beta", "feat_sigma", "refine_step")


def _check_settings(zdim, kw: dict) -> None:
    """Clear errors for settings of the wrong type or range (GUI and library callers)."""
    def bad(name, val, what):
        raise InputError(f"setting {name}={val!r} is invalid: expected {what}")

    if not isinstance(zdim, int) or isinstance(zdim, bool) or zdim < 1:
        bad("zdim", zdim, "a positive integer")
    for k in _POSITIVE_INT + _NONNEG_INT:
        v = kw.get(k)
        if v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < (1 if k in _POSITIVE_INT else 0):
            bad(k, v, "a positive integer" if k in _POSITIVE_INT else "an integer >= 0")
    for k in _NONNEG_FLOAT:
        v = kw.get(k)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
            bad(k, v, "a number >= 0")
    if kw.get("lr") is not None and kw["lr"] <= 0:
        bad("lr", kw["lr"], "a number > 0")


def _abs(p):
    return None if p is None or not isinstance(p, (str, os.PathLike)) else str(Path(p).resolve())


def train_from_args(args) -> int:
    """Run ``napari-cryodrgn train`` with a progress bar."""
    from tqdm import tqdm

    enc_mask = -2 if args.enc_mask is None else args.enc_mask
    trainer = make_trainer(
        args.particles, args.poses, args.outdir, args.zdim, ctf=args.ctf, ind=args.ind,
        datadir=args.datadir, apix=args.Apix, overwrite=args.overwrite,
        num_epochs=args.num_epochs, batch_size=args.batch_size, lr=args.lr, wd=args.wd,
        beta=args.beta, seed=args.seed, checkpoint=args.checkpoint, invert_data=args.invert_data,
        window=args.window, window_r=args.window_r, device=args.device,
        precision=args.precision, load=args.load, qdim=args.qdim, qlayers=args.qlayers,
        pdim=args.pdim, players=args.players, encode_mode=args.encode_mode, enc_mask=enc_mask,
        pe_type=args.pe_type, pe_dim=args.pe_dim, feat_sigma=args.feat_sigma,
        domain=args.domain, activation=args.activation, enc_input=args.enc_input,
        enc_inplane=args.enc_inplane, refine_steps=args.refine_steps, refine_step=args.refine_step,
    )
    bar = None
    for ev in trainer.run():
        if ev.kind == "start":
            print(f"training {trainer.data.n} particles (D={trainer.data.D}) on {ev.message}")
        if args.quiet:
            if ev.kind == "epoch":
                print(f"epoch {ev.epoch}/{ev.n_epochs}: loss {ev.loss:.5f} "
                      f"({ev.images_per_s:.0f} images/s)")
            continue
        if ev.kind == "batch":
            if bar is None or bar.desc != f"epoch {ev.epoch}/{ev.n_epochs}":
                if bar is not None:
                    bar.close()
                bar = tqdm(total=ev.total, unit="img", desc=f"epoch {ev.epoch}/{ev.n_epochs}")
            bar.update(ev.done - bar.n)
            bar.set_postfix(loss=f"{ev.loss:.4f}", kld=f"{ev.kld:.2f}")
        elif ev.kind in ("cancelled", "done") and ev.message:
            if bar is not None:
                bar.close()
                bar = None
            print(ev.message if ev.kind == "cancelled" else f"done: {ev.message}")
    if bar is not None:
        bar.close()
    return 0


def resume_trainer(outdir, num_epochs: int | None = None) -> Trainer:
    """A trainer that continues the run in ``outdir`` from its latest checkpoint, with the
    inputs and settings recorded in its config.yaml (``num_epochs`` may extend it)."""
    from .config import load_config

    outdir = Path(outdir)
    cfg = load_config(outdir)
    ds, ta = cfg["dataset_args"], dict(cfg.get("train_args") or {})
    if not ds.get("particles") or not ds.get("poses"):
        raise InputError(f"{outdir}/config.yaml does not record the particles and poses")
    skip = ("outdir", "load", "model", "dataset_args", "num_epochs")
    cfg_fields = TrainConfig.__dataclass_fields__.keys()
    kwargs = {k: v for k, v in ta.items() if k in cfg_fields and k not in skip}
    margs = {k: v for k, v in cfg["model_args"].items() if k in ModelArgs.__dataclass_fields__}
    zdim = int(margs.pop("zdim"))
    kwargs.update(margs)
    kwargs["num_epochs"] = int(num_epochs or ta.get("num_epochs") or 1)
    return make_trainer(ds["particles"], ds["poses"], outdir, zdim, ctf=ds.get("ctf"),
                        ind=ds.get("ind"), datadir=ds.get("datadir"), apix=ds.get("apix"),
                        load="latest", **kwargs)
