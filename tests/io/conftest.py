"""Small helpers for io tests: tiny stacks, poses and CTF tables."""

from __future__ import annotations

import numpy as np
import pytest

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
def poses_ctf(poses_ctf_box64):
    """Copies of the shared 7 poses and CTF rows (box 64, apix 1.7): tests may modify them."""
    rot, trans, ctf, D, apix = poses_ctf_box64
    return rot.copy(), trans.copy(), ctf.copy(), D, apix
