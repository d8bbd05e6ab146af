"""Cryo-EM particle simulator: a Gaussian-blob phantom with a continuous hinge motion and a
discrete subunit, analytic projection, CTF, noise and junk, with the ground truth kept.

Modules: ``phantom`` (the structure), ``project`` (analytic projection and rendering),
``optics`` (CTF), ``junk``, ``dataset`` (``SimConfig``, ``simulate_particles``,
``write_dataset``).
"""

from .dataset import SimConfig, SimData, simulate_particles, write_dataset
from .phantom import Phantom, blobs_for, default_phantom, render_volume
from .project import project_blobs, render_blobs

__all__ = [
    "Phantom",
    "SimConfig",
    "SimData",
    "blobs_for",
    "default_phantom",
    "project_blobs",
    "render_blobs",
    "render_volume",
    "simulate_particles",
    "write_dataset",
]
