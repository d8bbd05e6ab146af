"""Command line of the preparation commands: downsample and the four parse_* commands, under
both spellings (parse-pose-star is ours, parse_pose_star cryoDRGN's)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from napari_cryodrgn.cli import main
from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.downsample import fourier_crop
from napari_cryodrgn.io.mrc import read_mrc, read_mrc_header, write_mrc
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.poses import load_poses
from napari_cryodrgn.io.star import write_particles_star


@pytest.fixture
def files(tmp_path, poses_ctf_box64):
    """RELION 3.1 and 3.0 .star, cryoSPARC .cs (7 particles, box 64, 1.7 A) and a stack."""
    rot, trans, ctf, D, apix = poses_ctf_box64
    write_mrc(tmp_path / "stack.mrcs",
              np.random.default_rng(0).normal(size=(7, 64, 64)).astype(np.float32), apix)
    write_particles_star(tmp_path / "p31.star", "stack.mrcs", rot, trans, ctf, apix, D)
    write_particles_star(tmp_path / "p30.star", "stack.mrcs", rot, trans, ctf, apix, D,
                         relion31=False)
    write_particles_cs(tmp_path / "p.cs", ">stack.mrcs", rot, trans, ctf, apix, D)
    return dict(dir=tmp_path, rot=rot, trans=trans, ctf=ctf, D=D, apix=apix)


def _plain(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err


# -- downsample ----------------------------------------------------------------------------------
def test_downsample(files, capsys):
    d = files["dir"]
    assert main(["downsample", str(d / "stack.mrcs"), "-D", "32", "-o", str(d / "s32.mrcs"),
                 "-q"]) == 0
    out = capsys.readouterr().out
    assert "wrote 7 images of 32 x 32 pixels (from 64), pixel size 3.4 A" in out
    assert read_mrc_header(d / "s32.mrcs").shape == (7, 32, 32)
    assert main(["downsample", str(d / "p31.star"), "-D", "16", "-o", str(d / "ds" / "c.mrcs"),
                 "--chunk", "3", "-b", "2", "--max-threads", "1", "-q"]) == 0
    assert "3 stack(s) listed in" in capsys.readouterr().out
    whole = read_mrc(d / "stack.mrcs")[0]
    np.testing.assert_allclose(open_particles(d / "ds" / "c.txt").images(slice(None)),
                               fourier_crop(whole, 16), atol=1e-5)
    assert main(["downsample", str(d / "p31.star"), "-D", "32", "-o", str(d / "n" / "p.star"),
                 "-q"]) == 0
    assert load_ctf(d / "n" / "p.star")[0, :2].tolist() == [32, pytest.approx(3.4)]


def test_downsample_volume(files, capsys):
    d = files["dir"]
    write_mrc(d / "map.mrc", np.random.default_rng(1).normal(size=(16, 16, 16)), 1.5)
    assert main(["downsample", str(d / "map.mrc"), "--is-vol", "-D", "8", "-o",
                 str(d / "map8.mrc")]) == 0
    assert "8^3 voxels (from 16^3), voxel size 3 A" in capsys.readouterr().out
    vol, apix = read_mrc(d / "map8.mrc")
    assert vol.shape == (8, 8, 8) and apix == pytest.approx(3.0)
    _one_line_error(capsys, ["downsample", str(d / "map.mrc"), "--is-vol", "-D", "8", "-o",
                             str(d / "x.mrc"), "--chunk", "2"], "--chunk does not apply")
    _one_line_error(capsys, ["downsample", str(d / "stack.mrcs"), "--is-vol", "-D", "8", "-o",
                             str(d / "x.mrc")], "not a cubic map")


# -- parse_* -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["parse_pose_star", "parse-pose-star"])
@pytest.mark.parametrize("star", ["p31.star", "p30.star"])
def test_parse_pose_star(files, capsys, name, star):
    d = files["dir"]
    out = d / "pose.pkl"
    flag = "--outpkl" if name == "parse_pose_star" else "-o"
    assert main([name, str(d / star), flag, str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line == f"parse_pose_star: 7 particles, box 64 px, pixel size 1.7 A -> {out}"
    rot, trans = _plain(out)
    np.testing.assert_allclose(rot, files["rot"], atol=2e-5)
    np.testing.assert_allclose(trans, files["trans"], atol=1e-6)
    # -D replaces the file's box, --Apix the pixel size of origins in Angstrom (cryoDRGN's rule)
    assert main([name, str(d / star), "-o", str(out), "-D", "128", "--Apix", "3.4",
                 "--overwrite"]) == 0
    scale = 0.5 * (0.5 if star == "p31.star" else 1.0)  # RELION 3.0 origins are in pixels
    np.testing.assert_allclose(_plain(out)[1], files["trans"] * scale, atol=1e-6)


@pytest.mark.parametrize("name", ["parse_ctf_star", "parse-ctf-star"])
def test_parse_ctf_star(files, capsys, name):
    d = files["dir"]
    out, png = d / "ctf.pkl", d / "ctf.png"
    assert main([name, str(d / "p31.star"), "-o", str(out), "--png", str(png)]) == 0
    assert f"7 particles, box 64 px, pixel size 1.7 A -> {out}" in capsys.readouterr().out
    ctf = _plain(out)
    assert ctf.dtype == np.float32 and ctf.shape == (7, 9)
    np.testing.assert_allclose(ctf, files["ctf"], rtol=1e-6)
    np.testing.assert_array_equal(ctf, load_ctf(d / "p31.star"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([name, str(d / "p30.star"), "-o", str(out), "--overwrite", "-D", "128",
                 "--Apix", "3.4", "--kv", "200", "--cs", "2", "-w", "0.07", "--ps", "5"]) == 0
    ctf = _plain(out)
    np.testing.assert_allclose(ctf[:, [0, 1, 5, 6, 7, 8]],
                               np.tile([128, 3.4, 200, 2, 0.07, 5], (7, 1)), rtol=1e-6)
    np.testing.assert_allclose(ctf[:, 2:5], files["ctf"][:, 2:5], rtol=1e-6)


@pytest.mark.parametrize("name", ["parse_pose_csparc", "parse-pose-csparc"])
def test_parse_pose_csparc(files, capsys, name):
    d = files["dir"]
    out = d / "pose.pkl"
    assert main([name, str(d / "p.cs"), "-o", str(out)]) == 0
    assert "parse_pose_csparc: 7 particles, box 64 px" in capsys.readouterr().out
    rot, trans = _plain(out)
    np.testing.assert_allclose(rot, files["rot"], atol=1e-5)
    np.testing.assert_allclose(trans, files["trans"], atol=1e-6)
    np.testing.assert_array_equal(rot, load_poses(d / "p.cs")[0])
    assert main([name, str(d / "p.cs"), "-o", str(out), "--overwrite", "--hetrefine",
                 "-D", "128"]) == 0  # -D is ignored: the file has blob/shape
    np.testing.assert_allclose(_plain(out)[1], 2 * files["trans"], atol=1e-6)


@pytest.mark.parametrize("name", ["parse_ctf_csparc", "parse-ctf-csparc"])
def test_parse_ctf_csparc(files, capsys, name):
    d = files["dir"]
    out, png = d / "ctf.pkl", d / "cs.png"
    assert main([name, str(d / "p.cs"), "-o", str(out), "--png", str(png), "-D", "99"]) == 0
    captured = capsys.readouterr()
    assert "parse_ctf_csparc: 7 particles, box 64 px, pixel size 1.7 A" in captured.out
    np.testing.assert_allclose(_plain(out), files["ctf"], rtol=1e-5, atol=1e-5)
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("name", ["parse_pose_star", "parse_ctf_star", "parse_pose_csparc",
                                  "parse_ctf_csparc"])
def test_parse_errors_exit_2(files, capsys, name):
    d = files["dir"]
    src = "p.cs" if "csparc" in name else "p31.star"
    _one_line_error(capsys, [name, str(d / "none" / src), "-o", str(d / "x.pkl")],
                    "does not exist")
    (d / "x.pkl").write_bytes(b"mine")
    _one_line_error(capsys, [name, str(d / src), "-o", str(d / "x.pkl")], "--overwrite")
    assert (d / "x.pkl").read_bytes() == b"mine"
    _one_line_error(capsys, [name.replace("_", "-"), str(d / "stack.mrcs"), "-o",
                             str(d / "y.pkl")], "stack.mrcs")
    assert not (d / "y.pkl").exists()


def test_parse_star_missing_values_name_the_flag(tmp_path, capsys):
    lines = ["data_", "loop_", "_rlnImageName #1", "_rlnAngleRot #2", "_rlnAngleTilt #3",
             "_rlnAnglePsi #4", "_rlnDefocusU #5", "_rlnDefocusV #6", "_rlnDefocusAngle #7",
             "000001@s.mrcs 10 20 30 15000 14000 5"]
    (tmp_path / "bare.star").write_text("\n".join(lines) + "\n")
    bare, out = str(tmp_path / "bare.star"), str(tmp_path / "c.pkl")
    _one_line_error(capsys, ["parse_ctf_star", bare, "-o", out], "-D")
    _one_line_error(capsys, ["parse_ctf_star", bare, "-o", out, "-D", "64"], "--Apix")
    _one_line_error(capsys, ["parse_ctf_star", bare, "-o", out, "-D", "64", "--Apix", "1"],
                    "--kv")
    assert main(["parse_ctf_star", bare, "-o", out, "-D", "64", "--Apix", "1.5", "--kv",
                 "300", "--cs", "2.7", "-w", "0.1"]) == 0
    np.testing.assert_allclose(_plain(out)[0], [64, 1.5, 15000, 14000, 5, 300, 2.7, 0.1, 0],
                               rtol=1e-6)
    # no origins: no box needed (cryoDRGN asks for -D all the same)
    assert main(["parse_pose_star", bare, "-o", str(tmp_path / "p.pkl")]) == 0
    assert "box unknown, pixel size unknown" in capsys.readouterr().out
    assert not _plain(tmp_path / "p.pkl")[1].any()
    _one_line_error(capsys, ["parse_ctf_star", bare, "-o", out, "--overwrite", "-w", "2"],
                    "-w 2")
