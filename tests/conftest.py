"""Shared fixtures: tiny simulated datasets written once per session."""

import pytest

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
