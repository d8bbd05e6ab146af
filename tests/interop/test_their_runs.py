"""cryoDRGN 4.x training folders opened by our tools.

cryoDRGN's ``train_vae`` trains six tiny runs (120 particles, D=16, 1-2 epochs; see
``conftest.THEIR_RUNS``): every positional encoding (gaussian, geom_lowf, geom_ft, geom_full,
geom_nohighf, linear_lowf), both domains (fourier, hartley), both encoders (resid, mlp), relu
and leaky_relu, zdim 1 to 8, widths 16 to 80 and 1 to 3 hidden layers, first layers that are
residual, encoder masks of radius 5, 6, 8 and none, ``--no-window``, ``--uninvert-data`` and
``--ind`` with an index pickle we wrote. For each run and epoch:

- maps we decode (``load_run(...).volume_decoder``) at fixed latent points equal those of
  ``cryodrgn eval_vol`` (correlation >= 0.9999, largest difference <= 1e-4 x the map's std);
- our CLI ``napari-cryodrgn eval-vol`` on their folder writes the same maps;
- their ``z.N.pkl`` loads through our restricted reader, and our encoder with their weights and
  our preprocessing reproduces their ``z_mu`` from the particles;
- ``cryodrgn analyze`` output in their folder (``analyze.N/pc1``, ``kmeansK``): we decode the
  same maps at the z values it wrote, and read its pickles; our ``napari-cryodrgn analyze`` on
  their folder traverses the PCs through the same latent points and writes the same maps.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from _cryodrgn import assert_maps_agree, read_map
from _specs import ANALYZE_THEIRS, THEIR_RUNS

from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.model.load import load_run
from napari_cryodrgn.training.checkpoint import load_z

pytestmark = pytest.mark.interop

NAMES = list(THEIR_RUNS)


def _run(their_runs, name):
    their_runs.jobs.check(f"train_vae:{name}")
    return their_runs.runs[name]


@pytest.mark.parametrize("name", NAMES)
def test_our_decoder_reproduces_eval_vol(their_runs, name):
    run = _run(their_runs, name)
    for ep in range(1, run.epochs + 1):
        their_runs.jobs.check(f"eval_vol:{name}:e{ep}")
        loaded = load_run(run.workdir, ep)
        assert loaded.D_img == 16 and loaded.model.zdim == run.zdim
        dec = loaded.volume_decoder(precision="fp32")
        for i, z in enumerate(run.z):
            theirs, _ = read_map(run.vols[ep] / f"vol_{i + 1:03d}.mrc")
            assert_maps_agree(dec(z), theirs, f"{name} epoch {ep} z #{i}", f"theirs {name}")


@pytest.mark.parametrize("name", NAMES)
def test_our_cli_eval_vol_on_their_run(their_runs, interop_data, name, tmp_path):
    from napari_cryodrgn.cli import main

    run = _run(their_runs, name)
    ep = run.epochs
    their_runs.jobs.check(f"eval_vol:{name}:e{ep}")
    out = tmp_path / "ours"
    rc = main(["eval-vol", str(run.workdir), "--zfile", str(run.zfile), "-o", str(out),
               "--device", "cpu"])  # no --epoch: the latest, which is the last cryoDRGN wrote
    assert rc == 0
    for i in range(len(run.z)):
        ours, apix = read_map(out / f"vol_{i + 1:03d}.mrc")
        theirs, _ = read_map(run.vols[ep] / f"vol_{i + 1:03d}.mrc")
        assert_maps_agree(ours, theirs, f"{name} CLI z #{i}", f"theirs {name} (our CLI)")
        assert apix == pytest.approx(interop_data["apix"])  # from the run's CTF file
    assert np.allclose(np.loadtxt(out / "z_values.txt", ndmin=2), run.z, atol=1e-6)


def _our_z_mu(run_dir, epoch) -> np.ndarray:
    """z_mu of every particle of a cryoDRGN run, from our preprocessing and the run's encoder.

    cryoDRGN 4.3.1 turns translations from fractions of the box into pixels with the lattice
    size D_img + 1 (``PoseTracker.load(..., data.D)``), where we use D_img, the box: its shifts
    are (D_img + 1) / D_img times ours (6 % at D=16, 0.8 % at D=128). To reproduce its z here,
    the translations are scaled by that factor.
    """
    from napari_cryodrgn.training.data import load_particle_data
    from napari_cryodrgn.training.preprocess import Preprocessor

    loaded = load_run(run_dir, epoch)
    ds, margs = loaded.config["dataset_args"], loaded.config["model_args"]
    data = load_particle_data(ds["particles"], ds["poses"], ctf=ds["ctf"], ind=ds["ind"])
    prep = Preprocessor(loaded.D_img, ds["invert_data"], ds["window"], ds["window_r"],
                        loaded.norm[1], enc_radius=margs["enc_mask"])
    rows = np.arange(data.n)
    trans = data.trans * (loaded.D_img + 1) / loaded.D_img
    _, _, enc = prep.batch(torch.from_numpy(np.ascontiguousarray(data.images(rows))), trans,
                           data.ctf)
    with torch.no_grad():
        mu, _ = loaded.model.encode(enc)
    return mu.numpy()


@pytest.mark.parametrize("name", NAMES)
def test_their_z_files_and_our_encoder(their_runs, interop_data, name):
    run = _run(their_runs, name)
    n = len(interop_data["ind_array"]) if run.spec.get("ind") else interop_data["n"]
    for ep in range(1, run.epochs + 1):
        path = run.workdir / f"z.{ep}.pkl"
        mu, logvar = load_z(path)
        with open(path, "rb") as f:  # the plain pickles cryoDRGN wrote, for comparison
            plain = [pickle.load(f), pickle.load(f)]
        assert mu.shape == (n, run.zdim) and logvar.shape == (n, run.zdim)
        np.testing.assert_array_equal(mu, plain[0])
        np.testing.assert_array_equal(logvar, plain[1])
        ours = _our_z_mu(run.workdir, ep)
        scale = max(float(np.abs(mu).max()), 1.0)
        np.testing.assert_allclose(ours, mu, atol=1e-4 * scale, rtol=0,
                                   err_msg=f"{name} epoch {ep}: our encoder on their weights")
    np.testing.assert_array_equal(load_z(run.workdir / "z.pkl")[0], mu)  # final copy


def test_their_index_option_took_our_pickle(their_runs, interop_data):
    (name,) = [k for k, s in THEIR_RUNS.items() if s.get("ind")]
    run = _run(their_runs, name)
    cfg = load_run(run.workdir).config
    assert cfg["dataset_args"]["ind"] == str(interop_data["ind"])
    assert load_z(run.workdir / "z.1.pkl")[0].shape[0] == len(interop_data["ind_array"])


def test_their_analyze_folder(their_runs):
    name = ANALYZE_THEIRS
    run = _run(their_runs, name)
    their_runs.jobs.check(f"analyze:{name}")
    folder = run.workdir / f"analyze.{run.epochs}"
    dec = load_run(run.workdir, run.epochs).volume_decoder(precision="fp32")
    z = load_z(run.workdir / f"z.{run.epochs}.pkl")[0]
    labels = load_pickle(folder / "kmeans4" / "labels.pkl")
    centers_ind = np.loadtxt(folder / "kmeans4" / "centers_ind.txt", dtype=np.int64)
    assert labels.shape == (len(z),) and set(np.unique(labels)) <= set(range(4))
    np.testing.assert_allclose(np.loadtxt(folder / "kmeans4" / "centers.txt"), z[centers_ind],
                               rtol=1e-6, atol=1e-6)
    n_maps = 0
    for sub in ("pc1", "pc2", "kmeans4"):
        zs = np.loadtxt(folder / sub / "z_values.txt", ndmin=2)
        for i, zi in enumerate(zs):
            theirs, _ = read_map(folder / sub / f"vol_{i + 1:03d}.mrc")
            assert_maps_agree(dec(zi), theirs, f"{name} analyze {sub} #{i}",
                              f"theirs {name} (analyze)")
            n_maps += 1
    assert n_maps == 3 + 3 + 4


def test_our_cli_analyze_on_their_run(their_runs, tmp_path):
    """``napari-cryodrgn analyze`` on their folder (which holds cryoDRGN's own analyze.N):
    the PC traversals run through the same latent points, and the maps equal cryoDRGN's."""
    from napari_cryodrgn.cli import main

    name = ANALYZE_THEIRS
    run = _run(their_runs, name)
    their_runs.jobs.check(f"analyze:{name}")
    theirs_dir = run.workdir / f"analyze.{run.epochs}"
    out = tmp_path / "ours"
    assert main(["analyze", str(run.workdir), "--epoch", str(run.epochs), "--skip-umap",
                 "--pc", "2", "--n-per-pc", "3", "--ksample", "4", "-o", str(out),
                 "--device", "cpu"]) == 0
    z = load_z(run.workdir / f"z.{run.epochs}.pkl")[0]
    for sub in ("pc1", "pc2"):
        ours_z = np.loadtxt(out / sub / "z_values.txt", ndmin=2)
        theirs_z = np.loadtxt(theirs_dir / sub / "z_values.txt", ndmin=2)
        order = np.arange(len(ours_z))
        if not np.allclose(ours_z, theirs_z, atol=1e-5):  # a PC's sign is arbitrary
            order = order[::-1]
        np.testing.assert_allclose(ours_z[order], theirs_z, atol=1e-5, err_msg=sub)
        for i, j in enumerate(order):
            ours, _ = read_map(out / sub / f"vol_{j + 1:03d}.mrc")
            theirs, _ = read_map(theirs_dir / sub / f"vol_{i + 1:03d}.mrc")
            assert_maps_agree(ours, theirs, f"{name} our analyze {sub} #{i}",
                              f"theirs {name} (our analyze)")
    centers = np.loadtxt(out / "kmeans4" / "centers_ind.txt", dtype=np.int64)
    np.testing.assert_allclose(np.loadtxt(out / "kmeans4" / "z_values.txt", ndmin=2),
                               z[centers], atol=1e-6)
