import pickle

import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.geometry.rotations import random_rotations
from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.poses import load_poses, save_poses
from napari_cryodrgn.io.star import write_particles_star

RZ_MINUS_90 = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])


def write_star(path, header, rows):
    path.write_text(header + "\n".join(rows) + "\n")


def test_pickle_round_trip_and_rot_only(tmp_path):
    rot, trans = random_rotations(5, 0), np.full((5, 2), 0.05)
    save_poses(tmp_path / "pose.pkl", rot, trans)
    r, t = load_poses(tmp_path / "pose.pkl", n=5)
    assert r.dtype == np.float32 and t.dtype == np.float32
    np.testing.assert_allclose(r, rot, atol=1e-6)
    np.testing.assert_allclose(t, trans, atol=1e-7)
    save_poses(tmp_path / "rot.pkl", rot, None)
    r, t = load_poses(tmp_path / "rot.pkl")
    assert t is None and r.shape == (5, 3, 3)
    r, t = load_poses(tmp_path / "pose.pkl", ind=np.array([4, 1]))
    np.testing.assert_allclose(r, rot[[4, 1]], atol=1e-6)
    # the layout cryoDRGN writes: a plain pickle of float64 arrays
    with open(tmp_path / "cd.pkl", "wb") as f:
        pickle.dump((rot, trans), f)
    np.testing.assert_allclose(load_poses(tmp_path / "cd.pkl")[0], rot, atol=1e-6)


def test_relion30_star_hand_made(tmp_path):
    # rot=90 is Rz(-90) in cryoDRGN's convention; origins in pixels become fractions, same sign
    path = tmp_path / "p30.star"
    write_star(path, "data_\n\nloop_\n_rlnAngleRot #1\n_rlnAngleTilt #2\n_rlnAnglePsi #3\n"
               "_rlnOriginX #4\n_rlnOriginY #5\n_rlnImageSize #6\n",
               ["90 0 0 3.0 -2.0 64", "0 90 0 0 0 64"])
    rot, trans = load_poses(path)
    np.testing.assert_allclose(rot[0], RZ_MINUS_90, atol=1e-6)
    np.testing.assert_allclose(rot[1], [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(trans, [[3 / 64, -2 / 64], [0, 0]], atol=1e-7)


def test_relion31_star_angstrom_origins_per_optics_group(tmp_path):
    path = tmp_path / "p31.star"
    header = ("data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n"
              "_rlnImageSize #3\n1 2.0 100\n2 0.5 40\n\n"
              "data_particles\n\nloop_\n_rlnAngleRot #1\n_rlnAngleTilt #2\n_rlnAnglePsi #3\n"
              "_rlnOriginXAngst #4\n_rlnOriginYAngst #5\n_rlnOpticsGroup #6\n")
    write_star(path, header, ["0 0 90 6.0 -4.0 1", "0 0 0 1.0 2.0 2"])
    rot, trans = load_poses(path, D=999)  # the star's own box wins: fractions of its box
    np.testing.assert_allclose(rot[0], RZ_MINUS_90, atol=1e-6)
    np.testing.assert_allclose(trans, [[3 / 100, -2 / 100], [2 / 40, 4 / 40]], atol=1e-7)


def test_star_needs_box_and_pixel_size(tmp_path):
    path = tmp_path / "nobox.star"
    write_star(path, "data_\n\nloop_\n_rlnAngleRot #1\n_rlnAngleTilt #2\n_rlnAnglePsi #3\n"
               "_rlnOriginX #4\n_rlnOriginY #5\n", ["0 0 0 2 2"])
    with pytest.raises(InputError, match="nobox.star has no _rlnImageSize"):
        load_poses(path)
    np.testing.assert_allclose(load_poses(path, D=20)[1], [[0.1, 0.1]], atol=1e-7)
    path = tmp_path / "noapix.star"
    write_star(path, "data_\n\nloop_\n_rlnAngleRot #1\n_rlnAngleTilt #2\n_rlnAnglePsi #3\n"
               "_rlnOriginXAngst #4\n_rlnOriginYAngst #5\n", ["0 0 0 2 2"])
    with pytest.raises(InputError, match="noapix.star gives origins in Angstrom"):
        load_poses(path, D=20)
    np.testing.assert_allclose(load_poses(path, D=20, apix=2.0)[1], [[0.05, 0.05]], atol=1e-7)
    path = tmp_path / "noangles.star"
    write_star(path, "data_\n\nloop_\n_rlnImageName #1\n", ["1@a.mrcs"])
    with pytest.raises(InputError, match="noangles.star has no _rlnAngleRot"):
        load_poses(path)


def test_cryosparc_hand_made(tmp_path):
    path = tmp_path / "p.cs"
    arr = np.zeros(2, dtype=[("alignments3D/pose", "<f4", (3,)),
                             ("alignments3D/shift", "<f4", (2,)), ("blob/shape", "<u4", (2,))])
    arr["alignments3D/pose"] = [[0, 0, np.pi / 2], [0, 0, 0]]
    arr["alignments3D/shift"] = [[3, -2], [1, 1]]
    arr["blob/shape"] = 64
    with open(path, "wb") as f:
        np.save(f, arr)
    rot, trans = load_poses(path)
    np.testing.assert_allclose(rot[0], RZ_MINUS_90, atol=1e-6)  # transpose of Rz(+90)
    np.testing.assert_allclose(rot[1], np.eye(3), atol=1e-7)  # zero vector -> identity
    np.testing.assert_allclose(trans, [[3 / 64, -2 / 64], [1 / 64, 1 / 64]], atol=1e-7)


@pytest.mark.parametrize("relion31", [True, False])
def test_star_writer_round_trip(tmp_path, poses_ctf, relion31):
    rot, trans, ctf, D, apix = poses_ctf
    path = tmp_path / "out.star"
    write_particles_star(path, "stack.mrcs", rot, trans, ctf, apix, D, relion31=relion31)
    r, t = load_poses(path, n=len(rot))
    np.testing.assert_allclose(r, rot, atol=1e-5)
    np.testing.assert_allclose(t, trans, atol=1e-6)


def test_cs_writer_round_trip(tmp_path, poses_ctf):
    rot, trans, ctf, D, apix = poses_ctf
    path = tmp_path / "out.cs"
    write_particles_cs(path, "stack.mrcs", rot, trans, ctf, apix, D)
    r, t = load_poses(path, n=len(rot))
    np.testing.assert_allclose(r, rot, atol=1e-5)
    np.testing.assert_allclose(t, trans, atol=1e-6)


def test_count_mismatch(tmp_path):
    save_poses(tmp_path / "pose.pkl", random_rotations(4, 0), np.zeros((4, 2)))
    with pytest.raises(InputError, match="pose.pkl holds poses for 4 particles but the stack"):
        load_poses(tmp_path / "pose.pkl", n=5)


def test_pixel_translations_refused(tmp_path):
    save_poses(tmp_path / "pix.pkl", random_rotations(3, 0), np.array([[5.0, 2], [0, 0], [0, 0]]))
    with pytest.raises(InputError, match="pix.pkl: translations look like pixels"):
        load_poses(tmp_path / "pix.pkl")


def test_not_rotations_refused(tmp_path):
    rot = random_rotations(3, 0)
    rot[1] *= 1.01
    save_poses(tmp_path / "bad.pkl", rot, np.zeros((3, 2)))
    with pytest.raises(InputError, match="bad.pkl: matrix of particle 1 is not a rotation"):
        load_poses(tmp_path / "bad.pkl")


def test_nan_refused(tmp_path):
    rot, trans = random_rotations(3, 0), np.zeros((3, 2))
    trans[2, 0] = np.nan
    save_poses(tmp_path / "nan.pkl", rot, trans)
    with pytest.raises(InputError, match="nan.pkl: translation of particle 2 is NaN"):
        load_poses(tmp_path / "nan.pkl")
    rot[0, 1, 1] = np.inf
    save_poses(tmp_path / "nanrot.pkl", rot, None)
    with pytest.raises(InputError, match="nanrot.pkl: rotation of particle 0 contains NaN"):
        load_poses(tmp_path / "nanrot.pkl")


def test_wrong_content_and_index(tmp_path):
    with pytest.raises(InputError, match="gone.pkl does not exist"):
        load_poses(tmp_path / "gone.pkl")
    with open(tmp_path / "dict.pkl", "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(InputError, match="dict.pkl is not a cryoDRGN pose file"):
        load_poses(tmp_path / "dict.pkl")
    save_poses(tmp_path / "p.pkl", random_rotations(3, 0), np.zeros((3, 2)))
    with pytest.raises(InputError, match="selects particle 7 but .*p.pkl holds poses for 3"):
        load_poses(tmp_path / "p.pkl", ind=np.array([0, 7]))
    (tmp_path / "p.npy").write_bytes(b"")
    with pytest.raises(InputError, match="p.npy: pose files must be"):
        load_poses(tmp_path / "p.npy")
