"""Maps against the truth: ours beside cryoDRGN's, with the limits the same images allow.

For each simulated dataset (and seed) and each tool after ``--epochs`` epochs, with the same
network (runs shared with benchmarks/accuracy.py, so either script reuses the other's):

- per-conformation maps: the map decoded at the mean latent of the particles of each true
  (conformation, state) on the truth grid, against that true map: signed FSC-AUC (an inverted
  map scores negative), the frequencies where the FSC drops below 0.5 and 0.143, real-space
  correlation, and dFSC-AUC (every map minus the mean of its set, against the true maps minus
  theirs: the moving part alone);
- per-image maps (CryoBench's): the map at each of ``--per-image`` sampled particles' own z
  against the true map of its own conformation and state (rendered exactly by the simulator);
- latent accuracy (conformation R^2, state accuracy) and training time, to show the latent lead
  and throughput are kept.

Baselines from the same data: the true maps themselves (the ceiling), the mean of the true maps
(one consensus map: the floor), a Wiener-regularized backprojection (``backproject_voxel``,
true poses and CTF) of all non-junk particles (the consensus), and of each truth-grid bin's
particles chosen by their true labels (the oracle). Prints one table per dataset, saves JSON.

    .venv/bin/python benchmarks/maps.py --preset ci      # the CI science set, 12 epochs
    .venv/bin/python benchmarks/maps.py --preset hard    # D=64, SNR 0.1, 10% junk, 10 epochs
    .venv/bin/python benchmarks/maps.py --preset ci --sim-seeds 4 5 6
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402
from _common import (  # noqa: E402
    NOT_INSTALLED,
    RESULTS,
    find_cryodrgn,
    machine_info,
    read_json,
    save_json,
    simulate,
    write_json_atomic,
)

PRESETS = {
    # the science tests' shared run (tests/science/conftest.py)
    "ci": dict(n=8000, D=32, apix=6.0, snr=3.0, junk=0.15, sim_seed=4, zdim=8, qdim=128,
               qlayers=2, pdim=128, players=2, batch=8, epochs=12),
    # harder: the held-out setting (D=64, SNR 0.1, CTF, 10% junk, 256 x 3, batch 16)
    "hard": dict(n=8000, D=64, snr=0.1, junk=0.1, sim_seed=0, zdim=8, qdim=256, qlayers=3,
                 pdim=256, players=3, batch=16, epochs=10),
}
BASELINES = "bench_map_baselines.json"
BASELINES_VERSION = 1


def add_run_args(p) -> None:
    """--preset, --run and --epoch: a trained run of a preset's simulated set (scripts that
    study one run: amortization.py, refine_z.py)."""
    p.add_argument("--preset", choices=sorted(PRESETS), default="hard")
    p.add_argument("--run", type=Path, default=None,
                   help="trained run folder (default: maps.py's run of the preset)")
    p.add_argument("--epoch", type=int, default=None, help="default: the preset's epochs")


def preset_run(args):
    """(simulated data dict, run folder, epoch, data tag) of :func:`add_run_args`'s options;
    the data are simulated when missing."""
    sim = argparse.Namespace(**{**vars(accuracy.build_parser().parse_args([])),
                                **PRESETS[args.preset]})
    base = Path(sim.workdir) / accuracy.data_tag(sim)
    data = simulate(base / "data", sim.n, sim.D, sim.snr, sim.junk, sim.sim_seed, sim.apix)
    folder = args.run or base / accuracy.ours_tag(sim, accuracy.our_kwargs(sim))
    return data, folder, args.epoch or sim.epochs, accuracy.data_tag(sim)


def parse_args(argv=None):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS))
    known, _ = pre.parse_known_args(argv)
    p = accuracy.build_parser(__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="dataset and network settings (options given after it still apply)")
    p.add_argument("--sim-seeds", type=int, nargs="+", default=None,
                   help="several simulated datasets (default: --sim-seed alone)")
    p.add_argument("--per-image", type=int, default=48,
                   help="particles sampled for the per-image FSC-AUC")
    p.set_defaults(out=str(RESULTS / "maps.json"), fsc_every=10_000)
    if known.preset:
        p.set_defaults(**PRESETS[known.preset])
    return p.parse_args(argv)


def _mean_scores(maps, refs) -> dict:
    """Mean of :func:`map_score` over pairs, and dFSC-AUC (each set minus its mean)."""
    from napari_cryodrgn.analysis.fsc import dfsc_auc, map_score

    scores = [map_score(m, r) for m, r in zip(maps, refs, strict=True)]

    def mean(key):
        vals = [getattr(s, key) for s in scores]
        vals = [0.5 if v is None else v for v in vals]  # never below: Nyquist
        return float(np.mean(vals))

    return {"fsc_auc": mean("fsc_auc"), "dfsc_auc": dfsc_auc(maps, refs),
            "fsc05": mean("f05"), "fsc0143": mean("f0143"), "rsc": mean("rsc"),
            "fsc_auc_per_map": [s.fsc_auc for s in scores]}


def baselines(data: dict, truth, folder: Path) -> dict:
    """Ceiling, floor, consensus and oracle backprojections (cached in ``folder``)."""
    from napari_cryodrgn.analysis.backproject import backproject_dataset
    from napari_cryodrgn.io.safepickle import load_pickle

    key = {"version": BASELINES_VERSION, "groups": [len(g) for g in truth.groups]}
    cached = read_json(folder / BASELINES, {})
    if cached.get("key") == key:
        return cached["rows"]
    t0 = time.perf_counter()
    junk = np.asarray(load_pickle(data["labels"])["is_junk"], bool)
    mean_map = np.mean(truth.maps, 0)
    rows = {"true maps (ceiling)": _mean_scores(truth.maps, truth.maps),
            "mean of the true maps (floor)": _mean_scores([mean_map] * len(truth.maps),
                                                          truth.maps)}
    rows["mean of the true maps (floor)"]["dfsc_auc"] = 0.0  # no moving part at all
    cons = backproject_dataset(data["particles"], data["poses"], data["ctf"],
                               ind=np.flatnonzero(~junk), half_maps=False).volume
    rows["consensus backprojection (all non-junk)"] = _mean_scores(
        [cons] * len(truth.maps), truth.maps)
    rows["consensus backprojection (all non-junk)"]["dfsc_auc"] = 0.0
    oracle = [backproject_dataset(data["particles"], data["poses"], data["ctf"], ind=g,
                                  half_maps=False).volume for g in truth.groups]
    rows["oracle backprojection (true bins)"] = _mean_scores(oracle, truth.maps)
    rows["oracle backprojection (true bins)"]["particles_per_bin"] = float(
        np.mean([len(g) for g in truth.groups]))
    print(f"baselines in {time.perf_counter() - t0:.0f} s")
    write_json_atomic(folder / BASELINES, {"key": key, "rows": rows})
    return rows


def tool_maps(tool: str, folder: Path, epoch: int, truth, data: dict, args, bin_) -> dict:
    """Per-conformation and per-image map scores of one tool's run at ``epoch``."""
    from napari_cryodrgn.analysis.fsc import fsc_auc
    from napari_cryodrgn.io.safepickle import load_pickle
    from napari_cryodrgn.simulate.phantom import render_volume
    from napari_cryodrgn.training.checkpoint import load_z

    z = load_z(folder / f"z.{epoch}.pkl")[0]
    lab = load_pickle(data["labels"])
    conf, state = np.asarray(lab["conf"], float), np.asarray(lab["state"], int)
    good = np.flatnonzero(~np.asarray(lab["is_junk"], bool))
    sample = np.random.default_rng(0).choice(good, min(args.per_image, len(good)),
                                             replace=False)
    grid_z = truth.latent_points(z)
    maps = accuracy.decode_maps(tool, folder, epoch, np.concatenate([grid_z, z[sample]]),
                                args, bin_)
    out = _mean_scores(maps[:len(grid_z)], truth.maps)
    per_image = [fsc_auc(m, render_volume(conf[i], state[i], args.D))
                 for m, i in zip(maps[len(grid_z):], sample, strict=True)]
    out["per_image_fsc_auc"] = float(np.mean(per_image))
    return out


def one_dataset(args, sim_seed: int, bin_) -> dict:
    args.sim_seed = sim_seed
    kw = accuracy.our_kwargs(args)
    base = Path(args.workdir) / accuracy.data_tag(args)
    data = simulate(base / "data", args.n, args.D, args.snr, args.junk, sim_seed,
                    apix=args.apix)
    dirs = {"ours": base / accuracy.ours_tag(args, kw), "cryodrgn": base / accuracy.cdrgn_tag(args)}
    accuracy.train_ours(data, dirs["ours"], args, kw)
    if bin_ is not None:
        accuracy.train_cdrgn(data, dirs["cryodrgn"], args, bin_)
    truth = accuracy.Truth(data, args.conf_tol, args.min_particles)
    rows = dict(baselines(data, truth, base))
    res = {"data": accuracy.data_tag(args), "baselines": rows, "tools": {}}
    for tool in ("ours", "cryodrgn"):
        if tool == "cryodrgn" and bin_ is None:
            res["tools"][tool] = NOT_INSTALLED
            continue
        latent = accuracy.evaluate_tool(tool, dirs[tool], truth, args, bin_)
        last = [r for r in latent if r["epoch"] == args.epochs]
        if not last:
            res["tools"][tool] = f"no epoch {args.epochs} in {dirs[tool]}"
            continue
        m = tool_maps(tool, dirs[tool], args.epochs, truth, data, args, bin_)
        m.update({k: last[0].get(k) for k in ("conf_r2", "state_acc", "cum_train_s")})
        res["tools"][tool] = m
        rows[f"{'ours' if tool == 'ours' else 'cryoDRGN 4.3.1'}, epoch {args.epochs}"] = m
    o, c = res["tools"].get("ours"), res["tools"].get("cryodrgn")
    if isinstance(o, dict) and isinstance(c, dict):
        res["ratio_ours_to_cryodrgn"] = {k: o[k] / c[k] if c[k] else None
                                         for k in ("fsc_auc", "dfsc_auc", "per_image_fsc_auc")}
    res["table"] = [{"map": name, **{k: r.get(k) for k in (
        "fsc_auc", "dfsc_auc", "per_image_fsc_auc", "fsc05", "fsc0143", "rsc", "conf_r2",
        "state_acc", "cum_train_s")}} for name, r in rows.items()]
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    bin_ = None if args.skip_cryodrgn else find_cryodrgn()
    t0 = time.perf_counter()
    out = {"benchmark": "maps", "machine": machine_info(args.device, bin_),
           "settings": vars(args), "datasets": []}
    table = []
    for seed in args.sim_seeds or [args.sim_seed]:
        res = one_dataset(args, seed, bin_)
        out["datasets"].append(res)
        table += [{"data": res["data"], **r} for r in res["table"]]
        if "ratio_ours_to_cryodrgn" in res:
            print(f"{res['data']}: ours / cryoDRGN {res['ratio_ours_to_cryodrgn']}")
    out["total_s"] = time.perf_counter() - t0
    save_json(args.out, out, table, title="maps against the truth (signed FSC; fsc05/fsc0143: "
              "frequency in 1/pixel where the FSC drops below 0.5/0.143; 0.5 = never)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
