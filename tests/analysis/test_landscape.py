"""The conformational landscape (analyze_landscape): mask, clustering, the command's layout,
and the explorer's view of it."""

import numpy as np
import pytest

from napari_cryodrgn.analysis.landscape import NPZ, Landscape, auto_mask, cluster_maps
from napari_cryodrgn.cli import main
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.mrc import read_mrc, write_mrc
from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.session import Session


def test_auto_mask_thresholds_the_mean_map_and_dilates_in_angstrom():
    g = np.mgrid[:32, :32, :32].astype(np.float32) - 16
    r = np.sqrt((g ** 2).sum(0))
    vol = np.clip(1.0 - r / 10.0, 0, None)  # half its maximum at r = 5
    m = auto_mask(vol, apix=2.0, dilate=0.0)
    assert m[16, 16, 16] and not m[16, 16, 16 + 6] and m.sum() == (vol > 0.5).sum()
    wide = auto_mask(vol, apix=2.0, dilate=4.0)  # 2 voxels wider
    assert wide[16, 16, 16 + 6] and not wide[16, 16, 16 + 8]
    with pytest.raises(InputError, match="--thresh"):
        auto_mask(vol, 2.0, thresh=5.0)


def test_clusters_are_numbered_from_one():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 0.1, (10, 3)), rng.normal(5, 0.1, (7, 3))])
    lab = cluster_maps(pts, 2)
    assert set(lab) == {1, 2} and len(set(lab[:10])) == 1 and lab[0] != lab[-1]
    with pytest.raises(InputError, match="linkage"):
        cluster_maps(pts, 2, "median")
    with pytest.raises(InputError, match="-M"):
        cluster_maps(pts, 40)


def test_analyze_landscape_writes_cryodrgns_layout(train_tiny, tmp_path, capsys):
    run = train_tiny("landscape_run", zdim=2, epochs=1)
    out = tmp_path / "land"
    assert main(["analyze_landscape", str(run), "1", "-N", "12", "-M", "3", "--pc-dim", "4",
                 "--skip-umap", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    s = Session.open(run, autosave=False)
    labels = load_pickle(out / "kmeans12" / "labels.pkl")
    assert labels.shape == (s.n,) and labels.min() >= 1 and labels.max() <= 12
    vol1, apix = read_mrc(out / "kmeans12" / "vol_001.mrc")
    assert vol1.shape == (s.D,) * 3 and apix == pytest.approx(s.apix)
    centres = np.loadtxt(out / "kmeans12" / "centers_ind.txt").astype(int)
    np.testing.assert_allclose(np.loadtxt(out / "kmeans12" / "z_values.txt"), s.z[centres],
                               rtol=1e-5)
    coords = load_pickle(out / "vol_pca_12.pkl")
    assert coords.shape == (12, 4)
    states = load_pickle(out / "sketch_clustering_average_3" / "state_labels.pkl")
    assert sorted(set(states)) == [1, 2, 3]
    inds = [load_pickle(out / "sketch_clustering_average_3" / f"state_{m:03d}_particle_ind.pkl")
            for m in (1, 2, 3)]
    np.testing.assert_array_equal(np.sort(np.concatenate(inds)), np.arange(s.n))
    for m, ind in enumerate(inds, start=1):  # a particle's cluster is its map's cluster
        assert (states[labels[ind] - 1] == m).all()
        assert len(list((out / "sketch_clustering_average_3" / f"state_{m:03d}").glob(
            "vol_*.mrc"))) == (states == m).sum()
    assert (out / "mask.mrc").is_file() and len(list((out / "vol_pcs" / "pc1").glob(
        "*.mrc"))) == 10
    land = Landscape.load(out / NPZ)
    np.testing.assert_array_equal(land.particle_states(), states[labels - 1])
    # nothing is overwritten; a mask of another box is refused
    assert main(["analyze_landscape", str(run), "-N", "12", "-o", str(out)]) != 0
    assert "exists" in capsys.readouterr().err
    write_mrc(tmp_path / "m.mrc", np.ones((8, 8, 8), np.float32), 1.0)
    assert main(["analyze_landscape", str(run), "-N", "12", "--mask", str(tmp_path / "m.mrc"),
                 "-o", str(tmp_path / "other")]) != 0
    assert "voxels across" in capsys.readouterr().err


def test_the_session_offers_the_landscape_view(train_tiny, tmp_path):
    run = train_tiny("landscape_view", zdim=2, epochs=1)
    assert main(["analyze_landscape", str(run), "-N", "10", "-M", "2", "--pc-dim", "3",
                 "--skip-umap"]) == 0  # the default folder, landscape.1
    s = Session.open(run, autosave=False)
    assert "landscape" in s.spaces() and "landscape cluster" in s.colouring_names()
    land = s.landscape()
    xy = s.embedding("landscape")
    np.testing.assert_allclose(xy, land.coords[land.labels][:, :2])
    assert s.is_categorical("landscape cluster")
    np.testing.assert_array_equal(s.colouring("landscape cluster"),
                                  land.states[land.labels])
    assert s.axis_labels("landscape")[0].startswith("volume PC1")
    z, particle = s.latent_at("landscape", land.coords[3, :2])  # the sampled map there
    assert particle == land.centres_ind[3]
    np.testing.assert_allclose(z, s.z[particle], rtol=1e-6)
    s.space = "landscape"
    s.select_polygon("landscape", land.coords[3, :2] + np.array(
        [[-1e-3, -1e-3], [1e-3, -1e-3], [1e-3, 1e-3], [-1e-3, 1e-3]]))
    assert s.n_selected == (land.labels == 3).sum()  # the particles of that map
