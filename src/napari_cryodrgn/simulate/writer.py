"""Write a simulated dataset to a folder in cryoDRGN/RELION formats, plus the ground truth.

Layout of ``outdir``:

- ``particles.mrcs``: (N, D, D) float32 stack with voxel size, streamed through a memory map
  (bounded memory) into a temporary file that is then renamed;
- ``poses.pkl`` (rot, trans), ``ctf.pkl`` (N x 9 float32), ``particles.star`` (RELION 3.1);
- ``labels.pkl``: one pickled dict of numpy arrays ``conf`` (float64, NaN for junk), ``state``
  (int64, -1 for junk) and ``is_junk`` (bool); read it with ``io.safepickle.load_pickle``;
- ``truth/state{s}_conf{i:02d}.mrc``: true maps on a grid of ``n_truth_conf`` conformations
  (``linspace(0, 1)``) x 2 states, and ``truth/grid.txt`` (file, conf, state per line);
- ``truth/fixed.mrc``: only when ``fixed_conf`` and ``fixed_state`` are both set, the map every
  non-junk particle shows (the ground truth of a homogeneous set);
- ``sim_config.yaml``: every parameter, the phantom, noise level and file names.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import mrcfile
import numpy as np
import yaml

from napari_cryodrgn import __version__
from napari_cryodrgn.io.atomic import atomic_write, check_writable_dir
from napari_cryodrgn.io.ctf import save_ctf
from napari_cryodrgn.io.mrc import write_mrc
from napari_cryodrgn.io.poses import save_poses
from napari_cryodrgn.io.safepickle import save_pickle
from napari_cryodrgn.io.star import write_particles_star

from .config import SimConfig
from .generate import Progress, generate_into, sample_metadata
from .phantom import Phantom, default_phantom

STACK_NAME = "particles.mrcs"


def _write_stack(path: Path, cfg: SimConfig, meta: dict, progress: Progress | None) -> dict:
    """Generate the image stack straight into a memory-mapped MRC, then rename it onto ``path``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with mrcfile.new_mmap(tmp, shape=(cfg.n, cfg.D, cfg.D), mrc_mode=2,
                              overwrite=True) as mrc:
            mrc.set_image_stack()
            mrc.voxel_size = cfg.apix
            h = mrc.header
            h.nlabl = 0  # mrcfile's default label holds a timestamp; keep files reproducible
            h.label[0] = b""
            stats = generate_into(mrc.data, cfg, meta, progress)
            h.dmin, h.dmax, h.dmean, h.rms = (stats[k] for k in ("min", "max", "mean", "rms"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return stats


def _write_truth(folder: Path, cfg: SimConfig, phantom: Phantom) -> Path:
    folder.mkdir(exist_ok=True)
    lines = ["# file conf state"]
    for s in (0, 1):
        for i, c in enumerate(np.linspace(0.0, 1.0, cfg.n_truth_conf)):
            name = f"state{s}_conf{i:02d}.mrc"
            write_mrc(folder / name, phantom.render_volume(float(c), s, cfg.D), cfg.apix)
            lines.append(f"{name} {c:.6f} {s}")
    grid = folder / "grid.txt"
    with atomic_write(grid, "w") as f:
        f.write("\n".join(lines) + "\n")
    return grid


def _describe(cfg: SimConfig, phantom: Phantom, meta: dict, stats: dict, files: dict) -> dict:
    return {
        "version": __version__,
        "config": cfg.to_dict(),
        "phantom": {
            "n_body_blobs": len(phantom.body),
            "n_arm_blobs": len(phantom.arm),
            "n_subunit_blobs": len(phantom.subunit),
            "sigma_frac": float(phantom.sigma_frac),
            "sigma_px": float(phantom.sigma(cfg.D)),
            "theta_max_deg": float(phantom.theta_max_deg),
            "hinge_frac": [float(v) for v in phantom.hinge],
            "hinge_axis": [float(v) for v in phantom.hinge_axis],
        },
        "result": {
            "n_junk": int(meta["is_junk"].sum()),
            "n_state1": int((meta["state"] == 1).sum()),
            "signal_var": float(stats["signal_var"]),
            "noise_std": float(stats["noise_std"]),
        },
        "conventions": {
            "images": "stored = -(CTF * projection) + noise; cryoDRGN's default inversion "
                      "gives CTF * projection",
            "trans": "fraction of the box; a particle shifted s pixels has trans = -s / D",
            "labels": "labels.pkl: dict of conf (NaN for junk), state (-1 for junk), is_junk",
        },
        "files": {k: str(v) for k, v in files.items()},
    }


def write_dataset(outdir, cfg: SimConfig, progress: Progress | None = None) -> dict[str, Path]:
    """Simulate ``cfg`` into folder ``outdir``; return the written paths by role.

    Keys: particles, poses, ctf, star, labels, truth_dir, truth_grid, config (and truth_map
    for a fixed conformation and state).
    ``progress(done, total)`` follows :func:`generate_into` (total = 2 N).
    """
    cfg.validate()
    out = check_writable_dir(outdir)
    phantom = default_phantom()
    meta = sample_metadata(cfg)
    paths = {"particles": out / STACK_NAME}
    stats = _write_stack(paths["particles"], cfg, meta, progress)
    paths["poses"] = out / "poses.pkl"
    save_poses(paths["poses"], meta["rot"], meta["trans"])
    paths["ctf"] = out / "ctf.pkl"
    save_ctf(paths["ctf"], meta["ctf"])
    paths["star"] = out / "particles.star"
    write_particles_star(paths["star"], STACK_NAME, meta["rot"], meta["trans"], meta["ctf"],
                         cfg.apix, cfg.D, relion31=True)
    paths["labels"] = out / "labels.pkl"
    save_pickle(paths["labels"], {k: meta[k] for k in ("conf", "state", "is_junk")})
    paths["truth_dir"] = out / "truth"
    paths["truth_grid"] = _write_truth(paths["truth_dir"], cfg, phantom)
    if cfg.fixed_conf is not None and cfg.fixed_state is not None:
        paths["truth_map"] = paths["truth_dir"] / "fixed.mrc"
        write_mrc(paths["truth_map"],
                  phantom.render_volume(float(cfg.fixed_conf), int(cfg.fixed_state), cfg.D),
                  cfg.apix)
    paths["config"] = out / "sim_config.yaml"
    rel = {k: v.relative_to(out) for k, v in paths.items()}
    with atomic_write(paths["config"], "w") as f:
        yaml.safe_dump(_describe(cfg, phantom, meta, stats, rel), f, sort_keys=False)
    return paths
