import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.geometry.rotations import (
    axis_angle_to_matrix,
    check_rotations,
    cryodrgn_to_cryosparc,
    cryodrgn_to_relion_euler,
    cryosparc_to_cryodrgn,
    euler_relion_to_matrix,
    matrix_to_axis_angle,
    matrix_to_euler_relion,
    matrix_to_quaternion,
    quaternion_to_matrix,
    random_rotations,
    relion_euler_to_cryodrgn,
)

RZ_MINUS_90 = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])


def relion_formula(rot, tilt, psi):
    """RELION's Euler_angles2matrix written out element by element (degrees)."""
    a, b, g = np.deg2rad([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ])


@pytest.mark.parametrize(
    "angles, expected",
    [
        ((0, 0, 0), np.eye(3)),
        ((90, 0, 0), RZ_MINUS_90),
        ((0, 0, 90), RZ_MINUS_90),
        ((0, 90, 0), np.array([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])),
    ],
)
def test_euler_known_cases(angles, expected):
    np.testing.assert_allclose(euler_relion_to_matrix(*angles), expected, atol=1e-12)


def test_euler_matches_relion_formula_vectorised():
    rng = np.random.default_rng(0)
    e = rng.uniform(-180, 180, (20, 3))
    R = euler_relion_to_matrix(e[:, 0], e[:, 1], e[:, 2])
    assert R.shape == (20, 3, 3)
    for i in range(20):
        np.testing.assert_allclose(R[i], relion_formula(*e[i]), atol=1e-12)
    np.testing.assert_allclose(relion_euler_to_cryodrgn(e), R)


@pytest.mark.parametrize("tilt", [0.0, 180.0, 1e-9, 37.0, 179.9999999])
def test_matrix_to_euler_roundtrip_including_poles(tilt):
    e = np.array([[25.0, tilt, -70.0], [-150.0, tilt, 100.0]])
    R = euler_relion_to_matrix(e[:, 0], e[:, 1], e[:, 2])
    back = matrix_to_euler_relion(R)
    assert np.all((back[:, 1] >= 0) & (back[:, 1] <= 180))
    np.testing.assert_allclose(euler_relion_to_matrix(*back.T), R, atol=1e-8)
    np.testing.assert_allclose(cryodrgn_to_relion_euler(R), back)


def test_general_euler_angles_recovered():
    e = np.array([30.0, 60.0, -45.0])
    np.testing.assert_allclose(matrix_to_euler_relion(euler_relion_to_matrix(*e)), e, atol=1e-9)


def test_axis_angle_known_and_identity():
    np.testing.assert_allclose(axis_angle_to_matrix([0, 0, np.pi / 2]), RZ_MINUS_90.T, atol=1e-12)
    np.testing.assert_allclose(axis_angle_to_matrix(np.zeros((2, 3))), np.stack([np.eye(3)] * 2))
    np.testing.assert_allclose(matrix_to_axis_angle(np.eye(3)), np.zeros(3))


def test_axis_angle_roundtrip_near_pi():
    rng = np.random.default_rng(1)
    axes = rng.normal(size=(10, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    for angle in (0.3, np.pi - 1e-7, np.pi):
        v = axes * angle
        R = axis_angle_to_matrix(v)
        np.testing.assert_allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-9)


def test_cryosparc_convention_is_transpose():
    # cryoSPARC pose (0, 0, pi/2) is Rz(+90); cryoDRGN stores its transpose.
    np.testing.assert_allclose(cryosparc_to_cryodrgn([[0, 0, np.pi / 2]])[0], RZ_MINUS_90,
                               atol=1e-12)
    R = random_rotations(6, 2)
    np.testing.assert_allclose(cryosparc_to_cryodrgn(cryodrgn_to_cryosparc(R)), R, atol=1e-12)


def test_quaternions_consistent_with_axis_angle():
    q = np.array([np.cos(0.4), 0, np.sin(0.4), 0])  # 0.8 rad about y
    np.testing.assert_allclose(quaternion_to_matrix(q), axis_angle_to_matrix([0, 0.8, 0]),
                               atol=1e-12)
    R = random_rotations(50, 5)
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)


def test_random_rotations_valid_and_uniform():
    R = random_rotations(4000, np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-12)
    # uniform on SO(3): the mean matrix vanishes and R[:, 2, 2] = cos(tilt) is uniform on [-1, 1]
    assert np.abs(R.mean(axis=0)).max() < 0.05
    assert abs(np.mean(R[:, 2, 2] ** 2) - 1 / 3) < 0.02
    assert random_rotations(3, 7).shape == (3, 3, 3)
    np.testing.assert_array_equal(random_rotations(3, 7), random_rotations(3, 7))


def test_check_rotations_errors_name_the_file():
    good = random_rotations(3, 0)
    check_rotations(good, "poses.pkl")
    check_rotations(good + 1e-4, "poses.pkl")  # within tolerance
    with pytest.raises(InputError, match="poses.pkl.*shape"):
        check_rotations(np.zeros((3, 3)), "poses.pkl")
    bad = good.copy()
    bad[1] *= 2
    with pytest.raises(InputError, match="poses.pkl.*particle 1 is not a rotation"):
        check_rotations(bad, "poses.pkl")
    bad = good.copy()
    bad[2] = -bad[2]  # reflection: det -1
    with pytest.raises(InputError, match="particle 2 is not a rotation"):
        check_rotations(bad, "poses.pkl")
    bad = good.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="poses.pkl.*particle 0.*NaN"):
        check_rotations(bad, "poses.pkl")
