"""``eval_images``: cryoDRGN 4.3.1's and ours on the same runs and particles.

One cryoDRGN process runs ``cryodrgn eval_images`` on every cryoDRGN run of ``their_runs``
(each positional encoding, domain and encoder; ``--no-window``, ``--uninvert-data`` and ``--ind``
runs), on one of them with a shuffled ``--ind`` and the particles as a .star, and on two runs
trained by our CLI, the same but for the encoder's canonical in-plane turn. Then:

- our ``eval_images`` (library and both CLI forms) on their runs writes their z_mu and
  z_logvar and their mean loss, reconstruction error and KLD;
- cryoDRGN's ``eval_images`` on our run trained with ``--no-enc-inplane`` writes our
  ``z.1.pkl``; on our default run (the encoder saw in-plane-turned images, which cryoDRGN does
  not know about) it does not, and ours does.

Two differences are compensated, not hidden. cryoDRGN 4.3.1 turns translations into pixels
with D_img + 1 where we use the box D_img, so the pose file each tool is given has its shifts
scaled by (D_img + 1) / D_img for ours (or D_img / (D_img + 1) for cryoDRGN on our runs);
``test_cryodrgns_shift_convention`` checks that the scaling is still needed. And cryoDRGN's
``eval_images`` takes ``--uninvert-data``/``--no-window`` from its flags only, where we read
them from config.yaml: cryoDRGN is given the run's flags, ours none.
"""

from __future__ import annotations

import numpy as np
import pytest
from _cryodrgn import job, run_jobs
from _specs import THEIR_RUNS

from napari_cryodrgn.analysis.eval_images import eval_images
from napari_cryodrgn.io.index import save_index
from napari_cryodrgn.io.poses import load_poses, save_poses
from napari_cryodrgn.io.safepickle import load_pickle
from napari_cryodrgn.training.checkpoint import load_z
from napari_cryodrgn.training.refine_z import encoder_zfile

pytestmark = pytest.mark.interop

D = 16
SHUFFLED = np.array([11, 3, 97, 0, 64, 119, 40, 41])
SHUFFLED_RUN = "gaussian-fourier-resid"
OUR_NETS = {"inplane": [], "no-inplane": ["--no-enc-inplane"]}
Z_ATOL = 1e-5  # times max(1, largest |z_mu|)
LOSS_RTOL = 1e-5


def _preprocessing_flags(spec: dict) -> list:
    return [f for f in spec.get("extra", []) if f in ("--no-window", "--uninvert-data")]


@pytest.fixture(scope="module")
def setup(cryodrgn, their_runs, interop_data, tmp_path_factory):
    """Our two runs, the pose files with compensated shifts, and cryoDRGN's eval_images."""
    from napari_cryodrgn.cli import main

    root = tmp_path_factory.mktemp("eval_images_interop")
    d = interop_data
    rot, trans = load_poses(d["poses"])
    poses = {"ours": root / "poses_for_ours.pkl", "theirs": root / "poses_for_cryodrgn.pkl"}
    save_poses(poses["ours"], rot, trans * (D + 1) / D)
    save_poses(poses["theirs"], rot, trans * D / (D + 1))
    save_index(root / "shuffled.pkl", SHUFFLED)
    ours = {}
    for name, flags in OUR_NETS.items():
        ours[name] = root / name
        argv = ["train", str(d["particles"]), "--poses", str(d["poses"]), "--ctf", str(d["ctf"]),
                "-o", str(ours[name]), "-n", "1", "--zdim", "3", "--enc-dim", "32",
                "--enc-layers", "1", "--dec-dim", "32", "--dec-layers", "1", "--seed", "1",
                "--device", "cpu", "--precision", "fp32", "-q", *flags]
        assert main(argv) == 0
    jobs, out = [], {}

    def add(key, particles, weights, pose_file, extra=()):
        out[key] = (root / f"{key}_losses.pkl", root / f"{key}_z.pkl")
        jobs.append(job(f"eval_images:{key}", [
            "eval_images", particles, weights, "-c", weights.parent / "config.yaml",
            "-o", out[key][0], "--out-z", out[key][1], "--poses", pose_file, "--ctf", d["ctf"],
            *extra]))

    for name, spec in THEIR_RUNS.items():
        run = their_runs.runs[name]
        extra = _preprocessing_flags(spec) + (["--ind", d["ind"]] if spec.get("ind") else [])
        add(f"theirs:{name}", d["particles"], run.workdir / f"weights.{run.epochs}.pkl",
            d["poses"], extra)
    run = their_runs.runs[SHUFFLED_RUN]
    add("theirs:shuffled-star", d["star"], run.workdir / f"weights.{run.epochs}.pkl",
        d["poses"], ["--ind", root / "shuffled.pkl"])
    for name, folder in ours.items():
        add(f"ours:{name}", d["particles"], folder / "weights.1.pkl", poses["theirs"])
    results = run_jobs(cryodrgn, jobs, root / "cryodrgn")
    return {"root": root, "ours": ours, "poses": poses, "out": out, "jobs": results}


def _cryodrgn(setup, key):
    setup["jobs"].check(f"eval_images:{key}")
    losses, z = setup["out"][key]
    mu, logvar = load_z(z)
    return mu, logvar, load_pickle(losses)


def _assert_agree(ours, mu, logvar, losses, what):
    scale = max(1.0, float(np.abs(mu).max()))
    np.testing.assert_allclose(ours.z_mu, mu, rtol=0, atol=Z_ATOL * scale, err_msg=f"{what} mu")
    np.testing.assert_allclose(ours.z_logvar, logvar, rtol=0,
                               atol=Z_ATOL * max(1.0, float(np.abs(logvar).max())),
                               err_msg=f"{what} logvar")
    assert set(losses) == {"loss", "recon", "kld"}, what  # cryoDRGN's losses pickle
    for key, value in ours.summary().items():
        assert value == pytest.approx(losses[key], rel=LOSS_RTOL), f"{what} {key}"


@pytest.mark.parametrize("name", list(THEIR_RUNS))
def test_ours_on_their_run_equals_cryodrgn(setup, their_runs, interop_data, name):
    mu, logvar, losses = _cryodrgn(setup, f"theirs:{name}")
    d, run = interop_data, their_runs.runs[name]
    ind = d["ind"] if THEIR_RUNS[name].get("ind") else None
    assert len(mu) == (len(d["ind_array"]) if ind else d["n"])
    ours = eval_images(d["particles"], setup["poses"]["ours"], d["ctf"], workdir=run.workdir,
                       ind=ind, device="cpu")  # preprocessing flags from config.yaml
    _assert_agree(ours, mu, logvar, losses, name)


def test_our_cli_takes_cryodrgns_command_line(setup, their_runs, interop_data, tmp_path):
    """cryoDRGN's own argv (pose file aside) through our CLI, and our form on the same run."""
    from napari_cryodrgn.cli import main

    name = "linear_lowf-hartley-mlp"  # trained with --uninvert-data
    mu, logvar, losses = _cryodrgn(setup, f"theirs:{name}")
    d, run = interop_data, their_runs.runs[name]
    weights = run.workdir / f"weights.{run.epochs}.pkl"
    argv = ["eval_images", str(d["particles"]), str(weights), "-c",
            str(run.workdir / "config.yaml"), "-o", str(tmp_path / "l.pkl"), "--out-z",
            str(tmp_path / "z.pkl"), "--poses", str(setup["poses"]["ours"]), "--ctf",
            str(d["ctf"]), "--uninvert-data", "-q", "--device", "cpu"]
    assert main(argv) == 0
    assert main(["eval-images", str(run.workdir), str(d["particles"]), "--poses",
                 str(setup["poses"]["ours"]), "--ctf", str(d["ctf"]), "--epoch",
                 str(run.epochs), "-o", str(tmp_path / "z2.pkl"), "--losses",
                 str(tmp_path / "l2.pkl"), "-q", "--device", "cpu"]) == 0
    for z, lf in (("z.pkl", "l.pkl"), ("z2.pkl", "l2.pkl")):
        got_mu, got_lv = load_z(tmp_path / z)
        np.testing.assert_allclose(got_mu, mu, rtol=0, atol=Z_ATOL, err_msg=z)
        np.testing.assert_allclose(got_lv, logvar, rtol=0, atol=Z_ATOL, err_msg=z)
        got = load_pickle(tmp_path / lf)
        for key in ("loss", "recon", "kld"):
            assert got[key] == pytest.approx(losses[key], rel=LOSS_RTOL), (lf, key)


def test_index_order_and_star_input(setup, their_runs, interop_data):
    mu, logvar, losses = _cryodrgn(setup, "theirs:shuffled-star")
    assert len(mu) == len(SHUFFLED)
    d = interop_data
    ours = eval_images(d["star"], setup["poses"]["ours"], d["ctf"],
                       workdir=their_runs.runs[SHUFFLED_RUN].workdir,
                       ind=setup["root"] / "shuffled.pkl", device="cpu")
    np.testing.assert_array_equal(ours.ind, SHUFFLED)
    _assert_agree(ours, mu, logvar, losses, "shuffled --ind, .star")


def test_cryodrgn_on_our_run(setup, interop_data):
    """Without the in-plane turn cryoDRGN's encoder input is ours: it writes our z.1.pkl."""
    mu, logvar, losses = _cryodrgn(setup, "ours:no-inplane")
    folder = setup["ours"]["no-inplane"]
    ref_mu, ref_lv = load_z(encoder_zfile(folder, 1))  # z.1.pkl: refined
    scale = max(1.0, float(np.abs(ref_mu).max()))
    np.testing.assert_allclose(mu, ref_mu, rtol=0, atol=Z_ATOL * scale)
    np.testing.assert_allclose(logvar, ref_lv, rtol=0, atol=Z_ATOL * scale)
    d = interop_data
    ours = eval_images(d["particles"], d["poses"], d["ctf"], workdir=folder, device="cpu")
    _assert_agree(ours, mu, logvar, losses, "our --no-enc-inplane run")


def test_cryodrgn_on_our_inplane_run_differs(setup, interop_data):
    """Our default encoder saw in-plane-turned images; cryoDRGN feeds it unturned ones, so
    its z are not the run's (use our eval_images, or z.N.pkl, for such runs)."""
    mu, _, losses = _cryodrgn(setup, "ours:inplane")
    folder = setup["ours"]["inplane"]
    ref_mu = load_z(encoder_zfile(folder, 1))[0]
    d = interop_data
    ours = eval_images(d["particles"], d["poses"], d["ctf"], workdir=folder, device="cpu")
    np.testing.assert_allclose(ours.z_mu, ref_mu, rtol=0, atol=1e-5)
    assert np.abs(mu - ref_mu).max() > 1e-2 * max(1.0, float(np.abs(ref_mu).max()))


def test_cryodrgns_shift_convention(setup, their_runs, interop_data):
    """With the shared pose file (no scaling) the tools differ, by the (D+1)/D shift factor."""
    name = SHUFFLED_RUN
    mu = _cryodrgn(setup, f"theirs:{name}")[0]
    d = interop_data
    plain = eval_images(d["particles"], d["poses"], d["ctf"],
                        workdir=their_runs.runs[name].workdir, device="cpu")
    assert np.abs(plain.z_mu - mu).max() > 100 * Z_ATOL, (
        "cryoDRGN no longer scales shifts by D + 1: drop the compensation in this file")
