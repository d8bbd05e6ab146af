"""Map series for other programs: vol_001.mrc ..., z_values.txt and a ChimeraX script."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import staged_dir
from ..io.mrc import write_mrc

CXC_NAME = "open_series.cxc"


def iso_level(vol: np.ndarray) -> float:
    """An iso-surface level from a map's own statistics: mean + 1.5 std of the map with its top
    0.1% of voxels clipped (a few hot voxels must not push the surface away), kept below the
    maximum. The napari layers and the ChimeraX script use the same level."""
    v = np.asarray(vol, np.float32)
    clipped = np.minimum(v, np.percentile(v, 99.9))
    mean, std, vmax = float(clipped.mean()), float(clipped.std()), float(v.max())
    return min(mean + 1.5 * std, mean + 0.8 * (vmax - mean)) if std > 0 else vmax


def series_iso_level(volumes) -> float:
    """One iso level for a whole map series (:func:`iso_level` of all its maps together), so
    that a surface changes between maps only where the density does. The explorer's frames and
    the exported ChimeraX script use it."""
    return iso_level(np.stack([np.asarray(v, np.float32) for v in volumes]))


def chimerax_script(names: list[str], apix: float, level: float) -> str:
    """ChimeraX commands that open the maps as one volume series (relative to the script)."""
    files = " ".join(names)
    return (
        "# Open with ChimeraX: open open_series.cxc (from this folder), then play the series\n"
        "# with the slider, or: vseries play #1 loop true\n"
        f"open {files} vseries true\n"
        f"volume #1 style surface level {level:.6g} voxelSize {apix:.6g}\n"
        "view\n"
    )


def export_series(volumes, z, outdir, apix: float, overwrite: bool = False,
                  level: float | None = None) -> list[Path]:
    """Write ``volumes`` (N maps) as vol_001.mrc ... with voxel size ``apix``, their latent
    points as z_values.txt and ChimeraX's open_series.cxc into ``outdir`` (surface at
    ``level``; default :func:`series_iso_level`).

    The folder is written under a temporary name and renamed into place, so a failed export
    leaves nothing half-written; an existing non-empty folder is refused unless ``overwrite``.
    """
    out = Path(outdir)
    vols = [np.asarray(v, np.float32) for v in volumes]
    z = np.atleast_2d(np.asarray(z, np.float32))
    if not vols:
        raise InputError("Nothing to export: the series is empty.")
    if len(z) != len(vols):
        raise InputError(f"{len(vols)} maps but {len(z)} latent points")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; choose a folder for the series.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} is not empty; nothing was written. Choose an empty or new "
                         "folder (or allow overwriting).")
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_dir(out, "export") as tmp:
        names = []
        for i, v in enumerate(vols):
            names.append(f"vol_{i + 1:03d}.mrc")
            write_mrc(tmp / names[-1], v, apix)
        np.savetxt(tmp / "z_values.txt", z)
        (tmp / CXC_NAME).write_text(chimerax_script(
            names, apix, series_iso_level(vols) if level is None else level))
    return [out / n for n in names]
