"""Accuracy per epoch on the simulator, ours versus cryoDRGN (same data, network and epochs).

After each epoch, for each tool: cross-validated R^2 of the true conformation from z, state
accuracy, junk AUC, and the mean FSC-AUC of maps decoded at the mean z of the particles near
each true (conformation, state) against the true maps (and dFSC: the same for the maps minus
their set's mean, which isolates the heterogeneity); plus cumulative training time.

Resumable: a tool folder that already holds the epochs is reused, a partial one is resumed, and
per-epoch metrics are cached in it. Defaults are the DESIGN.md benchmark (10k particles, D=64,
SNR 0.1, CTF, 10% junk, zdim 8, 256x3 networks, batch 16, 12 epochs): about an hour per tool on
2 CPU cores.

    .venv/bin/python benchmarks/accuracy.py
    .venv/bin/python benchmarks/accuracy.py -n 300 -D 32 --epochs 2 --qdim 64 --pdim 64
    .venv/bin/python benchmarks/accuracy.py --our-lr 3e-4 --ours-only-settings beta=0.05
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
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
    parse_cryodrgn_log,
    read_json,
    run_cryodrgn_eval_vol,
    run_cryodrgn_train,
    save_json,
    simulate,
    write_json_atomic,
)

TIMING = "bench_timing.json"
METRICS = "bench_metrics.json"
METRICS_VERSION = 3  # 3: signed FSC-AUC


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The options of this benchmark (benchmarks/maps.py adds its own to them)."""
    p = argparse.ArgumentParser(description=description or __doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(RESULTS / "accuracy.json"), help="results JSON")
    p.add_argument("--workdir", default=str(WORK / "accuracy"),
                   help="datasets and training runs (kept, for resuming)")
    g = p.add_argument_group("data (simulator)")
    g.add_argument("-n", type=int, default=10000, help="particles")
    g.add_argument("-D", type=int, default=64, help="box size")
    g.add_argument("--snr", type=float, default=0.1)
    g.add_argument("--junk", type=float, default=0.1, help="junk fraction")
    g.add_argument("--sim-seed", type=int, default=0)
    g = p.add_argument_group("training, shared by both tools")
    add_network_args(g, epochs=12)
    g = p.add_argument_group("our non-default settings (cryoDRGN keeps its defaults)")
    g.add_argument("--our-lr", type=float, default=None)
    g.add_argument("--our-batch", type=int, default=None)
    g.add_argument("--our-beta", type=float, default=None)
    g.add_argument("--our-precision", default=None, help="fp32, bf16, fp16 (default: auto)")
    g.add_argument("--ours-only-settings", nargs="*", default=[], metavar="KEY=VALUE",
                   help="any other make_trainer keyword for ours only, e.g. wd=1e-5")
    g = p.add_argument_group("cryoDRGN")
    g.add_argument("--skip-cryodrgn", action="store_true")
    g.add_argument("--cdrgn-extra", default="",
                   help='extra train_vae arguments, one quoted string, e.g. "--lr 3e-4"')
    g.add_argument("--cdrgn-decoder", choices=["eval_vol", "ours"], default="eval_vol",
                   help="decode cryoDRGN's maps with `cryodrgn eval_vol` or our decoder")
    g = p.add_argument_group("evaluation")
    g.add_argument("--conf-tol", type=float, default=0.05,
                   help="particles within this |conf - c| of a true map give its latent point")
    g.add_argument("--min-particles", type=int, default=5,
                   help="fewer than this within --conf-tol: use the nearest this many")
    g.add_argument("--fsc-every", type=int, default=1,
                   help="FSC-AUC every N epochs (and the last); other metrics every epoch")
    g.add_argument("--fresh", action="store_true",
                   help="delete this setting's tool folders and train again")
    g.add_argument("--eval-only", action="store_true",
                   help="no training: evaluate the epochs already in the folders")
    g.add_argument("--apix", type=float, default=None,
                   help="simulated pixel size (default: the simulator's)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


# -- settings and folders ----------------------------------------------------------------------
def _scalar(text: str):
    """'3' -> 3, '1e-6' -> 1e-06, 'true' -> True, 'none' -> None, else the text."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None, "null": None}.get(text.lower(), text)


def parse_settings(items: list[str]) -> dict:
    """KEY=VALUE strings -> dict with numbers, booleans and none parsed."""
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"--ours-only-settings: expected KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip().replace("-", "_")] = _scalar(v.strip())
    return out


def our_kwargs(args) -> dict:
    kw = {"num_epochs": args.epochs, "batch_size": args.batch, "qdim": args.qdim,
          "qlayers": args.qlayers, "pdim": args.pdim, "players": args.players,
          "seed": args.seed, "device": args.device}
    for k, v in (("lr", args.our_lr), ("batch_size", args.our_batch),
                 ("beta", args.our_beta), ("precision", args.our_precision)):
        if v is not None:
            kw[k] = v
    kw.update(parse_settings(args.ours_only_settings))
    return kw


def data_tag(args) -> str:
    tag = f"sim_n{args.n}_D{args.D}_snr{args.snr:g}_junk{args.junk:g}_seed{args.sim_seed}"
    return tag if args.apix is None else f"{tag}_apix{args.apix:g}"


def net_tag(args) -> str:
    return (f"z{args.zdim}_q{args.qdim}x{args.qlayers}_p{args.pdim}x{args.players}"
            f"_b{args.batch}_s{args.seed}")


def ours_tag(args, kw: dict) -> str:
    base = {"num_epochs", "batch_size", "qdim", "qlayers", "pdim", "players", "seed", "device"}
    extra = {k: v for k, v in kw.items() if k not in base}
    if kw["batch_size"] != args.batch:
        extra["batch"] = kw["batch_size"]
    tag = "ours_" + net_tag(args)
    if extra:
        tag += "_" + "_".join(f"{k}{v}" for k, v in sorted(extra.items()))
    return tag.replace("/", "-")


def cdrgn_tag(args) -> str:
    tag = "cryodrgn_" + net_tag(args)
    if args.cdrgn_extra.strip():
        tag += "_x" + hashlib.sha1(args.cdrgn_extra.encode()).hexdigest()[:8]
    return tag


def epochs_done(folder: Path) -> list[int]:
    from napari_cryodrgn.training.checkpoint import epochs_in

    return epochs_in(folder) if folder.is_dir() else []


# -- training ----------------------------------------------------------------------------------
def _merge_timing(folder: Path, new: list[dict]) -> list[dict]:
    """Per-epoch timing records, new ones replacing old ones of the same epoch."""
    old = {r["epoch"]: r for r in read_json(folder / TIMING, {}).get("epochs", [])}
    for r in new:
        old[r["epoch"]] = r
    recs = [old[e] for e in sorted(old)]
    write_json_atomic(folder / TIMING, {"epochs": recs})
    return recs


def run_key(zdim: int, kw: dict) -> dict:
    """Every model and training setting a run of ours gets from ``kw`` and the defaults
    (JSON values; not the epoch count): a folder trained under other defaults is not reused."""
    from napari_cryodrgn.training.settings import TrainSettings

    st = TrainSettings.from_kwargs(zdim=zdim, **kw)
    key = {**st.part("model"), **st.part("train")}
    key.pop("num_epochs", None)
    return json.loads(json.dumps(key, default=str))


def train_ours(data: dict, folder: Path, args, kw: dict) -> dict:
    """Train (or resume, or reuse) our run in ``folder``; per-epoch timing kept in the folder."""
    from napari_cryodrgn.training.api import make_trainer

    have = epochs_done(folder)
    key = run_key(args.zdim, kw)
    stored = read_json(folder / "bench_settings.json", {}).get("settings")
    if have and stored != key:
        why = ("its settings were not recorded" if stored is None else "it was trained with "
               "other " + ", ".join(sorted(k for k in key if stored.get(k, "?") != key[k])))
        print(f"ours: {folder.name}: {why}; training it afresh")
        shutil.rmtree(folder)
        have = []
    if have and max(have) >= args.epochs:
        print(f"ours: reusing {folder} (epochs {have[0]}..{have[-1]})")
        return {"reused": True}
    if args.eval_only:
        return {"skipped": "eval-only"}
    print(f"ours: training {folder.name}" + (f" (resuming after epoch {have[-1]})" if have
                                              else ""))
    t_mark = time.perf_counter()
    tr = make_trainer(data["particles"], data["poses"], folder, args.zdim, ctf=data["ctf"],
                      load="latest" if have else None, overwrite=not have, **kw)
    write_json_atomic(folder / "bench_settings.json", {"make_trainer": kw, "settings": key})
    recs = []
    for ev in tr.run():
        if ev.kind == "epoch":
            now = time.perf_counter()
            train_s = float(ev.extra["epoch_s"])
            recs.append({"epoch": ev.epoch, "train_s": train_s,
                         "overhead_s": now - t_mark - train_s, "loss": ev.loss,
                         "gen_loss": ev.gen_loss, "kld": ev.kld})
            print(f"  ours epoch {ev.epoch}: {train_s:.1f} s, loss {ev.loss:.5f}")
        elif ev.kind == "checkpoint":
            t_mark = time.perf_counter()
            _merge_timing(folder, recs)
    return {"reused": False, "precision": tr.precision, "device": str(tr.device)}


def train_cdrgn(data: dict, folder: Path, args, bin_: str) -> dict:
    """Train (or resume with --load latest, or reuse) cryoDRGN's run in ``folder``."""
    have = epochs_done(folder)
    if have and max(have) >= args.epochs:
        print(f"cryoDRGN: reusing {folder} (epochs {have[0]}..{have[-1]})")
        return {"reused": True}
    if args.eval_only:
        return {"skipped": "eval-only"}
    print(f"cryoDRGN: training {folder.name}" + (f" (resuming after epoch {have[-1]})"
                                                  if have else ""))
    state = {"prev_end": None, "recs": []}

    def on_epoch(epoch, epoch_s, t):
        start = state["prev_end"] if state["prev_end"] is not None else 0.0
        state["prev_end"] = t
        state["recs"].append({"epoch": epoch, "train_s": epoch_s,
                              "overhead_s": t - start - epoch_s})
        _merge_timing(folder, state["recs"])
        print(f"  cryoDRGN epoch {epoch}: {epoch_s:.1f} s")

    res = run_cryodrgn_train(data["particles"], data["poses"], data["ctf"], folder, args.zdim,
                             args.epochs, args.qdim, args.qlayers, args.pdim, args.players,
                             args.batch, args.seed, extra=shlex.split(args.cdrgn_extra),
                             bin_=bin_, device=args.device, threads=args.threads,
                             load="latest" if have else None, on_epoch=on_epoch)
    # The first epoch of a session also paid for Python start-up; keep that apart.
    if state["recs"] and res.get("startup_s") is not None:
        first = state["recs"][0]
        first["startup_s"] = res["startup_s"]
        first["overhead_s"] -= res["startup_s"]
        _merge_timing(folder, state["recs"])
    if res["returncode"] != 0:
        print("cryoDRGN train_vae failed:\n  " + "\n  ".join(res.get("tail", [])))
    return {"reused": False, **{k: res[k] for k in ("returncode", "wall_s", "cpu_s", "load_s",
                                                     "startup_s", "cmd")}}


# -- evaluation --------------------------------------------------------------------------------
class Truth:
    """Labels, true maps and the latent-point selection rule of a simulated dataset."""

    def __init__(self, data: dict, tol: float, min_particles: int):
        from napari_cryodrgn.io.mrc import read_mrc
        from napari_cryodrgn.io.safepickle import load_pickle

        lab = load_pickle(data["labels"])
        self.conf = np.asarray(lab["conf"], np.float64)
        self.state = np.asarray(lab["state"], np.int64)
        self.is_junk = np.asarray(lab["is_junk"], bool)
        self.maps, self.grid = [], []
        tdir = Path(data["truth_dir"])
        for line in Path(data["truth_grid"]).read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            name, c, s = line.split()[:3]
            self.grid.append((name, float(c), int(s)))
            self.maps.append(read_mrc(tdir / name)[0])
        self.tol, self.min_particles = tol, min_particles
        self.groups = [self._select(c, s) for _, c, s in self.grid]
        mean_map = np.mean(self.maps, 0)
        from napari_cryodrgn.analysis.fsc import fsc_auc

        # What one consensus map would score: a floor for the heterogeneous FSC-AUC.
        self.mean_map_fsc_auc = float(np.mean([fsc_auc(mean_map, m) for m in self.maps]))

    def _select(self, c: float, s: int) -> np.ndarray:
        ok = (~self.is_junk) & (self.state == s)
        d = np.where(ok, np.abs(self.conf - c), np.inf)
        idx = np.nonzero(d < self.tol)[0]
        if len(idx) < self.min_particles:
            idx = np.argsort(d)[: self.min_particles]
            idx = idx[np.isfinite(d[idx])]
        return idx

    def latent_points(self, z: np.ndarray) -> np.ndarray:
        return np.stack([z[g].mean(0) for g in self.groups])


def decode_maps(tool: str, folder: Path, epoch: int, zpts: np.ndarray, args,
                bin_: str | None) -> list[np.ndarray]:
    """Maps at ``zpts`` with the weights of ``epoch``."""
    if tool == "cryodrgn" and args.cdrgn_decoder == "eval_vol":
        from napari_cryodrgn.io.mrc import read_mrc

        tmp = folder / f"bench_maps.{epoch}"
        res = run_cryodrgn_eval_vol(folder, epoch, zpts, tmp, bin_=bin_, device=args.device,
                                    threads=args.threads)
        if res["returncode"] != 0:
            raise RuntimeError("cryodrgn eval_vol failed: " + " | ".join(res.get("tail", [])))
        maps = [read_mrc(p)[0] for p in res["paths"]]
        shutil.rmtree(tmp, ignore_errors=True)
        return maps
    from napari_cryodrgn.model.load import load_run

    dec = load_run(folder, epoch).volume_decoder(precision="fp32")
    return [dec(z) for z in zpts]


def evaluate_epoch(tool: str, folder: Path, epoch: int, truth: Truth, args, bin_,
                   with_fsc: bool) -> dict:
    from napari_cryodrgn.analysis.fsc import dfsc_auc, fsc_auc
    from napari_cryodrgn.analysis.metrics import conformation_r2, junk_auc, state_accuracy
    from napari_cryodrgn.training.checkpoint import load_z

    t0 = time.perf_counter()
    z = load_z(folder / f"z.{epoch}.pkl")[0]
    out = {"epoch": epoch}
    for name, fn, lab in (("conf_r2", conformation_r2, truth.conf),
                          ("state_acc", state_accuracy, truth.state),
                          ("junk_auc", junk_auc, truth.is_junk)):
        try:
            out[name] = fn(z, lab)
        except Exception as e:  # noqa: BLE001 - a failed metric must not end the benchmark
            out[name] = None
            out[f"{name}_error"] = f"{type(e).__name__}: {e}"
    if with_fsc:
        try:
            maps = decode_maps(tool, folder, epoch, truth.latent_points(z), args, bin_)
            per = [fsc_auc(m, t) for m, t in zip(maps, truth.maps, strict=True)]
            out["fsc_auc"] = float(np.mean(per))
            out["fsc_auc_per_map"] = per
            out["fsc_auc_delta"] = dfsc_auc(maps, truth.maps)  # the moving part alone
        except Exception as e:  # noqa: BLE001
            out["fsc_auc"] = None
            out["fsc_auc_error"] = f"{type(e).__name__}: {e}"
    out["eval_s"] = time.perf_counter() - t0
    return out


def metrics_key(tool: str, args) -> dict:
    key = {"version": METRICS_VERSION, "conf_tol": args.conf_tol,
           "min_particles": args.min_particles}
    if tool == "cryodrgn":
        key["cdrgn_decoder"] = args.cdrgn_decoder
    return key


def evaluate_tool(tool: str, folder: Path, truth: Truth, args, bin_) -> list[dict]:
    """Per-epoch metrics (cached in the folder) merged with per-epoch timing."""
    cache = read_json(folder / METRICS, {})
    if cache.get("key") != metrics_key(tool, args):
        cache = {"key": metrics_key(tool, args), "epochs": {}}
    timing = {r["epoch"]: r for r in read_json(folder / TIMING, {}).get("epochs", [])}
    if tool == "cryodrgn":  # a folder trained outside this script: epoch times from run.log
        for e, sec in parse_cryodrgn_log(folder / "run.log").items():
            timing.setdefault(e, {"epoch": e, "train_s": sec, "from": "run.log"})
    eps = [e for e in epochs_done(folder) if e <= args.epochs]
    rows, cum_train, cum_wall = [], 0.0, 0.0
    for e in eps:
        with_fsc = e % args.fsc_every == 0 or e == eps[-1]
        m = cache["epochs"].get(str(e))
        if m is None or (with_fsc and "fsc_auc" not in m):
            m = evaluate_epoch(tool, folder, e, truth, args, bin_, with_fsc)
            cache["epochs"][str(e)] = m
            write_json_atomic(folder / METRICS, cache)
            print(f"  {tool} epoch {e}: R2 {m.get('conf_r2')}, state {m.get('state_acc')}, "
                  f"junk {m.get('junk_auc')}, FSC-AUC {m.get('fsc_auc')} "
                  f"({m['eval_s']:.1f} s)")
        t = timing.get(e, {})
        if t and cum_train is not None:
            cum_train += t["train_s"]
            cum_wall += t["train_s"] + t.get("overhead_s", 0.0)
        else:
            cum_train = cum_wall = None
        rows.append({**m, "train_s": t.get("train_s"), "cum_train_s": cum_train,
                     "cum_wall_s": cum_wall, "loss": t.get("loss")})
    return rows


def side_by_side(ours: list[dict], cd: list[dict] | str) -> list[dict]:
    cd_by = {r["epoch"]: r for r in cd} if isinstance(cd, list) else {}
    eps = sorted({r["epoch"] for r in ours} | set(cd_by))
    ours_by = {r["epoch"]: r for r in ours}
    rows = []
    for e in eps:
        o, c = ours_by.get(e, {}), cd_by.get(e, {})
        row = {"epoch": e}
        for key, short in (("conf_r2", "R2"), ("state_acc", "state"), ("junk_auc", "junkAUC"),
                           ("fsc_auc", "FSC"), ("fsc_auc_delta", "dFSC"),
                           ("cum_train_s", "cum s")):
            row[f"ours {short}"] = o.get(key)
            row[f"cd {short}"] = c.get(key) if cd_by else NOT_INSTALLED
        rows.append(row)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    bin_ = None if args.skip_cryodrgn else find_cryodrgn()
    kw = our_kwargs(args)
    work = Path(args.workdir)
    base = work / data_tag(args)
    data = simulate(base / "data", args.n, args.D, args.snr, args.junk, args.sim_seed,
                    apix=args.apix)
    ours_dir, cd_dir = base / ours_tag(args, kw), base / cdrgn_tag(args)
    if args.fresh:
        for d in (ours_dir, cd_dir):
            shutil.rmtree(d, ignore_errors=True)

    t0 = time.perf_counter()
    out = {"benchmark": "accuracy", "machine": machine_info(args.device, bin_),
           "settings": vars(args), "data": {k: str(v) for k, v in data.items()},
           "ours": {"folder": str(ours_dir), "make_trainer": kw}}
    out["ours"]["train"] = train_ours(data, ours_dir, args, kw)
    if bin_ is None:
        out["cryodrgn"] = {"status": NOT_INSTALLED if not args.skip_cryodrgn else "skipped"}
    else:
        out["cryodrgn"] = {"folder": str(cd_dir)}
        out["cryodrgn"]["train"] = train_cdrgn(data, cd_dir, args, bin_)
    out["train_session_s"] = time.perf_counter() - t0

    print("evaluating ...")
    truth = Truth(data, args.conf_tol, args.min_particles)
    out["truth"] = {"maps": [g[0] for g in truth.grid],
                    "particles_per_map": [len(g) for g in truth.groups],
                    "mean_map_fsc_auc": truth.mean_map_fsc_auc}
    out["ours"]["epochs"] = evaluate_tool("ours", ours_dir, truth, args, bin_)
    if bin_ is not None:
        out["cryodrgn"]["epochs"] = evaluate_tool("cryodrgn", cd_dir, truth, args, bin_)
    rows = side_by_side(out["ours"]["epochs"], out["cryodrgn"].get("epochs", NOT_INSTALLED))
    out["table"] = rows
    out["total_s"] = time.perf_counter() - t0
    save_json(args.out, out, rows, title=f"accuracy per epoch (n={args.n}, D={args.D}; "
              f"FSC-AUC of the mean true map, a consensus reference: "
              f"{truth.mean_map_fsc_auc:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
