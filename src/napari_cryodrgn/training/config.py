"""config.yaml of a training folder, in cryoDRGN 4.x's layout."""

from __future__ import annotations

import datetime as _dt
import os
import sys
from pathlib import Path

import yaml

from .. import __version__
from ..errors import InputError
from ..io.atomic import atomic_write


def save_config(path: str | os.PathLike, dataset_args: dict, lattice_args: dict,
                model_args: dict, seed: int, extra: dict | None = None) -> None:
    """Write config.yaml atomically."""
    cfg = {
        "dataset_args": dataset_args,
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
