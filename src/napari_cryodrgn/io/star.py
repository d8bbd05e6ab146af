"""RELION .star files: reading particle and optics tables, writing particle tables.

:func:`read_star` reads the particle files of RELION 3.0 (one table, ``data_`` or
``data_images``), 3.1 and 4 (``data_optics`` + ``data_particles``) and 5 (``# version 50001``,
optionally a ``data_general`` block); other tables in the file are kept aside. Readers call
:meth:`StarTables.check_particles` to refuse, in one line, files that are not single-particle
2D data (model, micrograph and tomography files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..geometry.rotations import matrix_to_euler_relion
from .atomic import atomic_write


def _key(field: str) -> str:
    """Column name as the ``starfile`` package spells it (no leading underscore)."""
    return field.lstrip("_")


@dataclass
class StarTables:
    """The particle table of a .star file and its optics table (RELION 3.1+) if any.

    ``block``: the name of the particle table's data block (``particles``, ``images``, ``""``
    ...); ``general``: the key-value blocks of the file (RELION 5's ``data_general``), by name.
    """

    path: Path
    particles: pd.DataFrame
    optics: pd.DataFrame | None
    block: str = "particles"
    general: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.particles)

    @property
    def relion31(self) -> bool:
        return self.optics is not None

    def has(self, field: str) -> bool:
        key = _key(field)
        return key in self.particles.columns or (
            self.optics is not None and key in self.optics.columns
        )

    def _numeric(self, values: pd.Series, field: str, dtype) -> np.ndarray:
        try:
            return pd.to_numeric(values).to_numpy(dtype=dtype)
        except (ValueError, TypeError):
            raise InputError(
                f"{self.path}: column _{_key(field)} holds non-numeric values; "
                "the .star file is damaged."
            ) from None

    def values(self, field: str, dtype=np.float64) -> np.ndarray | None:
        """Per-particle values of ``field``, taken from the optics table when it has the field
        (matched through ``_rlnOpticsGroup``), else from the particle table; None if absent.
        ``dtype=None`` returns the raw column (strings)."""
        key = _key(field)
        if self.optics is not None and key in self.optics.columns:
            col = self.optics[key]
            groups = self.particles.get("rlnOpticsGroup")
            if groups is not None and "rlnOpticsGroup" in self.optics.columns:
                lookup = pd.Series(col.to_numpy(), index=self.optics["rlnOpticsGroup"])
                missing = ~groups.isin(lookup.index)
                if missing.any():
                    raise InputError(
                        f"{self.path}: particles refer to optics group "
                        f"{groups[missing].iloc[0]}, which the optics table lacks."
                    )
                col = groups.map(lookup)
            elif groups is None or len(self.optics) == 1:
                col = pd.Series(np.repeat(col.to_numpy()[:1], len(self.particles)))
            else:
                raise InputError(
                    f"{self.path}: the optics table has no _rlnOpticsGroup column; "
                    "the .star file is damaged."
                )
        elif key in self.particles.columns:
            col = self.particles[key]
        else:
            return None
        return col.to_numpy() if dtype is None else self._numeric(col, field, dtype)

    def require(self, field: str, dtype=np.float64, hint: str = "") -> np.ndarray:
        """Like :meth:`values` but raise InputError naming the missing column."""
        vals = self.values(field, dtype)
        if vals is None:
            raise InputError(
                f"{self.path} has no _{_key(field)} column{' ' + hint if hint else ''}."
            )
        return vals

    def box(self, D: int | None = None) -> np.ndarray:
        """Per-particle box size: ``_rlnImageSize`` if the file has it, else ``D``."""
        vals = self.values("rlnImageSize")
        if vals is not None:
            return vals
        if D is None:
            raise InputError(
                f"{self.path} has no _rlnImageSize; give the box size (pixels) of the "
                "particles (-D)."
            )
        return np.full(len(self), float(D))

    def pixel_size(self) -> np.ndarray | None:
        """Per-particle pixel size: ``_rlnImagePixelSize``, else RELION 3.0's
        ``_rlnDetectorPixelSize`` (um) * 1e4 / ``_rlnMagnification``; None if neither."""
        vals = self.values("rlnImagePixelSize")
        if vals is None and self.has("rlnDetectorPixelSize") and self.has("rlnMagnification"):
            vals = self.values("rlnDetectorPixelSize") * 1e4 / self.values("rlnMagnification")
        return vals

    def group_labels(self) -> list[str] | None:
        """For each particle, its optics group as ``opticsGroup1 (1)``; None without groups."""
        groups = self.particles.get("rlnOpticsGroup")
        if self.optics is None or groups is None:
            return None
        names = {}
        if "rlnOpticsGroup" in self.optics.columns and "rlnOpticsGroupName" in self.optics:
            names = dict(zip(self.optics["rlnOpticsGroup"], self.optics["rlnOpticsGroupName"],
                             strict=True))
        return [f"{names[g]} ({g})" if g in names else f"group {g}" for g in groups]

    def agreed(self, values: np.ndarray, what: str, unit: str = "") -> float:
        """The one value of ``values`` (per particle) that all particles share; InputError
        naming the optics groups (or counting the particles) that disagree."""
        v = np.asarray(values, dtype=np.float64)
        if not len(v):
            raise InputError(f"{self.path} holds no particles.")
        if np.all(np.abs(v - v[0]) <= 1e-4 * abs(v[0])):
            return float(v[0])
        labels = self.group_labels()
        if labels is not None:
            seen: dict[str, float] = {}
            for label, x in zip(labels, v, strict=True):
                seen.setdefault(label, x)
            listed = ", ".join(f"{k}: {x:g}{unit}" for k, x in seen.items())
            who = "optics groups"
        else:
            uniq, counts = np.unique(np.round(v, 4), return_counts=True)
            listed = ", ".join(f"{u:g}{unit} for {c} particles"
                               for u, c in zip(uniq, counts, strict=True))
            who = "particles"
        raise InputError(
            f"{self.path}: {who} disagree on the {what} ({listed}); cryoDRGN trains on one "
            "pixel size and box: re-extract or rescale the particles to a common one (RELION "
            "Extract) or keep one optics group."
        )

    def check_particles(self, images: bool = False) -> None:
        """Refuse files that are not single-particle 2D particle sets (one line each):
        model and micrograph files, tomography particle sets and 3D subtomograms, and, when
        ``images``, CTF-premultiplied images."""
        p, block = self.path, self.block
        if block.startswith("model") or block in ("micrographs", "movies"):
            kind = "model (run_model.star)" if block.startswith("model") else block
            raise InputError(
                f"{p} is a RELION {kind} file (data_{block}), not a particle file; use the "
                "particles .star of an Extract, Select, Class2D/3D or Refine3D job "
                "(e.g. run_data.star)."
            )
        tomo = [c for c in ("rlnTomoName", "rlnTomoParticleName") if c in self.particles]
        stacks = any("rlnTomoSubTomosAre2DStacks" in g for g in self.general.values())
        if tomo or stacks:
            what = f"_{tomo[0]}" if tomo else "_rlnTomoSubTomosAre2DStacks"
            raise InputError(
                f"{p} is a RELION tomography particle set ({what}): each particle is a "
                "subtomogram or a stack of tilt images, not one 2D image; napari-cryodrgn trains "
                "on single-particle 2D images (a .star from a single-particle Extract/Refine3D)."
            )
        dims = self.values("rlnImageDimensionality")
        if dims is not None and np.any(dims == 3):
            raise InputError(
                f"{p} describes 3D particle images (_rlnImageDimensionality 3, subtomograms); "
                "napari-cryodrgn trains on single-particle 2D images."
            )
        premult = self.values("rlnCtfDataAreCtfPremultiplied") if images else None
        if premult is not None and np.any(premult == 1):
            raise InputError(
                f"{p}: the images are CTF-premultiplied (_rlnCtfDataAreCtfPremultiplied 1), "
                "which cryoDRGN's image model does not expect; re-extract the particles without "
                "CTF premultiplication."
            )


def read_star(path: str | os.PathLike) -> StarTables:
    """Read a RELION 3.0 or 3.1+ .star file: the particle table is ``data_particles`` when
    the file has one, else its largest loop other than ``data_optics``."""
    import starfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; check the file name.")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as e:
        raise InputError(
            f"{path} is not a readable .star file ({type(e).__name__}: {e})."
        ) from None
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    general = {k: v for k, v in blocks.items() if isinstance(v, dict)}
    optics = tables.pop("optics", None)
    if not tables:
        kind = f" (only data_{', data_'.join(general)})" if general else ""
        raise InputError(f"{path} contains no particle table (a data_ block with a loop_)"
                         f"{kind}; use a particles .star file.")
    name = "particles" if "particles" in tables else max(tables, key=lambda k: len(tables[k]))
    return StarTables(path, tables[name].reset_index(drop=True), optics, name, general)


def _table(name: str, columns: dict[str, np.ndarray]) -> str:
    """One loop_ table; floats rounded to 6 decimals."""
    head = [f"\n# version 30001\n\ndata_{name}\n\nloop_"]
    head += [f"_{k} #{i}" for i, k in enumerate(columns, start=1)]
    df = pd.DataFrame({k: np.round(v, 6) if np.asarray(v).dtype.kind == "f" else v
                       for k, v in columns.items()})
    body = df.to_csv(sep=" ", header=False, index=False, lineterminator="\n")
    return "\n".join(head) + "\n" + body


def write_particles_star(
    path: str | os.PathLike,
    stack_relpath: str,
    rot: np.ndarray | None,
    trans: np.ndarray | None,
    ctf: np.ndarray | None,
    apix: float,
    D: int,
    relion31: bool = True,
    image_indices: np.ndarray | None = None,
) -> None:
    """Write a RELION particle .star file (atomically).

    rot: (N, 3, 3) cryoDRGN pose matrices; trans: (N, 2) fractions of the box; ctf: (N, 9)
    cryoDRGN CTF table; any may be None. ``stack_relpath`` is the stack as written in
    ``_rlnImageName``; ``image_indices`` (0-based, default 0..N-1) are the images in it.
    ``relion31`` writes data_optics + data_particles with origins in Angstrom, otherwise one
    RELION 3.0 table with origins in pixels.
    """
    sizes = {len(a) for a in (rot, trans, ctf, image_indices) if a is not None}
    if len(sizes) != 1:
        raise ValueError(f"write_particles_star: rot, trans, ctf and image_indices (at least one "
                         f"given) must agree on the particle count, got {sizes}")
    n = sizes.pop()
    idx = np.arange(n) if image_indices is None else np.asarray(image_indices)
    cols: dict[str, np.ndarray] = {
        "rlnImageName": np.char.add(np.char.zfill((idx + 1).astype(str), 6), f"@{stack_relpath}")
    }
    if rot is not None:
        euler = matrix_to_euler_relion(rot)
        for i, name in enumerate(("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")):
            cols[name] = euler[:, i]
    if trans is not None:
        pix = np.asarray(trans, dtype=np.float64) * D
        if relion31:
            cols["rlnOriginXAngst"], cols["rlnOriginYAngst"] = pix[:, 0] * apix, pix[:, 1] * apix
        else:
            cols["rlnOriginX"], cols["rlnOriginY"] = pix[:, 0], pix[:, 1]
    optics = {
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnOpticsGroup": [1],
        "rlnImagePixelSize": [float(apix)],
        "rlnImageSize": [int(D)],
        "rlnImageDimensionality": [2],
    }
    if ctf is not None:
        ctf = np.asarray(ctf, dtype=np.float64)
        for j, name in ((2, "rlnDefocusU"), (3, "rlnDefocusV"), (4, "rlnDefocusAngle")):
            cols[name] = ctf[:, j]
        for j, name in ((5, "rlnVoltage"), (6, "rlnSphericalAberration"),
                        (7, "rlnAmplitudeContrast")):
            if relion31 and np.all(ctf[:, j] == ctf[0, j]):
                optics[name] = ctf[:1, j]
            else:
                cols[name] = ctf[:, j]
        cols["rlnPhaseShift"] = ctf[:, 8]
    if relion31:
        cols["rlnOpticsGroup"] = np.ones(n, dtype=np.int64)
        text = _table("optics", optics) + _table("particles", cols)
    else:
        cols["rlnImagePixelSize"] = np.full(n, float(apix))
        cols["rlnImageSize"] = np.full(n, int(D))
        cols["rlnDetectorPixelSize"] = np.full(n, float(apix))  # micrometre, with
        cols["rlnMagnification"] = np.full(n, 10000.0)  # this gives apix in Angstrom
        text = _table("", cols)
    with atomic_write(path, "w") as f:
        f.write(text)
