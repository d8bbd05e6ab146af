"""Epoch order (full and chunked shuffle), global batches split over ranks, background reader."""

import threading

import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.training.loader import BatchStream, EpochPlan, default_chunking


class Rows:
    """A fake particle source: image r holds the value r everywhere; can fail on one row."""

    def __init__(self, n, D=4, bad=None):
        self.n, self.D, self.bad = n, D, bad
        self.calls = []

    def images(self, rows):
        rows = np.asarray(rows)
        self.calls.append(rows.copy())
        if self.bad is not None and self.bad in rows:
            raise InputError(f"particle {self.bad} contains NaN pixels")
        return np.broadcast_to(rows[:, None, None], (len(rows), self.D, self.D)).astype(
            np.float32)


def test_full_shuffle_is_a_permutation_fixed_by_seed_and_epoch():
    a = EpochPlan.make(1000, 16, seed=3, epoch=2)
    assert np.array_equal(np.sort(a.order), np.arange(1000)) and a.windows is None
    assert np.array_equal(a.order, EpochPlan.make(1000, 16, seed=3, epoch=2).order)
    assert not np.array_equal(a.order, EpochPlan.make(1000, 16, seed=3, epoch=3).order)
    assert a.n_batches == 63 and a.global_size(62) == 1000 - 62 * 16


def test_chunked_shuffle_windows_are_whole_chunks():
    n, chunk, window = 1000, 8, 128
    p = EpochPlan.make(n, 16, seed=1, epoch=1, window=window, chunk=chunk)
    assert np.array_equal(np.sort(p.order), np.arange(n))
    assert p.windows[0] == 0 and p.windows[-1] == n
    chunks_seen = set()
    for w in range(len(p.windows) - 1):
        rows = p.order[p.windows[w] : p.windows[w + 1]]
        ids = set((rows // chunk).tolist())
        assert len(ids) <= window // chunk
        for c in ids:  # a chunk lies wholly inside one window
            assert np.isin(np.arange(c * chunk, min((c + 1) * chunk, n)), rows).all()
        assert not chunks_seen & ids
        chunks_seen |= ids
        assert not np.array_equal(rows, np.sort(rows))  # shuffled inside the window
    assert len(chunks_seen) == 125


@pytest.mark.parametrize("world", [2, 3])
def test_rank_parts_make_the_global_batch(world):
    p = EpochPlan.make(101, 8 * world, seed=0, epoch=1, world=world)
    for j in range(p.n_batches):
        parts = [p.rank_rows(j, r, world) for r in range(world)]
        assert all(len(x) >= 1 for x in parts)
        glob = p.order[p.bounds[j] : p.bounds[j + 1]]
        assert np.array_equal(np.concatenate(parts), glob)
    # a last batch smaller than the world is merged into the one before it
    q = EpochPlan.make(17, 8, seed=0, epoch=1, world=2)
    assert q.bounds.tolist() == [0, 8, 17]
    assert q.bounds.tolist() == EpochPlan.make(17, 8, seed=0, epoch=1).bounds.tolist()[:2] + [17]


def test_default_chunking_sizes():
    w, c = default_chunking(128)
    assert c * 128 * 128 * 4 <= 8 * 2**20 and w % c == 0 and w * 128 * 128 * 4 <= 256 * 2**20
    assert default_chunking(16)[1] >= 8


@pytest.mark.parametrize("window", [0, 64])
@pytest.mark.parametrize("world", [1, 2])
def test_stream_serves_each_rank_its_rows(window, world):
    n = 300
    data = Rows(n)
    p = EpochPlan.make(n, 10 * world, seed=4, epoch=1, world=world, window=window, chunk=8)
    seen = []
    for rank in range(world):
        for j, rows, imgs in BatchStream(data, p, rank, world, start=3):
            assert np.array_equal(rows, p.rank_rows(j, rank, world))
            assert np.array_equal(imgs[:, 0, 0].numpy(), rows)
            seen.append(rows)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.sort(p.order[p.bounds[3]:]))
    if window:  # windows are read whole, in sorted order: long sequential reads
        assert all(np.array_equal(c, np.sort(c)) and len(c) > 10 for c in data.calls)


@pytest.mark.parametrize("window", [0, 64])
def test_stream_raises_read_errors_and_stops(window):
    data = Rows(200, bad=150)
    p = EpochPlan.make(200, 10, seed=0, epoch=1, window=window, chunk=8)
    with pytest.raises(InputError, match="particle 150"):
        for _ in BatchStream(data, p):
            pass
    before = threading.active_count()
    s = BatchStream(Rows(200), p)
    next(iter(s))
    s.close()
    assert threading.active_count() <= before


def test_sequential_plan():
    p = EpochPlan.sequential(np.arange(10, 35), 10)
    assert [p.rank_rows(j, 0, 1).tolist()[0] for j in range(p.n_batches)] == [10, 20, 30]
