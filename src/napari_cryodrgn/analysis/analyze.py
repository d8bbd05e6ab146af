"""``napari-cryodrgn analyze``: cryoDRGN's analysis folder for one epoch, as an iterator of
progress events.

``WORKDIR/analyze.N/`` (``-o`` elsewhere) receives, in cryoDRGN's layout:

- ``umap.pkl`` (N x 2 float32; reused from an earlier analysis or the explorer's cache),
- ``pc1/ .. pcK/``: ``z_values.txt`` and ``vol_001..010.mrc`` along each principal component,
  from its 5th to its 95th percentile with the other PCs at the mean,
- ``kmeansK/``: ``labels.pkl``, ``centers.txt`` (z of the particle nearest each cluster mean),
  ``centers_ind.txt`` and a map per centre,
- ``graph_traversal/``: the shortest path between anchor particles through the
  nearest-neighbour graph (``z-path.txt``, ``z-path-indices.txt``) and maps at
  ``n_per_pc`` particles spread evenly along it (``z_values.txt``, ``z_values_indices.txt``),
- ``direct_traversal/``: the straight polyline through the anchors' latents, resampled at
  equal arc length (``z_values.txt``, maps),
- figures (PNG): ``learning_curve_epochN.png``, ``z_pca.png``, ``z_pca_hexbin.png``,
  ``umap.png``, ``umap_hexbin.png``, and in each folder the path or centres drawn on the PCA
  and UMAP views.

The anchors default to the particles nearest the two ends of the PC1 traversal among those in
the largest connected part of the neighbour graph (outliers often sit alone). Everything is
written into a hidden folder beside the target and renamed into place at the end; an existing
analysis is replaced only with ``overwrite``; stopping the iterator early leaves nothing.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import check_writable_dir, staged_dir
from ..io.mrc import write_mrc
from ..io.runfolder import Latents, RunFolder
from ..io.safepickle import save_pickle
from ..training.events import Progress
from . import figures
from .cluster import kmeans, nearest_points
from .embed import cached_umap, fit_pca, umap_available
from .runlog import read_losses
from .traverse import (
    graph_path,
    largest_component,
    neighbour_graph,
    pc_traversal,
    resample_polyline,
)

log = logging.getLogger(__name__)


@dataclass
class AnalysisSettings:
    ksample: int = 20
    pcs: int = 2
    n_per_pc: int = 10
    anchors: tuple[int, ...] | None = None
    max_neighbors: int = 10
    avg_neighbors: float = 5.0
    skip_umap: bool = False
    skip_vol: bool = False
    device: str = "auto"
    precision: str = "fp32"
    apix: float | None = None
    seed: int = 0


def run_analysis(workdir, epoch: int | None = None, ksample: int = 20, pcs: int = 2,
                 outdir=None, overwrite: bool = False, **kwargs) -> Iterator[Progress]:
    """Check the inputs now (InputError) and return an iterator of Progress events that writes
    the analysis folder.

    kwargs: n_per_pc (10), anchors (particle indices, default the PC1 ends), max_neighbors (10)
    and avg_neighbors (5) for the graph, skip_umap, skip_vol, device ('auto'), precision
    ('fp32'), apix (default: the run's pixel size), seed (k-means).
    Events: 'start', 'step' (a stage begins; ``message``), 'volume' (a map written), 'warning'
    (a stage skipped, e.g. anchors in unconnected parts of the graph), 'done'
    (``extra['outdir']``); ``done``/``total`` count work items, so ``fraction`` is the overall
    progress.
    """
    st = AnalysisSettings(ksample=ksample, pcs=pcs, **kwargs)
    folder = RunFolder.of(workdir)
    lat = folder.latents(epoch).explorable()
    n, zdim = lat.z.shape
    for name in ("ksample", "pcs", "n_per_pc"):
        v = getattr(st, name)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name} must be a positive whole number, not {v!r}")
    if st.pcs > zdim:
        raise InputError(f"--pc {st.pcs}: the latent space has only {zdim} principal components")
    if st.ksample > n:
        raise InputError(f"--ksample {st.ksample}: the run has only {n} particles")
    if st.anchors is not None:
        st.anchors = tuple(int(a) for a in st.anchors)
        if len(st.anchors) < 2 or any(not 0 <= a < n for a in st.anchors):
            raise InputError(f"--anchors needs two or more particle indices in 0..{n - 1}, "
                             f"got {list(st.anchors)}")
    out = Path(outdir) if outdir is not None else folder.analysis_dir(lat.epoch)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it, or -o to write "
                         "the analysis elsewhere")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; choose a folder name with -o")
    check_writable_dir(out.parent)
    decoder, apix = None, st.apix
    if not st.skip_vol:
        if apix is None:
            apix = folder.require_apix("the maps")
        decoder = _decoder(folder, lat, st)
    return _run(folder, lat, st, out, decoder, apix)


def _decoder(folder: RunFolder, lat: Latents, st: AnalysisSettings):
    from ..training.trainer import pick_device, pick_precision

    dev = pick_device(st.device)
    run = folder.model(lat.epoch, device=dev)
    return run.volume_decoder(precision=pick_precision(dev, st.precision), device=dev)


def _run(run: RunFolder, lat: Latents, st: AnalysisSettings, out: Path, decoder,
         apix) -> Iterator[Progress]:
    z = lat.z
    n, zdim = z.shape
    do_umap = not st.skip_umap and zdim > 2
    if do_umap and not umap_available() and not any(p.is_file() for p in
                                                     _umap_sources(run, lat, out)):
        log.warning("umap-learn is not installed: UMAP skipped (pip install "
                    "'napari-cryodrgn[umap]')")
        do_umap = False
    n_maps = 0 if decoder is None else st.pcs * st.n_per_pc + st.ksample + 2 * st.n_per_pc
    total = 7 + st.pcs + n_maps  # stages, maps and the final 'done'
    count = [0]

    def ev(kind, message="", advance=1, **extra):
        count[0] += advance
        return Progress(kind, epoch=1, n_epochs=1, done=min(count[0], total), total=total,
                        message=message, extra=extra)

    def maps(folder: Path, zs):
        np.savetxt(folder / "z_values.txt", zs)
        if decoder is None:
            return
        for i, zi in enumerate(zs):
            write_mrc(folder / f"vol_{i + 1:03d}.mrc", decoder(zi), apix)
            yield ev("volume", f"{folder.name}/vol_{i + 1:03d}.mrc")

    with staged_dir(out) as tmp:
        yield ev("start", f"analysing epoch {lat.epoch if lat.epoch is not None else 'final'}"
                 f" of {run.workdir}: {n} particles, zdim {zdim} -> {out}", advance=0)
        yield ev("step", "PCA")
        pca = fit_pca(z)
        pc = pca.transform(z)
        evr = pca.explained_variance_ratio
        pca_xy, pca_lab = pc[:, :2], (f"PC1 ({evr[0]:.2f})", f"PC2 ({evr[1]:.2f})")

        umap_xy = None
        yield ev("step", "UMAP" if do_umap else "UMAP skipped")
        if do_umap:
            umap_xy, src = cached_umap(z, _umap_sources(run, lat, out), seed=None)
            if src is not None:
                log.info("UMAP read from %s", src)
            save_pickle(tmp / "umap.pkl", umap_xy)

        def draw(folder: Path, zs, ind=None, connect=True):
            near = nearest_points(z, zs) if ind is None else np.asarray(ind)
            figures.path_plot(folder / "pca_traversal.png", pca_xy, pca.transform(zs)[:, :2],
                              *pca_lab, connect=connect)
            if umap_xy is not None:
                figures.path_plot(folder / "umap_traversal.png", umap_xy, umap_xy[near],
                                  "UMAP1", "UMAP2", connect=connect)

        pc_ends = None
        for i in range(1, st.pcs + 1):
            yield ev("step", f"PC{i} traversal")
            zs, _ = pc_traversal(pca, pc, i, st.n_per_pc)
            folder = tmp / f"pc{i}"
            folder.mkdir()
            yield from maps(folder, zs)
            draw(folder, zs)
            if i == 1:
                pc_ends = zs[[0, -1]]

        yield ev("step", f"k-means, K={st.ksample}")
        km = kmeans(z, st.ksample, seed=st.seed)
        folder = tmp / f"kmeans{st.ksample}"
        folder.mkdir()
        save_pickle(folder / "labels.pkl", km.labels.astype(np.int32))
        np.savetxt(folder / "centers.txt", km.centers)
        np.savetxt(folder / "centers_ind.txt", km.centers_ind, fmt="%d")
        yield from maps(folder, km.centers)
        figures.path_plot(folder / "z_pca.png", pca_xy, pca_xy[km.centers_ind], *pca_lab,
                          connect=False)
        if umap_xy is not None:
            figures.path_plot(folder / "umap.png", umap_xy, umap_xy[km.centers_ind], "UMAP1",
                              "UMAP2", connect=False)

        graph = neighbour_graph(z, st.max_neighbors, st.avg_neighbors)
        anchors = st.anchors
        if anchors is None:  # the PC1 ends, among the particles of the graph's main part
            main = largest_component(graph)
            anchors = tuple(int(main[i]) for i in nearest_points(z[main], pc_ends))
        yield ev("step", f"graph traversal between particles {list(anchors)}")
        folder = tmp / "graph_traversal"
        folder.mkdir()
        gp, why = None, "its anchors are the same particle"
        if len(set(anchors)) > 1:
            try:
                gp = graph_path(z, anchors, graph=graph)
            except InputError as e:
                why = str(e)
        if gp is None:
            shutil.rmtree(folder)
            yield ev("warning", f"graph traversal skipped: {why}", advance=st.n_per_pc
                     if decoder is not None else 0)
        else:
            np.savetxt(folder / "z-path.txt", gp.z)
            np.savetxt(folder / "z-path-indices.txt", gp.indices, fmt="%d")
            pick = _spread(gp.steps, st.n_per_pc)
            np.savetxt(folder / "z_values_indices.txt", gp.indices[pick], fmt="%d")
            yield from maps(folder, gp.z[pick])
            draw(folder, gp.z, gp.indices)

        yield ev("step", "direct traversal")
        folder = tmp / "direct_traversal"
        folder.mkdir()
        zs = resample_polyline(z[list(anchors)], st.n_per_pc)
        yield from maps(folder, zs)
        draw(folder, zs)

        yield ev("step", "figures")
        epoch = lat.epoch
        figures.learning_curve_plot(tmp / f"learning_curve_epoch{epoch or 'final'}.png",
                                    read_losses(run.run_log), epoch)
        figures.scatter_plot(tmp / "z_pca.png", pca_xy, *pca_lab)
        figures.density_plot(tmp / "z_pca_hexbin.png", pca_xy, *pca_lab)
        if umap_xy is not None:
            figures.scatter_plot(tmp / "umap.png", umap_xy, "UMAP1", "UMAP2")
            figures.density_plot(tmp / "umap_hexbin.png", umap_xy, "UMAP1", "UMAP2")
    count[0] = total - 1
    yield ev("done", f"wrote {out}", outdir=str(out))


def _umap_sources(run: RunFolder, lat: Latents, out: Path) -> list[Path]:
    return [out / "umap.pkl", *run.umap_cache_paths(lat.epoch)]


def _spread(steps: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` path vertices nearest to equal arc-length positions (first and last
    included; fewer when the path is shorter)."""
    s = np.cumsum(steps)
    if len(s) <= n or s[-1] == 0:
        return np.arange(len(s)) if len(s) <= n else np.linspace(0, len(s) - 1, n).astype(int)
    targets = np.linspace(0, s[-1], n)
    return np.unique(np.abs(s[None, :] - targets[:, None]).argmin(axis=1))
