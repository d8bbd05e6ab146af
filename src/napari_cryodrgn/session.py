"""One explored run: latents, 2D views, colourings, selection, paths and maps, with events.

Qt-free: the napari docks share one :class:`Session` and react to its events; the same object
serves scripts and notebooks.

API
---
Opening and run facts::

    s = Session.open(workdir, epoch=None)   # InputError on a bad folder, epoch or weights
    s.workdir, s.epoch, s.epochs            # epoch None = the final z.pkl; epochs with latents
    s.z (N, zdim) float32 z_mu, s.z_logvar, s.n, s.zdim, s.D (image box), s.apix (or None),
    s.config, s.particle_ind (original-stack index of each row: the run's --ind, else 0..N-1)
    s.set_epoch(epoch)                      # reloads z; clears the paths; events.epoch

Views ("spaces"): ``"pca"`` (= ``"pca:0,1"``; ``"pca:i,j"`` any two PCs, 0-based),
``"umap"``, ``"z:i,j"`` (two latent dimensions, 0-based), and ``"landscape"`` when this epoch
has a landscape analysis (each particle at the volume-PCA position of its sampled map; a click
gives that sampled map; colouring "landscape cluster")::

    s.space = "umap"                        # the current view; events.space
    s.spaces()                              # names to offer (every "z:i,j" is accepted)
    s.umap_ready() -> bool                  # UMAP in memory or cached (else slow: a worker)
    s.embedding(space=None) -> (N, 2) float32     # cached; UMAP computed lazily (see below)
    s.axis_labels(space=None) -> (str, str)
    s.pca -> PCAFit (mean, components, explained_variance_ratio, transform, inverse)
    s.latent_at(space, xy, snap=False) -> (z (zdim,), particle index or None)
        # PCA: exact inverse (the other PCs at the mean); UMAP and z:i,j: the nearest
        # particle's z and index (snap=True does that for PCA too)
    s.nearest(space, xy, max_dist=None) -> particle index (-1: none within max_dist)
    s.picker(space=None) -> PointPicker     # the view's KD-tree (built once, ~0.2 s for 1M)
    s.project(z, space=None, indices=None) -> (M, 2)   # latent points drawn on a view
    s.path_xy(name, space=None) -> (M, 2)

UMAP is read from ``WORKDIR/analyze.N/umap.pkl`` (ours or cryoDRGN's) or the explorer's
cache ``WORKDIR/explore/umap.N.pkl`` when one holds N points, else computed with umap-learn
and cached there (minutes for 1M particles: call ``embedding("umap")`` in a worker).

Colourings (per-particle values, ``(N,)`` float32)::

    s.colour_by = "kmeans"                  # the current colouring; events.colour_by
    s.colouring_names() -> list[str]
    s.colouring(name, space=None) -> (N,) float32
    s.colourings(space=None) -> Mapping name -> (N,) array, computed on first access

Names: "density" (log of a smoothed 2D histogram of the view, looked up per particle),
"kmeans" (labels of ``s.kmeans()``), "z0".."z{zdim-1}", and when the run's dataset files are
found (paths in config.yaml): "defocus" (mean of DefocusU and DefocusV, Angstrom), "rot",
"tilt", "psi" (RELION Euler angles of the poses, degrees), and "loss" when the run's particle
files are there (each particle's reconstruction error at its pose and stored z, the trainer's
masked Hartley MSE: :mod:`.analysis.particle_loss`). "loss" is a pass of the decoder over every
particle the first time (cached in the session and in ``WORKDIR/explore/loss.{epoch}.npy``)::

    s.loss_ready() -> bool                  # computed already (memory or disk cache)?
    s.particle_loss(progress=None, device="auto") -> (N,) float32   # = s.colouring("loss");
                                            # progress(done, total) per batch: call it in a
                                            # worker when not loss_ready()

k-means::

    s.k = 20                                # the k of the "kmeans" colouring; events.k
    s.kmeans(k=None, seed=0) -> (labels (N,), centers_ind (k,))   # cached
    s.kmeans_result(k=None, seed=0) -> KMeansResult (labels, centers_ind, centers, means)

Selection (a :class:`..selection.Selection`: a bool mask over particles, undo; every change
emits ``s.selection.changed(count, mode)`` and is saved to ``WORKDIR/explore/selection.npy``,
restored by the next ``open``)::

    s.selection.mask -> (N,) bool (read-only view); s.n_selected
    s.select(mask_or_indices, mode="replace")   # modes: replace, add, subtract, intersect
    s.select_polygon(space, polygon, mode="replace") -> number selected
    s.select_rect(space, corner0, corner1, mode="replace")
    s.select_clusters(labels, k=None, mode="replace")
    s.invert(); s.clear(); s.undo() -> bool; s.can_undo
    s.selected_indices(original=False) -> int64   # rows, or original-stack indices
    s.save_selection(path) -> (path, inverse path)   # cryoDRGN index .pkl, original numbering

Paths (named latent point series; each a :class:`LatentPath` with ``z`` (M, zdim),
``indices`` (particle indices or None), ``kind``)::

    s.paths -> psygnal EventedDict name -> LatentPath (s.paths.events: added, changed, removed)
    s.add_path(name, z, indices=None, kind="custom") -> LatentPath
    s.remove_path(name); s.clear_paths()
    s.pc_traversal(pc=1, n=10, lo=5, hi=95, add=True)        # name "pc1"
    s.graph_path(i, j, *more, add=True)                       # name "graph i-j"
    s.neighbour_graph(max_neighbors=10, avg_neighbors=5)      # its graph (cached; slow >100k)
    s.straight_path(a, b, n=10, add=True)                     # particle indices or z vectors
    s.polyline_path(space, xy_points, n=10, add=True)         # vertices via latent_at
    s.kmeans_path(k=None, add=True)                           # name "kmeans20"

Maps::

    s.decoder(precision="auto", device="auto") -> VolumeDecoder   # built once, cached
    s.decode(z) -> (D, D, D) float32 map (voxel size s.apix)

Events (psygnal, napari's own event library; each fires only when its value changes):
``s.events.epoch(epoch)``, ``s.events.space(space)``, ``s.events.colour_by(name)``,
``s.events.k(k)``, ``s.events.colourings()`` (the colourings on offer changed), plus
``s.selection.changed(count, mode)`` and ``s.paths.events``. Signals are emitted in the thread
that made the change; a GUI connects with ``connect(callback, thread="main")`` so that changes
made in a worker (or a notebook's kernel thread) reach it in the GUI thread. The compute-only
calls (embedding, colouring, kmeans, graph paths with ``add=False``, decode) are safe in
worker threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psygnal import Signal, SignalGroup
from psygnal.containers import EventedDict

from .analysis import select as _select
from .analysis.cluster import KMeansResult
from .analysis.cluster import kmeans as _kmeans
from .analysis.embed import (
    PCAFit,
    cached_umap,
    fit_pca,
    point_density,
    read_umap,
    umap_available,
)
from .analysis.metadata import dataset_meta
from .analysis.particle_loss import cached_losses, particle_losses, particles_available
from .analysis.traverse import graph_path as _graph_path
from .analysis.traverse import neighbour_graph, pc_traversal, resample_polyline
from .errors import InputError
from .io.runfolder import Latents, RunFolder
from .selection import Selection

log = logging.getLogger(__name__)



# -- events -----------------------------------------------------------------------------------
class SessionEvents(SignalGroup):
    """The Session's own signals (psygnal); each fires only when its value changes. The
    selection (``Session.selection.changed``) and the paths (``Session.paths.events``: added,
    changed, removed) have theirs."""

    epoch = Signal(object)  # the epoch whose latents are loaded (int, or None: z.pkl)
    space = Signal(str)  # the view shown
    colour_by = Signal(str)  # the colouring shown
    k = Signal(int)  # the k of the "kmeans" colouring
    colourings = Signal()  # the colourings on offer changed (e.g. an index file located)


# -- paths ------------------------------------------------------------------------------------
@dataclass
class LatentPath:
    """A named series of latent points (a volume series): ``z`` (M, zdim); ``indices`` the
    particle of each point when the points are particles; ``kind`` where it came from."""

    name: str
    z: np.ndarray
    indices: np.ndarray | None = None
    kind: str = "custom"

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, key: str):  # p["z"], p["indices"] read like a dict
        return getattr(self, key)


def _parse_pair(space: str, prefix: str, limit: int) -> tuple[int, int]:
    try:
        i, j = (int(v) for v in space[len(prefix):].split(","))
    except ValueError:
        raise InputError(f"view {space!r}: write it as '{prefix}i,j' with two dimension "
                         "numbers") from None
    if not (0 <= i < limit and 0 <= j < limit) or i == j:
        raise InputError(f"view {space!r}: dimensions must be two different numbers in "
                         f"0..{limit - 1}")
    return i, j


class _Colourings(Mapping):
    def __init__(self, session: Session, space):
        self._s, self._space, self._names = session, space, session.colouring_names()

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        return self._s.colouring(name, self._space)

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


# -- the session ------------------------------------------------------------------------------
class Session:
    """See the module docstring for the API."""

    def __init__(self, folder: RunFolder, latents: Latents, run=None, autosave: bool = True):
        self.events = SessionEvents()
        self._folder = folder
        self._lock = threading.RLock()  # caches and paths
        self._decode_lock = threading.RLock()  # the model and its decoders
        self._run = run
        self._decoders: dict = {}
        self.autosave = autosave
        self._space = "pca"
        self._colour_by = "density"
        self._k = 20
        self.paths: EventedDict = EventedDict()  # name -> LatentPath
        self._meta: dict[str, np.ndarray] | None = None
        self._imported: dict[str, np.ndarray] = {}  # colourings a user loaded from files
        self._other_epochs: dict = {}  # epoch -> (N, 2) PCA positions, for comparisons
        self._set_latents(latents)
        self.selection = Selection(self.n, folder.state_dir / "selection.npy",
                                   autosave=autosave)

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, workdir, epoch: int | None = None, *, ind=None, check_weights: bool = True,
             autosave: bool = True) -> Session:
        """Open a training folder (ours or cryoDRGN's) at ``epoch`` (latest when None);
        ``ind`` gives the run's index file when the recorded one is not found.

        ``check_weights`` loads the epoch's weights now, so a config that does not match them
        fails here (InputError) rather than at the first decode."""
        folder = RunFolder.open(workdir, ind=ind)
        lat = folder.latents(epoch).explorable()
        run = folder.model(lat.epoch) if check_weights else None
        return cls(folder, lat, run, autosave=autosave)

    def _set_latents(self, lat: Latents) -> None:
        self._lat = lat
        self.z = lat.z
        self.z_logvar = lat.z_logvar
        self._cache: dict = {}

    def set_epoch(self, epoch: int | None) -> None:
        """Switch to another epoch's latents (same particles): caches and paths are reset,
        the selection is kept."""
        lat = self._folder.latents(epoch).explorable()
        if len(lat.z) != self.n:
            raise InputError(f"{lat.zfile}: {len(lat.z)} particles, but epoch "
                             f"{self.epoch} has {self.n}; is it the same run?")
        run = self._folder.model(lat.epoch) if self._run is not None else None
        before = self.epoch
        with self._decode_lock, self._lock:
            self._run, self._decoders = run, {}
            self._set_latents(lat)
        self.paths.clear()  # paths are points of the old latent space
        if self.epoch != before:
            self.events.epoch.emit(self.epoch)

    # -- run facts ----------------------------------------------------------------------------
    @property
    def folder(self) -> RunFolder:
        """The training folder: files, numbering, pixel size, caches."""
        return self._folder

    @property
    def workdir(self) -> Path:
        return self._folder.workdir

    @property
    def epoch(self) -> int | None:
        return self._lat.epoch

    @property
    def epochs(self) -> list[int]:
        return self._folder.z_epochs()

    @property
    def config(self) -> dict:
        return self._folder.config

    @property
    def n(self) -> int:
        return int(self.z.shape[0])

    @property
    def zdim(self) -> int:
        return int(self.z.shape[1])

    @property
    def D(self) -> int:
        return self._folder.D

    @property
    def apix(self) -> float | None:
        return self._folder.apix

    @property
    def particle_ind(self) -> np.ndarray:
        """Original-stack index of each particle (the run's index, else 0..N-1). InputError
        when the run was trained on a subset whose index file is not found (never guessed):
        see :meth:`locate_index`."""
        self._folder.check_rows(self.n, self._lat.zfile)
        return self._folder.particle_ind(n=self.n)

    def locate_index(self, path) -> None:
        """Give the run's index file (the recorded one is not found): checked against the
        latents, remembered in the run folder; colourings from the dataset are read again."""
        self._folder.locate_index(path, remember=False)
        self._folder.check_rows(self.n, self._lat.zfile)
        self._folder.locate_index(path, remember=self.autosave)
        self._meta = None
        self.events.colourings.emit()

    def __repr__(self) -> str:
        return (f"Session({str(self.workdir)!r}, epoch={self.epoch}, n={self.n}, "
                f"zdim={self.zdim})")

    # -- cache helper -------------------------------------------------------------------------
    def _cached(self, key, compute):
        with self._lock:
            cache = self._cache
            if key in cache:
                return cache[key]
        value = compute()  # outside the lock: a slow UMAP must not block the GUI thread
        with self._lock:
            if cache is self._cache:  # the epoch did not change meanwhile
                cache.setdefault(key, value)
                return cache[key]
        return value

    # -- views --------------------------------------------------------------------------------
    @property
    def space(self) -> str:
        return self._space

    @space.setter
    def space(self, space: str) -> None:
        self._check_space(space)
        if space != self._space:
            self._space = space
            self.events.space.emit(space)

    def spaces(self) -> list[str]:
        """View names to offer: pca, umap (when cached or umap-learn is installed), and z:i,j
        pairs (all for zdim <= 8, else neighbouring dimensions)."""
        out = ["pca"]
        if umap_available() or any(p.is_file() for p in
                                   self._folder.umap_cache_paths(self.epoch)):
            out.append("umap")
        if self.landscape() is not None:
            out.append("landscape")
        d = self.zdim
        pairs = ([(i, j) for i in range(d) for j in range(i + 1, d)] if d <= 8
                 else [(i, i + 1) for i in range(d - 1)])
        return out + [f"z:{i},{j}" for i, j in pairs]

    # -- the landscape analysis (maps sampled, volume PCA, clusters) -------------------------
    def landscape(self):
        """This epoch's landscape analysis (:class:`~.analysis.landscape.Landscape`, from
        ``landscape.N/landscape.npz`` or :meth:`set_landscape`), or None."""
        from .analysis.landscape import find_landscape

        return self._cached("landscape", lambda: find_landscape(self._folder, self.epoch,
                                                                self.n))

    def set_landscape(self, land) -> None:
        """Use ``land`` (a landscape of this epoch's particles): the "landscape" view and the
        "landscape cluster" colouring appear (colourings emitted)."""
        if land is not None and len(land.labels) != self.n:
            raise InputError(f"that landscape was made on {len(land.labels)} particles; this "
                             f"run has {self.n}")
        with self._lock:
            for key in ("landscape", "emb:landscape", "pick:landscape",
                        "density:landscape"):
                self._cache.pop(key, None)
            self._cache["landscape"] = land
        self.events.colourings.emit()

    def _check_space(self, space: str) -> str:
        if space in ("pca", "umap"):
            return space
        if space == "landscape":
            if self.landscape() is None:
                raise InputError("no landscape analysis for this epoch: run analyze_landscape "
                                 "(or the dock's Landscape button) first")
            return space
        if space.startswith("pca:"):
            _parse_pair(space, "pca:", self.zdim)
            return space
        if space.startswith("z:"):
            _parse_pair(space, "z:", self.zdim)
            return space
        raise InputError(f"unknown view {space!r}: use 'pca', 'pca:i,j', 'umap' or 'z:i,j'")

    def _pc_dims(self, space: str) -> tuple[int, int]:
        return (0, 1) if space == "pca" else _parse_pair(space, "pca:", self.zdim)

    @property
    def pca(self) -> PCAFit:
        return self._cached("pca", lambda: fit_pca(self.z))

    def _pc_scores(self) -> np.ndarray:
        return self._cached("pc_scores", lambda: self.pca.transform(self.z))

    def embedding(self, space: str | None = None) -> np.ndarray:
        """(N, 2) float32 coordinates of every particle in a view (cached)."""
        space = self._check_space(space or self._space)
        if space == "umap":
            return self._cached("emb:umap", self._umap)
        if space == "landscape":
            return self._cached("emb:landscape", lambda: np.ascontiguousarray(
                self.landscape().particle_coords()[:, :2], dtype=np.float32))
        if space.startswith("z:"):
            i, j = _parse_pair(space, "z:", self.zdim)
            return self._cached(f"emb:{space}", lambda: np.ascontiguousarray(self.z[:, [i, j]]))
        i, j = self._pc_dims(space)
        return self._cached(f"emb:pca:{i},{j}",
                            lambda: np.ascontiguousarray(self._pc_scores()[:, [i, j]]))

    def _umap(self) -> np.ndarray:
        paths = self._folder.umap_cache_paths(self.epoch)
        emb, src = cached_umap(self.z, paths, write_to=paths[-1] if self.autosave else None)
        if src is not None:
            log.info("UMAP read from %s", src)
        return emb

    def umap_ready(self) -> bool:
        """Whether the UMAP view is at hand (in memory or in a cache file for these latents);
        when False, ``embedding("umap")`` computes it (slow: call it from a worker)."""
        with self._lock:
            cache, epoch = self._cache, self.epoch
            if "emb:umap" in cache:
                return True
        for p in self._folder.umap_cache_paths(epoch):
            emb = read_umap(p, self.n)
            if emb is not None:
                with self._lock:
                    cache.setdefault("emb:umap", np.asarray(emb, np.float32))
                return True
        return False

    def axis_labels(self, space: str | None = None) -> tuple[str, str]:
        space = self._check_space(space or self._space)
        if space == "umap":
            return "UMAP1", "UMAP2"
        if space == "landscape":
            evr = self.landscape().evr
            return tuple(f"volume PC{d + 1} ({evr[d]:.2f})" for d in (0, 1))
        if space.startswith("z:"):
            i, j = _parse_pair(space, "z:", self.zdim)
            return f"z{i}", f"z{j}"
        evr = self.pca.explained_variance_ratio
        return tuple(f"PC{d + 1} ({evr[d]:.2f})" for d in self._pc_dims(space))

    def picker(self, space: str | None = None) -> _select.PointPicker:
        """KD-tree over a view's points, built once per view."""
        space = self._check_space(space or self._space)
        return self._cached(f"pick:{space}", lambda: _select.PointPicker(self.embedding(space)))

    def nearest(self, space: str | None, xy, max_dist: float | None = None) -> int:
        """Index of the particle nearest ``xy`` in a view (-1: none within ``max_dist``)."""
        return self.picker(space).nearest(xy, max_dist)

    def _z_picker(self) -> _select.PointPicker:
        return self._cached("pick:zspace", lambda: _select.PointPicker(self.z))

    def latent_at(self, space: str | None, xy, snap: bool = False
                  ) -> tuple[np.ndarray, int | None]:
        """Latent point under a 2D point of a view, and its particle (None for an exact PCA
        inverse)."""
        space = self._check_space(space or self._space)
        if space.startswith("pca") and not snap:
            return self.pca.inverse(np.reshape(xy, (1, 2)), dims=self._pc_dims(space))[0], None
        if space == "landscape":  # the nearest sampled map: its k-means centre
            land = self.landscape()
            j = int(np.argmin(((land.coords[:, :2] - np.reshape(xy, (1, 2))) ** 2).sum(1)))
            return land.centres_z[j].astype(np.float32), int(land.centres_ind[j])
        i = self.nearest(space, xy)
        return self.z[i].copy(), i

    def project(self, z, space: str | None = None, indices=None) -> np.ndarray:
        """(M, 2) positions of latent points ``z`` (M, zdim) in a view. Exact for PCA and z:i,j;
        for UMAP and the landscape the positions of ``indices`` when given, else of the
        nearest particles."""
        space = self._check_space(space or self._space)
        z = np.atleast_2d(np.asarray(z, np.float32))
        if space.startswith("z:"):
            i, j = _parse_pair(space, "z:", self.zdim)
            return z[:, [i, j]]
        if space.startswith("pca"):
            return self.pca.transform(z)[:, list(self._pc_dims(space))]
        if indices is None:
            _, indices = self._z_picker().query(z)
            indices = np.ravel(indices)
        return self.embedding(space)[np.asarray(indices, np.int64)]

    def path_xy(self, name: str, space: str | None = None) -> np.ndarray:
        p = self.paths[name]
        return self.project(p.z, space, p.indices)

    # -- colourings ---------------------------------------------------------------------------
    @property
    def colour_by(self) -> str:
        return self._colour_by

    @colour_by.setter
    def colour_by(self, name: str) -> None:
        if name not in self.colouring_names():
            raise InputError(f"no colouring {name!r}; choose one of {self.colouring_names()}")
        if name != self._colour_by:
            self._colour_by = name
            self.events.colour_by.emit(name)

    def colouring_names(self) -> list[str]:
        return (["density", "kmeans", "|z|"]
                + (["landscape cluster"] if self.landscape() is not None else [])
                + [f"z{i}" for i in range(self.zdim)]
                + list(self._dataset().get("colourings", {})) + list(self._imported)
                + (["loss"] if self._dataset().get("loss") else []))

    def is_categorical(self, name: str) -> bool:
        """Whether colouring ``name`` holds categories (k-means clusters, RELION classes,
        micrographs...) rather than a continuous value."""
        return name in ("kmeans", "landscape cluster") or name in self._dataset().get(
            "categorical", ())

    def category_labels(self, name: str) -> list[str] | None:
        """The names of a text column's categories (value i is ``labels[i]``), else None."""
        return self._dataset().get("labels", {}).get(name)

    def add_colouring(self, name: str, values, prefix: str = "file: ") -> str:
        """Colour by a per-particle array of this run's particles (one value per row of the
        latents, in their order); returns the name used (``prefix`` + NAME, "file: NAME" by
        default). Emits colourings."""
        v = np.asarray(values)
        if v.ndim == 2 and 1 in v.shape:
            v = v.ravel()
        if v.ndim != 1 or v.dtype.kind not in "biuf":
            raise InputError(f"{name}: a colouring needs one number per particle, got an "
                             f"array of shape {v.shape} and type {v.dtype}")
        if len(v) != self.n:
            raise InputError(f"{name} has {len(v)} values but the run has {self.n} particles "
                             "(one value per particle, in the run's order)")
        key = name if name.startswith(prefix) else f"{prefix}{name}"
        self._imported[key] = v.astype(np.float32)
        self.events.colourings.emit()
        return key

    def add_match(self, result) -> list[str]:
        """Colourings "match: REF" from a :class:`~.analysis.match.MatchResult` of this run:
        each particle's correlation (through its k-means centre) with each reference."""
        if len(result.labels) != self.n:
            raise InputError(f"that match was made on {len(result.labels)} particles; this run "
                             f"has {self.n}")
        return [self.add_colouring(r, result.per_particle(i), prefix="match: ")
                for i, r in enumerate(result.refs)]

    def add_colouring_file(self, path) -> str:
        """:meth:`add_colouring` from a .npy/.txt/.csv/.pkl file of per-particle values."""
        from .io.values import load_values

        return self.add_colouring(Path(path).name, load_values(path))

    def colouring(self, name: str, space: str | None = None) -> np.ndarray:
        """Per-particle values (N,) float32 for colouring the scatter."""
        if name == "density":
            space = self._check_space(space or self._space)
            return self._cached(f"density:{space}", lambda: point_density(self.embedding(space)))
        if name == "kmeans":
            return self.kmeans()[0].astype(np.float32)
        if name == "|z|":
            return np.linalg.norm(self.z, axis=1).astype(np.float32)
        if name == "landscape cluster" and self.landscape() is not None:
            return self.landscape().particle_states().astype(np.float32)
        if name.startswith("z") and name[1:].isdigit() and int(name[1:]) < self.zdim:
            return self.z[:, int(name[1:])].copy()
        extra = self._dataset().get("colourings", {})
        if name in extra:
            return extra[name]
        if name in self._imported:
            return self._imported[name]
        if name == "loss":
            return self.particle_loss()
        raise InputError(f"no colouring {name!r}; choose one of {self.colouring_names()}")

    def colourings(self, space: str | None = None) -> Mapping[str, np.ndarray]:
        """All colourings as a mapping whose values are computed on first access."""
        return _Colourings(self, space)

    def _dataset(self) -> dict:
        """Per-particle metadata from the run's dataset files, read once (missing: skipped)."""
        if self._meta is None:
            meta = dataset_meta(self._folder, self.n)
            meta["loss"] = particles_available(self._folder)
            self._meta = meta
        return self._meta

    def particle_loss(self, progress=None, device: str = "auto") -> np.ndarray:
        """Each particle's reconstruction error (N,) float32 at this epoch (the "loss"
        colouring); slow the first time, see :meth:`loss_ready`."""
        epoch = self.epoch
        return self._cached("loss", lambda: particle_losses(
            self._folder, epoch, device=device, progress=progress))

    def loss_ready(self) -> bool:
        """Whether the "loss" colouring is computed (in memory or in the disk cache)."""
        with self._lock:
            cache, epoch = self._cache, self.epoch
            if "loss" in cache:
                return True
        arr = cached_losses(self.workdir, epoch, self.n)
        if arr is None:
            return False
        with self._lock:
            cache.setdefault("loss", arr)
        return True

    # -- k-means ------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self._k

    @k.setter
    def k(self, k: int) -> None:
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n:
            raise InputError(f"k-means needs 1 to {self.n} clusters, not {k!r}")
        if int(k) != self._k:
            self._k = int(k)
            self.events.k.emit(self._k)

    def kmeans_result(self, k: int | None = None, seed: int = 0) -> KMeansResult:
        k = self._k if k is None else int(k)
        return self._cached(f"kmeans:{k}:{seed}", lambda: _kmeans(self.z, k, seed=seed))

    def kmeans(self, k: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(labels (N,), centers_ind (k,)): k-means on z, centres snapped to particles."""
        r = self.kmeans_result(k, seed)
        return r.labels, r.centers_ind

    # -- selection ----------------------------------------------------------------------------
    @property
    def n_selected(self) -> int:
        return self.selection.count

    @property
    def can_undo(self) -> bool:
        return self.selection.can_undo

    def select(self, sel, mode: str = "replace") -> int:
        """Change the selection with a bool mask (N,) or particle indices; returns the count."""
        return self.selection.set(sel, mode)

    def select_polygon(self, space: str | None, polygon, mode: str = "replace") -> int:
        """Select the particles inside a lasso polygon (M, 2) drawn on a view."""
        return self.select(_select.points_in_polygon(self.embedding(space), polygon), mode)

    # -- convergence: the learning curve and other epochs -------------------------------------
    def learning_curve(self) -> dict[int, float]:
        """{epoch: mean training loss} from the run's run.log (ours or cryoDRGN's)."""
        from .analysis.runlog import read_losses

        return read_losses(self._folder.run_log)

    def epoch_pca(self, epoch: int | None) -> np.ndarray:
        """(N, 2) PC1/PC2 of another epoch's latents of the same particles (the epoch's own
        PCA), to compare positions with this epoch (as cryoDRGN's analyze_convergence does);
        cached per epoch for the session."""
        with self._lock:
            hit = self._other_epochs.get(epoch)
        if hit is not None:
            return hit
        lat = self._folder.latents(epoch)
        if len(lat.z) != self.n:
            raise InputError(f"epoch {epoch} has {len(lat.z)} latents but epoch {self.epoch} "
                             f"has {self.n}: not the same particles")
        xy = fit_pca(lat.z).transform(lat.z)[:, :2].astype(np.float32)
        with self._lock:
            self._other_epochs[epoch] = xy
        return xy

    def select_polygon_at(self, xy: np.ndarray, polygon, mode: str = "replace") -> int:
        """Select the particles whose positions ``xy`` (N, 2; e.g. :meth:`epoch_pca`) lie
        inside a lasso polygon."""
        return self.select(_select.points_in_polygon(np.asarray(xy), polygon), mode)

    def select_range(self, name: str, lo: float, hi: float, mode: str = "replace") -> int:
        """Select the particles whose colouring ``name`` (per-particle loss, a z coordinate,
        |z|, defocus, a .star column, an imported file...) lies in [lo, hi]; NaN values are
        never selected. ``mode`` combines it with the selection (add, subtract, intersect)."""
        if not lo <= hi:
            raise InputError(f"range {lo:g} to {hi:g} of {name}: the low end must not exceed "
                             "the high end")
        v = self.colouring(name)
        return self.selection.set((v >= lo) & (v <= hi), mode)

    def select_rect(self, space: str | None, corner0, corner1, mode: str = "replace") -> int:
        return self.select(_select.points_in_rect(self.embedding(space), corner0, corner1), mode)

    def select_clusters(self, labels, k: int | None = None, mode: str = "replace") -> int:
        """Select the particles of the given k-means clusters."""
        lab = self.kmeans(k)[0]
        return self.select(np.isin(lab, np.atleast_1d(labels)), mode)

    def invert(self) -> int:
        self.selection.invert()
        return self.n_selected

    def clear(self) -> None:
        self.selection.clear()

    def undo(self) -> bool:
        """Go back to the selection before the last change; False when there is none."""
        return self.selection.undo()

    def selected_indices(self, original: bool = False) -> np.ndarray:
        """Selected rows (0-based, int64), or their original-stack indices."""
        rows = self.selection.indices()
        return self.particle_ind[rows] if original else rows

    def save_selection(self, path) -> tuple[Path, Path]:
        """Write cryoDRGN index pickles: ``path`` (selected) and ``<stem>_inverse.pkl`` (the
        rest of this run's particles), both in original-stack numbering."""
        from .io.index import inverse_path, save_index

        path = Path(path)
        ind = self.particle_ind
        mask = self.selection.mask
        save_index(path, np.sort(ind[mask]))
        inv = inverse_path(path)
        save_index(inv, np.sort(ind[~mask]))
        return path, inv

    # -- paths --------------------------------------------------------------------------------
    def add_path(self, name: str, z, indices=None, kind: str = "custom") -> LatentPath:
        """Add (or replace) a named path of latent points."""
        z = np.atleast_2d(np.asarray(z, np.float32))
        if z.shape[1] != self.zdim or len(z) == 0:
            raise InputError(f"path {name!r}: expected M x {self.zdim} latent points, got "
                             f"{z.shape}")
        ind = None if indices is None else np.asarray(indices, np.int64)
        if ind is not None and ind.shape != (len(z),):
            raise InputError(f"path {name!r}: {len(z)} points but {ind.shape} indices")
        p = LatentPath(str(name), z, ind, kind)
        self.paths[p.name] = p  # paths.events: added, or changed when the name existed
        return p

    def remove_path(self, name: str) -> None:
        self.paths.pop(name, None)

    def clear_paths(self) -> None:
        self.paths.clear()

    def _finish(self, name, z, indices, kind, add: bool) -> LatentPath:
        if add:
            return self.add_path(name, z, indices, kind)
        return LatentPath(name, np.asarray(z, np.float32), indices, kind)

    def pc_traversal(self, pc: int = 1, n: int = 10, lo: float = 5.0, hi: float = 95.0,
                     add: bool = True, name: str | None = None) -> LatentPath:
        """``n`` points along PC ``pc`` (1-based) from its ``lo`` to its ``hi`` percentile,
        the other PCs at the mean (cryoDRGN's pcN/z_values.txt)."""
        z, _ = pc_traversal(self.pca, self._pc_scores(), pc, n, lo, hi)
        return self._finish(name or f"pc{pc}", z, None, "pc", add)

    def neighbour_graph(self, max_neighbors: int = 10, avg_neighbors: float = 5.0):
        """The latent nearest-neighbour graph of the graph traversal (cached)."""
        return self._cached(f"graph:{max_neighbors}:{avg_neighbors}",
                            lambda: neighbour_graph(self.z, max_neighbors, avg_neighbors))

    def graph_path(self, i: int, j: int, *more: int, add: bool = True, name: str | None = None,
                   max_neighbors: int = 10, avg_neighbors: float = 5.0) -> LatentPath:
        """Shortest path between particles (through ``more`` too) in the neighbour graph; its
        points are particles (``indices``)."""
        anchors = [i, j, *more]
        g = self.neighbour_graph(max_neighbors, avg_neighbors)
        gp = _graph_path(self.z, anchors, graph=g)
        return self._finish(name or "graph " + "-".join(map(str, anchors)), gp.z, gp.indices,
                            "graph", add)

    def _as_z(self, a) -> np.ndarray:
        arr = np.asarray(a)
        if arr.ndim == 0:
            if not 0 <= int(arr) < self.n:
                raise InputError(f"particle {int(arr)} is not in 0..{self.n - 1}")
            return self.z[int(arr)]
        if arr.shape != (self.zdim,):
            raise InputError(f"expected a particle index or {self.zdim} latent values, got "
                             f"shape {arr.shape}")
        return arr.astype(np.float32)

    def straight_path(self, a, b, n: int = 10, add: bool = True,
                      name: str | None = None) -> LatentPath:
        """``n`` evenly spaced points from ``a`` to ``b`` (particle indices or z vectors)."""
        z = resample_polyline(np.stack([self._as_z(a), self._as_z(b)]), n)
        return self._finish(name or "line", z, None, "straight", add)

    def polyline_path(self, space: str | None, xy_points, n: int = 10, add: bool = True,
                      name: str | None = None) -> LatentPath:
        """``n`` points at equal arc length in z along the polyline whose vertices are the
        latent points under ``xy_points`` (M, 2) of a view (see :meth:`latent_at`)."""
        verts = np.stack([self.latent_at(space, xy)[0] for xy in np.atleast_2d(xy_points)])
        return self._finish(name or "polyline", resample_polyline(verts, n), None, "polyline",
                            add)

    def kmeans_path(self, k: int | None = None, add: bool = True,
                    name: str | None = None) -> LatentPath:
        """The k-means centres (particles) as a series, in cluster order."""
        r = self.kmeans_result(k)
        return self._finish(name or f"kmeans{r.k}", r.centers, r.centers_ind, "kmeans", add)

    # -- maps ---------------------------------------------------------------------------------
    def decoder(self, precision: str = "auto", device: str = "auto"):
        """A VolumeDecoder for this epoch (built once per precision and device)."""
        from .training.trainer import pick_device, pick_precision

        dev = pick_device(device)
        prec = pick_precision(dev, precision)
        key = (str(dev), prec)
        with self._decode_lock:
            if key not in self._decoders:
                if self._run is None:
                    self._run = self._folder.model(self.epoch)
                run = self._run
                if next(run.model.parameters()).device != dev:
                    run.model.to(dev)
                self._decoders[key] = run.volume_decoder(precision=prec, device=dev)
            return self._decoders[key]

    def decode(self, z, precision: str = "auto", device: str = "auto") -> np.ndarray:
        """The (D, D, D) float32 map at latent point ``z`` (voxel size ``apix``)."""
        z = np.asarray(z, np.float32).reshape(-1)
        if z.shape != (self.zdim,):
            raise InputError(f"expected {self.zdim} latent values, got {z.shape[0]}")
        dec = self.decoder(precision, device)
        with self._decode_lock:  # one decode at a time: they share the decoder's caches
            return dec(z)
