"""The Explore dock: a training run's latent space as a scatter; click for the map there.

A click decodes the map at that latent point (PCA: exact inverse; UMAP / z dims: the nearest
particle's z) in a worker into one Image layer that updates in place; requests coalesce, the
latest wins. Paths, PC / graph traversals and k-means centres become 4D map series, which
export to MRC files with a ChimeraX script. Selection tools (lasso, rectangle, clusters) act
on the shared :class:`~napari_cryodrgn.session.Session`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..analysis.export import export_series, iso_level
from ..errors import InputError
from ..session import Session
from .layers import map_layer
from .notify import show_error, show_info
from .scatter import LatentScatter
from .widgets import PathEdit

log = logging.getLogger(__name__)
MAP_LAYER = "cryoDRGN map"
SERIES_PREFIX = "cryoDRGN series: "


def _checked(fn, *args, **kwargs):
    """Run ``fn`` in a worker; a user error comes back as an InputError value, not raised."""
    try:
        return fn(*args, **kwargs)
    except InputError as e:
        return e


def _decode(session: Session, z: np.ndarray, rid: int, label: str):
    return rid, session.decode(z), z, label


def _decode_series(session: Session, z: np.ndarray):
    vols = []
    for i, zi in enumerate(z):
        vols.append(session.decode(zi))
        yield i + 1, len(z)
    return np.stack(vols)


class ExploreWidget(QWidget):
    """Dock widget over one :class:`Session` (``self.session``)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: Session | None = None
        self.series: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # name -> (z, volumes)
        self.picks: list[int] = []  # particle indices of the last picks (graph anchors)
        self._req = 0  # id of the newest map request
        self._shown = 0  # id of the map on screen
        self._pending = None
        self._decoding = None
        self._series_worker = None
        self._loss_worker = None  # the worker computing a colouring (the loss is the slowest)
        self._colour_req = 0
        self._cluster_worker = None
        self._build()

    # -- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        self.run_edit = PathEdit("dir", placeholder="training folder (ours or cryoDRGN's)")
        self.epoch = QComboBox()
        self.open_btn = QPushButton("Open")
        self.open_btn.clicked.connect(lambda: self.open_run(self.run_edit.text() or None,
                                                            self._chosen_epoch()))
        self.view = QComboBox()
        self.colour = QComboBox()
        self.view.currentTextChanged.connect(self._on_view_changed)
        self.colour.currentTextChanged.connect(self._on_colour_changed)
        self.epoch.activated.connect(lambda *_: self._on_epoch_chosen())

        top = QGridLayout()
        top.addWidget(QLabel("Run"), 0, 0)
        top.addWidget(self.run_edit, 0, 1, 1, 3)
        top.addWidget(QLabel("Epoch"), 1, 0)
        top.addWidget(self.epoch, 1, 1)
        top.addWidget(self.open_btn, 1, 2, 1, 2)
        top.addWidget(QLabel("Axes"), 2, 0)
        top.addWidget(self.view, 2, 1)
        top.addWidget(QLabel("Colour"), 2, 2)
        top.addWidget(self.colour, 2, 3)

        self.tools = QButtonGroup(self)
        tool_row = QHBoxLayout()
        self.tool_buttons = {}
        for name, label, tip in (
            ("pick", "Pick", "Click or drag: the map at that latent point"),
            ("path", "Path", "Click points, then Enter (Escape cancels): a map series along it"),
            ("lasso", "Lasso", "Drag around particles (Shift adds, Ctrl subtracts)"),
            ("rect", "Rectangle", "Drag a box (Shift adds, Ctrl subtracts)"),
            ("cluster", "Clusters", "Click a point: its whole k-means cluster (Shift adds, "
             "Ctrl subtracts)"),
        ):
            b = QPushButton(label)
            b.setCheckable(True)
            b.setToolTip(tip)
            self.tools.addButton(b)
            self.tool_buttons[name] = b
            tool_row.addWidget(b)
            b.toggled.connect(lambda on, n=name: on and self.scatter.set_tool(n))
        self.finish_btn = QPushButton("Finish path")
        self.finish_btn.setToolTip("End the drawn path (or press Enter in the plot)")
        tool_row.addWidget(self.finish_btn)
        self.scatter = LatentScatter()
        self.finish_btn.clicked.connect(self._on_finish_clicked)
        self.tool_buttons["pick"].setChecked(True)
        self.scatter.picked.connect(self._on_pick)
        self.scatter.pathFinished.connect(self._on_path_drawn)
        self.scatter.lassoFinished.connect(self._on_lasso)
        self.scatter.rectFinished.connect(self._on_rect)
        self.scatter.clusterClicked.connect(self._on_cluster)
        self.info = QLabel("Open a training folder.")
        self.info.setWordWrap(True)

        self.auto_threshold = QCheckBox("Iso level from each map")
        self.auto_threshold.setChecked(True)
        self.n_frames = QSpinBox()
        self.n_frames.setRange(2, 200)
        self.n_frames.setValue(10)
        self.pc = QSpinBox()
        self.pc.setRange(1, 1)
        self.k = QSpinBox()
        self.k.setRange(2, 500)
        self.k.setValue(20)
        self.pc_btn = QPushButton("PC traversal")
        self.graph_btn = QPushButton("Graph path (last 2 picks)")
        self.kmeans_btn = QPushButton("k-means centres")
        self.clear_paths_btn = QPushButton("Clear paths")
        self.pc_btn.clicked.connect(self._on_pc_traversal)
        self.graph_btn.clicked.connect(self._on_graph_path)
        self.kmeans_btn.clicked.connect(self._on_kmeans_series)
        self.clear_paths_btn.clicked.connect(lambda: self.session and self.session.clear_paths())
        series = QGridLayout()
        series.addWidget(QLabel("Maps per path"), 0, 0)
        series.addWidget(self.n_frames, 0, 1)
        series.addWidget(QLabel("PC"), 1, 0)
        series.addWidget(self.pc, 1, 1)
        series.addWidget(self.pc_btn, 1, 2)
        series.addWidget(QLabel("k"), 2, 0)
        series.addWidget(self.k, 2, 1)
        series.addWidget(self.kmeans_btn, 2, 2)
        series.addWidget(self.graph_btn, 3, 0, 1, 2)
        series.addWidget(self.clear_paths_btn, 3, 2)
        self.series_box = QComboBox()
        self.export_btn = QPushButton("Export series…")
        self.export_btn.clicked.connect(self._on_export_clicked)
        self.movie_btn = QPushButton("Rotating movie…")
        self.movie_btn.setToolTip("A GIF of the 3D view turning once: the map, or the chosen "
                                  "series played while it turns")
        self.movie_btn.clicked.connect(self._on_movie_clicked)
        series.addWidget(self.series_box, 4, 0, 1, 2)
        series.addWidget(self.export_btn, 4, 2)
        series.addWidget(self.movie_btn, 5, 2)
        series_group = QGroupBox("Map series")
        series_group.setLayout(series)

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addLayout(tool_row)
        lay.addWidget(self.scatter)
        lay.addWidget(self.info)
        lay.addWidget(self.auto_threshold)
        lay.addWidget(series_group)
        from .select_panel import SelectPanel

        self.selection_panel = SelectPanel(self)
        lay.addWidget(self.selection_panel)
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        for w in (self.view, self.colour, self.pc_btn, self.finish_btn, self.graph_btn,
                  self.kmeans_btn, self.clear_paths_btn, self.export_btn, self.movie_btn,
                  *self.tool_buttons.values()):
            w.setEnabled(on)

    # -- opening -----------------------------------------------------------------------------
    def open_run(self, workdir, epoch: int | None = None) -> Session | None:
        """Open a training folder; errors become a notification. Returns the Session."""
        try:
            if not workdir:
                raise InputError("Choose a training folder to explore.")
            session = Session.open(workdir, epoch)
        except InputError as e:
            show_error(str(e))
            self.info.setText(str(e))
            return None
        self.set_session(session)
        return session

    def set_session(self, session: Session) -> None:
        """Explore ``session`` (shared with other docks)."""
        if self.session is not None:
            for name in ("selection", "paths", "epoch"):
                self.session.events.disconnect(name, getattr(self, f"_on_session_{name}"))
        self.session = session
        for name in ("selection", "paths", "epoch"):
            session.events.connect(name, getattr(self, f"_on_session_{name}"))
        self.run_edit.setText(str(session.workdir))
        self.epoch.blockSignals(True)
        self.epoch.clear()
        for e in session.epochs:
            self.epoch.addItem(str(e), e)
        if session.epoch is None:
            self.epoch.addItem("final (z.pkl)", None)
        self.epoch.setCurrentIndex(self.epoch.findData(session.epoch))
        self.epoch.blockSignals(False)
        self.pc.setRange(1, max(1, session.zdim))
        self.picks = []
        self._refresh_views()
        self._set_enabled(True)
        if self.selection_panel is not None:
            self.selection_panel.set_session(session)

    def _chosen_epoch(self):
        return self.epoch.currentData() if self.epoch.count() else None

    def _on_epoch_chosen(self) -> None:
        if self.session is None:
            return
        try:
            self.session.set_epoch(self._chosen_epoch())
        except InputError as e:
            show_error(str(e))

    def _refresh_views(self) -> None:
        s = self.session
        self.view.blockSignals(True)
        self.view.clear()
        offered = s.spaces()
        spaces = ["pca"] + [f"pca:{i},{j}" for i, j in ((0, 2), (1, 2), (2, 3)) if j < s.zdim]
        spaces += [sp for sp in offered if sp == "umap"] + [sp for sp in offered
                                                            if sp.startswith("z:")]
        for sp in spaces:
            self.view.addItem(_space_label(sp), sp)
        self.view.setCurrentIndex(max(0, self.view.findData(s.space)))
        self.view.blockSignals(False)
        self.colour.blockSignals(True)
        self.colour.clear()
        self.colour.addItems(s.colouring_names())
        self.colour.setCurrentText(s.colour_by)
        self.colour.blockSignals(False)
        self._redraw()

    def _redraw(self) -> None:
        s = self.session
        try:
            xy = s.embedding(s.space)
        except InputError as e:
            show_error(str(e))
            return
        name = s.colour_by
        self.scatter.set_points(xy, s.colouring(name, s.space), name == "kmeans",
                                s.axis_labels(s.space))
        self._on_session_selection()
        self._on_session_paths()

    # -- view / colour -------------------------------------------------------------------------
    def _on_view_changed(self, _text: str) -> None:
        if self.session is None:
            return
        space = self.view.currentData()
        if space == "umap" and not self.session.umap_ready():
            self.info.setText("computing UMAP in the background…")
            worker = create_worker(_checked, self.session.embedding, "umap")
            worker.returned.connect(lambda r: show_error(str(r)) if isinstance(r, InputError)
                                    else self._set_space("umap"))
            worker.errored.connect(lambda e: show_error(f"UMAP failed: {e}"))
            worker.start()
            return
        self._set_space(space)

    def _set_space(self, space: str) -> None:
        self.session.space = space
        self._redraw()
        self._update_info()

    def _on_colour_changed(self, name: str) -> None:
        """Colour the scatter by ``name``. The values are computed in a worker (k-means on a
        large run, or the per-particle loss, take seconds); the newest choice wins."""
        if self.session is None or not name:
            return
        s = self.session
        self._colour_req += 1
        rid = self._colour_req
        if name == "loss" and not s.loss_ready():
            self.info.setText("computing each particle's reconstruction error…")
        elif name == "kmeans":
            self.info.setText(f"k-means with {s.k} clusters…")
        worker = self._loss_worker = create_worker(_checked, s.colouring, name, s.space)
        worker.returned.connect(lambda r: self._on_colouring(rid, name, r))
        worker.start()

    def _on_colouring(self, rid: int, name: str, values) -> None:
        if rid != self._colour_req:
            return  # a newer colouring was asked for meanwhile
        self._loss_worker = None
        s = self.session
        if isinstance(values, InputError):
            show_error(str(values))
            self.colour.blockSignals(True)
            self.colour.setCurrentText(s.colour_by)
            self.colour.blockSignals(False)
            return
        s.colour_by = name
        self.scatter.set_values(values, name == "kmeans")
        self._on_session_selection()  # also refreshes the info line

    # -- picking and maps ----------------------------------------------------------------------
    def _on_pick(self, x: float, y: float) -> None:
        s = self.session
        if s is None:
            return
        z, idx = s.latent_at(s.space, (x, y))
        if idx is None:
            idx = s.nearest(s.space, (x, y))
        self.picks = (self.picks + [int(idx)])[-2:]
        self.request_map(z, f"({x:.3g}, {y:.3g})")

    def request_map(self, z, label: str = "") -> int:
        """Ask for the map at ``z``; returns the request id. Requests made while a decode runs
        coalesce: only the newest is decoded next, and older results never replace newer."""
        self._req += 1
        self._pending = (self._req, np.asarray(z, np.float32), label)
        if self._decoding is None:
            self._start_decode()
        return self._req

    @property
    def map_request_done(self) -> bool:
        """True when the newest requested map is on screen."""
        return self._shown == self._req and self._decoding is None

    def _start_decode(self) -> None:
        if self._pending is None or self.session is None:
            return
        rid, z, label = self._pending
        self._pending = None
        w = self._decoding = create_worker(_decode, self.session, z, rid, label)
        w.returned.connect(self._on_map)
        w.errored.connect(lambda e: show_error(f"decoding failed: {e}"))
        w.finished.connect(self._on_decode_finished)
        w.start()

    def _on_decode_finished(self) -> None:
        self._decoding = None
        self._start_decode()

    def _on_map(self, result) -> None:
        rid, vol, z, label = result
        if rid < self._shown:
            return  # an older request finished late
        self._shown = rid
        self.show_map(vol, z, label)

    def show_map(self, vol: np.ndarray, z: np.ndarray, label: str = "") -> None:
        """Put ``vol`` into the map layer (created on first use), iso rendering in 3D."""
        apix = self.session.apix or 1.0
        meta = {"z": np.asarray(z).tolist(), "run": str(self.session.workdir),
                "epoch": self.session.epoch, "where": label}
        if MAP_LAYER in self.viewer.layers:
            layer = self.viewer.layers[MAP_LAYER]
            layer.data = vol
            layer.scale = (apix,) * 3
            lo, hi = float(vol.min()), float(vol.max())
            layer.contrast_limits = (lo, hi if hi > lo else lo + 1)
            if self.auto_threshold.isChecked():
                layer.iso_threshold = iso_level(vol)
            layer.metadata.update(meta)
        else:
            data, kw, _ = map_layer(vol, apix, MAP_LAYER, meta)
            self.viewer.add_image(data, **kw)
            self.viewer.dims.ndisplay = 3

    # -- paths and series ----------------------------------------------------------------------
    def _on_path_drawn(self, verts: np.ndarray) -> None:
        s = self.session
        if s is None:
            return
        try:
            p = s.polyline_path(s.space, verts, n=self.n_frames.value(), name="drawn path")
        except InputError as e:
            show_error(str(e))
            return
        self.make_series(p.name, p.z)

    def _on_finish_clicked(self) -> None:
        if not self.scatter.finish_path():
            show_error("Draw a path first: choose Path and click at least two points.")

    def _on_pc_traversal(self) -> None:
        p = self.session.pc_traversal(self.pc.value(), n=self.n_frames.value())
        self.make_series(p.name, p.z)

    def _on_kmeans_series(self) -> None:
        self.session.k = self.k.value()
        p = self.session.kmeans_path(self.k.value())
        self.make_series(p.name, p.z)

    def _on_graph_path(self) -> None:
        if len(self.picks) < 2:
            show_error("Pick two points first (Pick tool): the graph path joins the last two.")
            return
        i, j = self.picks[-2:]
        s = self.session
        worker = create_worker(_checked, s.graph_path, i, j, add=False)

        def done(p):
            if isinstance(p, InputError):
                show_error(str(p))
                return
            s.add_path(p.name, p.z, p.indices, p.kind)
            self.make_series(p.name, p.z)

        worker.returned.connect(done)
        worker.errored.connect(lambda e: show_error(str(e)))
        worker.start()

    def make_series(self, name: str, z: np.ndarray) -> None:
        """Decode a map at each row of ``z`` in a worker; then show a 4D layer (slider, play)."""
        z = np.asarray(z, np.float32)
        w = self._series_worker = create_worker(_decode_series, self.session, z)
        w.yielded.connect(lambda p: self.info.setText(f"{name}: map {p[0]}/{p[1]}"))
        w.returned.connect(lambda vols: self._show_series(name, z, vols))
        w.errored.connect(lambda e: show_error(f"decoding {name} failed: {e}"))
        w.finished.connect(lambda: setattr(self, "_series_worker", None))
        w.start()

    def _show_series(self, name: str, z: np.ndarray, vols: np.ndarray) -> None:
        self.series[name] = (z, vols)
        apix = self.session.apix or 1.0
        lname = SERIES_PREFIX + name
        data, kw, _ = map_layer(vols, apix, lname, {"z": z.tolist()})
        kw["scale"] = (1.0, apix, apix, apix)
        kw["iso_threshold"] = iso_level(vols[0])
        if lname in self.viewer.layers:
            self.viewer.layers.remove(lname)
        self.viewer.add_image(data, **kw)
        self.viewer.dims.ndisplay = 3
        if self.series_box.findText(name) < 0:
            self.series_box.addItem(name)
        self.series_box.setCurrentText(name)
        self.info.setText(f"{name}: {len(z)} maps (slider or play on the first axis)")

    def export(self, name: str, outdir, overwrite: bool = False) -> list[Path] | None:
        """Write series ``name`` as MRC files + z_values.txt + ChimeraX script."""
        if name not in self.series:
            show_error(f"No map series named {name!r}; make one first.")
            return None
        z, vols = self.series[name]
        try:
            paths = export_series(vols, z, outdir, self.session.apix or 1.0, overwrite)
        except InputError as e:
            show_error(str(e))
            return None
        show_info(f"exported {len(paths)} maps to {outdir}")
        return paths

    def _on_export_clicked(self) -> None:
        name = self.series_box.currentText()
        if not name:
            show_error("No map series yet: draw a path or run a traversal first.")
            return
        out = QFileDialog.getExistingDirectory(self, "Export the series into a new folder")
        if out:
            self.export(name, out)

    def record_movie(self, path, series: str | None = None, frames: int = 36):
        """Start a rotating GIF of the map (or of series ``series``); returns the recorder
        (its ``finished`` signal carries the path) or None on bad input."""
        from .movie import MovieRecorder

        layer = None
        if series is not None:
            name = SERIES_PREFIX + series
            if name not in self.viewer.layers:
                show_error(f"No map series named {series!r} in the viewer.")
                return None
            layer = self.viewer.layers[name]
        elif MAP_LAYER not in self.viewer.layers:
            show_error("No map to film yet: click on the scatter first.")
            return None
        try:
            rec = MovieRecorder(self.viewer, path, frames=frames, series_layer=layer)
        except InputError as e:
            show_error(str(e))
            return None
        rec.finished.connect(lambda r: show_error(str(r)) if isinstance(r, InputError)
                             else show_info(f"movie written: {r}"))
        self._movie = rec
        rec.start()
        return rec

    def _on_movie_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save a rotating movie", "", "GIF (*.gif)")
        if path:
            name = self.series_box.currentText() or None
            series = name if name and (SERIES_PREFIX + name) in self.viewer.layers and \
                self.viewer.layers[SERIES_PREFIX + name].visible else None
            self.record_movie(path, series)

    # -- selection tools -----------------------------------------------------------------------
    def _on_lasso(self, polygon: np.ndarray, mode: str) -> None:
        if self.session is not None:
            self.session.select_polygon(self.session.space, polygon, mode)

    def _on_rect(self, c0, c1, mode: str) -> None:
        if self.session is not None:
            self.session.select_rect(self.session.space, c0, c1, mode)

    def _on_cluster(self, x: float, y: float, mode: str) -> None:
        """Select the k-means cluster of the particle nearest the click (k-means runs in a
        worker the first time: seconds on a million particles)."""
        s = self.session
        if s is None:
            return
        k = self.k.value()
        s.k = k
        idx = s.nearest(s.space, (x, y))
        worker = self._cluster_worker = create_worker(_checked, s.kmeans, k)

        def done(result):
            self._cluster_worker = None
            if isinstance(result, InputError):
                show_error(str(result))
                return
            s.select_clusters([int(result[0][idx])], k=k, mode=mode)

        worker.returned.connect(done)
        worker.start()

    # -- session events ------------------------------------------------------------------------
    def _on_session_selection(self, event=None) -> None:
        s = self.session
        self.scatter.set_selection(s.selection if s.n_selected else None)
        self._update_info()

    def _on_session_paths(self, event=None) -> None:
        s = self.session
        self.scatter.set_paths({n: s.path_xy(n, s.space) for n in s.paths})

    def _on_session_epoch(self, event=None) -> None:
        self._refresh_views()

    def _update_info(self) -> None:
        s = self.session
        if s is None:
            return
        ep = "final" if s.epoch is None else f"epoch {s.epoch}"
        self.info.setText(f"{s.n} particles, zdim {s.zdim}, {ep} · selected {s.n_selected} "
                          f"({100.0 * s.n_selected / max(s.n, 1):.1f}%)")


def _space_label(space: str) -> str:
    if space == "pca":
        return "PCA (PC1, PC2)"
    if space == "umap":
        return "UMAP"
    kind, pair = space.split(":")
    i, j = (int(v) for v in pair.split(","))
    return f"PCA (PC{i + 1}, PC{j + 1})" if kind == "pca" else f"z{i} vs z{j}"
