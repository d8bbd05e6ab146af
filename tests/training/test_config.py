"""config.yaml: .star/.cs poses and CTF recorded as cryoDRGN pickles (cryoDRGN's analyze and
filter unpickle what dataset_args names)."""

import pickle

import numpy as np

from napari_cryodrgn.geometry.rotations import random_rotations
from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.poses import load_poses
from napari_cryodrgn.io.star import write_particles_star
from napari_cryodrgn.training.config import load_config, save_config


def _tables(n=6, D=32, apix=2.0):
    rng = np.random.default_rng(1)
    rot = random_rotations(n, rng)
    trans = rng.uniform(-0.05, 0.05, (n, 2))
    ctf = np.zeros((n, 9))
    ctf[:, 0], ctf[:, 1], ctf[:, 2], ctf[:, 3] = D, apix, 15000.0, 14800.0
    ctf[:, 4:8] = 30.0, 300.0, 2.7, 0.1
    return rot, trans, ctf, D, apix


def _save(tmp_path, ds):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    save_config(run / "config.yaml", ds, {"D": 33, "extent": 0.5, "ignore_DC": True},
                {"zdim": 2}, seed=0)
    return run, load_config(run)["dataset_args"]


def test_star_and_cs_metadata_become_pickles(tmp_path):
    rot, trans, ctf, D, apix = _tables()
    star, cs = tmp_path / "p.star", tmp_path / "p.cs"
    write_particles_star(star, "stack.mrcs", rot, trans, ctf, apix, D)
    write_particles_cs(cs, "stack.mrcs", rot, trans, ctf, apix, D)
    run, ds = _save(tmp_path, {"particles": str(star), "poses": str(star), "ctf": str(cs),
                               "apix": apix})
    assert ds["particles"] == str(star)
    assert ds["poses_source"] == str(star) and ds["ctf_source"] == str(cs)
    assert ds["poses"] == str(run / "poses.pkl") and ds["ctf"] == str(run / "ctf.pkl")
    with open(ds["poses"], "rb") as f:
        r, t = pickle.load(f)
    with open(ds["ctf"], "rb") as f:
        c = pickle.load(f)
    np.testing.assert_array_equal(r, load_poses(star)[0])
    np.testing.assert_array_equal(t, load_poses(star)[1])
    np.testing.assert_array_equal(c, load_ctf(cs))
    assert c.dtype == np.float32 and c.shape == (6, 9)


def test_pickles_are_kept_and_bad_files_left_alone(tmp_path):
    bad = tmp_path / "notes.star"
    bad.write_text("data_\n\nloop_\n_rlnImageName #1\n1@stack.mrcs\n")  # no angles, no CTF
    run, ds = _save(tmp_path, {"poses": str(tmp_path / "poses.pkl"), "ctf": str(bad)})
    assert ds["poses"] == str(tmp_path / "poses.pkl") and "poses_source" not in ds
    assert ds["ctf"] == str(bad) and "ctf_source" not in ds
    assert not (run / "ctf.pkl").exists()
