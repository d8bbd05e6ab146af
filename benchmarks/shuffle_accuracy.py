"""Does the chunked shuffle cost latent accuracy? The CI science test's data and settings,
trained with a full shuffle and with the chunked shuffle, scored against the ground truth.

The simulator writes particles in random order, so neighbouring particles are unrelated and a
chunked shuffle changes little by construction. Real stacks are ordered by micrograph (similar
defocus, ice, sometimes similar states), so the harder case is also run: the same particles
with the stack sorted by state and conformation (junk last), where every chunk is nearly
homogeneous and only the window mixes them.

    .venv/bin/python benchmarks/shuffle_accuracy.py            # ~4 runs of 12 epochs
    .venv/bin/python benchmarks/shuffle_accuracy.py --epochs 4  # quicker

Results: benchmarks/results/shuffle_accuracy.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, machine_info, read_json, save_json, write_json_atomic  # noqa: E402

SIM = dict(n=8000, D=32, apix=6.0, snr=3.0, junk=0.15, seed=4)  # tests/science/conftest.py
NET = dict(batch_size=8, lr=1e-3, qdim=128, qlayers=2, pdim=128, players=2, seed=0)


def sorted_copy(data: dict, folder: Path) -> tuple[dict, np.ndarray]:
    """The dataset with its particles sorted by (junk, state, conformation)."""
    from napari_cryodrgn.io.ctf import load_ctf, save_ctf
    from napari_cryodrgn.io.mrc import read_mrc, write_mrc
    from napari_cryodrgn.io.poses import load_poses, save_poses
    from napari_cryodrgn.io.safepickle import load_pickle

    lab = load_pickle(data["labels"])
    perm = np.lexsort((np.asarray(lab["conf"]), np.asarray(lab["state"]),
                       np.asarray(lab["is_junk"])))
    folder.mkdir(parents=True, exist_ok=True)
    stack, apix = read_mrc(data["particles"])
    write_mrc(folder / "particles.mrcs", stack[perm], apix)
    rot, trans = load_poses(data["poses"])
    save_poses(folder / "poses.pkl", rot[perm], trans[perm])
    save_ctf(folder / "ctf.pkl", load_ctf(data["ctf"])[perm])
    return {"particles": folder / "particles.mrcs", "poses": folder / "poses.pkl",
            "ctf": folder / "ctf.pkl"}, perm


def train_and_score(data: dict, truth_dir: Path, perm, out: Path, epochs: int,
                    shuffler_size: int, seed: int) -> dict:
    """Train (unless ``out`` already holds this very run) and score the last epoch."""
    from napari_cryodrgn.analysis.groundtruth import Truth, latent_scores
    from napari_cryodrgn.training.api import make_trainer
    from napari_cryodrgn.training.checkpoint import load_z

    settings = {**NET, "epochs": epochs, "shuffler_size": shuffler_size, "seed": seed,
                "particles": str(data["particles"])}
    done = read_json(out / "bench_settings.json")
    t0 = time.perf_counter()
    if done is None or done.get("settings") != settings:
        tr = make_trainer(data["particles"], data["poses"], out, 8, ctf=data["ctf"],
                          num_epochs=epochs, shuffler_size=shuffler_size, overwrite=True,
                          **{**NET, "seed": seed})
        for _ in tr.run():
            pass
        done = {"settings": settings, "window": tr.window, "chunk": tr.chunk,
                "train_s": time.perf_counter() - t0}
        write_json_atomic(out / "bench_settings.json", done)
    z, _ = load_z(out / f"z.{epochs}.pkl")
    s = latent_scores(z, Truth.load(truth_dir, ind=perm))
    return {"r2": s.r2, "state_acc": s.state_acc, "junk_auc": s.junk_auc,
            "window": done["window"], "chunk": done["chunk"], "train_s": done["train_s"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--windows", type=int, nargs="*", default=[1024, 256],
                   help="chunked-shuffle windows (particles) for the sorted stack")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2],
                   help="training seeds of the full-shuffle reference (their spread is the "
                   "run-to-run noise the chunked runs are compared with; seed 0 for those)")
    p.add_argument("--workdir", type=Path, default=WORK / "shuffle_accuracy")
    p.add_argument("--out", default="shuffle_accuracy")
    args = p.parse_args()
    import torch

    from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset

    root = args.workdir
    data_dir = root / "data"
    if not (data_dir / "labels.pkl").exists():
        write_dataset(data_dir, SimConfig(**SIM))
    data = {k: data_dir / v for k, v in (("particles", "particles.mrcs"),
                                          ("poses", "poses.pkl"), ("ctf", "ctf.pkl"),
                                          ("labels", "labels.pkl"))}
    srt, perm = sorted_copy(data, root / "sorted")
    cases = [("full shuffle", "random (as simulated)", data, None, 0, seed)
             for seed in args.seeds]
    cases += [("chunked", "random (as simulated)", data, None, args.windows[0], 0)]
    cases += [("chunked", "sorted by state, conformation", srt, perm, w, 0)
              for w in args.windows]
    rows = []
    for name, order, d, pm, w, seed in cases:
        out = (root / f"run_{name.split()[0]}_{'sorted' if pm is not None else 'random'}_{w}"
               f"{f'_seed{seed}' if seed else ''}")
        r = train_and_score(d, data_dir, pm, out, args.epochs, w, seed)
        r.update(case=name, stack_order=order, shuffler_size=w, seed=seed)
        rows.append(r)
        print(f"{name:>12} {order:>30} window {w:>5}: R^2 {r['r2']:.3f} state "
              f"{r['state_acc']:.3f} junk AUC {r['junk_auc']:.3f} ({r['train_s']:.0f} s)",
              flush=True)
    obj = {"machine": machine_info("cpu"), "sim": SIM, "net": NET, "epochs": args.epochs,
           "torch_threads": torch.get_num_threads(), "results": rows}
    save_json(args.out, obj, rows, ["case", "stack_order", "shuffler_size", "chunk", "seed",
                                    "r2", "state_acc", "junk_auc", "train_s"],
              title="latent accuracy: full vs chunked shuffle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
