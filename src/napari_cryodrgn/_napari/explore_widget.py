"""The Explore dock: a training run's latent space as a scatter; click for the map there.

The dock is a view of a :class:`~napari_cryodrgn.session.Session`: everything it shows follows
from the Session's signals (psygnal, connected with ``thread="main"`` so that changes made in a
worker or a notebook reach the GUI thread), and its controls only send requests to the
Session. Whatever takes time (embeddings and colourings, k-means, the epoch switch, map and
map-series decoding, graph paths, export) runs in background jobs
(:class:`~napari_cryodrgn._napari.jobs.LatestJob`: the newest request wins, errors are reported
once, long ones show progress in napari's activity dock).

A click decodes the map at that latent point (PCA: exact inverse; UMAP / z dims: the nearest
particle's z) into the one map layer (:mod:`.map_view`: an iso-surface, or a volume), which
updates in place. Every path of the Session (a drawn path, a PC or graph traversal, the k-means
centres) is shown on the scatter and decoded as a map series: its frames play in the same map
layer (:mod:`.series_player`: slider, Play, a grid of labelled thumbnails), and it exports to
MRC files with a ChimeraX script.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from psygnal.qt import start_emitting_from_queue
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..analysis.export import export_series, iso_level, series_iso_level
from ..analysis.surface import iso_surface
from ..errors import InputError
from ..session import Session
from .convergence import ConvergencePanel
from .jobs import LatestJob, leave_a_core_for_the_gui
from .map_view import MAP_LAYER, SURFACE, VOLUME, MapView, warm_up
from .notify import show_error, show_info
from .plot_theme import follow_theme
from .scatter import LatentScatter
from .series_player import SeriesPlayer, thumbnail
from .threshold import ThresholdPanel
from .widgets import PathEdit

log = logging.getLogger(__name__)
__all__ = ["MAP_LAYER", "ExploreWidget"]
QUEUE_MS = 15  # how often the GUI thread runs callbacks queued by other threads


def _view_key(session: Session) -> tuple:
    """What the scatter must show: (epoch, view, colouring, k of a k-means colouring)."""
    k = session.k if session.colour_by == "kmeans" else None
    return session.epoch, session.space, session.colour_by, k


def _view_data(session: Session, key: tuple):
    """What the scatter shows for ``key`` (:func:`_view_key`): computed in a worker (UMAP,
    density, k-means and per-particle losses take seconds to minutes on large runs). ``None``
    instead of the key when the session moved on while this ran (never drawn)."""
    _, space, colour, _ = key
    xy = session.embedding(space)
    values = session.colouring(colour, space)
    session.picker(space)  # the KD-tree for clicks, built here rather than on the first click
    return (key if _view_key(session) == key else None), xy, values


def _cluster_of(session: Session, k: int, particle: int, mode: str):
    """The k-means cluster (k clusters) of ``particle``: k-means runs here the first time."""
    return int(session.kmeans(k)[0][particle]), k, mode


@dataclass
class Shown:
    """A map ready for the map layer: the volume, its iso level, its surface (surface mode),
    and what it is (``meta``: latent z, run, epoch, label, particle, series and frame)."""

    vol: np.ndarray
    level: float
    mesh: object | None
    meta: dict


def _map_meta(session: Session, z, where: str, particle: int | None, epoch,
              series: str | None = None, frame: int | None = None) -> dict:
    """What a map on screen is (the map layer's metadata): its latent point, run and epoch,
    a label, the particle it belongs to, and the series and frame it is a map of."""
    return {"z": np.asarray(z, np.float32).tolist(), "run": str(session.workdir), "epoch": epoch,
            "where": where, "particle": particle, "series": series, "frame": frame}


def _surface(vol: np.ndarray, level: float | None, surface: bool):
    level = iso_level(vol) if level is None else float(level)
    return level, (iso_surface(vol, level) if surface else None)


def _decode(session: Session, z: np.ndarray, where: str, particle: int | None, level,
            surface: bool) -> Shown:
    """The map at ``z`` (level None: from the map itself), with its surface when asked."""
    meta = _map_meta(session, z, where, particle, session.epoch)
    vol = session.decode(z)
    level, mesh = _surface(vol, level, surface)
    return Shown(vol, level, mesh, meta)


def _resurface(shown: Shown, level, surface: bool) -> Shown:
    """``shown`` again at another level or in the other display mode."""
    level, mesh = _surface(shown.vol, level, surface)
    return Shown(shown.vol, level, mesh, shown.meta)


@dataclass
class SeriesMaps:
    """A decoded map series: latent points, maps, one iso level for all (the series' own
    unless the user set one), the frames' surfaces (None: not made yet), thumbnails, labels."""

    name: str
    z: np.ndarray
    vols: np.ndarray
    level: float
    auto_level: float
    meshes: list
    thumbs: list
    labels: list
    epoch: int | None
    indices: np.ndarray | None


def _landscape(session: Session, n_maps: int, clusters: int, rows=None):
    from ..analysis.landscape import NPZ, Landscape, run_landscape

    pool = session.n if rows is None else len(rows)
    events = run_landscape(session.workdir, epoch=session.epoch, sketch=min(n_maps, pool),
                           clusters=min(clusters, n_maps, pool), particles=rows,
                           downsample=min(128, session.D), skip_umap=True)
    out = None
    for ev in events:
        yield ev.done, ev.total
        if ev.kind == "done":
            out = Path(ev.extra["outdir"])
    return Landscape.load(out / NPZ, session.epoch)


def _match(session: Session, paths: list[Path], k: int, level, surface: bool):
    """Match the references; with the map of each one's best centre ready to show (its
    surface, when shown as surfaces) and each reference's own surface."""
    from ..analysis.match import load_references, match_references

    refs = load_references(paths, session)
    res = match_references(session, refs, k=k)
    best, ref_meshes = [], []
    for i, ref in enumerate(refs):
        c = res.best(i)
        meta = _map_meta(session, res.centres[c], f"best match to {ref.name}: cluster {c}",
                          int(res.centre_particles[c]), res.epoch)
        best.append(Shown(res.maps[c], *_surface(res.maps[c], level, surface), meta))
        ref_meshes.append(iso_surface(ref.volume, iso_level(ref.volume)))
    return res, best, ref_meshes


def _frame_labels(kind: str, n: int) -> list[str]:
    if kind == "kmeans":
        return [f"cluster {i}" for i in range(n)]  # the legend's and select's numbers
    return [f"map {i + 1}" for i in range(n)]


def _decode_series(session: Session, name: str, z: np.ndarray, indices, kind: str, level,
                   surface: bool):
    epoch = session.epoch
    vols = []
    for i, zi in enumerate(z):
        vols.append(session.decode(zi))
        yield i + 1, len(z)
    vols = np.stack(vols)
    auto = series_iso_level(vols)
    level = auto if level is None else float(level)
    meshes = [iso_surface(v, level) if surface else None for v in vols]
    return SeriesMaps(name, z, vols, level, auto, meshes, [thumbnail(v) for v in vols],
                      _frame_labels(kind, len(z)), epoch, indices)


class ExploreWidget(QWidget):
    """Dock widget over one :class:`Session` (``self.session``)."""

    def __init__(self, napari_viewer):
        super().__init__()
        leave_a_core_for_the_gui()
        self.viewer = napari_viewer
        self.session: Session | None = None
        self.series: dict[str, SeriesMaps] = {}
        self.map_view = MapView(napari_viewer)
        warm_up()
        self.picks: list[int] = []  # particle indices of the last picks (graph anchors)
        self._connections: list = []  # (signal, slot) of the current session
        self._drawn: tuple | None = None  # _view_key of what the scatter shows
        self.map_job = LatestJob("map", on_result=self._on_map)
        self.surface_job = LatestJob("map surface", on_result=self._on_map)
        self.view_job = LatestJob("latent view", on_result=self._draw_view,
                                  on_error=self._view_failed)
        self.epoch_job = LatestJob("epoch")
        self.path_job = LatestJob("path", on_result=self._add_path)  # k-means centres, graph
        self.cluster_job = LatestJob("k-means", on_result=self._select_cluster)
        self.export_job = LatestJob("export", on_result=self._on_exported)
        self.match_job = LatestJob("match reference maps", on_result=self._on_matched)
        self.landscape_job = LatestJob(
            "landscape", on_result=self._on_landscape,
            on_progress=lambda d, t: self.info.setText(f"landscape: step {d} of {t}"))
        self.series_jobs: dict[str, LatestJob] = {}
        start_emitting_from_queue(QUEUE_MS)
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
        self.colour_file_btn = QPushButton("Colour by file…")
        self.colour_file_btn.setToolTip(
            "Colour by per-particle values from a .npy/.txt/.csv/.pkl file (one number per "
            "particle of this run, in its order); files dropped on the dock work too")
        self.colour_file_btn.clicked.connect(self._on_colour_file_clicked)
        top.addWidget(self.colour_file_btn, 3, 2, 1, 2)
        self.match_btn = QPushButton("Match reference maps…")
        self.match_btn.setToolTip(
            "Where does a known structure live? Reference maps (.mrc, any box and voxel size, "
            "in the run's frame) against the maps at the k-means centres (k below): a colouring "
            "per reference, and the best match shown beside it")
        self.match_btn.clicked.connect(self._on_match_clicked)
        top.addWidget(self.match_btn, 3, 0, 1, 2)
        self.setAcceptDrops(True)

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

        self.show_as = QComboBox()
        self.show_as.addItem("Surface", SURFACE)
        self.show_as.addItem("Volume", VOLUME)
        self.show_as.setToolTip(
            "Surface: the map's iso-surface, a mesh (fast on any graphics, software OpenGL "
            "included). Volume: napari's ray-cast iso rendering (needs a GPU to be fluid).")
        self.show_as.currentIndexChanged.connect(lambda *_: self._redisplay())
        self.level = QDoubleSpinBox()
        self.level.setDecimals(6)
        self.level.setRange(-1e9, 1e9)
        self.level.setKeyboardTracking(False)
        self.level.setToolTip("Iso level of the surface (the map's density units)")
        self.level.setMinimumWidth(90)  # its range would otherwise widen the whole dock
        self.level.valueChanged.connect(self._on_level_edited)
        self.auto_threshold = QCheckBox("from each map")
        self.auto_threshold.setToolTip("Iso level from the map's own statistics (mean + 1.5 "
                                       "std; one level for a whole series)")
        self.auto_threshold.setChecked(True)
        self.auto_threshold.toggled.connect(self._on_auto_level)
        self.n_frames = QSpinBox()
        self.n_frames.setRange(2, 200)
        self.n_frames.setValue(10)
        self.pc = QSpinBox()
        self.pc.setRange(1, 1)
        self.k = QSpinBox()
        self.k.setRange(2, 500)
        self.k.setValue(20)
        self.k.valueChanged.connect(self._on_k_changed)
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
        self.series_box.currentTextChanged.connect(self._on_series_chosen)
        series.addWidget(self.series_box, 4, 0, 1, 2)
        series.addWidget(self.export_btn, 4, 2)
        series.addWidget(self.movie_btn, 5, 2)
        self.land_n = QSpinBox()
        self.land_n.setRange(2, 100_000)
        self.land_n.setValue(500)
        self.land_n.setToolTip("Maps sampled across the latent space (k-means centres)")
        self.land_m = QSpinBox()
        self.land_m.setRange(1, 1000)
        self.land_m.setValue(10)
        self.land_m.setToolTip("Clusters of the sampled maps")
        self.land_btn = QPushButton("Landscape")
        self.land_btn.setToolTip(
            "cryoDRGN's analyze_landscape: maps sampled at k-means centres, masked, volume "
            "PCA, clustered; adds the 'landscape' view and the 'landscape cluster' colouring "
            "(written to the run's landscape.N folder)")
        self.land_btn.clicked.connect(self._on_landscape_clicked)
        series.addWidget(QLabel("Landscape maps"), 7, 0)
        series.addWidget(self.land_n, 7, 1)
        series.addWidget(QLabel("clusters"), 8, 0)
        series.addWidget(self.land_m, 8, 1)
        self.land_selected = QCheckBox("selected")
        self.land_selected.setToolTip("Sample the maps from the selected particles only (e.g. "
                                      "the particles kept after removing junk)")
        series.addWidget(self.land_btn, 7, 2)
        series.addWidget(self.land_selected, 8, 2)
        self.player = SeriesPlayer()
        self.player.ready = lambda: not self.surface_job.busy
        self.player.frameChosen.connect(self.show_frame)
        series.addWidget(self.player, 6, 0, 1, 3)
        series_box = QWidget()
        series_box.setLayout(series)
        self.series_section = QCollapsible("Map series")
        self.series_section.addWidget(series_box)
        self.series_section.expand(animate=False)

        # the dock fits a 1080p screen beside the canvas: its sections collapse and the whole
        # scrolls, rather than forcing the window taller than the screen
        inner = QWidget()
        lay = QVBoxLayout(inner)
        lay.addLayout(top)
        lay.addLayout(tool_row)
        lay.addWidget(self.scatter)
        lay.addWidget(self.info)
        display_row = QGridLayout()
        display_row.addWidget(QLabel("Show maps as"), 0, 0)
        display_row.addWidget(self.show_as, 0, 1)
        display_row.addWidget(QLabel("Iso level"), 1, 0)
        display_row.addWidget(self.level, 1, 1)
        display_row.addWidget(self.auto_threshold, 1, 2)
        lay.addLayout(display_row)
        lay.addWidget(self.series_section)
        from .select_panel import SelectPanel

        self.selection_panel = SelectPanel(self)
        self.selection_panel.setTitle("")  # the section names it
        self.selection_section = QCollapsible("Selection")
        self.selection_section.addWidget(self.selection_panel)
        self.selection_section.expand(animate=False)
        lay.addWidget(self.selection_section)
        self.threshold = ThresholdPanel()
        self.threshold_section = QCollapsible("Select by value")
        self.threshold_section.addWidget(self.threshold)
        self.threshold_section.toggled.connect(self.threshold.set_active)
        lay.addWidget(self.threshold_section)
        self.convergence = ConvergencePanel()
        self.convergence_section = QCollapsible("Convergence: learning curve, other epochs")
        self.convergence_section.addWidget(self.convergence)
        self.convergence_section.toggled.connect(self.convergence.set_active)
        lay.addWidget(self.convergence_section)
        lay.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        follow_theme(self.viewer, self.scatter.plot, self.threshold.plot,
                     self.convergence.curve_plot, self.convergence.compare.plot,
                     on_change=lambda bg, fg: (self.scatter.set_foreground(fg),
                                               self.convergence.compare.set_foreground(fg)))
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        for w in (self.view, self.colour, self.colour_file_btn, self.match_btn, self.land_btn,
                  self.pc_btn, self.finish_btn, self.graph_btn, self.kmeans_btn,
                  self.clear_paths_btn, self.export_btn, self.movie_btn,
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
        """Explore ``session`` (shared with other docks; it may also be changed from Python)."""
        self._disconnect()
        for job in self._jobs():
            job.cancel()
        self.session = session
        self.series.clear()
        self.series_box.clear()
        self.player.set_series([], [])
        self.picks = []
        self._drawn = None
        ev = session.events
        for signal, slot in ((ev.epoch, self._on_epoch), (ev.space, self._on_space),
                             (ev.colour_by, self._on_colour_by), (ev.k, self._on_k),
                             (ev.colourings, self._fill_colours),
                             (session.selection.changed, self._on_selection),
                             (session.paths.events.added, self._on_path_added),
                             (session.paths.events.changed, self._on_path_changed),
                             (session.paths.events.removed, self._on_path_removed)):
            signal.connect(slot, thread="main")
            self._connections.append((signal, slot))
        self.run_edit.setText(str(session.workdir))
        self._fill_epochs()
        self.pc.setRange(1, max(1, session.zdim))
        self._set_quietly(self.k, session.k)
        self._fill_views()
        self._fill_colours()
        self._set_enabled(True)
        self.selection_panel.set_session(session)
        self.threshold.set_session(session)
        self.convergence.set_session(session)
        for name in list(session.paths):
            self._on_path_added(name)
        self._request_view()

    def _disconnect(self) -> None:
        for signal, slot in self._connections:
            signal.disconnect(slot)
        self._connections.clear()

    # -- following the session -------------------------------------------------------------------
    @staticmethod
    def _set_quietly(widget, value) -> None:
        widget.blockSignals(True)
        if isinstance(widget, QComboBox):
            widget.setCurrentIndex(max(0, widget.findData(value)))
        else:
            widget.setValue(value)
        widget.blockSignals(False)

    def _fill_epochs(self) -> None:
        s = self.session
        self.epoch.blockSignals(True)
        self.epoch.clear()
        for e in s.epochs:
            self.epoch.addItem(str(e), e)
        if s.epoch is None:
            self.epoch.addItem("final (z.pkl)", None)
        self.epoch.setCurrentIndex(self.epoch.findData(s.epoch))
        self.epoch.blockSignals(False)

    def _fill_views(self) -> None:
        s = self.session
        offered = s.spaces()
        spaces = ["pca"] + [f"pca:{i},{j}" for i, j in ((0, 2), (1, 2), (2, 3)) if j < s.zdim]
        spaces += [sp for sp in offered if sp in ("umap", "landscape")]
        spaces += [sp for sp in offered if sp.startswith("z:")]
        if s.space not in spaces:
            spaces.append(s.space)
        self.view.blockSignals(True)
        self.view.clear()
        for sp in spaces:
            self.view.addItem(_space_label(sp), sp)
        self.view.blockSignals(False)
        self._set_quietly(self.view, s.space)

    def _fill_colours(self) -> None:
        s = self.session
        if self.view.findData("landscape") < 0 and s.landscape() is not None:
            self._fill_views()  # a landscape analysis came with new colourings
        self.colour.blockSignals(True)
        self.colour.clear()
        for name in s.colouring_names():
            self.colour.addItem(name, name)
        self.colour.blockSignals(False)
        self._set_quietly(self.colour, s.colour_by)

    def _shown_map(self) -> dict | None:
        """The map layer's metadata when it shows this run's map, else None."""
        if self.session is None or MAP_LAYER not in self.viewer.layers:
            return None
        md = self.viewer.layers[MAP_LAYER].metadata
        return md if md.get("run") == str(self.session.workdir) else None

    def _place_marker(self) -> None:
        """The pick marker where the map on screen lies in the current view (its latent
        projected), or none when the map is of another epoch or run."""
        s, md = self.session, self._shown_map()
        if md is None or md.get("epoch") != s.epoch or self._drawn is None:
            self.scatter.set_marker(None)
            return
        particle = md.get("particle")
        if particle is None and self.picks:
            particle = self.picks[-1]  # the particle nearest the click (UMAP needs one)
        if particle is None and s.space == "umap":
            self.scatter.set_marker(None)  # no particle to place it by (no KD-tree built here)
            return
        self.scatter.set_marker(s.project(np.asarray([md["z"]], np.float32), indices=None
                                          if particle is None else [int(particle)])[0])

    def _on_epoch(self, epoch) -> None:
        self._fill_epochs()
        picked = self.picks[-1] if self.picks else None  # the particle nearest the last pick
        self.picks = []
        self.scatter.set_marker(None)
        md = self._shown_map()
        particle = None if md is None else md.get("particle")
        if particle is None and md is not None:
            particle = picked  # a map between particles: its nearest picked particle
        if particle is not None and md.get("epoch") != epoch and particle < self.session.n:
            # the same particle's map under the new epoch's model, not the old map
            self.picks = [int(particle)]
            self.request_map(self.session.z[int(particle)], f"particle {particle}",
                             particle=int(particle))
        self._request_view()

    def _on_space(self, space: str) -> None:
        if self.view.findData(space) < 0:
            self._fill_views()
        self._set_quietly(self.view, space)
        self._request_view()

    def _on_colour_by(self, name: str) -> None:
        self._set_quietly(self.colour, name)
        self._request_view()

    def _on_k(self, k: int) -> None:
        self._set_quietly(self.k, k)
        if self.session.colour_by == "kmeans":
            self._request_view()

    def _on_selection(self, count: int = 0, mode: str = "") -> None:
        s = self.session
        self.scatter.set_selection(s.selection.mask if s.n_selected else None)
        self._update_info()

    def _request_view(self) -> None:
        """Recompute what the scatter shows for the session's view and colouring."""
        s = self.session
        if _view_key(s) == self._drawn:
            return
        slow = []
        if s.space == "umap" and not s.umap_ready():
            slow.append("UMAP")
        if s.colour_by == "loss" and not s.loss_ready():
            slow.append("each particle's reconstruction error")
        if slow:
            self.info.setText(f"computing {' and '.join(slow)} in the background…")
        self.view_job.submit(_view_data, s, _view_key(s))

    def _draw_view(self, result) -> None:
        key, xy, values = result
        s = self.session
        if key is None or key != _view_key(s):
            self._request_view()  # the session moved on while this was computed
            return
        _, space, colour, _ = key
        self.scatter.set_points(xy, values, s.is_categorical(colour), s.axis_labels(space),
                                names=s.category_labels(colour), title=colour)
        self._drawn = key
        self._place_marker()  # the map's point in this view, not the old view's click
        self._on_selection()
        self._draw_paths()

    def _view_failed(self, message: str) -> None:
        show_error(message)
        s = self.session
        if self._drawn is not None and self._drawn[0] == s.epoch:  # back to what is shown
            s.space, s.colour_by = self._drawn[1:3]
        self._update_info()

    def _draw_paths(self) -> None:
        s = self.session
        if self._drawn is None:
            return
        self.scatter.set_paths({n: s.path_xy(n, s.space) for n in list(s.paths)})

    # -- requests from the controls --------------------------------------------------------------
    def _chosen_epoch(self):
        return self.epoch.currentData() if self.epoch.count() else None

    def _on_epoch_chosen(self) -> None:
        if self.session is not None:
            self.info.setText("loading the epoch's latents…")
            self.epoch_job.submit(self.session.set_epoch, self._chosen_epoch())

    def _on_view_changed(self, _text: str) -> None:
        if self.session is not None and self.view.currentData():
            self.session.space = self.view.currentData()

    def add_colouring_files(self, paths) -> list[str]:
        """Colourings from per-particle value files; the last one becomes the colouring. Bad
        files are notified (one line each) and skipped. Returns the names added."""
        if self.session is None:
            show_error("Open a run first: a colouring file holds one value per particle of it.")
            return []
        names = []
        for path in paths:
            try:
                names.append(self.session.add_colouring_file(path))
            except InputError as e:
                show_error(str(e))
        if names:
            self.session.colour_by = names[-1]
        return names

    def _on_colour_file_clicked(self) -> None:
        from ..io.values import SUFFIXES

        path, _ = QFileDialog.getOpenFileName(
            self, "Per-particle values to colour by", str(self.session.workdir),
            f"Per-particle values ({' '.join('*' + x for x in SUFFIXES)})")
        if path:
            self.add_colouring_files([path])

    @staticmethod
    def _dropped_files(event) -> list[str]:
        from ..io.values import SUFFIXES

        md = event.mimeData()
        if not md.hasUrls():
            return []
        return [u.toLocalFile() for u in md.urls()
                if u.isLocalFile() and Path(u.toLocalFile()).suffix.lower() in SUFFIXES]

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self.session is not None and self._dropped_files(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt override
        files = self._dropped_files(event)
        if files:
            event.acceptProposedAction()
            self.add_colouring_files(files)

    def _on_colour_changed(self, _text: str) -> None:
        if self.session is not None and self.colour.currentData():
            self.session.colour_by = self.colour.currentData()

    def _on_k_changed(self, k: int) -> None:
        if self.session is not None:
            try:
                self.session.k = k
            except InputError as e:
                show_error(str(e))

    # -- picking and maps ----------------------------------------------------------------------
    def _on_pick(self, x: float, y: float) -> None:
        s = self.session
        if s is None:
            return
        z, idx = s.latent_at(s.space, (x, y))
        if idx is None:
            idx = s.nearest(s.space, (x, y))
        self.picks = (self.picks + [int(idx)])[-2:]
        snapped = np.array_equal(np.asarray(z, np.float32), s.z[int(idx)])
        self.request_map(z, f"({x:.3g}, {y:.3g})", particle=int(idx) if snapped else None)

    def request_map(self, z, label: str = "", particle: int | None = None) -> int:
        """Ask for the map at ``z`` (the latent of ``particle`` when given); returns the request
        id. Requests made while a decode runs coalesce: only the newest is decoded next, and
        older results never replace newer."""
        self.player.stop()
        self.surface_job.cancel()  # a frame's surface on its way must not replace this map
        return self.map_job.submit(_decode, self.session, np.asarray(z, np.float32), label,
                                   particle, self._level_asked(), self.surface_mode)

    @property
    def surface_mode(self) -> bool:
        """Maps are shown as iso-surfaces (else as ray-cast volumes)."""
        return self.show_as.currentData() == SURFACE

    def _level_asked(self) -> float | None:
        """The user's iso level, or None: each map's (each series') own."""
        return None if self.auto_threshold.isChecked() else float(self.level.value())

    @property
    def map_request_done(self) -> bool:
        """True when the newest requested map is on screen."""
        return not self.map_job.busy and not self.surface_job.busy

    def _jobs(self) -> list[LatestJob]:
        return [self.map_job, self.surface_job, self.view_job, self.epoch_job, self.path_job,
                self.cluster_job, self.export_job, self.match_job, self.landscape_job,
                self.threshold.job, self.convergence.job, *self.series_jobs.values()]

    @property
    def idle(self) -> bool:
        """No background job of this dock runs or waits."""
        return not any(j.busy for j in self._jobs())

    def _on_map(self, shown: Shown) -> None:
        if shown.meta.get("epoch") != self.session.epoch or \
                shown.meta.get("run") != str(self.session.workdir):
            return  # decoded by the previous epoch's model; the switch asked for a new one
        name, frame = shown.meta.get("series"), shown.meta.get("frame")
        sm = self.series.get(name) if name is not None else None
        if sm is not None and shown.mesh is not None and shown.level == sm.level:
            sm.meshes[frame] = shown.mesh  # made for a frame: kept for the next time round
        self._put(shown)

    def _put(self, shown: Shown) -> None:
        """Put ``shown`` into the map layer (created on first use, 3D)."""
        self.map_view.show(shown.vol, shown.level, self.session.apix, shown.meta, shown.mesh)
        self.level.blockSignals(True)
        self.level.setValue(shown.level)
        self.level.blockSignals(False)
        self._place_marker()

    def shown_volume(self) -> np.ndarray | None:
        """The map on screen (the map layer's volume), or None."""
        return self.map_view.volume()

    def _current(self) -> Shown | None:
        """What the map layer shows, as this run's :class:`Shown`, or None."""
        md = self._shown_map()
        if md is None:
            return None
        return Shown(self.map_view.volume(), 0.0, None,
                     {k: md.get(k) for k in ("z", "run", "epoch", "where", "particle",
                                             "series", "frame")})

    def _redisplay(self) -> None:
        """The map on screen again, after a change of display mode or iso level (its surface
        made in a worker); series frames get new surfaces when next shown."""
        level = self._level_asked()
        for sm in self.series.values():
            sm.level = sm.auto_level if level is None else level
            sm.meshes = [None] * len(sm.meshes)
        cur = self._current()
        if cur is None:
            return
        sm = self.series.get(cur.meta.get("series"))
        if sm is not None:
            level = sm.level
        self.surface_job.submit(_resurface, cur, level, self.surface_mode)

    def _on_level_edited(self, value: float) -> None:
        self.auto_threshold.blockSignals(True)
        self.auto_threshold.setChecked(False)  # the user's level from now on
        self.auto_threshold.blockSignals(False)
        self._redisplay()

    def _on_auto_level(self, on: bool) -> None:
        self._redisplay()

    # -- paths and series ----------------------------------------------------------------------
    def _on_path_drawn(self, verts: np.ndarray) -> None:
        s = self.session
        if s is None:
            return
        try:
            s.polyline_path(s.space, verts, n=self.n_frames.value(), name="drawn path")
        except InputError as e:
            show_error(str(e))

    def _on_finish_clicked(self) -> None:
        if not self.scatter.finish_path():
            show_error("Draw a path first: choose Path and click at least two points.")

    def _on_pc_traversal(self) -> None:
        self.session.pc_traversal(self.pc.value(), n=self.n_frames.value())

    def _add_path(self, p) -> None:
        self.session.add_path(p.name, p.z, p.indices, p.kind)

    def _on_kmeans_series(self) -> None:
        s = self.session
        s.k = self.k.value()
        self.path_job.submit(s.kmeans_path, self.k.value(), add=False)

    def _on_graph_path(self) -> None:
        if len(self.picks) < 2:
            show_error("Pick two points first (Pick tool): the graph path joins the last two.")
            return
        i, j = self.picks[-2:]
        self.path_job.submit(self.session.graph_path, i, j, add=False)

    def _on_path_added(self, name: str, path=None) -> None:
        self._draw_paths()
        s = self.session
        p = s.paths.get(name)
        if p is None:
            return
        job = self.series_jobs.get(name)
        if job is None:
            job = self.series_jobs[name] = LatestJob(
                f"maps along {name}", on_result=self._show_series,
                on_progress=lambda d, t, n=name: self.info.setText(f"{n}: map {d}/{t}"))
        job.submit(_decode_series, s, name, np.asarray(p.z, np.float32), p.indices, p.kind,
                   self._level_asked(), self.surface_mode)

    def _on_path_changed(self, name: str, old=None, new=None) -> None:
        self._on_path_added(name)

    def _on_path_removed(self, name: str, path=None) -> None:
        self._draw_paths()
        job = self.series_jobs.pop(name, None)
        if job is not None:
            job.cancel()
        self.series.pop(name, None)
        i = self.series_box.findText(name)
        if i >= 0:
            self.series_box.removeItem(i)

    def make_series(self, name: str, z: np.ndarray) -> None:
        """A map series along latent points ``z``: added to the session as a path (its maps
        are decoded in the background and shown frame by frame in the map layer)."""
        self.session.add_path(name, z)

    def _show_series(self, sm: SeriesMaps) -> None:
        s = self.session
        p = s.paths.get(sm.name)
        if p is None or not np.array_equal(p.z, sm.z) or sm.epoch != s.epoch:
            return  # removed or changed meanwhile: its own job shows the new one
        self.series[sm.name] = sm
        if self.series_box.findText(sm.name) < 0:
            self.series_box.addItem(sm.name)
        if self.series_box.currentText() == sm.name:
            self._on_series_chosen(sm.name)
        else:
            self.series_box.setCurrentText(sm.name)  # shows it (_on_series_chosen)
        self.info.setText(f"{sm.name}: {len(sm.z)} maps ({_epoch_label(sm.epoch)}): "
                          "Play, the slider or a thumbnail shows them in the map layer")

    def _on_series_chosen(self, name: str) -> None:
        """The player shows series ``name``; its first map goes on screen."""
        sm = self.series.get(name)
        if sm is None:
            self.player.set_series([], [])
            return
        self.player.set_series(sm.thumbs, sm.labels)
        self.player.caption_prefix = f"{name}, {_epoch_label(sm.epoch)}: "
        self.show_frame(0)

    def show_frame(self, i: int, name: str | None = None) -> None:
        """Show map ``i`` of series ``name`` (default: the chosen one) in the map layer: at
        once when its surface is made, else once a worker has made it."""
        name = name or self.series_box.currentText()
        sm = self.series.get(name)
        if sm is None or not 0 <= i < len(sm.z):
            return
        if name == self.series_box.currentText():
            self.player.set_frame(i)
        self.map_job.cancel()  # a pick on its way must not replace this frame
        particle = None if sm.indices is None else int(sm.indices[i])
        meta = _map_meta(self.session, sm.z[i], f"{name}: {sm.labels[i]}", particle, sm.epoch,
                         series=name, frame=i)
        shown = Shown(sm.vols[i], sm.level, sm.meshes[i], meta)
        if self.surface_mode and shown.mesh is None:
            self.surface_job.submit(_resurface, shown, sm.level, True)
        else:
            self.surface_job.cancel()  # an older frame's surface must not replace this one
            self._put(Shown(shown.vol, shown.level, shown.mesh if self.surface_mode else None,
                            meta))

    def export(self, name: str, outdir, overwrite: bool = False) -> int | None:
        """Write series ``name`` as MRC files + z_values.txt + ChimeraX script in the
        background; returns the job's request id (None on bad input, notified)."""
        if name not in self.series:
            show_error(f"No map series named {name!r}; make one first.")
            return None
        sm = self.series[name]
        try:
            apix = self.session.folder.require_apix("the exported maps")
        except InputError as e:
            show_error(str(e))
            return None
        return self.export_job.submit(export_series, sm.vols, sm.z, outdir, apix, overwrite,
                                      level=sm.level)

    def _on_exported(self, paths) -> None:
        show_info(f"exported {len(paths)} maps to {Path(paths[0]).parent}")

    def _on_export_clicked(self) -> None:
        name = self.series_box.currentText()
        if not name:
            show_error("No map series yet: draw a path or run a traversal first.")
            return
        out = QFileDialog.getExistingDirectory(self, "Export the series into a new folder")
        if out:
            self.export(name, out)

    def record_movie(self, path, series: str | None = None, frames: int = 36):
        """Start a rotating GIF of the map (or of series ``series``, played while it turns);
        returns the recorder (its ``finished`` signal carries the path) or None on bad
        input."""
        from .movie import MovieRecorder

        show_frame, n_series = None, 0
        if series is not None:
            if series not in self.series:
                show_error(f"No map series named {series!r}.")
                return None
            n_series = len(self.series[series].z)
            show_frame = partial(self.show_frame, name=series)
        elif self.map_view.layer is None:
            show_error("No map to film yet: click on the scatter first.")
            return None
        try:
            rec = MovieRecorder(self.viewer, path, frames=frames, show_frame=show_frame,
                                n_series=n_series, ready=lambda: not self.surface_job.busy)
        except InputError as e:
            show_error(str(e))
            return None
        self.player.stop()
        rec.finished.connect(lambda r: show_error(str(r)) if isinstance(r, InputError)
                             else show_info(f"movie written: {r}"))
        self._movie = rec
        rec.start()
        return rec

    def _on_movie_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save a rotating movie", "", "GIF (*.gif)")
        if path:
            md = self._shown_map() or {}
            self.record_movie(path, md.get("series") if md.get("series") in self.series
                              else None)

    # -- the landscape -------------------------------------------------------------------------
    def compute_landscape(self, n_maps: int | None = None, clusters: int | None = None):
        """Run the landscape analysis of this epoch in the background (written to the run's
        landscape.N folder); returns the job's request id (None when refused, notified)."""
        s = self.session
        if s is None:
            show_error("Open a run first.")
            return None
        out = s.folder.analysis_dir(s.epoch, "landscape")
        if out.exists():
            show_error(f"{out} exists (a landscape of this epoch; its view is offered when it "
                       "was made for these particles). Delete it, or run "
                       "'napari-cryodrgn analyze_landscape --overwrite', to make it again.")
            return None
        n_maps = self.land_n.value() if n_maps is None else int(n_maps)
        clusters = self.land_m.value() if clusters is None else int(clusters)
        rows = None
        if self.land_selected.isChecked():
            if not s.n_selected:
                show_error("Nothing is selected: select the particles to sample the maps from "
                           "(or untick 'selected').")
                return None
            rows = s.selected_indices()
        self.info.setText(f"landscape: {n_maps} maps, {clusters} clusters…")
        return self.landscape_job.submit(_landscape, s, n_maps, clusters, rows)

    def _on_landscape_clicked(self) -> None:
        self.compute_landscape()

    def _on_landscape(self, land) -> None:
        s = self.session
        if len(land.labels) != s.n or land.epoch != s.epoch:
            return
        s.set_landscape(land)
        s.space = "landscape"
        s.colour_by = "landscape cluster"
        show_info(f"landscape: {land.n_maps} maps in {len(np.unique(land.states))} clusters "
                  f"({land.folder})")

    # -- reference maps ------------------------------------------------------------------------
    def match(self, paths, k: int | None = None) -> int | None:
        """Match reference maps (files) against the maps at the k-means centres in the
        background; returns the job's request id (None without a run)."""
        if self.session is None:
            show_error("Open a run first: references are matched against its latent space.")
            return None
        k = self.k.value() if k is None else int(k)
        self.session.k = k
        self.info.setText(f"matching {len(paths)} reference map(s) against {k} centre maps…")
        return self.match_job.submit(_match, self.session, [Path(p) for p in paths], k,
                                     self._level_asked(), self.surface_mode)

    def _on_match_clicked(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Reference maps to match",
                                                str(self.session.workdir),
                                                "Maps (*.mrc *.map)")
        if paths:
            self.match(paths)

    def _on_matched(self, matched) -> None:
        result, best, ref_meshes = matched
        s = self.session
        if result.epoch != s.epoch or len(result.labels) != s.n:
            return  # made for another epoch or run
        self.last_match = result
        names = s.add_match(result)
        s.colour_by = names[0]
        self._show_reference(result, best[0], ref_meshes[0], 0)
        summary = ", ".join(f"{r}: cluster {result.best(i)} (r={result.corr[i].max():.2f})"
                            for i, r in enumerate(result.refs))
        show_info(f"best matches: {summary}")

    def _show_reference(self, result, best: Shown, mesh, i: int) -> None:
        """The map of reference ``i``'s best k-means centre in the map layer, and the
        reference (its surface ``mesh``) beside it: a layer of its own, moved one box and a
        bit along x."""
        from .display import remove_layer
        from .layers import surface_layer

        s = self.session
        self.picks = [int(best.meta["particle"])]
        self._put(best)
        name = f"reference: {result.refs[i]}"
        if name in self.viewer.layers:
            remove_layer(self.viewer, name)
        data, kw, _ = surface_layer(result.ref_volumes[i], mesh, s.apix, name,
                                    {"reference": result.refs[i]})
        kw["translate"] = (0.0, 0.0, 1.15 * s.D * (s.apix or 1.0))
        kw["colormap"] = "cyan"
        self.viewer.add_surface(data, **kw)
        self.viewer.reset_view()

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
        self.cluster_job.submit(_cluster_of, s, k, s.nearest(s.space, (x, y)), mode)

    def _select_cluster(self, result) -> None:
        label, k, mode = result
        self.session.select_clusters([label], k=k, mode=mode)

    def _update_info(self) -> None:
        s = self.session
        if s is None:
            return
        ep = "final" if s.epoch is None else f"epoch {s.epoch}"
        self.info.setText(f"{s.n} particles, zdim {s.zdim}, {ep} · selected {s.n_selected} "
                          f"({100.0 * s.n_selected / max(s.n, 1):.1f}%)")

    def closeEvent(self, event):  # noqa: N802 - Qt override
        self._disconnect()
        super().closeEvent(event)


def _epoch_label(epoch) -> str:
    return "final epoch" if epoch is None else f"epoch {epoch}"


def _space_label(space: str) -> str:
    if space == "pca":
        return "PCA (PC1, PC2)"
    if space == "umap":
        return "UMAP"
    if space == "landscape":
        return "Landscape (volume PCA)"
    kind, pair = space.split(":")
    i, j = (int(v) for v in pair.split(","))
    return f"PCA (PC{i + 1}, PC{j + 1})" if kind == "pca" else f"z{i} vs z{j}"
