"""Reading and writing particles, poses, CTF, volumes, indices and pickles (no GUI imports)."""

from .atomic import atomic_write, check_writable_dir
from .ctf import load_ctf, save_ctf
from .index import load_index, save_index, save_selection
from .mrc import read_mrc, write_mrc
from .particles import ParticleSource, open_particles
from .poses import load_poses, save_poses
from .safepickle import load_pickle, load_pickles, load_torch_checkpoint, save_pickle

__all__ = [
    "ParticleSource", "atomic_write", "check_writable_dir", "load_ctf", "load_index",
    "load_pickle", "load_pickles", "load_poses", "load_torch_checkpoint", "open_particles",
    "read_mrc", "save_ctf", "save_index", "save_pickle", "save_poses", "save_selection",
    "write_mrc",
]
