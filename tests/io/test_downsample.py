"""Downsampling by Fourier cropping: the numbers, the outputs, streaming, atomicity, errors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_cryodrgn.cli import main
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.geometry.transforms import ht_center, iht_center
from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.ctf import load_ctf
from napari_cryodrgn.io.downsample import (
    default_batch_size,
    downsample_stack,
    downsample_volume,
    fourier_crop,
    fourier_crop_volume,
)
from napari_cryodrgn.io.index import save_index
from napari_cryodrgn.io.mrc import read_mrc, read_mrc_header, write_mrc
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.poses import load_poses
from napari_cryodrgn.io.star import write_particles_star


def _direct(x: np.ndarray, d: int, ndim: int = 2) -> np.ndarray:
    """The definition in float64: crop the centred Hartley transform, invert it."""
    D = x.shape[-1]
    a = D // 2 - d // 2
    h = ht_center(np.asarray(x, np.float64), ndim)
    block = h[..., a:a + d, a:a + d] if ndim == 2 else h[a:a + d, a:a + d, a:a + d]
    return iht_center(block, ndim)


def _images(tmp_path, n=10, D=16, apix=1.7, name="stack.mrcs", seed=0):
    data = np.random.default_rng(seed).normal(size=(n, D, D)).astype(np.float32)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mrc(path, data, apix)
    return path, data


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- the numbers -------------------------------------------------------------------------------
@pytest.mark.parametrize(("D", "d"), [(16, 8), (16, 2), (16, 14), (32, 12), (10, 4)])
def test_fourier_crop_equals_the_definition(D, d):
    x = np.random.default_rng(D * d).normal(size=(5, D, D)).astype(np.float32)
    ours = fourier_crop(x, d)
    assert ours.dtype == np.float32 and ours.shape == (5, d, d)
    np.testing.assert_allclose(ours, _direct(x, d), atol=2e-5 * np.ptp(x))
    np.testing.assert_allclose(fourier_crop(x[0], d), ours[0], atol=1e-6)


def test_band_limited_image_is_resampled_and_scaled():
    """A sum of cosines below the new Nyquist frequency comes back as the same function on the
    coarse grid, times (D/d)^2 (cryoDRGN's normalisation)."""
    D, d = 32, 8
    rng = np.random.default_rng(1)
    waves = [(rng.integers(-3, 4), rng.integers(-3, 4), rng.uniform(0, 2 * np.pi), rng.normal())
             for _ in range(6)]

    def f(n):
        y, x = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
        return sum(a * np.cos(2 * np.pi * (kx * x + ky * y) / n + ph) for kx, ky, ph, a in waves)

    np.testing.assert_allclose(fourier_crop(f(D).astype(np.float32), d), f(d) * (D / d) ** 2,
                               atol=1e-4 * (D / d) ** 2)


def test_same_box_copies():
    x = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(fourier_crop(x, 8), x)


def test_volume_equals_the_definition(tmp_path):
    vol = np.random.default_rng(2).normal(size=(16, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(fourier_crop_volume(vol, 6), _direct(vol, 6, 3), atol=1e-5)
    write_mrc(tmp_path / "map.mrc", vol, 1.3)
    res = downsample_volume(tmp_path / "map.mrc", tmp_path / "small.mrc", 8)
    small, apix = read_mrc(tmp_path / "small.mrc")
    np.testing.assert_allclose(small, _direct(vol, 8, 3), atol=1e-5)
    assert apix == pytest.approx(2.6) and res.apix == 2.6
    assert not read_mrc_header(tmp_path / "small.mrc").stack


# -- outputs -------------------------------------------------------------------------------------
def test_stack_pixel_size_and_values(tmp_path):
    path, data = _images(tmp_path, apix=1.7)
    res = downsample_stack(path, tmp_path / "out.mrcs", 6)
    assert (res.n, res.D, res.D_orig, res.apix) == (10, 6, 16, round(1.7 * 16 / 6, 6))
    h = read_mrc_header(tmp_path / "out.mrcs")
    assert h.shape == (10, 6, 6) and h.apix == pytest.approx(4.533333, abs=1e-5)
    out, _ = read_mrc(tmp_path / "out.mrcs")
    np.testing.assert_allclose(out, _direct(data, 6), atol=1e-5)
    import mrcfile

    with mrcfile.open(tmp_path / "out.mrcs", permissive=True) as m:  # streamed statistics
        assert m.header.dmin == pytest.approx(out.min()) and m.header.dmax == pytest.approx(
            out.max())
        assert float(m.header.dmean) == pytest.approx(out.mean(), abs=1e-5)
        assert float(m.header.rms) == pytest.approx(out.std(), rel=1e-4)


def test_chunks_and_outdir(tmp_path):
    path, data = _images(tmp_path)
    whole = downsample_stack(path, tmp_path / "all.mrcs", 8)
    res = downsample_stack(path, tmp_path / "o" / "small.mrcs", 8, chunk=4, batch_size=3)
    assert res.out == tmp_path / "o" / "small.txt" and res.n == 10
    assert (tmp_path / "o" / "small.txt").read_text().splitlines() == [
        "small.0.mrcs", "small.1.mrcs", "small.2.mrcs"]
    assert [read_mrc_header(p).shape[0] for p in res.stacks] == [4, 4, 2]
    chunked = open_particles(res.out)
    assert chunked.apix == pytest.approx(2 * 1.7)
    np.testing.assert_array_equal(chunked.images(slice(None)),
                                  open_particles(whole.out).images(slice(None)))
    res = downsample_stack(path, tmp_path / "p" / "s.mrcs", 8, chunk=5,
                           outdir=tmp_path / "p" / "stacks")
    assert res.out.read_text().splitlines() == ["stacks/s.0.mrcs", "stacks/s.1.mrcs"]
    np.testing.assert_array_equal(open_particles(res.out).images(slice(None)),
                                  open_particles(whole.out).images(slice(None)))


@pytest.mark.parametrize("form", ["pkl", "txt", "array"])
def test_ind_keeps_its_order(tmp_path, form):
    path, data = _images(tmp_path)
    ind = np.array([7, 2, 5])
    if form == "pkl":
        save_index(tmp_path / "ind.pkl", ind)
        arg = tmp_path / "ind.pkl"
    elif form == "txt":
        (tmp_path / "ind.txt").write_text("7\n2\n5\n")
        arg = tmp_path / "ind.txt"
    else:
        arg = ind
    res = downsample_stack(path, tmp_path / "sel.mrcs", 8, ind=arg)
    assert res.n == 3
    np.testing.assert_allclose(read_mrc(tmp_path / "sel.mrcs")[0], _direct(data[ind], 8),
                               atol=1e-5)


def test_metadata_inputs(tmp_path, poses_ctf):
    rot, trans, ctf, _, _ = poses_ctf
    stack, data = _images(tmp_path / "Extract", n=7, D=16, apix=2.0)
    ctf[:, 0], ctf[:, 1] = 16, 2.0
    write_particles_star(tmp_path / "p.star", "Extract/stack.mrcs", rot, trans, ctf, 2.0, 16)
    write_particles_cs(tmp_path / "p.cs", ">Extract/stack.mrcs", rot, trans, ctf, 2.0, 16)
    (tmp_path / "p.txt").write_text("Extract/stack.mrcs\n")
    expect = _direct(data, 8)
    for src in ("p.star", "p.cs", "p.txt"):
        res = downsample_stack(tmp_path / src, tmp_path / f"{src}.mrcs", 8)
        np.testing.assert_allclose(read_mrc(res.out)[0], expect, atol=1e-5, err_msg=src)
        assert res.apix == 4.0, src


@pytest.mark.parametrize("relion31", [True, False])
def test_star_output_points_at_new_stacks(tmp_path, poses_ctf, relion31):
    rot, trans, ctf, _, _ = poses_ctf
    ctf[:, 0], ctf[:, 1] = 16, 2.0
    _, a = _images(tmp_path / "Extract", n=4, D=16, apix=2.0, name="a.mrcs", seed=1)
    _, b = _images(tmp_path / "Extract", n=3, D=16, apix=2.0, name="b.mrcs", seed=2)
    stack_of = np.array([0, 1, 0, 1, 0, 1, 0])  # rows alternate between the stacks
    image = np.array([3, 0, 1, 2, 0, 1, 2])  # 0-based, in each stack
    star = tmp_path / "in.star"
    write_particles_star(star, "STACK", rot, trans, ctf, 2.0, 16, relion31=relion31,
                         image_indices=image)
    lines = star.read_text().splitlines()
    row = 0
    for i, line in enumerate(lines):
        if "@STACK" in line:
            lines[i] = line.replace("@STACK", "@Extract/" + "ab"[stack_of[row]] + ".mrcs")
            row += 1
    star.write_text("\n".join(lines) + "\n")
    images = np.stack([(a, b)[s][k] for s, k in zip(stack_of, image, strict=True)])
    out = tmp_path / "ds" / "new.star"
    res = downsample_stack(star, out, 8, ind=np.array([6, 0, 3, 1]),
                           outdir=tmp_path / "ds" / "stacks")
    keep = np.array([0, 1, 3, 6])  # a .star output keeps the file's order
    assert res.n == 4 and res.out == out
    assert sorted(p.name for p in res.stacks) == ["a.mrcs", "b.mrcs"]
    src = open_particles(out)
    assert src.n == 4 and src.D == 8 and src.apix == pytest.approx(4.0)
    np.testing.assert_allclose(src.images(slice(None)), _direct(images[keep], 8), atol=1e-5)
    assert "@stacks/a.mrcs" in out.read_text()
    # poses and CTF parsed from the new .star describe the new images
    r2, t2 = load_poses(out)
    np.testing.assert_allclose(r2, rot[keep], atol=2e-5)
    np.testing.assert_allclose(t2, trans[keep], atol=1e-6)
    c2 = load_ctf(out)
    assert np.all(c2[:, 0] == 8) and np.allclose(c2[:, 1], 4.0)
    np.testing.assert_allclose(c2[:, 2:], ctf[keep, 2:], rtol=1e-6)
    # every other line is kept byte for byte
    old = [s for s in star.read_text().splitlines() if "@" not in s and not s.startswith("opt")]
    new = [s for s in out.read_text().splitlines() if "@" not in s and not s.startswith("opt")]
    assert old == new


def test_txt_output_keeps_the_stacks(tmp_path):
    _, a = _images(tmp_path / "in", n=3, name="a.mrcs", seed=1)
    _, b = _images(tmp_path / "in", n=4, name="b.mrcs", seed=2)
    (tmp_path / "in" / "list.txt").write_text("a.mrcs\nb.mrcs\n")
    res = downsample_stack(tmp_path / "in" / "list.txt", tmp_path / "out" / "list.txt", 8)
    assert res.out.read_text().splitlines() == ["a.mrcs", "b.mrcs"]
    np.testing.assert_allclose(open_particles(res.out).images(slice(None)),
                               _direct(np.concatenate([a, b]), 8), atol=1e-5)


def test_unknown_pixel_size_is_kept_unknown(tmp_path, caplog):
    import mrcfile

    data = np.random.default_rng(0).normal(size=(4, 16, 16)).astype(np.float32)
    with mrcfile.new(tmp_path / "raw.mrcs") as m:
        m.set_data(data)
    assert read_mrc_header(tmp_path / "raw.mrcs").apix is None
    res = downsample_stack(tmp_path / "raw.mrcs", tmp_path / "a.mrcs", 8)
    assert res.apix is None and read_mrc_header(tmp_path / "a.mrcs").apix is None
    assert "does not give a pixel size" in caplog.text and "--Apix" in caplog.text
    res = downsample_stack(tmp_path / "raw.mrcs", tmp_path / "b.mrcs", 8, apix=1.25)
    assert res.apix == 2.5 and read_mrc_header(tmp_path / "b.mrcs").apix == pytest.approx(2.5)


# -- streaming and atomicity ---------------------------------------------------------------------
def test_reads_one_batch_at_a_time(tmp_path):
    path, data = _images(tmp_path, n=23)
    src = open_particles(path)
    sizes, live, peak = [], [0], [0]
    lock = threading.Lock()
    read = src.images

    def images(idx):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        try:
            sizes.append(len(idx))
            return read(idx)
        finally:
            with lock:
                live[0] -= 1

    src.images = images
    done = []
    downsample_stack(src, tmp_path / "out.mrcs", 8, batch_size=4,
                     progress=lambda k, n: done.append((k, n)))
    assert sizes == [4, 4, 4, 4, 4, 3] and peak[0] == 1
    assert done[-1] == (23, 23) and len(done) == 6
    np.testing.assert_allclose(read_mrc(tmp_path / "out.mrcs")[0], _direct(data, 8), atol=1e-5)
    assert default_batch_size(256) == 128 and default_batch_size(16) == 5000


@pytest.mark.parametrize("chunk", [None, 3])
def test_failure_leaves_no_output(tmp_path, chunk):
    path, data = _images(tmp_path / "in", n=12)
    data[7, 3, 3] = np.nan  # found in the third batch
    write_mrc(path, data, 1.7)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="NaN"):
        downsample_stack(path, out / "ds.mrcs", 8, batch_size=3, chunk=chunk)
    assert _files(out) == []

    def stop(done, total):
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        downsample_stack(tmp_path / "in" / "stack.mrcs", out / "ds.mrcs", 8, ind=np.arange(7),
                         batch_size=3, chunk=chunk, progress=stop)
    assert _files(out) == []


def test_existing_outputs_are_kept(tmp_path):
    path, _ = _images(tmp_path)
    (tmp_path / "c.1.mrcs").write_bytes(b"mine")
    with pytest.raises(InputError, match="c.1.mrcs already exists; pass --overwrite"):
        downsample_stack(path, tmp_path / "c.mrcs", 8, chunk=4)
    assert not (tmp_path / "c.0.mrcs").exists() and not (tmp_path / "c.txt").exists()
    downsample_stack(path, tmp_path / "c.mrcs", 8, chunk=4, overwrite=True)
    assert read_mrc_header(tmp_path / "c.1.mrcs").shape == (4, 8, 8)
    with pytest.raises(InputError, match="is an input file"):
        downsample_stack(path, path, 8, overwrite=True)


# -- bad inputs through the command line ---------------------------------------------------------
def _fails(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err
    return err


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    path, _ = _images(tmp_path)
    out = str(tmp_path / "o.mrcs")
    _fails(capsys, ["downsample", str(tmp_path / "none.mrcs"), "-D", "8", "-o", out],
           "does not exist")
    for d, what in (("7", "even"), ("0", "even"), ("-4", "even"), ("32", "larger than")):
        _fails(capsys, ["downsample", str(path), "-D", d, "-o", out], what)
    _fails(capsys, ["downsample", str(path), "-D", "8", "-o", str(tmp_path / "o.star")],
           "needs a .star input")
    _fails(capsys, ["downsample", str(path), "-D", "8", "-o", str(tmp_path / "o.txt")],
           "--chunk K")
    _fails(capsys, ["downsample", str(path), "-D", "8", "-o", str(tmp_path / "o.png")],
           "unsupported output type")
    _fails(capsys, ["downsample", str(path), "-D", "8", "-o", out, "--chunk", "0"], "positive")
    _fails(capsys, ["downsample", str(path), "-D", "8", "-o", out, "-b", "0"], "positive")
    _fails(capsys, ["downsample", str(path), "-D", "8", "-o", out, "--ind",
                    str(tmp_path / "none.pkl")], "does not exist")
    (tmp_path / "file").write_text("")
    _fails(capsys, ["downsample", str(path), "-D", "8", "-o", str(tmp_path / "file" / "o.mrcs")],
           "existing file")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if not os.access(locked, os.W_OK):  # root may write anywhere
        _fails(capsys, ["downsample", str(path), "-D", "8", "-o", str(locked / "o.mrcs")],
               "not writable")


def test_existing_output_needs_overwrite(tmp_path, capsys):
    path, _ = _images(tmp_path)
    out = tmp_path / "o.mrcs"
    out.write_bytes(b"mine")
    _fails(capsys, ["downsample", str(path), "-D", "8", "-o", str(out)], "--overwrite")
    assert out.read_bytes() == b"mine"
    assert main(["downsample", str(path), "-D", "8", "-o", str(out), "--overwrite", "-q"]) == 0
    assert read_mrc_header(out).shape == (10, 8, 8)
