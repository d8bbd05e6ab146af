"""napari writers: an Image layer to a .mrc/.map map or a .mrcs particle stack, with the voxel
size taken from the layer's scale and units; the explorer's map shown as a surface saves the
map it was made from (kept in the layer's metadata)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.mrc import write_mrc


def write_mrc_layer(path: str, data, meta: dict) -> list[str]:
    """Write one 2D or 3D image layer atomically as a map (.mrc/.map; a .mrcs name or a
    particle-stack layer writes an image stack); returns the written path (none on error,
    which is shown as a notification). A 4D series is refused: export it as a map series."""
    md = meta.get("metadata") or {}
    if isinstance(data, tuple | list) and "volume" in md:  # a map shown as its iso-surface
        data = md["volume"]
    elif isinstance(data, tuple | list):
        from .notify import user_error

        user_error(InputError(f"{meta.get('name', 'layer')} is a surface without a map; only "
                              "maps (and the explorer's map surfaces) save as MRC."))
        return []
    return _guarded(path, data, meta, stack=None)


def write_mrcs_layer(path: str, data, meta: dict) -> list[str]:
    """Write one 2D image or 3D stack of images as a .mrcs particle stack."""
    return _guarded(path, data, meta, stack=True)


def _guarded(path, data, meta, stack) -> list[str]:
    try:
        return _write(path, data, meta, stack)
    except InputError as e:
        from .notify import user_error

        user_error(e)
        return []


def voxel_size(meta: dict, spatial: int) -> float | None:
    """The voxel size in Angstrom of a layer's last ``spatial`` axes: from its scale and length
    units (nm and others converted); a scale in napari's default unit ``pixel`` is read as
    Angstrom (the field's convention for a layer's scale). None for a layer this plugin made
    from files without a voxel size (it records none rather than a guess)."""
    md = meta.get("metadata") or {}
    if "apix" in md and md["apix"] is None:
        return None
    ndim = len(meta.get("scale") or ()) or spatial
    scale = tuple(meta.get("scale") or (1.0,) * ndim)[-spatial:]
    units = tuple(meta.get("units") or ("pixel",) * ndim)[-spatial:]
    try:
        sizes = [float(s) if str(u) == "pixel" else float((s * u).to("angstrom").magnitude)
                 for s, u in zip(scale, units, strict=True)]
    except Exception:  # pint: not a length
        raise InputError(f"Cannot save as MRC: the layer's units {tuple(map(str, units))} "
                         "are not lengths.") from None
    if not np.allclose(sizes, sizes[-1], rtol=1e-4):
        raise InputError(f"Cannot save as MRC: voxels are not cubic (scale {scale}).")
    return sizes[-1]


def _write(path: str, data, meta: dict, stack: bool | None) -> list[str]:
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise InputError(
            f"Cannot save {meta.get('name', 'layer')} as one MRC file: it has {arr.ndim} "
            "dimensions; only 2D images, 3D maps and stacks fit one file (export a series "
            "instead)."
        )
    if stack is None:
        stack = arr.ndim == 3 and (Path(path).suffix.lower() == ".mrcs"
                                   or bool((meta.get("metadata") or {}).get("particle_stack")))
    spatial = 2 if stack or arr.ndim == 2 else 3
    write_mrc(path, arr, voxel_size(meta, spatial), stack=stack)
    return [str(Path(path))]
