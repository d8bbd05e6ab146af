"""The output-folder rule of a new training run, the same for the CLI and the Train dock.

A new run goes into a folder that does not exist yet or is empty. A folder that holds a
training run (config.yaml, weights, a mid-epoch checkpoint) is refused with the way to continue
it (Resume in the dock, ``--load latest`` on the command line); any other non-empty folder is
refused too, since a run writes config.yaml, run.log, weights, latents and converted pose/CTF
pickles that could replace a user's files. ``overwrite`` (``--overwrite``) lifts the rule.
Files the operating system leaves in folders (.DS_Store, Thumbs.db, desktop.ini) and the run's
own input files placed in the folder by the caller (e.g. the selection ``ind.pkl`` of a run
trained on a selection) do not count.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io.atomic import is_temp_name
from ..io.runfolder import RUN_LOG

OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def holds_run(folder) -> bool:
    """Whether ``folder`` holds a training run (complete epochs, a mid-epoch checkpoint, final
    weights or a config.yaml)."""
    from .checkpoint import INPROGRESS, epochs_in

    p = Path(folder)
    return (bool(epochs_in(p)) or any((p / f).exists() for f in
                                      (INPROGRESS, "weights.pkl", "config.yaml")))


def check_new_run_folder(outdir, *, overwrite: bool = False, own_files=()) -> None:
    """Refuse to start a new run in ``outdir`` unless it is new or empty (see the module
    docstring); one-line InputError otherwise. ``own_files``: paths of this run's inputs that
    may already sit in the folder."""
    p = Path(outdir)
    if p.exists() and not p.is_dir():
        raise InputError(f"Output folder {p} is an existing file; choose a folder name.")
    if overwrite or not p.is_dir():
        return
    own = {Path(f).resolve() for f in own_files if f}
    others = sorted(q.name for q in p.iterdir()
                    if q.name not in OS_LITTER and q.resolve() not in own)
    if not others:
        return
    if holds_run(p):
        raise InputError(f"Output folder {p} already holds a training run; nothing was "
                         "overwritten. Continue it (press Resume / --load latest), or choose a "
                         "new or empty folder (--overwrite writes over it).")
    more = f" and {len(others) - 1} more" if len(others) > 1 else ""
    raise InputError(f"Output folder {p} is not empty (it holds {others[0]}{more}); nothing "
                     "was overwritten. Choose a new or empty folder (--overwrite writes into it "
                     "anyway).")



def folder_state(outdir) -> tuple[str, str]:
    """What an output folder holds, for the Train dock's Start and Resume: ``(state, detail)``,
    state one of

    - ``new``: missing or empty (only files the operating system leaves): Start trains there;
    - ``checkpoint``: a run with a checkpoint (detail: where it stopped): Resume continues it;
    - ``no-checkpoint``: a run's config.yaml but no checkpoint (it stopped or failed before its
      first): Resume trains it again from epoch 1 with its recorded settings;
    - ``log-only``: only run.log (and temporary files) of a run stopped before it recorded its
      settings: Resume trains there from epoch 1 with the form's settings;
    - ``final-only``: weights.pkl without numbered checkpoints: neither (nothing to continue
      from, and a trained model is never written over);
    - ``other``: files of something else (detail names them): neither.

    Only file names are looked at (no checkpoint is loaded), so it is cheap on the GUI thread.
    """
    from .checkpoint import INPROGRESS, epochs_in

    p = Path(outdir)
    if p.exists() and not p.is_dir():
        return "other", f"{p.name} is a file"
    if not p.is_dir():
        return "new", ""
    names = sorted(q.name for q in p.iterdir() if q.name not in OS_LITTER)
    if not names:
        return "new", ""
    eps = epochs_in(p)
    if (p / INPROGRESS).is_file():
        after = f" after {len(eps)} complete epochs" if eps else ""
        return "checkpoint", f"stopped inside an epoch{after}"
    if eps:
        return "checkpoint", f"epochs up to {eps[-1]} saved"
    if (p / "weights.pkl").exists():
        return "final-only", "weights.pkl but no numbered checkpoint"
    if (p / "config.yaml").is_file():
        return "no-checkpoint", "stopped before its first checkpoint"
    if all(n == RUN_LOG or is_temp_name(n) for n in names):
        return "log-only", "only run.log"
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return "other", f"{names[0]}{more}"
