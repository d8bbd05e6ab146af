"""Rotation matrices and the pose conventions of RELION, cryoSPARC and cryoDRGN.

cryoDRGN's pose matrix ``R`` is RELION's Euler matrix ``A`` unchanged (the central slice of a
particle is the set of frequencies ``k @ R`` for 2D lattice points ``k = (kx, ky, 0)``).
cryoSPARC stores an axis-angle vector whose rotation matrix is the transpose of cryoDRGN's.
All functions are vectorised over a leading axis and work in float64 internally.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

ROTATION_TOL = 1e-3


def _rz(a: np.ndarray) -> np.ndarray:
    """Active rotations by ``a`` radians about z, shape (..., 3, 3)."""
    c, s = np.cos(a), np.sin(a)
    out = np.zeros(np.shape(a) + (3, 3))
    out[..., 0, 0], out[..., 0, 1] = c, -s
    out[..., 1, 0], out[..., 1, 1] = s, c
    out[..., 2, 2] = 1.0
    return out


def _ry(a: np.ndarray) -> np.ndarray:
    """Active rotations by ``a`` radians about y, shape (..., 3, 3)."""
    c, s = np.cos(a), np.sin(a)
    out = np.zeros(np.shape(a) + (3, 3))
    out[..., 0, 0], out[..., 0, 2] = c, s
    out[..., 2, 0], out[..., 2, 2] = -s, c
    out[..., 1, 1] = 1.0
    return out


def euler_relion_to_matrix(rot, tilt, psi) -> np.ndarray:
    """RELION Euler angles (degrees) to RELION's matrix ``A = Rz(-psi) Ry(-tilt) Rz(-rot)``.

    This is also cryoDRGN's pose matrix. Scalars give (3, 3), arrays give (N, 3, 3).
    """
    a, b, g = (np.deg2rad(np.asarray(x, dtype=np.float64)) for x in (rot, tilt, psi))
    return _rz(-g) @ _ry(-b) @ _rz(-a)


def matrix_to_euler_relion(R) -> np.ndarray:
    """Inverse of :func:`euler_relion_to_matrix`: (..., 3, 3) -> (..., 3) (rot, tilt, psi), deg.

    Tilt lies in [0, 180]; rot and psi in (-180, 180]. When tilt is 0 or 180 the split between
    rot and psi is arbitrary and rot is set to 0.
    """
    R = np.asarray(R, dtype=np.float64)
    tilt = np.arccos(np.clip(R[..., 2, 2], -1.0, 1.0))
    sin_tilt = np.sqrt(R[..., 2, 0] ** 2 + R[..., 2, 1] ** 2)
    general = sin_tilt > 1e-6
    rot = np.where(general, np.arctan2(R[..., 2, 1], R[..., 2, 0]), 0.0)
    psi_general = np.arctan2(R[..., 1, 2], -R[..., 0, 2])
    # tilt == 0: A = Rz(-(rot + psi)); tilt == 180: A[0, :2] = (-cos psi, sin psi) with rot = 0
    psi_pole = np.where(
        R[..., 2, 2] > 0,
        np.arctan2(R[..., 0, 1], R[..., 0, 0]),
        np.arctan2(R[..., 0, 1], -R[..., 0, 0]),
    )
    psi = np.where(general, psi_general, psi_pole)
    return np.rad2deg(np.stack([rot, tilt, psi], axis=-1))


def _hat(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices: ``_hat(v) @ u == cross(v, u)``."""
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -v[..., 2], v[..., 1]
    K[..., 1, 0], K[..., 1, 2] = v[..., 2], -v[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -v[..., 1], v[..., 0]
    return K


def axis_angle_to_matrix(v) -> np.ndarray:
    """Rodrigues: axis-angle vectors (..., 3) (angle = norm, radians) to matrices (..., 3, 3).

    The zero vector gives the identity.
    """
    v = np.asarray(v, dtype=np.float64)
    theta = np.linalg.norm(v, axis=-1)[..., None, None]
    safe = np.where(theta > 0, theta, 1.0)
    K = _hat(v) / safe
    eye = np.broadcast_to(np.eye(3), K.shape)
    return eye + np.sin(theta) * K + (1.0 - np.cos(theta)) * (K @ K)


def matrix_to_quaternion(R) -> np.ndarray:
    """Rotation matrices (..., 3, 3) to unit quaternions (..., 4) as (w, x, y, z), w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # four candidate (unnormalised) quaternions; pick the best-conditioned one per matrix
    cands = np.stack(
        [
            np.stack([1 + m00 + m11 + m22, R[..., 2, 1] - R[..., 1, 2],
                      R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1),
            np.stack([R[..., 2, 1] - R[..., 1, 2], 1 + m00 - m11 - m22,
                      R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0]], -1),
            np.stack([R[..., 0, 2] - R[..., 2, 0], R[..., 0, 1] + R[..., 1, 0],
                      1 - m00 + m11 - m22, R[..., 1, 2] + R[..., 2, 1]], -1),
            np.stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0],
                      R[..., 1, 2] + R[..., 2, 1], 1 - m00 - m11 + m22], -1),
        ],
        axis=-2,
    )
    diag = np.stack([m00 + m11 + m22, m00, m11, m22], axis=-1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q) -> np.ndarray:
    """Quaternions (..., 4) as (w, x, y, z), normalised here, to matrices (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_axis_angle(R) -> np.ndarray:
    """Rotation matrices (..., 3, 3) to axis-angle vectors (..., 3) with angle in [0, pi]."""
    q = matrix_to_quaternion(R)
    sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    return np.where(sin_half > 0, q[..., 1:] * angle / np.where(sin_half > 0, sin_half, 1.0), 0.0)


def relion_euler_to_cryodrgn(euler) -> np.ndarray:
    """(N, 3) RELION (rot, tilt, psi) in degrees to cryoDRGN pose matrices (N, 3, 3)."""
    euler = np.asarray(euler, dtype=np.float64)
    return euler_relion_to_matrix(euler[..., 0], euler[..., 1], euler[..., 2])


def cryodrgn_to_relion_euler(R) -> np.ndarray:
    """cryoDRGN pose matrices (N, 3, 3) to RELION (rot, tilt, psi) in degrees, (N, 3)."""
    return matrix_to_euler_relion(R)


def cryosparc_to_cryodrgn(pose) -> np.ndarray:
    """cryoSPARC ``alignments3D/pose`` axis-angle vectors (N, 3) to cryoDRGN matrices."""
    return np.swapaxes(axis_angle_to_matrix(pose), -1, -2)


def cryodrgn_to_cryosparc(R) -> np.ndarray:
    """cryoDRGN pose matrices (N, 3, 3) to cryoSPARC axis-angle vectors (N, 3)."""
    return matrix_to_axis_angle(np.swapaxes(np.asarray(R, dtype=np.float64), -1, -2))


def random_rotations(n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """``n`` rotation matrices drawn uniformly from SO(3) (normalised Gaussian quaternions)."""
    rng = np.random.default_rng(rng)
    q = rng.standard_normal((n, 4))
    return quaternion_to_matrix(q)


def check_rotations(rot, name: str, tol: float = ROTATION_TOL) -> None:
    """Raise InputError unless ``rot`` is an (N, 3, 3) stack of finite rotation matrices.

    ``name`` is the file (or source) the matrices came from, used in the message.
    """
    rot = np.asarray(rot)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise InputError(
            f"{name}: rotations must be an N x 3 x 3 array but have shape {rot.shape}; "
            "is this a pose file?"
        )
    r = rot.astype(np.float64, copy=False)
    bad = ~np.isfinite(r).all(axis=(1, 2))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{name}: rotation of particle {i} contains NaN or Inf ({int(bad.sum())} such "
            "particles); fix or drop them before training."
        )
    det = np.linalg.det(r)
    ortho = np.abs(r @ np.swapaxes(r, 1, 2) - np.eye(3)).max(axis=(1, 2))
    bad = (np.abs(det - 1.0) > tol) | (ortho > tol)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{name}: matrix of particle {i} is not a rotation (det {det[i]:.4f}, "
            f"|R R^T - I| up to {ortho[i]:.2g}; tolerance {tol}); the pose file is "
            "corrupt or not in cryoDRGN's format."
        )
