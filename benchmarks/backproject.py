"""Backprojection speed: ours (analysis.backproject) versus ``cryodrgn backproject_voxel``.

For each box size D: a stack of noise images with random poses, shifts and CTF (speed does not
depend on the content), backprojected with half-maps by ours through the library (the time of
the image loop, excluding the final maps and FSC) and by cryoDRGN from the command line (its own
"Backprojected N images in X s", which also excludes them), both on ``--threads`` CPU threads.

    .venv/bin/python benchmarks/backproject.py                       # D=64 and 128, 1 thread
    .venv/bin/python benchmarks/backproject.py --sizes 64 --skip-cryodrgn
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    NOT_INSTALLED,
    WORK,
    cryodrgn_env,
    cryodrgn_version,
    find_cryodrgn,
    machine_info,
    save_json,
)


def make_stack(folder: Path, n: int, D: int, seed: int = 0) -> dict:
    from napari_cryodrgn.geometry.rotations import random_rotations
    from napari_cryodrgn.io.ctf import save_ctf
    from napari_cryodrgn.io.mrc import write_mrc
    from napari_cryodrgn.io.poses import save_poses
    from napari_cryodrgn.simulate.optics import sample_ctf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = {k: folder / f"{k}.{ext}" for k, ext in
             (("particles", "mrcs"), ("poses", "pkl"), ("ctf", "pkl"))}
    write_mrc(paths["particles"], rng.standard_normal((n, D, D)).astype(np.float32), 3.0)
    save_poses(paths["poses"], random_rotations(n, rng),
               rng.uniform(-0.05, 0.05, (n, 2)).astype(np.float32))
    save_ctf(paths["ctf"], sample_ctf(n, D, 3.0, rng))
    return paths


def time_ours(paths: dict, batch: int) -> dict:
    from napari_cryodrgn.analysis.backproject import backproject_dataset

    marks = []
    t0 = time.perf_counter()
    rec = backproject_dataset(paths["particles"], paths["poses"], paths["ctf"],
                              batch_size=batch, device="cpu",
                              progress=lambda done, total: marks.append(time.perf_counter()))
    total = time.perf_counter() - t0
    loop = marks[-1] - t0
    return {"n": rec.n, "loop_s": loop, "total_s": total,
            "s_per_1000": 1000 * loop / rec.n}


def time_cryodrgn(bin_: str, paths: dict, out: Path, threads: int) -> dict:
    cmd = [bin_, "backproject_voxel", str(paths["particles"]), "--poses", str(paths["poses"]),
           "--ctf", str(paths["ctf"]), "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=cryodrgn_env("cpu", threads))
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    m = re.search(r"Backprojected ([\d,]+) images in ([0-9.]+)s", text)
    if proc.returncode != 0 or not m:
        return {"error": text[-500:]}
    n, loop = int(m.group(1).replace(",", "")), float(m.group(2))
    return {"n": n, "loop_s": loop, "process_s": wall, "s_per_1000": 1000 * loop / n}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("-n", type=int, default=1000, help="images per size (default 1000)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-cryodrgn", action="store_true")
    p.add_argument("--workdir", type=Path, default=WORK / "backproject")
    p.add_argument("--out", default="backproject")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    bin_ = None if args.skip_cryodrgn else find_cryodrgn()
    rows = []
    for D in args.sizes:
        paths = make_stack(args.workdir / f"D{D}", args.n, D)
        ours = time_ours(paths, args.batch)
        theirs = ({"error": "skipped" if args.skip_cryodrgn else NOT_INSTALLED}
                  if bin_ is None else time_cryodrgn(bin_, paths, args.workdir / f"cdrgn{D}",
                                                     args.threads))
        rows.append({"D": D, "n": args.n, "ours_s_per_1000": ours["s_per_1000"],
                     "cryodrgn_s_per_1000": theirs.get("s_per_1000"),
                     "speedup": (theirs["s_per_1000"] / ours["s_per_1000"]
                                 if "s_per_1000" in theirs else None),
                     "ours": ours, "cryodrgn": theirs})
    save_json(args.out, {"machine": machine_info("cpu", bin_), "threads": args.threads,
                         "cryodrgn": cryodrgn_version(bin_), "rows": rows},
              rows=rows, columns=["D", "n", "ours_s_per_1000", "cryodrgn_s_per_1000", "speedup"],
              title=f"backprojection, seconds per 1000 images ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
