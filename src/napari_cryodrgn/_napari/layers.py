"""Layer data tuples for maps and particle stacks (voxel size as scale, z-y-x order).

Scales are in Angstrom; no layer sets napari units, so maps, stacks and series can share a
viewer without unit conflicts."""

from __future__ import annotations

import numpy as np

from ..analysis.export import iso_level


def map_layer(vol: np.ndarray, apix: float, name: str, metadata: dict | None = None) -> tuple:
    """A 3D map as an Image layer: iso rendering, voxel size in Angstrom as scale."""
    vol = np.asarray(vol, np.float32)
    lo, hi = float(vol.min()), float(vol.max())
    kwargs = {
        "name": name,
        "scale": (apix,) * vol.ndim,
        "rendering": "iso",
        "iso_threshold": iso_level(vol),
        "contrast_limits": (lo, hi if hi > lo else lo + 1.0),
        "colormap": "gray",
        "metadata": {"apix": apix, **(metadata or {})},
    }
    return (vol, kwargs, "image")


def stack_layer(stack: np.ndarray, apix: float, name: str, metadata: dict | None = None) -> tuple:
    """A particle stack as a stack of 2D images (slider over particles), not a volume."""
    kwargs = {
        "name": name,
        "scale": (1.0, apix, apix),  # Angstrom in y and x; one step per particle
        "colormap": "gray",
        "metadata": {"apix": apix, "particle_stack": True, **(metadata or {})},
    }
    return (stack, kwargs, "image")
