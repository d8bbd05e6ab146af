"""Small helpers for io tests: tiny stacks, poses and CTF tables."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cryodrgn.geometry.rotations import random_rotations
from napari_cryodrgn.io.mrc import write_mrc


@pytest.fixture
def make_stack(tmp_path):
    """make_stack(name, n, D=8, seed=0, apix=1.5) -> (path, data) writes a float32 .mrcs."""

    def _make(name="stack.mrcs", n=5, D=8, seed=0, apix=1.5, ny=None):
        data = np.random.default_rng(seed).normal(size=(n, ny or D, D)).astype(np.float32)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mrc(path, data, apix)
        return path, data

    return _make


@pytest.fixture
def poses_ctf():
    """A fixed set of 7 poses (rot, trans in box fractions) and CTF rows, box 64, apix 1.7."""
    rng = np.random.default_rng(3)
    n, D, apix = 7, 64, 1.7
    rot = random_rotations(n, rng)
    trans = rng.uniform(-0.1, 0.1, (n, 2))
    ctf = np.zeros((n, 9))
    ctf[:, 0], ctf[:, 1] = D, apix
    ctf[:, 2] = rng.uniform(10000, 20000, n)
    ctf[:, 3] = ctf[:, 2] - rng.uniform(0, 500, n)
    ctf[:, 4] = rng.uniform(-90, 90, n)
    ctf[:, 5], ctf[:, 6], ctf[:, 7] = 300.0, 2.7, 0.1
    ctf[:, 8] = rng.uniform(0, 30, n)
    return rot, trans, ctf, D, apix
