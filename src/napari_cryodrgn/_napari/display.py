"""Maps are seen in 3D: the canvas switches to 3D (camera fitted to the layers) the first time
a map is shown in a viewer, and never again after that, so a user who goes back to 2D keeps 2D."""

from __future__ import annotations

import weakref

_switched: dict[int, weakref.ref] = {}


def show_maps_in_3d(viewer) -> None:
    """Switch ``viewer`` to 3D with a fitted camera, once per viewer."""
    key = id(viewer)
    ref = _switched.get(key)
    if ref is not None and ref() is viewer:
        return
    _switched[key] = weakref.ref(viewer)
    if viewer.dims.ndisplay != 3:
        viewer.dims.ndisplay = 3
        viewer.reset_view()


def show_maps_in_3d_later(viewer=None) -> None:
    """:func:`show_maps_in_3d` for the current viewer once napari has added the layers being
    read (readers return layer data; napari adds it after they return)."""
    import napari
    from qtpy.QtCore import QTimer

    viewer = viewer or napari.current_viewer()
    if viewer is not None:
        QTimer.singleShot(0, lambda: show_maps_in_3d(viewer))


def remove_layer(viewer, layer) -> None:
    """Remove ``layer`` (a layer or its name) from ``viewer``, shown first: with napari 0.9.2,
    vispy and Mesa, removing a hidden volume layer in 3D makes the next frame crash the process
    (a segfault in glDrawElements, reproduced with plain napari). Making it visible and removing
    it before the event loop runs draws no frame in between."""
    if isinstance(layer, str):
        if layer not in viewer.layers:
            return
        layer = viewer.layers[layer]
    layer.visible = True
    viewer.layers.remove(layer)
