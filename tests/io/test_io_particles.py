import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.mrc import write_mrc
from napari_cryodrgn.io.particles import open_particles


def star_text(names, optics=True, apix=1.5, extra_cols=()):
    """A minimal particle .star with _rlnImageName rows (RELION 3.1 when optics)."""
    out = []
    if optics:
        out += ["data_optics", "", "loop_", "_rlnOpticsGroup #1", "_rlnImagePixelSize #2",
                f"1 {apix}", "", ""]
    out += ["data_particles" if optics else "data_", "", "loop_"]
    cols = ["_rlnImageName", *extra_cols] + (["_rlnOpticsGroup"] if optics else [])
    out += [f"{c} #{i}" for i, c in enumerate(cols, 1)]
    out += [f"{n}" + (" 1" if optics else "") for n in names]
    return "\n".join(out) + "\n"


def test_mrcs_stack(make_stack):
    path, data = make_stack(n=5, D=8, apix=1.25)
    src = open_particles(path)
    assert (src.n, len(src), src.D) == (5, 5, 8)
    assert src.apix == pytest.approx(1.25)
    np.testing.assert_array_equal(src.images(slice(None)), data)
    np.testing.assert_array_equal(src.images(np.array([4, 0, 2])), data[[4, 0, 2]])
    out = src.images(3)
    assert out.shape == (1, 8, 8) and out.dtype == np.float32
    with pytest.raises(IndexError):
        src.images([5])
    eager = open_particles(path, lazy=False)
    np.testing.assert_array_equal(eager.images([1, 3]), data[[1, 3]])


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_lazy_stack_reads_only_what_is_asked(tmp_path):
    # a 256 MiB stack as a sparse file: opening and reading images must not load it, and the
    # RSS stays flat after reading every image once (no mapped pages kept)
    n, D = 4096, 128
    path = tmp_path / "big.mrcs"
    with mrcfile.new_mmap(path, shape=(n, D, D), mrc_mode=2) as mrc:  # sparse: nothing written
        mrc.set_image_stack()
    before = _rss_bytes()
    src = open_particles(path)
    imgs = src.images(np.array([0, n - 1]))
    grown = _rss_bytes() - before
    assert src.n == n and imgs.shape == (2, D, D) and not imgs.any()
    assert grown < 32 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"
    for s in range(0, n, 256):
        src.images(np.arange(s, s + 256))
    grown = _rss_bytes() - before
    assert grown < 48 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB after reading every image"


def test_star_31_many_stacks_relative_paths(tmp_path, make_stack):
    p1, d1 = make_stack("Extract/mic1.mrcs", n=3, seed=1)
    p2, d2 = make_stack("Extract/mic2.mrcs", n=4, seed=2)
    star = tmp_path / "particles.star"
    star.write_text(star_text(["000002@Extract/mic1.mrcs", "4@Extract/mic2.mrcs",
                               "1@Extract/mic1.mrcs", "000001@Extract/mic2.mrcs"], apix=2.0))
    src = open_particles(star)
    assert src.n == 4 and src.D == 8 and src.apix == pytest.approx(2.0)
    np.testing.assert_array_equal(src.images(slice(None)), np.stack([d1[1], d2[3], d1[0], d2[0]]))
    np.testing.assert_array_equal(src.images([3, 1]), np.stack([d2[0], d2[3]]))
    np.testing.assert_array_equal(src.local_index, [1, 3, 0, 0])
    assert [Path(h.path).name for h in src.stacks] == ["mic1.mrcs", "mic2.mrcs"]


def test_star_30_and_datadir(tmp_path, make_stack):
    _, data = make_stack("elsewhere/stack.mrcs", n=3)
    meta = tmp_path / "meta"
    meta.mkdir()
    star = meta / "p.star"
    star.write_text(star_text(["3@job1/stack.mrcs", "1@job1/stack.mrcs"], optics=False))
    with pytest.raises(InputError, match=r"p.star refers to stack job1/stack.mrcs.*--datadir"):
        open_particles(star)
    src = open_particles(star, datadir=tmp_path / "elsewhere")  # found by file name
    assert src.apix is None
    np.testing.assert_array_equal(src.images(slice(None)), data[[2, 0]])


def test_cs_source_strips_gt_prefix(tmp_path, make_stack):
    _, data = make_stack("J5/extract/parts.mrcs", n=4)
    cs = tmp_path / "particles.cs"
    write_particles_cs(cs, ">J5/extract/parts.mrcs", None, None, None, apix=1.1, D=8,
                       image_indices=np.array([3, 1, 2]))
    src = open_particles(cs)
    assert src.n == 3 and src.apix == pytest.approx(1.1)
    np.testing.assert_array_equal(src.images(slice(None)), data[[3, 1, 2]])


def test_txt_source(tmp_path, make_stack):
    _, d1 = make_stack("a.mrcs", n=2, seed=1)
    _, d2 = make_stack("sub/b.mrcs", n=3, seed=2)
    txt = tmp_path / "stacks.txt"
    txt.write_text("a.mrcs\n\nsub/b.mrcs\n")
    src = open_particles(txt)
    assert src.n == 5
    np.testing.assert_array_equal(src.images(slice(None)), np.concatenate([d1, d2]))
    (tmp_path / "bad.txt").write_text("a.mrcs\nmissing.mrcs\n")
    with pytest.raises(InputError, match="bad.txt refers to stack missing.mrcs"):
        open_particles(tmp_path / "bad.txt")


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="none.mrcs does not exist"):
        open_particles(tmp_path / "none.mrcs")
    (tmp_path / "x.hdf").write_text("")
    with pytest.raises(InputError, match="x.hdf: unsupported particle file type"):
        open_particles(tmp_path / "x.hdf")


def test_not_an_mrc(tmp_path):
    bad = tmp_path / "bad.mrcs"
    bad.write_bytes(b"\x07" * 5000)
    with pytest.raises(InputError, match="bad.mrcs is not an MRC file"):
        open_particles(bad)


def test_truncated_stack(tmp_path):
    path = tmp_path / "cut.mrcs"
    write_mrc(path, np.zeros((6, 8, 8)), 1.0)
    path.write_bytes(path.read_bytes()[:-8 * 8 * 4])
    with pytest.raises(InputError, match="cut.mrcs is truncated.*6 images"):
        open_particles(path)


def test_non_square_and_odd_box(make_stack):
    path, _ = make_stack("rect.mrcs", n=2, D=8, ny=6)
    with pytest.raises(InputError, match="rect.mrcs holds non-square images"):
        open_particles(path)
    path, _ = make_stack("odd.mrcs", n=2, D=7)
    with pytest.raises(InputError, match="odd.mrcs has an odd box size .*even"):
        open_particles(path)


def test_star_without_image_name(tmp_path):
    star = tmp_path / "poses_only.star"
    star.write_text("data_\n\nloop_\n_rlnAngleRot #1\n10.0\n")
    with pytest.raises(InputError, match="poses_only.star has no _rlnImageName"):
        open_particles(star)


def test_star_with_out_of_range_image(tmp_path, make_stack):
    make_stack("s.mrcs", n=2)
    star = tmp_path / "p.star"
    star.write_text(star_text(["1@s.mrcs", "3@s.mrcs"]))
    with pytest.raises(InputError, match=r"p.star: particle 1 refers to image 3 of .*s.mrcs"):
        open_particles(star)


def test_boxes_differ_between_stacks(tmp_path, make_stack):
    make_stack("a.mrcs", n=2, D=8)
    make_stack("b.mrcs", n=2, D=10)
    star = tmp_path / "mixed.star"
    star.write_text(star_text(["1@a.mrcs", "1@b.mrcs"]))
    with pytest.raises(InputError, match="mixed.star: stacks have different box sizes"):
        open_particles(star)


def test_nan_pixels_name_file_and_particle(tmp_path, make_stack):
    path, data = make_stack("nan.mrcs", n=4)
    data[2, 3, 3] = np.nan
    write_mrc(path, data, 1.0)
    src = open_particles(path)
    src.images([0, 1, 3])  # clean images are fine
    with pytest.raises(InputError, match="nan.mrcs: particle 2 contains NaN or Inf"):
        src.images(slice(None))
    star = tmp_path / "p.star"
    star.write_text(star_text(["1@nan.mrcs", "3@nan.mrcs"]))
    with pytest.raises(InputError, match=r"p.star: particle 1 \(image 3 of .*nan.mrcs\)"):
        open_particles(star).images([0, 1])
    with pytest.raises(InputError, match="particle 2"):
        open_particles(path, lazy=False).images([2])


def test_cs_missing_stack_suggests_datadir(tmp_path):
    cs = tmp_path / "p.cs"
    write_particles_cs(cs, ">J9/extract/gone.mrcs", None, None, None, apix=1.0, D=8,
                       image_indices=np.arange(2))
    with pytest.raises(InputError, match=r"p.cs refers to stack J9/extract/gone.mrcs.*--datadir"):
        open_particles(cs)


def test_source_pickles_for_worker_processes(make_stack):
    import pickle

    path, data = make_stack(n=3)
    src = open_particles(path)
    src.images([0])  # opens a memory map, which must not travel with the pickle
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.images([2]), data[[2]])


def test_threads_read_many_stacks(tmp_path, make_stack):
    # more stacks than a thread keeps open, read from four threads at once: every image right
    from concurrent.futures import ThreadPoolExecutor

    from napari_cryodrgn.io import particles as particles_mod

    n_stacks = particles_mod.MAX_OPEN_STACKS + 16
    names, expected = [], []
    for s in range(n_stacks):
        _, d = make_stack(f"Extract/mic{s:03d}.mrcs", n=2, seed=s)
        for i in range(2):
            names.append(f"{i + 1:06d}@Extract/mic{s:03d}.mrcs")
            expected.append(d[i])
    star = tmp_path / "particles.star"
    star.write_text(star_text(names, apix=2.0))
    src = open_particles(star)
    expected = np.stack(expected)
    rng = np.random.default_rng(0)
    batches = [rng.choice(src.n, 24, replace=False) for _ in range(60)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(src.images, batches))
    for b, g in zip(batches, got, strict=True):
        np.testing.assert_array_equal(g, expected[b])
    np.testing.assert_array_equal(src.images([5, 5, 3]), expected[[5, 5, 3]])
