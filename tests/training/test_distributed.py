"""torchrun with two gloo ranks (CPU): one run, one folder, the same training as one process
with the whole batch; a stop on one rank stops all, a failure on one rank ends all."""

import re
import signal
import time

import numpy as np
import psutil
import pytest
import torch
import yaml
from _procs import epoch_losses, run, start, train_cmd

from napari_cryodrgn.io.mrc import read_mrc, write_mrc
from napari_cryodrgn.training.checkpoint import INPROGRESS, load_weights, load_z

EPOCHS = 10


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """The same training as 1 process with batch 16 and as 2 ranks with batch 8 each."""
    root = tmp_path_factory.mktemp("ddp")
    one, two = root / "one", root / "two"
    r1 = run(train_cmd(tiny_dataset, one, EPOCHS, "-b", 16))
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = run(train_cmd(tiny_dataset, two, EPOCHS, "-b", 8, ranks=2))
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    return one, two, r2


def test_two_ranks_train_as_one_process_with_the_whole_batch(runs):
    one, two, _ = runs
    # tolerance: only the order of float sums differs (gradient averaging over ranks)
    np.testing.assert_allclose(epoch_losses(two / "run.log"), epoch_losses(one / "run.log"),
                               rtol=1e-5)
    z1, _ = load_z(one / f"z.{EPOCHS}.encoder.pkl")
    z2, _ = load_z(two / f"z.{EPOCHS}.encoder.pkl")
    np.testing.assert_allclose(z2, z1, atol=1e-4)
    # refined, each rank its block: a Levenberg-Marquardt step that changes a particle's
    # objective by less than the float noise of another summation order can be taken by one
    # and refused by the other (measured: 6 of 240 values differ, by at most 2e-3)
    z1, _ = load_z(one / f"z.{EPOCHS}.pkl")
    z2, _ = load_z(two / f"z.{EPOCHS}.pkl")
    np.testing.assert_allclose(z2, z1, atol=5e-3)
    assert np.mean(np.abs(z2 - z1) < 1e-4) > 0.9


def test_rank_zero_alone_writes_one_whole_folder(runs, tiny_dataset):
    _, two, proc = runs
    log = (two / "run.log").read_text()
    assert log.count("start:") == 1 and "2 processes (gloo)" in log
    assert len(epoch_losses(two / "run.log")) == EPOCHS
    assert proc.stdout.count("training 120 particles") == 1  # rank 0 prints, rank 1 not
    cfg = yaml.safe_load((two / "config.yaml").read_text())
    assert cfg["train_args"]["world_size"] == 2 and cfg["train_args"]["global_batch_size"] == 16
    names = {p.name for p in two.iterdir()}
    assert names == {"config.yaml", "run.log", "weights.pkl", "z.pkl",
                     f"z.{EPOCHS}.encoder.pkl"} | {
        f"{s}.{e}.pkl" for s in ("weights", "z") for e in range(1, EPOCHS + 1)}
    # the encoder's z holds every particle in the original order: re-encode in one process
    # (z.pkl holds them refined, each rank a block: equal to one process's, test above)
    from napari_cryodrgn.training.api import make_trainer

    tr = make_trainer(tiny_dataset["particles"], tiny_dataset["poses"], two, 2,
                      ctf=tiny_dataset["ctf"], qdim=32, qlayers=1, pdim=32, players=1,
                      precision="fp32", load=str(two / f"weights.{EPOCHS}.pkl"),
                      num_epochs=EPOCHS, overwrite=True)
    mu, _ = tr.encode_all()
    z, _ = load_z(two / f"z.{EPOCHS}.encoder.pkl")
    assert z.shape == (120, 2)
    np.testing.assert_allclose(mu, z, atol=1e-5)


def _ranks(proc, n=2, timeout=60):
    """The worker processes torchrun started (its children running napari_cryodrgn)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        kids = [c for c in psutil.Process(proc.pid).children(recursive=True)
                if "napari_cryodrgn" in " ".join(c.cmdline())]
        if len(kids) == n:
            return kids
        time.sleep(0.2)
    raise AssertionError("torchrun did not start its workers")


def _wait_for(path, text, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never said {text!r}")


def test_sigterm_on_one_rank_stops_all_and_torchrun_resumes_exactly(runs, tiny_dataset,
                                                                    tmp_path):
    _, two, _ = runs
    out = tmp_path / "run"
    cmd = train_cmd(tiny_dataset, out, EPOCHS, "-b", 8, "--checkpoint-minutes", 0, ranks=2)
    p = start(cmd, tmp_path / "first.log")
    workers = _ranks(p)
    _wait_for(out / "run.log", "epoch 2/")
    rank1 = next(w for w in workers if "LOCAL_RANK" in w.environ()
                 and w.environ()["LOCAL_RANK"] == "1")
    rank1.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()[-3000:]
    log = (out / "run.log").read_text()
    assert "stopped on SIGTERM" in log and log.count("cancelled") == 1
    assert (out / INPROGRESS).exists() or "cancelled after epoch" in log
    done = re.findall(r"epoch (\d+)/", log)
    assert int(done[-1]) < EPOCHS
    r = run(cmd + ["--load", "latest"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    a = load_weights(out / f"weights.{EPOCHS}.pkl")["model_state_dict"]
    b = load_weights(two / f"weights.{EPOCHS}.pkl")["model_state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not (out / INPROGRESS).exists()


def test_a_failure_on_one_rank_ends_every_rank(tmp_path):
    # 2000 particles: the norm estimate reads every other image, so only training reads
    # particle 1001, on one rank; the other rank must not hang in its next collective
    from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset

    ds = write_dataset(tmp_path / "sim", SimConfig(n=2000, D=16, snr=1.0, junk=0.1, seed=3))
    stack, apix = read_mrc(ds["particles"])
    stack[1001] = np.nan
    bad = tmp_path / "bad.mrcs"
    write_mrc(bad, stack, apix)
    out = tmp_path / "run"
    t0 = time.time()
    r = run(train_cmd(ds, out, 3, "-b", 8, ranks=2, particles=bad), timeout=240)
    assert r.returncode != 0
    assert time.time() - t0 < 200
    text = r.stdout + r.stderr
    assert text.count("particle 1001 contains NaN or Inf pixels") == 1  # the rank that read it
    assert "another process of this run stopped" in text  # the other rank, in one line
    assert "[rank0]: Traceback" not in text and "[rank1]: Traceback" not in text
    assert not list(out.glob("weights.*.pkl"))


def test_first_slurm_host():
    from napari_cryodrgn.training.distributed import first_slurm_host

    assert first_slurm_host("gpu[01-04,07],cpu1") == "gpu01"
    assert first_slurm_host("node7,node8") == "node7"
    assert first_slurm_host("a-b[3-5]") == "a-b3"
    assert first_slurm_host("single") == "single"


def test_srun_without_torchrun(runs, tiny_dataset, tmp_path):
    # what srun gives each task (two tasks on this host), no torchrun: --launcher slurm
    import os
    import socket
    import subprocess

    from _procs import env

    one, _, _ = runs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    # without the anneal, 2 epochs train as the first 2 of the 10-epoch run
    cmd = train_cmd(tiny_dataset, out, 2, "-b", 8, "--launcher", "slurm", "--lr-anneal", "0")
    procs = []
    for rank in range(2):
        e = env()
        e.update(SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID=str(rank),
                 SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="4242", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "2 processes (gloo)" in (out / "run.log").read_text()
    np.testing.assert_allclose(epoch_losses(out / "run.log"), epoch_losses(one / "run.log")[:2],
                               rtol=1e-5)
    assert os.path.exists(out / "z.pkl")
    # outside srun, --launcher slurm says what is missing
    r = run(train_cmd(tiny_dataset, tmp_path / "x", 1, "--launcher", "slurm"))
    assert r.returncode == 2 and "SLURM_PROCID" in r.stderr and "Traceback" not in r.stderr
