"""Analytic blob projection against numerical projection and the Fourier slice theorem."""

import numpy as np
import pytest
import torch

from napari_cryodrgn.simulate._rotations import axis_angle, random_rotations
from napari_cryodrgn.simulate.phantom import default_phantom, render_volume
from napari_cryodrgn.simulate.project import project_blobs, render_blobs

D = 32


@pytest.fixture(scope="module")
def blobs():
    return default_phantom().blobs_for(0.6, 1, D)


@pytest.fixture(scope="module")
def sigma():
    return default_phantom().sigma(D)


def test_matches_numerical_projection_of_rotated_volume(blobs, sigma):
    pos, w = blobs
    rot = random_rotations(3, np.random.default_rng(1))
    shift = np.array([[0.0, 0.0], [1.5, -2.0], [-0.7, 2.3]])
    imgs = project_blobs(pos.astype(np.float64), w, rot, shift, D, sigma)
    assert imgs.shape == (3, D, D) and imgs.dtype == np.float64
    for R, s, img in zip(rot, shift, imgs, strict=True):
        moved = pos @ R.T + np.array([s[0], s[1], 0.0])
        numerical = render_blobs(moved, w, D, sigma).astype(np.float64).sum(axis=0)
        assert np.abs(img - numerical).max() < 1e-5 * np.abs(numerical).max()


def test_torch_and_numpy_agree(blobs, sigma):
    pos, w = blobs
    rot = random_rotations(2, np.random.default_rng(2))
    a = project_blobs(pos.astype(np.float32), w, rot, None, D, sigma)
    b = project_blobs(torch.from_numpy(pos.astype(np.float32)), torch.from_numpy(w), rot, None,
                      D, sigma)
    assert isinstance(b, torch.Tensor) and a.dtype == np.float32
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-5 * np.abs(a).max())


@pytest.mark.parametrize(
    "axis, angle, centre, expected_xy",
    [
        ((0, 0, 1), 90, (5, 0, 0), (0, 5)),  # x -> y about z
        ((0, 0, 1), -90, (5, 0, 0), (0, -5)),
        ((1, 0, 0), 90, (0, 0, 5), (0, -5)),  # z -> -y about x
        ((0, 1, 0), 90, (0, 0, 5), (5, 0)),  # z -> x about y
        ((0, 1, 0), 90, (5, 0, 0), (0, 0)),  # x -> -z: projects onto the centre
    ],
)
def test_quarter_turns_move_a_blob_to_the_expected_pixel(axis, angle, centre, expected_xy):
    R = axis_angle(axis, [np.deg2rad(angle)])
    img = project_blobs(np.array([centre], float), np.ones(1), R, None, D, 1.0)[0]
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    assert (ix - D // 2, iy - D // 2) == expected_xy


def test_shift_moves_the_image_by_plus_shift():
    img = project_blobs(np.zeros((1, 3)), np.ones(1), np.eye(3)[None], np.array([[2.0, -3.0]]),
                        D, 1.0)[0]
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    assert (ix, iy) == (D // 2 + 2, D // 2 - 3)
    # line integral of a unit 3D Gaussian: total mass (2 pi)^(3/2) sigma^3
    assert img.sum() == pytest.approx((2 * np.pi) ** 1.5, rel=1e-4)


def _dft3(vol, q):
    """Exact 3D DFT of vol[iz, iy, ix] at frequency q = (qx, qy, qz) cycles/pixel."""
    ax = np.arange(vol.shape[0]) - vol.shape[0] // 2
    ex, ey, ez = (np.exp(-2j * np.pi * qi * ax) for qi in q)
    return np.einsum("zyx,x,y,z->", vol.astype(np.float64), ex, ey, ez)


def test_fourier_slice_theorem():
    """Centred 2D FFT of a projection == 3D transform of the map at (kx, ky, 0) R."""
    conf, state = 0.3, 1
    pos, w = default_phantom().blobs_for(conf, state, D)
    vol = render_volume(conf, state, D)
    rot = random_rotations(3, np.random.default_rng(3))
    imgs = project_blobs(pos.astype(np.float64), w, rot, None, D, default_phantom().sigma(D))
    ks = [(0, 0), (1, 0), (0, 2), (-3, 1), (2, -4), (5, 3)]
    for R, img in zip(rot, imgs, strict=True):
        f2 = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img)))
        for kx, ky in ks:
            q = np.array([kx, ky, 0.0]) @ R / D
            expected = _dft3(vol, q)
            got = f2[D // 2 + ky, D // 2 + kx]
            assert abs(got - expected) < 1e-4 * abs(f2[D // 2, D // 2]), (kx, ky)
    # the same with the transposed rotation must fail (the test can tell handedness apart)
    R = rot[0]
    f2 = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(imgs[0])))
    q_wrong = np.array([2.0, -4.0, 0.0]) @ R.T / D
    assert abs(f2[D // 2 - 4, D // 2 + 2] - _dft3(vol, q_wrong)) > 1e-2 * abs(f2[D // 2, D // 2])


def test_render_blobs_samples_the_density():
    vol = render_blobs(np.array([[3.0, -2.0, 1.0]]), np.array([2.0]), D, 1.5)
    assert vol.shape == (D, D, D) and vol.dtype == np.float32
    iz, iy, ix = np.unravel_index(np.argmax(vol), vol.shape)
    assert (ix - D // 2, iy - D // 2, iz - D // 2) == (3, -2, 1)
    assert vol.max() == pytest.approx(2.0)
