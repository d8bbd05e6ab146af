"""Junk filtering without the GUI: ``select`` and ``export`` on the command line, training on a
selection (lineage in config.yaml), and the gallery's raw/projection pairs.

One small run is trained once (400 particles, D=16, SNR 10, 15% junk) on 320 particles chosen
with ``--ind``, so every selection here has to be composed with the run's index."""

import numpy as np
import pytest
import torch
import yaml

from napari_cryodrgn.analysis.filtering import read_polygon, write_polygon
from napari_cryodrgn.analysis.gallery import Projector, particle_pairs
from napari_cryodrgn.cli import main
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.cs import read_cs, write_particles_cs
from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.index import load_index, save_index
from napari_cryodrgn.io.mrc import read_mrc
from napari_cryodrgn.io.poses import load_poses
from napari_cryodrgn.io.star import read_star
from napari_cryodrgn.session import Session
from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset
from napari_cryodrgn.training.api import make_trainer, resume_trainer, train_on_selection
from napari_cryodrgn.training.checkpoint import load_z

N = 400
NET = dict(qdim=32, qlayers=1, pdim=64, players=2, batch_size=8, precision="fp32")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("select_export")
    data = write_dataset(root / "data", SimConfig(n=N, D=16, snr=10.0, junk=0.15, seed=1))
    ind = np.flatnonzero(np.arange(N) % 5 != 0)  # 320 particles: rows != original numbers
    save_index(root / "ind.pkl", ind)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tr = make_trainer(data["particles"], data["poses"], root / "run", 2, ctf=data["ctf"],
                          ind=root / "ind.pkl", num_epochs=6, seed=0, **NET)
        for _ in tr.run():
            pass
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "data": data, "ind": ind, "workdir": root / "run"}


def fails(capsys, argv, *needles):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


# -- select ------------------------------------------------------------------------------------
def test_select_kmeans_writes_original_numbering(run, tmp_path, capsys):
    out = tmp_path / "sel.pkl"
    assert main(["select", str(run["workdir"]), "--kmeans", "4", "--kmeans-labels", "0", "2",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    s = Session.open(run["workdir"], autosave=False)
    want = np.isin(s.kmeans(4)[0], [0, 2])
    sel, inv = load_index(out, N), load_index(tmp_path / "sel_inverse.pkl", N)
    np.testing.assert_array_equal(sel, run["ind"][want])
    np.testing.assert_array_equal(inv, run["ind"][~want])
    assert f"selected {want.sum()} of 320 particles ({want.mean():.1%})" in text


def test_select_polygon_invert_and_union(run, tmp_path, capsys):
    s = Session.open(run["workdir"], autosave=False)
    xy = s.embedding("pca")
    mid = float(np.median(xy[:, 0]))
    lo, hi = xy.min(0) - 1, xy.max(0) + 1
    poly = [[lo[0], lo[1]], [mid, lo[1]], [mid, hi[1]], [lo[0], hi[1]]]
    pfile = tmp_path / "left.txt"
    write_polygon(pfile, poly, "pca")
    np.testing.assert_allclose(read_polygon(pfile), poly)
    left = xy[:, 0] < mid
    assert main(["select", str(run["workdir"]), "--polygon", str(pfile), "--space", "pca",
                 "-o", str(tmp_path / "a.pkl")]) == 0
    np.testing.assert_array_equal(load_index(tmp_path / "a.pkl", N), run["ind"][left])
    assert main(["select", str(run["workdir"]), "--polygon", str(pfile), "--space", "pca",
                 "--invert", "-o", str(tmp_path / "b.pkl")]) == 0
    np.testing.assert_array_equal(load_index(tmp_path / "b.pkl", N), run["ind"][~left])
    np.testing.assert_array_equal(load_index(tmp_path / "b_inverse.pkl", N), run["ind"][left])
    # criteria add up: the polygon or k-means cluster 1
    assert main(["select", str(run["workdir"]), "--polygon", str(pfile), "--space", "pca",
                 "--kmeans", "3", "--kmeans-labels", "1", "-o", str(tmp_path / "c.pkl")]) == 0
    union = left | (s.kmeans(3)[0] == 1)
    np.testing.assert_array_equal(load_index(tmp_path / "c.pkl", N), run["ind"][union])
    capsys.readouterr()
    # the explorer's saved selection is left alone
    assert not (run["workdir"] / "explore" / "selection.npy").exists()


def test_select_errors(run, tmp_path, capsys):
    wd = run["workdir"]
    fails(capsys, ["select", wd, "-o", tmp_path / "x.pkl"], "nothing to select")
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0\n1 one\n2 2\n")
    fails(capsys, ["select", wd, "--polygon", bad, "-o", tmp_path / "x.pkl"],
          "bad.txt, line 2: expected two numbers")
    bad.write_text("0 0\n1 1\n")
    fails(capsys, ["select", wd, "--polygon", bad, "-o", tmp_path / "x.pkl"],
          "at least 3 vertices")
    fails(capsys, ["select", wd, "--kmeans", "4", "--kmeans-labels", "4", "-o",
                   tmp_path / "x.pkl"], "cluster numbers in 0..3")
    far = tmp_path / "far.txt"
    write_polygon(far, [[1e6, 1e6], [1e6 + 1, 1e6], [1e6, 1e6 + 1]])
    fails(capsys, ["select", wd, "--polygon", far, "--space", "pca", "-o", tmp_path / "x.pkl"],
          "the selection is empty")
    fails(capsys, ["select", wd, "--kmeans-labels", "0", "--space", "pca", "--polygon", far,
                   "-o", tmp_path / "x.txt"], "use a .pkl name")
    assert not list(tmp_path.glob("x*"))
    assert main(["select", str(wd), "--kmeans", "2", "--kmeans-labels", "0", "-o",
                 str(tmp_path / "y.pkl")]) == 0
    fails(capsys, ["select", wd, "--kmeans", "2", "--kmeans-labels", "1", "-o",
                   tmp_path / "y.pkl"], "y.pkl exists", "--overwrite")
    assert main(["select", str(wd), "--kmeans", "2", "--kmeans-labels", "1", "-o",
                 str(tmp_path / "y.pkl"), "--overwrite"]) == 0


# -- export ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def selection(run, tmp_path_factory):
    """Every other particle of the run, in original numbering."""
    path = tmp_path_factory.mktemp("sel") / "keep.pkl"
    save_index(path, run["ind"][::2])
    return path


def test_export_star_cs_mrcs(run, selection, tmp_path, capsys):
    data, sel = run["data"], load_index(selection, N)
    rot, trans = load_poses(data["poses"])
    ctf = load_ctf(data["ctf"])
    cs = tmp_path / "all.cs"
    write_particles_cs(cs, str(data["particles"]), rot, trans, ctf, float(ctf[0, 1]), 16)
    # .star from --source; .mrcs from the run's particles with the run's pixel size
    assert main(["export", str(run["workdir"]), "--ind", str(selection), "--source",
                 str(data["star"]), "--star", str(tmp_path / "k.star"), "--mrcs",
                 str(tmp_path / "k.mrcs")]) == 0
    full, sub = read_star(data["star"]), read_star(tmp_path / "k.star")
    assert list(sub.particles.columns) == list(full.particles.columns)
    assert (sub.particles.to_numpy() == full.particles.iloc[sel].to_numpy()).all()
    assert sub.optics.equals(full.optics)
    imgs, apix = read_mrc(tmp_path / "k.mrcs")
    np.testing.assert_array_equal(imgs, read_mrc(data["particles"])[0][sel])
    assert apix == pytest.approx(ctf[0, 1])
    # .cs from --source without a training folder
    assert main(["export", "--ind", str(selection), "--source", str(cs), "--cs",
                 str(tmp_path / "k.cs")]) == 0
    np.testing.assert_array_equal(read_cs(tmp_path / "k.cs"), read_cs(cs)[sel])
    out = capsys.readouterr().out
    assert f"wrote {len(sel)} particles to {tmp_path / 'k.cs'}" in out


def test_export_finds_the_runs_star(run, selection, tmp_path, capsys):
    """A run trained from a .star exports from it without --source."""
    wd = tmp_path / "starrun"
    wd.mkdir()
    cfg = yaml.safe_load((run["workdir"] / "config.yaml").read_text())
    cfg["dataset_args"].update(particles=str(run["data"]["star"]), ind=None)
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["export", str(wd), "--ind", str(selection), "--star",
                 str(tmp_path / "k.star")]) == 0
    sel = load_index(selection, N)
    full = read_star(run["data"]["star"])
    np.testing.assert_array_equal(read_star(tmp_path / "k.star").particles["rlnImageName"],
                                  full.particles["rlnImageName"].to_numpy()[sel])
    capsys.readouterr()


def test_export_errors(run, selection, tmp_path, capsys):
    wd, star = run["workdir"], run["data"]["star"]
    other = tmp_path / "other.pkl"
    save_index(other, [3, 999])
    fails(capsys, ["export", wd, "--ind", other, "--source", star, "--star", tmp_path / "o.star"],
          "other.pkl holds indices up to 999", f"has {N} particles", "another dataset")
    fails(capsys, ["export", wd, "--ind", other, "--mrcs", tmp_path / "o.mrcs"],
          "other.pkl holds indices up to 999", f"has {N} particles")
    empty = tmp_path / "empty.pkl"
    save_index(empty, np.array([], np.int64))
    fails(capsys, ["export", wd, "--ind", empty, "--mrcs", tmp_path / "o.mrcs"],
          "selects no particles", "empty selection cannot be exported")
    fails(capsys, ["export", wd, "--ind", selection, "--star", tmp_path / "o.star"],
          "no .star file", "pass --source FILE.star")
    fails(capsys, ["export", wd, "--ind", selection], "nothing to export")
    fails(capsys, ["export", wd, "--ind", selection, "--star", tmp_path / "o.mrcs"],
          "must end in .star")
    fails(capsys, ["export", "--ind", selection, "--mrcs", tmp_path / "o.mrcs"],
          "give the training folder, --particles or --source")
    assert not list(tmp_path.glob("o.*"))
    (tmp_path / "there.star").write_text("keep me")
    fails(capsys, ["export", wd, "--ind", selection, "--source", star, "--star",
                   tmp_path / "there.star"], "there.star exists", "--overwrite")
    assert (tmp_path / "there.star").read_text() == "keep me"
    # a .star of another dataset than the run's
    small = tmp_path / "small"
    d2 = write_dataset(small, SimConfig(n=30, D=16, snr=1.0, junk=0.0, seed=2))
    fails(capsys, ["export", wd, "--ind", selection, "--source", d2["star"], "--star",
                   tmp_path / "o.star"], "lists 30 particles but the run's particles file",
          f"holds {N}")


# -- training on a selection -------------------------------------------------------------------
def test_train_on_selection_records_lineage(run, selection, tmp_path):
    out = tmp_path / "child"
    tr = train_on_selection(run["workdir"], selection, out, parent_epoch=6, num_epochs=1)
    for _ in tr.run():
        pass
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    parent = yaml.safe_load((run["workdir"] / "config.yaml").read_text())
    sel = load_index(selection, N)
    assert cfg["lineage"] == {"parent": str(run["workdir"].resolve()), "parent_epoch": 6,
                              "selection": str(selection.resolve()), "n_parent": 320,
                              "n_selected": len(sel)}
    np.testing.assert_array_equal(load_index(cfg["dataset_args"]["ind"], N), sel)
    assert cfg["dataset_args"]["ind"] == str((out / "ind.pkl").resolve())
    assert cfg["model_args"] == parent["model_args"]
    same = {k: v for k, v in parent["train_args"].items() if k not in ("outdir", "num_epochs")}
    assert {k: cfg["train_args"][k] for k in same} == same
    assert cfg["train_args"]["num_epochs"] == 1
    assert load_z(out / "z.1.pkl")[0].shape == (len(sel), 2)
    # a resumed child keeps its lineage
    for _ in resume_trainer(out, num_epochs=2).run():
        pass
    assert yaml.safe_load((out / "config.yaml").read_text())["lineage"] == cfg["lineage"]


def test_train_on_selection_refuses_bad_selections(run, selection, tmp_path):
    wd = run["workdir"]
    empty = tmp_path / "empty.pkl"
    save_index(empty, np.array([], np.int64))
    with pytest.raises(InputError, match="selects no particles; an empty selection cannot be "
                                         "trained on"):
        train_on_selection(wd, empty, tmp_path / "a")
    other = tmp_path / "other.pkl"
    save_index(other, [1, 2, 4000])
    with pytest.raises(InputError, match=f"other.pkl holds indices up to 4000 but the stack has "
                                         f"{N} particles"):
        train_on_selection(wd, other, tmp_path / "a")
    outside = tmp_path / "outside.pkl"
    save_index(outside, [0, 1, 2])  # particle 0 was not in the parent run (--ind)
    with pytest.raises(InputError, match="1 of its particles .first: 0. are not among the 320 "
                                         "particles"):
        train_on_selection(wd, outside, tmp_path / "a")
    with pytest.raises(InputError, match="is the parent run's folder"):
        train_on_selection(wd, selection, wd)
    assert not (tmp_path / "a").exists()


# -- gallery -----------------------------------------------------------------------------------
def _corr(a, b):
    a = a - a.mean(axis=(1, 2), keepdims=True)
    b = b - b.mean(axis=(1, 2), keepdims=True)
    return (a * b).sum(axis=(1, 2)) / np.sqrt((a * a).sum(axis=(1, 2)) * (b * b).sum(axis=(1, 2)))


def test_gallery_projection_matches_the_particle(run):
    s = Session.open(run["workdir"], autosave=False)
    rows = np.arange(0, 320, 5)
    raw, proj = particle_pairs(s, rows)
    assert raw.shape == proj.shape == (len(rows), 16, 16) and proj.dtype == np.float32
    # raw is the stack as on disk, in original numbering (composed with the run's --ind)
    np.testing.assert_array_equal(raw, read_mrc(run["data"]["particles"])[0][run["ind"][rows]])
    good = _corr(raw, proj)
    pj = Projector(run["workdir"])
    wrong = _corr(raw, pj.project(rows, rot=pj.data.rot[np.roll(rows, 7)]))
    print(f"gallery: correlation {good.mean():.3f} at the particle's pose, {wrong.mean():.3f} "
          "at another's")
    assert good.mean() > 0.5
    assert good.mean() > wrong.mean() + 0.05
    assert np.mean(good > wrong) > 0.8
    # the same pairs from the folder; display options
    r2, p2 = particle_pairs(run["workdir"], rows[:3], lowpass=0.5, normalize=True)
    np.testing.assert_allclose(r2.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(p2.std(axis=(1, 2)), 1, rtol=1e-4)
    with pytest.raises(InputError, match="rows must lie in 0..319"):
        particle_pairs(s, [320])


# -- the junk island rule ----------------------------------------------------------------------
def test_isolated_island_finds_the_group_apart():
    from napari_cryodrgn.analysis.filtering import isolated_island
    from napari_cryodrgn.analysis.select import points_in_polygon

    rng = np.random.default_rng(0)
    main_a = rng.normal([0, 0], [1.0, 3.0], (3000, 2))  # two touching bodies
    main_b = rng.normal([3, 0], [1.0, 3.0], (3000, 2))
    apart = rng.normal([-15, 2], [1.0, 1.0], (900, 2))  # the group apart
    fleck = rng.normal([8, 8], 0.1, (20, 2))  # too small to count
    xy = np.concatenate([main_a, main_b, apart, fleck])
    isl = isolated_island(xy)
    truth = np.zeros(len(xy), bool)
    truth[6000:6900] = True
    inside = points_in_polygon(xy, isl.polygon)
    assert isl.mask[truth].mean() > 0.95 and not isl.mask[~truth].any()  # its core
    assert inside[truth].mean() > 0.98 and not inside[~truth].any()  # and most of its fringe
    assert isl.isolation > 5
    with pytest.raises(InputError, match="no separate group to lasso"):
        isolated_island(main_a)


def test_worst_fit_island_is_the_one_the_model_cannot_explain():
    from napari_cryodrgn.analysis.filtering import isolated_island, worst_fit_island

    rng = np.random.default_rng(1)
    near = rng.normal([0, 0], 1.0, (900, 2))  # junk, close to the main body
    body = rng.normal([8, 0], 1.0, (3000, 2))
    far = rng.normal([40, 0], 1.0, (3000, 2))  # a state far from everything
    xy = np.concatenate([near, body, far])
    loss = np.concatenate([rng.normal(4.0, 0.2, 900), rng.normal(1.0, 0.05, 6000)])
    assert isolated_island(xy).mask[3900:].mean() > 0.95  # isolation alone: the far state
    isl = worst_fit_island(xy, loss)
    assert isl.mask[:900].mean() > 0.95 and not isl.mask[900:].any()
    with pytest.raises(InputError, match="one loss per point"):
        worst_fit_island(xy, loss[:10])
