"""Background jobs of the docks: one helper for "the newest request wins".

::

    job = LatestJob("UMAP", on_result=draw)      # one per kind of work
    rid = job.submit(fn, *args, **kwargs)        # runs fn in a napari worker
    job.busy, job.cancel()

One job runs at a time; a request made while one runs waits, and a newer request replaces it,
so only the newest of a burst runs next (clicks and drags coalesce); a result that a newer
request has superseded is dropped, never shown. ``fn`` may be a generator yielding
``(done, total)``: the job then shows a progress bar in napari's activity dock, and
:meth:`cancel` stops it at its next yield. A user error (InputError) comes back as one error
notification; any other exception is left to napari, which notifies worker errors itself (so
each error is reported exactly once).
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable

from napari.qt.threading import create_worker

from ..errors import InputError
from .notify import show_error

log = logging.getLogger(__name__)
_limits = None  # the thread-pool limits of the GUI process, set once


def gui_threads() -> int:
    """Threads for heavy work in a napari process: every usable core but one, the GUI's."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 2)
    return max(1, cores - 1)


def leave_a_core_for_the_gui() -> None:
    """Limit torch's thread pool and the native ones (OpenMP/BLAS, used by k-means, PCA, UMAP)
    to :func:`gui_threads` for this process, so that workers never take the core the event
    loop needs (with every core busy, the GUI thread waits for CPU time and frames stall).
    Called when a dock opens; the limit stays for the process."""
    global _limits
    if _limits is not None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(gui_threads())
    _limits = threadpool_limits(limits=gui_threads())


class _UserError:
    """A user error carried back as a value (a worker that returns an exception instance is
    taken for a failed worker by superqt, which re-raises it)."""

    def __init__(self, err: InputError):
        self.message = str(err)


def _plain(fn, args, kwargs):
    try:
        return fn(*args, **kwargs)
    except InputError as e:
        return _UserError(e)


def _stepped(fn, args, kwargs):
    try:
        result = yield from fn(*args, **kwargs)
    except InputError as e:
        return _UserError(e)
    return result


class LatestJob:
    """See the module docstring. ``on_result(result)`` runs in the GUI thread with the newest
    request's result; ``on_error(message)`` (default: an error notification) with a user
    error; ``on_progress(done, total)`` on each step of a generator."""

    def __init__(self, label: str, on_result: Callable | None = None,
                 on_error: Callable[[str], object] | None = None,
                 on_progress: Callable[[int, int], object] | None = None):
        self.label = label
        self.on_result = on_result
        self.on_error = on_error or show_error
        self.on_progress = on_progress
        self._req = 0  # id of the newest request
        self._worker = None
        self._pending = None  # (rid, fn, args, kwargs) waiting for the running job
        self._bar = None

    @property
    def busy(self) -> bool:
        """A job runs or waits."""
        return self._worker is not None or self._pending is not None

    @property
    def newest(self) -> int:
        return self._req

    def submit(self, fn: Callable, *args, **kwargs) -> int:
        """Run ``fn(*args, **kwargs)`` in a worker (after the running job); returns its id."""
        self._req += 1
        self._pending = (self._req, fn, args, kwargs)
        if self._worker is None:
            self._start()
        return self._req

    def cancel(self) -> None:
        """Forget the waiting request and stop the running one (a generator stops at its
        next step; a plain function's result is dropped)."""
        self._pending = None
        self._req += 1
        if self._worker is not None and hasattr(self._worker, "quit"):
            self._worker.quit()

    def _start(self) -> None:
        if self._pending is None:
            return
        rid, fn, args, kwargs = self._pending
        self._pending = None
        steps = inspect.isgeneratorfunction(fn)
        w = create_worker(_stepped if steps else _plain, fn, args, kwargs)
        self._worker = w
        w.returned.connect(lambda r, rid=rid: self._done(rid, r))
        if steps:
            w.yielded.connect(lambda p, rid=rid: self._step(rid, p))
        w.finished.connect(self._finished)
        w.start()

    def _step(self, rid: int, p) -> None:
        done, total = p
        if rid == self._req:
            if self._bar is None:
                from napari.utils import progress

                self._bar = progress(total=total, desc=self.label)
            self._bar.n = done
            self._bar.refresh()
            if self.on_progress is not None:
                self.on_progress(done, total)

    def _done(self, rid: int, result) -> None:
        if rid != self._req:
            return  # superseded (or cancelled) meanwhile
        try:
            if isinstance(result, _UserError):
                self.on_error(result.message)
            elif self.on_result is not None:
                self.on_result(result)
        except RuntimeError as e:
            if "has been deleted" not in str(e):
                raise
            # the dock was closed (its Qt widgets deleted) while this job ran: nothing to show
            self._req += 1
            log.debug("%s: result dropped, its widget is gone", self.label)

    def _finished(self) -> None:
        self._worker = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._start()
