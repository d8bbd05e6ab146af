"""Landscape analysis time: ``napari-cryodrgn analyze_landscape`` beside cryoDRGN's
``analyze_landscape`` on the same run.

A run of ``--n`` particles (default 100k: trained 256 x 3 weights at box D beside synthetic
latents, six blobs in 8 dimensions) is analysed by both tools with the same settings: ``-N``
maps (default 500) at the run's box (no downsampling), the default mask, 20 volume PCs, 10
clusters, no UMAP (a cached one is given to cryoDRGN, which needs it). Both run as separate
processes on the same cores; a tool that has not finished after ``--timeout`` seconds is
stopped and its map rate so far is compared with ours instead (the "speedup" of a stopped run
counts maps per second, ours overall against theirs while sampling). Writes
``benchmarks/results/landscape.json``.

    .venv/bin/python benchmarks/landscape.py [--boxes 64 128] [--n 100000] [-N 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    NOT_INSTALLED,
    WORK,
    cryodrgn_env,
    find_cryodrgn,
    machine_info,
    save_json,
)
from explore import million_run  # noqa: E402


def weights_run(folder: Path, D: int) -> Path:
    """A 1-epoch run at box ``D`` with the benchmark networks (for timing, not science)."""
    from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset
    from napari_cryodrgn.training.api import make_trainer

    run = folder / f"weights_D{D}"
    if (run / "weights.1.pkl").exists():
        return run
    d = write_dataset(folder / f"data_D{D}", SimConfig(n=200, D=D, snr=0.1, seed=0))
    for _ in make_trainer(d["particles"], d["poses"], run, 8, ctf=d["ctf"], num_epochs=1,
                          qdim=256, qlayers=3, pdim=256, players=3, overwrite=True).run():
        pass
    return run


def timed(cmd: list[str], env: dict, timeout: float, maps_dir: Path | None = None) -> dict:
    """Wall time of a command. Past ``timeout`` it is stopped: ``wall_s`` None, and the maps
    it had written into ``maps_dir`` by then (``maps_done``) give its rate."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        done = len(list(maps_dir.glob("vol_[0-9]*.mrc"))) if maps_dir and maps_dir.is_dir() \
            else 0
        return {"wall_s": None, "timed_out": True, "timeout_s": timeout, "maps_done": done,
                "maps_per_s": done / timeout}
    out = {"wall_s": time.perf_counter() - t0, "returncode": r.returncode}
    if r.returncode != 0:
        out["tail"] = (r.stdout + r.stderr).splitlines()[-15:]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boxes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("-N", type=int, default=500, dest="maps")
    p.add_argument("--timeout", type=float, default=3600.0, help="per tool and box (s)")
    p.add_argument("--workdir", type=Path, default=WORK / "landscape")
    p.add_argument("--skip-cryodrgn", action="store_true")
    p.add_argument("--out", default="landscape")
    a = p.parse_args(argv)
    bin_ = None if a.skip_cryodrgn else find_cryodrgn()
    a.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for D in a.boxes:
        run = million_run(weights_run(a.workdir, D), a.workdir / f"D{D}", a.n)
        tmp = Path(tempfile.mkdtemp(prefix="bench_land_"))
        try:
            ours = timed([sys.executable, "-m", "napari_cryodrgn", "analyze_landscape",
                          str(run), "1", "-N", str(a.maps), "-d", str(D), "--skip-umap",
                          "-o", str(tmp / "ours")], dict(os.environ), a.timeout)
            row = {"D": D, "n": a.n, "maps": a.maps, "ours_s": ours["wall_s"],
                   "ours_maps_per_s": a.maps / ours["wall_s"] if ours["wall_s"] else None,
                   "ours": ours}
            if bin_ is None:
                row["cryodrgn_s"] = NOT_INSTALLED
            else:
                theirs_dir = tmp / "theirs"
                theirs_dir.mkdir()
                from napari_cryodrgn.analysis.embed import write_umap
                from napari_cryodrgn.training.checkpoint import load_z

                z = load_z(run / "z.1.pkl")[0]
                write_umap(theirs_dir / "umap.pkl", z[:, :2].copy())  # they need one
                theirs = timed([bin_, "analyze_landscape", str(run), "1", "-N", str(a.maps),
                                "-d", str(D), "--skip-umap", "-o", str(theirs_dir)],
                               cryodrgn_env("cpu"), a.timeout, theirs_dir / f"kmeans{a.maps}")
                if theirs["wall_s"] is not None:
                    row["cryodrgn_s"] = theirs["wall_s"]
                    row["speedup"] = theirs["wall_s"] / ours["wall_s"] if ours["wall_s"] \
                        else None
                else:  # stopped: its map rate against ours
                    row["cryodrgn_s"] = (f"stopped after {a.timeout:.0f} s with "
                                         f"{theirs['maps_done']} of {a.maps} maps")
                    if ours["wall_s"] and theirs["maps_per_s"]:
                        row["speedup"] = row["ours_maps_per_s"] / theirs["maps_per_s"]
                row["cryodrgn"] = theirs
            rows.append(row)
            print(row)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    save_json(a.out, {"machine": machine_info("cpu", bin_), "rows": rows}, rows,
              ["D", "n", "maps", "ours_s", "ours_maps_per_s", "cryodrgn_s", "speedup"],
              "analyze_landscape: wall time (s), same run and settings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
