"""Shared helpers for the benchmark scripts: cryoDRGN as a subprocess, results, machine facts.

cryoDRGN (GPL-3) is only ever *run* here, never imported: set ``CRYODRGN_BIN`` to its
``cryodrgn`` executable, else ``/work/cdrgn-venv/bin/cryodrgn`` is used when present.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work"
DEFAULT_CRYODRGN = Path("/work/cdrgn-venv/bin/cryodrgn")
NOT_INSTALLED = "not installed"


# -- locating cryoDRGN -----------------------------------------------------------------------
def add_network_args(p, epochs: int) -> None:
    """The training settings both tools share (same network, batch, seed, device, threads)."""
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--zdim", type=int, default=8)
    p.add_argument("--qdim", type=int, default=256)
    p.add_argument("--qlayers", type=int, default=3)
    p.add_argument("--pdim", type=int, default=256)
    p.add_argument("--players", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda: both tools use it "
                   "(cpu hides GPUs from cryoDRGN too)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both tools (default: torch's own choice)")


def find_cryodrgn() -> str | None:
    """Path of the ``cryodrgn`` executable: $CRYODRGN_BIN, else the default venv, else None."""
    env = os.environ.get("CRYODRGN_BIN")
    if env:
        if not Path(env).is_file():
            print(f"warning: CRYODRGN_BIN={env} is not a file; cryoDRGN columns skipped",
                  file=sys.stderr)
            return None
        return env
    return str(DEFAULT_CRYODRGN) if DEFAULT_CRYODRGN.is_file() else None


def cryodrgn_version(bin_: str | None) -> str:
    """``cryodrgn --version`` output, or "not installed"."""
    if not bin_:
        return NOT_INSTALLED
    try:
        out = subprocess.run([bin_, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    return (out.stdout or out.stderr).strip().splitlines()[-1] if out.returncode == 0 else \
        f"unknown (exit {out.returncode})"


def cryodrgn_env(device: str = "auto", threads: int | None = None) -> dict:
    """Environment for a cryoDRGN subprocess: unbuffered output, CPU-only if asked."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


# -- running cryoDRGN ------------------------------------------------------------------------
_EPOCH_RE = re.compile(r"# =+> Epoch: (\d+) .*Finished in (\d+):(\d+):([\d.]+)")
_FINISHED_RE = re.compile(r"Finished in (\d+):(\d+):([\d.]+)")
_ZLINE_RE = re.compile(r"\(eval_vol\.py\) \([^)]*\) \[")  # logged as each map starts


def _hms(h, m, s) -> float:
    return int(h) * 3600 + int(m) * 60 + float(s)


def _stream(cmd: list[str], env: dict, log_path: Path | None, on_line=None):
    """Run ``cmd``, timestamping each output line as it arrives.

    Returns (rc, lines, wall_s, cpu_s): ``lines`` is a list of (seconds since start, text),
    cpu_s the child's user + system CPU time. Output is also copied to ``log_path``.
    """
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    lines = []
    logf = open(log_path, "a") if log_path else None  # noqa: SIM115
    try:
        if logf:
            logf.write("$ " + " ".join(cmd) + "\n")
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, bufsize=1) as proc:
            for raw in proc.stdout:
                t = time.perf_counter() - t0
                line = raw.rstrip("\n")
                lines.append((t, line))
                if logf:
                    logf.write(f"[{t:9.3f}] {line}\n")
                    logf.flush()
                if on_line is not None:
                    on_line(t, line)
            rc = proc.wait()
    finally:
        if logf:
            logf.close()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return rc, lines, wall, cpu


def run_cryodrgn_train(particles, poses, ctf, outdir, zdim: int, epochs: int, qdim: int,
                       qlayers: int, pdim: int, players: int, batch: int, seed: int,
                       extra=(), bin_: str | None = None, device: str = "auto",
                       threads: int | None = None, load: str | None = None,
                       on_epoch=None) -> dict:
    """Run ``cryodrgn train_vae`` (eager loading, no auto-analysis) and time it.

    Returns a dict: wall_s (process), startup_s (process start to "Loading dataset"), load_s
    (dataset + CTF loading and normalisation, up to the model summary), epoch_s (per epoch, from
    cryoDRGN's own "Finished in" of each epoch: training only, z evaluation excluded),
    epoch_end_s (seconds since process start at which each epoch line appeared), epochs
    (numbers), returncode, cmd, tail (last output lines on failure). ``on_epoch(epoch,
    epoch_s, t)`` is called as each epoch finishes. ``device='cpu'`` hides GPUs.
    """
    bin_ = bin_ or find_cryodrgn()
    if not bin_:
        raise FileNotFoundError("cryoDRGN is not installed (set CRYODRGN_BIN)")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = [bin_, "train_vae", str(particles), "--poses", str(poses), "-o", str(outdir),
           "--zdim", str(zdim), "--num-epochs", str(epochs), "--enc-dim", str(qdim),
           "--enc-layers", str(qlayers), "--dec-dim", str(pdim), "--dec-layers", str(players),
           "-b", str(batch), "--seed", str(seed), "--checkpoint", "1", "--no-analysis"]
    if ctf is not None:
        cmd += ["--ctf", str(ctf)]
    if load:
        cmd += ["--load", str(load)]
    cmd += [str(a) for a in extra]
    marks: dict[str, float] = {}
    epochs_seen, epoch_s, epoch_end = [], [], []

    def on_line(t, line):
        if "Loading dataset" in line and "dataset" not in marks:
            marks["dataset"] = t
        if ("Loading ctf" in line or "HetOnlyVAE(" in line) and "ctf" not in marks:
            marks["ctf"] = t
        if ("parameters in model" in line or "HetOnlyVAE(" in line) and "model" not in marks:
            marks["model"] = t
        m = _EPOCH_RE.search(line)
        if m:
            epochs_seen.append(int(m.group(1)))
            epoch_s.append(_hms(*m.group(2, 3, 4)))
            epoch_end.append(t)
            if on_epoch is not None:
                on_epoch(epochs_seen[-1], epoch_s[-1], t)

    rc, lines, wall, cpu = _stream(cmd, cryodrgn_env(device, threads),
                                   outdir / "bench_stdout.log", on_line)
    res = {
        "cmd": cmd, "returncode": rc, "wall_s": wall, "cpu_s": cpu, "epochs": epochs_seen,
        "epoch_s": epoch_s, "epoch_end_s": epoch_end,
        "startup_s": marks.get("dataset"),
        "load_s": (marks["model"] - marks["dataset"]) if {"model", "dataset"} <= marks.keys()
        else None,
    }
    if rc != 0:
        res["tail"] = [s for _, s in lines[-30:]]
    return res


def parse_cryodrgn_log(path) -> dict[int, float]:
    """{epoch: training seconds} from a cryoDRGN run.log ("Epoch: N ... Finished in"); the
    last session wins for an epoch trained twice. Empty when the file is absent."""
    out = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return out
    for m in _EPOCH_RE.finditer(text):
        out[int(m.group(1))] = _hms(*m.group(2, 3, 4))
    return out


def read_cryodrgn_z(outdir, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """z_mu and z_logvar of a cryoDRGN (or our) run: z.{epoch}.pkl, or z.pkl when None."""
    from napari_cryodrgn.io.safepickle import load_pickles

    path = Path(outdir) / ("z.pkl" if epoch is None else f"z.{epoch}.pkl")
    objs = load_pickles(path)
    mu = np.asarray(objs[0], np.float32)
    lv = np.asarray(objs[1], np.float32) if len(objs) > 1 else None
    return mu, lv


def run_cryodrgn_eval_vol(workdir, epoch: int | None, z, out, bin_: str | None = None,
                          device: str = "auto", threads: int | None = None) -> dict:
    """Run ``cryodrgn eval_vol`` on ``workdir``'s weights of ``epoch`` (weights.pkl if None).

    ``z``: one latent point (1-D) or rows of points (2-D, passed through --zfile). ``out`` is a
    .mrc path for one point, else a folder (vol_001.mrc ...). Returns wall_s (process),
    inproc_s (cryoDRGN's own "Finished in": model load + decoding + writing, no imports),
    map_s (per map: decode + write, from the arrival times of the z value cryoDRGN logs as it
    starts each map, the last one ending at "Finished"), paths, returncode.
    """
    bin_ = bin_ or find_cryodrgn()
    if not bin_:
        raise FileNotFoundError("cryoDRGN is not installed (set CRYODRGN_BIN)")
    workdir, out = Path(workdir), Path(out)
    weights = workdir / ("weights.pkl" if epoch is None else f"weights.{epoch}.pkl")
    z = np.asarray(z, np.float32)
    cmd = [bin_, "eval_vol", str(weights), "-c", str(workdir / "config.yaml"), "-o", str(out),
           "-v"]
    tmp = None
    (out.parent if z.ndim == 1 else out).mkdir(parents=True, exist_ok=True)
    if z.ndim == 1:
        cmd += ["-z", *[repr(float(v)) for v in z]]
        paths = [out]
    else:
        fd, tmp = tempfile.mkstemp(suffix=".txt", prefix="zfile_")
        os.close(fd)
        np.savetxt(tmp, z)
        cmd += ["--zfile", tmp]
        paths = [out / f"vol_{i + 1:03d}.mrc" for i in range(len(z))]
    try:
        rc, lines, wall, cpu = _stream(cmd, cryodrgn_env(device, threads), None)
    finally:
        if tmp:
            os.unlink(tmp)
    inproc, starts, t_end = None, [], None
    for t, line in lines:
        if _ZLINE_RE.search(line):
            starts.append(t)
        m = _FINISHED_RE.search(line)
        if m:
            inproc, t_end = _hms(*m.groups()), t
    map_s = [b - a for a, b in zip(starts, [*starts[1:], t_end], strict=True)] \
        if starts and t_end is not None else []
    res = {"wall_s": wall, "cpu_s": cpu, "inproc_s": inproc, "map_s": map_s,
           "paths": [str(p) for p in paths], "returncode": rc,
           "n_maps": 1 if z.ndim == 1 else len(z)}
    if rc != 0:
        res["tail"] = [s for _, s in lines[-30:]]
    return res


# -- machine facts ---------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | None = None, cryodrgn_bin: str | None = None) -> dict:
    """CPU model, cores, load, torch version and threads, GPU, cryoDRGN version."""
    import torch

    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "requested_device": device,
        "cryodrgn": cryodrgn_version(cryodrgn_bin),
        "cryodrgn_bin": cryodrgn_bin,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import napari_cryodrgn

        info["napari_cryodrgn"] = getattr(napari_cryodrgn, "__version__", "?")
    except ImportError:
        info["napari_cryodrgn"] = None
    return info


# -- simulated data --------------------------------------------------------------------------
def simulate(folder, n: int, D: int, snr: float = 0.1, junk: float = 0.1, seed: int = 0,
             apix: float | None = None) -> dict:
    """Simulated dataset in ``folder`` (reused when its sim_config.yaml matches). Returns paths.
    ``apix`` None: the simulator's default pixel size."""
    import yaml

    from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset

    folder = Path(folder)
    cfg = SimConfig(n=n, D=D, snr=snr, junk=junk, seed=seed,
                    **({} if apix is None else {"apix": apix}))
    meta = folder / "sim_config.yaml"
    names = {"particles": "particles.mrcs", "poses": "poses.pkl", "ctf": "ctf.pkl",
             "labels": "labels.pkl", "truth_dir": "truth", "truth_grid": "truth/grid.txt",
             "config": "sim_config.yaml"}
    if meta.exists():
        try:
            old = yaml.safe_load(meta.read_text())["config"]
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            old = None
        if old == cfg.to_dict() and all((folder / v).exists() for v in names.values()):
            return {k: folder / v for k, v in names.items()}
    t0 = time.perf_counter()
    paths = write_dataset(folder, cfg)
    print(f"simulated {n} particles at D={D} in {time.perf_counter() - t0:.1f} s -> {folder}")
    return paths


def drop_cache(path) -> None:
    """Evict ``path`` from the page cache (fsync first, so that its pages are clean)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# -- results ---------------------------------------------------------------------------------
def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_json_atomic(path, obj) -> Path:
    """Write ``obj`` as JSON through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def fmt(v, digits: int = 3) -> str:
    """Short text for a table cell."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if not math.isfinite(v):
        return "-"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}" if abs(v) < 100 else f"{v:.1f}"


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Plain-text table of ``rows`` (dicts) with ``columns`` (default: keys of the first row)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def result_path(name_or_path) -> Path:
    """benchmarks/results/<name>.json for a bare name; a path with a suffix is used as is."""
    p = Path(name_or_path)
    if p.suffix == ".json" or len(p.parts) > 1:
        return p
    return RESULTS / f"{p.name}.json"


def save_json(path, obj: dict, rows: list[dict] | None = None,
              columns: list[str] | None = None, title: str | None = None) -> Path:
    """Write ``obj`` to ``path`` (bare name: benchmarks/results/<name>.json) atomically and
    print ``rows`` as a table (or the top-level scalars of ``obj`` when no rows are given)."""
    path = write_json_atomic(result_path(path), obj)
    if title:
        print(f"\n== {title} ==")
    if rows is None:
        rows = [{"key": k, "value": v} for k, v in obj.items()
                if isinstance(v, (str, int, float, type(None)))]
    print(format_table(rows, columns))
    print(f"-> {path}")
    return path


def median_time(fn, repeat: int = 10, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time (s) of ``fn()`` over ``repeat`` calls after ``warmup`` discarded calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), ts


def ratio(a, b):
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)
