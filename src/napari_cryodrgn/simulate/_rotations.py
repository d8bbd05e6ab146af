"""Rotation helpers: uniform random rotations and axis-angle matrices (numpy, float64)."""

from __future__ import annotations

import numpy as np


def quaternions_to_matrices(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (N, 4) as (w, x, y, z) to rotation matrices (N, 3, 3)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3, 3) rotations uniform on SO(3) (normalised Gaussian quaternions)."""
    return quaternions_to_matrices(rng.standard_normal((n, 4)))


def axis_angle(axis, angles) -> np.ndarray:
    """Rotations by ``angles`` (radians, shape (N,)) about one ``axis`` (3,): (N, 3, 3)."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    a = np.atleast_1d(np.asarray(angles, dtype=np.float64))
    K = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    s, c = np.sin(a)[:, None, None], np.cos(a)[:, None, None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)
