"""The embedded default job: simulate a heterogeneous dataset, train on it, score the result."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from .analysis.groundtruth import Truth, latent_for, latent_scores, map_scores
from .io.atomic import atomic_write
from .io.mrc import write_mrc
from .model.load import load_run
from .simulate.dataset import SimConfig, write_dataset
from .training.api import trainer_for
from .training.checkpoint import load_z
from .training.settings import TrainSettings

#: The demo's training settings: the declared defaults with a small network and batch (the
#: inputs, output folder, zdim and epochs are filled in by :func:`run_demo`).
DEMO_SETTINGS = TrainSettings(qdim=128, qlayers=2, pdim=128, players=2, batch_size=8, lr=1e-3,
                              seed=0)


def run_demo(outdir, n: int = 8000, D: int = 32, epochs: int = 12, zdim: int = 8,
             snr: float = 3.0, overwrite: bool = False, seed: int = 4, log=print,
             explore: bool = True) -> dict:
    """Simulate ``n`` particles, train ``epochs`` epochs, decode maps and score them.

    Writes ``outdir/data`` (the simulation), ``outdir/train`` (the run, cryoDRGN layout),
    ``outdir/maps`` (maps at the true conformations' latents), ``outdir/summary.json`` and,
    with ``explore``, the latent-space analysis in ``outdir/train/analyze.<epochs>``.
    """
    outdir = Path(outdir)
    data_dir, run_dir, maps_dir = outdir / "data", outdir / "train", outdir / "maps"
    t0 = time.perf_counter()
    if (data_dir / "labels.pkl").exists() and not overwrite:
        log(f"using the simulated dataset already in {data_dir}")
    else:
        log(f"simulating {n} particles (D={D}, SNR {snr:g}, 10% junk) into {data_dir}")
        write_dataset(data_dir, SimConfig(n=n, D=D, apix=192.0 / D, snr=snr, junk=0.1,
                                          seed=seed))
    settings = replace(DEMO_SETTINGS, particles=str(data_dir / "particles.mrcs"),
                       poses=str(data_dir / "poses.pkl"), ctf=str(data_dir / "ctf.pkl"),
                       outdir=str(run_dir), zdim=zdim, num_epochs=epochs)
    trainer = trainer_for(settings, overwrite=overwrite)
    for ev in trainer.run():
        if ev.kind == "start":
            log(f"training on {ev.message}")
        elif ev.kind == "epoch":
            log(f"  epoch {ev.epoch}/{ev.n_epochs}  loss {ev.loss:.5f}  KL {ev.kld:.2f}  "
                f"{ev.images_per_s:.0f} images/s")
    truth = Truth.load(data_dir)
    z, _ = load_z(run_dir / f"z.{epochs}.pkl")
    scores = latent_scores(z, truth)
    run = load_run(run_dir, epochs)
    dec = run.volume_decoder()
    scores.fsc_auc, scores.fsc_own_vs_other = map_scores(dec, z, truth)
    maps_dir.mkdir(parents=True, exist_ok=True)
    apix = float(trainer.data.apix or 1.0)
    for path, c, s in truth.maps:
        write_mrc(maps_dir / path.name, dec(latent_for(z, truth, c, s)), apix)
    summary = {"particles": n, "D": D, "epochs": epochs, "seconds": time.perf_counter() - t0,
               **{k: round(v, 4) for k, v in scores.as_dict().items() if v is not None}}
    with atomic_write(outdir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    log(f"conformation R^2 {scores.r2:.3f} | state accuracy {scores.state_acc:.3f} | "
        f"junk AUC {scores.junk_auc:.3f} | map FSC-AUC {scores.fsc_auc:.3f}")
    log(f"maps at the true conformations: {maps_dir}; run: {run_dir}")
    if explore:
        summary["analysis"] = str(explore_run(run_dir, epochs, log))
        with atomic_write(outdir / "summary.json", "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def explore_run(run_dir: Path, epoch: int, log=print) -> Path:
    """The headless explorer: PCA, UMAP, k-means, PC and graph traversals with their maps and
    figures in ``run_dir/analyze.<epoch>`` (replaced when it exists)."""
    from .analysis.analyze import run_analysis

    log(f"exploring the latent space (PCA, UMAP, k-means, traversals) of epoch {epoch}")
    out = None
    for ev in run_analysis(run_dir, epoch, overwrite=True, precision="auto"):
        if ev.kind == "warning":
            log(f"  note: {ev.message}")
        elif ev.kind == "done":
            out = Path(ev.extra["outdir"])
    log(f"figures and map series: {out}; open the run in napari with "
        f"`napari {run_dir / 'config.yaml'}` (or File > IO Utilities > Open cryoDRGN run...)")
    return out

