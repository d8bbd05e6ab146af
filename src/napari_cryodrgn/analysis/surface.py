"""Iso-surfaces of maps as triangle meshes (marching cubes, scikit-image).

The explorer shows maps as meshes rather than ray-cast volumes because a mesh costs the
renderer almost nothing: measured with napari 0.9.2 on Mesa's software OpenGL (llvmpipe, 2
cores, 1212x951 canvas), one 3D frame of a D=128 map takes 5.2 s ray-cast ('iso' rendering)
and 33 ms as its 29,500-triangle iso-surface (D=64: 0.66-1.45 s ray-cast). Marching cubes
itself takes 23 ms at D=128 and runs in the worker that decoded the map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in voxel coordinates (z, y, x order, like the map's axes)."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    level: float

    @property
    def empty(self) -> bool:
        return len(self.faces) == 0

    def layer_data(self) -> tuple[np.ndarray, np.ndarray]:
        """napari Surface data. An empty surface (level above the map's maximum or below its
        minimum) is one degenerate triangle at the origin: napari cannot draw zero faces."""
        if self.empty:
            return np.zeros((3, 3), np.float32), np.array([[0, 1, 2]], np.int32)
        return self.vertices, self.faces


def iso_surface(vol: np.ndarray, level: float) -> Mesh:
    """The surface where ``vol`` crosses ``level`` (an empty mesh when it never does)."""
    from skimage.measure import marching_cubes

    v = np.asarray(vol, np.float32)
    if v.ndim != 3:
        raise ValueError(f"iso_surface needs a 3D map, got shape {v.shape}")
    if not np.isfinite(level) or not (float(v.min()) < level < float(v.max())):
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), float(level))
    verts, faces, _, _ = marching_cubes(v, level=float(level), allow_degenerate=False)
    return Mesh(verts.astype(np.float32), faces.astype(np.int32), float(level))
