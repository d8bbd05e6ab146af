"""Writing a simulated dataset: files, voxel sizes, round trips, reproducible bytes."""

import dataclasses

import mrcfile
import numpy as np
import pytest
import yaml

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.poses import load_poses
from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.simulate import SimConfig, render_volume, simulate_particles, write_dataset

CFG = SimConfig(n=40, D=16, apix=2.5, junk=0.1, seed=11, n_truth_conf=3)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    calls = []
    paths = write_dataset(out, CFG, progress=lambda d, t: calls.append((d, t)))
    return out, paths, calls


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_all_files_exist(written):
    out, paths, calls = written
    expected = {"particles", "poses", "ctf", "star", "labels", "truth_dir", "truth_grid",
                "config"}
    assert set(paths) == expected
    assert all(p.exists() for p in paths.values())
    names = set(_files(out))
    assert {"particles.mrcs", "poses.pkl", "ctf.pkl", "particles.star", "labels.pkl",
            "sim_config.yaml", "truth/grid.txt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert calls[-1] == (80, 80)


def test_stack_matches_the_in_memory_simulation(written):
    out, paths, _ = written
    with mrcfile.open(paths["particles"], permissive=False) as mrc:
        assert mrc.data.shape == (40, 16, 16) and mrc.data.dtype == np.float32
        assert mrc.voxel_size.x == pytest.approx(2.5) and mrc.voxel_size.y == pytest.approx(2.5)
        assert mrc.is_image_stack()
        data = np.array(mrc.data)
        assert mrc.header.rms == pytest.approx(data.std(), rel=1e-4)
        assert mrc.header.dmin == data.min() and mrc.header.dmax == data.max()
    sim = simulate_particles(CFG)
    np.testing.assert_array_equal(data, sim.images)
    rot, trans = load_poses(paths["poses"])
    np.testing.assert_array_equal(rot, sim.rot)
    np.testing.assert_array_equal(trans, sim.trans)
    np.testing.assert_array_equal(load_ctf(paths["ctf"]), sim.ctf)
    labels = load_pickle(paths["labels"])
    assert set(labels) == {"conf", "state", "is_junk"}
    np.testing.assert_array_equal(labels["conf"], sim.conf)
    np.testing.assert_array_equal(labels["state"], sim.state)
    np.testing.assert_array_equal(labels["is_junk"], sim.is_junk)
    assert labels["is_junk"].sum() == 4


def test_star_file_carries_the_same_poses_and_ctf(written):
    _, paths, _ = written
    sim = simulate_particles(CFG)
    rot, trans = load_poses(paths["star"])
    np.testing.assert_allclose(rot, sim.rot, atol=1e-4)
    np.testing.assert_allclose(trans, sim.trans, atol=1e-5)
    ctf = load_ctf(paths["star"])
    np.testing.assert_allclose(ctf, sim.ctf, rtol=1e-5)
    text = paths["star"].read_text()
    assert "data_optics" in text and "000001@particles.mrcs" in text
    src = open_particles(paths["star"])
    assert (src.n, src.D) == (40, 16) and src.apix == pytest.approx(2.5)
    np.testing.assert_array_equal(src.images(np.arange(40)), sim.images)


def test_truth_maps_and_grid(written):
    _, paths, _ = written
    lines = paths["truth_grid"].read_text().splitlines()
    assert lines[0].startswith("#")
    rows = [ln.split() for ln in lines[1:]]
    assert len(rows) == 2 * 3
    for name, conf, state in rows:
        with mrcfile.open(paths["truth_dir"] / name) as mrc:
            assert mrc.voxel_size.x == pytest.approx(2.5)
            assert name == f"state{state}_conf{int(round(float(conf) * 2)):02d}.mrc"
            np.testing.assert_allclose(mrc.data, render_volume(float(conf), int(state), 16),
                                       rtol=1e-5, atol=1e-6)


def test_config_yaml_records_everything(written):
    _, paths, _ = written
    doc = yaml.safe_load(paths["config"].read_text())
    assert doc["config"] == CFG.to_dict()
    assert doc["config"]["max_shift_px"] == pytest.approx(3 * 16 / 64)
    assert doc["phantom"]["theta_max_deg"] == pytest.approx(75.0)
    assert doc["result"]["n_junk"] == 4 and doc["result"]["noise_std"] > 0
    assert doc["files"]["particles"] == "particles.mrcs"


def test_same_seed_same_bytes_other_seed_other_bytes(written, tmp_path):
    out, _, _ = written
    write_dataset(tmp_path / "again", CFG)
    assert _files(tmp_path / "again") == _files(out)
    write_dataset(tmp_path / "other", dataclasses.replace(CFG, seed=12))
    other = _files(tmp_path / "other")
    assert other["particles.mrcs"] != _files(out)["particles.mrcs"]


def test_bad_config_and_bad_folder(tmp_path):
    with pytest.raises(InputError):
        write_dataset(tmp_path / "bad", dataclasses.replace(CFG, D=15))
    assert not (tmp_path / "bad").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError):
        write_dataset(blocker, CFG)
