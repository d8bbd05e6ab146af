"""Peak memory and speed of ``downsample`` on a particle stack larger than 4 GiB.

Writes a real float32 stack of ``--n`` (17,000) images at ``--box`` (256) pixels (4.46 GB,
every byte written: 1000 random images, each block of 1000 rescaled differently), drops it
from the page cache (``posix_fadvise(DONTNEED)``) before every run, then downsamples it to
``-D`` (128) in a child process and measures wall time, images/s and the child's peak RSS
(``os.wait4`` rusage ``ru_maxrss``, through a small launcher process):

- ours, one output stack;
- ours with ``--chunk`` (OUT.0.mrcs ... and OUT.txt);
- cryoDRGN 4.3.1's ``downsample`` on the same file (default batch 5000), unless
  ``--skip-cryodrgn``, with a time limit (``--cryodrgn-timeout``).

Results: a table and benchmarks/results/downsample.json. The stack and the outputs are
deleted at the end (``--keep`` keeps them). Needs about 6.5 GB free on the work folder's disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, drop_cache, find_cryodrgn, machine_info, save_json  # noqa: E402

from napari_cryodrgn.io.mrc import HEADER_BYTES, StackWriter  # noqa: E402


def write_stack(path: Path, n: int, D: int, apix: float = 1.1, block: int = 1000) -> float:
    """Stream ``n`` random images to a float32 .mrcs; returns seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    base = rng.normal(size=(min(block, n), D, D)).astype(np.float32)
    with StackWriter(path, n, D, apix) as w:
        for i, s in enumerate(range(0, n, block)):
            k = min(block, n - s)
            w.write(base[:k] * np.float32(1 + 0.01 * i) + np.float32(i))
    return time.perf_counter() - t0


# A small launcher between this process and the measured one: a child's peak RSS counts the
# memory of the process that started it (fork copies it, vfork + exec records its peak), so the
# measured program is started from this ~10 MB interpreter, never from the benchmark itself.
LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": ru.ru_maxrss,
               "cpu_s": ru.ru_utime + ru.ru_stime}, f)
"""


def run_child(cmd: list[str], timeout: float, report: Path, env=None) -> dict:
    """Run ``cmd`` through the launcher; wall time, exit status, peak RSS (MB) and CPU time
    of ``cmd`` alone."""
    report.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(report), *cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - t0
    rep = json.loads(report.read_text()) if report.exists() else {}
    lines = out.decode(errors="replace").strip().splitlines()
    return {"wall_s": wall, "returncode": rep.get("rc"), "timed_out": timed_out,
            "peak_rss_mb": rep["maxrss_kb"] / 1024 if rep else None, "cpu_s": rep.get("cpu_s"),
            "last_line": lines[-1] if lines else ""}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=17000, help="images (default 17000)")
    p.add_argument("--box", type=int, default=256, help="input box (default 256)")
    p.add_argument("-D", type=int, default=128, help="output box (default 128)")
    p.add_argument("--chunk", type=int, default=5000, help="--chunk of the chunked run")
    p.add_argument("--threads", type=int, default=2, help="FFT threads for ours (default 2)")
    p.add_argument("--skip-cryodrgn", action="store_true")
    p.add_argument("--cryodrgn-timeout", type=float, default=900)
    p.add_argument("--workdir", type=Path, default=WORK / "downsample")
    p.add_argument("--keep", action="store_true", help="keep the stack and outputs")
    args = p.parse_args()

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    need = args.n * args.box ** 2 * 4 * 1.6
    free = shutil.disk_usage(work).free
    if free < need:
        print(f"not enough disk: {free / 1e9:.1f} GB free in {work}, {need / 1e9:.1f} GB "
              "needed", file=sys.stderr)
        return 1
    stack = work / "big.mrcs"
    cryodrgn = None if args.skip_cryodrgn else find_cryodrgn()
    rows, info = [], {}
    try:
        gen_s = write_stack(stack, args.n, args.box)
        size = stack.stat().st_size
        print(f"wrote {stack} ({size / 2 ** 30:.2f} GiB) in {gen_s:.1f} s")
        ours = [sys.executable, "-m", "napari_cryodrgn.cli", "downsample", str(stack), "-D",
                str(args.D), "-q", "--max-threads", str(args.threads)]
        runs = [("ours", ours + ["-o", str(work / "ours.mrcs")]),
                (f"ours --chunk {args.chunk}",
                 ours + ["-o", str(work / "chunks" / "ours.mrcs"), "--chunk", str(args.chunk)])]
        if cryodrgn:
            runs.append(("cryoDRGN 4.3.1", [cryodrgn, "downsample", str(stack), "-D",
                                            str(args.D), "-o", str(work / "cd.mrcs")]))
        for name, cmd in runs:
            drop_cache(stack)
            timeout = args.cryodrgn_timeout if name.startswith("cryoDRGN") else 1800
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            res = run_child(cmd, timeout, work / "rusage.json", env)
            res.update(name=name, images=args.n,
                       images_per_s=args.n / res["wall_s"] if res["returncode"] == 0 else None,
                       input_mb_per_s=size / 1e6 / res["wall_s"] if res["returncode"] == 0
                       else None)
            rows.append(res)
            print(f"{name}: {res['wall_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB, "
                  f"exit {res['returncode']}", flush=True)
        if (work / "ours.mrcs").exists() and (work / "cd.mrcs").exists():
            info["max_abs_diff_vs_cryodrgn"] = _max_diff(work / "ours.mrcs", work / "cd.mrcs")
    finally:
        if not args.keep:
            for f in [stack, work / "ours.mrcs", work / "cd.mrcs", work / "rusage.json"]:
                f.unlink(missing_ok=True)
            shutil.rmtree(work / "chunks", ignore_errors=True)
    result = {"what": f"downsample {args.n} x {args.box}^2 float32 -> {args.D}",
              "input_bytes": args.n * args.box ** 2 * 4 + HEADER_BYTES,
              "write_input_s": gen_s, "ours_fft_threads": args.threads, "runs": rows, **info,
              "machine": machine_info(cryodrgn_bin=cryodrgn)}
    save_json("downsample", result, rows=rows,
              columns=["name", "wall_s", "images_per_s", "input_mb_per_s", "peak_rss_mb",
                       "cpu_s", "returncode"], title=result["what"])
    return 0


def _max_diff(a: Path, b: Path) -> dict:
    """Largest |ours - cryoDRGN's| over all images, and the range of cryoDRGN's."""
    from napari_cryodrgn.io.particles import open_particles

    x, y = open_particles(a), open_particles(b)
    diff, lo, hi = 0.0, np.inf, -np.inf
    for s in range(0, x.n, 2000):
        u, v = x.images(slice(s, s + 2000)), y.images(slice(s, s + 2000))
        diff = max(diff, float(np.abs(u - v).max()))
        lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    return {"max_abs_diff": diff, "range": hi - lo, "relative": diff / (hi - lo)}


if __name__ == "__main__":
    sys.exit(main())
