"""Per-particle loss: the trainer's reconstruction error per particle, its cache and the
Session's "loss" colouring."""

import logging
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from napari_cryodrgn.analysis.particle_loss import (
    loss_cache_path,
    particle_losses,
    particles_available,
)
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.index import save_index
from napari_cryodrgn.io.safepickle import load_pickle, save_pickle
from napari_cryodrgn.session import Session
from napari_cryodrgn.training.api import make_trainer, resume_trainer
from napari_cryodrgn.training.checkpoint import load_z
from napari_cryodrgn.training.trainer import vae_loss

NET = dict(qdim=32, qlayers=1, pdim=32, players=1, batch_size=16, precision="fp32")


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """Two epochs on 100 of the 120 particles (an --ind run: z rows are not stack rows)."""
    folder = tmp_path_factory.mktemp("loss_run")
    ind = np.flatnonzero(np.arange(120) % 6 != 5)
    save_index(folder / "ind.pkl", ind)
    d = tiny_dataset
    t = make_trainer(d["particles"], d["poses"], folder / "run", 3, ctf=d["ctf"],
                     ind=folder / "ind.pkl", num_epochs=2, seed=2, **NET)
    for _ in t.run():
        pass
    return folder / "run"


@pytest.fixture
def run(trained, tmp_path):
    """A private copy: the losses are cached in the run folder."""
    return shutil.copytree(trained, tmp_path / "run")


def _with_dataset(run, **changes):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["dataset_args"].update(changes)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return cfg


def test_mean_is_the_trainers_eval_loss(run):
    # the losses are at the stored z; put the encoder's there (training refined z.2.pkl), so
    # that they are the trainer's eval loss at z = mu
    shutil.copyfile(run / "z.2.encoder.pkl", run / "z.2.pkl")
    seen = []
    losses = particle_losses(run, batch_size=32, progress=lambda *a: seen.append(a))
    assert losses.shape == (100,) and losses.dtype == np.float32
    assert np.all(np.isfinite(losses)) and np.all(losses > 0)
    assert seen == [(32, 100), (64, 100), (96, 100), (100, 100)]
    # independently: the trainer of this run at its last checkpoint (the weights it saves and
    # encodes with: the moving average), eval mode, z = mu
    tr = resume_trainer(run)
    assert tr.start_epoch == 3
    model = tr.averaged.eval()
    z_stored, _ = load_z(run / "z.2.pkl")
    gens, pers, mus = [], [], []
    with torch.no_grad():
        for s in range(0, tr.data.n, 40):
            rows = np.arange(s, min(s + 40, tr.data.n))
            y, c, enc, rot = tr._batch_tensors(rows)
            _, gen, _, mu, _, per = vae_loss(model, tr.prep, y, c, enc, rot, tr.beta)
            gens.append(gen.item() * len(rows))
            pers.append(per.numpy())
            mus.append(mu.numpy())
    np.testing.assert_allclose(np.concatenate(mus), z_stored, rtol=1e-4, atol=1e-5)
    assert losses.mean() == pytest.approx(sum(gens) / tr.data.n, rel=1e-4)
    np.testing.assert_allclose(losses, np.concatenate(pers), rtol=1e-4)


def test_own_pose_fits_better_than_anothers(run, tmp_path, tiny_dataset):
    own = particle_losses(run)
    rot, trans = load_pickle(tiny_dataset["poses"])
    perm = np.random.default_rng(0).permutation(len(rot))
    save_pickle(tmp_path / "shuffled.pkl", (rot[perm], trans[perm]))
    other = shutil.copytree(run, tmp_path / "other", ignore=shutil.ignore_patterns("explore"))
    _with_dataset(other, poses=str(tmp_path / "shuffled.pkl"))
    shuffled = particle_losses(other)
    assert shuffled.mean() > 1.02 * own.mean()
    assert np.mean(own < shuffled) > 0.6


def test_cache_written_reused_and_repaired(run, tmp_path, caplog):
    path = loss_cache_path(run, 2)
    assert path == run / "explore" / "loss.2.npy" and not path.exists()
    first = particle_losses(run)
    assert path.is_file()
    np.testing.assert_array_equal(np.load(path), first)
    stamp = path.stat().st_mtime_ns
    seen = []
    again = particle_losses(run, progress=lambda *a: seen.append(a))
    assert path.stat().st_mtime_ns == stamp and seen == [(100, 100)]
    np.testing.assert_array_equal(again, first)
    path.write_bytes(b"not an npy file")  # corrupt: recomputed and rewritten
    np.testing.assert_allclose(particle_losses(run), first, rtol=1e-6)
    np.testing.assert_array_equal(np.load(path), particle_losses(run))
    np.save(path, first[:50])  # another run's length: recomputed
    assert particle_losses(run).shape == (100,) and np.load(path).shape == (100,)
    ep1 = particle_losses(run, epoch=1)
    assert loss_cache_path(run, 1).is_file() and not np.allclose(ep1, first)
    # the final z.pkl only: loss.final.npy
    final = shutil.copytree(run, tmp_path / "final", ignore=shutil.ignore_patterns(
        "explore", "z.*.pkl", "weights.*.pkl"))
    np.testing.assert_allclose(particle_losses(final), first, rtol=1e-6)
    assert (final / "explore" / "loss.final.npy").is_file()
    # a folder where nothing can be written: computed, not cached, a warning
    ro = shutil.copytree(run, tmp_path / "ro", ignore=shutil.ignore_patterns("explore"))
    (ro / "explore").write_text("a file where the cache folder would be")
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(particle_losses(ro), first, rtol=1e-6)
    assert "not cached" in caplog.text


def test_stale_cache_recomputed(run):
    first = particle_losses(run)
    np.save(loss_cache_path(run, 2), np.zeros(100, np.float32))
    z = run / "z.2.pkl"
    later = loss_cache_path(run, 2).stat().st_mtime + 10
    os.utime(z, (later, later))  # the epoch was rewritten (a retrained run)
    np.testing.assert_allclose(particle_losses(run), first, rtol=1e-6)


def test_missing_particles(run, tmp_path):
    assert particles_available(run)
    gone = tmp_path / "moved" / "particles.mrcs"
    cfg = _with_dataset(run, particles=str(gone))
    assert not particles_available(run)
    with pytest.raises(InputError, match=r"moved/particles\.mrcs not found \(particles file of "
                                         r".*needs the particles"):
        particle_losses(run)
    s = Session.open(run)
    assert "loss" not in s.colouring_names() and not s.loss_ready()
    with pytest.raises(InputError, match="needs the particles"):
        s.colouring("loss")
    cfg["dataset_args"].pop("particles")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert not particles_available(run)


def test_session_loss_colouring(run):
    s = Session.open(run)
    names = s.colouring_names()
    assert "loss" in names and names.index("loss") > names.index("defocus")
    assert not s.loss_ready()
    vals = s.colouring("loss")
    assert vals.shape == (s.n,) and vals.dtype == np.float32
    assert s.loss_ready() and s.colouring("loss") is vals  # cached in the session
    np.testing.assert_array_equal(vals, np.load(loss_cache_path(run, 2)))
    s.colour_by = "loss"
    t = Session.open(run)
    assert t.loss_ready()  # from the disk cache
    np.testing.assert_array_equal(t.particle_loss(), vals)
    t.set_epoch(1)
    assert not t.loss_ready()
    assert not np.allclose(t.colourings()["loss"], vals)
