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
