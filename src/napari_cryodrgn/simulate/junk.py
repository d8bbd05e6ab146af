"""Junk particles: each a different random compact cloud of Gaussian blobs."""

from __future__ import annotations

import numpy as np

from ._rotations import random_rotations

MAX_RADIUS = 0.245  # blob centres stay within this fraction of D, like the phantom's


def junk_blobs(rng: np.random.Generator, n: int, n_slots: int, D: int):
    """Random blob clouds for ``n`` junk particles, zero-padded to ``n_slots`` blobs each.

    Each cloud has 1 to 3 anisotropic, randomly oriented clumps and a random blob count
    (40 to ``n_slots``). Returns positions (n, n_slots, 3) in pixels and weights (n, n_slots).
    """
    pos = np.zeros((n, n_slots, 3))
    w = np.zeros((n, n_slots))
    lo = min(40, n_slots)
    for i in range(n):
        count = int(rng.integers(lo, n_slots + 1))
        n_clumps = int(rng.integers(1, 4))
        which = rng.integers(0, n_clumps, count)
        centres = rng.uniform(-0.1, 0.1, (n_clumps, 3))
        semi = rng.uniform(0.03, 0.13, (n_clumps, 3))
        rots = random_rotations(n_clumps, rng)
        u = rng.standard_normal((count, 3))
        u *= rng.uniform(size=(count, 1)) ** (1 / 3) / np.linalg.norm(u, axis=1, keepdims=True)
        p = centres[which] + np.einsum("nij,nj->ni", rots[which], u * semi[which])
        r = np.linalg.norm(p, axis=1, keepdims=True)
        p *= np.minimum(1.0, MAX_RADIUS / np.maximum(r, 1e-12))
        pos[i, :count] = p * D
        w[i, :count] = rng.uniform(0.5, 1.5, count)
    return pos, w
