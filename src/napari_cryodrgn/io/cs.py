"""cryoSPARC .cs files (numpy structured arrays): reading fields, writing particle tables.

A particle .cs file is a ``.npy`` record array, one row per particle, fields named
``slot/field`` (``uid``, ``blob/path``, ``ctf/df1_A``, ``alignments3D/pose`` ...). Besides the
plain layout that cryoSPARC v3+ writes, :func:`read_cs` reads headers longer than numpy's
default 10 kB limit (jobs with many classes) and the object-dtype files of cryoSPARC v2 (their
pickle goes through the restricted unpickler of :mod:`.safepickle`).

A job's output file holds only the slots the job made (a refinement's
``J12_005_particles.cs``: ``alignments3D``); the slots passed through from its inputs
(``blob``, ``ctf`` ...) live beside it in ``J12_passthrough_particles.cs``. :class:`CsTable`
reads a field from the file given and, when the file lacks it, from that passthrough file,
matching rows on ``uid``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry.rotations import cryodrgn_to_cryosparc
from .atomic import atomic_write

log = logging.getLogger(__name__)

# cryosparc-tools reads .cs files with the same limit: a 100-class table has a ~15 kB header
MAX_HEADER_BYTES = 1 << 30
_NPY_MAGIC, _CSDAT_MAGIC = b"\x93NUMPY", b"\x94CSDAT"


def _npy_header(f) -> np.dtype:
    """The dtype in the .npy header at the start of open file ``f`` (left after the header)."""
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return read(f, max_header_size=MAX_HEADER_BYTES)[2]


def _read_object_cs(path: Path) -> np.ndarray:
    """A .cs file whose dtype holds Python objects (cryoSPARC v2 string fields): the array is
    a pickle after the .npy header, read through the restricted unpickler (latin-1 strings,
    as numpy reads pickles written by Python 2)."""
    from .safepickle import RefusedPickle, _SafeUnpickler

    with open(path, "rb") as f:
        _npy_header(f)
        try:
            arr = _SafeUnpickler(f, encoding="latin1").load()
        except RefusedPickle as e:
            raise InputError(
                f"{path} refuses to load: its pickled part contains {e.qualname}, which could "
                "run code; only numpy arrays of plain values are accepted."
            ) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None:
        return arr
    # object fields (strings) become fixed-width bytes, as cryoSPARC v3+ stores them
    fields, columns = [], {}
    for name in arr.dtype.names:
        col = arr[name]
        if col.dtype == object:
            col = np.array([v if isinstance(v, bytes) else str(v).encode("utf-8")
                            for v in col.ravel()], dtype=bytes).reshape(col.shape)
            if col.dtype.itemsize == 0:
                col = col.astype("S1")
        columns[name] = col
        fields.append((name, col.dtype.base, col.shape[1:]) if col.ndim > 1
                      else (name, col.dtype))
    out = np.empty(len(arr), dtype=fields)
    for name, col in columns.items():
        out[name] = col
    return out


def read_cs(path: str | os.PathLike) -> np.ndarray:
    """Open a .cs file as a numpy structured array: memory-mapped, or, for cryoSPARC v2 files
    with object fields, read into memory with those fields as fixed-width bytes."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; check the file name.")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            f.seek(0)
            if magic == _CSDAT_MAGIC:
                raise InputError(
                    f"{path} is a compressed cryoSPARC stream dataset (CSDAT), not a .cs "
                    "table; save it in the default numpy format (cryosparc-tools "
                    "Dataset.save) or export the particles from cryoSPARC."
                )
            if magic != _NPY_MAGIC:
                raise InputError(
                    f"{path} is not a cryoSPARC .cs file (not a numpy record array)."
                )
            dtype = _npy_header(f)
        if dtype.hasobject:
            arr = _read_object_cs(path)
        else:
            arr = np.load(path, mmap_mode="r", allow_pickle=False,
                          max_header_size=MAX_HEADER_BYTES)
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"{path} is not a readable cryoSPARC .cs file ({type(e).__name__}: {e})."
        ) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None or arr.ndim != 1:
        raise InputError(f"{path} is not a cryoSPARC .cs file (no named fields).")
    return arr


def cs_field(arr: np.ndarray, name: str, path: str | os.PathLike, hint: str = "") -> np.ndarray:
    """A field of a .cs table as an in-memory array; InputError naming the file if absent."""
    if name not in arr.dtype.names:
        raise InputError(
            f"{path} has no '{name}' field{' ' + hint if hint else ''}."
        )
    return np.array(arr[name])


# -- passthrough files --------------------------------------------------------------------------
_JOB = re.compile(r"(?:^|_)(J\d+)(?=_)")


def _job_of(path: Path) -> str | None:
    """The cryoSPARC job id in a .cs file's name (J12_005_particles.cs,
    cryosparc_P3_J12_005_particles.cs) or, failing that, of its folder (J12/)."""
    m = _JOB.search(path.name)
    if m:
        return m.group(1)
    return path.parent.name if re.fullmatch(r"J\d+", path.parent.name) else None


def passthrough_candidates(path: str | os.PathLike) -> list[Path]:
    """Passthrough files that may belong to particle file ``path``: the
    ``*passthrough_particles*.cs`` files of its folder, those of the same job first, the one
    whose suffix matches (``particles_selected.cs`` / ``..._passthrough_particles_selected.cs``)
    first among them."""
    path = Path(path)
    found = [p for p in sorted(path.parent.glob("*passthrough_particles*.cs"))
             if p.is_file() and p.name != path.name]
    job = _job_of(path)
    if job is not None and any(_job_of(p) == job for p in found):
        found = [p for p in found if _job_of(p) == job]
    tail = path.stem.rpartition("particles")[2]  # "_selected", "_all_classes", ""
    return sorted(found, key=lambda p: p.stem.rpartition("passthrough_particles")[2] != tail)


@dataclass
class CsTable:
    """A particle .cs file and, for the fields it lacks, its passthrough file (rows on ``uid``).

    ``path``: the file given; ``arr``: its table; ``extra_path``: the passthrough file, once a
    missing field has been looked up there.
    """

    path: Path
    arr: np.ndarray
    extra_path: Path | None = None
    _extra: np.ndarray | None = field(default=None, repr=False)
    _rows: np.ndarray | None = field(default=None, repr=False)  # passthrough row per particle
    _searched: bool = field(default=False, repr=False)
    _problem: str | None = field(default=None, repr=False)  # why none could be joined

    def __len__(self) -> int:
        return len(self.arr)

    @property
    def names(self) -> tuple[str, ...]:
        return self.arr.dtype.names

    def _join(self, wanted: str) -> bool:
        """Join the passthrough file (searched once); True when one is joined."""
        if not self._searched:
            self._searched = True
            self._problem = self._find_passthrough(wanted)
        return self._extra is not None

    def _find_passthrough(self, wanted: str) -> str | None:
        """Join the first candidate that holds every uid of the file; else say why not (None
        when there is no candidate at all)."""
        cands = passthrough_candidates(self.path)
        if not cands:
            return None
        if "uid" not in self.names:
            return f"it has no 'uid' field to match the rows of {cands[0].name} with"
        uid = np.asarray(self.arr["uid"])
        for cand in cands:
            other = read_cs(cand)
            if "uid" not in other.dtype.names or not len(other):
                continue
            their = np.asarray(other["uid"])
            order = np.argsort(their, kind="stable")
            rows = order[np.clip(np.searchsorted(their, uid, sorter=order), 0, len(their) - 1)]
            if not np.array_equal(their[rows], uid):
                continue
            if len(np.unique(their)) != len(their):
                return f"{cand.name} beside it lists some particle uids twice (damaged)"
            self._extra, self._rows, self.extra_path = other, rows, cand
            log.info("%s has no '%s': the fields it lacks are read from the passthrough file %s "
                     "(rows matched on uid)", self.path, wanted, cand)
            return None
        names = ", ".join(c.name for c in cands)
        return f"the passthrough file(s) beside it ({names}) do not hold all of its particles"

    def has(self, name: str) -> bool:
        """Whether the file (or its passthrough file, joined if needed) has field ``name``."""
        if name in self.names:
            return True
        return self._join(name) and name in self._extra.dtype.names

    def field(self, name: str, hint: str = "") -> np.ndarray:
        """Field ``name`` for every particle of the file (in its order), as an in-memory array;
        InputError naming the file, the field and the remedy if neither file has it."""
        if name in self.names:
            return np.array(self.arr[name])
        if self._join(name) and name in self._extra.dtype.names:
            return np.array(self._extra[name][self._rows])
        hint = f" {hint}" if hint else ""
        if self._problem is not None:
            raise InputError(
                f"{self.path} has no '{name}' field{hint} and {self._problem}; use the "
                "passthrough file of the same job or a cryoSPARC export of the particles "
                "(Export job)."
            )
        if self.extra_path is not None:
            raise InputError(
                f"{self.path} has no '{name}' field{hint}, nor has its passthrough file "
                f"{self.extra_path.name}; use a cryoSPARC export of the particles (Export job)."
            )
        raise InputError(
            f"{self.path} has no '{name}' field{hint} and no cryoSPARC passthrough file "
            "(*_passthrough_particles*.cs) is beside it to take it from: put the job's "
            "J<n>_passthrough_particles.cs next to it or use a cryoSPARC export of the "
            "particles (Export job)."
        )


def open_cs(path: str | os.PathLike) -> CsTable:
    """A .cs particle file as a :class:`CsTable` (its passthrough file is joined lazily)."""
    path = Path(path)
    return CsTable(path, read_cs(path))


def _agreed(table: CsTable, values: np.ndarray, what: str, unit: str, remedy: str) -> float:
    """The one value all particles share, else InputError listing the values and counts."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        raise InputError(f"{table.path} holds no particles.")
    if np.all(np.abs(v - v[0]) <= 1e-4 * abs(v[0])):
        return float(v[0])
    uniq, counts = np.unique(np.round(v, 4), return_counts=True)
    listed = ", ".join(f"{u:g}{unit} ({c} particles)" for u, c in zip(uniq, counts, strict=True))
    raise InputError(f"{table.path}: particles disagree on the {what} ({listed}); {remedy}")


MIXED_REMEDY = ("cryoDRGN trains on one pixel size and box: downsample or re-extract them to a "
                "common one in cryoSPARC, or select the particles of one exposure group.")


def cs_box(table: CsTable, D: int | None = None, per_particle: bool = False):
    """Box size from ``blob/shape`` (one for all particles, else InputError; ``per_particle``
    returns the (N,) array instead), else ``D``, else InputError with the -D remedy."""
    if table.has("blob/shape"):
        shape = table.field("blob/shape").reshape(len(table), -1)
        box = shape[:, 0].astype(np.float64)
        if per_particle:
            return box
        return int(_agreed(table, box, "box size", " px", MIXED_REMEDY))
    if D is None:
        raise InputError(f"{table.path} has no 'blob/shape' field (nor a passthrough file with "
                         "it); give the box size of the particles (-D).")
    return np.full(len(table), float(D)) if per_particle else int(D)


def cs_pixel_size(table: CsTable) -> float | None:
    """The pixel size all particles share (``blob/psize_A``), None if absent; InputError when
    particles disagree."""
    if not table.has("blob/psize_A"):
        return None
    return _agreed(table, table.field("blob/psize_A"), "pixel size", " A", MIXED_REMEDY)


def cs_paths(table: CsTable) -> np.ndarray:
    """``blob/path`` as str, without the leading '>' (cryoSPARC's mark for a path relative to
    the project folder)."""
    raw = table.field("blob/path", "(it does not say where the particle images are)")
    names = np.char.decode(raw, "utf-8") if raw.dtype.kind == "S" else raw.astype(str)
    return np.char.lstrip(names, ">")


def write_particles_cs(
    path: str | os.PathLike,
    stack_relpath: str,
    rot: np.ndarray | None,
    trans: np.ndarray | None,
    ctf: np.ndarray | None,
    apix: float,
    D: int,
    image_indices: np.ndarray | None = None,
) -> None:
    """Write a minimal cryoSPARC particle .cs file (atomically), e.g. for tests and exports.

    rot: (N, 3, 3) cryoDRGN matrices (stored as axis-angle of the transpose); trans: (N, 2)
    fractions of the box (stored in pixels); ctf: (N, 9) cryoDRGN CTF table.
    """
    sizes = {len(a) for a in (rot, trans, ctf, image_indices) if a is not None}
    if len(sizes) != 1:
        raise ValueError(f"write_particles_cs: rot, trans, ctf and image_indices (at least one "
                         f"given) must agree on the particle count, got {sizes}")
    n = sizes.pop()
    rel = str(stack_relpath).encode()
    fields = [
        ("uid", "<u8"), ("blob/path", f"S{max(len(rel), 1)}"), ("blob/idx", "<u4"),
        ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"), ("blob/sign", "<f4"),
    ]
    if rot is not None:
        fields.append(("alignments3D/pose", "<f4", (3,)))
    if trans is not None:
        fields.append(("alignments3D/shift", "<f4", (2,)))
    ctf_fields = ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm",
                  "ctf/amp_contrast", "ctf/phase_shift_rad")
    if ctf is not None:
        fields += [(name, "<f4") for name in ctf_fields]
    out = np.zeros(n, dtype=fields)
    out["uid"] = np.arange(n, dtype=np.uint64)
    out["blob/path"] = rel
    out["blob/idx"] = np.arange(n) if image_indices is None else image_indices
    out["blob/shape"] = int(D)
    out["blob/psize_A"] = apix
    out["blob/sign"] = -1.0
    if rot is not None:
        out["alignments3D/pose"] = cryodrgn_to_cryosparc(rot)
    if trans is not None:
        out["alignments3D/shift"] = np.asarray(trans, dtype=np.float64) * D
    if ctf is not None:
        ctf = np.asarray(ctf, dtype=np.float64)
        for j, name in enumerate(ctf_fields, start=2):
            scale = np.pi / 180 if name.endswith("_rad") else 1.0
            out[name] = ctf[:, j] * scale
    with atomic_write(path, "wb") as f:
        np.save(f, out, allow_pickle=False)
