"""config.yaml of a training folder, in cryoDRGN 4.x's layout."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
from pathlib import Path

import yaml

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_write

log = logging.getLogger(__name__)


def save_config(path: str | os.PathLike, dataset_args: dict, lattice_args: dict,
                model_args: dict, seed: int, extra: dict | None = None) -> None:
    """Write config.yaml atomically (.star/.cs poses and CTF recorded as pickles: see
    :func:`pickled_metadata`)."""
    D_img = int(lattice_args["D"]) - 1 if lattice_args.get("D") else None
    cfg = {
        "dataset_args": pickled_metadata(Path(path).parent, dataset_args, D_img),
        "lattice_args": lattice_args,
        "model_args": model_args,
        "seed": int(seed),
        "version": f"napari-cryodrgn {__version__}",
        "time": _dt.datetime.now(),
        "cmd": list(sys.argv),
    }
    if extra:
        cfg.update(extra)
    with atomic_write(path, "w") as f:
        yaml.safe_dump(_plain(cfg), f, sort_keys=False)


def pickled_metadata(outdir: Path, dataset_args: dict, D_img: int | None) -> dict:
    """``dataset_args`` with .star/.cs ``poses`` and ``ctf`` swapped for cryoDRGN pickles.

    cryoDRGN's ``analyze`` and ``filter`` unpickle ``dataset_args['poses']`` and ``['ctf']``
    (its own runs always hold pickles there), so a run trained from a .star or .cs file would
    stop them. The file's whole table (every particle: ``ind`` refers to them) is written to
    ``outdir/poses.pkl`` / ``outdir/ctf.pkl`` and recorded instead; the source file stays under
    ``poses_source`` / ``ctf_source``. A file that cannot be converted keeps its path.
    """
    from ..io.ctf import load_ctf, save_ctf
    from ..io.poses import load_poses, save_poses

    ds = dict(dataset_args)
    apix = ds.get("apix")
    for key in ("poses", "ctf"):
        src = ds.get(key)
        if not src or Path(src).suffix.lower() == ".pkl":
            continue
        out = Path(outdir) / f"{key}.pkl"
        try:
            if key == "poses":
                save_poses(out, *load_poses(src, D=D_img, apix=apix))
            else:
                try:
                    table = load_ctf(src)
                except InputError:  # no box or pixel size in the file: the run's
                    table = load_ctf(src, D=D_img, apix=apix)
                save_ctf(out, table)
        except (InputError, OSError) as e:
            log.warning("%s: not converted to a cryoDRGN pickle (%s); cryoDRGN's analyze and "
                        "filter will not read this run's %s", src, e, key)
            continue
        ds[f"{key}_source"] = src
        ds[key] = str(out.resolve())
    return ds


def load_config(path: str | os.PathLike) -> dict:
    """Read a config.yaml (ours or cryoDRGN's) with a clear error for missing or broken files."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.yaml"
    if not p.exists():
        raise InputError(f"{p}: no config.yaml here; is this a training folder?")
    try:
        with open(p) as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise InputError(f"{p}: config.yaml is not valid YAML ({e})") from None
    for key in ("dataset_args", "lattice_args", "model_args"):
        if not isinstance(cfg, dict) or key not in cfg:
            raise InputError(f"{p}: config.yaml has no '{key}' section")
    return cfg


def _plain(x):
    """Convert numpy scalars, tuples and paths to YAML-safe builtins."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, os.PathLike):
        return str(x)
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return x.item()
    return x
