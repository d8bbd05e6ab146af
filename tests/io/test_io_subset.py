"""Particle subsets: .star (every column, optics table, formatting kept), .cs (every field),
.mrcs (streamed); index validation."""

import numpy as np
import pandas as pd
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.cs import read_cs, write_particles_cs
from napari_cryodrgn.io.mrc import read_mrc, read_mrc_header
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.star import read_star, write_particles_star
from napari_cryodrgn.io.subset import (
    check_rows,
    star_particle_count,
    write_cs_subset,
    write_mrcs_subset,
    write_star_subset,
)

ROWS = np.array([0, 2, 5, 6])

# RELION 3.1 as RELION writes it: two optics groups, an optics column the particle table lacks,
# quoted-free strings, comments and a block after the particle table.
RELION31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographOriginalPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
_rlnImagePixelSize #7
_rlnImageSize #8
_rlnImageDimensionality #9
opticsGroup1          1     0.885000   300.000000     2.700000     0.100000     1.770000    64     2
opticsGroup2          2     0.885000   200.000000     2.000000     0.070000     1.770000    64     2


# version 30001

data_particles

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
_rlnImageName #3
_rlnMicrographName #4
_rlnOpticsGroup #5
_rlnAngleRot #6
_rlnDefocusU #7
_rlnRandomSubset #8
{rows}

# version 30001

data_model_general

_rlnReferenceDimensionality 3
"""


def _relion31_text(n=8):
    rows = "\n".join(
        f"  {100.5 + i:>10.6f}  {200.25 * (i + 1):>12.6f} {i + 1:06d}@Extract/job012/mic{i % 3}"
        f".mrcs MotionCorr/job002/mic{i % 3}.mrc {1 + i % 2} {10.0 * i:>12.6f} "
        f"{12000 + 5 * i:.6f} {1 + i % 2}"
        for i in range(n))
    return RELION31.format(rows=rows)


@pytest.fixture
def star31(tmp_path):
    p = tmp_path / "particles.star"
    p.write_text(_relion31_text())
    return p


def test_star_subset_keeps_every_line_but_unselected_rows(star31, tmp_path):
    out = tmp_path / "sub.star"
    assert star_particle_count(star31) == 8
    assert write_star_subset(star31, ROWS, out) == 4
    src_lines, out_lines = star31.read_bytes().split(b"\n"), out.read_bytes().split(b"\n")
    rows = [ln for ln in src_lines if b"@Extract" in ln]
    dropped = {rows[i] for i in range(8) if i not in ROWS}
    assert out_lines == [ln for ln in src_lines if ln not in dropped]  # byte for byte
    full, sub = read_star(star31), read_star(out)
    assert list(sub.particles.columns) == list(full.particles.columns)
    pd.testing.assert_frame_equal(sub.particles, full.particles.iloc[ROWS].reset_index(drop=True))
    pd.testing.assert_frame_equal(sub.optics, full.optics)  # both optics groups kept
    np.testing.assert_array_equal(sub.values("rlnVoltage"), full.values("rlnVoltage")[ROWS])


def test_star_subset_relion30_and_ours(tmp_path, make_stack, poses_ctf):
    rot, trans, ctf, D, apix = poses_ctf
    stack, data = make_stack("Extract/stack.mrcs", n=7, D=D, apix=apix)
    for relion31 in (True, False):
        src = tmp_path / f"all{int(relion31)}.star"
        write_particles_star(src, "Extract/stack.mrcs", rot, trans, ctf, apix, D,
                             relion31=relion31)
        out = tmp_path / f"sub{int(relion31)}.star"
        write_star_subset(src, ROWS, out)
        full, sub = read_star(src), read_star(out)
        pd.testing.assert_frame_equal(sub.particles,
                                      full.particles.iloc[ROWS].reset_index(drop=True))
        assert (sub.optics is None) == (not relion31)
        # the subset opens as particles: the right images, in the source's order
        np.testing.assert_array_equal(open_particles(out).images(slice(None)), data[ROWS])


def test_cs_subset_keeps_every_field(tmp_path, make_stack, poses_ctf):
    rot, trans, ctf, D, apix = poses_ctf
    make_stack("stack.mrcs", n=7, D=D, apix=apix)
    src, out = tmp_path / "all.cs", tmp_path / "sub.cs"
    write_particles_cs(src, "stack.mrcs", rot, trans, ctf, apix, D)
    assert write_cs_subset(src, ROWS[::-1], out) == 4  # written in the source's order
    full, sub = read_cs(src), read_cs(out)
    assert sub.dtype == full.dtype
    np.testing.assert_array_equal(sub, full[ROWS])
    assert open_particles(out).n == 4


def test_mrcs_subset_streams_in_chunks(tmp_path, make_stack):
    stack, data = make_stack("stack.mrcs", n=11, D=8, apix=2.5)
    out = tmp_path / "sub.mrcs"
    calls = []
    rows = np.array([10, 1, 3, 4, 7])
    n = write_mrcs_subset(stack, rows, out, chunk=2, progress=lambda d, t: calls.append((d, t)))
    assert n == 5 and calls == [(2, 5), (4, 5), (5, 5)]
    got, apix = read_mrc(out)
    np.testing.assert_array_equal(got, data[np.sort(rows)])
    assert apix == pytest.approx(2.5)
    h = read_mrc_header(out)
    assert h.stack and h.shape == (5, 8, 8)
    raw = np.fromfile(out, "<f4", count=256)
    sel = data[np.sort(rows)]
    assert raw[19] == pytest.approx(sel.min()) and raw[20] == pytest.approx(sel.max())
    assert raw[21] == pytest.approx(sel.mean(), abs=1e-5)
    assert raw[54] == pytest.approx(sel.std(), rel=1e-4)
    # from a .star source, with an explicit pixel size
    star = tmp_path / "s.star"
    write_particles_star(star, "stack.mrcs", None, None, None, 2.5, 8,
                         image_indices=np.arange(11))
    write_mrcs_subset(star, [0, 5], tmp_path / "b.mrcs", apix=1.25)
    got, apix = read_mrc(tmp_path / "b.mrcs")
    np.testing.assert_array_equal(got, data[[0, 5]])
    assert apix == pytest.approx(1.25)


def test_out_of_range_and_empty_refused(star31, tmp_path, make_stack, poses_ctf):
    out = tmp_path / "x.star"
    with pytest.raises(InputError, match=r"other\.pkl holds indices up to 8 but .*particles\.star "
                                         r"has 8 particles \(0\.\.7\): is it from another "
                                         "dataset"):
        write_star_subset(star31, [1, 8], out, name=tmp_path / "other.pkl")
    with pytest.raises(InputError, match="selects no particles; an empty selection cannot"):
        write_star_subset(star31, np.array([], np.int64), out)
    with pytest.raises(InputError, match="lists particle 3 more than once"):
        write_star_subset(star31, [3, 3], out)
    with pytest.raises(InputError, match="negative index"):
        write_star_subset(star31, [-1, 3], out)
    assert not out.exists() and not list(tmp_path.glob(".x.star*"))
    stack, _ = make_stack("stack.mrcs", n=5)
    with pytest.raises(InputError, match="up to 5 but .*stack.mrcs has 5 particles"):
        write_mrcs_subset(stack, [0, 5], tmp_path / "y.mrcs")
    rot, trans, ctf, D, apix = poses_ctf
    write_particles_cs(tmp_path / "a.cs", "stack.mrcs", rot, trans, ctf, apix, D)
    with pytest.raises(InputError, match="up to 7 but .*a.cs has 7 particles"):
        write_cs_subset(tmp_path / "a.cs", [7], tmp_path / "y.cs")


def test_source_is_not_overwritten(star31):
    with pytest.raises(InputError, match="is the source file itself"):
        write_star_subset(star31, [0], star31)


def test_check_rows_mask_and_sorting():
    np.testing.assert_array_equal(check_rows([4, 0, 2], 5, "s"), [0, 2, 4])
    mask = np.zeros(5, bool)
    mask[[1, 3]] = True
    np.testing.assert_array_equal(check_rows(mask, 5, "s"), [1, 3])
    with pytest.raises(InputError, match="mask needs 5 values"):
        check_rows(np.ones(4, bool), 5, "s")
    with pytest.raises(InputError, match="1-D array of particle indices"):
        check_rows(np.array([0.5]), 5, "s")


def test_compose_and_save_selection_within(tmp_path):
    from napari_cryodrgn.io.index import compose_index, load_index, save_selection_within

    run_ind = np.array([1, 4, 5, 8, 9])  # a run trained with --ind on 5 of 10 particles
    np.testing.assert_array_equal(compose_index(run_ind, [0, 3]), [1, 8])
    np.testing.assert_array_equal(compose_index(None, [0, 3]), [0, 3])
    with pytest.raises(InputError, match="rows go up to 5 but the run has 5 particles"):
        compose_index(run_ind, [5])
    a, b = save_selection_within(tmp_path / "s.pkl", [8, 1], run_ind)
    np.testing.assert_array_equal(load_index(a, 10), [1, 8])
    # the inverse: the rest of the run's particles (as cryoDRGN's filter), original numbering
    np.testing.assert_array_equal(load_index(b, 10), [4, 5, 9])
    with pytest.raises(InputError, match="the selection is empty"):
        save_selection_within(tmp_path / "e.pkl", np.array([], np.int64), run_ind)
    with pytest.raises(InputError, match="1 selected particles .first: 2. are not among"):
        save_selection_within(tmp_path / "e.pkl", [1, 2], run_ind)
    assert not (tmp_path / "e.pkl").exists()
