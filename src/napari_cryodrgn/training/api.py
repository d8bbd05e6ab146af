"""One entry point for the CLI and the GUI: validate inputs, build a Trainer, drive it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, PeerFailed
from ..io.atomic import check_writable_dir
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
                 apix=None, overwrite: bool = False, lineage: dict | None = None,
                 **kwargs) -> Trainer:
    """Open and check the inputs and return a ready :class:`Trainer`.

    kwargs: TrainConfig fields (num_epochs, batch_size, lr, ...) and ModelArgs fields
    (qdim, qlayers, pdim, players, pe_type, domain, ...). ``lineage`` (e.g. parent run,
    parent epoch, selection file) is recorded as the ``lineage:`` section of config.yaml.
    """
    if lineage is not None:
        if not isinstance(lineage, dict):
            raise InputError(f"lineage must be a dict, not {type(lineage).__name__}")
        kwargs["lineage"] = lineage
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


_POSITIVE_INT = ("num_epochs", "batch_size", "qdim", "pdim", "checkpoint", "eval_batch_size",
                 "prefetch")
_NONNEG_INT = ("qlayers", "players", "refine_steps", "shuffler_size")
_NONNEG_FLOAT = ("lr", "wd", "beta", "feat_sigma", "refine_step", "checkpoint_minutes")


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
    """Run ``napari-cryodrgn train`` with a progress bar (rank 0 prints under torchrun).

    SIGTERM (SLURM's notice before the time limit, or ``scancel``) saves the position inside
    the epoch and stops; SIGUSR1 saves it and goes on. Under torchrun every rank learns of a
    signal any rank received, so all of them stop together.
    """
    import torch
    from tqdm import tqdm

    if args.multigpu:
        raise InputError("--multigpu: start one process per GPU with torchrun instead, e.g. "
                         "torchrun --nproc_per_node=4 -m napari_cryodrgn train ...")
    if args.max_threads is not None:
        if args.max_threads < 1:
            raise InputError(f"--max-threads {args.max_threads}: expected at least 1")
        torch.set_num_threads(args.max_threads)
    enc_mask = -2 if args.enc_mask is None else args.enc_mask
    trainer = make_trainer(
        args.particles, args.poses, args.outdir, args.zdim, ctf=args.ctf, ind=args.ind,
        datadir=args.datadir, apix=args.Apix, overwrite=args.overwrite,
        num_epochs=args.num_epochs, batch_size=args.batch_size, lr=args.lr, wd=args.wd,
        beta=args.beta, seed=args.seed, checkpoint=args.checkpoint, invert_data=args.invert_data,
        window=args.window, window_r=args.window_r, device=args.device,
        precision="fp32" if args.no_amp else args.precision, load=args.load, qdim=args.qdim,
        qlayers=args.qlayers, pdim=args.pdim, players=args.players,
        encode_mode=args.encode_mode, enc_mask=enc_mask, pe_type=args.pe_type,
        pe_dim=args.pe_dim, feat_sigma=args.feat_sigma, domain=args.domain,
        activation=args.activation, enc_input=args.enc_input, enc_inplane=args.enc_inplane,
        refine_steps=args.refine_steps, refine_step=args.refine_step,
        checkpoint_minutes=args.checkpoint_minutes, shuffler_size=args.shuffler_size,
        prefetch=args.prefetch, launcher=args.launcher,
    )
    main = trainer.ctx.is_main
    quiet = args.quiet or not main
    bar = None
    try:
        with _signals_to(trainer):
            for ev in trainer.run():
                if ev.kind == "start" and main:
                    print(f"training {trainer.data.n} particles (D={trainer.data.D}) on "
                          f"{ev.message}", flush=True)
                if quiet:
                    if ev.kind == "epoch" and main:
                        print(f"epoch {ev.epoch}/{ev.n_epochs}: loss {ev.loss:.5f} "
                              f"({ev.images_per_s:.0f} images/s)", flush=True)
                    if ev.kind == "cancelled" and main:
                        print(ev.message, flush=True)
                    continue
                if ev.kind == "batch":
                    desc = f"epoch {ev.epoch}/{ev.n_epochs}"
                    if bar is None or bar.desc != desc:
                        if bar is not None:
                            bar.close()
                        bar = tqdm(total=ev.total, initial=ev.done, unit="img", desc=desc)
                    bar.update(ev.done - bar.n)
                    bar.set_postfix(loss=f"{ev.loss:.4f}", kld=f"{ev.kld:.2f}")
                elif ev.kind in ("cancelled", "done") and ev.message:
                    if bar is not None:
                        bar.close()
                        bar = None
                    print(ev.message if ev.kind == "cancelled" else f"done: {ev.message}")
    except RuntimeError as e:
        if trainer.ctx.distributed and _lost_peer(e):
            raise PeerFailed(
                f"rank {trainer.ctx.rank}: another process of this run stopped, so this one "
                f"stops too (its own message above says why; {str(e).splitlines()[0][:160]}). "
                "Checkpoints already written are whole: resume with --load latest.") from None
        raise
    finally:
        if bar is not None:
            bar.close()
        trainer.ctx.close()
    return 0


def _lost_peer(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another rank is gone."""
    import torch.distributed as dist

    kinds = tuple(k for k in (getattr(dist, "DistError", None),) if k is not None)
    text = str(e)
    return isinstance(e, kinds) or any(s in text for s in (
        "closed by peer", "Connection reset", "Broken pipe", "NCCL", "Timed out",
        "timed out", "ProcessGroup"))


@contextlib.contextmanager
def _signals_to(trainer):
    """SIGTERM -> save and stop, SIGUSR1 -> save and go on, while the block runs (main thread
    only; elsewhere, e.g. in a GUI worker, nothing is installed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from .trainer import SIGTERM_STOP

    wanted = {signal.SIGTERM: lambda *_: trainer.request_stop(SIGTERM_STOP)}
    if hasattr(signal, "SIGUSR1"):
        wanted[signal.SIGUSR1] = lambda *_: trainer.request_checkpoint()
    old = {s: signal.signal(s, h) for s, h in wanted.items()}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def resume_trainer(outdir, num_epochs: int | None = None) -> Trainer:
    """A trainer that continues the run in ``outdir`` from its latest checkpoint, with the
    inputs and settings recorded in its config.yaml (``num_epochs`` may extend it)."""
    from .config import load_config

    outdir = Path(outdir)
    cfg = load_config(outdir)
    ds, ta = cfg["dataset_args"], dict(cfg.get("train_args") or {})
    if not ds.get("particles") or not ds.get("poses"):
        raise InputError(f"{outdir}/config.yaml does not record the particles and poses")
    zdim, kwargs = _run_settings(cfg, skip=("num_epochs",))
    kwargs["num_epochs"] = int(num_epochs or ta.get("num_epochs") or 1)
    return make_trainer(ds["particles"], ds["poses"], outdir, zdim, ctf=ds.get("ctf"),
                        ind=ds.get("ind"), datadir=ds.get("datadir"), apix=ds.get("apix"),
                        load="latest", lineage=cfg.get("lineage"), **kwargs)


def _run_settings(cfg: dict, skip=()) -> tuple[int, dict]:
    """(zdim, make_trainer keyword arguments) recorded in a run's config.yaml."""
    ta = dict(cfg.get("train_args") or {})
    skip = ("outdir", "load", "model", "dataset_args", "lineage", *skip)
    cfg_fields = TrainConfig.__dataclass_fields__.keys()
    kwargs = {k: v for k, v in ta.items() if k in cfg_fields and k not in skip}
    ds = cfg.get("dataset_args") or {}
    for k in ("invert_data", "window", "window_r"):  # cryoDRGN's runs record them here
        if k not in kwargs and ds.get(k) is not None:
            kwargs[k] = ds[k]
    margs = {k: v for k, v in cfg["model_args"].items() if k in ModelArgs.__dataclass_fields__}
    zdim = int(margs.pop("zdim"))
    kwargs.update(margs)
    return zdim, kwargs


SELECTION_FILE = "ind.pkl"  # the selection, copied into the new run's folder


def train_on_selection(parent_workdir, ind_path, outdir, *, parent_epoch: int | None = None,
                       overwrite: bool = False, **overrides) -> Trainer:
    """A trainer for a new run in ``outdir`` on the particles of ``ind_path`` with the parent
    run's inputs and settings (``overrides``: any :func:`make_trainer` keyword, e.g.
    ``num_epochs``, ``zdim``, ``device``).

    ``ind_path`` is an index pickle in original-stack numbering (``Session.save_selection``,
    ``napari-cryodrgn select`` or cryoDRGN's ``filter``); it must be a non-empty subset of the
    parent's particles. It is copied to ``outdir/ind.pkl`` (the new run's ``--ind``) and
    config.yaml records ``lineage: {parent, parent_epoch, selection, n_parent, n_selected}``.
    Poses and CTF come from the files the parent was given (``poses_source``/``ctf_source``
    when it converted a .star or .cs), so the new run does not depend on the parent's folder.
    """
    from ..io.index import load_index, save_index
    from ..io.rundata import RunDataset

    parent = Path(parent_workdir)
    ds = RunDataset.open(parent)
    outdir = Path(outdir)
    if outdir.resolve() == parent.resolve():
        raise InputError(f"{outdir} is the parent run's folder; choose a new folder")
    if not Path(ind_path).is_file():
        raise InputError(f"Index file {ind_path} does not exist; check the file name.")
    sel = np.sort(load_index(ind_path, ds.n_original))
    if sel.size == 0:
        raise InputError(f"{ind_path} selects no particles; an empty selection cannot be "
                         "trained on")
    universe = ds.particle_ind()
    outside = np.setdiff1d(sel, universe)
    if outside.size:
        raise InputError(f"{ind_path}: {outside.size} of its particles (first: {outside[0]}) "
                         f"are not among the {len(universe)} particles of {parent}; is it a "
                         "selection from another run?")
    zdim, kwargs = _run_settings(ds.config)
    zdim = overrides.pop("zdim", zdim)
    kwargs.update(overrides)
    check_outdir(outdir, bool(kwargs.get("load")), overwrite)
    _check_settings(zdim, kwargs)
    poses = ds.file("poses_source") or ds.file("poses")
    if poses is None:
        raise InputError(f"{parent}/config.yaml does not record the poses")
    ctf = ds.file("ctf_source") or ds.file("ctf")
    lineage = {"parent": str(parent.resolve()), "parent_epoch": parent_epoch,
               "selection": str(Path(ind_path).resolve()), "n_parent": int(len(universe)),
               "n_selected": int(sel.size)}
    check_writable_dir(outdir)
    save_index(outdir / SELECTION_FILE, sel)
    return make_trainer(ds.particles, poses, outdir, zdim, ctf=ctf,
                        ind=outdir / SELECTION_FILE, datadir=ds.datadir, apix=ds.apix,
                        overwrite=overwrite, lineage=lineage, **kwargs)
