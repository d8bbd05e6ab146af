"""Training in child processes (one thread each), as a cluster job runs it: the CLI alone or
under torchrun with gloo ranks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

NET = ["--zdim", "2", "--enc-dim", "32", "--enc-layers", "1", "--dec-dim", "32",
       "--dec-layers", "1", "--precision", "fp32", "--seed", "5", "-q", "--max-threads", "1"]


def env() -> dict:
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
             PYTHONUNBUFFERED="1")
    e.pop("WORLD_SIZE", None)
    e.pop("RANK", None)
    return e


def train_cmd(ds: dict, out: Path, epochs: int, *extra, ranks: int = 1,
              particles=None) -> list[str]:
    """The train command line; ``ranks`` > 1 runs it under torchrun (standalone, gloo)."""
    launch = [sys.executable, "-m", "napari_cryodrgn"]
    if ranks > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  f"--nproc_per_node={ranks}", "-m", "napari_cryodrgn"]
    return [*launch, "train", str(particles or ds["particles"]), "--poses", str(ds["poses"]),
            "--ctf", str(ds["ctf"]), "-o", str(out), "-n", str(epochs), *NET,
            *[str(a) for a in extra]]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout)


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    f = open(log, "w")  # noqa: SIM115 - closed by the caller through the returned process
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env(),
                         start_new_session=True)
    p.log_file = f
    return p


def epoch_losses(run_log: Path) -> list[float]:
    """The per-epoch loss lines of a run.log, in order."""
    return [float(m.group(1)) for m in
            re.finditer(r"epoch \d+/\d+: loss ([-\d.e+]+)", run_log.read_text())]
