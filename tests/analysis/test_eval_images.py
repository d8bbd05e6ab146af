"""eval_images: a particle stack through a trained run's encoder (cryoDRGN's eval_images)."""

import logging
import shutil

import numpy as np
import pytest
import yaml

from napari_cryodrgn.analysis.eval_images import check_output, eval_images, save_losses, save_z
from napari_cryodrgn.analysis.particle_loss import particle_losses
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.index import save_index
from napari_cryodrgn.io.mrc import write_mrc
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.poses import load_poses, save_poses
from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.training.api import make_trainer
from napari_cryodrgn.training.checkpoint import load_z
from napari_cryodrgn.training.refine_z import encoder_zfile

N = 120
SUBSET = np.array([7, 3, 100, 0, 55, 119, 64])  # unsorted: rows follow the index's order


@pytest.fixture(scope="module")
def run(train_tiny):
    """Our defaults: the encoder sees in-plane-turned images."""
    return train_tiny("eval_images_run", zdim=2, epochs=2)


@pytest.fixture(scope="module")
def residual_run(tiny_dataset, tmp_path_factory):
    """Encoder input 'residual', no in-plane turning, trained on 100 particles (--ind)."""
    folder = tmp_path_factory.mktemp("eval_images_residual")
    save_index(folder / "ind.pkl", np.flatnonzero(np.arange(N) % 6 != 5))
    d = tiny_dataset
    for _ in make_trainer(d["particles"], d["poses"], folder / "run", 3, ctf=d["ctf"],
                          ind=folder / "ind.pkl", num_epochs=1, seed=5, qdim=32, qlayers=1,
                          pdim=32, players=1, batch_size=16, precision="fp32",
                          enc_input="residual", enc_inplane=False).run():
        pass
    return folder / "run", folder / "ind.pkl"


def _eval(d, **kw):
    kw.setdefault("device", "cpu")
    return eval_images(kw.pop("particles", d["particles"]), kw.pop("poses", d["poses"]),
                       kw.pop("ctf", d["ctf"]), **kw)


def _config(run):
    return yaml.safe_load((run / "config.yaml").read_text())


def _stack(d, tmp_path, name, fn):
    """A copy of the tiny stack with ``fn`` applied to its images."""
    src = open_particles(d["particles"])
    path = tmp_path / name
    write_mrc(path, fn(src.images(np.arange(src.n)).astype(np.float32)), apix=src.apix or 1.0)
    return path


def test_reproduces_the_runs_latents_every_epoch(run, tiny_dataset):
    assert _config(run)["model_args"]["enc_inplane"] is True
    seen = []
    for ep in (1, 2):
        res = _eval(tiny_dataset, workdir=run, epoch=ep, batch_size=50,
                    progress=lambda *a: seen.append(a))
        mu, logvar = load_z(encoder_zfile(run, ep))  # the last epoch's z.N.pkl is refined
        assert res.z_mu.shape == (N, 2) and res.z_mu.dtype == np.float32
        np.testing.assert_allclose(res.z_mu, mu, rtol=0, atol=1e-5)
        np.testing.assert_allclose(res.z_logvar, logvar, rtol=0, atol=1e-5)
        assert res.epoch == ep and res.weights.name == f"weights.{ep}.pkl"
        np.testing.assert_array_equal(res.ind, np.arange(N))
    assert seen[:3] == [(50, N), (100, N), (N, N)]
    latest = _eval(tiny_dataset, workdir=run)  # no epoch: the latest
    assert latest.epoch == 2
    np.testing.assert_array_equal(latest.z_mu, res.z_mu)


def test_residual_encoder_input_with_index(residual_run, tiny_dataset):
    folder, ind = residual_run
    cfg = _config(folder)["model_args"]
    assert cfg["enc_input"] == "residual" and cfg["enc_inplane"] is False
    res = _eval(tiny_dataset, workdir=folder, ind=ind)
    mu, logvar = load_z(encoder_zfile(folder, 1))
    assert res.n == 100
    np.testing.assert_allclose(res.z_mu, mu, rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.z_logvar, logvar, rtol=0, atol=1e-5)


def test_index_selects_rows_in_its_order(run, tiny_dataset, tmp_path):
    full = _eval(tiny_dataset, workdir=run)
    save_index(tmp_path / "sub.pkl", SUBSET)
    for ind in (tmp_path / "sub.pkl", SUBSET):
        sub = _eval(tiny_dataset, workdir=run, ind=ind)
        np.testing.assert_array_equal(sub.ind, SUBSET)
        np.testing.assert_allclose(sub.z_mu, full.z_mu[SUBSET], rtol=0, atol=1e-6)
        np.testing.assert_allclose(sub.z_logvar, full.z_logvar[SUBSET], rtol=0, atol=1e-6)
        np.testing.assert_allclose(sub.recon, full.recon[SUBSET], rtol=1e-6)


def test_losses_are_particle_loss_and_the_kl_of_z(run, tiny_dataset, tmp_path):
    res = _eval(tiny_dataset, workdir=run, epoch=2)
    copy = shutil.copytree(run, tmp_path / "run")  # particle_losses caches in the run folder
    # eval_images gives the encoder's z; z.2.pkl holds them refined: the decoder at the
    # encoder's z is what its losses are
    shutil.copyfile(encoder_zfile(copy, 2), copy / "z.2.pkl")
    stored = particle_losses(copy, epoch=2, device="cpu")  # decoder at the stored z.2.pkl
    np.testing.assert_allclose(res.recon, stored, rtol=1e-6)
    mu, lv = (a.astype(np.float64) for a in load_z(encoder_zfile(run, 2)))
    kld = -0.5 * np.sum(1 + lv - mu**2 - np.exp(lv), axis=1)
    np.testing.assert_allclose(res.kld, kld, rtol=1e-5, atol=1e-7)
    assert res.beta == 0.5 and res.n_pix == 196  # 1/zdim; D=16: the disc of radius 8 minus DC
    np.testing.assert_allclose(res.loss, stored + 0.5 * kld / 196, rtol=1e-6)
    m = res.summary()
    assert set(m) == {"loss", "recon", "kld"} and all(type(v) is float for v in m.values())
    assert m["loss"] == pytest.approx(m["recon"] + 0.5 * m["kld"] / 196, rel=1e-6)
    other = _eval(tiny_dataset, workdir=run, epoch=2, beta=4.0)
    np.testing.assert_allclose(other.loss, stored + 4.0 * kld / 196, rtol=1e-6)


def test_normalisation_comes_from_the_config(run, tiny_dataset, tmp_path):
    """Doubling the images doubles the encoder's input (the norm is not re-estimated from the
    new stack): the same as halving the config's std on the original stack."""
    d = tiny_dataset
    base = _eval(d, workdir=run)
    doubled = _eval(d, workdir=run, particles=_stack(d, tmp_path, "x2.mrcs", lambda x: 2 * x))
    assert np.abs(doubled.z_mu - base.z_mu).max() > 1e-2
    copy = shutil.copytree(run, tmp_path / "run")
    cfg = _config(copy)
    cfg["dataset_args"]["norm"][1] /= 2
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    halved = _eval(d, workdir=copy)
    np.testing.assert_allclose(doubled.z_mu, halved.z_mu, rtol=0, atol=1e-5)
    np.testing.assert_allclose(doubled.recon, halved.recon, rtol=1e-5)


def test_preprocessing_flags_replace_the_config(run, tiny_dataset, tmp_path, caplog):
    d = tiny_dataset
    negated = _eval(d, workdir=run, particles=_stack(d, tmp_path, "neg.mrcs", lambda x: -x))
    with caplog.at_level(logging.WARNING):
        uninverted = _eval(d, workdir=run, invert_data=False)
    np.testing.assert_allclose(uninverted.z_mu, negated.z_mu, rtol=0, atol=1e-6)
    assert "invert_data=False differs from the run's training" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        same = _eval(d, workdir=run, invert_data=True, window=True, window_r=0.85)
    assert caplog.text == ""
    np.testing.assert_array_equal(same.z_mu, _eval(d, workdir=run).z_mu)
    assert np.abs(_eval(d, workdir=run, window=False).z_mu - same.z_mu).max() > 1e-3


def test_weights_and_config_form(run, tiny_dataset):
    ref = _eval(tiny_dataset, workdir=run, epoch=1)
    for config in (run / "config.yaml", None):  # None: the config.yaml beside the weights
        res = _eval(tiny_dataset, weights=run / "weights.1.pkl", config=config)
        np.testing.assert_array_equal(res.z_mu, ref.z_mu)
        assert res.epoch == 1


def test_other_box_is_refused(run, tiny_dataset, tmp_path):
    d = tiny_dataset
    small = _stack(d, tmp_path, "d8.mrcs", lambda x: x[:, 4:12, 4:12])
    with pytest.raises(InputError, match=r"d8.mrcs: images of 8 pixels but the run was trained "
                       r"on 16; downsample"):
        _eval(d, workdir=run, particles=small, ctf=None)


def test_bad_inputs(run, tiny_dataset, tmp_path):
    d = tiny_dataset
    rot, trans = load_poses(d["poses"])
    save_poses(tmp_path / "short.pkl", rot[:100], trans[:100])
    with pytest.raises(InputError, match="short.pkl"):
        _eval(d, workdir=run, poses=tmp_path / "short.pkl")
    with pytest.raises(InputError, match="no such training folder"):
        _eval(d, workdir=tmp_path / "nothere")
    with pytest.raises(InputError, match="weights file not found"):
        _eval(d, weights=tmp_path / "w.pkl", config=run / "config.yaml")
    with pytest.raises(InputError, match="config file not found"):
        _eval(d, weights=run / "weights.1.pkl", config=tmp_path / "config.yaml")
    with pytest.raises(InputError, match="config.pkl"):
        _eval(d, weights=run / "weights.1.pkl", config=tmp_path / "config.pkl")
    with pytest.raises(InputError, match="missing.mrcs does not exist"):
        _eval(d, workdir=run, particles=tmp_path / "missing.mrcs")
    with pytest.raises(InputError, match="batch size"):
        _eval(d, workdir=run, batch_size=0)


def test_outputs_round_trip_and_are_checked(run, tiny_dataset, tmp_path):
    res = _eval(tiny_dataset, workdir=run, ind=SUBSET)
    z, losses = check_output(tmp_path / "new" / "z.pkl"), tmp_path / "losses.pkl"
    assert z.parent.is_dir()  # the output's folder is created, as cryoDRGN does
    save_z(z, res)
    save_losses(losses, res)
    mu, lv = load_z(z)
    np.testing.assert_array_equal(mu, res.z_mu)
    np.testing.assert_array_equal(lv, res.z_logvar)
    got = load_pickle(losses)
    assert got["loss"] == res.summary()["loss"] and got["beta"] == 0.5
    np.testing.assert_array_equal(got["recon_per_particle"], res.recon)
    np.testing.assert_array_equal(got["kld_per_particle"], res.kld)
    np.testing.assert_array_equal(got["loss_per_particle"], res.loss)
    with pytest.raises(InputError, match="exists; choose another name or pass --overwrite"):
        check_output(z)
    assert check_output(z, overwrite=True) == z
    with pytest.raises(InputError, match="is a folder"):
        check_output(tmp_path)
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match="is an existing file"):
        check_output(tmp_path / "afile" / "z.pkl")
