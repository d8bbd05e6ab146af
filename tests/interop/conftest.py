"""Session fixtures for the interop group: cryoDRGN's runs, our runs, and what each tool made
of the other's. Every cryoDRGN configuration is trained once per session, and the cryoDRGN
commands of each direction run in one process (see ``_cryodrgn.run_jobs``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from _cryodrgn import MAP_RECORDS, Cryodrgn, JobResults, find_cryodrgn, job, run_jobs, z_points
from _specs import (
    ANALYZE_ARGS,
    ANALYZE_OURS,
    ANALYZE_THEIRS,
    CHILD_RUN,
    FILTER_OURS,
    FILTER_PRESELECT,
    N_SELECT,
    OUR_RUNS,
    THEIR_RUNS,
)

from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.index import save_index
from napari_cryodrgn.training.api import train_on_selection


def pytest_terminal_summary(terminalreporter):
    if not MAP_RECORDS:
        return
    tr = terminalreporter
    tr.write_sep("-", "interop: maps decoded by napari-cryodrgn vs cryoDRGN")
    groups: dict[str, list] = {}
    for r in MAP_RECORDS:
        groups.setdefault(r["group"], []).append(r)
    for g, rs in groups.items():
        tr.write_line(f"{g:<48} {len(rs):3d} maps  min corr {min(r['corr'] for r in rs):.8f}  "
                      f"max |diff|/std {max(r['diff_std'] for r in rs):.2e}")


# -- the data -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cryodrgn() -> Cryodrgn:
    return find_cryodrgn()


@pytest.fixture(scope="session")
def interop_data(tiny_dataset, tmp_path_factory):
    """The session's tiny simulated dataset plus an index pickle written by us."""
    folder = tmp_path_factory.mktemp("interop_data")
    n = 120
    ind = np.sort(np.random.default_rng(7).choice(n, N_SELECT, replace=False))
    save_index(folder / "ours_ind.pkl", ind)
    ctf = load_ctf(tiny_dataset["ctf"])
    assert ctf.shape == (n, 9) and (ctf[:, 0] == 16).all()
    return {**tiny_dataset, "ind": folder / "ours_ind.pkl", "ind_array": ind, "n": n, "D": 16,
            "apix": float(ctf[0, 1])}


@dataclass
class Run:
    """One training folder and the maps cryoDRGN decoded from it."""

    name: str
    spec: dict
    workdir: Path
    epochs: int
    zfile: Path
    z: np.ndarray
    vols: dict = field(default_factory=dict)  # epoch -> folder of cryoDRGN's vol_NNN.mrc

    @property
    def zdim(self) -> int:
        return self.spec["zdim"]


def _net_flags(s: dict) -> list:
    flags = ["--zdim", s["zdim"], "--enc-dim", s["qdim"], "--enc-layers", s["qlayers"],
             "--dec-dim", s["pdim"], "--dec-layers", s["players"], "--encode-mode",
             s["encode_mode"], "--pe-type", s["pe_type"], "--domain", s["domain"],
             "--activation", s.get("activation", "relu")]
    if s.get("pe_dim"):
        flags += ["--pe-dim", s["pe_dim"]]
    if s.get("enc_mask") is not None:
        flags += ["--enc-mask", s["enc_mask"]]
    return flags + list(s.get("extra", []))


@dataclass
class Side:
    """Runs of one tool and the outcome of the cryoDRGN process that worked on them."""

    runs: dict[str, Run]
    jobs: JobResults
    root: Path


def _eval_jobs(run: Run, prefix: str) -> list:
    """cryoDRGN eval_vol at the run's latent points, for each epoch."""
    out = []
    for ep in range(1, run.epochs + 1):
        folder = run.workdir.parent / f"{run.name}_cd_vols_e{ep}"
        run.vols[ep] = folder
        out.append(job(f"{prefix}eval_vol:{run.name}:e{ep}",
                       ["eval_vol", run.workdir / f"weights.{ep}.pkl", "-c",
                        run.workdir / "config.yaml", "--zfile", run.zfile, "-o", folder]))
    return out


def _new_run(root: Path, name: str, spec: dict, seed: int) -> Run:
    workdir = root / name
    z = z_points(spec["zdim"], seed)
    zfile = root / f"{name}_z.txt"
    np.savetxt(zfile, z)
    return Run(name, spec, workdir, spec.get("epochs", 1), zfile, z)


@pytest.fixture(scope="session")
def their_runs(cryodrgn, interop_data, tmp_path_factory) -> Side:
    """cryoDRGN ``train_vae`` on every THEIR_RUNS configuration, ``eval_vol`` at fixed latent
    points for every epoch, and ``analyze`` on one run: one cryoDRGN process."""
    root = tmp_path_factory.mktemp("their_runs")
    d = interop_data
    runs, train, evals = {}, [], []
    for i, (name, spec) in enumerate(THEIR_RUNS.items()):
        run = _new_run(root, name, spec, seed=100 + i)
        runs[name] = run
        argv = ["train_vae", d["particles"], "--poses", d["poses"], "--ctf", d["ctf"], "-o",
                run.workdir, "-n", run.epochs, "-b", 16, "--seed", i, "--checkpoint", 1,
                "--no-analysis", *_net_flags(spec)]
        if spec.get("ind"):
            argv += ["--ind", d["ind"]]
        train.append(job(f"train_vae:{name}", argv))
        evals += _eval_jobs(run, "")
    an = runs[ANALYZE_THEIRS]
    analyze = [job(f"analyze:{an.name}", ["analyze", an.workdir, an.epochs, "--skip-umap",
                                          *ANALYZE_ARGS])]
    return Side(runs, run_jobs(cryodrgn, train + evals + analyze, root / "cryodrgn"), root)


def _train_ours(run: Run, d: dict) -> None:
    from napari_cryodrgn.cli import main

    if run.spec.get("inputs") == "star":  # particles, poses and CTF from the simulator's .star
        inputs = [d["star"], "--poses", d["star"], "--ctf", d["star"]]
    else:
        inputs = [d["particles"], "--poses", d["poses"], "--ctf", d["ctf"]]
    argv = ["train", *[str(a) for a in inputs],
            "-o", str(run.workdir), "-n", str(run.epochs), "-b", "16", "--seed", "0",
            "--device", "cpu", "--precision", "fp32", "-q",
            *[str(a) for a in _net_flags(run.spec)]]
    if run.spec.get("ind"):
        argv += ["--ind", str(d["ind"])]
    rc = main(argv)
    assert rc == 0, f"napari-cryodrgn train {' '.join(argv)} exited with {rc}"


@pytest.fixture(scope="session")
def our_runs(cryodrgn, interop_data, tmp_path_factory) -> Side:
    """Our CLI trains every OUR_RUNS configuration, and ``train_on_selection`` a child of the
    .star run on half its particles; then one cryoDRGN process runs ``eval_vol`` on each
    OUR_RUNS run, ``analyze`` on two and on the child, and ``filter -f`` on one."""
    root = tmp_path_factory.mktemp("our_runs")
    d = interop_data
    runs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, (name, spec) in enumerate(OUR_RUNS.items()):
            run = _new_run(root, name, spec, seed=200 + i)
            _train_ours(run, d)
            runs[name] = run
        # a run trained on a selection of the .star run's particles (lineage in config.yaml)
        save_index(root / "child_selection.pkl", d["ind_array"][::2])
        for _ in train_on_selection(runs[FILTER_OURS].workdir, root / "child_selection.pkl",
                                    root / CHILD_RUN, num_epochs=1, device="cpu",
                                    precision="fp32").run():
            pass
    finally:
        torch.set_num_threads(threads)
    jobs = []
    for run in runs.values():
        jobs += _eval_jobs(run, "")
    for name, flags in ANALYZE_OURS.items():
        an = runs[name]
        jobs.append(job(f"analyze:{name}", ["analyze", an.workdir, an.epochs, *ANALYZE_ARGS,
                                            *flags]))
    jobs.append(job(f"analyze:{CHILD_RUN}", ["analyze", root / CHILD_RUN, 1, *ANALYZE_ARGS,
                                              "--skip-umap"]))
    an = runs[FILTER_OURS]
    pre = root / "preselect.pkl"
    save_index(pre, FILTER_PRESELECT)
    (root / "selection").mkdir()
    jobs.append(job(f"filter:{an.name}", ["filter", an.workdir, "--epoch", an.epochs, "-k", 4,
                                          "-f", "--plot-inds", pre, "--sel-dir",
                                          root / "selection"]))
    return Side(runs, run_jobs(cryodrgn, jobs, root / "cryodrgn"), root)
