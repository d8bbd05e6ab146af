"""The training settings declared once (training/settings.py): the CLI's flags, the checks,
the sentinels, the trainer's configuration, the demo's settings and the output-folder rule
all come from the declaration."""

import argparse
import dataclasses

import pytest
import torch

from napari_cryodrgn.cli import build_parser, main
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.model.vae import ModelArgs
from napari_cryodrgn.training import settings as st
from napari_cryodrgn.training.outdir import check_new_run_folder
from napari_cryodrgn.training.settings import TrainConfig, TrainSettings

# The ``train`` flags before the declaration existed (napari-cryodrgn 0.x, cryoDRGN's
# spellings): option strings -> (default, required, action, choices, type). Every one must
# still be accepted with the same default.
BEFORE = {
    (): (None, True, "_StoreAction", None, None),
    ("--poses",): (None, True, "_StoreAction", None, None),
    ("--ctf",): (None, False, "_StoreAction", None, None),
    ("-o", "--outdir"): (None, True, "_StoreAction", None, "Path"),
    ("--zdim",): (None, True, "_StoreAction", None, "int"),
    ("-n", "--num-epochs"): (20, False, "_StoreAction", None, "int"),
    ("-b", "--batch-size"): (16, False, "_StoreAction", None, "int"),
    ("--lr",): (0.001, False, "_StoreAction", None, "float"),
    ("--wd",): (0.0, False, "_StoreAction", None, "float"),
    ("--beta",): (None, False, "_StoreAction", None, "float"),
    ("--enc-dim",): (1024, False, "_StoreAction", None, "int"),
    ("--enc-layers",): (3, False, "_StoreAction", None, "int"),
    ("--dec-dim",): (1024, False, "_StoreAction", None, "int"),
    ("--dec-layers",): (3, False, "_StoreAction", None, "int"),
    ("--encode-mode",): ("resid", False, "_StoreAction", ["resid", "mlp"], None),
    ("--enc-mask",): (None, False, "_StoreAction", None, "int"),
    ("--enc-input",): ("image", False, "_StoreAction", ["image", "residual"], None),
    ("--no-enc-inplane",): (True, False, "_StoreFalseAction", None, None),
    ("--refine-steps",): (0, False, "_StoreAction", None, "int"),
    ("--refine-step",): (0.5, False, "_StoreAction", None, "float"),
    ("--robust",): (0.25, False, "_StoreAction", None, "float"),
    ("--ema",): (0.995, False, "_StoreAction", None, "float"),
    ("--z-refine-steps",): (3, False, "_StoreAction", None, "int"),
    ("--lr-anneal",): (3, False, "_StoreAction", None, "int"),
    ("--pe-type",): ("gaussian", False, "_StoreAction",
                     ["gaussian", "geom_lowf", "geom_ft", "geom_full", "geom_nohighf",
                      "linear_lowf"], None),
    ("--pe-dim",): (None, False, "_StoreAction", None, "int"),
    ("--feat-sigma",): (0.5, False, "_StoreAction", None, "float"),
    ("--domain",): ("fourier", False, "_StoreAction", ["fourier", "hartley"], None),
    ("--activation",): ("relu", False, "_StoreAction", ["relu", "leaky_relu"], None),
    ("--ind",): (None, False, "_StoreAction", None, None),
    ("--datadir",): (None, False, "_StoreAction", None, None),
    ("--seed",): (0, False, "_StoreAction", None, "int"),
    ("--load",): (None, False, "_StoreAction", None, None),
    ("--checkpoint",): (1, False, "_StoreAction", None, "int"),
    ("--checkpoint-minutes",): (30.0, False, "_StoreAction", None, "float"),
    ("--uninvert-data",): (True, False, "_StoreFalseAction", None, None),
    ("--no-window",): (True, False, "_StoreFalseAction", None, None),
    ("--window-r",): (0.85, False, "_StoreAction", None, "float"),
    ("--Apix",): (None, False, "_StoreAction", None, "float"),
    ("--device",): ("auto", False, "_StoreAction", None, None),
    ("--precision",): ("auto", False, "_StoreAction", ["auto", "fp32", "bf16", "fp16"], None),
    ("--shuffler-size",): (None, False, "_StoreAction", None, "int"),
    ("--prefetch",): (4, False, "_StoreAction", None, "int"),
    ("--launcher",): ("auto", False, "_StoreAction", ["auto", "torchrun", "slurm", "none"],
                      None),
    ("--multigpu",): (False, False, "_StoreTrueAction", None, None),
    ("--no-amp",): (False, False, "_StoreTrueAction", None, None),
    ("--max-threads",): (None, False, "_StoreAction", None, "int"),
    ("--num-workers",): (None, False, "_StoreAction", None, "int"),
    ("--lazy",): (False, False, "_StoreTrueAction", None, None),
    ("--overwrite",): (False, False, "_StoreTrueAction", None, None),
    ("-q", "--quiet"): (False, False, "_StoreTrueAction", None, None),
}


def _train_parser(alias="train") -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[alias]


def _actions(parser):
    return {tuple(a.option_strings): a for a in parser._actions
            if not isinstance(a, argparse._HelpAction)}


@pytest.mark.parametrize("alias", ["train", "train_vae"])
def test_generated_flags_are_todays(alias):
    acts = _actions(_train_parser(alias))
    assert set(acts) == set(BEFORE)
    for flags, (dflt, required, action, choices, typ) in BEFORE.items():
        a = acts[flags]
        got = (a.default, a.required, type(a).__name__, a.choices,
               getattr(a.type, "__name__", a.type))
        assert got == (dflt, required, action, choices, typ), flags
        assert a.help, flags


def test_generated_flags_are_the_declared_ones():
    acts = {a.dest: a for a in _actions(_train_parser()).values()}
    declared = {**st.specs("gui", "advanced", "cli"), **st.CLI_SPECS}
    assert set(acts) == set(declared)  # every setting shown on the CLI has its flag
    for name, spec in declared.items():
        a = acts[name]
        assert tuple(a.option_strings) == (() if spec.positional else spec.flags), name
        assert list(a.choices or ()) == list(spec.choices), name
        if not (spec.cli_required or spec.positional):
            dflt = (TrainSettings.__dataclass_fields__.get(name)
                    or st.CliOptions.__dataclass_fields__[name]).default
            assert a.default == dflt, name
    for name in st.specs("api"):
        assert name not in acts


def test_args_become_the_declared_settings(tmp_path):
    args = _train_parser().parse_args(["p.mrcs", "--poses", "p.pkl", "-o", str(tmp_path / "o"),
                                       "--zdim", "4"])
    settings, opts = st.from_args(args)
    assert settings == TrainSettings(particles="p.mrcs", poses="p.pkl", outdir=tmp_path / "o",
                                     zdim=4)
    assert opts == st.CliOptions()
    args = _train_parser().parse_args(["p.mrcs", "--poses", "p.pkl", "-o", "o", "--zdim", "2",
                                       "--enc-dim", "64", "--uninvert-data", "--no-amp",
                                       "--enc-mask", "-1", "--Apix", "2.5", "--overwrite"])
    settings, opts = st.from_args(args)
    assert (settings.qdim, settings.invert_data, settings.precision, settings.enc_mask,
            settings.apix) == (64, False, "fp32", -1, 2.5)
    assert opts.overwrite and not opts.quiet


def _bad_values(spec):
    """Values that the declaration must refuse for a setting."""
    if spec.kind == "int":
        out = ["3", 2.5, True]
        if spec.min is not None:
            low = int(spec.min) - 1
            out.append(low - 1 if low == spec.none_alias else low)  # -2: enc_mask's "D/2"
        return out
    if spec.kind == "float":
        out = ["0.5", float("nan")]
        if spec.min is not None:
            out.append(spec.min - 1.0)
        if spec.above is not None:
            out.append(spec.above)
        return out
    if spec.kind == "bool":
        return [1, "yes"]
    if spec.kind == "str":
        return [3] + (["nonsense"] if spec.choices else [])
    if spec.kind in ("file", "dir", "outdir"):
        return [3, ""]
    return [[1, 2]]  # dict


@pytest.mark.parametrize("name", st.NAMES)
def test_every_setting_is_checked_with_one_line(name):
    spec = st.SPECS[name]
    assert st.check_value(name, st.default(name)) == st.default(name) or name in (
        "particles", "poses", "outdir")
    for bad in _bad_values(spec):
        with pytest.raises(InputError) as e:
            st.check_values({name: bad})
        msg = str(e.value)
        assert "\n" not in msg and f"setting {name}=" in msg and "is invalid: expected" in msg
        if spec.flags and not spec.positional:
            assert spec.flag in msg


def test_checks_convert_and_refuse_clearly(tmp_path):
    vals = st.check_values({"lr": 1, "beta": None, "enc_mask": -2, "wd": 0})
    assert vals == {"lr": 1.0, "beta": None, "enc_mask": None, "wd": 0.0}
    assert isinstance(vals["lr"], float)
    with pytest.raises(InputError, match="no training setting named qdimm"):
        TrainSettings.from_kwargs(qdimm=3)
    with pytest.raises(InputError, match="Choose a particle file"):
        TrainSettings().checked()
    with pytest.raises(InputError, match="Poses: .*nope.pkl does not exist"):
        TrainSettings(particles=__file__, poses=str(tmp_path / "nope.pkl"),
                      outdir=str(tmp_path / "o")).checked()


def test_cli_refuses_a_bad_value_in_one_line(tmp_path, capsys):
    assert main(["train", "p.mrcs", "--poses", "p.pkl", "-o", str(tmp_path / "o"), "--zdim", "0"]
                ) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zdim=0 (--zdim) is invalid" in err
    assert not (tmp_path / "o").exists()


def test_trainer_config_and_model_args_come_from_the_declaration():
    model = set(ModelArgs.__dataclass_fields__)
    assert set(st.specs(part="model")) == model
    train = set(TrainConfig.__dataclass_fields__) - {"outdir", "model", "dataset_args"}
    assert set(st.specs(part="train")) == train
    cfg = TrainConfig(outdir="x")
    for name in train:
        assert getattr(cfg, name) == st.default(name), name


def test_sentinels_are_resolved_in_one_place(tiny_dataset, tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    s = TrainSettings(zdim=4)
    r = st.resolve(s, D=16, n=100, device=cpu)
    assert (r.beta, r.enc_mask, r.shuffler_size, r.pe_dim) == (0.25, 8, 0, None)
    assert r.precision in ("bf16", "fp32") and r.device == "auto"
    explicit = TrainSettings(zdim=4, beta=0.5, enc_mask=-1, shuffler_size=64, precision="fp32")
    r = st.resolve(explicit, D=16, n=100, device=cpu)
    assert (r.beta, r.enc_mask, r.shuffler_size, r.precision) == (0.5, -1, 64, "fp32")
    # the trainer receives resolve()'s values: no sentinel is left for it to interpret
    from napari_cryodrgn.training import api

    calls = []

    def spy(*a, **k):
        calls.append(a)
        return st.resolve(*a, **k)

    monkeypatch.setattr(api, "resolve", spy)
    d = tiny_dataset
    tr = api.make_trainer(d["particles"], d["poses"], tmp_path / "r", 2, ctf=d["ctf"],
                          qdim=16, qlayers=1, pdim=16, players=1)
    try:
        assert len(calls) == 1
        cfg = tr.cfg
        assert cfg.beta == 0.5 and cfg.model.enc_mask == 8 and cfg.shuffler_size == 0
        assert cfg.precision == tr.precision != "auto" and tr.beta == 0.5
        assert cfg.device == "auto"  # the request is recorded: a resumed run picks again
    finally:
        tr.ctx.close()


def test_demo_settings_are_an_instance_of_the_declaration(tmp_path, monkeypatch):
    from napari_cryodrgn import demo

    assert isinstance(demo.DEMO_SETTINGS, TrainSettings)
    seen = []

    class Stop(Exception):
        pass

    def capture(settings, overwrite=False):
        seen.append(settings)
        raise Stop

    monkeypatch.setattr(demo, "trainer_for", capture)
    with pytest.raises(Stop):
        demo.run_demo(tmp_path / "d", n=40, D=16, epochs=3, zdim=5, explore=False,
                      log=lambda *_: None)
    (s,) = seen
    assert dataclasses.replace(s, particles=None, poses=None, ctf=None, outdir=None, zdim=8,
                               num_epochs=20) == dataclasses.replace(demo.DEMO_SETTINGS)
    assert (s.zdim, s.num_epochs, s.qdim) == (5, 3, 128)
    assert s.particles.endswith("particles.mrcs") and s.checked() == s


def test_gui_defaults_are_the_declared_ones_with_the_dock_preset():
    g = st.gui_defaults()
    assert dataclasses.replace(g, qdim=1024, qlayers=3, pdim=1024, players=3) == TrainSettings()
    assert st.preset_of(g) == st.GUI_PRESET


# -- the output-folder rule (the same for the CLI and the Train dock) ------------------------
def test_output_folder_rule(tmp_path):
    check_new_run_folder(tmp_path / "new")  # a new folder
    empty = tmp_path / "empty"
    empty.mkdir()
    check_new_run_folder(empty)  # an existing empty folder
    (empty / ".DS_Store").write_bytes(b"")
    check_new_run_folder(empty)  # the OS's litter does not count
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is an existing file"):
        check_new_run_folder(f)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match=r"is not empty \(it holds notes.txt\)") as e:
        check_new_run_folder(busy)
    assert "\n" not in str(e.value)
    check_new_run_folder(busy, overwrite=True)
    check_new_run_folder(busy, own_files=[busy / "notes.txt"])  # this run's own input
    for marker in ("checkpoint.inprogress.pkl", "weights.3.pkl", "config.yaml"):
        run = tmp_path / marker.replace(".", "_")
        run.mkdir()
        (run / marker).write_bytes(b"")
        with pytest.raises(InputError, match="already holds a training run") as e:
            check_new_run_folder(run)
        assert "press Resume / --load latest" in str(e.value)


def test_cli_uses_the_output_folder_rule(tiny_dataset, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("precious")
    d = tiny_dataset
    argv = ["train", str(d["particles"]), "--poses", str(d["poses"]), "--ctf", str(d["ctf"]),
            "--zdim", "2", "-n", "1", "-q"]
    assert main([*argv, "-o", str(busy)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and err.count("\n") == 1
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
