"""napari writer: an Image layer to .mrc/.map with the voxel size taken from the layer scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.mrc import write_mrc


def write_mrc_layer(path: str, data, meta: dict) -> list[str]:
    """Write one 2D or 3D image layer atomically; returns the written path (none on error,
    which is shown as a notification).

    The voxel size is the layer's scale along x (napari order z, y, x). A 4D series is
    refused: export it as a map series instead.
    """
    try:
        return _write(path, data, meta)
    except InputError as e:
        from .notify import user_error

        user_error(e)
        return []


def _write(path: str, data, meta: dict) -> list[str]:
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise InputError(
            f"Cannot save {meta.get('name', 'layer')} as one MRC map: it has {arr.ndim} "
            "dimensions; only 2D images and 3D maps fit one file (export a series instead)."
        )
    scale = meta.get("scale") or (1.0,) * arr.ndim
    apix = float(scale[-1])
    stack = arr.ndim == 3 and bool((meta.get("metadata") or {}).get("particle_stack"))
    spatial = 2 if stack or arr.ndim == 2 else 3
    if not np.allclose(scale[-spatial:], apix, rtol=1e-4):
        raise InputError(f"Cannot save as MRC: voxels are not cubic (scale {tuple(scale)}).")
    write_mrc(path, arr, apix, stack=stack)
    return [str(Path(path))]
