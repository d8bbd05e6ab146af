"""run_analysis on a tiny trained run: cryoDRGN's analyze.N/ layout, no clobbering, clean
cancellation, clear errors for bad folders."""

import shutil

import numpy as np
import pytest
import yaml

from napari_cryodrgn.analysis.analyze import run_analysis
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.mrc import read_mrc
from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.training.checkpoint import load_z

FAST = dict(ksample=4, n_per_pc=3, skip_umap=True)


@pytest.fixture(scope="module")
def run3(train_tiny):
    """A zdim-3 run of 2 epochs on the 120-particle D=16 dataset."""
    return train_tiny("an_run", zdim=3, seed=2)


def _drain(events):
    return list(events)


def _copy_run(src, dst, epochs=(1, 2)):
    dst.mkdir()
    for name in ["config.yaml", "run.log"] + [f"{s}.{e}.pkl" for s in ("z", "weights")
                                               for e in epochs]:
        shutil.copy(src / name, dst / name)
    return dst


def test_layout_volumes_and_events(run3, tmp_path):
    out = tmp_path / "a"
    events = _drain(run_analysis(run3, epoch=1, outdir=out, **FAST))
    assert events[0].kind == "start" and events[-1].kind == "done"
    fr = [e.fraction for e in events]
    assert fr == sorted(fr) and fr[-1] == 1.0
    n_graph = len(list((out / "graph_traversal").glob("vol_*.mrc")))
    assert sum(e.kind == "volume" for e in events) == 2 * 3 + 4 + 3 + n_graph
    z, _ = load_z(run3 / "z.1.pkl")
    for pc in ("pc1", "pc2"):
        zv = np.loadtxt(out / pc / "z_values.txt")
        assert zv.shape == (3, 3)
        vol, apix = read_mrc(out / pc / "vol_003.mrc")
        assert vol.shape == (16, 16, 16) and apix == pytest.approx(3.0)
        assert not (out / pc / "vol_004.mrc").exists()
        assert (out / pc / "pca_traversal.png").exists()
    km = out / "kmeans4"
    labels = load_pickle(km / "labels.pkl")
    assert labels.shape == (120,) and set(np.unique(labels)) == {0, 1, 2, 3}
    ind = np.loadtxt(km / "centers_ind.txt", dtype=int)
    np.testing.assert_allclose(np.loadtxt(km / "centers.txt"), z[ind], atol=1e-6)
    assert [p.name for p in sorted(km.glob("vol_*.mrc"))] == [f"vol_00{i}.mrc" for i in
                                                             range(1, 5)]
    direct = np.loadtxt(out / "direct_traversal" / "z_values.txt")
    assert direct.shape == (3, 3)
    gt = out / "graph_traversal"
    if gt.exists():
        path_ind = np.loadtxt(gt / "z-path-indices.txt", dtype=int)
        np.testing.assert_allclose(np.loadtxt(gt / "z-path.txt"), z[path_ind], atol=1e-6)
        np.testing.assert_allclose(direct[[0, -1]], z[path_ind[[0, -1]]], atol=1e-5)
    for png in ("z_pca.png", "z_pca_hexbin.png", "learning_curve_epoch1.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "umap.pkl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_default_folder_refuses_to_clobber_and_overwrites(run3, tmp_path):
    run = _copy_run(run3, tmp_path / "run")
    _drain(run_analysis(run, skip_vol=True, **FAST))
    out = run / "analyze.2"  # the latest epoch
    assert (out / "pc1" / "z_values.txt").exists() and not list(out.rglob("*.mrc"))
    marker = out / "mine.txt"
    marker.write_text("keep")
    with pytest.raises(InputError, match="already exists.*--overwrite"):
        run_analysis(run, **FAST)
    assert marker.exists()
    _drain(run_analysis(run, overwrite=True, anchors=[0, 5], **FAST))
    assert not marker.exists() and (out / "pc1" / "vol_001.mrc").exists()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_stopping_early_leaves_nothing(run3, tmp_path):
    out = tmp_path / "a"
    it = run_analysis(run3, outdir=out, **FAST)
    for ev in it:
        if ev.kind == "volume":
            break
    it.close()
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_inputs(run3, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run3 / "config.yaml", empty / "config.yaml")
    with pytest.raises(InputError, match="no latent files"):
        run_analysis(empty)
    with pytest.raises(InputError, match="no such training folder"):
        run_analysis(tmp_path / "nope")
    with pytest.raises(InputError, match=r"no z\.7\.pkl.*epochs with latents: 1, 2"):
        run_analysis(run3, epoch=7)
    run = _copy_run(run3, tmp_path / "edited", epochs=(2,))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model_args"]["pdim"] = 48
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match=r"weights\.2\.pkl.*do not match config\.yaml"):
        run_analysis(run, outdir=tmp_path / "x", **FAST)
    assert not (tmp_path / "x").exists()
    with pytest.raises(InputError, match="ksample 500"):
        run_analysis(run3, outdir=tmp_path / "x", ksample=500)
    with pytest.raises(InputError, match="--pc 4"):
        run_analysis(run3, outdir=tmp_path / "x", pcs=4)
    with pytest.raises(InputError, match="anchors"):
        run_analysis(run3, outdir=tmp_path / "x", anchors=[0, 120])


def test_umap_is_written_cached_and_shared_with_the_session(run3, tmp_path, monkeypatch):
    pytest.importorskip("umap")
    from napari_cryodrgn.analysis import embed
    from napari_cryodrgn.session import Session

    run = _copy_run(run3, tmp_path / "run")
    _drain(run_analysis(run, ksample=4, n_per_pc=3, skip_vol=True))
    out = run / "analyze.2"
    emb = load_pickle(out / "umap.pkl")
    assert emb.shape == (120, 2) and emb.dtype == np.float32 and np.isfinite(emb).all()
    for png in ("umap.png", "umap_hexbin.png", "kmeans4/umap.png", "pc1/umap_traversal.png"):
        assert (out / png).exists(), png
    monkeypatch.setattr(embed, "run_umap", lambda *a, **k: pytest.fail("UMAP recomputed"))
    _drain(run_analysis(run, ksample=4, n_per_pc=3, skip_vol=True, overwrite=True))
    np.testing.assert_array_equal(load_pickle(out / "umap.pkl"), emb)
    np.testing.assert_array_equal(Session.open(run).embedding("umap"), emb)
