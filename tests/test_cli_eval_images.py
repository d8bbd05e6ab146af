"""CLI ``eval-images`` / ``eval_images``: our form (RUN PARTICLES) and cryoDRGN's (PARTICLES
WEIGHTS.pkl -c CONFIG --out-z)."""

import numpy as np
import pytest

from napari_cryodrgn.cli import main
from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.training.checkpoint import load_z
from napari_cryodrgn.training.refine_z import encoder_zfile

SPELLINGS = ["eval-images", "eval_images"]


@pytest.fixture(scope="module")
def run(train_tiny):
    return train_tiny("eval_images_run", zdim=2, epochs=2)


def _data(d):
    return ["--poses", str(d["poses"]), "--ctf", str(d["ctf"]), "--device", "cpu", "-q"]


def _ours(cmd, run, d, z, *extra):
    return [cmd, str(run), str(d["particles"]), *_data(d), "-o", str(z), *map(str, extra)]


def _theirs(cmd, run, d, losses, z, *extra, epoch=1):
    return [cmd, str(d["particles"]), str(run / f"weights.{epoch}.pkl"), "-c",
            str(run / "config.yaml"), "-o", str(losses), "--out-z", str(z), *_data(d),
            *map(str, extra)]


def _one_error_line(capsys, rc, *words):
    out = capsys.readouterr()
    assert rc == 2, out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("cmd", SPELLINGS)
def test_our_form(cmd, run, tiny_dataset, tmp_path, capsys):
    z, losses = tmp_path / "out" / "z.pkl", tmp_path / "losses.pkl"
    assert main(_ours(cmd, run, tiny_dataset, z, "--losses", losses, "--epoch", 1)) == 0
    out = capsys.readouterr().out
    assert "120 particles through" in out and "mean loss" in out and str(z) in out
    mu, lv = load_z(z)
    ref_mu, ref_lv = load_z(run / "z.1.pkl")
    np.testing.assert_allclose(mu, ref_mu, rtol=0, atol=1e-5)
    np.testing.assert_allclose(lv, ref_lv, rtol=0, atol=1e-5)
    got = load_pickle(losses)
    assert got["recon_per_particle"].shape == (120,)
    assert f"{got['loss']:.6f}" in out


@pytest.mark.parametrize("cmd", SPELLINGS)
def test_cryodrgn_form(cmd, run, tiny_dataset, tmp_path, capsys):
    z, losses = tmp_path / "z.pkl", tmp_path / "losses.pkl"
    ind = tmp_path / "ind.pkl"
    from napari_cryodrgn.io.index import save_index

    save_index(ind, np.array([5, 3, 100]))
    argv = _theirs(cmd, run, tiny_dataset, losses, z, "--ind", ind, "-b", 2, "--lazy",
                   "--log-interval", 10, "--max-threads", 2, "-v")
    assert main(argv) == 0
    mu, lv = load_z(z)
    np.testing.assert_allclose(mu, load_z(run / "z.1.pkl")[0][[5, 3, 100]], rtol=0, atol=1e-5)
    got = load_pickle(losses)
    assert {"loss", "recon", "kld"} <= set(got) and type(got["loss"]) is float
    assert got["recon_per_particle"].shape == (3,)


def test_cryodrgn_form_config_beside_weights(run, tiny_dataset, tmp_path):
    z = tmp_path / "z.pkl"
    argv = ["eval_images", str(tiny_dataset["particles"]), str(run / "weights.2.pkl"),
            "-o", str(tmp_path / "l.pkl"), "--out-z", str(z), *_data(tiny_dataset)]
    assert main(argv) == 0
    # the encoder's z (z.2.pkl holds them refined)
    np.testing.assert_allclose(load_z(z)[0], load_z(encoder_zfile(run, 2))[0], rtol=0,
                               atol=1e-5)


def test_overwrite(run, tiny_dataset, tmp_path, capsys):
    z = tmp_path / "z.pkl"
    z.write_bytes(b"keep")
    rc = main(_ours("eval-images", run, tiny_dataset, z))
    _one_error_line(capsys, rc, str(z), "--overwrite")
    assert z.read_bytes() == b"keep"
    assert main(_ours("eval-images", run, tiny_dataset, z, "--overwrite")) == 0
    assert load_z(z)[0].shape == (120, 2)


def test_bad_inputs_exit_2_with_one_line(run, tiny_dataset, tmp_path, capsys):
    d = tiny_dataset
    z, losses = tmp_path / "z.pkl", tmp_path / "l.pkl"
    cases = [
        (_ours("eval-images", tmp_path / "norun", d, z), ["norun: not a training folder"]),
        ([*_ours("eval-images", run, d, z)[:2], str(tmp_path / "missing.mrcs"),
          *_ours("eval-images", run, d, z)[3:]], ["missing.mrcs does not exist"]),
        (_ours("eval-images", run, d, z, "--ind", tmp_path / "noind.pkl"), ["noind.pkl"]),
        (_ours("eval-images", run, d, z, "--epoch", 7), ["no checkpoint for epoch 7"]),
        (_ours("eval-images", run, d, z, "--out-z", tmp_path / "z2.pkl"),
         ["is a folder, but --out-z make", "cryoDRGN's form"]),
        (_ours("eval-images", run, d, z, "--losses", z), ["must be different files"]),
        (_ours("eval-images", run, d, tmp_path / "afile" / "z.pkl"), ["afile"]),
        (_theirs("eval_images", run, d, losses, z, "--epoch", 1), ["--epoch belongs to"]),
        (_theirs("eval_images", run, d, losses, z, "--losses", tmp_path / "x.pkl"),
         ["--losses belongs to"]),
        ([a for a in _theirs("eval_images", run, d, losses, z)
          if a not in ("--out-z", str(z))], ["needs --out-z"]),
        (_theirs("eval_images", run, d, losses, z, epoch=9), ["weights.9.pkl", "not found"]),
    ]
    (tmp_path / "afile").write_text("")
    for argv, words in cases:
        _one_error_line(capsys, main(argv), *words)
    assert not z.exists() and not losses.exists()


def test_other_box_exits_2(run, tiny_dataset, tmp_path, capsys):
    from napari_cryodrgn.io.mrc import write_mrc
    from napari_cryodrgn.io.particles import open_particles

    src = open_particles(tiny_dataset["particles"])
    small = tmp_path / "d8.mrcs"
    write_mrc(small, src.images(np.arange(src.n))[:, 4:12, 4:12].astype(np.float32))
    argv = ["eval-images", str(run), str(small), "--poses", str(tiny_dataset["poses"]),
            "-o", str(tmp_path / "z.pkl"), "-q", "--device", "cpu"]
    _one_error_line(capsys, main(argv), "8 pixels", "trained on 16", "downsample")
