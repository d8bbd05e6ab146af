"""Projection-slice theorem with the pose convention, against an analytic Gaussian phantom."""

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from napari_cryodrgn.geometry.lattice import Lattice
from napari_cryodrgn.geometry.transforms import ht2_center, symmetrize_ht


def _projection(D, centers, sigma, rot):
    """Analytic projection along z of Gaussians at ``centers`` after moving r -> R r."""
    ax = np.arange(D) - D // 2
    moved = centers @ rot.T
    img = np.zeros((D, D))
    for cx, cy, _ in moved:
        img += np.exp(-((ax[None, :] - cx) ** 2 + (ax[:, None] - cy) ** 2) / (2 * sigma**2))
    return img * np.sqrt(2 * np.pi) * sigma


def _hartley_3d(q, centers, sigma):
    """Hartley transform (Re - Im of the continuous FT) of the 3D Gaussians at points q (cyc/px)."""
    amp = (2 * np.pi * sigma**2) ** 1.5 * np.exp(-2 * np.pi**2 * sigma**2 * (q**2).sum(1))
    phase = -2 * np.pi * q @ centers.T  # (N, A)
    return amp * (np.cos(phase).sum(1) - np.sin(phase).sum(1))


def test_central_slice_equals_projection_transform():
    D = 32
    sigma = 1.5
    centers = np.array([[4.0, -2.0, 3.0], [-5.0, 1.0, -2.0], [0.0, 6.0, 1.0]])
    lat = Lattice(D + 1)
    mask = lat.circular_mask(D // 2 - 2).numpy()
    for seed in range(3):
        rot = Rotation.random(random_state=seed).as_matrix()
        img = _projection(D, centers, sigma, rot)
        h2 = symmetrize_ht(ht2_center(img)).reshape(-1)
        # slice coordinates: lattice points (kx, ky, 0) as row vectors times R
        q = (lat.coords.numpy() @ rot.astype(np.float32))[mask]
        expect = _hartley_3d(q, centers, sigma)
        got = h2[mask]
        assert np.corrcoef(got, expect)[0, 1] > 0.9999
        np.testing.assert_allclose(got, expect, atol=1e-3 * np.abs(expect).max())


def test_wrong_handedness_is_detected():
    D = 32
    centers = np.array([[4.0, -2.0, 3.0], [-5.0, 1.0, -2.0], [0.0, 6.0, 1.0]])
    rot = Rotation.from_euler("zyz", [30, 50, 70], degrees=True).as_matrix()
    lat = Lattice(D + 1)
    img = _projection(D, centers, 1.5, rot)
    h2 = symmetrize_ht(ht2_center(img)).reshape(-1)
    mask = lat.circular_mask(D // 2 - 2).numpy()
    q_wrong = (lat.coords.numpy() @ rot.T.astype(np.float32))[mask]
    assert np.corrcoef(h2[mask], _hartley_3d(q_wrong, centers, 1.5))[0, 1] < 0.9


def test_lattice_torch_coords_dtype():
    lat = Lattice(17)
    assert lat.coords.dtype == torch.float32 and lat.coords.shape == (289, 3)
