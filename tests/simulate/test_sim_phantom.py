"""The Gaussian-blob phantom: size, hinge motion, subunit, chirality."""

import numpy as np
import pytest

from napari_cryodrgn.simulate._rotations import axis_angle, random_rotations
from napari_cryodrgn.simulate.junk import junk_blobs
from napari_cryodrgn.simulate.phantom import Phantom, blobs_for, default_phantom, render_volume


def test_parts_and_sizes():
    ph = Phantom.default()
    assert ph is default_phantom()
    assert 200 <= ph.n_blobs <= 500
    assert len(ph.subunit) >= 30 and len(ph.arm) >= 40
    assert 60 <= ph.theta_max_deg <= 90
    assert ph.sigma(64) == pytest.approx(1.6)


@pytest.mark.parametrize("D", [32, 64, 128])
def test_fits_inside_the_particle_radius_at_every_conformation(D):
    pos, w = default_phantom().batch_blobs(np.linspace(0, 1, 11), 1, D)
    assert pos.shape == (11, default_phantom().n_blobs, 3) and w.shape == pos.shape[:2]
    assert np.linalg.norm(pos, axis=-1).max() <= 0.25 * D


def test_state_toggles_the_subunit_and_conf_moves_only_the_arm():
    ph = default_phantom()
    p0, w0 = blobs_for(0.5, 0)
    p1, w1 = blobs_for(0.5, 1)
    assert len(p1) - len(p0) == len(ph.subunit)
    assert w1.sum() > w0.sum()
    a, _ = ph.batch_blobs([0.0], [1], 64)
    b, _ = ph.batch_blobs([1.0], [1], 64)
    moved = np.linalg.norm(a[0] - b[0], axis=1) > 1e-9
    nb = len(ph.body)
    assert not moved[:nb].any() and moved[nb : nb + len(ph.arm)].all()
    assert not moved[nb + len(ph.arm) :].any()
    # large motion: the arm's far end travels more than 8 pixels at D = 64
    assert np.linalg.norm(a[0] - b[0], axis=1).max() > 8


def test_render_volume_changes_with_conf_and_state():
    v = render_volume(0.0, 0, 32)
    assert v.shape == (32, 32, 32) and v.dtype == np.float32
    assert np.abs(render_volume(1.0, 0, 32) - v).max() > 0.3 * v.max()
    assert (render_volume(0.0, 1, 32) - v).min() > -1e-6  # adding the subunit only adds density


def _overlap(p, q, w, sigma):
    """Normalised overlap integral of two Gaussian-blob densities with weights w."""
    def ov(a, b):
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
        return w @ np.exp(-d2 / (4 * sigma**2)) @ w

    return ov(p, q) / np.sqrt(ov(p, p) * ov(q, q))


def _best_overlap(ref, moving, w, sigma):
    """Best overlap over rotations: principal-axis alignments, then a short random refinement."""
    _, ax = np.linalg.eigh((ref.T * w) @ ref)
    _, am = np.linalg.eigh((moving.T * w) @ moving)
    signs = np.array(np.meshgrid([1, -1], [1, -1], [1, -1])).reshape(3, -1).T
    cands = [R for R in (ax @ np.diag(s) @ am.T for s in signs) if np.linalg.det(R) > 0]
    best, R = max(((_overlap(ref, moving @ R.T, w, sigma), R) for R in cands),
                  key=lambda x: x[0])
    rng = np.random.default_rng(0)
    for step in (0.3, 0.1, 0.03):
        for _ in range(30):
            Q = axis_angle(rng.standard_normal(3), [step * rng.uniform()])[0] @ R
            score = _overlap(ref, moving @ Q.T, w, sigma)
            if score > best:
                best, R = score, Q
    return best


def test_phantom_is_chiral():
    """The best superposition of the mirror image is clearly worse than that of a rotated copy.

    For scale: the whole conformational change (conf 0 vs 1) gives an overlap of about 0.89.
    """
    sigma = default_phantom().sigma(32)
    pos, w = blobs_for(0.5, 1, 32)
    centred = pos - np.average(pos, axis=0, weights=w)
    rotated = centred @ random_rotations(1, np.random.default_rng(5))[0].T
    assert _best_overlap(centred, rotated, w, sigma) > 0.999
    assert _best_overlap(centred, centred * [-1, 1, 1], w, sigma) < 0.92


def test_junk_clouds_are_random_and_inside_the_radius():
    pos, w = junk_blobs(np.random.default_rng(0), 5, 350, 64)
    assert pos.shape == (5, 350, 3)
    counts = (w > 0).sum(axis=1)
    assert len(set(counts.tolist())) > 1 and counts.min() >= 40
    assert np.linalg.norm(pos, axis=-1).max() <= 0.245 * 64 + 1e-9
