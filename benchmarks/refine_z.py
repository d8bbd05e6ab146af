"""The latent refinement (``napari-cryodrgn refine_z``): its cost and effect per precision
and number of steps, on a trained run of a simulated set.

Each variant refines a copy of the run's epoch (weights, config and the encoder's z; the run
itself is not touched) with :func:`~napari_cryodrgn.training.refine_z.refine_run` and reports
wall time, particles per second and the conformation R^2 / state accuracy / junk AUC of the
refined z against the encoder's. Prints a table and saves JSON.

    .venv/bin/python benchmarks/refine_z.py --preset hard --run FOLDER --epoch 10
    .venv/bin/python benchmarks/refine_z.py --preset ci --run FOLDER --precisions bf16 --steps 10 20
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import maps  # noqa: E402
from _common import RESULTS, machine_info, save_json  # noqa: E402

from napari_cryodrgn.training.settings import default  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    maps.add_run_args(p)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, nargs="+", default=[default("z_refine_steps")],
                   help="iterations (default: training's --z-refine-steps default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON (default: benchmarks/results/refine_z_PRESET.json)")
    return p.parse_args(argv)


def epoch_copy(folder: Path, epoch: int, dest: Path) -> Path:
    """A run folder holding ``epoch``'s weights, config and the encoder's z as z.N.pkl."""
    from napari_cryodrgn.training.refine_z import encoder_zfile

    dest.mkdir(parents=True)
    for name in ("config.yaml", f"weights.{epoch}.pkl"):
        shutil.copy2(folder / name, dest / name)
    shutil.copy2(encoder_zfile(folder, epoch), dest / f"z.{epoch}.pkl")
    return dest


def main(argv=None) -> int:
    import torch

    from napari_cryodrgn.analysis.metrics import conformation_r2, junk_auc, state_accuracy
    from napari_cryodrgn.io.safepickle import load_pickle
    from napari_cryodrgn.training.checkpoint import load_z
    from napari_cryodrgn.training.refine_z import refine_run

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, folder, epoch, tag = maps.preset_run(args)
    lab = load_pickle(data["labels"])
    conf = np.asarray(lab["conf"], float)
    junk = np.asarray(lab["is_junk"], bool)
    state = np.asarray(lab["state"], int)

    def scores(z) -> dict:
        return {"conf_r2": conformation_r2(z, conf), "state_acc": state_accuracy(z, state),
                "junk_auc": junk_auc(z, junk)}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        enc = load_z(epoch_copy(folder, epoch, Path(tmp) / "enc") / f"z.{epoch}.pkl")[0]
        rows.append({"variant": "encoder", **scores(enc)})
        print(rows[-1], flush=True)
        for prec in args.precisions:
            for steps in args.steps:
                work = epoch_copy(folder, epoch, Path(tmp) / f"{prec}_{steps}")
                t0 = time.perf_counter()
                zfile, _, how = refine_run(work, epoch, steps, args.device, precision=prec)
                dt = time.perf_counter() - t0
                z = load_z(zfile)[0]
                rows.append({"variant": f"{prec}, {steps} steps", "seconds": dt,
                             "particles_per_s": len(z) / dt, **scores(z), "how": how})
                print(rows[-1], flush=True)
    out = {"benchmark": "refine_z", "machine": machine_info(args.device), "run": str(folder),
           "epoch": epoch, "preset": args.preset, "data": tag, "rows": rows}
    save_json(args.out or RESULTS / f"refine_z_{args.preset}.json", out, rows,
              columns=["variant", "seconds", "particles_per_s", "conf_r2", "state_acc",
                       "junk_auc"],
              title=f"latent refinement, {args.preset} preset, epoch {epoch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
