import numpy as np
import pytest

from napari_cryodrgn.analysis.fsc import fsc, fsc_auc, resolution_at
from napari_cryodrgn.analysis.metrics import conformation_r2, junk_auc, state_accuracy


def _blob(D, c, s=2.0):
    ax = np.arange(D) - D // 2
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    return np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2) / (2 * s * s))


def test_fsc_identical_and_independent():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(32, 32, 32))
    f, c = fsc(v, v)
    assert f[1] == pytest.approx(1 / 32) and np.allclose(c, 1)
    assert fsc_auc(v, v) == pytest.approx(14 / 32)  # shells 1 .. 15 on the k/D axis
    w = rng.normal(size=(32, 32, 32))
    assert abs(fsc_auc(v, w)) < 0.05
    assert fsc_auc(v, -v) == pytest.approx(-14 / 32)  # an inverted map scores badly


def test_map_score_reports_crossings_and_real_space_correlation():
    from napari_cryodrgn.analysis.fsc import map_score

    a = _blob(32, (0, 0, 0), 3.0)
    same = map_score(a, a)
    assert same.fsc_auc == pytest.approx(14 / 32) and same.rsc == pytest.approx(1.0)
    assert same.f05 is None and same.f0143 is None  # never drops: beyond Nyquist
    rng = np.random.default_rng(2)
    noisy = a + 0.02 * rng.normal(size=a.shape)
    s = map_score(noisy, a)
    assert 0 < s.f05 < s.f0143 < 0.5 and 0.9 < s.rsc < 1.0
    inv = map_score(-a, a)
    assert inv.rsc == pytest.approx(-1.0) and inv.fsc_auc < 0 and inv.f05 == pytest.approx(
        1 / 32)


def test_fsc_prefers_the_closer_map():
    a, b, far = _blob(32, (0, 0, 0)), _blob(32, (0.5, 0, 0)), _blob(32, (6, 0, 0))
    assert fsc_auc(a, b) > fsc_auc(a, far)
    assert resolution_at(a, a, 2.0) == pytest.approx(4.0)


def test_latent_metrics_on_synthetic_latents():
    rng = np.random.default_rng(1)
    n = 600
    conf = rng.uniform(size=n)
    state = rng.integers(0, 2, n)
    junk = rng.uniform(size=n) < 0.1
    z = np.stack([conf + 0.05 * rng.normal(size=n), state + 0.1 * rng.normal(size=n),
                  junk * 3.0 + 0.1 * rng.normal(size=n)], 1)
    conf = np.where(junk, np.nan, conf)
    state = np.where(junk, -1, state)
    assert conformation_r2(z, conf) > 0.9
    assert state_accuracy(z, state) > 0.95
    assert junk_auc(z, junk) > 0.98
    noise = rng.normal(size=(n, 3))
    assert conformation_r2(noise, conf) < 0.1
    assert state_accuracy(noise, state) < 0.65


def test_dfsc_scores_the_moving_part_only():
    from napari_cryodrgn.analysis.fsc import dfsc_auc

    body = _blob(32, (0, 0, 0), 4.0)
    refs = [body + _blob(32, (x, 4, 0), 1.5) for x in (-3, 0, 3)]
    assert dfsc_auc(refs, refs) == pytest.approx(14 / 32)
    mean = np.mean(refs, 0)
    assert dfsc_auc([mean] * 3, refs) == pytest.approx(0.0, abs=1e-6)  # no heterogeneity
    assert dfsc_auc(refs[::-1], refs) < 0  # the motion backwards scores badly
    with pytest.raises(ValueError, match="two or more"):
        dfsc_auc([mean], [mean])
