"""Opening a run is one action with no reader question, and maps are shown in 3D."""

import shutil
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt

from napari_cryodrgn._napari.explore_widget import MAP_LAYER
from napari_cryodrgn._napari.map_view import is_surface
from napari_cryodrgn.io.mrc import write_mrc

PLUGIN = "napari-cryodrgn"


def _explore(viewer):
    return next((d for k, d in viewer.window.dock_widgets.items() if "Explore" in k), None)


def test_config_yaml_opens_the_run_without_naming_a_plugin(viewer, qtbot, tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    from npe2 import PluginManager

    readers = {r.plugin_name for r in
               PluginManager.instance().iter_compatible_readers([str(run / "config.yaml")])}
    assert readers == {PLUGIN}  # nothing else claims it, so napari asks nothing
    assert viewer.dims.ndisplay == 2
    # File > Open's own path (no plugin named): a "choose reader" dialog would block here
    viewer.window._qt_viewer._qt_open([str(run / "config.yaml")], stack=False)
    layer = viewer.layers[MAP_LAYER]
    assert layer.metadata["run"] == str(run)
    qtbot.waitUntil(lambda: _explore(viewer) is not None and _explore(viewer).session
                    is not None, timeout=30_000)
    assert _explore(viewer).session.workdir == run
    qtbot.waitUntil(lambda: viewer.dims.ndisplay == 3, timeout=5_000)  # the map in 3D


def test_file_menu_opens_a_run(viewer, qtbot, tiny_run, tmp_path, monkeypatch, notes):
    from app_model.types import MenuItem
    from napari._app_model import get_app_model
    from qtpy.QtWidgets import QFileDialog

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    app = get_app_model()
    items = [i for i in app.menus.get_menu("napari/file/io_utilities")
             if isinstance(i, MenuItem) and i.command.id == "napari-cryodrgn.open_run"]
    assert items and items[0].command.title.startswith("Open cryoDRGN run...")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(run))
    app.commands.execute_command("napari-cryodrgn.open_run").result()
    assert MAP_LAYER in viewer.layers
    qtbot.waitUntil(lambda: _explore(viewer) is not None and _explore(viewer).session
                    is not None, timeout=30_000)
    # a folder that is not a run: one clear notification, nothing opened
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(other))
    app.commands.execute_command("napari-cryodrgn.open_run").result()
    assert any("not a training folder" in m for s, m in notes if s == "error")


def test_maps_switch_to_3d_once(viewer, qtbot, tmp_path):
    g = np.mgrid[:16, :16, :16].astype(np.float32) - 8
    write_mrc(tmp_path / "a.mrc", np.exp(-(g ** 2).sum(0) / 10), apix=2.0)
    viewer.open(tmp_path / "a.mrc", plugin=PLUGIN)
    qtbot.waitUntil(lambda: viewer.dims.ndisplay == 3, timeout=5_000)
    viewer.dims.ndisplay = 2  # the user's choice is kept from now on
    viewer.open(tmp_path / "a.mrc", plugin=PLUGIN)
    qtbot.wait(100)
    assert viewer.dims.ndisplay == 2


def test_a_pick_shows_the_map_in_3d(viewer, qtbot, tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Explore")
    qtbot.waitUntil(lambda: w.scatter.plot.viewport().isVisible(), timeout=10_000)
    w.open_run(run)
    qtbot.waitUntil(lambda: w.idle, timeout=30_000)
    qtbot.wait(50)
    assert viewer.dims.ndisplay == 2 and MAP_LAYER not in viewer.layers
    emb = w.session.embedding("pca")
    qtbot.mouseClick(w.scatter.plot.viewport(), Qt.MouseButton.LeftButton,
                     pos=w.scatter.widget_pos(*emb[3]))
    qtbot.waitUntil(lambda: MAP_LAYER in viewer.layers and w.map_request_done, timeout=30_000)
    qtbot.waitUntil(lambda: viewer.dims.ndisplay == 3, timeout=5_000)
    assert is_surface(viewer.layers[MAP_LAYER])
