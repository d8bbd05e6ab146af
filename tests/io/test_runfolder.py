"""RunFolder: one owner of a training folder's facts. The particle numbering of a run trained
on a subset is never guessed; a folder moved with its data still finds its files; a pixel size
that is not known is said, not assumed."""

import shutil

import numpy as np
import pytest
import yaml

from napari_cryodrgn.cli import main
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.index import load_index, save_index
from napari_cryodrgn.io.runfolder import RunFolder
from napari_cryodrgn.session import Session
from napari_cryodrgn.training.api import make_trainer

NET = dict(qdim=32, qlayers=1, pdim=32, players=1, batch_size=16, precision="fp32")


@pytest.fixture(scope="module")
def subset_run(tiny_dataset, tmp_path_factory):
    """A project folder: data/ (the tiny dataset and an index of 70 of its 120 particles) and
    run/ trained on that subset with absolute paths in config.yaml."""
    root = tmp_path_factory.mktemp("project")
    data = root / "data"
    shutil.copytree(tiny_dataset["particles"].parent, data)
    ind = np.sort(np.random.default_rng(1).choice(120, 70, replace=False))
    save_index(data / "subset.pkl", ind)
    for _ in make_trainer(data / "particles.mrcs", data / "poses.pkl", root / "run", 2,
                          ctf=data / "ctf.pkl", ind=data / "subset.pkl", num_epochs=1,
                          **NET).run():
        pass
    return root, ind


def _copy(src_root, dst):
    shutil.copytree(src_root, dst)
    return dst


def test_recorded_files_and_numbering(subset_run):
    root, ind = subset_run
    run = RunFolder.open(root / "run")
    assert run.particles == (root / "data" / "particles.mrcs").resolve()
    np.testing.assert_array_equal(run.ind, ind)
    np.testing.assert_array_equal(run.particle_ind([0, 69]), ind[[0, 69]])
    assert run.n_original == 120 and run.D == 16 and run.zdim == 2
    assert run.apix == pytest.approx(3.0)
    assert run.weights() == (root / "run" / "weights.1.pkl", 1)
    assert run.latents().z.shape == (70, 2)


def test_a_run_moved_with_its_data_finds_its_files(subset_run, tmp_path):
    root, ind = subset_run
    moved = _copy(root, tmp_path / "elsewhere")
    shutil.rmtree(tmp_path / "elsewhere" / "run" / "explore", ignore_errors=True)
    # the recorded paths point at the old place: move the old one away for the test
    old = root.rename(root.with_name(root.name + "_away"))
    try:
        run = RunFolder.open(moved / "run")
        assert run.particles == moved / "data" / "particles.mrcs"
        np.testing.assert_array_equal(run.ind, ind)
        s = Session.open(moved / "run")
        np.testing.assert_array_equal(s.particle_ind, ind)
        assert "defocus" in s.colouring_names()
    finally:
        old.rename(root)


def test_missing_index_is_never_guessed(subset_run, tmp_path, capsys):
    root, ind = subset_run
    proj = _copy(root, tmp_path / "proj")
    cfg = yaml.safe_load((proj / "run" / "config.yaml").read_text())
    cfg["dataset_args"]["ind"] = str(tmp_path / "gone" / "subset.pkl")
    cfg["dataset_args"]["particles"] = str(proj / "data" / "particles.mrcs")
    cfg["dataset_args"]["poses"] = str(proj / "data" / "poses.pkl")
    cfg["dataset_args"]["ctf"] = str(proj / "data" / "ctf.pkl")
    (proj / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = proj / "run"
    s = Session.open(run)  # exploring works; anything needing the numbering refuses
    s.select(np.arange(10))
    with pytest.raises(InputError, match=r"gone/subset\.pkl, which is not found.*--ind FILE"):
        s.save_selection(tmp_path / "sel.pkl")
    with pytest.raises(InputError, match="Locate index file"):
        s.selected_indices(original=True)
    assert "defocus" not in s.colouring_names()  # rows cannot be matched to the CTF file
    from napari_cryodrgn.analysis.particle_loss import particle_losses

    with pytest.raises(InputError, match=r"subset\.pkl"):
        particle_losses(run)
    from napari_cryodrgn.training.api import train_on_selection

    save_index(tmp_path / "pick.pkl", ind[:5])
    with pytest.raises(InputError, match=r"subset\.pkl"):
        train_on_selection(run, tmp_path / "pick.pkl", tmp_path / "child", num_epochs=1)
    # the CLI: one line, exit 2, the remedy; --ind gives the file
    assert main(["select", str(run), "--saved", "-o", str(tmp_path / "a.pkl")]) == 2
    err = capsys.readouterr().err
    assert "subset.pkl" in err and "--ind" in err and "Traceback" not in err
    assert not (tmp_path / "a.pkl").exists()
    assert main(["select", str(run), "--saved", "--ind", str(proj / "data" / "subset.pkl"),
                 "-o", str(tmp_path / "b.pkl")]) == 0
    np.testing.assert_array_equal(load_index(tmp_path / "b.pkl", None), ind[:10])
    # an index file of another length is refused, not used
    save_index(tmp_path / "other.pkl", np.arange(50))
    with pytest.raises(InputError, match="holds 50 indices but"):
        s.locate_index(tmp_path / "other.pkl")
    # located once, remembered for every later user of the folder
    s.locate_index(proj / "data" / "subset.pkl")
    path, inv = s.save_selection(tmp_path / "sel.pkl")
    np.testing.assert_array_equal(load_index(path, None), ind[:10])
    np.testing.assert_array_equal(np.sort(load_index(inv, None)), ind[10:])
    assert "defocus" in s.colouring_names()
    np.testing.assert_array_equal(Session.open(run).particle_ind, ind)
    assert main(["select", str(run), "--saved", "-o", str(tmp_path / "c.pkl")]) == 0


def test_unknown_pixel_size_is_said(subset_run, tmp_path, capsys):
    root, _ = subset_run
    proj = _copy(root, tmp_path / "proj")
    cfg = yaml.safe_load((proj / "run" / "config.yaml").read_text())
    cfg["dataset_args"].pop("apix")
    cfg["dataset_args"]["ctf"] = str(tmp_path / "nowhere" / "ctf.pkl")
    (proj / "run" / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = RunFolder.open(proj / "run")
    assert run.apix is None
    with pytest.raises(InputError, match=r"pixel size of the maps is unknown .*ctf\.pkl is not "
                                         r"found.*--Apix"):
        run.require_apix("the maps")
    assert main(["eval-vol", str(proj / "run"), "-z", "0", "0", "-o",
                 str(tmp_path / "m.mrc")]) == 2
    assert "--Apix" in capsys.readouterr().err
    assert main(["eval-vol", str(proj / "run"), "-z", "0", "0", "-o", str(tmp_path / "m.mrc"),
                 "--Apix", "2.5"]) == 0
