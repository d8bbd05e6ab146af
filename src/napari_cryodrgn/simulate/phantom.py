"""A pseudo-atomic phantom made of Gaussian blobs, with a hinged arm and an optional subunit.

Geometry is defined in fractions of the box (so one phantom serves D = 32, 64, 128, ...) and
turned into pixels for a given ``D``. The phantom is chiral (three body lobes off any mirror
plane), so pose handedness matters:

- body: three ellipsoidal lobes, fixed;
- arm: a rod hinged on the body, rotated about ``hinge_axis`` through ``hinge`` by
  ``theta = conf * theta_max_deg`` (``conf`` continuous in [0, 1]);
- subunit: a compact ball of blobs, present in state 1 and absent in state 0.

Every blob centre stays within ``0.246 D`` of the box centre for every conformation, so with
``sigma = 0.025 D`` the density fits inside radius ``~0.55 * D / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._rotations import axis_angle
from .project import render_blobs

_PHANTOM_SEED = 20240611  # fixed: the phantom is the same for every dataset seed
_BLOB_DENSITY = 57000.0  # blobs per unit box volume before scaling (mean spacing ~ sigma)
_SCALE = 1.12  # final size: blob centres within 0.246 D


def _ellipsoid(rng, centre, semi) -> np.ndarray:
    """Uniform points in an axis-aligned ellipsoid (box fractions), at the blob density."""
    semi = np.asarray(semi, dtype=np.float64)
    count = int(round(_BLOB_DENSITY * 4 / 3 * np.pi * np.prod(semi)))
    u = rng.standard_normal((count, 3))
    u *= (rng.uniform(size=(count, 1)) ** (1 / 3)) / np.linalg.norm(u, axis=1, keepdims=True)
    return np.asarray(centre) + u * semi


def _rod(rng, start, direction, length, radius) -> np.ndarray:
    """Uniform points in a cylinder from ``start`` along ``direction`` (box fractions)."""
    d = np.asarray(direction, dtype=np.float64)
    d /= np.linalg.norm(d)
    e1 = np.cross(d, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    count = int(round(_BLOB_DENSITY * np.pi * radius**2 * length))
    along = rng.uniform(0, length, count)
    r = radius * np.sqrt(rng.uniform(size=count))
    phi = rng.uniform(0, 2 * np.pi, count)
    return (np.asarray(start) + along[:, None] * d + (r * np.cos(phi))[:, None] * e1
            + (r * np.sin(phi))[:, None] * e2)


@dataclass(frozen=True, eq=False)
class Phantom:
    """Blob centres (box fractions, (n, 3) as x, y, z) and weights of each part."""

    body: np.ndarray
    body_w: np.ndarray
    arm: np.ndarray
    arm_w: np.ndarray
    subunit: np.ndarray
    subunit_w: np.ndarray
    hinge: np.ndarray
    hinge_axis: np.ndarray
    theta_max_deg: float = 75.0
    sigma_frac: float = 0.025

    @classmethod
    def default(cls) -> Phantom:
        return default_phantom()

    @property
    def n_blobs(self) -> int:
        """Blob count with every part present."""
        return len(self.body) + len(self.arm) + len(self.subunit)

    def sigma(self, D: int) -> float:
        """Blob standard deviation in pixels."""
        return self.sigma_frac * D

    def batch_blobs(self, conf, state, D: int) -> tuple[np.ndarray, np.ndarray]:
        """Blobs for many particles, fixed count: (B, A, 3) pixels and (B, A) weights.

        An absent subunit keeps its slots with zero weight.
        """
        conf = np.atleast_1d(np.asarray(conf, dtype=np.float64))
        state = np.broadcast_to(np.atleast_1d(np.asarray(state)), conf.shape)
        R = axis_angle(self.hinge_axis, np.deg2rad(self.theta_max_deg) * conf)  # (B, 3, 3)
        arm = (self.arm - self.hinge) @ R.transpose(0, 2, 1) + self.hinge
        B = len(conf)
        pos = np.concatenate(
            [np.broadcast_to(self.body, (B, *self.body.shape)), arm,
             np.broadcast_to(self.subunit, (B, *self.subunit.shape))], axis=1)
        sub_w = self.subunit_w * (state[:, None] == 1)
        w = np.concatenate([np.broadcast_to(self.body_w, (B, len(self.body_w))),
                            np.broadcast_to(self.arm_w, (B, len(self.arm_w))), sub_w], axis=1)
        return pos * D, w

    def blobs_for(self, conf: float, state: int, D: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Blobs present at (conf, state): positions (A, 3) in pixels and weights (A,)."""
        pos, w = self.batch_blobs([conf], [state], D)
        keep = w[0] > 0
        return pos[0][keep], w[0][keep]

    def render_volume(self, conf: float, state: int, D: int) -> np.ndarray:
        """The (D, D, D) float32 map ``vol[iz, iy, ix]`` at (conf, state)."""
        pos, w = self.blobs_for(conf, state, D)
        return render_blobs(pos, w, D, self.sigma(D))


@lru_cache(maxsize=1)
def default_phantom() -> Phantom:
    """The fixed phantom used by the simulator: 256 body, 54 arm and 40 subunit blobs."""
    rng = np.random.default_rng(_PHANTOM_SEED)
    body = np.concatenate([  # three lobes of different sizes, off any mirror plane
        _ellipsoid(rng, (-0.06, -0.03, 0.00), (0.12, 0.08, 0.07)),
        _ellipsoid(rng, (0.07, -0.09, 0.06), (0.07, 0.06, 0.06)),
        _ellipsoid(rng, (-0.02, 0.05, -0.07), (0.06, 0.05, 0.05)),
    ])
    hinge = np.array([0.06, 0.02, 0.02])
    arm = _rod(rng, hinge + [0.0, 0.01, 0.0], (0.15, 1.0, 0.3), 0.15, 0.045)
    subunit = _ellipsoid(rng, (-0.12, -0.10, 0.08), (0.055, 0.055, 0.055))
    weights = [rng.uniform(0.7, 1.3, len(p)) for p in (body, arm, subunit)]
    body, arm, subunit, hinge = (a * _SCALE for a in (body, arm, subunit, hinge))
    ph = Phantom(body=body, body_w=weights[0], arm=arm, arm_w=weights[1], subunit=subunit,
                 subunit_w=weights[2], hinge=hinge, hinge_axis=np.array([0.15, -0.1, -1.0])
                 / np.linalg.norm([0.15, -0.1, -1.0]))
    for a in (ph.body, ph.body_w, ph.arm, ph.arm_w, ph.subunit, ph.subunit_w, ph.hinge,
              ph.hinge_axis):
        a.flags.writeable = False
    return ph


def blobs_for(conf: float, state: int, D: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of the default phantom at (conf, state): (A, 3) pixels and (A,) weights."""
    return default_phantom().blobs_for(conf, state, D)


def render_volume(conf: float, state: int, D: int) -> np.ndarray:
    """The default phantom's (D, D, D) float32 map at (conf, state)."""
    return default_phantom().render_volume(conf, state, D)
