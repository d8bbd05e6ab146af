"""The latent refinement after training (training/refine_z.py, the refine_z command)."""

import numpy as np
import pytest
import torch

from napari_cryodrgn.analysis.particle_loss import run_preprocessor
from napari_cryodrgn.cli import main
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.runfolder import RunFolder
from napari_cryodrgn.training.api import make_trainer
from napari_cryodrgn.training.checkpoint import load_z
from napari_cryodrgn.training.refine_z import (
    LatentRefiner,
    population_prior,
    refine_run,
    sample_rows,
)
from napari_cryodrgn.training.trainer import batch_tensors, data_tensors

NET = dict(qdim=32, qlayers=1, pdim=32, players=1, batch_size=16, precision="fp32", seed=5)


def _train(ds, out, **kw):
    args = dict(NET, num_epochs=2)
    args.update(kw)
    return make_trainer(ds["particles"], ds["poses"], out, 2, ctf=ds["ctf"], **args)


@pytest.fixture(scope="module")
def unrefined(tiny_dataset, tmp_path_factory):
    """A run trained without the refinement (--z-refine-steps 0)."""
    out = tmp_path_factory.mktemp("unrefined") / "run"
    for _ in _train(tiny_dataset, out, z_refine_steps=0).run():
        pass
    assert not (out / "z.2.encoder.pkl").exists()
    return out


def test_training_refines_the_last_epoch_like_the_command(tiny_dataset, unrefined, tmp_path):
    """Training with the refinement writes what refine_z writes on the same run trained
    without it; the encoder's z and z_logvar are kept, z.pkl is the refined copy."""
    out = tmp_path / "run"
    events = [ev for ev in _train(tiny_dataset, out, log_interval_s=0.0).run()]
    assert any(ev.kind == "refine" for ev in events)
    enc_mu, enc_lv = load_z(out / "z.2.encoder.pkl")
    z, lv = load_z(out / "z.2.pkl")
    np.testing.assert_array_equal(enc_mu, load_z(unrefined / "z.2.pkl")[0])
    np.testing.assert_array_equal(lv, enc_lv)
    np.testing.assert_array_equal(load_z(out / "z.pkl")[0], z)
    assert not (out / "z.1.encoder.pkl").exists()  # only the last epoch
    assert np.abs(z - enc_mu).mean() > 1e-3
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(unrefined, copy)
    refine_run(copy, precision="fp32")  # the run trained in fp32
    np.testing.assert_allclose(load_z(copy / "z.2.pkl")[0], z, atol=1e-5)


def _problem(workdir, all_rows=False):
    """(model, preprocessor, encoder z, (images, CTF, poses)) of epoch 2 of a run: all its
    particles, or the refinement's sample."""
    folder = RunFolder.open(workdir)
    run = folder.model(2)
    prep = run_preprocessor(run, "cpu")
    data = folder.particle_data(None, "test")
    mu = folder.latents(2).z
    rows = np.arange(len(mu)) if all_rows else sample_rows(len(mu))
    y, c, _, r = batch_tensors(data, prep, rows, *data_tensors(data))
    return run.model.eval(), prep, mu, (y, c, r)


def test_refinement_raises_each_particles_posterior(unrefined):
    """Every particle ends at a higher posterior (in fp32) than the encoder's z gave it, and
    the refined z explain the images better within the band; steps in bf16 gain about what
    fp32 steps gain."""
    model, prep, mu, (y, c, r) = _problem(unrefined, all_rows=True)
    ref = LatentRefiner.fit(model, prep, y, c, r, torch.from_numpy(mu[sample_rows(len(mu))]),
                            mu)
    f = ref.objective(model, y, c, r)
    z0 = torch.from_numpy(mu)
    gains = {}
    for precision in ("fp32", "bf16"):
        ref.precision = precision
        z = ref.refine(model, y, c, r, z0)
        with torch.no_grad():
            before, after = f(z0), f(z)
        print(f"{precision}: objective {before.mean():.3f} -> {after.mean():.3f}")
        assert bool((after <= before + 1e-4).all())
        gains[precision] = float((before - after).mean())
    assert gains["fp32"] > 0.3  # nats of posterior per particle (0.9 here)
    assert gains["bf16"] > 0.8 * gains["fp32"]


def test_refining_again_starts_from_the_encoder(unrefined, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(unrefined, run)
    enc = load_z(run / "z.2.pkl")[0]
    assert main(["refine_z", str(run), "-q"]) == 0
    first = load_z(run / "z.2.pkl")[0]
    assert main(["refine-z", str(run), "-q"]) == 0
    np.testing.assert_array_equal(load_z(run / "z.2.pkl")[0], first)
    np.testing.assert_array_equal(load_z(run / "z.2.encoder.pkl")[0], enc)
    np.testing.assert_array_equal(load_z(run / "z.pkl")[0], first)
    # an earlier epoch leaves the final z.pkl alone
    assert main(["refine_z", str(run), "--epoch", "1", "-q"]) == 0
    assert (run / "z.1.encoder.pkl").exists()
    np.testing.assert_array_equal(load_z(run / "z.pkl")[0], first)


def test_missing_particles_and_bad_steps_are_clear_errors(unrefined, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(unrefined, run)
    cfg = (run / "config.yaml").read_text()
    particles = RunFolder.open(run).particles
    (run / "config.yaml").write_text(cfg.replace(str(particles), str(tmp_path / "gone.mrcs")))
    assert main(["refine_z", str(run), "-q"]) == 2
    err = capsys.readouterr().err
    assert "gone.mrcs" in err and "refining the latents needs the particles" in err
    assert not (run / "z.2.encoder.pkl").exists()
    with pytest.raises(InputError, match="steps must be a positive integer"):
        refine_run(unrefined, steps=0)


def test_stopping_during_the_refinement_keeps_the_encoders_latents(tiny_dataset, tmp_path):
    """A stop while refining leaves the encoder's z and no final files; --load latest then
    refines, and the run ends as one never stopped."""
    out = tmp_path / "run"
    tr = _train(tiny_dataset, out, log_interval_s=0.0, eval_batch_size=16)
    events = []
    for ev in tr.run():
        events.append(ev)
        if ev.kind == "refine":
            tr.request_stop()
    assert "refine" in [e.kind for e in events] and events[-1].kind == "cancelled"
    assert "while refining the latents" in events[-1].message
    assert not (out / "z.2.encoder.pkl").exists() and not (out / "z.pkl").exists()
    enc = load_z(out / "z.2.pkl")[0]
    events = [ev for ev in _train(tiny_dataset, out, load="latest", eval_batch_size=16,
                                          log_interval_s=1e9).run()]
    assert [e.kind for e in events] == ["start", "checkpoint", "done"]
    assert events[1].message == "z.2.pkl (refined)"
    np.testing.assert_array_equal(load_z(out / "z.2.encoder.pkl")[0], enc)
    whole = tmp_path / "whole"
    for _ in _train(tiny_dataset, whole, eval_batch_size=16).run():
        pass
    np.testing.assert_array_equal(load_z(out / "z.pkl")[0], load_z(whole / "z.pkl")[0])
    # once refined, resuming has nothing left to do
    assert [e.kind for e in _train(tiny_dataset, out, load="latest").run()] == ["start", "done"]


def test_band_follows_the_latent_information(unrefined):
    """The band keeps the shells that carry the information about z; an all-noise decoder
    (zero weights in z) gives no information, and the band falls to its floor."""
    model, prep, mu, (y, c, r) = _problem(unrefined)
    rows = sample_rows(len(mu))
    ref = LatentRefiner.fit(model, prep, y, c, r, torch.from_numpy(mu[rows]), mu)
    cum = np.cumsum(ref.info) / ref.info.sum()
    top = int(round(ref.band * prep.D_img))
    assert cum[top] >= 0.95 and (top == 2 or cum[top - 1] < 0.95)
    w = model.decoder.decoder.main[0].weight
    with torch.no_grad():
        w[:, -2:] = 0  # the decoder no longer depends on z
    flat = LatentRefiner.fit(model, prep, y, c, r, torch.from_numpy(mu[rows]), mu)
    assert flat.band == 2 / prep.D_img


def test_population_prior_is_the_latents_gaussian():
    rng = np.random.default_rng(0)
    z = rng.normal([1.0, -2.0], [0.5, 3.0], size=(20000, 2))
    mean, prec = population_prior(z)
    np.testing.assert_allclose(mean, [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(np.linalg.inv(prec), np.diag([0.25, 9.0]), rtol=0.05, atol=0.02)
