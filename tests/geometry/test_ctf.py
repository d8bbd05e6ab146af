import numpy as np
import torch

from napari_cryodrgn.geometry.ctf import compute_ctf, ctf_for_params, wavelength


def test_wavelength_300kv():
    assert abs(wavelength(300e3) - 0.019687) < 2e-6
    assert abs(wavelength(200e3) - 0.025079) < 2e-6


def test_ctf_at_zero_frequency_is_minus_w():
    f = np.zeros((1, 2))
    v = compute_ctf(f, 15000.0, 15000.0, 0.0, 300.0, 2.7, 0.1)
    np.testing.assert_allclose(v, -0.1)


def test_ctf_quarter_wave_point():
    # Cs = 0, no astigmatism: gamma = -pi df lambda s^2; choose s with gamma = -pi/2
    df, w = 20000.0, 0.07
    lam = wavelength(300e3)
    s = np.sqrt(0.5 / (df * lam))
    f = np.array([[s, 0.0], [0.0, s], [s / np.sqrt(2), s / np.sqrt(2)]])
    v = compute_ctf(f, df, df, 0.0, 300.0, 0.0, w)
    np.testing.assert_allclose(v, -np.sqrt(1 - w * w), atol=1e-9)


def test_astigmatism_follows_angle():
    # defocus along the azimuth equals dfU at the angle dfang, dfV perpendicular to it
    lam = wavelength(300e3)
    dfu, dfv, ang = 20000.0, 15000.0, 30.0
    s = 0.05
    a = np.deg2rad(ang)
    pts = np.array([[s * np.cos(a), s * np.sin(a)], [-s * np.sin(a), s * np.cos(a)]])
    v = compute_ctf(pts, dfu, dfv, ang, 300.0, 0.0, 0.0)
    expect = np.sin(2 * np.pi * (-0.5 * np.array([dfu, dfv]) * lam * s * s))
    np.testing.assert_allclose(v, expect, atol=1e-9)


def test_phase_shift_and_torch_agree():
    f = np.random.default_rng(0).uniform(-0.2, 0.2, size=(50, 2))
    a = compute_ctf(f, 18000.0, 17000.0, 45.0, 300.0, 2.7, 0.1, 90.0)
    b = compute_ctf(torch.tensor(f), 18000.0, 17000.0, 45.0, 300.0, 2.7, 0.1, 90.0).numpy()
    np.testing.assert_allclose(a, b, atol=1e-9)
    # a 90 degree phase plate makes the low-frequency CTF sqrt(1 - w^2) * sin(-pi/2) = -0.995
    np.testing.assert_allclose(compute_ctf(np.zeros((1, 2)), 1e4, 1e4, 0, 300, 2.7, 0.1, 90.0),
                               -np.sqrt(1 - 0.01), atol=1e-9)


def test_ctf_for_params_divides_by_pixel_size():
    params = torch.tensor([[64, 2.0, 15000, 15000, 0, 300, 2.7, 0.1, 0]], dtype=torch.float64)
    f = torch.tensor([[0.25, 0.0]], dtype=torch.float64)
    v = ctf_for_params(f, params)
    direct = compute_ctf(torch.tensor([[0.125, 0.0]], dtype=torch.float64), 15000.0, 15000.0, 0.0,
                         300.0, 2.7, 0.1, 0.0)
    torch.testing.assert_close(v, direct.reshape(1, 1))
