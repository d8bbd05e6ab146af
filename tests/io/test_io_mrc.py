import mrcfile
import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.mrc import read_mrc, read_mrc_header, write_mrc


def test_volume_round_trip_and_header(tmp_path):
    vol = np.random.default_rng(0).normal(size=(6, 6, 6)).astype(np.float64)
    path = tmp_path / "vol.mrc"
    write_mrc(path, vol, apix=2.5)
    data, apix = read_mrc(path)
    assert data.dtype == np.float32 and apix == pytest.approx(2.5)
    np.testing.assert_array_equal(data, vol.astype(np.float32))
    assert mrcfile.validate(str(path), print_file=open("/dev/null", "w"))
    with mrcfile.open(path) as m:
        assert m.is_volume()
        assert m.voxel_size.x == pytest.approx(2.5) and m.voxel_size.z == pytest.approx(2.5)
        assert (m.header.origin.x, m.header.origin.y, m.header.origin.z) == (0, 0, 0)
        assert m.header.mode == 2
        np.testing.assert_array_equal(m.data, data)


def test_stack_header_and_2d_image(tmp_path):
    path = tmp_path / "s.mrcs"
    write_mrc(path, np.zeros((3, 4, 4)), apix=1.2)
    with mrcfile.open(path) as m:
        assert m.is_image_stack() and m.voxel_size.x == pytest.approx(1.2)
    write_mrc(tmp_path / "one.mrc", np.ones((4, 4)), apix=1.0)
    data, _ = read_mrc(tmp_path / "one.mrc")
    assert data.shape == (1, 4, 4)


def test_reads_files_written_by_mrcfile(tmp_path):
    path = tmp_path / "ext.mrcs"
    data = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4)
    with mrcfile.new(path) as m:
        m.set_data(data)
        m.set_extended_header(np.zeros(10, dtype=[("a", "<i4")]))
        m.voxel_size = 3.0
    out, apix = read_mrc(path)
    np.testing.assert_array_equal(out, data.astype(np.float32))
    assert apix == pytest.approx(3.0)


def test_big_endian_file(tmp_path):
    path = tmp_path / "be.mrc"
    data = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    with mrcfile.new(path) as m:
        m.set_data(data.astype(">f4"))
    out, apix = read_mrc(path)
    np.testing.assert_array_equal(out, data)
    assert read_mrc_header(path).dtype.byteorder == ">"


def test_missing_not_mrc_truncated(tmp_path):
    with pytest.raises(InputError, match="nope.mrc does not exist"):
        read_mrc(tmp_path / "nope.mrc")
    txt = tmp_path / "text.mrc"
    txt.write_text("hello " * 400)
    with pytest.raises(InputError, match="text.mrc is not an MRC file"):
        read_mrc(txt)
    short = tmp_path / "short.mrc"
    short.write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match="short.mrc is not an MRC file"):
        read_mrc(short)
    path = tmp_path / "cut.mrcs"
    write_mrc(path, np.zeros((10, 8, 8)), 1.0)
    raw = path.read_bytes()
    path.write_bytes(raw[: 1024 + 8 * 8 * 4 * 6 + 5])
    with pytest.raises(InputError, match="cut.mrcs is truncated.*10 images.*about 6 complete"):
        read_mrc(path)


def test_write_refuses_bad_apix_and_keeps_no_temp(tmp_path):
    with pytest.raises(InputError, match="v.mrc"):
        write_mrc(tmp_path / "v.mrc", np.zeros((2, 2, 2)), apix=0)
    assert list(tmp_path.iterdir()) == []
