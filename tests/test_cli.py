"""The command line: each user error prints one clear line and exits non-zero."""

import pickle
import re

import mrcfile
import numpy as np
import pytest

from napari_cryodrgn.cli import main
from napari_cryodrgn.io.mrc import read_mrc, write_mrc
from napari_cryodrgn.io.safepickle import load_pickle

NET = ["--enc-dim", "32", "--enc-layers", "1", "--dec-dim", "32", "--dec-layers", "1",
       "--precision", "fp32", "-q"]


def train_args(ds, out, *extra, particles=None, poses=None, ctf=None):
    return ["train", str(particles or ds["particles"]), "--poses", str(poses or ds["poses"]),
            "--ctf", str(ctf or ds["ctf"]), "-o", str(out), "--zdim", "2", "-n", "1", *NET,
            *extra]


def fails(capsys, argv, *needles, code=2):
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run") / "run"
    assert main(train_args(tiny_dataset, out)) == 0
    return out


def test_train_and_eval_vol(trained, tmp_path):
    assert (trained / "weights.1.pkl").exists()
    zfile = tmp_path / "z.txt"
    np.savetxt(zfile, [[0.0, 0.0], [1.0, -1.0]])
    assert main(["eval-vol", str(trained), "--zfile", str(zfile), "-o", str(tmp_path / "v")]) == 0
    vol, apix = read_mrc(tmp_path / "v" / "vol_002.mrc")
    assert vol.shape == (16, 16, 16) and apix == pytest.approx(3.0)
    assert np.loadtxt(tmp_path / "v" / "z_values.txt").shape == (2, 2)
    assert main(["eval-vol", str(trained), "-z", "0.5", "0.5", "-o", str(tmp_path / "one.mrc"),
                 "--Apix", "2.5"]) == 0
    with mrcfile.open(tmp_path / "one.mrc") as m:
        assert float(m.voxel_size.x) == pytest.approx(2.5)


def test_eval_vol_errors(trained, tmp_path, capsys):
    fails(capsys, ["eval-vol", trained, "-z", "1", "2", "3", "-o", tmp_path / "x"], "zdim 2")
    fails(capsys, ["eval-vol", trained, "--epoch", "7", "-z", "0", "0", "-o", tmp_path / "x"],
          "no checkpoint for epoch 7")
    fails(capsys, ["eval-vol", tmp_path, "-z", "0", "0", "-o", tmp_path / "x"], "config.yaml")


def test_missing_particles(tiny_dataset, tmp_path, capsys):
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", particles=tmp_path / "nope.mrcs"),
          "nope.mrcs")
    assert not (tmp_path / "o").exists()


def test_not_an_mrc(tiny_dataset, tmp_path, capsys):
    bad = tmp_path / "bad.mrcs"
    bad.write_bytes(b"hello world" * 200)
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", particles=bad), "bad.mrcs")


def test_truncated_stack(tiny_dataset, tmp_path, capsys):
    data = (tmp_path / "t.mrcs")
    raw = open(tiny_dataset["particles"], "rb").read()
    data.write_bytes(raw[: len(raw) - 16 * 16 * 4 * 10])
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", particles=data), "t.mrcs")


def test_odd_and_non_square_boxes(tiny_dataset, tmp_path, capsys):
    odd = tmp_path / "odd.mrcs"
    with mrcfile.new(odd) as m:
        m.set_data(np.zeros((120, 15, 15), np.float32))
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", particles=odd), "odd.mrcs")
    rect = tmp_path / "rect.mrcs"
    with mrcfile.new(rect) as m:
        m.set_data(np.zeros((120, 16, 18), np.float32))
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", particles=rect), "rect.mrcs")


def test_nan_pixels(tiny_dataset, tmp_path, capsys):
    stack, apix = read_mrc(tiny_dataset["particles"])
    stack[7, 3, 3] = np.nan
    p = tmp_path / "nan.mrcs"
    write_mrc(p, stack, apix)
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", particles=p), "nan.mrcs")
    assert not (tmp_path / "o" / "weights.1.pkl").exists()


def test_pose_and_ctf_count_mismatch(tiny_dataset, tmp_path, capsys):
    rot, trans = load_pickle(tiny_dataset["poses"])
    p = tmp_path / "short_poses.pkl"
    p.write_bytes(pickle.dumps((rot[:100], trans[:100])))
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", poses=p), "short_poses.pkl")
    ctf = load_pickle(tiny_dataset["ctf"])
    c = tmp_path / "short_ctf.pkl"
    c.write_bytes(pickle.dumps(ctf[:50]))
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", ctf=c), "short_ctf.pkl")


def test_pixel_translations_and_non_rotations(tiny_dataset, tmp_path, capsys):
    rot, trans = load_pickle(tiny_dataset["poses"])
    p = tmp_path / "pix.pkl"
    p.write_bytes(pickle.dumps((rot, trans * 16 + 3)))
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", poses=p), "pix.pkl", "pixel")
    q = tmp_path / "scaled.pkl"
    q.write_bytes(pickle.dumps((rot * 1.5, trans)))
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", poses=q), "scaled.pkl", "rotation")


def test_ctf_pixel_size_inconsistent(tiny_dataset, tmp_path, capsys):
    ctf = load_pickle(tiny_dataset["ctf"]).copy()
    ctf[:, 1] = 1.7  # the stack header says 3.0 A
    c = tmp_path / "apix.pkl"
    c.write_bytes(pickle.dumps(ctf))
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", ctf=c), "apix.pkl", "pixel size")


def test_star_missing_columns_and_stacks(tiny_dataset, tmp_path, capsys):
    star = tmp_path / "cols.star"
    star.write_text("data_particles\n\nloop_\n_rlnDefocusU #1\n1000\n2000\n")
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", particles=star), "cols.star",
          "_rlnImageName")
    text = open(tiny_dataset["star"]).read().replace("particles.mrcs", "gone.mrcs")
    moved = tmp_path / "moved.star"
    moved.write_text(text)
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", particles=moved), "gone.mrcs")


def test_index_out_of_range(tiny_dataset, tmp_path, capsys):
    ind = tmp_path / "ind.pkl"
    ind.write_bytes(pickle.dumps(np.arange(100, 130)))
    fails(capsys, train_args(tiny_dataset, tmp_path / "o", "--ind", ind), "ind.pkl")


def test_unwritable_output(tiny_dataset, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fails(capsys, train_args(tiny_dataset, blocker / "run"), "run")


def test_existing_run_is_not_overwritten(trained, tiny_dataset, capsys):
    before = (trained / "weights.1.pkl").read_bytes()
    fails(capsys, train_args(tiny_dataset, trained), "already holds a training run")
    assert (trained / "weights.1.pkl").read_bytes() == before


def test_simulate_bad_box(tmp_path, capsys):
    fails(capsys, ["simulate", tmp_path / "s", "-n", "10", "-D", "15"], "15")


def test_analyze_writes_cryodrgn_layout_and_refuses_to_clobber(trained, tmp_path, capsys):
    out = tmp_path / "an"
    assert main(["analyze", str(trained), "--ksample", "4", "--skip-umap", "-o", str(out)]) == 0
    for pc in ("pc1", "pc2"):
        assert np.loadtxt(out / pc / "z_values.txt").shape == (10, 2)
        vol, apix = read_mrc(out / pc / "vol_010.mrc")
        assert vol.shape == (16, 16, 16) and apix == pytest.approx(3.0)
    assert load_pickle(out / "kmeans4" / "labels.pkl").shape == (120,)
    assert np.loadtxt(out / "kmeans4" / "centers_ind.txt").shape == (4,)
    assert (out / "kmeans4" / "vol_004.mrc").exists() and (out / "z_pca.png").exists()
    assert (out / "learning_curve_epoch1.png").exists()
    before = (out / "pc1" / "vol_001.mrc").read_bytes()
    fails(capsys, ["analyze", trained, "--skip-umap", "-o", out], "already exists",
          "--overwrite")
    assert (out / "pc1" / "vol_001.mrc").read_bytes() == before
    assert main(["analyze", str(trained), "--ksample", "3", "--skip-umap", "--skip-vol",
                 "--overwrite", "-o", str(out)]) == 0
    assert not list(out.rglob("*.mrc")) and (out / "kmeans3" / "centers.txt").exists()
    assert not (out / "kmeans4").exists()


def test_analyze_errors(trained, tmp_path, capsys):
    fails(capsys, ["analyze", tmp_path / "missing"], "missing", "no such training folder")
    fails(capsys, ["analyze", tmp_path], "config.yaml")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_bytes((trained / "config.yaml").read_bytes())
    fails(capsys, ["analyze", bare], "no latent files")
    fails(capsys, ["analyze", trained, "--epoch", "9", "-o", tmp_path / "x"], "z.9.pkl",
          "epochs with latents: 1")
    edited = tmp_path / "edited"
    edited.mkdir()
    for name in ("weights.1.pkl", "z.1.pkl"):
        (edited / name).write_bytes((trained / name).read_bytes())
    text = (trained / "config.yaml").read_text().replace("pdim: 32", "pdim: 64")
    (edited / "config.yaml").write_text(text)
    fails(capsys, ["analyze", edited, "--skip-umap"], "weights.1.pkl", "do not match")
    assert not (edited / "analyze.1").exists()


def test_eval_vol_cryodrgn_form(trained, tmp_path, capsys):
    # cryoDRGN's command line: WEIGHTS -c CONFIG, a straight line of points, flip and invert
    out = tmp_path / "line"
    assert main(["eval_vol", str(trained / "weights.1.pkl"), "-c", str(trained / "config.yaml"),
                 "--z-start", "0", "0", "--z-end", "1", "-1", "-n", "3", "-o", str(out),
                 "--prefix", "map_", "--vol-start-index", "0", "--flip", "--invert"]) == 0
    assert sorted(p.name for p in out.glob("*.mrc")) == ["map_000.mrc", "map_001.mrc",
                                                         "map_002.mrc"]
    np.testing.assert_allclose(np.loadtxt(out / "z_values.txt"), [[0, 0], [0.5, -0.5], [1, -1]])
    assert main(["eval-vol", str(trained), "-z", "0.5", "-0.5", "-o", str(tmp_path / "m.mrc")]) == 0
    plain, _ = read_mrc(tmp_path / "m.mrc")
    flipped, _ = read_mrc(out / "map_001.mrc")
    np.testing.assert_allclose(flipped, -plain[::-1], atol=1e-6)
    fails(capsys, ["eval_vol", trained / "weights.1.pkl", "--z-start", "0", "0", "-o",
                   tmp_path / "x"], "--z-start needs --z-end")
    fails(capsys, ["eval_vol", trained, "-c", trained / "config.yaml", "-z", "0", "0", "-o",
                   tmp_path / "x"], "give -c with a weights file")


def test_train_cluster_flags_refused_clearly(tiny_dataset, tmp_path, capsys):
    ds = tiny_dataset
    fails(capsys, train_args(ds, tmp_path / "a", "--multigpu"), "torchrun --nproc_per_node")
    fails(capsys, train_args(ds, tmp_path / "b", "--checkpoint-minutes", "-1"),
          "checkpoint_minutes")
    fails(capsys, train_args(ds, tmp_path / "c", "--shuffler-size", "-5"), "shuffler_size")
    fails(capsys, train_args(ds, tmp_path / "d", "--launcher", "torchrun"), "start the command "
          "with torchrun")
    fails(capsys, train_args(ds, tmp_path / "e", "--max-threads", "0"), "--max-threads")


def test_progress_bar_shows_the_trainers_rate(tiny_dataset, tmp_path, capsys):
    # tqdm's own rate, from the first update of the bar made at each epoch, showed absurd
    # numbers; the bar shows the trainer's images/s (images over the run's time) instead
    args = [a for a in train_args(tiny_dataset, tmp_path / "o") if a != "-q"]
    assert main([*args, "-n", "2"]) == 0
    err = capsys.readouterr().err
    rates = [float(r) for r in re.findall(r"([0-9.]+) images/s", err)]
    assert rates and "img/s" not in err and "it/s" not in err
    assert max(rates) < 1e6, rates
