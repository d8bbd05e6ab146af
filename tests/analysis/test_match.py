"""Reference maps against the latent space: resampling, correlation, the match CLI."""

import shutil

import numpy as np
import pytest

from napari_cryodrgn.analysis.fsc import real_space_correlation as correlation
from napari_cryodrgn.analysis.match import (
    load_reference,
    lowpass,
    resample,
    sphere_mask,
)
from napari_cryodrgn.cli import main
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.mrc import write_mrc
from napari_cryodrgn.session import Session
from napari_cryodrgn.simulate.phantom import render_volume


def test_a_finer_larger_reference_lands_on_the_runs_grid():
    coarse = render_volume(0.3, 1, 32)  # 32 voxels over the box
    fine = render_volume(0.3, 1, 64)  # the same box in 64 voxels: half the voxel size
    padded = np.pad(fine, 16)  # a larger box (96 voxels), same centre
    for ref in (fine, padded):
        on_grid = resample(ref, 3.0, 32, 6.0)
        assert on_grid.shape == (32, 32, 32)
        assert correlation(on_grid, coarse, sphere_mask(32)) > 0.97
    other = render_volume(0.3, 0, 32)  # without the subunit
    assert correlation(resample(fine, 3.0, 32, 6.0), coarse, sphere_mask(32)) > \
        correlation(other, coarse, sphere_mask(32))
    same = resample(coarse, 6.0, 32, 6.0)
    np.testing.assert_array_equal(same, coarse)


def test_correlation_is_signed_and_lowpass_removes_detail():
    v = render_volume(0.5, 1, 32)
    m = sphere_mask(32)
    assert correlation(v, v, m) == pytest.approx(1.0)
    assert correlation(v, -v, m) == pytest.approx(-1.0)  # an inverted map must score badly
    noise = np.random.default_rng(0).normal(size=v.shape).astype(np.float32)
    smooth = lowpass(noise, 6.0, 24.0)
    spec = np.abs(np.fft.fftn(smooth))
    f = np.fft.fftfreq(32, d=6.0)
    r = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    assert spec[r > 1 / 24 + 1 / (32 * 6)].max() < 1e-4 * spec.max()


def test_a_reference_without_a_voxel_size_is_refused(tmp_path):
    write_mrc(tmp_path / "ref.mrc", render_volume(0.5, 1, 32), apix=None)
    with pytest.raises(InputError, match="--ref-apix"):
        load_reference(tmp_path / "ref.mrc", 16, 12.0)
    assert load_reference(tmp_path / "ref.mrc", 16, 12.0, ref_apix=6.0).volume.shape == (16,) * 3
    with pytest.raises(InputError, match="no such"):
        load_reference(tmp_path / "missing.mrc", 16, 12.0)


def test_match_cli_finds_the_centre_a_reference_was_made_from(train_tiny, tmp_path, capsys):
    # a private copy with the encoder's z: after one epoch the tiny run's maps are so alike
    # (r = 0.996 between centres) that which centre is best is decided by the k-means split
    run = shutil.copytree(train_tiny("match_run", zdim=2, epochs=1), tmp_path / "run")
    shutil.copyfile(run / "z.1.encoder.pkl", run / "z.1.pkl")
    s = Session.open(run, autosave=False)
    res = s.kmeans_result(5)
    c = 3
    own = s.decode(res.centers[c])
    # the centre's map on a finer grid in a larger box, as a map from elsewhere would come
    fine = resample(own, s.apix, 2 * s.D + 8, s.apix / 2)
    write_mrc(tmp_path / "state.mrc", fine, apix=s.apix / 2)
    write_mrc(tmp_path / "noapix.mrc", fine, apix=None)
    out = tmp_path / "m"
    assert main(["match", str(run), str(tmp_path / "state.mrc"), "-k", "5", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"state: best cluster {c} ")
    table = np.genfromtxt(out / "match.csv", delimiter=",", names=True)
    assert list(table["cluster"]) == list(range(5))
    assert int(np.argmax(table["corr_state"])) == c and table["corr_state"][c] > 0.95
    per = np.loadtxt(out / "match_state.txt")
    assert per.shape == (s.n,)
    np.testing.assert_allclose(per, table["corr_state"][res.labels], atol=1e-4)
    assert s.add_colouring_file(out / "match_state.txt") == "file: match_state.txt"
    # nothing is overwritten; a missing voxel size is an error with its remedy
    before = (out / "match.csv").read_bytes()
    assert main(["match", str(run), str(tmp_path / "state.mrc"), "-k", "5", "-o",
                 str(out)]) != 0
    assert "exists" in capsys.readouterr().err and (out / "match.csv").read_bytes() == before
    assert main(["match", str(run), str(tmp_path / "noapix.mrc"), "-o",
                 str(tmp_path / "n")]) != 0
    assert "--ref-apix" in capsys.readouterr().err
