import numpy as np
import torch
from scipy.spatial.transform import Rotation

from napari_cryodrgn.geometry.lattice import Lattice
from napari_cryodrgn.geometry.transforms import ht2_center, symmetrize_ht
from napari_cryodrgn.training.preprocess import (
    Preprocessor,
    inplane_angles,
    rotate_lattice_images,
)

CENTERS = np.array([[4.0, -2.0, 3.0], [-5.0, 1.0, -2.0], [0.0, 6.0, 1.0]])


def _projection(D, rot, sigma=1.5):
    ax = np.arange(D) - D // 2
    img = np.zeros((D, D))
    for cx, cy, _ in CENTERS @ rot.T:
        img += np.exp(-((ax[None, :] - cx) ** 2 + (ax[:, None] - cy) ** 2) / (2 * sigma**2))
    return img


def test_canonical_inplane_rotation_gives_the_pose_q_r():
    D = 32
    lat = Lattice(D + 1)
    rots = Rotation.random(4, random_state=3).as_matrix().astype(np.float32)
    imgs = np.stack([symmetrize_ht(ht2_center(_projection(D, r))).reshape(-1) for r in rots])
    ang = inplane_angles(torch.tensor(rots))
    turned = rotate_lattice_images(torch.tensor(imgs, dtype=torch.float32), ang, D + 1).numpy()
    c, s = np.cos(ang.numpy()), np.sin(ang.numpy())
    inner = lat.circular_mask(D // 2 - 3).numpy()
    for i, r in enumerate(rots):
        q = np.array([[c[i], s[i], 0], [-s[i], c[i], 0], [0, 0, 1]], np.float32)
        qr = q @ r
        assert abs(qr[0, 2]) < 1e-5  # canonical: the image x axis has no z component
        expect = symmetrize_ht(ht2_center(_projection(D, qr))).reshape(-1)
        assert np.corrcoef(turned[i][inner], expect[inner])[0, 1] > 0.99


def test_preprocessor_orders_pairs_and_encoder_points():
    p = Preprocessor(16, invert=True, window=True, norm_std=2.0)
    assert p.n == 2 * p.n_half
    D = 17
    torch.testing.assert_close(p.order[p.n_half:], D * D - 1 - p.order[: p.n_half])
    assert (p.enc_pos >= 0).all() and p.enc_in_dim == p.n
    imgs = torch.randn(3, 16, 16)
    y, c, enc = p.batch(imgs)
    assert y.shape == (3, p.n) and c is None and enc.shape == (3, p.enc_in_dim)
    # without shifts the encoder gets the same values in flat lattice order
    torch.testing.assert_close(enc, y[:, p.enc_pos])


def test_shift_centres_the_whole_encoder_input_without_a_mask():
    """--enc-mask -1: the encoder reads the whole lattice, corners included, and every point is
    centred (as in cryoDRGN); a whole-pixel circular shift is undone exactly."""
    D = 16
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, D, D)).astype(np.float32)
    s = np.array([3, -2])  # x, y pixels
    moved = np.roll(img, shift=(s[1], s[0]), axis=(1, 2))
    p = Preprocessor(D, invert=False, window=False, enc_radius=-1)
    assert p.enc_in_dim == (D + 1) ** 2 and (p.enc_pos < 0).any()
    y0, _, enc0 = p.batch(torch.tensor(img))
    y1, _, enc1 = p.batch(torch.tensor(moved), trans=-s[None] / D)
    torch.testing.assert_close(y1, y0, atol=1e-4, rtol=0)
    torch.testing.assert_close(enc1, enc0, atol=1e-4, rtol=0)
    # with the default mask the loss points are centred the same way
    q = Preprocessor(D, invert=False, window=False)
    torch.testing.assert_close(q.batch(torch.tensor(moved), trans=-s[None] / D)[0],
                               q.batch(torch.tensor(img))[0], atol=1e-4, rtol=0)
