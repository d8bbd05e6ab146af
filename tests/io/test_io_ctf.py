import pickle

import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.ctf import load_ctf, rescale_ctf, save_ctf
from napari_cryodrgn.io.star import write_particles_star


def test_pickle_round_trip(tmp_path, poses_ctf):
    ctf = poses_ctf[2]
    save_ctf(tmp_path / "ctf.pkl", ctf)
    with open(tmp_path / "ctf.pkl", "rb") as f:  # cryoDRGN's layout: one float32 N x 9 array
        raw = pickle.load(f)
    assert raw.dtype == np.float32 and raw.shape == (7, 9)
    out = load_ctf(tmp_path / "ctf.pkl", n=7, D=64, apix=1.7)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ctf, rtol=1e-6)
    np.testing.assert_allclose(load_ctf(tmp_path / "ctf.pkl", ind=[6, 0]), ctf[[6, 0]], rtol=1e-6)


@pytest.mark.parametrize("relion31", [True, False])
def test_star_round_trip(tmp_path, poses_ctf, relion31):
    rot, trans, ctf, D, apix = poses_ctf
    path = tmp_path / "p.star"
    write_particles_star(path, "s.mrcs", rot, trans, ctf, apix, D, relion31=relion31)
    np.testing.assert_allclose(load_ctf(path, n=7, D=D, apix=apix), ctf, rtol=1e-6, atol=1e-5)


def test_star_31_optics_groups_hand_made(tmp_path):
    path = tmp_path / "g.star"
    path.write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n_rlnImageSize #3\n"
        "_rlnVoltage #4\n_rlnSphericalAberration #5\n_rlnAmplitudeContrast #6\n"
        "1 1.0 128 300 2.7 0.1\n2 1.0 128 200 2.0 0.07\n\n"
        "data_particles\n\nloop_\n_rlnDefocusU #1\n_rlnDefocusV #2\n_rlnDefocusAngle #3\n"
        "_rlnOpticsGroup #4\n10000 9000 45 2\n12000 11000 -30 1\n"
    )
    out = load_ctf(path)
    np.testing.assert_allclose(out, [[128, 1, 10000, 9000, 45, 200, 2.0, 0.07, 0],
                                     [128, 1, 12000, 11000, -30, 300, 2.7, 0.1, 0]], rtol=1e-6)


def test_star_30_detector_pixel_size_and_missing_fields(tmp_path):
    path = tmp_path / "r30.star"
    path.write_text(
        "data_\n\nloop_\n_rlnDefocusU #1\n_rlnDefocusV #2\n_rlnDefocusAngle #3\n_rlnVoltage #4\n"
        "_rlnSphericalAberration #5\n_rlnAmplitudeContrast #6\n_rlnDetectorPixelSize #7\n"
        "_rlnMagnification #8\n_rlnPhaseShift #9\n10000 9000 45 300 2.7 0.1 5.0 50000 12\n"
    )
    with pytest.raises(InputError, match="r30.star has no _rlnImageSize"):
        load_ctf(path)
    np.testing.assert_allclose(load_ctf(path, D=64),
                               [[64, 1.0, 10000, 9000, 45, 300, 2.7, 0.1, 12]], rtol=1e-6)
    path = tmp_path / "nocs.star"
    path.write_text("data_\n\nloop_\n_rlnDefocusU #1\n_rlnDefocusV #2\n_rlnDefocusAngle #3\n"
                    "_rlnVoltage #4\n10000 9000 45 300\n")
    with pytest.raises(InputError, match="nocs.star has no pixel size"):
        load_ctf(path, D=64)
    with pytest.raises(InputError, match="nocs.star has no _rlnSphericalAberration"):
        load_ctf(path, D=64, apix=1.0)


def test_cs_round_trip_and_hand_made(tmp_path, poses_ctf):
    rot, trans, ctf, D, apix = poses_ctf
    path = tmp_path / "p.cs"
    write_particles_cs(path, "s.mrcs", rot, trans, ctf, apix, D)
    np.testing.assert_allclose(load_ctf(path, n=7, D=D, apix=apix), ctf, rtol=1e-5, atol=1e-4)
    arr = np.zeros(1, dtype=[(f, "<f4") for f in (
        "ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm",
        "ctf/amp_contrast", "ctf/phase_shift_rad", "blob/psize_A")] + [("blob/shape", "<u4", (2,))])
    arr[0] = (15000, 14000, np.pi / 4, 300, 2.7, 0.1, np.pi / 2, 0.8, (256, 256))
    with open(tmp_path / "hand.cs", "wb") as f:
        np.save(f, arr)
    np.testing.assert_allclose(load_ctf(tmp_path / "hand.cs"),
                               [[256, 0.8, 15000, 14000, 45, 300, 2.7, 0.1, 90]], rtol=1e-6)


def test_count_mismatch(tmp_path, poses_ctf):
    save_ctf(tmp_path / "ctf.pkl", poses_ctf[2])
    with pytest.raises(InputError, match="ctf.pkl holds CTF parameters for 7 particles"):
        load_ctf(tmp_path / "ctf.pkl", n=8)


def test_box_mismatch_explains_downsampling(tmp_path, poses_ctf):
    save_ctf(tmp_path / "ctf.pkl", poses_ctf[2])
    with pytest.raises(InputError, match=r"ctf.pkl: CTF was made for box 64 but particles are 32"
                                         r".*Apix\*D_orig/D_img"):
        load_ctf(tmp_path / "ctf.pkl", D=32)
    out = load_ctf(tmp_path / "ctf.pkl", D=32, apix=3.4, rescale=True)
    np.testing.assert_allclose(out[:, :2], [[32, 3.4]] * 7, rtol=1e-6)
    np.testing.assert_allclose(rescale_ctf(poses_ctf[2], 32)[:, 2:], poses_ctf[2][:, 2:],
                               rtol=1e-6)


def test_apix_mismatch(tmp_path, poses_ctf):
    save_ctf(tmp_path / "ctf.pkl", poses_ctf[2])
    load_ctf(tmp_path / "ctf.pkl", apix=1.71)  # within 1%
    with pytest.raises(InputError, match="ctf.pkl: CTF pixel size 1.7 A .* 1.8 A"):
        load_ctf(tmp_path / "ctf.pkl", apix=1.8)


def test_nan_and_non_positive(tmp_path, poses_ctf):
    ctf = poses_ctf[2].copy()
    ctf[3, 2] = np.nan
    save_ctf(tmp_path / "nan.pkl", ctf)
    with pytest.raises(InputError, match="nan.pkl: CTF parameters of particle 3 contain NaN"):
        load_ctf(tmp_path / "nan.pkl")
    ctf = poses_ctf[2].copy()
    ctf[5, 5] = 0
    save_ctf(tmp_path / "volt.pkl", ctf)
    with pytest.raises(InputError, match="volt.pkl: particle 5 has a non-positive voltage"):
        load_ctf(tmp_path / "volt.pkl")
    ctf = poses_ctf[2].copy()
    ctf[1, 1] = -1
    save_ctf(tmp_path / "px.pkl", ctf)
    with pytest.raises(InputError, match="px.pkl: particle 1 has a non-positive pixel size"):
        load_ctf(tmp_path / "px.pkl")


def test_wrong_shape(tmp_path):
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump(np.zeros((3, 8)), f)
    with pytest.raises(InputError, match="w.pkl is not a cryoDRGN CTF file"):
        load_ctf(tmp_path / "w.pkl")
    with pytest.raises(InputError, match="gone.pkl does not exist"):
        load_ctf(tmp_path / "gone.pkl")


def test_nan_phase_shift_from_cryodrgn_explained(tmp_path, poses_ctf):
    # cryodrgn parse_ctf_star leaves column 8 NaN when the star lacks _rlnPhaseShift
    ctf = poses_ctf[2].copy()
    ctf[:, 8] = np.nan
    save_ctf(tmp_path / "ps.pkl", ctf)
    with pytest.raises(InputError, match="ps.pkl: .*particle 0.*--ps 0"):
        load_ctf(tmp_path / "ps.pkl")
