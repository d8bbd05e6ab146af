"""The latent scatter: pyqtgraph plot with pick, path, lasso and rectangle tools.

Large runs stay fluid: at most ``max_display`` points are drawn (a fixed random subset), in
one item per colour level; picking and selection maths use the full arrays in the Session.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QVBoxLayout, QWidget

TOOLS = ("pick", "path", "lasso", "rect", "cluster")
LEVELS = 24
SELECT_BRUSH = (255, 140, 0, 220)
MAX_LEGEND = 24  # legend entries shown (a note says how many more)
CATEGORY_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]


def _passive(item) -> None:
    """Points and curves never take mouse clicks: the view box's tools get them all."""
    item.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
    item.setAcceptHoverEvents(False)
    # pyqtgraph's scene offers clicks and drags to every item under the cursor, and sends a
    # click straight to an item that claimed it while hovered: claim nothing
    item.mouseClickEvent = _ignore
    item.mouseDragEvent = _ignore
    item.hoverEvent = _no_hover
    for child in item.childItems():  # a PlotDataItem draws with its own curve and scatter
        _passive(child)


def _ignore(ev, *args) -> None:
    ev.ignore()


def _no_hover(ev) -> None:
    return None


def modifier_mode(mods) -> str:
    """Shift adds to the selection, Ctrl (or Alt) subtracts, none replaces."""
    if mods & Qt.KeyboardModifier.ShiftModifier:
        return "add"
    if mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier):
        return "subtract"
    return "replace"


class _ToolViewBox(pg.ViewBox):
    """A ViewBox whose left button serves the active tool (right button and wheel: pan/zoom
    as usual; left drag pans only with no drawing tool active)."""

    def __init__(self, owner: LatentScatter):
        super().__init__()
        self.owner = owner

    def mouseClickEvent(self, ev):  # noqa: N802 - pyqtgraph override
        if (ev.button() == Qt.MouseButton.LeftButton
                and self.owner.tool in ("pick", "path", "cluster")):
            ev.accept()
            p = self.mapSceneToView(ev.scenePos())
            self.owner._on_click((p.x(), p.y()), ev.double(), ev.modifiers())
            return
        super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - pyqtgraph override
        tool = self.owner.tool
        if ev.button() != Qt.MouseButton.LeftButton or tool in ("path", "cluster"):
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        p = self.mapSceneToView(ev.scenePos())
        start = self.mapSceneToView(ev.buttonDownScenePos())
        self.owner._on_drag(tool, (start.x(), start.y()), (p.x(), p.y()), ev.isStart(),
                            ev.isFinish(), ev.modifiers())


class LatentScatter(QWidget):
    """Scatter of a 2D view of the latent space with interactive tools (see module doc)."""

    picked = Signal(float, float)  # a click or a drag position with the pick tool
    pathFinished = Signal(object)  # (M, 2) polyline vertices (Enter, or the Finish button)
    lassoFinished = Signal(object, str)  # (M, 2) polygon, selection mode
    rectFinished = Signal(object, object, str)  # corner, corner, selection mode
    clusterClicked = Signal(float, float, str)  # a click with the cluster tool, mode

    def __init__(self, max_display: int = 20_000, parent=None):
        super().__init__(parent)
        self.max_display = max_display
        self.tool = "pick"
        self.legend: pg.LegendItem | None = None
        self.legend_entries: list[str] = []
        self.colour_bar: pg.ColorBarItem | None = None
        self.vb = _ToolViewBox(self)
        self.plot = pg.PlotWidget(viewBox=self.vb)
        self.plot.setMinimumHeight(320)
        self.plot.showGrid(x=False, y=False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot)
        self._layers: list[pg.ScatterPlotItem] = []
        self.selected_item = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(*SELECT_BRUSH))
        self.selected_item.setZValue(10)
        self.path_items: list[pg.PlotDataItem] = []
        self.path_names: list[str] = []
        self.draft = pg.PlotDataItem(symbol="o", symbolSize=6)
        self.set_foreground("#f0f1f2")
        self.draft.setZValue(30)
        self.marker = pg.ScatterPlotItem(size=20, symbol="+", pen=pg.mkPen("r", width=3),
                                         brush=None)
        self.marker.setZValue(40)
        for it in (self.selected_item, self.draft, self.marker):
            _passive(it)
            self.plot.addItem(it)
        self.xy = np.zeros((0, 2), np.float32)
        self.display = np.zeros(0, np.int64)
        self._vertices: list[tuple[float, float]] = []
        self.plot.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # keys reach the plot once clicked
        self.plot.installEventFilter(self)

    # -- data ----------------------------------------------------------------------------------
    def set_points(self, xy: np.ndarray, values: np.ndarray | None = None,
                   categorical: bool = False, labels: tuple[str, str] = ("", ""),
                   names: list[str] | None = None, title: str = "") -> None:
        """Show ``xy`` (N, 2) coloured by ``values`` (continuous or category labels; ``names``
        of the categories for the legend, ``title`` of the colour bar or legend)."""
        xy = np.asarray(xy, np.float32)
        new_n = len(xy) != len(self.xy)
        self.xy = xy
        if new_n:
            n = len(xy)
            if n > self.max_display:
                rng = np.random.default_rng(0)
                self.display = np.sort(rng.choice(n, self.max_display, replace=False))
            else:
                self.display = np.arange(n)
        self.set_values(values, categorical, names, title)
        self.plot.setLabel("bottom", labels[0])
        self.plot.setLabel("left", labels[1])
        self.vb.autoRange(padding=0.05)

    def set_values(self, values: np.ndarray | None, categorical: bool = False,
                   names: list[str] | None = None, title: str = "") -> None:
        """Recolour the displayed points (one scatter item per colour), with a legend of the
        categories (their numbers, or ``names``) or a colour bar of the continuous range."""
        for it in self._layers:
            self.plot.removeItem(it)
        self._layers = []
        self._clear_keys()
        d = self.display
        pts = self.xy[d]
        if values is None:
            groups = [(np.arange(len(d)), (120, 200, 255))]
        else:
            values = np.asarray(values)
            v = values[d]
            if categorical:
                cats = np.unique(values[np.isfinite(values)])  # every category, shown or not
                slot = np.searchsorted(cats, v) % len(CATEGORY_COLOURS)
                groups = [(np.flatnonzero(slot == k), CATEGORY_COLOURS[k])
                          for k in range(len(CATEGORY_COLOURS))]
                self._show_legend(cats, names)
            else:
                finite = np.isfinite(v)
                lo, hi = (np.percentile(v[finite], [1, 99]) if finite.any() else (0.0, 1.0))
                level = np.clip(((v - lo) / max(hi - lo, 1e-12) * LEVELS).astype(int), 0,
                                LEVELS - 1)
                level[~finite] = 0
                cmap = pg.colormap.get("viridis")
                rgba = cmap.map(np.linspace(0, 1, LEVELS), mode="byte")
                groups = [(np.flatnonzero(level == k), tuple(int(c) for c in rgba[k][:3]))
                          for k in range(LEVELS)]
                self._show_colour_bar(float(lo), float(hi), cmap, title)
        for rows, colour in groups:
            if not len(rows):
                continue
            it = pg.ScatterPlotItem(pts[rows, 0], pts[rows, 1], size=3, pen=None,
                                    brush=pg.mkBrush(*colour, 160))
            _passive(it)
            self.plot.addItem(it)
            self._layers.append(it)

    # -- keys: legend and colour bar ------------------------------------------------------------
    def _clear_keys(self) -> None:
        for key in (self.legend, self.colour_bar):
            if key is None:
                continue
            if key is self.colour_bar:
                self.plot.getPlotItem().layout.removeItem(key)
            if key.scene() is not None:
                key.scene().removeItem(key)
        self.legend = self.colour_bar = None

    def _show_legend(self, cats: np.ndarray, names) -> None:
        """Category numbers (as ``select --kmeans-labels`` and the files use them) or names,
        with their colours; up to MAX_LEGEND entries (colours repeat beyond the palette)."""
        self.legend = pg.LegendItem(offset=(-5, 5), labelTextColor=self._fg, labelTextSize="8pt",
                                    colCount=2 if len(cats) > 10 else 1)
        self.legend.setParentItem(self.plot.getPlotItem().vb)
        shown = cats[:MAX_LEGEND]
        self.legend_entries = []
        for i, c in enumerate(shown):
            label = (names[int(c)] if names is not None and 0 <= int(c) < len(names)
                     else f"{c:g}")
            sample = pg.ScatterPlotItem(size=8, pen=None,
                                        brush=pg.mkBrush(*CATEGORY_COLOURS[i % len(
                                            CATEGORY_COLOURS)]))
            self.legend.addItem(sample, label)
            self.legend_entries.append(label)
        if len(cats) > MAX_LEGEND:
            self.legend.addItem(pg.ScatterPlotItem(size=0), f"… {len(cats) - MAX_LEGEND} more")
            self.legend_entries.append(f"… {len(cats) - MAX_LEGEND} more")

    def _show_colour_bar(self, lo: float, hi: float, cmap, title: str) -> None:
        """The continuous colouring's range (1st-99th percentile) beside the plot."""
        self.colour_bar = pg.ColorBarItem(values=(lo, hi if hi > lo else lo + 1.0),
                                          colorMap=cmap, interactive=False, width=12,
                                          label=title or None, colorMapMenu=False)
        self.plot.getPlotItem().layout.addItem(self.colour_bar, 2, 5)

    def set_foreground(self, colour: str) -> None:
        """The colour of the path being drawn and of the legend text (the theme's text)."""
        self._fg = colour
        self.draft.setPen(pg.mkPen(colour, width=2, style=Qt.PenStyle.DashLine))
        self.draft.setSymbolBrush(colour)
        if self.legend is not None:
            self.legend.setLabelTextColor(colour)

    def set_selection(self, mask: np.ndarray | None) -> None:
        """Highlight selected particles (those among the displayed points)."""
        if mask is None or not len(self.display):
            self.selected_item.setData([], [])
            return
        rows = self.display[np.asarray(mask)[self.display]]
        self.selected_item.setData(self.xy[rows, 0], self.xy[rows, 1])

    def set_marker(self, xy) -> None:
        self.marker.setData([xy[0]], [xy[1]]) if xy is not None else self.marker.setData([], [])

    def set_paths(self, paths: dict[str, np.ndarray]) -> None:
        """Draw named latent paths (already projected to this view)."""
        for it in self.path_items:
            self.plot.removeItem(it)
        self.path_items = []
        self.path_names = list(paths)
        for i, xy in enumerate(paths.values()):
            colour = CATEGORY_COLOURS[(i + 3) % len(CATEGORY_COLOURS)]
            it = pg.PlotDataItem(xy[:, 0], xy[:, 1], pen=pg.mkPen(*colour, width=2),
                                 symbol="o", symbolSize=7, symbolBrush=pg.mkBrush(*colour))
            it.setZValue(20)
            _passive(it)
            self.plot.addItem(it)
            self.path_items.append(it)

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}")
        self.tool = tool
        self._vertices = []
        self.draft.setData([], [])

    # -- coordinates (tests and benchmarks drive real mouse events through these) ------------
    def widget_pos(self, x: float, y: float):
        """Viewport pixel position (QPoint) of data point (x, y)."""
        from qtpy.QtCore import QPointF

        scene = self.vb.mapViewToScene(QPointF(float(x), float(y)))
        return self.plot.mapFromScene(scene)

    def data_pos(self, qpoint) -> tuple[float, float]:
        """Data coordinates of a viewport pixel position."""
        p = self.vb.mapSceneToView(self.plot.mapToScene(qpoint))
        return p.x(), p.y()

    # -- tool handlers -----------------------------------------------------------------------
    def _on_click(self, xy, double: bool, mods) -> None:
        if self.tool == "cluster":
            self.clusterClicked.emit(float(xy[0]), float(xy[1]), modifier_mode(mods))
            return
        if self.tool == "pick":
            self.set_marker(xy)
            self.picked.emit(float(xy[0]), float(xy[1]))
            return
        if double:
            self.finish_path()
            return
        self._vertices.append((float(xy[0]), float(xy[1])))
        v = np.asarray(self._vertices)
        self.draft.setData(v[:, 0], v[:, 1])

    def finish_path(self) -> bool:
        """End the polyline being drawn (Enter, a double click or the Finish button)."""
        verts = np.asarray(self._vertices, np.float32)
        self._vertices = []
        self.draft.setData([], [])
        if len(verts) >= 2:
            self.pathFinished.emit(verts)
            return True
        return False

    def eventFilter(self, obj, ev):  # noqa: N802 - Qt override
        """Enter finishes the path being drawn, Escape forgets it (keys on the plot)."""
        from qtpy.QtCore import QEvent

        if obj is self.plot and ev.type() == QEvent.Type.KeyPress and self.tool == "path":
            if ev.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.finish_path()
                return True
            if ev.key() == Qt.Key.Key_Escape:
                self.cancel_path()
                return True
        return super().eventFilter(obj, ev)

    def cancel_path(self) -> None:
        """Forget the polyline being drawn (Escape)."""
        self._vertices = []
        self.draft.setData([], [])

    def _on_drag(self, tool, start, xy, is_start: bool, is_finish: bool, mods) -> None:
        if tool == "pick":
            self.set_marker(xy)
            self.picked.emit(float(xy[0]), float(xy[1]))
            return
        if is_start:
            self._vertices = [start]
        if tool == "lasso":
            self._vertices.append(xy)
            v = np.asarray(self._vertices + [self._vertices[0]])
        else:
            (x0, y0), (x1, y1) = start, xy
            v = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])
        self.draft.setData(v[:, 0], v[:, 1])
        if is_finish:
            self.draft.setData([], [])
            verts, self._vertices = np.asarray(self._vertices, np.float32), []
            mode = modifier_mode(mods)
            if tool == "lasso" and len(verts) >= 3:
                self.lassoFinished.emit(verts, mode)
            elif tool == "rect":
                self.rectFinished.emit(np.asarray(start), np.asarray(xy), mode)
