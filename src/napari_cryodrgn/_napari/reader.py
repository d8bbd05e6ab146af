"""napari reader: .mrc/.map maps, .mrcs particle stacks, and training folders (ours or
cryoDRGN's; also opened through their config.yaml, which no other reader claims, and through
File > Open cryoDRGN run...). Declines (returns None) what it cannot read; a claimed file that
turns out to be broken gives one clear notification and no layer. Maps are shown in 3D."""

from __future__ import annotations

from pathlib import Path

import napari.viewer
import numpy as np

from ..analysis.export import iso_level
from ..analysis.overview import is_run_folder, typical_map
from ..analysis.surface import iso_surface
from ..errors import InputError
from ..io.mrc import memmap_mrc, read_mrc_header
from .display import show_maps_in_3d_later
from .layers import image_layer, map_layer, stack_layer, surface_layer
from .map_view import MAP_LAYER
from .notify import user_error

MAP_SUFFIXES = (".mrc", ".map")
STACK_SUFFIXES = (".mrcs",)
RUN_FILE = "config.yaml"
NOTHING = [(None,)]  # napari's "read, but no layers" sentinel


def get_reader(path):
    """Return a reader function for ``path`` when it is ours to read, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_claims(p) for p in paths):
        return None
    return read_paths


def _claims(path) -> bool:
    p = Path(path)
    if p.is_dir():
        return is_run_folder(p)
    if p.name == RUN_FILE:
        return is_run_folder(p.parent)
    return p.suffix.lower() in MAP_SUFFIXES + STACK_SUFFIXES


def _run_of(p: Path) -> Path | None:
    """The training folder ``p`` stands for (the folder, or the folder of its config.yaml)."""
    if p.is_dir():
        return p
    return p.parent if p.name == RUN_FILE else None


def read_paths(path) -> list:
    """Layer data for each path; broken files are reported, not raised."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in map(Path, paths):
        try:
            run = _run_of(p)
            layers.extend(read_run(run) if run is not None else read_mrc_file(p))
        except InputError as e:
            user_error(e, "napari-cryodrgn could not open it")
    return layers or NOTHING


def read_mrc_file(path: Path) -> list:
    """A volume as a 3D map layer, a stack (.mrcs or a space-group-0 .mrc) as 2D images."""
    header = read_mrc_header(path)
    apix = header.apix  # None: shown in pixels (layers.py), never a guessed voxel size
    if apix is None:
        from .notify import show_warning

        show_warning(f"{path}: the header gives no voxel size; shown in pixels")
    data = memmap_mrc(header)
    if path.suffix.lower() in STACK_SUFFIXES or header.stack or header.shape[0] == 1:
        if header.shape[0] == 1:
            img = np.array(data[0], np.float32)
            return [image_layer(img, apix, path.stem, {"path": str(path)})]
        layer = stack_layer(data, apix, path.stem, {"path": str(path)})
        layer[1]["contrast_limits"] = _sample_limits(data)
        return [layer]
    show_maps_in_3d_later()
    return [map_layer(np.array(data, np.float32), apix, path.stem, {"path": str(path)})]


def _sample_limits(stack) -> tuple[float, float]:
    """Contrast limits from up to 64 images spread through a (memory-mapped) stack."""
    idx = np.unique(np.linspace(0, len(stack) - 1, min(64, len(stack))).astype(int))
    sample = np.asarray(stack[idx], np.float32)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return (float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def read_run(path: Path, explore: bool = True) -> list:
    """A training folder: the map of its most typical particle at the latest epoch, in the
    layer the Explore dock updates; the dock opens on the run once napari has added it."""
    ov = typical_map(path)
    meta = {"run": str(path), "epoch": ov.epoch, "z": ov.z.tolist(), "particle": ov.particle,
            "where": "the most typical particle", "series": None, "frame": None}
    if ov.apix is None:
        from .notify import show_warning

        show_warning(f"{path}: the voxel size is unknown (config.yaml records no pixel size and "
                     "the run's CTF file is not found); the map is shown in pixels")
    if explore:
        open_explorer_later(path)
    show_maps_in_3d_later()
    mesh = iso_surface(ov.volume, iso_level(ov.volume))  # as the dock shows maps (map_view)
    return [surface_layer(ov.volume, mesh, ov.apix, MAP_LAYER, meta)]


def open_explorer_later(path: Path) -> None:
    """Open (or reuse) the Explore dock of the current viewer on ``path``, after this call."""
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.current_viewer()
    if viewer is None:
        return

    def _open():
        try:
            _, widget = viewer.window.add_plugin_dock_widget("napari-cryodrgn", "Explore")
        except (RuntimeError, KeyError, AttributeError):  # window closed meanwhile
            return
        widget.open_run(path)

    QTimer.singleShot(0, _open)


def open_run_dialog(viewer: napari.viewer.Viewer) -> None:
    """File > Open cryoDRGN run...: choose a training folder and open it with this plugin (its
    map in 3D and the Explore dock on it), with no "choose a reader" question."""
    from qtpy.QtWidgets import QFileDialog

    from .notify import show_error

    folder = QFileDialog.getExistingDirectory(
        viewer.window._qt_window, "Open a cryoDRGN training folder (ours or cryoDRGN's)")
    if not folder:
        return
    if not is_run_folder(Path(folder)):
        show_error(f"{folder} is not a training folder (no config.yaml with weights and "
                   "latents); choose the folder a training run wrote.")
        return
    viewer.open(folder, plugin="napari-cryodrgn")
