"""Reader and writer in a real viewer: voxel size kept, stacks as 2D images, runs as maps,
foreign files declined, broken files reported."""

import numpy as np
import pytest

from napari_cryodrgn._napari.reader import get_reader
from napari_cryodrgn.io.mrc import read_mrc, write_mrc

PLUGIN = "napari-cryodrgn"


def _blob(D=24):
    g = np.mgrid[:D, :D, :D].astype(np.float32) - D / 2
    return np.exp(-(g[0] ** 2 + (g[1] - 3) ** 2 + g[2] ** 2) / 18).astype(np.float32)


def test_map_round_trip_keeps_voxel_size(viewer, tmp_path):
    vol = _blob()
    write_mrc(tmp_path / "map.mrc", vol, apix=2.37)
    layers = viewer.open(tmp_path / "map.mrc", plugin=PLUGIN)
    (layer,) = layers
    assert layer.ndim == 3 and layer.rendering == "iso"
    np.testing.assert_allclose(layer.scale, [2.37] * 3, rtol=1e-6)
    np.testing.assert_array_equal(layer.data, vol)
    assert vol.min() < layer.iso_threshold < vol.max()
    out = tmp_path / "saved.map"
    written = viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    assert written == [str(out)]
    back, apix = read_mrc(out)
    np.testing.assert_array_equal(back, vol)
    assert apix == pytest.approx(2.37, rel=1e-6)


def test_writer_takes_voxel_size_from_scale(viewer, tmp_path):
    viewer.add_image(_blob(16), scale=(1.5, 1.5, 1.5), name="m")
    viewer.layers.save(str(tmp_path / "m.mrc"), plugin=PLUGIN)
    assert read_mrc(tmp_path / "m.mrc")[1] == pytest.approx(1.5)
    # a layer in nanometres is converted; our layers carry Angstrom
    viewer.add_image(_blob(16), scale=(0.2,) * 3, units=("nm",) * 3, name="nm")
    viewer.layers.selection = {viewer.layers["nm"]}
    viewer.layers.save(str(tmp_path / "nm.mrc"), selected=True, plugin=PLUGIN)
    assert read_mrc(tmp_path / "nm.mrc")[1] == pytest.approx(2.0)
    (layer,) = viewer.open(tmp_path / "nm.mrc", plugin=PLUGIN)
    assert tuple(map(str, layer.units)) == ("angstrom",) * 3


def test_map_without_voxel_size_stays_without(viewer, tmp_path, notes):
    write_mrc(tmp_path / "nosize.mrc", _blob(16), apix=None)
    (layer,) = viewer.open(tmp_path / "nosize.mrc", plugin=PLUGIN)
    assert tuple(map(str, layer.units)) == ("pixel",) * 3 and tuple(layer.scale) == (1, 1, 1)
    assert any("no voxel size" in m for s, m in notes if s == "warning")
    viewer.layers.save(str(tmp_path / "again.mrc"), plugin=PLUGIN)
    assert read_mrc(tmp_path / "again.mrc")[1] is None  # never a guessed 1 A


def test_reader_claims_only_cryo_em_files(tmp_path):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    for name in ("cells.tif", "photo.png", "table.csv", "notes.txt", "data.npy"):
        (tmp_path / name).write_bytes(b"x")
        assert PLUGIN not in {r.plugin_name for r in
                              pm.iter_compatible_readers([str(tmp_path / name)])}, name
    for name in ("map.mrc", "MAP.MRC", "m.map", "p.mrcs"):
        assert PLUGIN in {r.plugin_name for r in
                          pm.iter_compatible_readers([str(tmp_path / name)])}, name


def test_stack_saved_as_mrcs(viewer, tmp_path):
    stack = np.random.default_rng(1).normal(size=(5, 12, 12)).astype(np.float32)
    write_mrc(tmp_path / "p.mrcs", stack, apix=2.5)
    viewer.open(tmp_path / "p.mrcs", plugin=PLUGIN)
    out = tmp_path / "copy.mrcs"
    assert viewer.layers.save(str(out), plugin=PLUGIN) == [str(out)]
    from napari_cryodrgn.io.mrc import read_mrc_header

    h = read_mrc_header(out)
    assert h.stack and h.shape == (5, 12, 12) and h.apix == pytest.approx(2.5)


def test_stack_opens_as_2d_images(viewer, tmp_path):
    stack = np.random.default_rng(0).normal(size=(7, 16, 16)).astype(np.float32)
    write_mrc(tmp_path / "p.mrcs", stack, apix=3.1)
    (layer,) = viewer.open(tmp_path / "p.mrcs", plugin=PLUGIN)
    assert layer.metadata["particle_stack"] and layer.data.shape == (7, 16, 16)
    np.testing.assert_allclose(layer.scale[1:], [3.1, 3.1], rtol=1e-6)
    assert layer.scale[0] == 1.0 and layer.rendering != "iso"
    # a stack saved from the layer stays a stack with the pixel size
    viewer.layers.save(str(tmp_path / "copy.mrc"), plugin=PLUGIN)
    back, apix = read_mrc(tmp_path / "copy.mrc")
    np.testing.assert_array_equal(back, stack)
    assert apix == pytest.approx(3.1, rel=1e-6)


def test_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"II*\x00")
    (tmp_path / "folder").mkdir()
    assert get_reader(str(tmp_path / "a.tif")) is None
    assert get_reader(str(tmp_path / "folder")) is None
    assert get_reader(str(tmp_path / "x.mrc")) is not None


def test_broken_file_gives_a_clear_notification(viewer, tmp_path, notes):
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"not an mrc file at all" * 10)
    viewer.open(bad, plugin=PLUGIN)
    assert len(viewer.layers) == 0
    errors = [m for s, m in notes if s == "error"]
    assert errors and "broken.mrc" in errors[0] and "not an MRC file" in errors[0]


def test_4d_layer_refused_by_writer(viewer, tmp_path, notes):
    viewer.add_image(np.zeros((3, 8, 8, 8), np.float32), name="series")
    with pytest.warns(UserWarning):
        assert viewer.layers.save(str(tmp_path / "s.mrc"), plugin=PLUGIN) == []
    assert not list(tmp_path.iterdir())
    assert any("4 dimensions" in m for s, m in notes if s == "error")


def test_training_folder_opens_its_latest_map(viewer, tiny_run):
    from napari_cryodrgn._napari.map_view import is_surface, layer_level, layer_volume
    from napari_cryodrgn.analysis.export import iso_level
    from napari_cryodrgn.analysis.overview import typical_map

    (layer,) = viewer.open(tiny_run, plugin=PLUGIN)
    assert is_surface(layer)  # shown as the Explore dock shows maps
    vol = layer_volume(layer)
    assert vol.shape == (16, 16, 16) and len(layer.data[1]) > 0
    assert layer.metadata["run"] == str(tiny_run) and layer.metadata["epoch"] == 2
    np.testing.assert_allclose(vol, typical_map(tiny_run).volume, rtol=1e-5, atol=1e-6)
    assert layer_level(layer) == iso_level(vol)
