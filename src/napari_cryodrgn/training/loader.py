"""The order particles are trained in, and a background reader that keeps the model fed.

::

    plan = EpochPlan.make(n, batch_size * world, seed, epoch, world, window=0, chunk=0)
    for j, rows, imgs in BatchStream(data, plan, rank, world, start=0, prefetch=4):
        ...                          # imgs: (b, D, D) float32 tensor (pinned with pin=True)

Shuffling. ``window=0`` shuffles the whole epoch (random access: fine when the stack sits in
the page cache). ``window=W, chunk=C`` is the chunked shuffle for stacks larger than RAM: the
dataset is cut into contiguous chunks of C particles, the chunks are put in random order,
and consecutive groups of W // C chunks (a window) are shuffled together. The reader then
loads a whole window with a few long sequential reads and serves the window's batches from
memory, while the next window is read in the background: disk access is sequential and
memory holds at most four windows (about 1 GiB). Both orders are a function of (seed, epoch)
only, so a run resumes at the same position of the same order, whatever the number of
processes.

Batches. Global batch ``j`` is ``order[bounds[j]:bounds[j+1]]`` (``batch_size * world``
particles; a last batch smaller than ``world`` is merged into the one before it), and rank
``r`` trains on its ``r``-th near-equal part, so the union of the ranks' batches is the batch
one process would train on with the whole global batch size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

WINDOW_BYTES = 256 * 2**20  # default window of the chunked shuffle (images' float32 bytes)
CHUNK_BYTES = 8 * 2**20  # default chunk: one sequential read


def default_chunking(D: int) -> tuple[int, int]:
    """(window, chunk) in particles for box ``D``: windows of ~256 MiB, chunks of ~8 MiB."""
    per = D * D * 4
    chunk = max(8, CHUNK_BYTES // per)
    window = max(chunk, (WINDOW_BYTES // per) // chunk * chunk)
    return window, chunk


def _perm(n: int, g: torch.Generator) -> np.ndarray:
    return torch.randperm(n, generator=g).numpy()


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's particle order, its global batches and (chunked shuffle) its windows."""

    order: np.ndarray  # dataset rows in training order
    bounds: np.ndarray  # global batch j is order[bounds[j]:bounds[j+1]]
    windows: np.ndarray | None  # window w is order[windows[w]:windows[w+1]]; None: no windows

    @classmethod
    def make(cls, n: int, global_batch: int, seed: int, epoch: int, world: int = 1,
             window: int = 0, chunk: int = 0) -> EpochPlan:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        wins = None
        if window and chunk and window < n:
            n_chunks = -(-n // chunk)
            per_window = max(1, window // chunk)
            parts, wins = [], [0]
            chunk_order = _perm(n_chunks, g)
            for w in range(0, n_chunks, per_window):
                ids = np.sort(chunk_order[w : w + per_window])
                rows = np.concatenate([np.arange(c * chunk, min((c + 1) * chunk, n))
                                       for c in ids])
                parts.append(rows[_perm(len(rows), g)])
                wins.append(wins[-1] + len(rows))
            order = np.concatenate(parts)
            wins = np.asarray(wins)
        else:
            order = _perm(n, g)
        bounds = list(range(0, n, global_batch)) + [n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < world:
            del bounds[-2]
        return cls(order.astype(np.int64), np.asarray(bounds), wins)

    @classmethod
    def sequential(cls, rows: np.ndarray, batch: int) -> EpochPlan:
        """``rows`` in their order, in batches of ``batch`` (encoding every particle)."""
        rows = np.asarray(rows, dtype=np.int64)
        return cls(rows, np.asarray(list(range(0, len(rows), batch)) + [len(rows)]), None)

    @property
    def n_batches(self) -> int:
        return len(self.bounds) - 1

    def batch_start(self, j: int) -> int:
        """Images of the epoch before global batch ``j``."""
        return int(self.bounds[j])

    def rank_span(self, j: int, rank: int, world: int) -> tuple[int, int]:
        """Rank ``rank``'s part of global batch ``j`` as positions within the batch."""
        size = self.global_size(j)
        return rank * size // world, (rank + 1) * size // world

    def rank_rows(self, j: int, rank: int, world: int) -> np.ndarray:
        """Rank ``rank``'s part of global batch ``j`` (dataset rows)."""
        a, b = self.rank_span(j, rank, world)
        return self.order[self.bounds[j] + a : self.bounds[j] + b]

    def global_size(self, j: int) -> int:
        return int(self.bounds[j + 1] - self.bounds[j])


class _Window:
    """The images of one window, in memory, addressed by dataset row."""

    def __init__(self, rows: np.ndarray, images: np.ndarray):
        self.rows = rows  # sorted dataset rows
        self.images = images

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.images[np.searchsorted(self.rows, rows)]


_END = object()


class BatchStream:
    """Iterate ``(j, rows, images)`` over this rank's batches ``start..`` of an epoch, read
    ahead by background threads (positioned reads release the GIL, so reading overlaps the
    training step): in the chunked shuffle one thread reads whole windows and another cuts
    them into batches, so the training thread only takes finished batches off a queue.
    ``pin=True`` returns page-locked tensors for non-blocking copies to a GPU. An error while
    reading is raised in the consuming thread; :meth:`close` (or leaving a ``with`` block)
    stops the threads.
    """

    def __init__(self, data, plan: EpochPlan, rank: int = 0, world: int = 1, start: int = 0,
                 prefetch: int = 4, pin: bool = False):
        self.data, self.plan, self.rank, self.world = data, plan, rank, world
        self.start, self.pin = start, pin
        self._stop = threading.Event()
        self._q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        jobs = [(self._read_batches, self._q)]
        if plan.windows is not None:
            self._wq: queue.Queue = queue.Queue(maxsize=1)
            jobs = [(self._read_windows, self._wq), (self._cut_windows, self._q)]
        self._threads = [threading.Thread(target=self._guard, args=job, daemon=True,
                                          name="cryodrgn-reader") for job in jobs]
        for t in self._threads:
            t.start()

    # -- background threads ----------------------------------------------------------------
    def _put(self, q: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _guard(self, target, q: queue.Queue) -> None:
        try:
            target()
            self._put(q, _END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(q, e)

    def _tensor(self, imgs: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(imgs)
        return t.pin_memory() if self.pin else t

    def _read_batches(self) -> None:
        for j in range(self.start, self.plan.n_batches):
            rows = self.plan.rank_rows(j, self.rank, self.world)
            srt = np.argsort(rows, kind="stable")
            imgs = np.empty((len(rows), self.data.D, self.data.D), np.float32)
            imgs[srt] = self.data.images(rows[srt])
            if not self._put(self._q, (j, rows, self._tensor(imgs))):
                return

    def _read_windows(self) -> None:
        w_edges = self.plan.windows
        first = int(np.searchsorted(w_edges, self.plan.batch_start(self.start), side="right")) - 1
        for w in range(max(first, 0), len(w_edges) - 1):
            rows = np.sort(self.plan.order[w_edges[w] : w_edges[w + 1]])
            if not self._put(self._wq, (w, _Window(rows, self.data.images(rows)))):
                return

    def _next_window(self):
        while not self._stop.is_set():
            try:
                item = self._wq.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            if item is _END:
                raise RuntimeError("reader stopped before the epoch's last window")
            return item
        return None

    def _cut_windows(self) -> None:
        edges = self.plan.windows
        held: dict[int, _Window] = {}
        for j in range(self.start, self.plan.n_batches):
            rows = self.plan.rank_rows(j, self.rank, self.world)
            a, b = self.plan.batch_start(j), self.plan.batch_start(j + 1)
            need = range(int(np.searchsorted(edges, a, side="right")) - 1,
                         int(np.searchsorted(edges, b - 1, side="right")))
            for w in list(held):
                if w < need[0]:
                    del held[w]
            while need[-1] not in held:
                item = self._next_window()
                if item is None:
                    return
                held[item[0]] = item[1]
            imgs = np.empty((len(rows), self.data.D, self.data.D), np.float32)
            for w in need:
                win = held[w]
                mask = np.isin(rows, win.rows, assume_unique=True)
                imgs[mask] = win.take(rows[mask])
            if not self._put(self._q, (j, rows, self._tensor(imgs))):
                return

    # -- consumer --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[int, np.ndarray, torch.Tensor]]:
        try:
            while True:
                item = self._q.get()
                if isinstance(item, BaseException):
                    raise item
                if item is _END:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        queues = [self._q] + ([self._wq] if self.plan.windows is not None else [])
        for q in queues:  # unblock threads waiting on a full queue
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        for t in self._threads:
            if t.is_alive() and threading.current_thread() is not t:
                t.join(timeout=10)

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
