"""In-memory simulation: conventions (sign, CTF, shifts), noise level, labels, determinism."""

import dataclasses

import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.geometry.ctf import compute_ctf
from napari_cryodrgn.simulate import SimConfig, simulate_particles
from napari_cryodrgn.simulate.generate import BLOCK
from napari_cryodrgn.simulate.phantom import default_phantom
from napari_cryodrgn.simulate.project import project_blobs

D = 32


@pytest.fixture(scope="module")
def sim():
    return simulate_particles(SimConfig(n=80, D=D, apix=4.0, junk=0.25, seed=3), keep_clean=True)


def _expected_clean(data, idx, conf=None, state=None):
    """Re-render particles independently: projection at the stored pose, then the stored CTF."""
    ph = default_phantom()
    conf = data.conf[idx] if conf is None else conf
    state = data.state[idx] if state is None else state
    pos, w = ph.batch_blobs(conf, state, D)
    shift = -data.trans[idx].astype(np.float64) * D  # t = -s / D
    proj = project_blobs(pos, w, data.rot[idx].astype(np.float64), shift, D, ph.sigma(D))
    ax = (np.arange(D) - D // 2) / D / data.ctf[idx, 1][:, None]  # 1/Angstrom, per image
    fx, fy = ax[:, None, :], ax[:, :, None]
    freqs = np.stack(np.broadcast_arrays(fx, fy), -1)  # (B, D, D, 2): x is the column
    p = data.ctf[idx].astype(np.float64)[:, :, None, None]
    ctf = compute_ctf(freqs, p[:, 2], p[:, 3], p[:, 4], p[:, 5], p[:, 6], p[:, 7], p[:, 8])
    f = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(proj, axes=(-2, -1))), axes=(-2, -1))
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(f * ctf, axes=(-2, -1))),
                           axes=(-2, -1)).real


def test_shapes_and_dtypes(sim):
    n = 80
    assert sim.images.shape == (n, D, D) and sim.images.dtype == np.float32
    assert sim.rot.shape == (n, 3, 3) and sim.rot.dtype == np.float32
    assert sim.trans.shape == (n, 2) and sim.trans.dtype == np.float32
    assert sim.ctf.shape == (n, 9) and sim.ctf.dtype == np.float32
    assert sim.conf.shape == sim.state.shape == sim.is_junk.shape == (n,)
    np.testing.assert_allclose(sim.rot @ sim.rot.transpose(0, 2, 1), np.eye(3)[None] + 0 * sim.rot,
                               atol=1e-5)
    assert np.allclose(np.linalg.det(sim.rot), 1, atol=1e-5)


def test_ctf_table_follows_the_spec(sim):
    c = sim.ctf
    assert (c[:, 0] == D).all() and (c[:, 1] == 4.0).all()
    assert c[:, 2].min() >= 10000 and c[:, 2].max() <= 30000
    assert (c[:, 2] - c[:, 3]).min() >= 0 and (c[:, 2] - c[:, 3]).max() <= 500
    assert c[:, 4].min() >= 0 and c[:, 4].max() <= 180
    np.testing.assert_array_equal(c[:, 5:], np.tile([300.0, 2.7, 0.1, 0.0], (80, 1)).astype(
        np.float32))


def test_shifts_stay_within_three_pixels_at_d64_scaled(sim):
    shift_px = -sim.trans * D
    assert np.abs(shift_px).max() <= 3.0 * D / 64 + 1e-5
    assert np.abs(shift_px).max() > 0.5 * 3.0 * D / 64


def test_clean_images_are_ctf_times_projection_at_the_stored_pose(sim):
    """Checks the pose and translation conventions (t = -s / D) and the CTF application."""
    idx = np.flatnonzero(~sim.is_junk)
    expected = _expected_clean(sim, idx)
    scale = np.abs(expected).max()
    assert np.abs(sim.clean[idx] - expected).max() < 1e-4 * scale
    # the opposite shift sign would not match
    flipped = dataclasses.replace(sim, trans=-sim.trans)
    wrong = _expected_clean(flipped, idx)
    assert np.abs(sim.clean[idx] - wrong).max() > 0.05 * scale


def test_stored_images_are_sign_inverted_with_noise_at_the_requested_snr(sim):
    noise = sim.images + sim.clean  # stored = -clean + noise
    measured_snr = sim.clean.var(dtype=np.float64) / noise.var(dtype=np.float64)
    assert measured_snr == pytest.approx(0.1, rel=0.1)
    assert abs(noise.mean()) < 0.05 * noise.std()
    assert sim.noise_std == pytest.approx(np.sqrt(sim.signal_var / 0.1))
    assert np.corrcoef(sim.images.ravel(), sim.clean.ravel())[0, 1] < -0.2


def test_high_snr_stores_minus_the_clean_image():
    data = simulate_particles(SimConfig(n=8, D=D, snr=1e8, junk=0.0, seed=1), keep_clean=True)
    expected = _expected_clean(data, np.arange(8))
    np.testing.assert_allclose(data.images, -expected, atol=1e-3 * np.abs(expected).max())


def test_junk_fraction_is_exact_and_labels_mark_it(sim):
    assert sim.is_junk.sum() == 20
    assert np.isnan(sim.conf[sim.is_junk]).all() and (sim.state[sim.is_junk] == -1).all()
    good = ~sim.is_junk
    assert np.isfinite(sim.conf[good]).all() and (sim.conf[good] >= 0).all()
    assert (sim.conf[good] <= 1).all() and set(sim.state[good].tolist()) == {0, 1}
    # junk images carry signal but not the protein's
    junk = np.flatnonzero(sim.is_junk)
    assert (np.abs(sim.clean[junk]).max(axis=(1, 2)) > 0).all()
    as_protein = _expected_clean(sim, junk, conf=np.full(len(junk), 0.5),
                                 state=np.ones(len(junk), int))
    resid = np.linalg.norm(sim.clean[junk] - as_protein, axis=(1, 2))
    assert (resid > 0.3 * np.linalg.norm(as_protein, axis=(1, 2))).all()


def test_labels_match_the_images(sim):
    idx = np.flatnonzero(~sim.is_junk)
    clean = sim.clean[idx]
    norm = np.linalg.norm(clean, axis=(1, 2))
    other_state = _expected_clean(sim, idx, state=1 - sim.state[idx])
    other_conf = _expected_clean(sim, idx, conf=(sim.conf[idx] + 0.5) % 1.0)
    assert (np.linalg.norm(clean - other_state, axis=(1, 2)) > 0.05 * norm).all()
    assert (np.linalg.norm(clean - other_conf, axis=(1, 2)) > 0.05 * norm).all()
    # the subunit adds density: summed over views, state 1 images carry more mass. The CTF at
    # zero frequency is -w, so the clean (non-inverted) image sums are -w times the mass.
    sums = clean.sum(axis=(1, 2))
    s = sim.state[idx]
    assert sums[s == 1].mean() < sums[s == 0].mean()


def test_same_seed_same_data_different_seed_different_data():
    cfg = SimConfig(n=BLOCK + 20, D=16, seed=7)  # two blocks
    a, b = simulate_particles(cfg), simulate_particles(cfg)
    for f in ("images", "rot", "trans", "ctf", "state", "is_junk"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(a.conf, b.conf)  # NaN positions equal too
    c = simulate_particles(dataclasses.replace(cfg, seed=8))
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.rot, c.rot) and not np.array_equal(a.ctf, c.ctf)


def test_progress_reports_monotonically_to_the_total():
    calls = []
    simulate_particles(SimConfig(n=BLOCK + 5, D=8, seed=0), progress=lambda d, t: calls.append(
        (d, t)))
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1] == (2 * (BLOCK + 5), 2 * (BLOCK + 5))


@pytest.mark.parametrize(
    "changes",
    [dict(D=63), dict(D=0), dict(D=6), dict(snr=0), dict(snr=-1.0), dict(snr=float("nan")),
     dict(junk=1.0), dict(junk=-0.1), dict(n=0), dict(n=2.5), dict(apix=0.0),
     dict(p_state1=1.5), dict(max_shift_px=-1.0), dict(df_min=0.0)],
)
def test_bad_config_raises_input_error(changes):
    with pytest.raises(InputError):
        simulate_particles(SimConfig(**{"n": 4, "D": 16, **changes}))
