"""Training throughput and map-decoding latency, ours versus cryoDRGN, same data and network.

For each box size D: simulate a dataset, train ours and ``cryodrgn train_vae`` (same network,
zdim, batch, epochs, device), report training images/s from epoch time alone, then time
decoding one map: ours (fp32 and bf16, warm, median) versus ``cryodrgn eval_vol`` (process wall
clock for one map, and the per-map decode time from a many-map run).

    .venv/bin/python benchmarks/throughput.py                 # D=64 and D=128, CPU
    .venv/bin/python benchmarks/throughput.py --sizes 64 --n64 300 --skip-cryodrgn
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    NOT_INSTALLED,
    RESULTS,
    WORK,
    add_network_args,
    find_cryodrgn,
    machine_info,
    median_time,
    ratio,
    read_cryodrgn_z,
    run_cryodrgn_eval_vol,
    run_cryodrgn_train,
    save_json,
    simulate,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(RESULTS / "throughput.json"), help="results JSON")
    p.add_argument("--workdir", default=str(WORK / "throughput"),
                   help="scratch folder for datasets and runs (default: benchmarks/work/...)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="box sizes D")
    p.add_argument("--n64", type=int, default=1000, help="particles at D=64")
    p.add_argument("--n128", type=int, default=300, help="particles at D=128")
    p.add_argument("-n", type=int, default=None, help="particles for any other D (default 300)")
    add_network_args(p, epochs=1)
    p.add_argument("--precision", default="auto", help="our training precision (auto: bf16 "
                   "where the CPU/GPU supports it)")
    p.add_argument("--decode-repeats", type=int, default=10)
    p.add_argument("--eval-k", type=int, default=6,
                   help="maps in the cryoDRGN --zfile run that times decoding apart from start-up")
    p.add_argument("--skip-cryodrgn", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the training runs in --workdir")
    return p.parse_args(argv)


def n_for(args, D: int) -> int:
    return {64: args.n64, 128: args.n128}.get(D, args.n or 300)


def train_ours(data: dict, outdir: Path, args) -> dict:
    """Train our model; timings from the trainer's events (epoch_s excludes the z pass)."""
    import torch

    from napari_cryodrgn.training.api import make_trainer

    t0 = time.perf_counter()
    tr = make_trainer(data["particles"], data["poses"], outdir, args.zdim, ctf=data["ctf"],
                      num_epochs=args.epochs, batch_size=args.batch, qdim=args.qdim,
                      qlayers=args.qlayers, pdim=args.pdim, players=args.players,
                      seed=args.seed, device=args.device, precision=args.precision,
                      overwrite=True)
    setup = time.perf_counter() - t0
    epoch_s, epoch_cpu, ckpt_s, t_epoch_end = [], [], [], None
    cpu0 = time.process_time()
    for ev in tr.run():
        if ev.kind == "epoch":
            epoch_s.append(float(ev.extra["epoch_s"]))
            epoch_cpu.append(time.process_time() - cpu0)
            t_epoch_end = time.perf_counter()
        elif ev.kind == "checkpoint" and t_epoch_end is not None:
            ckpt_s.append(time.perf_counter() - t_epoch_end)
            cpu0 = time.process_time()
    wall = time.perf_counter() - t0
    n = tr.data.n
    total = float(sum(epoch_s))
    return {
        "device": str(tr.device), "precision": tr.precision, "torch_threads":
        torch.get_num_threads(), "setup_s": setup, "epoch_s": epoch_s, "epoch_cpu_s": epoch_cpu,
        "zeval_checkpoint_s": ckpt_s, "wall_s": wall,
        "images_per_s": n * len(epoch_s) / total if total else None,
        "images_per_s_last_epoch": n / epoch_s[-1] if epoch_s else None,
    }


def train_cryodrgn(data: dict, outdir: Path, n: int, args, bin_: str) -> dict:
    res = run_cryodrgn_train(data["particles"], data["poses"], data["ctf"], outdir, args.zdim,
                             args.epochs, args.qdim, args.qlayers, args.pdim, args.players,
                             args.batch, args.seed, bin_=bin_, device=args.device,
                             threads=args.threads)
    if res["returncode"] != 0:
        print("cryoDRGN train_vae failed:\n  " + "\n  ".join(res.get("tail", [])))
        res["images_per_s"] = res["images_per_s_last_epoch"] = None
        return res
    total = float(sum(res["epoch_s"]))
    res["images_per_s"] = n * len(res["epoch_s"]) / total if total else None
    res["images_per_s_last_epoch"] = n / res["epoch_s"][-1] if res["epoch_s"] else None
    return res


def decode_ours(run_dir: Path, zs: np.ndarray, args, precisions=("fp32", "bf16"),
                repeats: int | None = None) -> dict:
    """Warm decode time of one map (median over repeats, cycling through ``zs``)."""
    from napari_cryodrgn.model.load import load_run
    from napari_cryodrgn.training.trainer import pick_device

    dev = pick_device(args.device)
    t0 = time.perf_counter()
    run = load_run(run_dir, device=dev)
    out = {"load_run_s": time.perf_counter() - t0, "device": str(dev)}
    for prec in precisions:
        try:
            t0 = time.perf_counter()
            dec = run.volume_decoder(precision=prec, device=dev)
            build = time.perf_counter() - t0
            it = iter(range(10**9))

            def once(dec=dec, it=it):
                dec(zs[next(it) % len(zs)])
                if dev.type == "cuda":
                    import torch

                    torch.cuda.synchronize()

            t0 = time.perf_counter()
            once()
            first = time.perf_counter() - t0
            med, ts = median_time(once, repeats or args.decode_repeats, warmup=0)
            out[prec] = {"ms_median": med * 1e3, "ms_all": [t * 1e3 for t in ts],
                         "ms_first": first * 1e3, "build_s": build}
        except Exception as e:  # noqa: BLE001 - report and go on
            out[prec] = {"error": f"{type(e).__name__}: {e}"}
            print(f"decode {prec} failed: {type(e).__name__}: {e}")
    return out


def decode_cryodrgn(run_dir: Path, zs: np.ndarray, tmp: Path, args, bin_: str) -> dict:
    """eval_vol wall time for one map, and per-map time from a K-map --zfile run."""
    one = run_cryodrgn_eval_vol(run_dir, None, zs[0], tmp / "one.mrc", bin_=bin_,
                                device=args.device, threads=args.threads)
    k = max(2, args.eval_k)
    zk = np.resize(zs, (k, zs.shape[1]))
    many = run_cryodrgn_eval_vol(run_dir, None, zk, tmp / "many", bin_=bin_,
                                 device=args.device, threads=args.threads)
    out = {"one_map": one, "k_maps": many, "k": k}
    if one["returncode"] == 0 and many["returncode"] == 0:
        out["process_ms_one_map"] = one["wall_s"] * 1e3
        out["inproc_ms_one_map"] = None if one["inproc_s"] is None else one["inproc_s"] * 1e3
        per = many["map_s"][1:] or many["map_s"]  # the first map also warms up
        if per:
            out["decode_ms_per_map"] = float(np.median(per)) * 1e3
            out["decode_ms_per_map_all"] = [t * 1e3 for t in many["map_s"]]
    else:
        print("cryoDRGN eval_vol failed:\n  " + "\n  ".join(
            (one if one["returncode"] else many).get("tail", [])))
    return out


def interop_check(cd_dir: Path, z: np.ndarray, cd_map: Path, args) -> dict:
    """Our decoder on cryoDRGN's weights against cryoDRGN's own map at the same z."""
    from napari_cryodrgn.io.mrc import read_mrc
    from napari_cryodrgn.model.load import load_run

    try:
        ours = load_run(cd_dir, device="cpu").volume_decoder(precision="fp32")(z)
        theirs, _ = read_mrc(cd_map)
        err = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))
        return {"max_rel_err": err, "same_shape": ours.shape == theirs.shape}
    except Exception as e:  # noqa: BLE001 - report and go on
        return {"error": f"{type(e).__name__}: {e}"}


def bench_size(D: int, args, bin_: str | None) -> dict:
    n = n_for(args, D)
    work = Path(args.workdir)
    data = simulate(work / f"sim_n{n}_D{D}", n, D)
    res: dict = {"D": D, "n": n, "epochs": args.epochs}
    ours_dir = work / f"ours_D{D}"
    print(f"\n[D={D}] training ours on {n} particles ...")
    res["ours"] = train_ours(data, ours_dir, args)
    print(f"  ours: {res['ours']['images_per_s']:.1f} images/s "
          f"(epoch {res['ours']['epoch_s']}, setup {res['ours']['setup_s']:.1f} s)")
    gc.collect()
    zs = read_cryodrgn_z(ours_dir, args.epochs)[0][: max(args.decode_repeats, args.eval_k)]
    print(f"[D={D}] decoding ours ...")
    res["decode_ours"] = decode_ours(ours_dir, zs, args)
    if bin_ is None:
        res["cryodrgn"] = "skipped" if args.skip_cryodrgn else NOT_INSTALLED
    else:
        cd_dir = work / f"cryodrgn_D{D}"
        if cd_dir.exists():
            shutil.rmtree(cd_dir)
        print(f"[D={D}] training cryoDRGN ...")
        res["cryodrgn"] = train_cryodrgn(data, cd_dir, n, args, bin_)
        ips = res["cryodrgn"]["images_per_s"]
        if ips:
            print(f"  cryoDRGN: {ips:.1f} images/s (epoch {res['cryodrgn']['epoch_s']}, "
                  f"load {res['cryodrgn']['load_s']}, wall {res['cryodrgn']['wall_s']:.1f} s)")
            zc = read_cryodrgn_z(cd_dir, args.epochs)[0][: max(args.decode_repeats, args.eval_k)]
            print(f"[D={D}] cryoDRGN eval_vol ...")
            res["decode_cryodrgn"] = decode_cryodrgn(cd_dir, zc, work / f"evalvol_D{D}", args,
                                                     bin_)
            print(f"[D={D}] our decoder on cryoDRGN's weights ...")
            res["decode_ours_on_cryodrgn_run"] = decode_ours(cd_dir, zc, args, ("fp32",),
                                                             repeats=3)
            one = res["decode_cryodrgn"]["one_map"]
            if one["returncode"] == 0:
                res["interop"] = interop_check(cd_dir, zc[0], Path(one["paths"][0]), args)
        if not args.keep:
            shutil.rmtree(cd_dir, ignore_errors=True)
            shutil.rmtree(work / f"evalvol_D{D}", ignore_errors=True)
    if not args.keep:
        shutil.rmtree(ours_dir, ignore_errors=True)
    cd = res["cryodrgn"] if isinstance(res["cryodrgn"], dict) else {}
    res["train_speedup"] = ratio(res["ours"]["images_per_s"], cd.get("images_per_s"))
    dc = res.get("decode_cryodrgn", {})
    for prec in ("fp32", "bf16"):
        ms = res["decode_ours"].get(prec, {}).get("ms_median")
        res[f"decode_speedup_{prec}_vs_process"] = ratio(dc.get("process_ms_one_map"), ms)
        res[f"decode_speedup_{prec}_vs_inproc"] = ratio(dc.get("decode_ms_per_map"), ms)
    return res


def row(res: dict) -> dict:
    cd = res["cryodrgn"] if isinstance(res["cryodrgn"], dict) else {}
    dc = res.get("decode_cryodrgn", {})
    do = res["decode_ours"]
    return {
        "D": res["D"], "n": res["n"],
        "ours img/s": res["ours"]["images_per_s"],
        "cdrgn img/s": cd.get("images_per_s") if cd else NOT_INSTALLED,
        "ratio": res["train_speedup"],
        "cdrgn load s": cd.get("load_s"),
        "ours fp32 ms": do.get("fp32", {}).get("ms_median"),
        "ours bf16 ms": do.get("bf16", {}).get("ms_median"),
        "cdrgn proc ms": dc.get("process_ms_one_map"),
        "cdrgn ms/map": dc.get("decode_ms_per_map"),
        "x (bf16 vs proc)": res["decode_speedup_bf16_vs_process"],
        "x (fp32 vs map)": res["decode_speedup_fp32_vs_inproc"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    bin_ = None if args.skip_cryodrgn else find_cryodrgn()
    t0 = time.perf_counter()
    out = {"benchmark": "throughput", "machine": machine_info(args.device, bin_),
           "settings": {k: v for k, v in vars(args).items()},
           "runs": {}}
    rows = []
    for D in args.sizes:
        res = bench_size(D, args, bin_)
        out["runs"][str(D)] = res
        rows.append(row(res))
        out["total_s"] = time.perf_counter() - t0
        save_json(args.out, out, rows, title=f"throughput (after D={D})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
