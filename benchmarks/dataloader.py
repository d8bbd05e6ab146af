"""Images per second the data path delivers to the model, from a D=128 stack larger than RAM.

Each mode runs in its own child process (clean peak RSS), after the stack's pages are evicted
from the page cache (``posix_fadvise(DONTNEED)``), and delivers ``--images`` images in batches
of ``--batch`` to a consumer that either takes them as fast as it can (the loader's capacity)
or spends ``batch / rate`` seconds per batch, standing in for a model that trains ``rate``
images/s (a GPU: the step runs while the reader works, as it would with CUDA kernels):

- ``ram``: the images in memory (the first ``--ram-gib`` GiB of the stack, read beforehand),
  batches in a fully shuffled order: cryoDRGN's default eager loading, the reference.
- ``mmap_random``: a memory map of the whole stack, fully shuffled order, read in the training
  thread (cryoDRGN's ``--lazy``).
- ``pread_random``: our reader (positioned reads) in a fully shuffled order with the background
  prefetch thread.
- ``chunked``: our chunked shuffle (contiguous chunks in random order, shuffled within windows
  of ~256 MiB read whole by the background thread).

    .venv/bin/python benchmarks/dataloader.py                      # 26 GiB stack, D=128
    .venv/bin/python benchmarks/dataloader.py --gib 2 --images 8000 # a quick look

The stack is written once to ``--workdir`` (random data, real disk blocks: a sparse file would
read zeros without touching the disk) and kept with ``--keep``. Results:
benchmarks/results/dataloader.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, drop_cache, machine_info, save_json  # noqa: E402

MODES = ("ram", "mmap_random", "pread_random", "chunked")


def ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def make_stack(path: Path, n: int, D: int) -> None:
    """A float32 .mrcs of ``n`` noise images, streamed from a 256 MiB pool at shifting offsets."""
    from napari_cryodrgn.io.mrc import StackWriter

    if path.exists() and path.stat().st_size == 1024 + n * D * D * 4:
        return
    rng = np.random.default_rng(0)
    per = D * D
    pool = rng.standard_normal(64 * 2**20, dtype=np.float32)  # 256 MiB
    t0 = time.perf_counter()
    with StackWriter(path, n, D, 1.0) as w:
        step = 1024
        for s in range(0, n, step):
            k = min(step, n - s)
            off = (s * 7919 * per) % (pool.size - k * per)
            w.write(pool[off : off + k * per].reshape(k, D, D))
    print(f"wrote {path} ({n * per * 4 / 2**30:.1f} GiB) in {time.perf_counter() - t0:.0f} s")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Array:
    """An in-memory particle source (the ``ram`` mode)."""

    def __init__(self, arr):
        self.arr, self.n, self.D = arr, len(arr), arr.shape[1]

    def images(self, rows):
        return self.arr[rows]


def child(args) -> dict:
    """One measurement in this process: ``args.child`` mode, ``args.rate`` consumer."""
    import torch

    from napari_cryodrgn.io.particles import open_particles
    from napari_cryodrgn.training.loader import BatchStream, EpochPlan, default_chunking

    torch.set_num_threads(1)
    path = Path(args.stack)
    src = open_particles(path)
    n, D = src.n, src.D
    mode = args.child
    step_s = 0.0 if not args.rate else args.batch / args.rate
    t_setup = time.perf_counter()
    window = chunk = 0
    if mode == "ram":
        n_ram = min(n, int(args.ram_gib * 2**30) // (D * D * 4))
        data = _Array(src.images(np.arange(n_ram)))
        n = n_ram
    elif mode == "chunked":
        data = src
        window, chunk = default_chunking(D)
    else:
        data = src
    setup_s = time.perf_counter() - t_setup
    plan = EpochPlan.make(n, args.batch, seed=0, epoch=1, window=window, chunk=chunk)
    n_batches = min(plan.n_batches, -(-args.images // args.batch))
    delivered = 0
    checksum = 0.0
    t0 = time.perf_counter()
    if mode == "mmap_random":
        mm = np.memmap(path, dtype=np.float32, mode="r", offset=1024, shape=(src.n, D, D))
        for j in range(n_batches):
            rows = plan.rank_rows(j, 0, 1)
            imgs = torch.from_numpy(np.ascontiguousarray(mm[np.sort(rows)]))
            checksum += float(imgs[:, 0, 0].sum())
            delivered += len(rows)
            if step_s:
                time.sleep(step_s)
    else:
        stream = BatchStream(data, plan, prefetch=args.prefetch)
        for j, rows, imgs in stream:
            checksum += float(imgs[:, 0, 0].sum())
            delivered += len(rows)
            if step_s:
                time.sleep(step_s)
            if j + 1 >= n_batches:
                break
        stream.close()
    wall = time.perf_counter() - t0
    return {"mode": mode, "rate": args.rate, "images": delivered, "wall_s": wall,
            "images_per_s": delivered / wall, "setup_s": setup_s, "peak_rss_mib": peak_rss_mib(),
            "window": window, "chunk": chunk, "checksum": checksum}


def run_child(args, mode: str, rate: float | None) -> dict:
    drop_cache(Path(args.stack))
    cmd = [sys.executable, __file__, "--child", mode, "--stack", str(args.stack),
           "--images", str(args.images), "--batch", str(args.batch), "--ram-gib",
           str(args.ram_gib), "--prefetch", str(args.prefetch)]
    if rate:
        cmd += ["--rate", str(rate)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def disk_rates(path: Path) -> dict:
    """Cold sequential (8 MiB reads) and random (64 KiB reads) throughput of the stack's disk."""
    size = path.stat().st_size
    drop_cache(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        t0, got = time.perf_counter(), 0
        while got < min(size, 2 * 2**30) and time.perf_counter() - t0 < 20:
            got += len(os.pread(fd, 8 * 2**20, got))
        seq = got / (time.perf_counter() - t0)
        rng = np.random.default_rng(1)
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < 5:
            os.pread(fd, 65536, int(rng.integers(0, size - 65536)))
            k += 1
        rand = k * 65536 / (time.perf_counter() - t0)
    finally:
        os.close(fd)
    return {"sequential_MBps": seq / 1e6, "random_64k_MBps": rand / 1e6}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--D", type=int, default=128)
    p.add_argument("--gib", type=float, help="stack size in GiB (default: RAM + 10%%, or the "
                   "largest that leaves 8 GiB of disk free)")
    p.add_argument("--images", type=int, default=40000, help="images per measurement")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prefetch", type=int, default=4)
    p.add_argument("--ram-gib", type=float, default=4.0, help="in-RAM reference's size")
    p.add_argument("--rates", type=float, nargs="*", default=[0, 1000, 3000],
                   help="consumer speeds in images/s (0: as fast as possible)")
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    p.add_argument("--workdir", type=Path, default=WORK / "dataloader")
    p.add_argument("--keep", action="store_true", help="keep the stack for the next run")
    p.add_argument("--out", default="dataloader")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--stack", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    per = args.D * args.D * 4
    free = shutil.disk_usage(args.workdir).free
    want = args.gib * 2**30 if args.gib else 1.1 * ram_bytes()
    size = min(want, free - 8 * 2**30)
    n = int(size // per)
    if n < 10 * args.batch:
        raise SystemExit(f"not enough disk for a stack in {args.workdir}")
    args.stack = args.workdir / f"stack_D{args.D}_{n}.mrcs"
    make_stack(args.stack, n, args.D)
    disk = disk_rates(args.stack)
    rows = []
    for rate in args.rates:
        for mode in args.modes:
            r = run_child(args, mode, rate or None)
            rows.append(r)
            print(f"{mode:>13} consumer {rate or 'max':>5}: {r['images_per_s']:8.0f} images/s, "
                  f"peak RSS {r['peak_rss_mib']:6.0f} MiB", flush=True)
    for r in rows:
        ref = next((q for q in rows if q["mode"] == "ram" and q["rate"] == r["rate"]), None)
        r["vs_ram"] = r["images_per_s"] / ref["images_per_s"] if ref else None
    obj = {"machine": machine_info("cpu"), "stack": str(args.stack), "n": n, "D": args.D,
           "stack_gib": n * per / 2**30, "ram_gib": ram_bytes() / 2**30, "disk": disk,
           "batch": args.batch, "images_per_measurement": args.images, "results": rows}
    save_json(args.out, obj, rows, ["mode", "rate", "images_per_s", "vs_ram", "peak_rss_mib",
                                    "setup_s"], title=f"data path, D={args.D}, "
              f"{obj['stack_gib']:.1f} GiB stack, {obj['ram_gib']:.1f} GiB RAM")
    if not args.keep:
        args.stack.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
