"""How much conformation does the encoder leave in the images? Its z against z refined
through the trained decoder.

For a sample of a trained run's particles (a simulated set, so the truth is known), each
latent point of the epoch's z file is moved down the gradient of the particle's own
posterior: the squared error between its image and the decoder's slice at its pose and CTF,
over the lattice points up to ``--band`` cycles/pixel, divided by twice ``T`` times the noise
variance per point (the median error of the sample at its stored z), plus the standard normal
prior ``|z|^2 / 2`` (Adam, ``--lr``, ``--steps``). The gap between the R^2 and state accuracy
of the stored and refined points is the amortisation gap: what a per-particle inference with
the same decoder reads from the images that the encoder does not. latent_ceiling.py gives the
limit with the exact maps. Prints and saves JSON; nothing in the run folder is changed.

    .venv/bin/python benchmarks/amortization.py --preset hard   # maps.py's default run
    .venv/bin/python benchmarks/amortization.py --preset ci --run FOLDER --epoch 12
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import maps  # noqa: E402
from _common import RESULTS, machine_info, save_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    maps.add_run_args(p)
    p.add_argument("--sample", type=int, default=1500, help="particles refined (all kinds)")
    p.add_argument("--bands", type=float, nargs="+", default=[0.125, 0.2],
                   help="highest frequencies (cycles/pixel) of the refinement's error")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--temps", type=float, nargs="+", default=[1.0, 0.5],
                   help="likelihood temperatures T")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


class Problem:
    """The sample's preprocessed images, CTF and poses, restricted to a band, and the decoder."""

    def __init__(self, folder: Path, epoch: int, rows: np.ndarray, band: float, batch: int):
        import torch

        from napari_cryodrgn.analysis.particle_loss import run_preprocessor
        from napari_cryodrgn.io.runfolder import RunFolder
        from napari_cryodrgn.training.trainer import batch_tensors, data_tensors

        run_folder = RunFolder.open(folder)
        lat = run_folder.latents(epoch)
        run = run_folder.model(epoch)
        self.model = run.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        data = run_folder.particle_data(len(lat.z), "the refinement needs the particles")
        prep = run_preprocessor(run, "cpu")
        rot, trans, ctf = data_tensors(data)
        half = torch.nonzero(prep.k[: prep.n_half].norm(dim=1) <= band).squeeze(1)
        sel = torch.cat([half, half + prep.n_half])
        self.coords_half = prep.coords_half[half]
        ys, cs, rs = [], [], []
        for s in range(0, len(rows), batch):
            y, c, _, r = batch_tensors(data, prep, rows[s : s + batch], rot, trans, ctf)
            ys.append(y[:, sel])
            cs.append(None if c is None else c[:, sel])
            rs.append(r)
        self.y, self.rot = torch.cat(ys), torch.cat(rs)
        self.c = None if cs[0] is None else torch.cat(cs)
        self.z = torch.from_numpy(np.ascontiguousarray(lat.z[rows], np.float32))
        self.points = len(sel)
        self.batch = batch

    def error(self, z, sl):
        """Summed squared error (B,) of rows ``sl`` at latents ``z``."""

        from napari_cryodrgn.training.trainer import model_images

        pair = self.model.decoder.pair_at(self.coords_half @ self.rot[sl])
        rec = model_images(pair, z, None if self.c is None else self.c[sl])
        return (rec - self.y[sl]).pow(2).sum(1)

    def noise_var(self) -> float:
        import torch

        with torch.no_grad():
            e = torch.cat([self.error(self.z[s : s + self.batch], slice(s, s + self.batch))
                           for s in range(0, len(self.z), self.batch)])
        return float(e.median()) / self.points

    def refine(self, steps: int, lr: float, temp: float, var: float) -> np.ndarray:
        import torch

        out = []
        for s in range(0, len(self.z), self.batch):
            sl = slice(s, s + self.batch)
            z = self.z[sl].clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                loss = self.error(z, sl) / (2 * temp * var) + 0.5 * z.pow(2).sum(1)
                loss.sum().backward()
                opt.step()
            out.append(z.detach())
        return torch.cat(out).numpy()


def main(argv=None) -> int:
    import torch

    from napari_cryodrgn.analysis.metrics import conformation_r2, state_accuracy
    from napari_cryodrgn.io.safepickle import load_pickle

    args = parse_args(argv)
    data, folder, epoch, tag = maps.preset_run(args)
    lab = load_pickle(data["labels"])
    n = len(lab["conf"])
    rows = np.linspace(0, n - 1, min(args.sample, n)).astype(np.int64)
    junk = np.asarray(lab["is_junk"], bool)[rows]
    conf = np.asarray(lab["conf"], float)[rows]
    state = np.where(junk, -1, np.asarray(lab["state"], int)[rows])

    def scores(z) -> dict:
        return {"conf_r2": conformation_r2(z[~junk], conf[~junk]),
                "state_acc": state_accuracy(z, state)}

    table = []
    for band in args.bands:
        prob = Problem(folder, epoch, rows, band, args.batch)
        var = prob.noise_var()
        if not table:
            table.append({"z": f"stored (epoch {epoch})", "band": None, "steps": 0,
                          "T": None, **scores(prob.z.numpy()), "ms_per_particle": 0.0})
        for steps in args.steps:
            for temp in args.temps:
                t0 = time.perf_counter()
                z = prob.refine(steps, args.lr, temp, var)
                ms = 1000 * (time.perf_counter() - t0) / len(rows)
                table.append({"z": "refined", "band": band, "steps": steps, "T": temp,
                              **scores(z), "ms_per_particle": ms, "points": prob.points,
                              "noise_var": var})
                r = table[-1]
                print(f"band {band}, {steps} steps, T {temp}: R^2 {r['conf_r2']:.3f}, state "
                      f"{r['state_acc']:.3f}, {ms:.1f} ms/particle", flush=True)
    out = args.out or RESULTS / f"amortization_{args.preset}.json"
    save_json(out, {"benchmark": "amortization", "machine": machine_info(),
                    "threads": torch.get_num_threads(),
                    "settings": {**vars(args), "run": str(folder), "epoch": epoch,
                                 "out": str(out)},
                    "data": tag, "table": table},
              rows=table, columns=["z", "band", "steps", "T", "conf_r2", "state_acc",
                                   "ms_per_particle"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
