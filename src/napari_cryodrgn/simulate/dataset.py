"""Simulated datasets: configuration, in-memory generation and writing to a folder.

``simulate_particles(cfg)`` returns a :class:`SimData` in memory; ``write_dataset(outdir, cfg)``
streams the same data (same seed, same bytes) to cryoDRGN/RELION files with the ground truth.
"""

from .config import SimConfig
from .generate import SimData, simulate_particles
from .writer import write_dataset

__all__ = ["SimConfig", "SimData", "simulate_particles", "write_dataset"]
