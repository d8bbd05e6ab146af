"""Iso-surfaces of maps (the explorer's map display)."""

import numpy as np
import pytest

from napari_cryodrgn.analysis.surface import iso_surface


def _ball(d=40, r=11.0):
    g = np.mgrid[:d, :d, :d].astype(np.float32) - (d - 1) / 2
    return np.sqrt((g ** 2).sum(0)), g


def test_the_surface_of_a_ball_is_a_sphere_at_its_radius():
    dist, _ = _ball()
    vol = 1.0 - dist / 20.0  # falls linearly: the level-0.45 surface is the 11-voxel sphere
    mesh = iso_surface(vol, 0.45)
    centre = (vol.shape[0] - 1) / 2
    radii = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert not mesh.empty and mesh.level == pytest.approx(0.45)
    np.testing.assert_allclose(radii, 11.0, atol=0.05)
    assert mesh.faces.dtype == np.int32 and mesh.faces.max() < len(mesh.vertices)
    # area of the triangles close to a sphere's (4 pi r^2)
    a, b, c = (mesh.vertices[mesh.faces[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()
    assert area == pytest.approx(4 * np.pi * 11.0 ** 2, rel=0.02)


def test_a_level_outside_the_map_gives_an_empty_drawable_surface():
    dist, _ = _ball(16, 5.0)
    vol = -dist
    for level in (1.0, -1e6, float("nan")):
        mesh = iso_surface(vol, level)
        assert mesh.empty
        verts, faces = mesh.layer_data()  # napari needs at least one triangle
        assert verts.shape == (3, 3) and faces.shape == (1, 3)
    with pytest.raises(ValueError, match="3D"):
        iso_surface(vol[0], 0.0)
