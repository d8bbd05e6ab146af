"""Layer data tuples for maps, map series and particle stacks (z-y-x order).

Spatial axes carry the voxel size as scale and napari's unit ``angstrom``; a map whose files
give no voxel size is shown in pixels (scale 1, unit ``pixel``: never a guessed 1 A), and the
writer then records no voxel size either. Leading axes (a series' step, a stack's particle)
are steps of 1 ``pixel``, napari's unit for plain indices."""

from __future__ import annotations

import numpy as np

from ..analysis.export import iso_level

ANGSTROM = "angstrom"
PIXEL = "pixel"


def spatial(apix: float | None, ndim: int, spatial_axes: int) -> dict:
    """``scale`` and ``units`` of a layer whose last ``spatial_axes`` axes are in space."""
    lead = ndim - spatial_axes
    if apix is None:
        return {"scale": (1.0,) * ndim, "units": (PIXEL,) * ndim}
    return {"scale": (1.0,) * lead + (float(apix),) * spatial_axes,
            "units": (PIXEL,) * lead + (ANGSTROM,) * spatial_axes}


def map_layer(vol: np.ndarray, apix: float | None, name: str,
              metadata: dict | None = None) -> tuple:
    """A 3D map (or a 4D series of maps) as an Image layer: iso rendering, voxel size in
    Angstrom as the scale of its last three axes."""
    vol = np.asarray(vol, np.float32)
    lo, hi = float(vol.min()), float(vol.max())
    kwargs = {
        "name": name,
        **spatial(apix, vol.ndim, 3),
        "rendering": "iso",
        "iso_threshold": iso_level(vol if vol.ndim == 3 else vol[0]),
        "contrast_limits": (lo, hi if hi > lo else lo + 1.0),
        "colormap": "gray",
        "metadata": {"apix": apix, **(metadata or {})},
    }
    return (vol, kwargs, "image")


def surface_layer(vol: np.ndarray, mesh, apix: float | None, name: str,
                  metadata: dict | None = None) -> tuple:
    """A 3D map shown as its iso-surface ``mesh`` (:class:`~..analysis.surface.Mesh`, voxel
    coordinates; the voxel size is the layer's scale). The map itself rides in the metadata
    (``volume``, ``iso_level``): the writer saves it as MRC, the explorer reads it back."""
    kwargs = {
        "name": name,
        **spatial(apix, 3, 3),
        "shading": "smooth",
        "colormap": "gray",
        "metadata": {"apix": apix, "volume": np.asarray(vol, np.float32),
                     "iso_level": mesh.level, **(metadata or {})},
    }
    return (mesh.layer_data(), kwargs, "surface")


def image_layer(img: np.ndarray, apix: float | None, name: str,
                metadata: dict | None = None) -> tuple:
    """One 2D image."""
    return (img, {"name": name, **spatial(apix, 2, 2), "colormap": "gray",
                  "metadata": {"apix": apix, **(metadata or {})}}, "image")


def stack_layer(stack: np.ndarray, apix: float | None, name: str,
                metadata: dict | None = None) -> tuple:
    """A particle stack as a stack of 2D images (slider over particles), not a volume."""
    kwargs = {
        "name": name,
        **spatial(apix, 3, 2),
        "colormap": "gray",
        "metadata": {"apix": apix, "particle_stack": True, **(metadata or {})},
    }
    return (stack, kwargs, "image")
