"""Homogeneous reconstruction (analysis.backproject) against the simulator's ground truth.

The data: 1000 particles of one conformation and state (SimConfig fixed_conf=0, fixed_state=0,
no junk) at D=32, SNR 1, with CTF and shifts; the truth is the phantom rendered at that point.
Measured (seed 5): FSC(map, truth) >= 0.99 up to k = D/4 and 0.80 at k = 13, 0.50 at k = 15;
with rotations transposed 0.48 at k = D/4 and 0.15 at k = 12; with the poses of other particles
-0.06 at k = D/4; with the hand flipped 0.14 at k = D/4.
"""

import numpy as np
import pytest

from napari_cryodrgn.analysis.backproject import Backprojector, backproject
from napari_cryodrgn.analysis.fsc import fsc, threshold_crossing
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.geometry.rotations import random_rotations
from napari_cryodrgn.geometry.transforms import ht2_center, ht3_center
from napari_cryodrgn.geometry.window import window_mask
from napari_cryodrgn.simulate import SimConfig, simulate_particles
from napari_cryodrgn.simulate.phantom import render_volume

D, N, APIX = 32, 1000, 6.0


@pytest.fixture(scope="module")
def homo():
    cfg = SimConfig(n=N, D=D, apix=APIX, snr=1.0, junk=0.0, seed=5, fixed_conf=0.0,
                    fixed_state=0)
    return simulate_particles(cfg), render_volume(0.0, 0, D)


def _bp(sim, n=N, rot=None, trans="same", **kw):
    rot = sim.rot if rot is None else rot
    trans = sim.trans if isinstance(trans, str) else trans
    return backproject(lambda rows: sim.images[rows], n, D, rot, trans, sim.ctf, apix=APIX, **kw)


@pytest.fixture(scope="module")
def rec(homo):
    return _bp(homo[0])


def test_homogeneous_map_matches_the_truth(homo, rec):
    """FSC(map, true map) >= 0.9 at every shell k = 1 .. D/4 (half Nyquist) and >= 0.5 at every
    shell up to k = 13 (0.8 Nyquist)."""
    _, truth = homo
    _, c = fsc(rec.volume, truth)
    assert c[1 : D // 4 + 1].min() >= 0.9, np.round(c, 3)
    assert c[1:14].min() >= 0.5, np.round(c, 3)
    assert rec.n == N and rec.volume.shape == (D, D, D) and rec.volume.dtype == np.float32


def test_wrong_pose_conventions_fail(homo):
    """Poses of other particles and a flipped hand fail at half Nyquist; transposed rotations
    keep some low-resolution likeness (0.48 at k = D/4) but fail by k = 3D/8."""
    sim, truth = homo
    perm = np.random.default_rng(0).permutation(N)
    _, shuffled = fsc(_bp(sim, rot=sim.rot[perm], trans=sim.trans[perm],
                          half_maps=False).volume, truth)
    assert shuffled[D // 4] < 0.2, np.round(shuffled, 3)
    _, transposed = fsc(_bp(sim, rot=sim.rot.transpose(0, 2, 1), half_maps=False).volume, truth)
    assert transposed[D // 4] < 0.6 and transposed[3 * D // 8] < 0.35, np.round(transposed, 3)
    assert transposed[D // 4 :].mean() < 0.4
    flip = np.diag([1.0, 1.0, -1.0]).astype(np.float32)
    _, mirrored = fsc(_bp(sim, rot=flip @ sim.rot @ flip, half_maps=False).volume, truth)
    assert mirrored[D // 4] < 0.3, np.round(mirrored, 3)
    _, inverted = fsc(_bp(sim, n=200, invert=False, half_maps=False).volume, truth)
    assert inverted[1 : D // 4 + 1].max() < -0.5  # contrast the wrong way round


def test_half_map_resolution_matches_the_truth(homo, rec):
    """The half-map FSC's 0.143 crossing is within 0.75 shell of where FSC(full map, truth)
    crosses 0.5 (the gold-standard relation; measured: 0.15 shell at N=200, 0.01 at N=1000)."""
    _, truth = homo
    for r in (rec, _bp(homo[0], n=200)):
        f, c = fsc(r.volume, truth)
        k_truth = threshold_crossing(f, c, 0.5) * D
        k_half = threshold_crossing(r.freq, r.fsc, 0.143) * D
        assert abs(k_half - k_truth) <= 0.75, (r.n, k_half, k_truth)
        assert r.resolution[0.143] == pytest.approx(APIX * D / k_half)
        assert r.resolution[0.5] > r.resolution[0.143]


def test_half_maps_hold_the_even_and_the_odd_particles(homo, rec):
    sim, _ = homo
    n = 200
    r = _bp(sim, n=n)
    assert r.n_half == (n // 2, n // 2)
    even = np.arange(0, n, 2)
    odd = np.arange(1, n, 2)
    for idx, half in ((even, r.half_a), (odd, r.half_b)):
        alone = backproject(lambda rows, idx=idx: sim.images[idx[rows]], len(idx), D,
                            sim.rot[idx], sim.trans[idx], sim.ctf[idx], apix=APIX,
                            half_maps=False).volume
        np.testing.assert_allclose(half, alone, atol=1e-5 * np.abs(alone).max())
    assert not np.allclose(r.half_a, r.half_b, atol=0.1 * np.abs(r.half_a).max())


def test_half_maps_of_pure_noise_are_uncorrelated():
    """No particle feeds both halves: pure-noise images give a half-map FSC near 0."""
    rng = np.random.default_rng(1)
    n, d = 400, 32
    noise = rng.standard_normal((n, d, d)).astype(np.float32)
    r = backproject(lambda rows: noise[rows], n, d, random_rotations(n, rng), None, None,
                    apix=1.0)
    shells = r.fsc[d // 8 :]
    assert np.abs(shells).max() < 0.25 and abs(shells.mean()) < 0.05, np.round(r.fsc, 3)


def test_streams_in_batches_and_reports_progress(homo):
    sim, _ = homo
    asked, calls = [], []

    def images(rows):
        asked.append(len(rows))
        return sim.images[rows]

    r = backproject(images, 70, D, sim.rot, sim.trans, sim.ctf, apix=APIX, batch_size=32,
                    progress=lambda done, total: calls.append((done, total)))
    assert asked == [32, 32, 6] and calls == [(32, 70), (64, 70), (70, 70)]
    one = _bp(sim, n=70, batch_size=70)
    np.testing.assert_allclose(r.volume, one.volume, atol=1e-5 * np.abs(one.volume).max())


def test_central_slice_of_one_image():
    """One image at the identity pose without CTF: every lattice point lands on a voxel with
    weight 1 and empty voxels weigh 1, so the map's central Hartley plane (z = 0) is the
    windowed, sign-inverted image's Hartley transform within radius D/2 (DC left out) and the
    other planes are empty."""
    rng = np.random.default_rng(2)
    d = 16
    img = rng.standard_normal((1, d, d)).astype(np.float32)
    bp = Backprojector(d)
    bp.add(img, np.eye(3, dtype=np.float32)[None])
    V = ht3_center(bp.volume((0, 1), reg_weight=1.0).astype(np.float64))
    expected = ht2_center(-img[0].astype(np.float64) * window_mask(d))
    ax = np.arange(d) - d // 2
    inside = (ax[:, None] ** 2 + ax[None, :] ** 2) <= (d / 2) ** 2
    inside[d // 2, d // 2] = False
    plane = V[d // 2]
    np.testing.assert_allclose(plane[inside], expected[inside], rtol=1e-4, atol=1e-3)
    assert np.abs(plane[~inside]).max() < 1e-3
    assert np.abs(np.delete(V, d // 2, 0)).max() < 1e-3


def test_threshold_crossing_interpolates():
    f = np.arange(8) / 16
    c = np.array([1.0, 0.9, 0.8, 0.6, 0.4, 0.1, 0.05, 0.0])
    assert threshold_crossing(f, c, 0.5) == pytest.approx(3.5 / 16)
    assert threshold_crossing(f, c, 0.143) == pytest.approx((4 + 0.257 / 0.3) / 16)
    assert threshold_crossing(f, np.ones(8), 0.143) is None


def test_bad_arguments(homo):
    sim, _ = homo
    with pytest.raises(InputError, match="half-maps need at least 2"):
        _bp(sim, n=1)
    with pytest.raises(InputError, match="reg-weight"):
        _bp(sim, n=10, reg_weight=-1.0)
    with pytest.raises(InputError, match="ctf-alg"):
        _bp(sim, n=10, ctf_alg="wiener")
