"""The dataset a training folder (ours or cryoDRGN's) was trained on, from its config.yaml.

Paths are resolved as recorded (relative ones against the training folder); ``ind`` is the
run's index into the original stack (cryoDRGN's ``--ind``: a pickle, or an integer N meaning
the first N particles), so row ``r`` of the run's ``z`` is original particle ``ind[r]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import InputError
from .index import load_index

METADATA_SUFFIXES = (".star", ".cs")


def _path(workdir: Path, p) -> Path | None:
    if not p or not isinstance(p, str):
        return None
    path = Path(p)
    return path if path.is_absolute() else workdir / path


@dataclass
class RunDataset:
    """Files and particle numbering of one training folder's dataset."""

    workdir: Path
    config: dict

    @classmethod
    def open(cls, workdir) -> RunDataset:
        from ..training.config import load_config

        workdir = Path(workdir)
        return cls(workdir, load_config(workdir))

    @property
    def args(self) -> dict:
        return self.config.get("dataset_args") or {}

    def file(self, key: str) -> Path | None:
        """The recorded ``dataset_args[key]`` path (resolved), or None when not recorded."""
        return _path(self.workdir, self.args.get(key))

    @property
    def particles(self) -> Path:
        p = self.file("particles")
        if p is None:
            raise InputError(f"{self.workdir}/config.yaml does not record the particles file")
        return p

    @property
    def datadir(self) -> Path | None:
        return self.file("datadir")

    @property
    def apix(self) -> float | None:
        v = self.args.get("apix")
        return float(v) if v else None

    @cached_property
    def n_original(self) -> int:
        """Particles in the original stack (the particles file the run's index refers to)."""
        from .particles import open_particles

        return open_particles(self.particles, datadir=self.datadir).n

    @cached_property
    def ind(self) -> np.ndarray | None:
        """The run's index into the original stack (int64), or None when it used them all."""
        raw = self.args.get("ind")
        if raw is None:
            return None
        if isinstance(raw, int) and not isinstance(raw, bool):
            return np.arange(raw, dtype=np.int64)
        p = _path(self.workdir, raw)
        if p is None:
            raise InputError(f"{self.workdir}/config.yaml: dataset_args.ind {raw!r} is neither "
                             "an index file nor a particle count")
        return load_index(p, None)

    def particle_ind(self, n: int | None = None) -> np.ndarray:
        """Original-stack index of each of the run's particles (``n`` when it used them all)."""
        if self.ind is not None:
            return self.ind
        return np.arange(self.n_original if n is None else n, dtype=np.int64)

    def metadata_source(self, suffix: str) -> Path | None:
        """A recorded file of type ``suffix`` ('.star' or '.cs') that lists every original
        particle: the particles file, else the poses or CTF file the run was given."""
        for key in ("particles", "poses_source", "ctf_source", "poses", "ctf"):
            p = self.file(key)
            if p is not None and p.suffix.lower() == suffix and p.is_file():
                return p
        return None
