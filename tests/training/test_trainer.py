import numpy as np
import pytest
import torch
import yaml

from napari_cryodrgn.errors import InputError, TrainingDiverged
from napari_cryodrgn.io.safepickle import load_pickles
from napari_cryodrgn.model.load import load_run
from napari_cryodrgn.training.api import make_trainer
from napari_cryodrgn.training.checkpoint import load_weights, load_z
from napari_cryodrgn.training.trainer import TRAIN_STATE

NET = dict(qdim=32, qlayers=1, pdim=32, players=1, batch_size=16, precision="fp32")


def _trainer(ds, outdir, **kw):
    args = dict(NET, num_epochs=2, seed=5)
    args.update(kw)
    return make_trainer(ds["particles"], ds["poses"], outdir, 2, ctf=ds["ctf"], **args)


def _drain(trainer):
    return [ev for ev in trainer.run()]


def test_run_folder_has_cryodrgn_layout(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    events = _drain(_trainer(tiny_dataset, out))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    # the last epoch's latents are refined (a second checkpoint event with them)
    assert kinds.count("epoch") == 2 and kinds.count("checkpoint") == 3
    assert events[-2].kind == "checkpoint" and events[-2].message == "z.2.pkl (refined)"
    for name in ["config.yaml", "weights.1.pkl", "weights.2.pkl", "z.1.pkl", "z.2.pkl",
                 "z.2.encoder.pkl", "weights.pkl", "z.pkl", "run.log"]:
        assert (out / name).exists(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["lattice_args"] == {"D": 17, "extent": 0.5, "ignore_DC": True}
    assert cfg["model_args"]["zdim"] == 2 and cfg["model_args"]["enc_mask"] == 8
    assert cfg["dataset_args"]["norm"][0] == 0 and cfg["dataset_args"]["norm"][1] > 0
    mu, logvar = load_pickles(out / "z.2.pkl")
    assert mu.shape == (120, 2) and logvar.shape == (120, 2) and mu.dtype == np.float32
    ck = load_weights(out / "weights.2.pkl")
    assert ck["epoch"] == 2 and "decoder.rand_freqs" in ck["model_state_dict"]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*tmp*"))


@pytest.mark.parametrize("kw", [{"ema": 0.0}, {}])
def test_resume_is_exact(tiny_dataset, tmp_path, kw):
    """A run continued to more epochs equals one trained for them at once. The learning-rate
    anneal is off here: it falls over the last epochs of the number of epochs asked for, so
    a 1-epoch run annealed to zero, continued to 3, is another schedule (stop/resume within
    the same number of epochs, anneal on: test_midepoch.py, test_resilience.py)."""
    kw = dict(kw, lr_anneal=0)
    a = tmp_path / "a"
    _drain(_trainer(tiny_dataset, a, num_epochs=3, **kw))
    b = tmp_path / "b"
    _drain(_trainer(tiny_dataset, b, num_epochs=1, **kw))
    _drain(_trainer(tiny_dataset, b, num_epochs=3, load="latest", **kw))
    za, _ = load_z(a / "z.3.pkl")
    zb, _ = load_z(b / "z.3.pkl")
    np.testing.assert_array_equal(za, zb)
    ca, cb = load_weights(a / "weights.3.pkl"), load_weights(b / "weights.3.pkl")
    averaged = "ema" not in kw  # the default: a moving average of the weights
    keys = ["model_state_dict"] + ([TRAIN_STATE] if averaged else [])
    assert (TRAIN_STATE in ca) == averaged
    for key in keys:
        for k in ca[key]:
            assert torch.equal(ca[key][k], cb[key][k]), (key, k)


def test_weight_average_is_what_checkpoints_save_and_encode_with(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    tr = _trainer(tiny_dataset, out, ema=0.9)
    _drain(tr)
    ck = load_weights(out / "weights.2.pkl")
    avg, last = ck["model_state_dict"], ck[TRAIN_STATE]
    w = "encoder.main.0.weight"
    assert not torch.equal(avg[w], last[w])  # the average lags the last step
    for k, v in tr.ema.module.state_dict().items():
        assert torch.equal(avg[k], v), k
    z, _ = load_z(out / "z.2.encoder.pkl")  # z.2.pkl: refined from these
    np.testing.assert_allclose(z, tr.encode_all()[0], rtol=0, atol=1e-6)
    loaded = load_run(out, epoch=2).model.state_dict()  # what the analyses decode with
    for k, v in loaded.items():
        assert torch.equal(avg[k], v), k


def test_cancel_keeps_last_checkpoint(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    tr = _trainer(tiny_dataset, out, num_epochs=3, log_interval_s=0.0)
    kinds = []
    for ev in tr.run():
        kinds.append(ev.kind)
        if ev.kind == "batch" and ev.epoch == 2:
            tr.cancel()
    assert kinds[-1] == "cancelled"
    assert (out / "weights.1.pkl").exists() and not (out / "weights.2.pkl").exists()
    # the run resumes from the kept checkpoint
    events = _drain(_trainer(tiny_dataset, out, num_epochs=3, load="latest"))
    assert [e.epoch for e in events if e.kind == "epoch"] == [2, 3]


def test_nan_loss_stops_and_keeps_good_checkpoint(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    tr = _trainer(tiny_dataset, out, num_epochs=3)
    events = []
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        for ev in tr.run():
            events.append(ev)
            if ev.kind == "checkpoint" and ev.epoch == 1:
                with torch.no_grad():  # a diverged step: weights blow up
                    tr.model.decoder.decoder.main[0].weight.fill_(float("nan"))
    assert events[-1].kind == "error"
    assert not (out / "weights.2.pkl").exists()
    sd = load_weights(out / "weights.1.pkl")["model_state_dict"]
    assert all(torch.isfinite(v).all() for v in sd.values())
    assert "loss became nan" in (out / "run.log").read_text()


def test_checkpoint_write_is_atomic(tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _drain(_trainer(tiny_dataset, out, num_epochs=1))
    before = (out / "weights.1.pkl").read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    tr = _trainer(tiny_dataset, out, num_epochs=1, overwrite=True)
    with pytest.raises(OSError):
        _drain(tr)
    assert (out / "weights.1.pkl").read_bytes() == before
    assert not [p for p in out.iterdir() if "tmp" in p.name]


def test_refuses_to_overwrite_a_run(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    _drain(_trainer(tiny_dataset, out, num_epochs=1))
    with pytest.raises(InputError, match="already holds a training run"):
        _trainer(tiny_dataset, out, num_epochs=1)


def test_loss_decreases_on_clean_data(tiny_dataset, tmp_path):
    events = _drain(_trainer(tiny_dataset, tmp_path / "r", num_epochs=4, lr=1e-3))
    losses = [e.gen_loss for e in events if e.kind == "epoch"]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("kw", [{"lr": "1e-3"}, {"num_epochs": 0}, {"batch_size": 2.5},
                                {"wd": -1.0}, {"lr": 0.0}, {"ema": 1.0}])
def test_bad_settings_are_refused_clearly(tiny_dataset, tmp_path, kw):
    with pytest.raises(InputError, match="is invalid"):
        _trainer(tiny_dataset, tmp_path / "r", **kw)
    assert not (tmp_path / "r").exists()


def test_outlier_weights_cap_the_pull_of_unexplained_images():
    from napari_cryodrgn.training.trainer import outlier_weights

    per = torch.tensor([1.0, 1.1, 0.9, 1.0, 3.0])  # the last image: 2 above the median
    power = torch.tensor([0.5, 0.4, 0.6, 0.5, 0.5])  # median 0.5
    w = outlier_weights(per, power, 0.5)  # cap: 0.25 above the median
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.25 / 2.0]))
    assert outlier_weights(per, power, 4.0).eq(1).all()  # a cap above every excess: no-op


def test_weight_average_spans_at_most_a_quarter_of_an_epoch():
    from napari_cryodrgn.training.trainer import ema_decay

    assert ema_decay(0.995, 1000) == 0.995  # 1000 batches an epoch: as asked
    assert ema_decay(0.995, 400) == pytest.approx(0.99)  # the last 100 batches
    assert ema_decay(0.995, 8) == 0.5 and ema_decay(0.995, 3) == 0.0  # tiny: the last weights


def test_learning_rate_anneals_over_the_last_epochs(tiny_dataset, tmp_path):
    """--lr-anneal K: the learning rate is --lr until the last K epochs, then falls on a
    cosine to zero at the end of training (a function of the position in the run)."""
    from napari_cryodrgn.training.trainer import lr_factor

    assert lr_factor(5, 3, 10, 10, 0) == 1.0
    assert lr_factor(7, 9, 10, 10, 3) == 1.0  # epochs 1-7 at --lr
    assert lr_factor(9, 5, 11, 10, 3) == pytest.approx(0.5)  # half way through epochs 8-10
    assert lr_factor(10, 9, 10, 10, 3) < 1e-2
    assert lr_factor(1, 0, 10, 2, 3) > 0.99  # K beyond the run: the whole run anneals
    base = 1e-3
    tr = _trainer(tiny_dataset, tmp_path / "run", lr=base, lr_anneal=1, z_refine_steps=0)
    seen = []
    for ev in tr.run():
        if ev.kind == "epoch":
            seen.append(tr.optim.param_groups[0]["lr"])
    assert seen[0] == base  # epoch 1: not annealed
    assert 0 < seen[1] < 0.02 * base  # the last batch of epoch 2
    plain = _trainer(tiny_dataset, tmp_path / "plain", lr=base, z_refine_steps=0, lr_anneal=0)
    for _ in plain.run():
        pass
    assert plain.optim.param_groups[0]["lr"] == base
