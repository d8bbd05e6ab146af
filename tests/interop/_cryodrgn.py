"""Running the real cryoDRGN as a separate program, for the interop tests.

cryoDRGN is GPL-3 and lives in its own virtual environment: it is only ever *run* here (its
``python`` starts a small driver that calls cryoDRGN's own command-line entry points), never
imported into this package. ``CRYODRGN_BIN`` names its ``cryodrgn`` executable; without it the
interop tests are skipped, unless ``NAPARI_CRYODRGN_REQUIRE_INTEROP=1`` (set by ``.ci/run``)
turns that skip into a failure.

Each cryoDRGN process spends seconds importing torch, so one driver process runs a whole list
of commands (:func:`run_jobs`), records for each whether it succeeded, and keeps going after a
failure so that every test can report its own command's error.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ENV_BIN = "CRYODRGN_BIN"
ENV_REQUIRE = "NAPARI_CRYODRGN_REQUIRE_INTEROP"

# Two maps "agree" when they correlate to this and their largest voxel difference is this small
# a fraction of the map's standard deviation (fp32 on CPU reaches ~1e-6).
MIN_CORR = 0.9999
MAX_DIFF_OVER_STD = 1e-4

# The driver runs inside cryoDRGN's environment. A job is {"name", "prog", "argv"}: prog
# "cryodrgn" / "cryodrgn_utils" runs that command line, "images" saves the images cryoDRGN's
# ImageSource reads from argv[0] into the .npy file argv[1].
DRIVER = r"""
import json, logging, sys, time, traceback
jobs_file, results_file = sys.argv[1], sys.argv[2]
with open(jobs_file) as f:
    jobs = json.load(f)
from cryodrgn.command_line import main_commands, util_commands
results = {}

def reset_logging():
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.FileHandler):  # train_vae adds one per run (run.log)
                lg.removeHandler(h)
                h.close()

for job in jobs:
    name, prog, argv = job["name"], job["prog"], job["argv"]
    print(f"=== job {name}: {prog} {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    res = {"ok": True}
    try:
        if prog == "images":
            import numpy as np
            from cryodrgn.source import ImageSource
            np.save(argv[1], np.asarray(ImageSource.from_file(argv[0], lazy=True).images()))
        else:
            sys.argv = [prog, *argv]
            (main_commands if prog == "cryodrgn" else util_commands)()
    except SystemExit as e:
        if e.code not in (0, None):
            res = {"ok": False, "error": f"exited with status {e.code}"}
    except Exception:
        res = {"ok": False, "error": traceback.format_exc()}
    finally:
        reset_logging()
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
    res["seconds"] = time.perf_counter() - t0
    results[name] = res
    print(f"=== end {name}: {'ok' if res['ok'] else 'FAILED'} in {res['seconds']:.1f} s",
          flush=True)
    with open(results_file, "w") as f:
        json.dump(results, f)
"""


@dataclass
class Cryodrgn:
    """The cryoDRGN installation under test."""

    bin: Path
    python: Path
    version: str = ""


def _python_of(exe: Path) -> Path:
    """The interpreter that runs the ``cryodrgn`` script: its sibling, else its shebang."""
    sibling = exe.parent / "python"
    if sibling.exists():
        return sibling
    first = exe.read_bytes()[:512].split(b"\n", 1)[0].decode(errors="replace")
    if first.startswith("#!"):
        return Path(first[2:].strip().split()[0])
    raise FileNotFoundError(f"cannot tell which python runs {exe}")


def find_cryodrgn() -> Cryodrgn:
    """cryoDRGN from $CRYODRGN_BIN; skips when unset (fails when interop tests are required)."""
    value = os.environ.get(ENV_BIN)
    if not value:
        msg = (f"{ENV_BIN} is not set: interop tests need a cryoDRGN executable "
               "(e.g. pip install cryodrgn==4.3.1 in a separate venv)")
        if os.environ.get(ENV_REQUIRE, "") not in ("", "0"):
            pytest.fail(f"{msg}, and {ENV_REQUIRE} asks for them to run", pytrace=False)
        pytest.skip(msg)
    exe = Path(value)
    if not exe.is_file():
        pytest.fail(f"{ENV_BIN}={value} is not a file", pytrace=False)
    python = _python_of(exe)
    out = subprocess.run([str(python), "-c", "import cryodrgn; print(cryodrgn.__version__)"],
                         capture_output=True, text=True, timeout=300, env=cryodrgn_env())
    if out.returncode != 0:
        pytest.fail(f"{python} cannot import cryodrgn:\n{out.stderr[-2000:]}", pytrace=False)
    return Cryodrgn(exe, python, out.stdout.strip())


def cryodrgn_env() -> dict:
    """One thread, CPU only, no display, unbuffered output."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", MPLBACKEND="Agg",
               PYTHONUNBUFFERED="1")
    return env


@dataclass
class JobResults:
    """Outcome of one driver process: per job ok/error/seconds, and the shared log."""

    results: dict
    log: Path
    wall_s: float
    seconds: dict = field(default_factory=dict)

    def _section(self, name: str) -> str:
        text = self.log.read_text(errors="replace")
        start = text.find(f"=== job {name}:")
        end = text.find(f"=== end {name}:", max(start, 0))
        part = text[start:end] if start >= 0 else text
        return part[-4000:]

    def check(self, name: str) -> None:
        """Fail the calling test if job ``name`` did not run or failed, with its output."""
        res = self.results.get(name)
        if res is None:
            pytest.fail(f"cryoDRGN job {name} did not run (driver stopped early); log tail:\n"
                        f"{self.log.read_text(errors='replace')[-4000:]}", pytrace=False)
        if not res["ok"]:
            pytest.fail(f"cryoDRGN job {name} failed: {res['error'][-3000:]}\n--- output ---\n"
                        f"{self._section(name)}", pytrace=False)


def job(name: str, argv: list, prog: str = "cryodrgn") -> dict:
    return {"name": name, "prog": prog, "argv": [str(a) for a in argv]}


def run_jobs(cd: Cryodrgn, jobs: list[dict], workdir: Path, timeout: float = 900) -> JobResults:
    """Run ``jobs`` in one cryoDRGN process; the output goes to ``workdir/cryodrgn.log``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    jobs_file, results_file = workdir / "jobs.json", workdir / "results.json"
    jobs_file.write_text(json.dumps(jobs, indent=1))
    results_file.unlink(missing_ok=True)
    log = workdir / "cryodrgn.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([str(cd.python), "-c", DRIVER, str(jobs_file), str(results_file)],
                              stdout=f, stderr=subprocess.STDOUT, env=cryodrgn_env(),
                              timeout=timeout, cwd=workdir)
    wall = time.perf_counter() - t0
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if proc.returncode != 0 and len(results) < len(jobs):
        pytest.fail(f"cryoDRGN driver exited with status {proc.returncode}; log tail:\n"
                    f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)
    return JobResults(results, log, wall, {k: v["seconds"] for k, v in results.items()})


# -- comparing maps -----------------------------------------------------------------------------
MAP_RECORDS: list[dict] = []  # every comparison made this session, for the terminal summary


def map_agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(correlation, largest |difference| / std of ``theirs``) of two maps."""
    a = np.asarray(ours, np.float64).ravel()
    b = np.asarray(theirs, np.float64).ravel()
    corr = float(np.corrcoef(a, b)[0, 1])
    return corr, float(np.abs(a - b).max() / b.std())


def assert_maps_agree(ours: np.ndarray, theirs: np.ndarray, what: str, group: str = "") -> None:
    """Same shape, correlation >= MIN_CORR, largest difference <= MAX_DIFF_OVER_STD * std."""
    assert ours.shape == theirs.shape, f"{what}: shapes {ours.shape} and {theirs.shape}"
    assert np.isfinite(ours).all() and np.isfinite(theirs).all(), f"{what}: non-finite values"
    assert theirs.std() > 0, f"{what}: cryoDRGN's map is constant"
    corr, rel = map_agreement(ours, theirs)
    MAP_RECORDS.append({"group": group or what, "what": what, "corr": corr, "diff_std": rel})
    assert corr >= MIN_CORR and rel <= MAX_DIFF_OVER_STD, (
        f"{what}: correlation {corr:.7f} (need >= {MIN_CORR}), largest difference "
        f"{rel:.3g} x std (need <= {MAX_DIFF_OVER_STD})")


def read_map(path) -> tuple[np.ndarray, float]:
    """An MRC map and its voxel size, read with our reader."""
    from napari_cryodrgn.io.mrc import read_mrc

    return read_mrc(path)


def z_points(zdim: int, seed: int, n_random: int = 2) -> np.ndarray:
    """Latent points to decode at: the origin and ``n_random`` draws from the prior."""
    rng = np.random.default_rng(seed)
    return np.vstack([np.zeros((1, zdim)), rng.normal(size=(n_random, zdim))]).astype(np.float32)
