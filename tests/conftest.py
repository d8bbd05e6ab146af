"""Shared fixtures: tiny simulated datasets written once per session."""

import numpy as np
import pytest

from napari_cryodrgn.geometry.rotations import random_rotations
from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """120 particles, D=16: paths dict from :func:`write_dataset`."""
    out = tmp_path_factory.mktemp("tiny_sim")
    return write_dataset(out, SimConfig(n=120, D=16, snr=1.0, junk=0.1, seed=3))


@pytest.fixture
def tiny_net():
    """A network small enough for tests that train (fp32: bitwise reproducible)."""
    return dict(qdim=32, qlayers=1, pdim=32, players=1, batch_size=16, precision="fp32")


@pytest.fixture(scope="session")
def train_tiny(tiny_dataset, tmp_path_factory):
    """``train_tiny(name, zdim=2, seed=0, epochs=2)``: a run on the tiny dataset with the tiny
    network in fp32, trained once per session and name; returns its folder."""
    from napari_cryodrgn.training.api import make_trainer

    made: dict = {}

    def train(name: str, zdim: int = 2, seed: int = 0, epochs: int = 2):
        if name not in made:
            out = tmp_path_factory.mktemp(name) / "run"
            d = tiny_dataset
            for _ in make_trainer(d["particles"], d["poses"], out, zdim, ctf=d["ctf"],
                                  num_epochs=epochs, seed=seed, qdim=32, qlayers=1, pdim=32,
                                  players=1, batch_size=16, precision="fp32").run():
                pass
            made[name] = out
        return made[name]

    return train


@pytest.fixture(scope="session")
def poses_ctf_box64():
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
