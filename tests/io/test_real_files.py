"""The particle files real users have: RELION 3.0 / 3.1 / 4 / 5 .star and cryoSPARC .cs
(exports, job folders with passthrough files, 2D / ab-initio / heterogeneous refinement
outputs, cryoSPARC v2 object tables, 100-class headers), read from the fixtures of
tests/data/real_files laid out as RELION and cryoSPARC projects. What the readers return must
equal the values written into the fixtures; each refusal is one line naming the file and the
remedy."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.geometry.rotations import relion_euler_to_cryodrgn
from napari_cryodrgn.io.cs import read_cs
from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.poses import load_poses
from napari_cryodrgn.io.subset import write_cs_subset

_spec = importlib.util.spec_from_file_location(
    "real_files_fixtures", Path(__file__).parents[1] / "data" / "real_files" / "fixtures.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

D = fx.D
REL_ROT = relion_euler_to_cryodrgn(fx.TRUTH_EULER)
TRANS = fx.TRUTH_SHIFT_PX / D


def rodrigues_transposed(v: np.ndarray) -> np.ndarray:
    """cryoDRGN's matrix for cryoSPARC pose ``v``: the transpose of exp(hat(v)), written
    out here so that the test does not lean on the reader's own conversion."""
    out = []
    for w in v:
        th = np.linalg.norm(w)
        K = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / max(th, 1e-12)
        out.append((np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K).T)
    return np.array(out)


CS_ROT = rodrigues_transposed(fx.TRUTH_POSE_CS)


def ctf_rows(apix=fx.APIX, phase=fx.TRUTH_PHASE, optics=None) -> np.ndarray:
    out = np.zeros((fx.N, 9))
    out[:, 0], out[:, 1] = D, apix
    out[:, 2:5] = fx.TRUTH_DEFOCUS
    out[:, 5:8] = fx.KV, fx.CS_MM, fx.AMP
    if optics is not None:
        for g, vals in optics.items():
            out[fx.GROUP == g, 5:8] = vals
    out[:, 8] = phase
    return out


def one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in: {msg}"
    return msg


# -- RELION -------------------------------------------------------------------------------------
# fixture -> (pixel size, phase shifts, optics, D given to readers, apix given to load_ctf)
RELION = {
    "relion30_run_data.star": (fx.APIX, 0.0, None, D, None),
    "relion30_data_images.star": (None, fx.TRUTH_PHASE, None, D, fx.APIX),
    "relion31_run_data.star": (fx.APIX, fx.TRUTH_PHASE, None, None, None),
    "relion31_two_optics_groups.star": (fx.APIX, fx.TRUTH_PHASE, fx.OPTICS_2, None, None),
    "relion4_class3d_run_it025_data.star": (fx.APIX, fx.TRUTH_PHASE, None, None, None),
    "relion5_helical_run_data.star": (fx.APIX_R5, 0.0, None, None, None),
}


@pytest.mark.parametrize("name", list(RELION))
def test_relion_files_read(tmp_path, name, monkeypatch):
    apix, phase, optics, d_arg, apix_arg = RELION[name]
    monkeypatch.chdir(tmp_path)  # not the project folder: stacks are found from the .star
    star, images = fx.relion_project(tmp_path / "proj", name)
    src = open_particles(star)
    assert (src.n, src.D) == (fx.N, D)
    assert src.apix == (None if apix is None else pytest.approx(apix))
    np.testing.assert_array_equal(src.images(slice(None)), images)
    rot, trans = load_poses(star, n=fx.N, D=d_arg)
    np.testing.assert_allclose(rot, REL_ROT, atol=1e-6)
    np.testing.assert_allclose(trans, TRANS, atol=1e-7)
    np.testing.assert_allclose(load_ctf(star, n=fx.N, D=d_arg, apix=apix_arg),
                               ctf_rows(apix or apix_arg, phase, optics), rtol=1e-6)


def test_relion_missing_box_and_pixel_size_name_the_remedy(tmp_path):
    star, _ = fx.relion_project(tmp_path, "relion30_data_images.star")
    with pytest.raises(InputError) as e:
        load_poses(star)
    one_line(e, str(star), "_rlnImageSize", "-D")
    with pytest.raises(InputError) as e:
        load_ctf(star, D=D)
    one_line(e, str(star), "no pixel size", "--Apix")
    star30, _ = fx.relion_project(tmp_path, "relion30_run_data.star", as_name="r30.star")
    with pytest.raises(InputError) as e:
        load_ctf(star30)
    one_line(e, "r30.star", "_rlnImageSize", "-D")


def test_relion_optics_groups_that_disagree_on_pixel_size_are_refused(tmp_path):
    star, _ = fx.relion_project(tmp_path, "relion31_mixed_pixel_size.star")
    for read in (open_particles, load_ctf):
        with pytest.raises(InputError) as e:
            read(star)
        one_line(e, str(star), "optics groups disagree on the pixel size",
                 "opticsGroup1 (1): 2 A", "opticsGroup2 (2): 1.8 A", "keep one optics group")
    # poses are exact per particle: each group's origins in Angstrom over its own pixel size
    rot, trans = load_poses(star)
    np.testing.assert_allclose(rot, REL_ROT, atol=1e-6)
    np.testing.assert_allclose(trans, TRANS, atol=1e-7)


def test_relion_box_disagreement_is_refused(tmp_path):
    star, _ = fx.relion_project(tmp_path, "relion31_two_optics_groups.star")
    text = star.read_text().replace(" mtf_k3_standard_300kV.star     1.000000   200.000000     "
                                    "2.000000     0.070000     2.000000           16",
                                    " mtf_k3_standard_300kV.star     1.000000   200.000000     "
                                    "2.000000     0.070000     2.000000           32")
    assert text != star.read_text()
    star.write_text(text)
    for read in (open_particles, load_ctf):
        with pytest.raises(InputError) as e:
            read(star)
        one_line(e, str(star), "disagree on the box size", "opticsGroup2 (2): 32 px")


REFUSED = {
    "relion5_tomo_subtomograms.star": "tomography particle set (_rlnTomoName)",
    "relion5_tomo_2d_stacks.star": "tomography particle set (_rlnTomoName)",
    "relion31_run_model.star": "RELION model (run_model.star) file",
    "relion31_micrographs_ctf.star": "RELION micrographs file (data_micrographs)",
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_relion_files_that_are_not_particle_sets_are_refused(tmp_path, name):
    star, _ = fx.relion_project(tmp_path, name)
    for read in (open_particles, lambda p: load_poses(p, D=D), lambda p: load_ctf(p, D=D)):
        with pytest.raises(InputError) as e:
            read(star)
        one_line(e, str(star), REFUSED[name])


def test_relion_3d_images_and_ctf_premultiplied_images_are_refused(tmp_path):
    star, _ = fx.relion_project(tmp_path, "relion4_class3d_run_it025_data.star")
    text = star.read_text()
    premult = text.replace("           16            2            0 ",
                           "           16            2            1 ")
    assert premult != text
    star.write_text(premult)
    with pytest.raises(InputError) as e:
        open_particles(star)
    one_line(e, str(star), "CTF-premultiplied", "re-extract")
    assert load_poses(star)[0].shape == (fx.N, 3, 3)  # poses and CTF values are still valid
    assert load_ctf(star).shape == (fx.N, 9)
    star.write_text(text.replace("           16            2            0 ",
                                 "           16            3            0 "))
    for read in (open_particles, load_poses, load_ctf):
        with pytest.raises(InputError) as e:
            read(star)
        one_line(e, str(star), "_rlnImageDimensionality 3")


def test_relion_origins_in_pixels_and_angstrom_must_agree(tmp_path):
    star, _ = fx.relion_project(tmp_path, "relion31_run_data.star")
    lines = star.read_text().split("\n")
    lines = [ln + "\n_rlnOriginX #27 \n_rlnOriginY #28 " if ln.startswith("_rlnRandomSubset") else
             ln for ln in lines]
    rows = [i for i, ln in enumerate(lines) if "@Extract" in ln]
    for k, i in enumerate(rows):
        lines[i] += " ".join(f"{v:12.6f}" for v in fx.TRUTH_SHIFT_PX[k]) + " "
    star.write_text("\n".join(lines))
    np.testing.assert_allclose(load_poses(star)[1], TRANS, atol=1e-7)  # consistent: fine
    lines[rows[2]] = lines[rows[2]].replace("     3.000000     1.250000 ",
                                            "     5.000000     1.250000 ")
    star.write_text("\n".join(lines))
    with pytest.raises(InputError) as e:
        load_poses(star)
    one_line(e, str(star), "disagree for particle 2", "remove the stale pair")


# -- RELION image paths -------------------------------------------------------------------------
def _rename(star: Path, new_names: list[str], dest: Path | None = None) -> Path:
    text = star.read_text()
    for old, new in zip(fx.relion_names(), new_names, strict=True):
        text = text.replace(f"{old} ", f"{new} ", 1)
    dest = dest or star
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def test_relion_paths_relative_to_star_absolute_and_typed(tmp_path):
    proj = tmp_path / "proj"
    star, images = fx.relion_project(proj, "relion31_run_data.star")
    # relative to the .star's own folder (cryoDRGN's convention)
    local = _rename(star, [n.replace("Extract/job005/", "") for n in fx.relion_names()],
                    proj / "Extract" / "job005" / "particles.star")
    np.testing.assert_array_equal(open_particles(local).images(slice(None)), images)
    # absolute paths, and RELION's file-type suffix
    absolute = [n.replace("@", f"@{proj}/") + (":mrcs" if i % 2 else "")
                for i, n in enumerate(fx.relion_names())]
    far = _rename(star, absolute, tmp_path / "elsewhere" / "abs.star")
    np.testing.assert_array_equal(open_particles(far).images(slice(None)), images)


def test_relion_star_outside_its_project(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    star, images = fx.relion_project(proj, "relion31_run_data.star")
    moved = tmp_path / "downloads" / "run_data.star"
    moved.parent.mkdir()
    shutil.move(star, moved)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as e:
        open_particles(moved)
    one_line(e, str(moved), "refers to stack Extract/job005/Micrographs/mic1.mrcs (and 1 more)",
             f"under {moved.parent} or any folder above it",
             f"nor in the working folder {tmp_path}", "--datadir", "project folder")
    src = open_particles(moved, datadir=proj)
    np.testing.assert_array_equal(src.images(slice(None)), images)
    monkeypatch.chdir(proj)  # RELION's convention: paths relative to where relion runs
    np.testing.assert_array_equal(open_particles(moved).images(slice(None)), images)


def test_relion_datadir_wins(tmp_path):
    # stacks where the .star's paths lead, and other stacks of the same names in --datadir
    star, images = fx.relion_project(tmp_path / "proj", "relion31_run_data.star")
    other = tmp_path / "downsampled"
    fx.relion_project(other, "relion31_run_data.star", seed=1)
    for rel in fx.RELION_STACKS:
        shutil.move(other / rel, other / Path(rel).name)  # flat, found by file name
    theirs = fx.truth_images(fx.stack_images(seed=1))
    np.testing.assert_array_equal(open_particles(star).images(slice(None)), images)
    np.testing.assert_array_equal(open_particles(star, datadir=other).images(slice(None)),
                                  theirs)


def test_relion_bare_names_are_not_taken_from_folders_above(tmp_path, make_stack):
    make_stack("mic1.mrcs", n=3)  # a stack of the same name one folder up
    star = tmp_path / "sub" / "p.star"
    star.parent.mkdir()
    star.write_text("data_\n\nloop_\n_rlnImageName #1\n000001@mic1.mrcs\n")
    with pytest.raises(InputError) as e:
        open_particles(star)
    one_line(e, "refers to stack mic1.mrcs", f"in {star.parent} or the working folder")


def test_relion_name_without_number_must_be_one_image(tmp_path, make_stack):
    make_stack("stack2d.mrcs", n=3)
    star = tmp_path / "p.star"
    star.write_text("data_\n\nloop_\n_rlnImageName #1\nstack2d.mrcs\n")
    with pytest.raises(InputError) as e:
        open_particles(star)
    one_line(e, str(star), "without an image number (stack2d.mrcs)", "holds 3 images")


# -- cryoSPARC ----------------------------------------------------------------------------------
@pytest.fixture
def csproj(tmp_path):
    root = tmp_path / "CS-project"
    images = fx.cryosparc_project(root)
    return root, images


def _check_all(path, images, rot=CS_ROT, trans=TRANS, ctf=None, **kw):
    src = open_particles(path, **kw)
    assert (src.n, src.D) == (fx.N, D) and src.apix == pytest.approx(fx.APIX)
    np.testing.assert_array_equal(src.images(slice(None)), images)
    r, t = load_poses(path, n=fx.N)
    np.testing.assert_allclose(r, rot, atol=1e-6)
    np.testing.assert_allclose(t, trans, atol=1e-7)
    np.testing.assert_allclose(load_ctf(path, n=fx.N), ctf_rows(phase=0.0) if ctf is None else ctf,
                               rtol=1e-6, atol=1e-4)


def test_cryosparc_export(csproj, monkeypatch, tmp_path):
    root, images = csproj
    monkeypatch.chdir(tmp_path)
    # '>J5/extract/...' paths, relative to the project three folders above the .cs; the stacks
    # are .mrc files with a volume header (space group 1, mz = nz): read as image stacks
    _check_all(root / "exports/groups/P3_J12_particles/P3_J12_particles_exported.cs", images)


def test_cryosparc_refinement_with_passthrough(csproj, caplog):
    root, images = csproj
    main = root / "J12/J12_005_particles.cs"
    order = [2, 0, 3, 1]  # the output file's own order; its passthrough holds 6 in another
    with caplog.at_level(logging.INFO, logger="napari_cryodrgn.io.cs"):
        _check_all(main, images[order], CS_ROT[order], TRANS[order], ctf_rows(phase=0.0)[order])
    assert "J12_passthrough_particles.cs (rows matched on uid)" in caplog.text


def test_cryosparc_downloaded_files(csproj, tmp_path):
    root, images = csproj
    dl = tmp_path / "Downloads"
    dl.mkdir()
    shutil.copy(root / "J12/J12_005_particles.cs", dl / "cryosparc_P3_J12_005_particles.cs")
    shutil.copy(root / "J12/J12_passthrough_particles.cs", dl / "P3_J12_passthrough_particles.cs")
    shutil.copy(root / "J9/J9_passthrough_particles_selected.cs",
                dl / "P3_J9_passthrough_particles_selected.cs")  # another job's: not used
    main = dl / "cryosparc_P3_J12_005_particles.cs"
    order = [2, 0, 3, 1]
    np.testing.assert_allclose(load_poses(main)[1], TRANS[order], atol=1e-7)
    np.testing.assert_allclose(load_ctf(main), ctf_rows(phase=0.0)[order], rtol=1e-6, atol=1e-4)
    with pytest.raises(InputError) as e:
        open_particles(main)
    one_line(e, "refers to stack J5/extract/008451726104_mic1_particles.mrc (and 1 more)",
             "--datadir")
    np.testing.assert_array_equal(open_particles(main, datadir=root).images(slice(None)),
                                  images[order])


def test_cryosparc_output_without_its_passthrough(csproj, tmp_path):
    root, _ = csproj
    alone = tmp_path / "alone" / "J12_005_particles.cs"
    alone.parent.mkdir()
    shutil.copy(root / "J12/J12_005_particles.cs", alone)
    with pytest.raises(InputError) as e:
        open_particles(alone)
    one_line(e, str(alone), "no 'blob/path' field", "no cryoSPARC passthrough file",
             "J<n>_passthrough_particles.cs", "Export job")
    with pytest.raises(InputError) as e:
        load_ctf(alone)
    one_line(e, str(alone), "'blob/shape'", "-D")
    with pytest.raises(InputError) as e:
        load_ctf(alone, D=D, apix=fx.APIX)
    one_line(e, str(alone), "no 'ctf/df1_A' field", "passthrough")
    np.testing.assert_allclose(load_poses(alone, D=D)[1], TRANS[[2, 0, 3, 1]], atol=1e-7)
    # a passthrough file that lacks some of its particles is not used
    pt = np.load(root / "J12/J12_passthrough_particles.cs")
    with open(alone.parent / "J12_passthrough_particles.cs", "wb") as f:
        np.save(f, pt[:3])
    with pytest.raises(InputError) as e:
        open_particles(alone)
    one_line(e, "J12_passthrough_particles.cs) do not hold all of its particles", "Export job")
    np.testing.assert_allclose(load_poses(alone, D=D)[1], TRANS[[2, 0, 3, 1]], atol=1e-7)


def test_cryosparc_2d_and_extraction_outputs_have_no_poses(csproj):
    root, images = csproj
    for rel, two_d in (("J9/particles_selected.cs", True), ("J5/extracted_particles.cs", False)):
        path = root / rel
        src = open_particles(path)
        np.testing.assert_array_equal(src.images(slice(None)), images)
        # Select 2D's CTF is in J9_passthrough_particles_selected.cs
        np.testing.assert_allclose(load_ctf(path), ctf_rows(phase=0.0), rtol=1e-6, atol=1e-4)
        with pytest.raises(InputError) as e:
            load_poses(path)
        msg = one_line(e, str(path), "no 3D alignments (alignments3D/pose)",
                       "Homogeneous or Non-uniform Refinement")
        assert ("only 2D alignments" in msg) == two_d


def test_cryosparc_abinit_and_heterogeneous_refinement(csproj, caplog):
    root, images = csproj
    with caplog.at_level(logging.INFO):
        _check_all(root / "J10/J10_particles_all_classes.cs", images)
    assert "alignments_class_0" in caplog.text
    allc = root / "J20/J20_00040_particles_all_classes.cs"
    with pytest.raises(InputError) as e:
        load_poses(allc)
    one_line(e, str(allc), "3D alignments for 3 classes (alignments_class_0..2",
             "use the particles of one class")
    np.testing.assert_array_equal(open_particles(allc).images(slice(None)), images)
    np.testing.assert_allclose(load_ctf(allc), ctf_rows(phase=0.0), rtol=1e-6, atol=1e-4)
    # one class, aligned at half the box: its shifts (in 4 A pixels) become particle pixels
    one = root / "J20/J20_class_01_00040_particles.cs"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _check_all(one, images)
    assert "shifts converted from the alignment's 4 A pixels" in caplog.text


def test_cryosparc_long_header_and_object_tables(csproj):
    root, images = csproj
    many = root / "J30/J30_00080_particles.cs"
    with open(many, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        header_len = int.from_bytes(f.read(2 if major == 1 else 4), "little")
    assert 10000 < header_len < 65536  # beyond numpy's default max_header_size
    with pytest.raises(ValueError, match="max_header_size"):
        np.load(many)
    _check_all(many, images)
    old = root / "J33/cryosparc_P4_J33_004_particles.cs"
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(old)
    _check_all(old, images)
    # its string fields come back as bytes, so subsets are written as plain .cs tables
    write_cs_subset(old, [0, 2], root / "sub.cs")
    sub = read_cs(root / "sub.cs")
    assert sub["blob/path"].dtype.kind == "S" and len(sub) == 2
    np.testing.assert_array_equal(open_particles(root / "sub.cs", datadir=root)
                                  .images(slice(None)), images[[0, 2]])


def test_cryosparc_mixed_pixel_sizes_and_foreign_files_are_refused(csproj, tmp_path):
    root, _ = csproj
    src = root / "exports/groups/P3_J12_particles/P3_J12_particles_exported.cs"
    arr = np.load(src)
    arr["blob/psize_A"][1] = 1.5
    mixed = src.with_name("mixed.cs")
    with open(mixed, "wb") as f:
        np.save(f, arr)
    for read in (open_particles, load_ctf):
        with pytest.raises(InputError) as e:
            read(mixed)
        one_line(e, str(mixed), "particles disagree on the pixel size",
                 "1.5 A (1 particles), 2 A (3 particles)", "one pixel size and box")
    csdat = tmp_path / "stream.cs"
    csdat.write_bytes(b"\x94CSDAT" + os.urandom(64))
    with pytest.raises(InputError) as e:
        load_poses(csdat)
    one_line(e, str(csdat), "compressed cryoSPARC stream dataset", "numpy format")
    junk = tmp_path / "junk.cs"
    junk.write_bytes(b"hello")
    with pytest.raises(InputError) as e:
        open_particles(junk)
    one_line(e, str(junk), "not a cryoSPARC .cs file")
