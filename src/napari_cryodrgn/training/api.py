"""One entry point for the CLI and the GUI: validate inputs, build a Trainer, drive it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, PeerFailed
from ..io.atomic import check_writable_dir
from .data import load_particle_data
from .events import format_duration
from .outdir import check_new_run_folder
from .settings import (
    TrainSettings,
    check_values,
    from_args,
    resolve,
    run_settings,
    to_config,
)
from .trainer import Trainer

#: The command line's progress bar: tqdm draws the bar; the rate and ETA are the trainer's.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, {postfix}]"


def check_outdir(outdir: Path, resume: bool, overwrite: bool, own_files=()) -> None:
    """The output-folder rule of :mod:`.outdir` (a resumed run goes into its own folder)."""
    if not resume:
        check_new_run_folder(outdir, overwrite=overwrite, own_files=own_files)


def make_trainer(particles, poses, outdir, zdim: int, ctf=None, ind=None, datadir=None,
                 apix=None, overwrite: bool = False, lineage: dict | None = None,
                 **kwargs) -> Trainer:
    """Open and check the inputs and return a ready :class:`Trainer`.

    kwargs: any other :class:`~.settings.TrainSettings` field (num_epochs, batch_size, lr,
    qdim, qlayers, pdim, players, pe_type, domain, ...; an unknown name is an InputError).
    ``lineage`` (e.g. parent run, parent epoch, selection file) is recorded as the
    ``lineage:`` section of config.yaml.
    """
    settings = TrainSettings.from_kwargs(
        particles=particles, poses=poses, outdir=outdir, zdim=zdim, ctf=ctf, ind=ind,
        datadir=datadir, apix=apix, lineage=lineage, **kwargs)
    return trainer_for(settings, overwrite=overwrite)


def trainer_for(settings: TrainSettings, overwrite: bool = False) -> Trainer:
    """A ready :class:`Trainer` for ``settings`` (checked here; sentinels resolved by
    :func:`~.settings.resolve` once the data and the device are known). A new run must go
    into a new or empty folder unless ``overwrite`` (see :mod:`.outdir`)."""
    from .distributed import init_distributed

    s = settings.checked()
    outdir = Path(s.outdir)
    check_outdir(outdir, bool(s.load), overwrite, own_files=(s.ind,))
    data = load_particle_data(s.particles, s.poses, ctf=s.ctf, ind=s.ind, datadir=s.datadir,
                              apix=s.apix)
    ds = {
        "particles": _abs(s.particles), "poses": _abs(s.poses), "ctf": _abs(s.ctf),
        "ind": _abs(s.ind), "datadir": _abs(s.datadir), "apix": data.apix,
        "n_particles": int(data.n),
    }
    ctx = init_distributed(s.device, s.launcher)
    try:
        resolved = resolve(s, data.D, data.n, ctx.device)
        return Trainer(data, to_config(resolved, ds), ctx)
    except BaseException:
        ctx.close()
        raise


def _check_settings(zdim, kw: dict) -> None:
    """Clear one-line errors for settings of the wrong type or range (the declaration's
    checks, :func:`~.settings.check_values`)."""
    check_values({"zdim": zdim, **kw})


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

    settings, opts = from_args(args)
    if opts.multigpu:
        raise InputError("--multigpu: start one process per GPU with torchrun instead, e.g. "
                         "torchrun --nproc_per_node=4 -m napari_cryodrgn train ...")
    if opts.max_threads is not None:
        torch.set_num_threads(opts.max_threads)
    trainer = trainer_for(settings, overwrite=opts.overwrite)
    main = trainer.ctx.is_main
    quiet = opts.quiet or not main
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
                if ev.kind == "refine":
                    if bar is None or bar.desc != "refining z":
                        if bar is not None:
                            bar.close()
                        bar = tqdm(total=ev.total, desc="refining z", unit="img")
                    bar.update(ev.done - bar.n)
                elif ev.kind in ("batch", "epoch"):  # an epoch's end fills its bar
                    desc = f"epoch {ev.epoch}/{ev.n_epochs}"
                    if bar is None or bar.desc != desc:
                        if bar is not None:
                            bar.close()
                        # the rate and ETA are the trainer's (images over the run's time);
                        # tqdm's own, from the first update of a bar made at each epoch,
                        # showed absurd rates
                        bar = tqdm(total=ev.total, initial=ev.done, desc=desc,
                                   bar_format=BAR_FORMAT)
                    bar.set_postfix_str(f"loss={ev.loss:.4f}, kld={ev.kld:.2f}, "
                                        f"{ev.images_per_s:.0f} images/s, ETA "
                                        f"{format_duration(ev.eta_s)}", refresh=False)
                    bar.update(ev.done - bar.n)
                elif ev.kind in ("cancelled", "done") and ev.message:
                    if bar is not None:
                        bar.close()
                        bar = None
                    print(ev.message if ev.kind == "cancelled" else f"done: {ev.message}")
        trainer.ctx.close(sync=True)  # every rank got here: leave the group together
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
    """(zdim, make_trainer keyword arguments) recorded in a run's config.yaml (see
    :func:`~.settings.run_settings`; outdir, load and lineage are the new run's own)."""
    kwargs = run_settings(cfg)
    skip = ("outdir", "load", "lineage", *skip)
    kwargs = {k: v for k, v in kwargs.items() if k not in skip}
    if "zdim" not in kwargs:
        raise InputError("config.yaml: model_args has no zdim; is this a training run?")
    zdim = int(kwargs.pop("zdim"))
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
    from ..io.runfolder import RunFolder

    ds = RunFolder.of(parent_workdir)
    parent = ds.workdir
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
    why = "training on a selection reads the parent run's dataset"
    poses = ds.file("poses_source") or ds.need("poses", why)
    ctf = ds.file("ctf_source") or (ds.need("ctf", why) if ds.recorded("ctf") else None)
    lineage = {"parent": str(parent.resolve()), "parent_epoch": parent_epoch,
               "selection": str(Path(ind_path).resolve()), "n_parent": int(len(universe)),
               "n_selected": int(sel.size)}
    check_writable_dir(outdir)
    save_index(outdir / SELECTION_FILE, sel)
    return make_trainer(ds.particles, poses, outdir, zdim, ctf=ctf,
                        ind=outdir / SELECTION_FILE, datadir=ds.datadir, apix=ds.apix,
                        overwrite=overwrite, lineage=lineage, **kwargs)
