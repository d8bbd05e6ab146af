"""``downsample`` and the ``parse_*`` commands against cryoDRGN 4.3.1's, run on the same files.

One cryoDRGN process runs ``downsample`` (plain, ``--chunk``, ``--ind``, the same box, .star,
.cs and .txt inputs, a .star output, ``--is-vol``), ``parse_pose_star`` / ``parse_ctf_star``
(RELION 3.1 with two optics groups, RELION 3.0 as RELION wrote it, with and without the
overriding options), ``parse_pose_csparc`` / ``parse_ctf_csparc`` (with ``--hetrefine`` and
the options cryoDRGN ignores), and reads our downsampled stacks, chunk list and .star with its
own ``ImageSource``. Our commands run on the same files through our command line.

Images must agree to 1e-4 of their range, pickles to 1e-5. Known differences, asserted as
such: for .cs and .txt inputs cryoDRGN writes the pixel size as if the input had 1.0 A pixels
(we write the true one); ``--is-vol`` maps get voxel size 1.0 from cryoDRGN (we scale the
input's); cryoDRGN's .star output keeps the old ``_rlnImageSize`` (ours has the new box).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from _cryodrgn import job, run_jobs
from test_metadata import _write_relion30_as_relion, _write_relion31_two_groups

from napari_cryodrgn.cli import main
from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.index import save_index
from napari_cryodrgn.io.mrc import read_mrc, read_mrc_header, write_mrc
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.star import write_particles_star

pytestmark = pytest.mark.interop

N, BOX, D_NEW, APIX = 25, 32, 16, 1.3
IND = [17, 3, 9, 4, 22, 0]  # unsorted: a .mrcs output keeps this order


def _smooth_noisy(rng, n, D):
    """Images with structure at every frequency (a blob and noise)."""
    y, x = np.mgrid[:D, :D] - D / 2
    blob = np.exp(-(x * x + y * y) / (2 * (D / 6) ** 2))
    return (blob[None] * rng.uniform(1, 3, (n, 1, 1)) + 0.3 * rng.normal(size=(n, D, D))
            ).astype(np.float32)


@pytest.fixture(scope="module")
def prep(cryodrgn, poses_ctf_box64, tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(11)
    (root / "Extract").mkdir()
    write_mrc(root / "Extract" / "stack.mrcs", _smooth_noisy(rng, N, BOX), APIX)
    rot, trans, ctf, D64, apix64 = poses_ctf_box64
    # particle files for downsample: the first 7 images, as .star, .cs and .txt
    ctf_box = np.array(ctf)
    ctf_box[:, 0], ctf_box[:, 1] = BOX, APIX
    write_particles_star(root / "p31.star", "Extract/stack.mrcs", rot, trans, ctf_box, APIX,
                         BOX)
    write_particles_cs(root / "p.cs", ">Extract/stack.mrcs", rot, trans, ctf_box, APIX, BOX)
    (root / "list.txt").write_text("Extract/stack.mrcs\n")
    save_index(root / "ind.pkl", np.array(IND))
    vol = _smooth_noisy(rng, 24, 24)  # a 24^3 map
    write_mrc(root / "map.mrc", vol, APIX)
    # metadata for the parse commands (box 64): RELION 3.1 two optics groups, RELION 3.0
    two = root / "two_groups.star"
    two_ctf = _write_relion31_two_groups(two, rot, trans, ctf, D64)
    pure30 = root / "relion30.star"
    _write_relion30_as_relion(pure30, rot, trans, ctf, D64)
    cs = root / "meta.cs"
    write_particles_cs(cs, ">Extract/stack.mrcs", rot, trans, ctf, apix64, D64)

    ds = {  # name -> (input, output name, extra args); -D is D_NEW unless given
        "plain": ("Extract/stack.mrcs", "plain.mrcs", []),
        "chunk": ("Extract/stack.mrcs", "chunk/c.mrcs", ["--chunk", "7"]),
        "ind": ("Extract/stack.mrcs", "ind.mrcs", ["--ind", root / "ind.pkl"]),
        "same box": ("Extract/stack.mrcs", "same.mrcs", ["-D", BOX]),
        "D 6": ("Extract/stack.mrcs", "d6.mrcs", ["-D", 6]),
        "star": ("p31.star", "star.mrcs", []),
        "star to star": ("p31.star", "sout/new.star", []),
        "cs": ("p.cs", "cs.mrcs", []),
        "txt": ("list.txt", "txt.mrcs", []),
        "map": ("map.mrc", "map12.mrc", ["--is-vol", "-D", 12]),
    }
    jobs = []
    for name, (src, out, extra) in ds.items():
        box = [] if "-D" in extra else ["-D", D_NEW]
        for side in ("ours", "cd"):
            (root / side / out).parent.mkdir(parents=True, exist_ok=True)
        argv = [root / src, *box, "-o", root / "cd" / out, *extra]
        jobs.append(job(f"downsample:{name}", ["downsample", *argv]))
        ours = ["downsample", *[str(a) for a in argv], "-q"]
        ours[ours.index(str(root / "cd" / out))] = str(root / "ours" / out)
        assert main(ours) == 0, name
    # cryoDRGN's ImageSource reads our outputs
    for name, path in (("plain", "plain.mrcs"), ("chunk", "chunk/c.txt"),
                       ("star to star", "sout/new.star")):
        jobs.append(job(f"images:{name}", [root / "ours" / path,
                                           root / f"cd_reads_{name.replace(' ', '_')}.npy"],
                        prog="images"))

    parse = {  # name -> (command, input, extra args)
        "pose 3.1": ("parse_pose_star", two, []),
        "pose 3.1 -D --Apix": ("parse_pose_star", two, ["-D", 128, "--Apix", 2.0]),
        "pose 3.0": ("parse_pose_star", pure30, ["-D", D64]),
        "pose 3.0 --Apix": ("parse_pose_star", pure30, ["-D", D64, "--Apix", 3.0]),
        "ctf 3.1": ("parse_ctf_star", two, []),
        "ctf 3.1 overrides": ("parse_ctf_star", two, ["-D", 128, "--Apix", 2.0, "--kv", 200,
                                                       "--cs", 2.0, "-w", 0.07, "--ps", 5]),
        "ctf 3.0": ("parse_ctf_star", pure30, ["-D", D64, "--Apix", apix64]),
        "pose cs": ("parse_pose_csparc", cs, []),
        "pose cs --hetrefine -D": ("parse_pose_csparc", cs, ["--hetrefine", "-D", 128]),
        "ctf cs": ("parse_ctf_csparc", cs, []),
        "ctf cs -D --Apix": ("parse_ctf_csparc", cs, ["-D", 128, "--Apix", 3.0]),
    }
    for name, (cmd, src, extra) in parse.items():
        stem = name.replace(" ", "_").replace("-", "")
        argv = [src, "-o", root / "cd" / f"{stem}.pkl", *extra]
        jobs.append(job(f"{cmd}:{name}", [cmd, *argv]))
        ours = [cmd.replace("_", "-"), str(src), "-o", str(root / "ours" / f"{stem}.pkl"),
                *[str(a) for a in extra]]
        assert main(ours) == 0, name
    res = run_jobs(cryodrgn, jobs, root / "cryodrgn")
    return dict(root=root, jobs=res, ds=ds, parse=parse, two_ctf=two_ctf, rot=rot,
                trans=trans, vol=vol)


def _images(path) -> np.ndarray:
    return open_particles(path).images(slice(None))


def _agree(ours, theirs, what, tol=1e-4):
    assert ours.shape == theirs.shape, f"{what}: {ours.shape} vs {theirs.shape}"
    rel = float(np.abs(ours - theirs).max() / np.ptp(theirs))
    print(f"{what}: max |diff| / range = {rel:.2e}")
    assert rel <= tol, f"{what}: max |diff| is {rel:.2e} of the range"


@pytest.mark.parametrize("name", ["plain", "ind", "same box", "D 6", "star", "cs", "txt"])
def test_downsampled_stacks_agree(prep, name):
    prep["jobs"].check(f"downsample:{name}")
    _, out, _ = prep["ds"][name]
    ours, theirs = prep["root"] / "ours" / out, prep["root"] / "cd" / out
    _agree(_images(ours), _images(theirs), name)
    d = read_mrc_header(ours).shape[-1]
    ours_apix, theirs_apix = read_mrc_header(ours).apix, read_mrc_header(theirs).apix
    assert ours_apix == pytest.approx(round(APIX * BOX / d, 6), abs=1e-5)
    if name in ("cs", "txt"):  # cryoDRGN takes the pixel size of these inputs as 1.0
        assert theirs_apix == pytest.approx(round(BOX / d, 6), abs=1e-5) or \
            theirs_apix == pytest.approx(ours_apix, abs=1e-5)
    else:
        assert ours_apix == pytest.approx(theirs_apix, abs=1e-5)
    if name == "ind":
        full = _images(prep["root"] / "ours" / "plain.mrcs")
        np.testing.assert_array_equal(_images(ours), full[IND])


def test_chunks_agree(prep):
    prep["jobs"].check("downsample:chunk")
    ours, theirs = prep["root"] / "ours" / "chunk", prep["root"] / "cd" / "chunk"
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
    assert (ours / "c.txt").read_text().split() == (theirs / "c.txt").read_text().split() == [
        f"c.{i}.mrcs" for i in range(4)]
    for i in range(4):
        a, b = read_mrc_header(ours / f"c.{i}.mrcs"), read_mrc_header(theirs / f"c.{i}.mrcs")
        assert a.shape == b.shape and a.apix == pytest.approx(b.apix, abs=1e-5)
    _agree(_images(ours / "c.txt"), _images(theirs / "c.txt"), "chunk")


def test_star_outputs_agree(prep):
    prep["jobs"].check("downsample:star to star")
    ours = prep["root"] / "ours" / "sout" / "new.star"
    theirs = prep["root"] / "cd" / "sout" / "new.star"
    _agree(_images(ours), _images(theirs), "star to star")
    assert open_particles(ours).apix == pytest.approx(open_particles(theirs).apix)
    from napari_cryodrgn.io.star import read_star

    assert read_star(ours).values("rlnImageSize")[0] == D_NEW  # cryoDRGN keeps BOX here


def test_map_agrees(prep):
    prep["jobs"].check("downsample:map")
    ours, ours_apix = read_mrc(prep["root"] / "ours" / "map12.mrc")
    theirs, theirs_apix = read_mrc(prep["root"] / "cd" / "map12.mrc")
    _agree(ours, theirs, "map")
    assert ours_apix == pytest.approx(APIX * 2, abs=1e-5)
    assert theirs_apix in (pytest.approx(1.0), pytest.approx(ours_apix, abs=1e-5))


@pytest.mark.parametrize("name", ["plain", "chunk", "star to star"])
def test_cryodrgn_reads_our_outputs(prep, name):
    prep["jobs"].check(f"images:{name}")
    theirs = np.load(prep["root"] / f"cd_reads_{name.replace(' ', '_')}.npy")
    out = {"plain": "plain.mrcs", "chunk": "chunk/c.txt", "star to star": "sout/new.star"}
    np.testing.assert_array_equal(theirs, _images(prep["root"] / "ours" / out[name]))


def _load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("name", ["pose 3.1", "pose 3.1 -D --Apix", "pose 3.0",
                                  "pose 3.0 --Apix", "ctf 3.1", "ctf 3.1 overrides", "ctf 3.0",
                                  "pose cs", "pose cs --hetrefine -D", "ctf cs",
                                  "ctf cs -D --Apix"])
def test_pickles_agree(prep, name):
    cmd, _, _ = prep["parse"][name]
    prep["jobs"].check(f"{cmd}:{name}")
    stem = name.replace(" ", "_").replace("-", "")
    ours, theirs = _load(prep["root"] / "ours" / f"{stem}.pkl"), _load(
        prep["root"] / "cd" / f"{stem}.pkl")
    if cmd.startswith("parse_pose"):
        for a, b, what in ((ours[0], theirs[0], "rot"), (ours[1], theirs[1], "trans")):
            err = float(np.abs(np.asarray(a, np.float64) - b).max())
            print(f"{name} {what}: max |diff| = {err:.2e}")
            assert err <= 1e-5, f"{name} {what}: {err:.2e}"
    else:
        assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5, err_msg=name)
        print(f"{name}: max relative diff = "
              f"{float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1e-9))):.2e}")
    if name == "ctf 3.1":  # the two optics groups' voltage, Cs and amplitude contrast
        np.testing.assert_allclose(ours, prep["two_ctf"], rtol=1e-5)
    if name == "pose cs --hetrefine -D":
        np.testing.assert_allclose(ours[1], 2 * prep["trans"], atol=1e-6)
