"""Homogeneous sets: SimConfig.fixed_conf / fixed_state change the labels and images only."""

import numpy as np
import pytest
import yaml

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.mrc import read_mrc
from napari_cryodrgn.simulate import SimConfig, simulate_particles, write_dataset
from napari_cryodrgn.simulate.phantom import render_volume

BASE = dict(n=40, D=16, apix=4.0, junk=0.0, seed=4)


def test_fixed_conformation_keeps_every_other_draw():
    free = simulate_particles(SimConfig(**BASE))
    fixed = simulate_particles(SimConfig(**BASE, fixed_conf=0.3, fixed_state=1))
    for name in ("rot", "trans", "ctf", "is_junk"):
        np.testing.assert_array_equal(getattr(free, name), getattr(fixed, name))
    assert (fixed.conf == 0.3).all() and (fixed.state == 1).all()
    assert np.ptp(free.conf) > 0.5 and not np.array_equal(free.images, fixed.images)
    with_junk = simulate_particles(SimConfig(**{**BASE, "junk": 0.25}, fixed_conf=0.3))
    assert np.isnan(with_junk.conf[with_junk.is_junk]).all()
    assert (with_junk.conf[~with_junk.is_junk] == 0.3).all()
    assert set(np.unique(with_junk.state[~with_junk.is_junk])) <= {0, 1}  # state not fixed


def test_existing_configs_describe_themselves_as_before():
    assert "fixed_conf" not in SimConfig(**BASE).to_dict()
    d = SimConfig(**BASE, fixed_conf=0.5, fixed_state=0).to_dict()
    assert d["fixed_conf"] == 0.5 and d["fixed_state"] == 0
    assert SimConfig(**d).to_dict() == d


def test_writer_adds_the_true_map(tmp_path):
    paths = write_dataset(tmp_path / "homo", SimConfig(**BASE, fixed_conf=0.25, fixed_state=1))
    vol, apix = read_mrc(paths["truth_map"])
    np.testing.assert_allclose(vol, render_volume(0.25, 1, 16), rtol=1e-6, atol=1e-6)
    assert apix == pytest.approx(4.0)
    doc = yaml.safe_load(paths["config"].read_text())
    assert doc["files"]["truth_map"] == "truth/fixed.mrc"
    plain = write_dataset(tmp_path / "plain", SimConfig(**BASE))
    assert "truth_map" not in plain and not (plain["truth_dir"] / "fixed.mrc").exists()


@pytest.mark.parametrize("bad", [dict(fixed_conf=1.5), dict(fixed_conf=True),
                                 dict(fixed_state=2), dict(fixed_state=1.0)])
def test_bad_fixed_values(bad):
    with pytest.raises(InputError, match="fixed_"):
        SimConfig(**BASE, **bad)
