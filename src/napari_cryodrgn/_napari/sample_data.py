"""File > Open Sample: a simulated heterogeneous dataset and a toy model trained by our CLI."""

from __future__ import annotations

import os
from pathlib import Path

from ..io.mrc import memmap_mrc, read_mrc, read_mrc_header
from ..simulate.dataset import SimConfig, write_dataset
from .layers import map_layer, stack_layer

#: The simulated sample: 2000 particles, D=32 (6 A pixels), SNR 3, 10% junk; deterministic.
SAMPLE_SIM = SimConfig(n=2000, D=32, apix=6.0, snr=3.0, junk=0.1, seed=4)
TOY_MODEL = Path(__file__).resolve().parents[1] / "sample_data" / "toy_model"


def cache_dir() -> Path:
    """Per-user cache folder (XDG_CACHE_HOME or ~/.cache)/napari-cryodrgn."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-cryodrgn"


def sample_dataset(cfg: SimConfig = SAMPLE_SIM) -> dict:
    """Write the simulated sample once into the cache (reused afterwards); its file paths."""
    out = cache_dir() / f"sample_n{cfg.n}_D{cfg.D}_snr{cfg.snr:g}_seed{cfg.seed}"
    files = {k: out / v for k, v in (("particles", "particles.mrcs"), ("poses", "poses.pkl"),
                                     ("ctf", "ctf.pkl"), ("labels", "labels.pkl"))}
    if not all(p.exists() for p in files.values()):
        write_dataset(out, cfg)
    return {"folder": out, **files}


def simulated_particles() -> list:
    """The particle stack (2D images) and the true map of state 0 at conformation 0."""
    ds = sample_dataset()
    header = read_mrc_header(ds["particles"])
    meta = {k: str(v) for k, v in ds.items()}
    layers = [stack_layer(memmap_mrc(header), header.apix or SAMPLE_SIM.apix,
                          "simulated particles", meta)]
    truth, apix = read_mrc(ds["folder"] / "truth" / "state0_conf00.mrc")
    layer = map_layer(truth, apix, "true map (state 0, conformation 0)")
    layer[1]["visible"] = False
    return layers + [layer]


def trained_toy_model() -> list:
    """The shipped toy model's typical map, with the Explore dock opened on the run."""
    from .reader import read_run

    return read_run(TOY_MODEL)
