"""Where does a known structure live in the latent space?

Reference maps (another dataset's map, an assembly state from 3D classification; any box and
voxel size) are resampled onto the run's grid, maps are decoded at the k-means centres of the
latent space, and every centre map is compared with every reference (Pearson correlation inside
the box's inscribed sphere, both low-passed alike when asked). Each particle takes the
correlation of its cluster's centre map, so the latent space can be coloured by it: the
paper's RAG and ribosome comparisons as one action.

References must be in the same frame as the run's maps (the consensus reconstruction's pose
convention and hand): fit them to a map of the run first (e.g. ChimeraX ``fitmap``) when they
come from elsewhere."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_write
from ..io.mrc import read_mrc
from .fsc import real_space_correlation


@dataclass
class Reference:
    """A reference map on the run's grid (box ``D``, the run's voxel size)."""

    name: str
    path: Path | None
    volume: np.ndarray


def lowpass(vol: np.ndarray, apix: float, resolution: float) -> np.ndarray:
    """``vol`` with frequencies beyond 1/``resolution`` (Angstrom) removed (a raised-cosine
    edge one Fourier shell wide, so no ringing from a hard cut)."""
    D = vol.shape[0]
    f = np.fft.fftfreq(D, d=apix)
    r = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    edge = 1.0 / resolution
    width = 1.0 / (D * apix)
    w = np.clip((edge + width - r) / width, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(np.pi * w)
    return np.fft.ifftn(np.fft.fftn(vol) * w).real.astype(np.float32)


def resample(vol: np.ndarray, apix: float, D: int, target_apix: float) -> np.ndarray:
    """``vol`` (voxel size ``apix``) on a ``D``-voxel box of voxel size ``target_apix`` with
    the same centre (voxel D//2, the field's convention): low-passed to the new Nyquist first
    when the new voxels are coarser, then interpolated (cubic spline); outside the old box is
    the old box's edge value."""
    from scipy.ndimage import affine_transform

    v = np.asarray(vol, np.float32)
    if len(set(v.shape)) != 1 or v.ndim != 3:
        raise InputError(f"a reference map must be a cubic 3D map, got shape {v.shape}")
    if target_apix > apix * (1 + 1e-6):
        v = lowpass(v, apix, 2.0 * target_apix)
    if v.shape[0] == D and abs(target_apix - apix) <= 1e-6 * apix:
        return v.copy()
    scale = target_apix / apix
    src_c, dst_c = v.shape[0] // 2, D // 2
    edge = float(np.median(np.concatenate([v[0].ravel(), v[-1].ravel(), v[:, 0].ravel(),
                                           v[:, -1].ravel(), v[:, :, 0].ravel(),
                                           v[:, :, -1].ravel()])))
    out = affine_transform(v, np.full(3, scale), offset=src_c - dst_c * scale,
                           output_shape=(D, D, D), order=3, mode="constant", cval=edge)
    return out.astype(np.float32)


def load_reference(path, D: int, apix: float, ref_apix: float | None = None) -> Reference:
    """Read a reference map and put it on the run's grid. Its voxel size comes from its
    header, or ``ref_apix`` when the header has none (never a guess)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such reference map")
    vol, header_apix = read_mrc(path)
    if vol.ndim != 3:
        raise InputError(f"{path.name} is not a 3D map (shape {vol.shape})")
    use = ref_apix if ref_apix is not None else header_apix
    if use is None:
        raise InputError(f"{path.name} records no voxel size: write it into its header (e.g. "
                         "ChimeraX: volume #1 voxelSize A, then save) or pass --ref-apix "
                         "(Angstrom per voxel of the reference) to match")
    return Reference(path.stem, path, resample(vol, float(use), D, apix))


def load_references(paths, session, ref_apix: float | None = None) -> list[Reference]:
    """:func:`load_reference` for each of ``paths`` onto ``session``'s grid; refused when the
    run's pixel size is unknown or two references share a name (it labels their columns and
    colourings)."""
    if session.apix is None:
        raise InputError(f"{session.workdir}: the run's pixel size is unknown (config.yaml "
                         "records none and its CTF file is not found); references cannot be "
                         "put on its grid")
    refs = [load_reference(p, session.D, session.apix, ref_apix) for p in paths]
    if len({r.name for r in refs}) != len(refs):
        raise InputError("two references share a file name; rename one (the name labels its "
                         "column and colouring)")
    return refs


def sphere_mask(D: int) -> np.ndarray:
    """The box's inscribed sphere (radius D/2 about voxel D//2)."""
    g = np.arange(D) - D // 2
    r2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    return r2 < (D / 2) ** 2


@dataclass
class MatchResult:
    """Correlation of each reference with the map of each k-means centre, and each particle's
    cluster (so its value: :meth:`per_particle`)."""

    refs: list[str]
    k: int
    centres: np.ndarray  # (k, zdim) latent points
    centre_particles: np.ndarray  # (k,) the particle at each centre
    labels: np.ndarray  # (N,) cluster of each particle
    corr: np.ndarray  # (n_refs, k)
    epoch: int | None = None
    maps: np.ndarray | None = field(default=None, repr=False)  # (k, D, D, D) centre maps
    ref_volumes: list | None = field(default=None, repr=False)  # the references on the grid

    def per_particle(self, ref: int | str) -> np.ndarray:
        """Each particle's value for reference ``ref`` (its cluster centre's correlation)."""
        r = self.refs.index(ref) if isinstance(ref, str) else int(ref)
        return self.corr[r][self.labels].astype(np.float32)

    def best(self, ref: int | str) -> int:
        """The centre (cluster number) whose map matches reference ``ref`` best."""
        r = self.refs.index(ref) if isinstance(ref, str) else int(ref)
        return int(np.argmax(self.corr[r]))

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)


def match_references(session, refs: list[Reference], k: int = 20,
                     resolution: float | None = None, progress=None) -> MatchResult:
    """Decode the maps at ``session``'s k-means centres (the Explore dock's clusters for this
    k) and correlate each with every reference, both low-passed to ``resolution`` Angstrom
    when given. ``progress(done, total)`` after each map."""
    if not refs:
        raise InputError("give at least one reference map")
    apix = session.apix
    if resolution is not None and apix is None:
        raise InputError("a low-pass in Angstrom needs the run's pixel size; pass --Apix")
    res = session.kmeans_result(k)
    mask = sphere_mask(session.D)

    def prepared(vol):
        return lowpass(vol, apix, resolution) if resolution else np.asarray(vol, np.float32)

    ref_vols = [prepared(r.volume) for r in refs]
    for r in refs:
        if r.volume.shape != (session.D,) * 3:
            raise InputError(f"reference {r.name} is {r.volume.shape[0]} voxels across; the "
                             f"run's maps are {session.D} (load it with load_reference)")
    corr = np.zeros((len(refs), res.k), np.float64)
    maps = np.zeros((res.k,) + (session.D,) * 3, np.float32)
    for c in range(res.k):
        maps[c] = session.decode(res.centers[c])
        vol = prepared(maps[c])
        for i, rv in enumerate(ref_vols):
            corr[i, c] = real_space_correlation(vol, rv, mask)
        if progress is not None:
            progress(c + 1, res.k)
    return MatchResult([r.name for r in refs], res.k, res.centers, res.centers_ind, res.labels,
                       corr, session.epoch, maps, [r.volume for r in refs])


def write_match(result: MatchResult, outdir, overwrite: bool = False) -> dict[str, Path]:
    """``match.csv`` (one row per k-means centre: cluster, particle, particles in the cluster,
    a correlation column per reference) and ``match_<ref>.txt`` per reference (one value per
    particle of the run, in its order: a colouring file for the Explore dock), written
    atomically into ``outdir``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    names = {"table": out / "match.csv"}
    for r in result.refs:
        names[r] = out / f"match_{r}.txt"
    existing = [p for p in names.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} exists; nothing was written (choose another folder "
                         "or --overwrite)")
    counts = result.counts()
    with atomic_write(names["table"], "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["cluster", "particle", "n_particles", *[f"corr_{r}" for r in result.refs]])
        for c in range(result.k):
            w.writerow([c, int(result.centre_particles[c]), int(counts[c]),
                        *[f"{result.corr[i, c]:.4f}" for i in range(len(result.refs))]])
    for i, r in enumerate(result.refs):
        with atomic_write(names[r], "w") as f:
            np.savetxt(f, result.per_particle(i), fmt="%.4f")
    return names
