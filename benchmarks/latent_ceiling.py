"""How well could any encoder read the conformation from one image? The Bayes-optimal limit.

For a sample of a simulated dataset's particles, the simulator renders every hypothesis
(conformation on a fine grid x state) exactly at the particle's own pose, shift and CTF, and
the Gaussian likelihood of the stored image under each (the known noise level) gives the
posterior. Its mean conformation and most probable state are the best any per-image
estimate can do with the true model, poses and CTF: the R^2 and state accuracy they reach
are the ceiling for a VAE's latent on that dataset (an amortised encoder cannot beat the
exact posterior; a linear read-out of z can only lose more). Prints and saves JSON.

    .venv/bin/python benchmarks/latent_ceiling.py --preset hard   # D=64, SNR 0.1 (maps.py's)
    .venv/bin/python benchmarks/latent_ceiling.py --preset ci
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402
import maps  # noqa: E402
from _common import RESULTS, machine_info, save_json, simulate  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(maps.PRESETS), default="hard")
    p.add_argument("--sample", type=int, default=600, help="particles scored (non-junk)")
    p.add_argument("--grid", type=int, default=41, help="conformations per state")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def posterior_scores(data: dict, sample: int, grid: int) -> dict:
    """R^2 of the posterior-mean conformation and accuracy of the most probable state."""
    import torch
    import yaml

    from napari_cryodrgn.io.mrc import memmap_mrc, read_mrc_header
    from napari_cryodrgn.simulate.config import SimConfig
    from napari_cryodrgn.simulate.generate import sample_metadata
    from napari_cryodrgn.simulate.optics import apply_ctf
    from napari_cryodrgn.simulate.phantom import default_phantom
    from napari_cryodrgn.simulate.project import project_blobs

    desc = yaml.safe_load(Path(data["config"]).read_text())
    cfg = SimConfig(**desc["config"])
    noise = float(desc["result"]["noise_std"])
    meta = sample_metadata(cfg)
    good = np.flatnonzero(~meta["is_junk"])
    rows = np.sort(np.random.default_rng(0).choice(good, min(sample, len(good)), False))
    imgs = np.asarray(memmap_mrc(read_mrc_header(data["particles"]))[rows], np.float32)
    ph = default_phantom()
    confs = np.linspace(0.0, 1.0, grid)
    hyp = [(c, s) for s in (0, 1) for c in confs]
    blobs = [ph.batch_blobs(np.array([c]), np.array([s]), cfg.D) for c, s in hyp]
    sigma = ph.sigma(cfg.D)
    loglik = np.empty((len(rows), len(hyp)))
    B = len(rows)
    shift = -meta["trans"][rows].astype(np.float64) * cfg.D  # pixels off-centre
    for k, (pos, w) in enumerate(blobs):
        P = torch.from_numpy(np.repeat(pos.astype(np.float32), B, 0))
        W = np.repeat(w, B, 0)
        clean = apply_ctf(project_blobs(P, W, meta["rot"][rows], shift, cfg.D, sigma),
                          meta["ctf"][rows]).numpy()
        r = imgs + clean  # stored = -clean + noise
        loglik[:, k] = -np.sum(r.astype(np.float64) ** 2, axis=(1, 2)) / (2 * noise**2)
    loglik -= loglik.max(1, keepdims=True)
    post = np.exp(loglik)
    post /= post.sum(1, keepdims=True)
    c_hyp = np.array([c for c, _ in hyp])
    s_hyp = np.array([s for _, s in hyp])
    c_mean = post @ c_hyp
    p_state1 = post[:, s_hyp == 1].sum(1)
    y = meta["conf"][rows]
    r2 = 1 - np.sum((y - c_mean) ** 2) / np.sum((y - y.mean()) ** 2)
    acc = float(np.mean((p_state1 > 0.5) == (meta["state"][rows] == 1)))
    return {"conf_r2": float(r2), "state_acc": acc, "particles": int(len(rows)),
            "hypotheses": len(hyp), "mean_posterior_sd": float(np.mean(np.sqrt(np.maximum(
                post @ c_hyp**2 - c_mean**2, 0))))}


def main(argv=None) -> int:
    args = parse_args(argv)
    sim = argparse.Namespace(**{**vars(accuracy.build_parser().parse_args([])),
                                **maps.PRESETS[args.preset]})
    t0 = time.perf_counter()
    data = simulate(Path(sim.workdir) / accuracy.data_tag(sim) / "data", sim.n, sim.D, sim.snr,
                    sim.junk, sim.sim_seed, sim.apix)
    res = posterior_scores(data, args.sample, args.grid)
    res["seconds"] = time.perf_counter() - t0
    print(f"{args.preset}: Bayes-optimal conformation R^2 {res['conf_r2']:.3f}, state accuracy "
          f"{res['state_acc']:.3f} ({res['particles']} particles, {res['hypotheses']} "
          f"hypotheses, {res['seconds']:.0f} s)")
    out = args.out or RESULTS / f"latent_ceiling_{args.preset}.json"
    save_json(out, {"benchmark": "latent_ceiling", "machine": machine_info(),
                    "settings": {**vars(args), "out": str(out)}, "data": accuracy.data_tag(sim),
                    "result": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
