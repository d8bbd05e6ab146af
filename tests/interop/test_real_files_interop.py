"""cryoDRGN 4.3.1 on the RELION and cryoSPARC files of tests/data/real_files, against ours.

One cryoDRGN process runs ``parse_pose_star`` / ``parse_ctf_star`` / ``parse_pose_csparc`` /
``parse_ctf_csparc`` on every fixture (with ``-D`` / ``--Apix`` / ``--abinit`` /
``--hetrefine`` where cryoDRGN needs them) and reads images through its ``ImageSource``. Where
cryoDRGN accepts a file, its arrays must equal ours; where it fails or differs the tests pin
down what each tool does:

- RELION 3.0 without _rlnPhaseShift: cryoDRGN writes NaN phase shifts, we read 0.
- Optics groups with different pixel sizes: cryoDRGN keeps one pixel size per particle; we
  read the same poses but refuse images and CTF (one line naming the groups).
- RELION 5 tomography particle sets: cryoDRGN parses them as if they were 2D particles; we
  refuse them.
- Stacks named relative to the RELION / cryoSPARC project folder: cryoDRGN needs --datadir
  (or the metadata file at the project root); we also look in the folders above the file.
- A cryoSPARC refinement output without blob/ctf fields: cryoDRGN needs -D and has no CTF; we
  join its passthrough file on uid and match cryoDRGN's reading of that file.
- Heterogeneous refinement (class output, shifts in the alignment's larger pixels): ours
  equals cryoDRGN with --hetrefine; without the flag cryoDRGN's shifts are half as large.
- 'All classes' outputs with several alignments_class_N: cryoDRGN --abinit takes class 0; we
  refuse (the classes' poses need not share a frame).
- A 100-class table (.npy header over 10 kB) and a cryoSPARC v2 object table: cryoDRGN 4.3.1
  cannot open them; we read them and match its reading of the same particles elsewhere.
"""

from __future__ import annotations

import importlib.util
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from _cryodrgn import job, run_jobs

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.poses import load_poses

pytestmark = pytest.mark.interop

_spec = importlib.util.spec_from_file_location(
    "real_files_fixtures", Path(__file__).parents[1] / "data" / "real_files" / "fixtures.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)
D = fx.D

# RELION fixture -> (cryoDRGN parse_pose_star args, parse_ctf_star args, our kwargs)
STAR = {
    "relion30_run_data.star": (["-D", D], ["-D", D, "--Apix", fx.APIX], {"D": D}),
    "relion30_data_images.star": (["-D", D], ["-D", D, "--Apix", fx.APIX],
                                  {"D": D, "apix": fx.APIX}),
    "relion31_run_data.star": ([], [], {}),
    "relion31_two_optics_groups.star": ([], [], {}),
    "relion4_class3d_run_it025_data.star": ([], [], {}),
    "relion5_helical_run_data.star": ([], [], {}),
    "relion31_mixed_pixel_size.star": ([], [], {}),
    "relion5_tomo_subtomograms.star": ([], [], {}),
    "relion5_tomo_2d_stacks.star": ([], [], {}),
}
STAR_AGREE = list(STAR)[:6]
STAR_IMAGES = ["relion30_run_data.star", "relion31_run_data.star", "relion5_helical_run_data.star"]
# cryoSPARC fixture (project-relative) -> {name: parse_pose_csparc args}, parse_ctf args or None
CS = {
    "exports/groups/P3_J12_particles/P3_J12_particles_exported.cs": ({"": []}, []),
    "J12/J12_005_particles.cs": ({"-D": ["-D", D]}, []),
    "J12/J12_passthrough_particles.cs": ({}, []),
    "J10/J10_particles_all_classes.cs": ({"--abinit": ["--abinit"]}, []),
    "J20/J20_class_01_00040_particles.cs": ({"--hetrefine": ["--hetrefine", "-D", D],
                                             "-D": ["-D", D]}, None),
    "J20/J20_00040_particles_all_classes.cs": ({"--abinit": ["--abinit", "-D", D]}, None),
    "J5/extracted_particles.cs": ({"": []}, []),
    "J30/J30_00080_particles.cs": ({"": []}, []),
    "J33/cryosparc_P4_J33_004_particles.cs": ({"": []}, []),
}
CS_IMAGES = ["exports/groups/P3_J12_particles/P3_J12_particles_exported.cs",
             "J10/J10_particles_all_classes.cs"]


def _key(rel: str) -> str:
    return rel.replace("/", "_")


@pytest.fixture(scope="module")
def real(cryodrgn, tmp_path_factory):
    """Both projects, and every cryoDRGN command on them in one process."""
    root = tmp_path_factory.mktemp("real_files")
    relion, cs = root / "relion", root / "cs"
    jobs, out = [], root / "cd"
    out.mkdir()
    stars, images = {}, {}
    for name, (pose_args, ctf_args, _) in STAR.items():
        stars[name], images["relion"] = fx.relion_project(relion, name, as_name=name)
        jobs.append(job(f"pose:{name}", ["parse_pose_star", stars[name], "-o",
                                         out / f"pose_{name}.pkl", *pose_args]))
        jobs.append(job(f"ctf:{name}", ["parse_ctf_star", stars[name], "-o",
                                        out / f"ctf_{name}.pkl", *ctf_args]))
    for name in STAR_IMAGES:  # cryoDRGN reads paths relative to the .star: a copy at the root
        shutil.copy(stars[name], relion / name)
        jobs.append(job(f"images:{name}", [relion / name, out / f"img_{name}.npy"],
                        prog="images"))
    images["cs"] = fx.cryosparc_project(cs)
    for rel, (poses, ctf_args) in CS.items():
        for flag, args in poses.items():
            jobs.append(job(f"pose{flag}:{rel}", ["parse_pose_csparc", cs / rel, "-o",
                                                  out / f"pose{flag}_{_key(rel)}.pkl", *args]))
        if ctf_args is not None:
            jobs.append(job(f"ctf:{rel}", ["parse_ctf_csparc", cs / rel, "-o",
                                           out / f"ctf_{_key(rel)}.pkl", *ctf_args]))
    for rel in CS_IMAGES:
        copy = cs / Path(rel).name
        shutil.copy(cs / rel, copy)
        jobs.append(job(f"images:{rel}", [copy, out / f"img_{_key(rel)}.npy"], prog="images"))
    res = run_jobs(cryodrgn, jobs, root / "driver")
    return dict(relion=relion, cs=cs, stars=stars, out=out, jobs=res, images=images)


def _pkl(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _theirs_pose(real, name, flag=""):
    return _pkl(real["out"] / f"pose{flag}_{name}.pkl")


@pytest.mark.parametrize("name", STAR_AGREE)
def test_star_parsers_agree(real, name):
    real["jobs"].check(f"pose:{name}")
    real["jobs"].check(f"ctf:{name}")
    ours_kw = STAR[name][2]
    star = real["stars"][name]
    rot, trans = load_poses(star, **{k: v for k, v in ours_kw.items() if k == "D"})
    cd_rot, cd_trans = _pkl(real["out"] / f"pose_{name}.pkl")
    np.testing.assert_allclose(rot, cd_rot, atol=1e-6)
    np.testing.assert_allclose(trans, cd_trans, atol=1e-7)
    ctf, cd_ctf = load_ctf(star, **ours_kw), _pkl(real["out"] / f"ctf_{name}.pkl")
    np.testing.assert_allclose(ctf[:, :8], cd_ctf[:, :8], rtol=1e-6)
    if "_rlnPhaseShift" in star.read_text():
        np.testing.assert_allclose(ctf[:, 8], cd_ctf[:, 8], atol=1e-6)
    else:  # cryoDRGN writes NaN where the file has no phase shift; we read 0
        assert np.isnan(cd_ctf[:, 8]).all() and (ctf[:, 8] == 0).all()


@pytest.mark.parametrize("name", STAR_IMAGES)
def test_star_images_agree(real, name):
    real["jobs"].check(f"images:{name}")
    theirs = np.load(real["out"] / f"img_{name}.npy")
    ours = open_particles(real["stars"][name]).images(slice(None))  # from Refine3D/job012/
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, real["images"]["relion"])


def test_mixed_pixel_sizes(real):
    name = "relion31_mixed_pixel_size.star"
    real["jobs"].check(f"pose:{name}")
    real["jobs"].check(f"ctf:{name}")
    cd_rot, cd_trans = _pkl(real["out"] / f"pose_{name}.pkl")
    rot, trans = load_poses(real["stars"][name])
    np.testing.assert_allclose(rot, cd_rot, atol=1e-6)
    np.testing.assert_allclose(trans, cd_trans, atol=1e-7)
    cd_ctf = _pkl(real["out"] / f"ctf_{name}.pkl")
    np.testing.assert_allclose(cd_ctf[:, 1], [fx.MIXED_APIX[g] for g in fx.GROUP], rtol=1e-6)
    for read in (load_ctf, open_particles):
        with pytest.raises(InputError, match="optics groups disagree on the pixel size"):
            read(real["stars"][name])


@pytest.mark.parametrize("name", ["relion5_tomo_subtomograms.star", "relion5_tomo_2d_stacks.star"])
def test_tomography_sets_cryodrgn_parses_are_refused(real, name):
    real["jobs"].check(f"pose:{name}")  # cryoDRGN takes them for 2D particles
    real["jobs"].check(f"ctf:{name}")
    for read in (load_poses, load_ctf, open_particles):
        with pytest.raises(InputError, match="tomography particle set"):
            read(real["stars"][name])


def _truth_cs(real):
    """cryoDRGN's reading of the exported file: all fields in one table, read without help."""
    rel = "exports/groups/P3_J12_particles/P3_J12_particles_exported.cs"
    real["jobs"].check(f"pose:{rel}")
    real["jobs"].check(f"ctf:{rel}")
    rot, trans = _theirs_pose(real, _key(rel))
    return rot, trans, _pkl(real["out"] / f"ctf_{_key(rel)}.pkl")


def test_cs_export_and_extraction_agree(real):
    rel = "exports/groups/P3_J12_particles/P3_J12_particles_exported.cs"
    cd_rot, cd_trans, cd_ctf = _truth_cs(real)
    rot, trans = load_poses(real["cs"] / rel)
    np.testing.assert_allclose(rot, cd_rot, atol=1e-6)
    np.testing.assert_allclose(trans, cd_trans, atol=1e-7)
    np.testing.assert_allclose(load_ctf(real["cs"] / rel), cd_ctf, rtol=1e-6)
    ext = "J5/extracted_particles.cs"
    real["jobs"].check(f"ctf:{ext}")
    np.testing.assert_allclose(load_ctf(real["cs"] / ext), _pkl(real["out"] /
                                                                f"ctf_{_key(ext)}.pkl"), rtol=1e-6)
    assert not real["jobs"].results[f"pose:{ext}"]["ok"]  # neither tool finds poses there
    with pytest.raises(InputError, match="no 3D alignments"):
        load_poses(real["cs"] / ext)


@pytest.mark.parametrize("rel", CS_IMAGES)
def test_cs_images_agree(real, rel):
    real["jobs"].check(f"images:{rel}")
    ours = open_particles(real["cs"] / rel).images(slice(None))  # from its own job folder
    np.testing.assert_array_equal(ours, np.load(real["out"] / f"img_{_key(rel)}.npy"))
    np.testing.assert_array_equal(ours, real["images"]["cs"])


def test_cs_passthrough_join(real):
    main, pt = "J12/J12_005_particles.cs", "J12/J12_passthrough_particles.cs"
    real["jobs"].check(f"pose-D:{main}")
    real["jobs"].check(f"ctf:{pt}")
    assert not real["jobs"].results[f"ctf:{main}"]["ok"]  # cryoDRGN: no ctf fields there
    cd_rot, cd_trans = _theirs_pose(real, _key(main), "-D")
    rot, trans = load_poses(real["cs"] / main)  # box from the passthrough's blob/shape
    np.testing.assert_allclose(rot, cd_rot, atol=1e-6)
    np.testing.assert_allclose(trans, cd_trans, atol=1e-7)
    # our CTF of the output file = cryoDRGN's CTF of the passthrough file, rows matched on uid
    uid_main = np.load(real["cs"] / main)["uid"]
    uid_pt = np.load(real["cs"] / pt)["uid"]
    rows = [int(np.flatnonzero(uid_pt == u)[0]) for u in uid_main]
    np.testing.assert_allclose(load_ctf(real["cs"] / main),
                               _pkl(real["out"] / f"ctf_{_key(pt)}.pkl")[rows], rtol=1e-6)


def test_cs_abinit_and_heterogeneous_refinement(real):
    _, cd_trans_export, cd_ctf = _truth_cs(real)
    ab = "J10/J10_particles_all_classes.cs"
    real["jobs"].check(f"pose--abinit:{ab}")
    cd_rot, cd_trans = _theirs_pose(real, _key(ab), "--abinit")
    rot, trans = load_poses(real["cs"] / ab)
    np.testing.assert_allclose(rot, cd_rot, atol=1e-6)
    np.testing.assert_allclose(trans, cd_trans, atol=1e-7)
    np.testing.assert_allclose(load_ctf(real["cs"] / ab), cd_ctf, rtol=1e-6)
    het = "J20/J20_class_01_00040_particles.cs"
    real["jobs"].check(f"pose--hetrefine:{het}")
    real["jobs"].check(f"pose-D:{het}")
    cd_rot, cd_trans = _theirs_pose(real, _key(het), "--hetrefine")
    rot, trans = load_poses(real["cs"] / het)
    np.testing.assert_allclose(rot, cd_rot, atol=1e-6)
    np.testing.assert_allclose(trans, cd_trans, atol=1e-7)
    np.testing.assert_allclose(trans, cd_trans_export, atol=1e-7)
    _, cd_plain = _theirs_pose(real, _key(het), "-D")  # without --hetrefine: half the shifts
    np.testing.assert_allclose(cd_plain * 2, trans, atol=1e-7)
    allc = "J20/J20_00040_particles_all_classes.cs"
    real["jobs"].check(f"pose--abinit:{allc}")  # cryoDRGN takes class 0's poses
    with pytest.raises(InputError, match="3D alignments for 3 classes"):
        load_poses(real["cs"] / allc)


@pytest.mark.parametrize("rel", ["J30/J30_00080_particles.cs",
                                 "J33/cryosparc_P4_J33_004_particles.cs"])
def test_cs_tables_cryodrgn_cannot_open(real, rel):
    res = real["jobs"].results
    assert not res[f"pose:{rel}"]["ok"] and not res[f"ctf:{rel}"]["ok"]
    cd_rot, cd_trans, cd_ctf = _truth_cs(real)  # the same particles, exported
    rot, trans = load_poses(real["cs"] / rel)
    np.testing.assert_allclose(rot, cd_rot, atol=1e-6)
    np.testing.assert_allclose(trans, cd_trans, atol=1e-7)
    np.testing.assert_allclose(load_ctf(real["cs"] / rel), cd_ctf, rtol=1e-6)
    np.testing.assert_array_equal(open_particles(real["cs"] / rel).images(slice(None)),
                                  real["images"]["cs"])
