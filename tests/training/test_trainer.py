import numpy as np
import pytest
import torch
import yaml

from napari_cryodrgn.errors import InputError, TrainingDiverged
from napari_cryodrgn.io.safepickle import load_pickles
from napari_cryodrgn.training.api import make_trainer
from napari_cryodrgn.training.checkpoint import load_weights, load_z

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
    assert kinds.count("epoch") == 2 and kinds.count("checkpoint") == 2
    for name in ["config.yaml", "weights.1.pkl", "weights.2.pkl", "z.1.pkl", "z.2.pkl",
                 "weights.pkl", "z.pkl", "run.log"]:
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


def test_resume_is_exact(tiny_dataset, tmp_path):
    a = tmp_path / "a"
    _drain(_trainer(tiny_dataset, a, num_epochs=3))
    b = tmp_path / "b"
    _drain(_trainer(tiny_dataset, b, num_epochs=1))
    _drain(_trainer(tiny_dataset, b, num_epochs=3, load="latest"))
    za, _ = load_z(a / "z.3.pkl")
    zb, _ = load_z(b / "z.3.pkl")
    np.testing.assert_array_equal(za, zb)
    wa = load_weights(a / "weights.3.pkl")["model_state_dict"]
    wb = load_weights(b / "weights.3.pkl")["model_state_dict"]
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


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
                                {"wd": -1.0}, {"lr": 0.0}])
def test_bad_settings_are_refused_clearly(tiny_dataset, tmp_path, kw):
    with pytest.raises(InputError, match="is invalid"):
        _trainer(tiny_dataset, tmp_path / "r", **kw)
    assert not (tmp_path / "r").exists()
