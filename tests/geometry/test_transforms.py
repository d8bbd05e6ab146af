import numpy as np
import torch

from napari_cryodrgn.geometry.lattice import Lattice, translate_ht
from napari_cryodrgn.geometry.transforms import (
    fft_center,
    ht2_center,
    ht3_center,
    ifft_center,
    iht2_center,
    iht3_center,
    symmetrize_ht,
)


def test_hartley_round_trips_2d_3d():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16, 16))
    np.testing.assert_allclose(iht2_center(ht2_center(x)), x, atol=1e-10)
    v = rng.normal(size=(8, 8, 8))
    np.testing.assert_allclose(iht3_center(ht3_center(v)), v, atol=1e-10)
    xt = torch.tensor(x)
    torch.testing.assert_close(iht2_center(ht2_center(xt)), xt)
    np.testing.assert_allclose(ifft_center(fft_center(x)).real, x, atol=1e-10)


def test_hartley_of_real_image_relates_to_fourier():
    x = np.random.default_rng(1).normal(size=(12, 12))
    f = fft_center(x)
    np.testing.assert_allclose(ht2_center(x), f.real - f.imag, atol=1e-10)


def test_symmetrized_image_is_point_symmetric_for_even_image():
    # an even real image has a real, even FT: the symmetrised HT equals its point reflection
    x = np.zeros((16, 16))
    x[8, 8] = 1.0
    x[6:11, 6:11] += 0.5
    h = symmetrize_ht(ht2_center(x))
    assert h.shape == (17, 17)
    np.testing.assert_allclose(h, h[::-1, ::-1], atol=1e-10)


def test_lattice_reflection_and_half_indices():
    lat = Lattice(9)
    c = lat.coords
    i = torch.arange(81)
    torch.testing.assert_close(c[80 - i, :2], -c[i, :2])
    mask = lat.circular_mask()
    mask[lat.center] = False
    half, mirror = lat.half_indices(mask)
    assert len(half) * 2 == int(mask.sum())
    assert set(half.tolist()).isdisjoint(mirror.tolist())


def test_translate_ht_matches_real_space_shift():
    D = 16
    rng = np.random.default_rng(2)
    img = rng.normal(size=(D, D))
    shifted = np.roll(img, shift=(2, -3), axis=(0, 1))  # +2 px in y, -3 px in x
    lat = Lattice(D + 1)
    h = torch.tensor(symmetrize_ht(ht2_center(img)).reshape(1, -1), dtype=torch.float32)
    flip = torch.flip(h, dims=[1])
    out = translate_ht(h, flip, lat.freqs2d, torch.tensor([[-3.0, 2.0]]))
    expect = symmetrize_ht(ht2_center(shifted)).reshape(-1)
    inner = lat.circular_mask(D // 2 - 1)  # away from the duplicated Nyquist edge
    np.testing.assert_allclose(out[0][inner].numpy(), expect[inner.numpy()], atol=1e-3)
