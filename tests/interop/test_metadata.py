"""Metadata parity with cryoDRGN 4.3.1: .star and .cs files, pose and CTF pickles, index pickles.

One cryoDRGN process runs ``parse_pose_star``, ``parse_ctf_star``, ``parse_pose_csparc`` and
``parse_ctf_csparc`` on files written from the simulator's dataset (120 particles, D=16) and
from a fixed set of poses (box 64):

- RELION 3.1 as the simulator writes it (optics table, origins in Angstrom), RELION 3.1 with two
  optics groups that differ in voltage, Cs and amplitude contrast, RELION 3.0 as our writer
  writes it, and RELION 3.0 as RELION 3.0 itself wrote it (one table, origins in pixels, pixel
  size only as detector pixel size and magnification: cryoDRGN is given ``-D`` and ``--Apix``);
- cryoSPARC .cs (axis-angle poses, shifts in pixels, CTF in radians);
- subsets of the two-optics-group .star and of the .cs written by ``io.subset`` (our index
  pickle's rows).

For each, cryoDRGN's pickles equal what our readers return from the same file, and the
simulator's truth; cryoDRGN's pickles load through our restricted readers; the images
cryoDRGN's ``ImageSource`` reads equal ours. cryoDRGN's ``write_star`` (3.1 and ``--relion30``)
from our pickles is read back by us. Index pickles work both ways: ours drive cryoDRGN's
``--ind`` (``filter_pkl``, ``write_star``; ``train_vae --ind`` and ``filter --plot-inds`` are in
the run tests), and cryoDRGN's ``select_random`` selections load through our index reader.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from _cryodrgn import job, run_jobs

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.geometry.rotations import matrix_to_euler_relion
from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.ctf import load_ctf, save_ctf
from napari_cryodrgn.io.index import load_index
from napari_cryodrgn.io.mrc import write_mrc
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.poses import load_poses, save_poses
from napari_cryodrgn.io.star import write_particles_star
from napari_cryodrgn.io.subset import write_cs_subset, write_star_subset

pytestmark = pytest.mark.interop

STACK = "Extract/stack.mrcs"  # relative to the metadata files, as RELION writes it


def _load_plain(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _write_relion30_as_relion(path, rot, trans, ctf, D):
    """A particle .star as RELION 3.0 writes it: one table, origins in pixels, pixel size only
    as detector pixel size (um) and magnification, no image size."""
    euler = matrix_to_euler_relion(rot)
    pix = np.asarray(trans, np.float64) * D
    cols = ["rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginX",
            "rlnOriginY", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
            "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnPhaseShift",
            "rlnDetectorPixelSize", "rlnMagnification"]
    lines = ["", "data_", "", "loop_"] + [f"_{c} #{i}" for i, c in enumerate(cols, start=1)]
    for i in range(len(rot)):
        vals = [f"{i + 1:06d}@{STACK}", *euler[i], *pix[i], *ctf[i, 2:9], 5.0, 5e4 / ctf[i, 1]]
        lines.append(" ".join(v if isinstance(v, str) else f"{v:.6f}" for v in vals))
    Path(path).write_text("\n".join(lines) + "\n")


def _write_relion31_two_groups(path, rot, trans, ctf, D):
    """RELION 3.1 with two optics groups (even particles in group 1, odd in group 2) that differ
    in voltage, Cs and amplitude contrast; returns the CTF table the file describes."""
    optics = {1: (300.0, 2.7, 0.1), 2: (200.0, 2.0, 0.07)}
    group = 1 + np.arange(len(rot)) % 2
    ctf = np.array(ctf, np.float64)
    for g, (kv, cs, w) in optics.items():
        ctf[group == g, 5:8] = kv, cs, w
    apix = float(ctf[0, 1])
    euler = matrix_to_euler_relion(rot)
    ang = np.asarray(trans, np.float64) * D * apix
    text = ["", "data_optics", "", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
            "_rlnImagePixelSize #3", "_rlnImageSize #4", "_rlnImageDimensionality #5",
            "_rlnVoltage #6", "_rlnSphericalAberration #7", "_rlnAmplitudeContrast #8"]
    text += [f"opticsGroup{g} {g} {apix:.6f} {D} 2 {kv} {cs} {w}"
             for g, (kv, cs, w) in optics.items()]
    cols = ["rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
            "rlnOriginYAngst", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
            "rlnPhaseShift", "rlnOpticsGroup"]
    text += ["", "data_particles", "", "loop_"]
    text += [f"_{c} #{i}" for i, c in enumerate(cols, start=1)]
    for i in range(len(rot)):
        vals = [*euler[i], *ang[i], *ctf[i, 2:5], ctf[i, 8]]
        text.append(f"{i + 1:06d}@{STACK} " + " ".join(f"{v:.6f}" for v in vals) +
                    f" {group[i]}")
    Path(path).write_text("\n".join(text) + "\n")
    return ctf


@pytest.fixture(scope="module")
def metadata(cryodrgn, interop_data, poses_ctf_box64, tmp_path_factory):
    """Write every metadata file, run all cryoDRGN commands on them in one process."""
    root = tmp_path_factory.mktemp("metadata")
    (root / "Extract").mkdir()
    d = interop_data
    shutil.copyfile(d["particles"], root / STACK)
    sim_rot, sim_trans = load_poses(d["poses"])
    sim_ctf = load_ctf(d["ctf"])
    D, apix = d["D"], d["apix"]
    cases = {}  # name -> file, true rot, trans, ctf, extra cryoDRGN args, our readers' kwargs

    def add(name, path, rot, trans, ctf, cd_pose=(), cd_ctf=(), ours=None):
        cases[name] = dict(path=path, rot=rot, trans=trans, ctf=ctf, ours=ours or {},
                           cd_args={"pose": list(cd_pose), "ctf": list(cd_ctf)})

    # the simulator's own RELION 3.1 file, pointed at the copied stack
    star31 = root / "sim31.star"
    star31.write_text(Path(d["star"]).read_text().replace("@particles.mrcs", f"@{STACK}"))
    add("sim relion3.1", star31, sim_rot, sim_trans, sim_ctf)
    two = root / "sim31_two_groups.star"
    add("sim relion3.1 two optics groups", two, sim_rot, sim_trans,
        _write_relion31_two_groups(two, sim_rot, sim_trans, sim_ctf, D))
    ours30 = root / "sim30_ours.star"
    write_particles_star(ours30, STACK, sim_rot, sim_trans, sim_ctf, apix, D, relion31=False)
    add("sim relion3.0 (our writer)", ours30, sim_rot, sim_trans, sim_ctf)
    pure30 = root / "sim30_relion.star"
    _write_relion30_as_relion(pure30, sim_rot, sim_trans, sim_ctf, D)
    add("sim relion3.0 (as RELION 3.0)", pure30, sim_rot, sim_trans, sim_ctf,
        cd_pose=["-D", D], cd_ctf=["-D", D, "--Apix", apix], ours={"D": D})
    cs = root / "sim.cs"
    write_particles_cs(cs, f">{STACK}", sim_rot, sim_trans, sim_ctf, apix, D)
    add("sim cryosparc", cs, sim_rot, sim_trans, sim_ctf)
    # a fixed set of poses at box 64, stack of 8 (the original test_io_interop cases)
    rot, trans, ctf, D64, apix64 = poses_ctf_box64
    n7 = len(rot)
    data7 = np.random.default_rng(0).normal(size=(n7, 8, 8)).astype(np.float32)
    write_mrc(root / "Extract" / "stack7.mrcs", data7, 1.5)
    for name, relion31 in (("box64 relion3.1", True), ("box64 relion3.0", False)):
        p = root / f"{name.replace(' ', '_')}.star"
        write_particles_star(p, "Extract/stack7.mrcs", rot, trans, ctf, apix64, D64,
                             relion31=relion31)
        add(name, p, rot, trans, ctf)
    p = root / "box64.cs"
    write_particles_cs(p, ">Extract/stack7.mrcs", rot, trans, ctf, apix64, D64)
    add("box64 cryosparc", p, rot, trans, ctf)
    # subsets we export (the rows of our index pickle) read by cryoDRGN as the originals' rows
    sel = d["ind_array"]
    sub31 = root / "sim31_subset.star"
    write_star_subset(two, sel, sub31)
    add("sim relion3.1 two optics groups, subset", sub31, sim_rot[sel], sim_trans[sel],
        cases["sim relion3.1 two optics groups"]["ctf"][sel])
    sub_cs = root / "sim_subset.cs"
    write_cs_subset(cs, sel, sub_cs)
    add("sim cryosparc, subset", sub_cs, sim_rot[sel], sim_trans[sel], sim_ctf[sel])

    jobs = []
    for name, c in cases.items():
        kind = "csparc" if c["path"].suffix == ".cs" else "star"
        for what in ("pose", "ctf"):
            out = root / f"cd_{what}_{c['path'].stem}.pkl"
            c[f"cd_{what}"] = out
            jobs.append(job(f"parse_{what}_{kind}:{name}",
                            [f"parse_{what}_{kind}", c["path"], "-o", out, *c["cd_args"][what]]))
    # images as cryoDRGN's ImageSource reads them
    (root / "stacks.txt").write_text(f"{STACK}\n")
    images = {"star": star31, "relion3.0 star": pure30, "cs": cs, "txt": root / "stacks.txt"}
    for k, src in images.items():
        jobs.append(job(f"images:{k}", [src, root / f"img_{k.replace(' ', '_')}.npy"],
                        prog="images"))
    # cryoDRGN writes .star files from our pickles, all particles and our --ind selection
    save_poses(root / "ours_pose.pkl", sim_rot, sim_trans)
    save_ctf(root / "ours_ctf.pkl", sim_ctf)
    pk = ["--poses", root / "ours_pose.pkl", "--ctf", root / "ours_ctf.pkl"]
    jobs.append(job("write_star", ["write_star", root / STACK, *pk, "-o",
                                   root / "Extract" / "cd31.star"], prog="cryodrgn_utils"))
    jobs.append(job("write_star --relion30",
                    ["write_star", root / STACK, *pk, "--relion30", "-o",
                     root / "Extract" / "cd30.star"], prog="cryodrgn_utils"))
    jobs.append(job("write_star --ind",
                    ["write_star", root / STACK, *pk, "--ind", d["ind"], "-o",
                     root / "Extract" / "cd_ind.star"], prog="cryodrgn_utils"))
    for what in ("pose", "ctf"):
        jobs.append(job(f"filter_pkl {what}",
                        ["filter_pkl", root / f"ours_{what}.pkl", "--ind", d["ind"], "-o",
                         root / f"cd_filtered_{what}.pkl"], prog="cryodrgn_utils"))
    jobs.append(job("select_random", ["select_random", d["n"], "-n", 30, "--seed", 5, "-o",
                                      root / "cd_random.pkl", "-s",
                                      root / "cd_random_inverse.pkl"], prog="cryodrgn_utils"))
    res = run_jobs(cryodrgn, jobs, root / "cryodrgn")
    return dict(root=root, cases=cases, jobs=res, images=images, sim_rot=sim_rot,
                sim_trans=sim_trans, sim_ctf=sim_ctf, data7=data7, D=D, n=d["n"],
                ind=d["ind"], ind_array=d["ind_array"])


CASES = ["sim relion3.1", "sim relion3.1 two optics groups", "sim relion3.0 (our writer)",
         "sim relion3.0 (as RELION 3.0)", "sim cryosparc", "box64 relion3.1", "box64 relion3.0",
         "box64 cryosparc", "sim relion3.1 two optics groups, subset", "sim cryosparc, subset"]


@pytest.mark.parametrize("case", CASES)
def test_pose_and_ctf_parsers_agree(metadata, case):
    c = metadata["cases"][case]
    kind = "csparc" if c["path"].suffix == ".cs" else "star"
    metadata["jobs"].check(f"parse_pose_{kind}:{case}")
    metadata["jobs"].check(f"parse_ctf_{kind}:{case}")
    n = len(c["rot"])
    cd_rot, cd_trans = _load_plain(c["cd_pose"])
    our_rot, our_trans = load_poses(c["path"], **c["ours"])
    np.testing.assert_allclose(cd_rot, c["rot"], atol=2e-5)  # star: 6 decimals of degrees
    np.testing.assert_allclose(cd_trans, c["trans"], atol=1e-6)
    np.testing.assert_allclose(our_rot, cd_rot, atol=1e-6)
    np.testing.assert_allclose(our_trans, cd_trans, atol=1e-7)
    cd_ctf = _load_plain(c["cd_ctf"])
    assert cd_ctf.dtype == np.float32 and cd_ctf.shape == (n, 9)
    np.testing.assert_allclose(load_ctf(c["path"], **c["ours"]), cd_ctf, rtol=1e-6)
    np.testing.assert_allclose(cd_ctf, c["ctf"], rtol=1e-5, atol=1e-4)
    # cryoDRGN's own pickles load through our restricted loaders unchanged
    np.testing.assert_allclose(load_poses(c["cd_pose"])[0], cd_rot, atol=1e-6)
    np.testing.assert_allclose(load_poses(c["cd_pose"])[1], cd_trans, atol=1e-7)
    np.testing.assert_allclose(load_ctf(c["cd_ctf"]), cd_ctf)


@pytest.mark.parametrize("kind", ["star", "relion3.0 star", "cs", "txt"])
def test_images_agree(metadata, kind, interop_data):
    metadata["jobs"].check(f"images:{kind}")
    theirs = np.load(metadata["root"] / f"img_{kind.replace(' ', '_')}.npy")
    ours = open_particles(metadata["images"][kind]).images(slice(None))
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, open_particles(interop_data["particles"])
                                  .images(slice(None)))


@pytest.mark.parametrize("name", ["write_star", "write_star --relion30"])
def test_we_read_stars_cryodrgn_writes(metadata, name):
    metadata["jobs"].check(name)
    star = metadata["root"] / "Extract" / ("cd31.star" if name == "write_star" else "cd30.star")
    r, t = load_poses(star, D=metadata["D"])
    np.testing.assert_allclose(r, metadata["sim_rot"], atol=1e-5)
    np.testing.assert_allclose(t, metadata["sim_trans"], atol=1e-6)
    ctf_kw = {"D": metadata["D"], "apix": float(metadata["sim_ctf"][0, 1])}
    if name == "write_star":
        np.testing.assert_allclose(load_ctf(star, **ctf_kw), metadata["sim_ctf"], rtol=1e-6)
    else:  # cryoDRGN 4.3.1 leaves voltage, Cs and amplitude contrast out of --relion30 files
        with pytest.raises(InputError, match="no _rlnVoltage column"):
            load_ctf(star, **ctf_kw)
    ours = open_particles(star).images(slice(None))
    np.testing.assert_array_equal(ours, open_particles(metadata["root"] / STACK)
                                  .images(slice(None)))


def test_our_index_pickles_drive_cryodrgn(metadata):
    ind = metadata["ind_array"]
    for name in ("filter_pkl pose", "filter_pkl ctf", "write_star --ind"):
        metadata["jobs"].check(name)
    rot, trans = _load_plain(metadata["root"] / "cd_filtered_pose.pkl")
    np.testing.assert_array_equal(rot, metadata["sim_rot"][ind])
    np.testing.assert_array_equal(trans, metadata["sim_trans"][ind])
    np.testing.assert_array_equal(_load_plain(metadata["root"] / "cd_filtered_ctf.pkl"),
                                  metadata["sim_ctf"][ind])
    star = metadata["root"] / "Extract" / "cd_ind.star"
    np.testing.assert_allclose(load_poses(star, D=metadata["D"])[0], metadata["sim_rot"][ind],
                               atol=1e-5)
    all_images = open_particles(metadata["root"] / STACK).images(slice(None))
    np.testing.assert_array_equal(open_particles(star).images(slice(None)), all_images[ind])


def test_cryodrgn_index_pickles_load_in_ours(metadata):
    metadata["jobs"].check("select_random")
    n = metadata["n"]
    sel = load_index(metadata["root"] / "cd_random.pkl", n=n)
    inv = load_index(metadata["root"] / "cd_random_inverse.pkl", n=n)
    assert len(sel) == 30 and len(inv) == n - 30
    np.testing.assert_array_equal(np.sort(np.concatenate([sel, inv])), np.arange(n))
