"""The explorer's one map layer: every map the Explore dock shows (a pick, a frame of a map
series) goes into the same layer, so layers never pile up and a series plays one map per
frame with nothing drawn underneath.

Maps are shown as iso-surfaces (a Surface layer; the map rides in its metadata) by default,
or as napari's ray-cast iso volume (an Image layer). The surface is the default because it
keeps the canvas live without a GPU (measured in :mod:`..analysis.surface`: 33 ms against
0.7-5 s a frame on software OpenGL)."""

from __future__ import annotations

import numpy as np

from .display import remove_layer, show_maps_in_3d_later
from .layers import map_layer, spatial, surface_layer

MAP_LAYER = "cryoDRGN map"
SURFACE, VOLUME = "surface", "volume"
MODES = (SURFACE, VOLUME)


def is_surface(layer) -> bool:
    from napari.layers import Surface

    return isinstance(layer, Surface)


def layer_volume(layer) -> np.ndarray:
    """The map a map layer shows (a surface layer keeps it in its metadata)."""
    return layer.metadata["volume"] if is_surface(layer) else np.asarray(layer.data)


def layer_level(layer) -> float:
    """The iso level a map layer draws at."""
    return float(layer.metadata["iso_level"] if is_surface(layer) else layer.iso_threshold)


def warm_up() -> None:
    """Load, in a background thread, what napari needs the first time a map surface is shown
    (its modules, the units registry): about 0.3 s that would otherwise freeze the first map."""
    import threading

    def load():
        import napari._qt.layer_controls.qt_surface_controls  # noqa: F401
        import napari._vispy.layers.surface  # noqa: F401
        from napari.layers import Surface

        from ..analysis.surface import Mesh

        empty = Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), 0.0)
        Surface(empty.layer_data(), scale=(1.0,) * 3, units=("angstrom",) * 3)

    threading.Thread(target=load, name="napari-cryodrgn warm-up", daemon=True).start()


class MapView:
    """The map layer ``name`` of ``viewer``: :meth:`show` puts a map in it, as a surface when
    given its mesh, else as a volume; a layer of the other kind is replaced."""

    def __init__(self, viewer, name: str = MAP_LAYER):
        self.viewer, self.name = viewer, name

    @property
    def layer(self):
        return self.viewer.layers[self.name] if self.name in self.viewer.layers else None

    def volume(self) -> np.ndarray | None:
        """The map on screen, or None."""
        layer = self.layer
        return None if layer is None else layer_volume(layer)

    def show(self, vol: np.ndarray, level: float, apix: float | None, meta: dict,
             mesh=None) -> None:
        """Show ``vol`` at iso ``level``: its surface ``mesh`` when given, else the volume."""
        layer = self.layer
        if layer is not None and is_surface(layer) != (mesh is not None):
            remove_layer(self.viewer, layer)  # the user switched between surface and volume
            layer = None
        if layer is None:
            if mesh is not None:
                data, kw, _ = surface_layer(vol, mesh, apix, self.name, meta)
                self.viewer.add_surface(data, **kw)
            else:
                data, kw, _ = map_layer(vol, apix, self.name, meta)
                kw["iso_threshold"] = level
                self.viewer.add_image(data, **kw)
            show_maps_in_3d_later(self.viewer)  # on the next turn: two short waits, not one long
            return
        geo = spatial(apix, 3, 3)
        if mesh is not None:
            layer.metadata.update(meta, volume=np.asarray(vol, np.float32), iso_level=mesh.level)
            layer.data = mesh.layer_data()
        else:
            layer.data = vol
            lo, hi = float(vol.min()), float(vol.max())
            layer.contrast_limits = (lo, hi if hi > lo else lo + 1)
            layer.iso_threshold = level
            layer.metadata.update(meta)
        layer.scale, layer.units = geo["scale"], geo["units"]
