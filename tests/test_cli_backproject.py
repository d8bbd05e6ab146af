"""``backproject-voxel`` / ``backproject_voxel`` on the command line: outputs, voxel size, the
printed lines, and one-line errors (exit 2) for bad inputs."""

import mrcfile
import numpy as np
import pytest

from napari_cryodrgn.analysis.backproject import backproject_dataset, resolution_text
from napari_cryodrgn.cli import main
from napari_cryodrgn.io.ctf import load_ctf, save_ctf
from napari_cryodrgn.io.index import save_index
from napari_cryodrgn.io.mrc import read_mrc
from napari_cryodrgn.io.poses import load_poses, save_poses

FOLDER_FILES = ["backproject.mrc", "half_map_a.mrc", "half_map_b.mrc", "fsc-vals.txt",
                "fsc-plot.png"]


def _args(ds, out, *extra, ctf=True):
    return ["backproject_voxel", str(ds["particles"]), "--poses", str(ds["poses"]),
            *(["--ctf", str(ds["ctf"])] if ctf else []), "-o", str(out), "-q", *map(str, extra)]


def _voxel(path):
    with mrcfile.open(path) as m:
        return float(m.voxel_size.x), m.data.shape


def fails(capsys, argv, *needles):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_folder_output_as_cryodrgn_names_it(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "bp"
    assert main(_args(tiny_dataset, out)) == 0
    text = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(FOLDER_FILES)
    for name in FOLDER_FILES[:3]:
        assert _voxel(out / name) == (pytest.approx(3.0), (16, 16, 16))
    assert "backprojected 120 particles, box 16, 3 A/pixel; CTF correction: mul" in text
    line = next(s for s in text.splitlines() if s.startswith("half-map FSC"))
    assert "60 + 60 particles" in line and "0.5 at " in line and "0.143 at " in line
    table = np.loadtxt(out / "fsc-vals.txt")
    assert table.shape == (8, 3)
    np.testing.assert_allclose(table[:, 0], np.arange(8) / 16, atol=1e-6)
    np.testing.assert_allclose(table[:, 1], table[:, 0] / 3.0, atol=1e-6)
    assert table[1, 2] > 0.9
    assert (out / "fsc-plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the command writes the library's map
    rec = backproject_dataset(tiny_dataset["particles"], tiny_dataset["poses"],
                              tiny_dataset["ctf"])
    np.testing.assert_allclose(read_mrc(out / "backproject.mrc")[0], rec.volume, atol=1e-6)
    assert f"0.143 at {resolution_text(rec, 0.143)}" in line


def test_mrc_output_with_index_and_first(tiny_dataset, tmp_path, capsys):
    ind = tmp_path / "ind.pkl"
    save_index(ind, np.arange(10, 110))
    out = tmp_path / "maps" / "consensus.mrc"
    out.parent.mkdir()
    assert main(["backproject-voxel", *_args(tiny_dataset, out, "--ind", ind, "--first", 41)[1:]]
                ) == 0
    text = capsys.readouterr().out
    assert "backprojected 41 particles" in text and "21 + 20 particles" in text
    names = {"consensus.mrc", "consensus_half_a.mrc", "consensus_half_b.mrc",
             "consensus_fsc.txt", "consensus_fsc.png"}
    assert {p.name for p in out.parent.iterdir()} == names
    rec = backproject_dataset(tiny_dataset["particles"], tiny_dataset["poses"],
                              tiny_dataset["ctf"], ind=ind, first=41)
    np.testing.assert_allclose(read_mrc(out)[0], rec.volume, atol=1e-6)


def test_without_ctf_or_half_maps(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "m.mrc"
    assert main(_args(tiny_dataset, out, "--no-half-maps", ctf=False)) == 0
    text = capsys.readouterr().out
    assert "no CTF correction (no --ctf given)" in text and "FSC" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["m.mrc"]
    assert _voxel(out)[0] == pytest.approx(3.0)  # from the stack's header


def test_voxel_size_needs_a_source(tiny_dataset, tmp_path, capsys):
    data, _ = read_mrc(tiny_dataset["particles"])
    bare = tmp_path / "bare.mrcs"
    with mrcfile.new(bare) as m:  # no pixel size in the header
        m.set_data(data)
    argv = ["backproject_voxel", bare, "--poses", tiny_dataset["poses"], "-o", tmp_path / "o"]
    fails(capsys, argv, "pixel size", "--Apix")
    assert main([str(a) for a in argv] + ["--Apix", "2.5", "-q"]) == 0
    assert _voxel(tmp_path / "o" / "backproject.mrc")[0] == pytest.approx(2.5)
    # the CTF's pixel size wins over the header, rescaled to the stack's box
    ctf = load_ctf(tiny_dataset["ctf"])
    ctf[:, 0], ctf[:, 1] = 32, 1.5  # made at box 32: 3.0 A at box 16
    save_ctf(tmp_path / "ctf32.pkl", ctf)
    assert main(["backproject_voxel", str(bare), "--poses", str(tiny_dataset["poses"]),
                 "--ctf", str(tmp_path / "ctf32.pkl"), "-o", str(tmp_path / "c.mrc"),
                 "-q"]) == 0
    assert _voxel(tmp_path / "c.mrc")[0] == pytest.approx(3.0)
    # --Apix replaces the header's; against a CTF it must agree
    assert main(_args(tiny_dataset, tmp_path / "a.mrc", "--Apix", 2.0, "--no-half-maps",
                      ctf=False)) == 0
    assert _voxel(tmp_path / "a.mrc")[0] == pytest.approx(2.0)
    fails(capsys, _args(tiny_dataset, tmp_path / "b.mrc", "--Apix", 2.0), "--Apix")


def test_existing_outputs_need_overwrite(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "bp"
    assert main(_args(tiny_dataset, out, "--first", 20)) == 0
    before = (out / "backproject.mrc").read_bytes()
    fails(capsys, _args(tiny_dataset, out), "already exists", "--overwrite")
    assert (out / "backproject.mrc").read_bytes() == before
    assert main(_args(tiny_dataset, out, "--overwrite")) == 0
    assert (out / "backproject.mrc").read_bytes() != before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_bad_inputs(tiny_dataset, tmp_path, capsys):
    ds = tiny_dataset
    out = tmp_path / "o"
    rot, trans = load_poses(ds["poses"])
    save_poses(tmp_path / "short.pkl", rot[:100], trans[:100])
    ctf = load_ctf(ds["ctf"])
    ctf[:, 0] = 32  # another box: 6 A per pixel once rescaled, the stack says 3
    save_ctf(tmp_path / "ctf_other_box.pkl", ctf)
    save_index(tmp_path / "far.pkl", np.array([0, 500]))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spelt = {"particles": ds["particles"], "poses": ds["poses"], "ctf": ds["ctf"]}
    cases = [
        ({"particles": tmp_path / "missing.mrcs"}, [], "does not exist"),
        ({"poses": tmp_path / "missing.pkl"}, [], "does not exist"),
        ({"ctf": tmp_path / "missing_ctf.pkl"}, [], "does not exist"),
        ({"poses": tmp_path / "short.pkl"}, [], "100 particles"),
        ({"ctf": tmp_path / "ctf_other_box.pkl"}, [], "disagrees"),
        ({}, ["--ind", tmp_path / "far.pkl"], "500"),
        ({}, ["--first", 0], "--first"),
        ({}, ["--first", -3], "--first"),
        ({}, ["--reg-weight", -1], "--reg-weight"),
        ({}, ["-b", 0], "batch size"),
    ]
    for change, extra, needle in cases:
        f = {**spelt, **change}
        fails(capsys, ["backproject_voxel", f["particles"], "--poses", f["poses"], "--ctf",
                       f["ctf"], "-o", out, *extra], needle)
    for bad_out in (blocker / "sub", blocker / "m.mrc", blocker):
        fails(capsys, _args(ds, bad_out), str(blocker))
    assert not out.exists()  # nothing made for failed runs
