"""Scripted particle filtering: selections from k-means clusters and lasso polygons, saved as
cryoDRGN index pickles, and subsets exported for RELION, cryoSPARC and new stacks.

The library side of ``napari-cryodrgn select`` and ``napari-cryodrgn export``.

A polygon file is plain text: one vertex per line, ``x y`` (spaces, tabs or a comma between),
in the coordinates of the view it was drawn on (UMAP1/UMAP2 for ``umap``, PC scores for
``pca``); blank lines and lines starting with ``#`` are ignored; the polygon is closed
implicitly and needs at least 3 vertices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


def read_polygon(path) -> np.ndarray:
    """Vertices (M, 2) float64 of a polygon file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Polygon file {path} does not exist; check the file name.")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"Cannot read polygon file {path} ({e})") from None
    verts = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        words = s.replace(",", " ").split()
        try:
            xy = [float(w) for w in words]
        except ValueError:
            xy = []
        if len(xy) != 2 or not np.all(np.isfinite(xy)):
            raise InputError(f"{path}, line {lineno}: expected two numbers 'x y', got {s!r}")
        verts.append(xy)
    poly = np.array(verts, np.float64).reshape(-1, 2)
    if len(poly) > 1 and np.array_equal(poly[0], poly[-1]):
        poly = poly[:-1]
    if len(poly) < 3:
        raise InputError(f"{path}: a polygon needs at least 3 vertices, found {len(poly)}")
    return poly


def write_polygon(path, polygon, space: str = "") -> None:
    """Write vertices (M, 2) as a polygon file (a comment line names the view)."""
    from ..io.atomic import atomic_write

    poly = np.asarray(polygon, np.float64).reshape(-1, 2)
    lines = [f"# lasso polygon, view {space}".rstrip(), "# x y"]
    lines += [f"{x:.9g} {y:.9g}" for x, y in poly]
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def analysis_kmeans_labels(workdir, epoch: int | None, k: int, n: int) -> Path | None:
    """``WORKDIR/analyze.N/kmeansK/labels.pkl`` (ours or cryoDRGN's) when it holds ``n``
    labels, else None."""
    from ..io.runfolder import RunFolder

    p = RunFolder.of(workdir).analysis_dir(epoch) / f"kmeans{k}" / "labels.pkl"
    if not p.is_file():
        return None
    from ..io.safepickle import load_pickle

    try:
        lab = np.asarray(load_pickle(p))
    except (InputError, ValueError) as e:
        log.warning("ignoring %s (%s)", p, e)
        return None
    return p if lab.shape == (n,) else None


@dataclass
class Island:
    """A group of points of a 2D view that lies apart from the rest: its ``mask``, the lasso
    ``polygon`` around it and ``isolation``, the gap to the nearest point of another island."""

    mask: np.ndarray
    polygon: np.ndarray
    isolation: float
    n_islands: int


def isolated_island(xy, eps_frac: float = 0.02, min_samples: int = 10,
                    min_frac: float = 0.05) -> Island:
    """The most isolated sizeable island of a 2D embedding and a lasso polygon around it.

    The rule, from the embedding alone: points within ``eps = eps_frac`` x the embedding's
    larger side of one another are linked into islands (DBSCAN, ``min_samples``; stray points
    belong to none); among the islands holding at least ``min_frac`` of the points, pick the
    one whose nearest point of any other island is farthest away (ties: the smaller island).
    The polygon is the island's convex hull pushed out by ``eps`` from its centre, as a lasso
    drawn just outside it."""
    return _pick_island(xy, None, eps_frac, min_samples, min_frac)


def worst_fit_island(xy, loss, eps_frac: float = 0.02, min_samples: int = 10,
                     min_frac: float = 0.05) -> Island:
    """The sizeable island of a 2D embedding whose particles the model explains worst: the
    islands as in :func:`isolated_island`, picking the one with the highest median of
    ``loss`` (N,), the per-particle reconstruction error the explorer colours by
    (:func:`.particle_loss.particle_losses`). What a user does to find junk: colour the UMAP
    by loss and lasso the island that lights up. Ties: the smaller island."""
    loss = np.asarray(loss, np.float64)
    if loss.shape != (len(xy),):
        raise InputError(f"expected one loss per point ({len(xy)}), got shape {loss.shape}")
    return _pick_island(xy, loss, eps_frac, min_samples, min_frac)


def _pick_island(xy, loss, eps_frac: float, min_samples: int, min_frac: float) -> Island:
    from scipy.spatial import ConvexHull, cKDTree
    from sklearn.cluster import DBSCAN

    xy = np.asarray(xy, np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 3:
        raise InputError(f"expected an (N, 2) embedding with N >= 3, got {xy.shape}")
    eps = eps_frac * float(np.ptp(xy, axis=0).max())
    if not eps > 0:
        raise InputError("the embedding has no extent: all points coincide")
    lab = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(xy)
    ids, counts = np.unique(lab[lab >= 0], return_counts=True)
    big = [(int(i), int(c)) for i, c in zip(ids, counts, strict=True) if c >= min_frac * len(xy)]
    if len(big) < 2:
        raise InputError(f"the embedding forms {len(big)} island(s) holding at least "
                         f"{min_frac:.0%} of the points; no separate group to lasso")
    best = None
    for i, c in big:
        others = xy[(lab >= 0) & (lab != i)]
        gap = float(cKDTree(xy[lab == i]).query(others, k=1)[0].min())
        key = (-gap if loss is None else -float(np.median(loss[lab == i])), c)
        if best is None or key < best[0]:
            best = (key, i, gap)
    _, island, gap = best
    pts = xy[lab == island]
    hull = pts[ConvexHull(pts).vertices]
    out = hull - pts.mean(axis=0)
    poly = hull + out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12) * eps
    return Island(lab == island, poly, gap, len(ids))


@dataclass
class SelectionResult:
    """What :func:`select_particles` chose: ``mask`` over the run's rows, the selected
    particles in original-stack numbering, the run's particles (``universe``) and notes on how
    each criterion was evaluated."""

    mask: np.ndarray
    original: np.ndarray
    universe: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    @property
    def n(self) -> int:
        return len(self.mask)


def select_particles(workdir, epoch: int | None = None, kmeans: int | None = None,
                     kmeans_labels=None, polygon=None, space: str = "umap",
                     invert: bool = False, saved: bool = False,
                     ind=None, kmeans_seed: int = 0,
                     kmeans_from: str = "explorer") -> SelectionResult:
    """Particles of a run chosen by k-means clusters and/or a lasso polygon.

    Criteria are combined as a union: the particles in any of ``kmeans_labels`` (clusters of
    k-means with ``kmeans`` clusters, default 20, and ``kmeans_seed``: the explorer's k-means,
    :meth:`Session.kmeans`, so the same K and seed mean the same particles as the Explore
    dock's Clusters tool; with ``kmeans_from='analyze'`` the labels of ``analyze.N/kmeansK``
    instead, which come from that analysis's own run), plus those inside ``polygon`` ((M, 2)
    vertices or a polygon file) on view ``space``, plus the explorer's saved selection when
    ``saved``. ``invert`` then keeps the rest. ``ind``: the run's index file, when the one its
    config.yaml records is not found (the selection is saved in original-stack numbering, which
    needs it). The UMAP is the one the explorer shows
    (``analyze.N/umap.pkl`` or the explorer's cache), computed and cached when neither exists.
    """
    from ..io.index import compose_index
    from ..session import Session

    if kmeans_labels is None and polygon is None and not saved:
        raise InputError("nothing to select: give --kmeans-labels, --polygon or --saved")
    if kmeans is not None and kmeans_labels is None:
        raise InputError("--kmeans needs --kmeans-labels (the clusters to select)")
    s = Session.open(workdir, epoch, ind=ind, check_weights=False, autosave=True)
    universe = s.particle_ind  # the original numbering first: never guessed
    notes = []
    mask = s.selection.mask.copy() if saved else np.zeros(s.n, bool)
    if saved:
        notes.append(f"explorer's saved selection: {int(mask.sum())} particles")
    if polygon is not None:
        poly = read_polygon(polygon) if isinstance(polygon, (str, Path)) else np.asarray(
            polygon, np.float64).reshape(-1, 2)
        if len(poly) < 3:
            raise InputError(f"a polygon needs at least 3 vertices, got {len(poly)}")
        emb = s.embedding(space)  # computes and caches a missing UMAP (autosave)
        from .select import points_in_polygon

        inside = points_in_polygon(emb, poly)
        notes.append(f"polygon on {space}: {int(inside.sum())} particles inside")
        mask |= inside
    if kmeans_labels is not None:
        k = 20 if kmeans is None else int(kmeans)
        want = np.atleast_1d(np.asarray(kmeans_labels, np.int64))
        if want.size == 0 or want.min() < 0 or want.max() >= k:
            raise InputError(f"--kmeans-labels must be cluster numbers in 0..{k - 1}, got "
                             f"{want.tolist()}")
        if kmeans_from == "analyze":
            p = analysis_kmeans_labels(s.workdir, s.epoch, k, s.n)
            if p is None:
                raise InputError(
                    f"--kmeans-from analyze: no analyze.{s.epoch}/kmeans{k}/labels.pkl with "
                    f"{s.n} labels in {s.workdir}; run `napari-cryodrgn analyze --epoch "
                    f"{s.epoch} --ksample {k}` first, or leave out --kmeans-from")
            from ..io.safepickle import load_pickle

            labels = np.asarray(load_pickle(p), np.int64)
            notes.append(f"k-means labels from {p}")
        elif kmeans_from == "explorer":
            if not 1 <= k <= s.n:
                raise InputError(f"k-means needs 1 to {s.n} clusters, not {k}")
            if int(kmeans_seed) < 0:
                raise InputError(f"--kmeans-seed {kmeans_seed}: expected an integer >= 0")
            labels = s.kmeans(k, seed=int(kmeans_seed))[0]  # the Explore dock's k-means
            notes.append(f"k-means (K={k}, seed {kmeans_seed}) computed on z, as the explorer "
                         "does")
        else:
            raise InputError(f"--kmeans-from {kmeans_from!r}: expected explorer or analyze")
        inclusters = np.isin(labels, want)
        notes.append(f"clusters {want.tolist()}: {int(inclusters.sum())} particles")
        mask |= inclusters
    if invert:
        mask = ~mask
    return SelectionResult(mask, np.sort(compose_index(universe, np.flatnonzero(mask))), universe,
                           notes)


def save_selected(result: SelectionResult, path, overwrite: bool = False):
    """Write ``path`` and ``<stem>_inverse.pkl`` (original numbering); refuses an empty
    selection and existing files unless ``overwrite``."""
    from ..io.index import inverse_path, save_selection_within

    path = Path(path)
    if result.count == 0:
        raise InputError("the selection is empty: no particle matched; nothing was written "
                         "(an empty selection cannot be exported or trained on)")
    for p in (path, inverse_path(path)):
        if p.exists() and not overwrite:
            raise InputError(f"{p} exists; choose another name or pass --overwrite")
    if path.suffix.lower() != ".pkl":
        raise InputError(f"{path}: index files are cryoDRGN pickles; use a .pkl name")
    return save_selection_within(path, result.original, result.universe)


# -- export ------------------------------------------------------------------------------------
@dataclass
class Exported:
    kind: str  # star, cs, mrcs
    path: Path
    source: Path
    count: int


def _count_of(kind: str, source: Path) -> int:
    from ..io.cs import read_cs
    from ..io.subset import star_particle_count

    return star_particle_count(source) if kind == "star" else len(read_cs(source))


def export_subsets(ind, *, workdir=None, star=None, cs=None, mrcs=None, source=None,
                   particles=None, datadir=None, apix: float | None = None,
                   overwrite: bool = False, progress=None) -> list[Exported]:
    """Write the particles of index file ``ind`` (original-stack numbering) as a .star, .cs
    and/or .mrcs subset.

    Sources: ``source`` (a .star or .cs listing every original particle) for the .star/.cs
    output of its own type; else, with ``workdir``, the run's particles file when it is that
    type, else the .star/.cs its poses or CTF came from. The .mrcs stack reads ``particles``,
    else the run's particles (with its ``datadir``), else ``source``. ``apix`` (default: the
    run's pixel size, else the stack header's) is the new stack's pixel size.
    """
    from ..io.index import load_index
    from ..io.particles import open_particles
    from ..io.runfolder import RunFolder
    from ..io.subset import (
        check_rows,
        write_cs_subset,
        write_mrcs_subset,
        write_star_subset,
    )

    outs = {k: Path(v) for k, v in (("star", star), ("cs", cs), ("mrcs", mrcs)) if v}
    if not outs:
        raise InputError("nothing to export: give --star, --cs and/or --mrcs")
    for kind, p in outs.items():
        if p.suffix.lower() != f".{kind}":
            raise InputError(f"--{kind} {p}: the file name must end in .{kind}")
        if p.exists() and not overwrite:
            raise InputError(f"{p} exists; choose another name or pass --overwrite")
        if not p.parent.is_dir():
            raise InputError(f"{p}: folder {p.parent} does not exist")
    run = RunFolder.of(workdir) if workdir is not None else None
    src = Path(source) if source else None
    if src is not None and src.suffix.lower() not in (".star", ".cs"):
        raise InputError(f"--source {src}: give the .star or .cs file that lists every "
                         "particle of the original stack")
    if src is not None and not src.is_file():
        raise InputError(f"--source {src} does not exist; check the file name")
    ind_path = Path(ind)
    sel = load_index(ind_path, None)
    if sel.size == 0:
        raise InputError(f"{ind_path} selects no particles; an empty selection cannot be "
                         "exported")
    plans = []  # (kind, source file or ParticleSource, particle count); all checked first
    for kind in ("star", "cs"):
        if kind not in outs:
            continue
        meta = src if src is not None and src.suffix.lower() == f".{kind}" else None
        if meta is None and run is not None:
            meta = run.metadata_source(f".{kind}")
        if meta is None:
            where = (f"the run in {run.workdir} was trained on {run.particles.name}"
                     if run is not None else "no training folder was given")
            raise InputError(f"--{kind}: no .{kind} file to take the particles from ({where});"
                             f" pass --source FILE.{kind}, the {kind} file of the original "
                             "particles")
        n = _count_of(kind, meta)
        if run is not None and meta != run.particles and n != run.n_original:
            raise InputError(f"{meta} lists {n} particles but the run's particles file "
                             f"{run.particles} holds {run.n_original}: is it the same dataset?")
        plans.append((kind, meta, n))
    if "mrcs" in outs:
        if particles is not None:
            stack = open_particles(particles, datadir=datadir)
        elif run is not None:
            stack = open_particles(run.particles, datadir=datadir or run.datadir)
        elif src is not None:
            stack = open_particles(src, datadir=datadir)
        else:
            raise InputError("--mrcs: give the training folder, --particles or --source to "
                             "read the images from")
        if run is not None and stack.n != run.n_original:
            raise InputError(f"{stack.path} holds {stack.n} particles but the run's particles "
                             f"file {run.particles} holds {run.n_original}: is it the same "
                             "dataset?")
        plans.append(("mrcs", stack, stack.n))
    for _kind, source_, n in plans:
        check_rows(sel, n, getattr(source_, "path", source_), ind_path)
    done = []
    for kind, source_, _ in plans:
        if kind == "mrcs":
            pix = apix
            if pix is None and run is not None and source_.D == _run_box(run):
                pix = run.apix  # the run's pixel size is that of its own box
            count = write_mrcs_subset(source_, sel, outs[kind], apix=pix, name=ind_path,
                                      progress=progress)
            done.append(Exported(kind, outs[kind], source_.path, count))
        else:
            writer = write_star_subset if kind == "star" else write_cs_subset
            count = writer(source_, sel, outs[kind], name=ind_path)
            done.append(Exported(kind, outs[kind], source_, count))
    return done


def _run_box(run) -> int | None:
    if run is None:
        return None
    D = (run.config.get("lattice_args") or {}).get("D")
    return int(D) - 1 if D else None
