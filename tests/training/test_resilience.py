"""A cluster job's life: SIGKILL (lost node, OOM killer) and SIGTERM (time limit, scancel) at
random moments, each followed by ``--load latest``; SIGUSR1 saves the position and goes on. The
run must end bit for bit as one that was never interrupted."""

import re
import signal
import time

import numpy as np
import pytest
import torch
from _procs import run, start, train_cmd

from napari_cryodrgn.training.checkpoint import load_weights, load_z

EPOCHS = 40


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    r = run(train_cmd(tiny_dataset, out, EPOCHS))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _epoch_done(log, k, run_no=1, timeout=120):
    """Wait until the ``run_no``-th process on the folder has logged the end of epoch ``k`` (or
    of its first epoch, when it resumed past ``k``)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        parts = log.read_text().split("start:") if log.exists() else []
        if len(parts) > run_no:
            mine = parts[run_no]
            first = int(re.search(r"epochs (\d+)\.\.", mine).group(1))
            ended = [int(m) for m in re.findall(r"epoch (\d+)/", mine)]
            if ended and ended[-1] >= max(k, first):
                return
        time.sleep(0.02)
    raise AssertionError(f"run {run_no} never ended epoch {k}")


def test_random_kills_and_terms_then_resume_exactly(reference, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    rng = np.random.default_rng(11)
    cmd = train_cmd(tiny_dataset, out, EPOCHS, "--checkpoint-minutes", 0.002)
    sigs = [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM]
    # random moments spread over the run whatever the machine's speed: after a random epoch
    # has ended, plus a random fraction of a second (mid-epoch checkpoints every 0.12 s)
    after = np.sort(rng.choice(np.arange(2, EPOCHS - 2), len(sigs), replace=False))
    for i, (sig, k) in enumerate(zip(sigs, after, strict=True)):
        p = start(cmd + (["--load", "latest"] if i else []), tmp_path / f"try{i}.log")
        _epoch_done(out / "run.log", k, run_no=i + 1)
        time.sleep(rng.uniform(0.0, 0.3))
        p.send_signal(sig)
        rc = p.wait(timeout=120)
        p.log_file.close()
        said = (tmp_path / f"try{i}.log").read_text()
        if (out / f"weights.{EPOCHS}.pkl").exists():
            break  # the run ended before the signal landed: nothing left to interrupt
        if sig == signal.SIGTERM:
            assert rc == 0, said[-2000:]
            assert "stopped on SIGTERM" in said
        else:
            assert rc == -signal.SIGKILL
    assert i >= 2
    starts = (out / "run.log").read_text().count("start:")
    r = run(cmd + ["--load", "latest"])
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "run.log").read_text()
    assert log.count("start:") == starts + 1
    a = load_weights(out / f"weights.{EPOCHS}.pkl")["model_state_dict"]
    b = load_weights(reference / f"weights.{EPOCHS}.pkl")["model_state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    np.testing.assert_array_equal(load_z(out / "z.pkl")[0], load_z(reference / "z.pkl")[0])
    assert not [q for q in out.iterdir() if "tmp" in q.name]


def test_sigusr1_saves_the_position_and_goes_on(reference, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    p = start(train_cmd(tiny_dataset, out, EPOCHS, "--checkpoint-minutes", 0),
              tmp_path / "usr1.log")
    _epoch_done(out / "run.log", 2)
    p.send_signal(signal.SIGUSR1)
    assert p.wait(timeout=300) == 0
    p.log_file.close()
    log = (out / "run.log").read_text()
    assert log.count("checkpoint: epoch") == 1 and "done in" in log
    a = load_weights(out / f"weights.{EPOCHS}.pkl")["model_state_dict"]
    b = load_weights(reference / f"weights.{EPOCHS}.pkl")["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
