import numpy as np
import pytest
import torch

from napari_cryodrgn.geometry.transforms import ht3_center
from napari_cryodrgn.model.encoding import PositionalEncoding
from napari_cryodrgn.model.vae import HetVAE, ModelArgs
from napari_cryodrgn.model.volume import VolumeDecoder


def small(domain="fourier", pe_type="gaussian", zdim=3):
    torch.manual_seed(0)
    args = ModelArgs(zdim=zdim, qlayers=2, qdim=32, players=2, pdim=32, pe_type=pe_type,
                     domain=domain)
    return HetVAE(17, 200, args)


def test_state_dict_names_match_cryodrgn_layout():
    keys = set(small().state_dict())
    assert "decoder.rand_freqs" in keys
    # input layer, two residual layers, output layer; activations in between
    for k in ["encoder.main.0.weight", "encoder.main.2.linear.weight",
              "encoder.main.4.linear.weight", "encoder.main.6.weight",
              "decoder.decoder.main.0.weight", "decoder.decoder.main.2.linear.weight",
              "decoder.decoder.main.6.weight"]:
        assert k in keys, k
    sd = small().state_dict()
    assert sd["decoder.rand_freqs"].shape == (3 * 8, 3)
    assert sd["decoder.decoder.main.0.weight"].shape == (32, 6 * 8 + 3)
    assert sd["encoder.main.6.weight"].shape == (6, 32)


@pytest.mark.parametrize("pe", ["gaussian", "geom_lowf", "geom_ft", "geom_full", "geom_nohighf",
                                "linear_lowf"])
def test_positional_encodings_width_and_range(pe):
    enc = PositionalEncoding(pe, 8)
    rf = torch.randn(24, 3) * 0.5 if pe == "gaussian" else None
    x = enc(torch.rand(5, 7, 3) - 0.5, rf)
    assert x.shape == (5, 7, 48)
    assert x.abs().max() <= 1.0 + 1e-6


def test_split_first_layer_equals_concatenation():
    m = small()
    dec = m.decoder
    coords = torch.rand(2, 10, 3) - 0.5
    z = torch.randn(2, 3)
    feats = dec.pe(coords, dec.rand_freqs)
    full = dec.decoder(torch.cat([feats, z[:, None].expand(-1, 10, -1)], -1))
    torch.testing.assert_close(dec.raw(coords, z), full)


@pytest.mark.parametrize("domain", ["fourier", "hartley"])
def test_decoder_at_fixed_points_equals_full_evaluation(domain):
    """pair_at(coords) computes the z-free part once; every z then decodes as hartley_pair
    would from scratch (the latent refinement relies on it)."""
    dec = small(domain).decoder
    coords = torch.rand(2, 30, 3) - 0.5
    pair = dec.pair_at(coords)
    for _ in range(2):
        z = torch.randn(2, 3)
        h, hm = pair(z)
        feats = dec.pe(torch.cat([coords, -coords], 1), dec.rand_freqs)
        full = dec.decoder(torch.cat([feats, z[:, None].expand(-1, 60, -1)], -1))
        if domain == "hartley":
            torch.testing.assert_close(torch.cat([h, hm], 1), full[..., 0])
        h2, hm2 = dec.hartley_pair(coords, z)
        torch.testing.assert_close(h, h2)
        torch.testing.assert_close(hm, hm2)


def test_fourier_decoder_is_hermitian():
    dec = small().decoder
    c = torch.rand(1, 50, 3) - 0.5
    z = torch.randn(1, 3)
    re, im = dec.fourier(c, z)
    re2, im2 = dec.fourier(-c, z)
    ok = c[..., 2].abs() > 1e-6
    torch.testing.assert_close(re[ok], re2[ok])
    torch.testing.assert_close(im[ok], -im2[ok])
    h, hm = dec.hartley_pair(c, z)
    torch.testing.assert_close(hm[ok], dec.hartley(-c, z)[ok])


@pytest.mark.parametrize("domain", ["fourier", "hartley"])
def test_volume_matches_slice_evaluation_and_is_real(domain):
    m = small(domain).eval()
    z = np.array([0.3, -1.0, 0.5], np.float32)
    vd = VolumeDecoder(m, 17, norm=(0.0, 2.0), chunk=500)
    ht = vd.hartley_volume(z).numpy()
    vol = vd(z)
    assert vol.shape == (16, 16, 16) and vol.dtype == np.float32
    # the Hartley volume is what the decoder gives pointwise (x2 for norm), zero off-sphere
    ax = np.linspace(-0.5, 0.5, 17, dtype=np.float32)
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    coords = torch.tensor(np.stack([xx, yy, zz], -1).reshape(1, -1, 3))
    with torch.no_grad():
        direct = m.decoder.hartley(coords, torch.tensor(z)[None])[0].numpy().reshape(17, 17, 17)
    inside = (xx**2 + yy**2 + zz**2) <= 0.25
    if domain == "fourier":
        off_plane = np.abs(zz) > 1e-6
        sel = inside & off_plane
        np.testing.assert_allclose(ht[sel], 2 * direct[sel], rtol=1e-4, atol=1e-4)
        assert np.all(ht[~inside] == 0)
    else:
        np.testing.assert_allclose(ht, 2 * direct, rtol=1e-4, atol=1e-4)
    # map -> Hartley -> back reproduces the cropped Hartley volume
    np.testing.assert_allclose(ht3_center(vol.astype(np.float64)), ht[:-1, :-1, :-1], atol=1e-3)


def test_bf16_volume_close_to_fp32():
    m = small().eval()
    z = np.zeros(3, np.float32)
    a = VolumeDecoder(m, 17)(z)
    b = VolumeDecoder(m, 17, precision="bf16")(z)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_cached_and_uncached_decoding_agree():
    m = small().eval()
    z = np.array([0.2, 0.1, -0.3], np.float32)
    a = VolumeDecoder(m, 17, chunk=300)
    b = VolumeDecoder(m, 17, chunk=300, cache_mb=0)
    assert a._cache_ok and not b._cache_ok
    va, vb = a(z), b(z)
    a(np.zeros(3, np.float32))  # the cache survives a second point
    np.testing.assert_allclose(a(z), va, atol=1e-6)
    np.testing.assert_allclose(va, vb, atol=1e-5)


def test_leaky_relu_and_residual_first_layer_decode():
    torch.manual_seed(1)
    args = ModelArgs(zdim=2, qlayers=1, qdim=16, players=1, pdim=50, pe_type="geom_lowf",
                     activation="leaky_relu")
    m = HetVAE(17, 20, args).eval()  # 48 features + z = 50 = pdim: residual first layer
    vd = VolumeDecoder(m, 17)
    assert not vd.split
    z = np.array([0.5, -0.5], np.float32)
    ht = vd.hartley_volume(z).numpy()
    ax = np.linspace(-0.5, 0.5, 17, dtype=np.float32)
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    coords = torch.tensor(np.stack([xx, yy, zz], -1).reshape(1, -1, 3))
    with torch.no_grad():
        direct = m.decoder.hartley(coords, torch.tensor(z)[None])[0].numpy().reshape(17, 17, 17)
    sel = ((xx**2 + yy**2 + zz**2) <= 0.25) & (np.abs(zz) > 1e-6)
    np.testing.assert_allclose(ht[sel], direct[sel], rtol=1e-4, atol=1e-5)
