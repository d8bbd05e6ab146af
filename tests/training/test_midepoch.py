"""Checkpoints inside an epoch: a stop, a signal or a timer saves the position; --load latest
continues at the same place of the same order, so the run ends exactly as an unbroken one."""

import numpy as np
import pytest
import torch

from napari_cryodrgn.training.api import make_trainer
from napari_cryodrgn.training.checkpoint import INPROGRESS, load_weights, resume_point

NET = dict(qdim=32, qlayers=1, pdim=32, players=1, batch_size=16, precision="fp32",
           log_interval_s=0.0)


def _trainer(ds, outdir, **kw):
    args = dict(NET, num_epochs=2, seed=5)
    args.update(kw)
    return make_trainer(ds["particles"], ds["poses"], outdir, 2, ctf=ds["ctf"], **args)


def _weights(folder, epoch):
    return load_weights(folder / f"weights.{epoch}.pkl")["model_state_dict"]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("shuffle", [{}, {"shuffler_size": 48}, {"ema": 0.95}])
def test_stop_inside_an_epoch_then_resume_is_exact(tiny_dataset, tmp_path, shuffle):
    ref = tmp_path / "ref"
    for _ in _trainer(tiny_dataset, ref, **shuffle).run():
        pass
    out = tmp_path / "run"
    tr = _trainer(tiny_dataset, out, **shuffle)
    events = []
    for ev in tr.run():
        events.append(ev)
        if ev.kind == "batch" and ev.epoch == 1 and ev.done >= 48:
            tr.cancel()
    stop = events[-1]
    assert stop.kind == "cancelled" and stop.epoch == 1 and 48 <= stop.done < 120
    assert "resume with --load latest" in stop.message
    path, kind = resume_point(out)
    assert path == out / INPROGRESS and kind == "mid-epoch"
    assert not (out / "weights.1.pkl").exists()
    resumed = list(_trainer(tiny_dataset, out, load="latest", **shuffle).run())
    first = next(e for e in resumed if e.kind == "batch")
    assert first.epoch == 1 and first.done > stop.done  # went on, did not start over
    assert not (out / INPROGRESS).exists()  # superseded by the epoch's checkpoint
    for ep in (1, 2):
        _same(_weights(ref, ep), _weights(out, ep))
    ev_ref = [e.loss for e in _trainer(tiny_dataset, tmp_path / "again", **shuffle).run()
              if e.kind == "epoch"]
    ev_res = [e.loss for e in resumed if e.kind == "epoch"]
    assert ev_res[-1] == pytest.approx(ev_ref[-1], rel=1e-6)
    assert "cancelled during epoch 1" in (out / "run.log").read_text()


def test_timer_writes_the_position_inside_epochs(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    tr = _trainer(tiny_dataset, out, num_epochs=1, checkpoint_minutes=1e-9)
    seen = []
    for ev in tr.run():
        if ev.kind == "batch" and (out / INPROGRESS).exists():
            seen.append(torch.load(out / INPROGRESS, weights_only=True)["done"])
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] <= 120
    assert not (out / INPROGRESS).exists() and (out / "weights.1.pkl").exists()
    assert "checkpoint: epoch 1 at image" in (out / "run.log").read_text()


def test_load_latest_without_a_checkpoint_starts_afresh(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.log").write_text("killed before its first checkpoint\n")
    events = list(_trainer(tiny_dataset, out, num_epochs=1, load="latest").run())
    assert events[0].epoch == 1 and events[-1].kind == "done"
    _same(_weights(out, 1), _weights(_fresh(tiny_dataset, tmp_path), 1))


def _fresh(ds, tmp_path):
    ref = tmp_path / "fresh"
    for _ in _trainer(ds, ref, num_epochs=1).run():
        pass
    return ref


def test_stale_inprogress_checkpoint_is_ignored(tiny_dataset, tmp_path):
    # a mid-epoch checkpoint of epoch 1 left behind after weights.1.pkl was written (a kill
    # between the two writes) must not take the run back into epoch 1
    out = tmp_path / "run"
    tr = _trainer(tiny_dataset, out, num_epochs=1, checkpoint_minutes=1e-9)
    for _ in tr.run():
        pass
    tr._save_inprogress(1, 3, 48, np.zeros(3))
    assert resume_point(out) == (out / "weights.1.pkl", "epoch")
