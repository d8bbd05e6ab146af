"""pyqtgraph plots in napari's colours: background, axes, labels and titles follow the
viewer's theme (light, dark, system) and change with it."""

from __future__ import annotations

import contextlib
import weakref

import pyqtgraph as pg


def theme_colours(viewer) -> tuple[str, str]:
    """(background, foreground) of the viewer's current theme, as hex strings."""
    from napari.utils.theme import get_theme

    theme = get_theme(viewer.theme)
    return theme.canvas.as_hex(), theme.text.as_hex()


def _plot_items(widget) -> list:
    if isinstance(widget, pg.PlotWidget):
        return [widget.getPlotItem()]
    if isinstance(widget, pg.GraphicsLayoutWidget):
        return [it for it in widget.ci.items if isinstance(it, pg.PlotItem)]
    return []


def paint(widget, background: str, foreground: str) -> None:
    """Colour one PlotWidget or GraphicsLayoutWidget."""
    widget.setBackground(background)
    for plot in _plot_items(widget):
        for name in ("left", "bottom", "right", "top"):
            axis = plot.getAxis(name)
            axis.setPen(foreground)
            axis.setTextPen(foreground)
            if axis.labelText:
                axis.setLabel(axis.labelText, units=axis.labelUnits, color=foreground)
        if plot.titleLabel.text:
            plot.setTitle(plot.titleLabel.text, color=foreground)


def follow_theme(viewer, *widgets, on_change=None) -> None:
    """Paint ``widgets`` in the viewer's theme now and whenever it changes; ``on_change(bg,
    fg)`` also runs then (for items with colours of their own). Widgets already deleted by Qt
    are skipped (the connection holds them weakly)."""
    refs = [weakref.ref(w) for w in widgets]

    def apply(*_):
        bg, fg = theme_colours(viewer)
        for w in filter(None, (ref() for ref in refs)):
            with contextlib.suppress(RuntimeError):  # the C++ widget is gone (dock closed)
                paint(w, bg, fg)
        if on_change is not None:
            with contextlib.suppress(RuntimeError):
                on_change(bg, fg)

    viewer.events.theme.connect(apply)
    apply()
