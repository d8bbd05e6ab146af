"""A cluster job's life: SIGKILL (lost node, OOM killer) and SIGTERM (time limit, scancel) at
random moments, each followed by ``--load latest``; SIGUSR1 saves the position and goes on. The
run must end bit for bit as one that was never interrupted."""

import signal
import time

import numpy as np
import pytest
import torch
from _procs import run, start, train_cmd

from napari_cryodrgn.training.checkpoint import INPROGRESS, load_weights, load_z

EPOCHS = 40


def _started(log, count, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if log.exists() and log.read_text().count("start:") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {count} did not start")


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    r = run(train_cmd(tiny_dataset, out, EPOCHS))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_random_kills_and_terms_then_resume_exactly(reference, tiny_dataset, tmp_path):
    out = tmp_path / "run"
    rng = np.random.default_rng(11)
    cmd = train_cmd(tiny_dataset, out, EPOCHS, "--checkpoint-minutes", 0.002)
    sigs = [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM]
    starts = 0
    for i, sig in enumerate(sigs):
        p = start(cmd + (["--load", "latest"] if i else []), tmp_path / f"try{i}.log")
        starts += 1
        _started(out / "run.log", starts)
        time.sleep(rng.uniform(0.1, 1.5))
        if p.poll() is not None:
            break  # it finished before the signal: nothing left to interrupt
        p.send_signal(sig)
        rc = p.wait(timeout=120)
        p.log_file.close()
        said = (tmp_path / f"try{i}.log").read_text()
        if sig == signal.SIGTERM:
            assert rc == 0, said[-2000:]
            assert "stopped on SIGTERM" in said
            assert (out / INPROGRESS).exists() or "after epoch" in said
        else:
            assert rc == -signal.SIGKILL
    assert starts >= 3
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
    _started(out / "run.log", 1)
    time.sleep(0.5)
    p.send_signal(signal.SIGUSR1)
    assert p.wait(timeout=300) == 0
    p.log_file.close()
    log = (out / "run.log").read_text()
    assert log.count("checkpoint: epoch") == 1 and "done in" in log
    a = load_weights(out / f"weights.{EPOCHS}.pkl")["model_state_dict"]
    b = load_weights(reference / f"weights.{EPOCHS}.pkl")["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
