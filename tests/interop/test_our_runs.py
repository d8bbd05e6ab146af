"""Our training folders opened by cryoDRGN 4.x's tools.

Our CLI (``napari-cryodrgn train``) trains six tiny runs (``_specs.OUR_RUNS``: every positional
encoding, both domains, both encoders, zdim 1 to 8, a residual first layer, encoder masks
5, 6, 8 and none, ``--ind``; one run takes particles, poses and CTF from a RELION .star).
Then cryoDRGN, reading only our ``config.yaml``, ``weights.N.pkl`` and ``z.N.pkl``:

- ``cryodrgn eval_vol`` decodes the maps we decode at the same latent points, for every epoch;
- ``cryodrgn analyze`` (PCA traversals, k-means, UMAP; on the .star run and on a run trained
  from pickles) writes maps that equal ours at the z values it chose, with centres that are
  rows of our ``z.N.pkl`` and the voxel size we record; we read its ``umap.pkl`` and
  ``labels.pkl``. (cryoDRGN unpickles the poses and CTF our config names: a run trained from
  a .star or .cs records them as pickles written into the run folder);
- ``cryodrgn filter -f`` (4.3.1's flag: ``--force``, save ``indices.pkl`` without prompting;
  the selection is pre-set with ``--plot-inds`` since there is no one to draw a lasso) reads our
  run, our ``--ind`` pickle and its analysis, and saves a selection in the original stack's
  numbering that our index reader loads;
- ``cryodrgn analyze`` reads a run trained on a selection (``train_on_selection``: a
  ``lineage:`` section in config.yaml, the selection copied into the run as its ``--ind``).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _cryodrgn import assert_maps_agree, read_map
from _specs import ANALYZE_OURS, CHILD_RUN, FILTER_OURS, FILTER_PRESELECT, OUR_RUNS

from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.index import load_index
from napari_cryodrgn.io.poses import load_poses
from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.model.load import load_run
from napari_cryodrgn.training.checkpoint import load_z

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("name", list(OUR_RUNS))
def test_eval_vol_reads_our_run(our_runs, name, tmp_path):
    from napari_cryodrgn.cli import main

    run = our_runs.runs[name]
    for ep in range(1, run.epochs + 1):
        our_runs.jobs.check(f"eval_vol:{name}:e{ep}")
        dec = load_run(run.workdir, ep).volume_decoder(precision="fp32")
        for i, z in enumerate(run.z):
            theirs, _ = read_map(run.vols[ep] / f"vol_{i + 1:03d}.mrc")
            assert_maps_agree(dec(z), theirs, f"{name} epoch {ep} z #{i}", f"ours {name}")
    # and what our CLI writes for the last epoch
    out = tmp_path / "ours"
    assert main(["eval-vol", str(run.workdir), "--zfile", str(run.zfile), "-o", str(out),
                 "--device", "cpu"]) == 0
    for i in range(len(run.z)):
        theirs, _ = read_map(run.vols[run.epochs] / f"vol_{i + 1:03d}.mrc")
        assert_maps_agree(read_map(out / f"vol_{i + 1:03d}.mrc")[0], theirs,
                          f"{name} CLI z #{i}", f"ours {name} (our CLI)")


@pytest.mark.parametrize("name", list(ANALYZE_OURS))
def test_analyze_reads_our_run(our_runs, interop_data, name):
    run = our_runs.runs[name]
    our_runs.jobs.check(f"analyze:{name}")
    folder = run.workdir / f"analyze.{run.epochs}"
    loaded = load_run(run.workdir, run.epochs)
    dec = loaded.volume_decoder(precision="fp32")
    z = load_z(run.workdir / f"z.{run.epochs}.pkl")[0]
    n = len(interop_data["ind_array"]) if run.spec.get("ind") else interop_data["n"]
    assert len(z) == n

    km = folder / "kmeans4"
    labels = load_pickle(km / "labels.pkl")
    centers_ind = np.loadtxt(km / "centers_ind.txt", dtype=np.int64)
    assert labels.shape == (len(z),) and set(np.unique(labels)) <= set(range(4))
    np.testing.assert_allclose(np.loadtxt(km / "centers.txt"), z[centers_ind], rtol=1e-6,
                               atol=1e-6)
    if "--skip-umap" not in ANALYZE_OURS[name]:
        umap = load_pickle(folder / "umap.pkl")
        assert umap.shape == (len(z), 2) and np.isfinite(umap).all()

    apix = float(loaded.config["dataset_args"]["apix"])
    n_maps = 0
    for sub, count in (("pc1", 3), ("pc2", 3), ("kmeans4", 4)):
        zs = np.loadtxt(folder / sub / "z_values.txt", ndmin=2)
        assert zs.shape == (count, run.zdim)
        for i, zi in enumerate(zs):
            theirs, their_apix = read_map(folder / sub / f"vol_{i + 1:03d}.mrc")
            assert their_apix == pytest.approx(apix, rel=1e-5)  # from our CTF file and box
            assert_maps_agree(dec(zi), theirs, f"{name} analyze {sub} #{i}",
                              f"ours {name} (analyze)")
            n_maps += 1
    assert n_maps == 10
    # PC1 traversal: from the 5th to the 95th percentile of our z projected on its first PC
    zc = z - z.mean(0)
    pc1 = np.linalg.svd(zc, full_matrices=False)[2][0]
    proj = np.loadtxt(folder / "pc1" / "z_values.txt") @ pc1 - z.mean(0) @ pc1
    lo, hi = np.percentile(zc @ pc1, [5, 95])
    # cryoDRGN's PCA is float32: on a tiny run's narrow latents (a 5-95% range of 0.004 here)
    # its PC1 may turn a little against ours, so the tolerance follows the range
    tol = max(1e-5, 0.01 * (hi - lo))
    assert sorted([proj[0], proj[-1]]) == pytest.approx([lo, hi], rel=1e-4, abs=tol)


def test_filter_reads_our_run(our_runs, interop_data):
    name = FILTER_OURS
    our_runs.jobs.check(f"analyze:{name}")
    our_runs.jobs.check(f"filter:{name}")
    sel = our_runs.root / "selection"
    n, ind = interop_data["n"], interop_data["ind_array"]
    picked = load_index(sel / "indices.pkl", n=n)
    # rows of our z.N.pkl mapped through our --ind pickle to the original stack's numbering
    np.testing.assert_array_equal(picked, ind[FILTER_PRESELECT])
    rest = load_index(sel / "indices_inverse.pkl", n=n)
    # cryoDRGN's inverse is the rest of the particles the run trained on (not of the stack)
    np.testing.assert_array_equal(rest, np.setdiff1d(ind, ind[FILTER_PRESELECT]))


def test_run_from_star_records_cryodrgn_pickles(our_runs, interop_data):
    """A run trained from a .star records its poses and CTF as cryoDRGN pickles of the whole
    table (cryoDRGN's analyze and filter unpickle them), and the .star as their source."""
    (name,) = [k for k, s in OUR_RUNS.items() if s.get("inputs") == "star"]
    ds = load_run(our_runs.runs[name].workdir).config["dataset_args"]
    star = str(interop_data["star"])
    assert ds["particles"] == star and ds["poses_source"] == star and ds["ctf_source"] == star
    with open(ds["poses"], "rb") as f:  # plain pickles, as cryoDRGN reads them
        rot, trans = pickle.load(f)
    with open(ds["ctf"], "rb") as f:
        ctf = pickle.load(f)
    np.testing.assert_array_equal(rot, load_poses(star)[0])
    np.testing.assert_array_equal(trans, load_poses(star)[1])
    np.testing.assert_array_equal(ctf, load_ctf(star))
    assert rot.shape == (interop_data["n"], 3, 3)  # every particle: --ind indexes these


def test_analyze_reads_a_run_trained_on_a_selection(our_runs, interop_data):
    our_runs.jobs.check(f"analyze:{CHILD_RUN}")
    child = our_runs.root / CHILD_RUN
    cfg = load_run(child).config
    sel = interop_data["ind_array"][::2]
    assert cfg["lineage"]["parent"] == str(our_runs.runs[FILTER_OURS].workdir.resolve())
    assert cfg["lineage"]["n_parent"] == len(interop_data["ind_array"])
    assert cfg["lineage"]["n_selected"] == len(sel)
    np.testing.assert_array_equal(load_index(cfg["dataset_args"]["ind"], None), sel)
    labels = load_pickle(child / "analyze.1" / "kmeans4" / "labels.pkl")
    assert len(labels) == len(sel) == len(load_z(child / "z.1.pkl")[0])
