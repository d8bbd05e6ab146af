"""``napari-cryodrgn analyze_landscape``: the conformational landscape from the maps themselves
(cryoDRGN's ``analyze_landscape``), as an iterator of progress events.

Maps are sampled across the latent space (the maps at ``N`` k-means centres of z), reduced
to ``d`` voxels, masked (the mean map thresholded and dilated, or a given mask), reduced by PCA
in volume space, clustered (agglomerative, ``M`` clusters) and mapped back to the particles
(each particle takes the cluster of its k-means centre). With a particle subset (``--ind``: the
particles kept after junk filtering, say) the maps are sampled from those particles only, and
every other particle is placed at its nearest sampled map (nearest centre in z).
``WORKDIR/landscape.N/`` (``-o`` elsewhere) receives, in cryoDRGN's layout (numbers 1-based as
cryoDRGN writes them):

- ``kmeansN/``: ``vol_001.mrc ..`` (the sampled maps at ``d``), ``vol_mean.mrc``,
  ``labels.pkl`` (each particle's map, 1..N, for every particle of the run),
  ``centers.txt`` / ``z_values.txt`` (latent points), ``centers_ind.txt`` (the particle at
  each centre, run-local index);
- ``mask.mrc``; ``vol_pca_N.pkl`` (N x pc-dim volume-PCA coordinates of the maps) and
  ``vol_pca_obj.pkl`` (the scikit-learn PCA);
- ``vol_pcs/pc1..3/001..010.mrc``: maps along the first volume PCs (mean map plus the PC
  from its 5th to 95th percentile, inside the mask);
- ``sketch_clustering_LINKAGE_M/``: ``state_labels.pkl`` (each map's cluster, 1..M),
  ``state_00m_mean.mrc`` / ``_std.mrc``, ``state_00m_particle_ind.pkl`` (run-local indices
  of the cluster's particles, within the subset when one is given) and ``state_00m/`` (its
  maps, hard-linked);
- ``umap.pkl`` (when one exists for the epoch or umap-learn is installed), a figure, and
  ``landscape.npz``: what the explorer reads back (no pickled objects).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_write, check_writable_dir, staged_dir
from ..io.mrc import read_mrc, write_mrc
from ..io.runfolder import RunFolder
from ..io.safepickle import save_pickle
from ..training.events import Progress
from .cluster import kmeans, nearest_points

log = logging.getLogger(__name__)
NPZ = "landscape.npz"
VOL_PCS = 3  # volume PCs written as map series


@dataclass
class LandscapeSettings:
    sketch: int = 1000  # N: maps sampled (k-means centres)
    downsample: int | None = 128  # d: box of the sampled maps (None or >= D: the run's box)
    mask: str | os.PathLike = "auto"
    thresh: float | None = None  # auto mask: density threshold (default half the mean's max)
    dilate: float = 5.0  # auto mask: dilation in Angstrom
    pc_dim: int = 20
    clusters: int = 10  # M
    linkage: str = "average"
    n_per_pc: int = 10
    seed: int = 0
    skip_umap: bool = False
    device: str = "auto"
    precision: str = "auto"
    apix: float | None = None


# -- the steps (pure functions, tested on their own) -----------------------------------------
def auto_mask(mean_vol: np.ndarray, apix: float, thresh: float | None = None,
              dilate: float = 5.0) -> np.ndarray:
    """Voxels of the mean map above ``thresh`` (default half its maximum), dilated by
    ``dilate`` Angstrom (a ball)."""
    from scipy.ndimage import binary_dilation

    v = np.asarray(mean_vol, np.float32)
    t = 0.5 * float(v.max()) if thresh is None else float(thresh)
    mask = v > t
    if not mask.any():
        raise InputError(f"the mask threshold {t:.4g} is above every voxel of the mean map "
                         f"(max {float(v.max()):.4g}); pass a lower --thresh")
    r = int(round(dilate / apix))
    if r > 0:
        g = np.arange(-r, r + 1)
        ball = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= r * r
        mask = binary_dilation(mask, structure=ball)
    return mask


def cluster_maps(coords: np.ndarray, m: int, linkage: str = "average") -> np.ndarray:
    """Agglomerative clusters of the maps' volume-PCA coordinates: labels 1..m."""
    from sklearn.cluster import AgglomerativeClustering

    if linkage not in ("average", "ward", "complete", "single"):
        raise InputError(f"--linkage {linkage!r}: choose average, ward, complete or single")
    if not 1 <= m <= len(coords):
        raise InputError(f"-M {m}: needs between 1 and the number of maps ({len(coords)})")
    if m == 1:
        return np.ones(len(coords), np.int64)
    lab = AgglomerativeClustering(n_clusters=m, linkage=linkage).fit_predict(coords)
    return lab.astype(np.int64) + 1


@dataclass
class Landscape:
    """A landscape analysis as the explorer uses it (``landscape.npz``)."""

    labels: np.ndarray  # (n,) each particle's sampled map, 0-based
    centres_z: np.ndarray  # (N, zdim)
    centres_ind: np.ndarray  # (N,)
    coords: np.ndarray  # (N, pc) volume-PCA coordinates of the maps
    states: np.ndarray  # (N,) cluster of each map, 1..M
    evr: np.ndarray  # (pc,) explained variance ratio
    included: np.ndarray | None = None  # (n,) bool: the particles the maps were sampled from
    folder: Path | None = None
    epoch: int | None = None  # the epoch it was made for, when known

    @property
    def n_maps(self) -> int:
        return len(self.coords)

    def particle_coords(self) -> np.ndarray:
        return self.coords[self.labels]

    def particle_states(self) -> np.ndarray:
        return self.states[self.labels]

    def save(self, path) -> None:
        included = (np.ones(len(self.labels), bool) if self.included is None
                    else self.included)
        with atomic_write(path) as f:
            np.savez(f, labels=self.labels, centres_z=self.centres_z,
                     centres_ind=self.centres_ind, coords=self.coords, states=self.states,
                     evr=self.evr, included=included)

    @classmethod
    def load(cls, path, epoch: int | None = None) -> Landscape:
        """Read ``landscape.npz`` (``epoch``: the one it was made for, when known)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                return cls(f["labels"], f["centres_z"], f["centres_ind"], f["coords"],
                           f["states"], f["evr"], f["included"], path.parent, epoch)
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"{path} is not a readable landscape analysis ({e})") from None


def find_landscape(folder: RunFolder, epoch: int | None, n: int) -> Landscape | None:
    """The landscape analysis of ``epoch`` in its default folder, when there is one for
    ``n`` particles."""
    path = folder.analysis_dir(epoch, "landscape") / NPZ
    if not path.is_file():
        return None
    try:
        land = Landscape.load(path, epoch)
    except InputError as e:
        log.warning("%s", e)
        return None
    return land if len(land.labels) == n else None


# -- the command ---------------------------------------------------------------------------------
def subset_rows(folder: RunFolder, ind_file) -> np.ndarray:
    """Run rows of the particles in index file ``ind_file`` (original-stack numbering, as
    ``select`` and the explorer's *Save index* write it)."""
    from ..io.index import load_index

    sel = load_index(ind_file, None)
    rows = np.flatnonzero(np.isin(folder.particle_ind(), sel))
    if len(rows) == 0:
        raise InputError(f"{ind_file}: none of its particles is in this run")
    return rows


def run_landscape(workdir, epoch: int | None = None, outdir=None, overwrite: bool = False,
                  particles=None, **kwargs) -> Iterator[Progress]:
    """Check the inputs now (InputError) and return an iterator of Progress events that writes
    the landscape folder (kwargs: :class:`LandscapeSettings`; ``particles``: run rows to
    sample the maps from, default all). Events: 'start', 'step', 'volume' (a map sampled),
    'done' (``extra['outdir']``)."""
    st = LandscapeSettings(**kwargs)
    folder = RunFolder.of(workdir)
    lat = folder.latents(epoch).explorable()
    n, zdim = lat.z.shape
    rows = np.arange(n) if particles is None else np.unique(np.asarray(particles, np.int64))
    if len(rows) and (rows[0] < 0 or rows[-1] >= n):
        raise InputError(f"particle rows out of range 0..{n - 1}")
    for name in ("sketch", "pc_dim", "clusters", "n_per_pc"):
        v = getattr(st, name)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name} must be a positive whole number, not {v!r}")
    if st.sketch > len(rows):
        raise InputError(f"-N {st.sketch}: only {len(rows)} particles to sample from")
    if st.sketch < 2:
        raise InputError("-N: sample at least 2 maps")
    if st.clusters > st.sketch:
        raise InputError(f"-M {st.clusters}: more clusters than sampled maps ({st.sketch})")
    if st.linkage not in ("average", "ward", "complete", "single"):
        raise InputError(f"--linkage {st.linkage!r}: choose average, ward, complete or single")
    apix = st.apix if st.apix is not None else folder.require_apix("the sampled maps")
    D = folder.D
    d = D if st.downsample is None or st.downsample >= D else int(st.downsample)
    if d < 8 or d % 2:
        raise InputError(f"-d {st.downsample}: the sampled maps need an even box of 8 or more")
    mask_file = None
    if str(st.mask) != "auto":
        mask_file = Path(st.mask)
        mvol, _ = read_mrc(mask_file) if mask_file.is_file() else (None, None)
        if mvol is None:
            raise InputError(f"--mask {mask_file}: no such file (or 'auto')")
        if mvol.shape != (d, d, d):
            raise InputError(f"--mask {mask_file.name} is {mvol.shape[0]} voxels across; the "
                             f"sampled maps are {d} (-d)")
    out = Path(outdir) if outdir is not None else folder.analysis_dir(lat.epoch, "landscape")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it, or -o to write "
                         "elsewhere")
    check_writable_dir(out.parent)
    from ..training.trainer import pick_device, pick_precision

    dev = pick_device(st.device)
    decoder = folder.model(lat.epoch, device=dev).volume_decoder(
        precision=pick_precision(dev, st.precision), device=dev)
    return _run(folder, lat, st, out, decoder, apix * D / d, d, mask_file, rows)


def _run(folder, lat, st: LandscapeSettings, out: Path, decoder, apix_d: float, d: int,
         mask_file, rows: np.ndarray) -> Iterator[Progress]:
    from sklearn.decomposition import PCA

    from ..io.downsample import fourier_crop_volume

    z, N, M = lat.z, st.sketch, st.clusters
    total = N + 6
    count = [0]

    def ev(kind, message="", advance=1, **extra):
        count[0] += advance
        return Progress(kind, epoch=1, n_epochs=1, done=min(count[0], total), total=total,
                        message=message, extra=extra)

    with staged_dir(out) as tmp:
        yield ev("start", f"landscape of epoch {lat.epoch if lat.epoch is not None else 'final'}"
                 f" of {folder.workdir}: {N} maps at {d}^3 from {len(rows)} particles -> {out}",
                 advance=0)
        yield ev("step", f"k-means, K={N}")
        km = kmeans(z[rows], N, seed=st.seed, reorder=False)
        centres_ind = rows[km.centers_ind]
        included = np.zeros(len(z), bool)
        included[rows] = True
        labels = np.empty(len(z), np.int64)
        labels[rows] = km.labels
        if not included.all():  # the others at their nearest sampled map
            labels[~included] = nearest_points(km.centers, z[~included])
        kdir = tmp / f"kmeans{N}"
        kdir.mkdir()
        save_pickle(kdir / "labels.pkl", labels + 1)
        np.savetxt(kdir / "centers.txt", km.centers)
        np.savetxt(kdir / "z_values.txt", km.centers)
        np.savetxt(kdir / "centers_ind.txt", centres_ind, fmt="%d")
        total_sum = np.zeros((d, d, d), np.float64)
        for i, zi in enumerate(km.centers):
            vol = fourier_crop_volume(decoder(zi), d)
            write_mrc(kdir / f"vol_{i + 1:03d}.mrc", vol, apix_d)
            total_sum += vol
            yield ev("volume", f"map {i + 1}/{N}")
        mean = (total_sum / N).astype(np.float32)
        write_mrc(kdir / "vol_mean.mrc", mean, apix_d)

        yield ev("step", "mask")
        if mask_file is None:
            mask = auto_mask(mean, apix_d, st.thresh, st.dilate)
        else:
            mask = read_mrc(mask_file)[0] > 0
        write_mrc(tmp / "mask.mrc", mask.astype(np.float32), apix_d)

        yield ev("step", f"volume PCA of {int(mask.sum())} voxels")
        X = np.stack([read_mrc(kdir / f"vol_{i + 1:03d}.mrc")[0][mask] for i in range(N)])
        pca = PCA(n_components=min(st.pc_dim, N, X.shape[1]))
        coords = pca.fit_transform(X).astype(np.float32)
        save_pickle(tmp / f"vol_pca_{N}.pkl", coords)
        save_pickle(tmp / "vol_pca_obj.pkl", pca)
        for i in range(min(VOL_PCS, coords.shape[1])):
            pdir = tmp / "vol_pcs" / f"pc{i + 1}"
            pdir.mkdir(parents=True)
            for j, t in enumerate(np.percentile(coords[:, i], np.linspace(5, 95,
                                                                           st.n_per_pc))):
                vol = mean.copy()
                vol[mask] = pca.mean_ + t * pca.components_[i]
                write_mrc(pdir / f"{j + 1:03d}.mrc", vol, apix_d)

        yield ev("step", f"clustering, M={M} ({st.linkage})")
        states = cluster_maps(coords, M, st.linkage)
        cdir = tmp / f"sketch_clustering_{st.linkage}_{M}"
        cdir.mkdir()
        save_pickle(cdir / "state_labels.pkl", states)
        per_particle = np.where(included, states[labels], 0)
        for m in range(1, M + 1):
            members = np.flatnonzero(states == m)
            vols = np.stack([read_mrc(kdir / f"vol_{i + 1:03d}.mrc")[0] for i in members])
            write_mrc(cdir / f"state_{m:03d}_mean.mrc", vols.mean(0), apix_d)
            write_mrc(cdir / f"state_{m:03d}_std.mrc", vols.std(0), apix_d)
            save_pickle(cdir / f"state_{m:03d}_particle_ind.pkl",
                        np.flatnonzero(per_particle == m).astype(np.int64))
            sdir = cdir / f"state_{m:03d}"
            sdir.mkdir()
            for i in members:
                name = f"vol_{i + 1:03d}.mrc"
                try:
                    os.link(kdir / name, sdir / name)
                except OSError:
                    shutil.copy2(kdir / name, sdir / name)

        yield ev("step", "UMAP and figures")
        _umap(folder, lat, st, tmp)
        _figure(tmp / f"vol_pca_{N}_1_2.png", coords, pca.explained_variance_ratio_)
        Landscape(labels, km.centers, centres_ind.astype(np.int64), coords, states,
                  pca.explained_variance_ratio_.astype(np.float32), included).save(tmp / NPZ)
    count[0] = total - 1
    yield ev("done", f"wrote {out}", outdir=str(out))


def _umap(folder, lat, st: LandscapeSettings, tmp: Path) -> None:
    from .embed import cached_umap, read_umap, umap_available

    if st.skip_umap or lat.z.shape[1] <= 2:
        return
    sources = folder.umap_cache_paths(lat.epoch)
    if not umap_available() and not any(read_umap(p, len(lat.z)) is not None
                                        for p in sources):
        log.warning("umap-learn is not installed: UMAP skipped")
        return
    emb, _ = cached_umap(lat.z, sources)
    save_pickle(tmp / "umap.pkl", emb.astype(np.float32))


def _figure(path: Path, coords: np.ndarray, evr: np.ndarray) -> None:
    from . import figures

    if coords.shape[1] >= 2:
        figures.scatter_plot(path, coords[:, :2], f"volume PC1 ({evr[0]:.2f})",
                             f"volume PC2 ({evr[1]:.2f})", title="sampled maps")
