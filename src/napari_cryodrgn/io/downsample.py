"""Downsampling particle stacks and maps by Fourier cropping, as cryoDRGN's ``downsample``.

Each image's centred Hartley transform is cropped to its central d x d block (rows and columns
D/2 - d/2 .. D/2 + d/2 - 1) and transformed back with a 1/(d*d) normalisation, so pixel values
scale by (D/d)^2; the images equal cryoDRGN 4.3.1's to float32 precision. The new pixel size is
round(apix * D / d, 6). A map (``downsample_volume``) is cropped the same way in 3D.

Particles are streamed: ``batch_size`` images at a time are read (positioned reads, no memory
map), cropped and appended to the output while the next batch is read in a background thread,
so memory stays flat whatever the stack size: about 5 batches (reading copies, the spectra)
on top of the interpreter, some 170 MB at the default batch. Every output is written under a
temporary name beside its final name and renamed only when all of them are complete (the
listing .txt/.star last), so a failure leaves no partial output.

Outputs, by the suffix of ``out`` (this module is file-to-file conversion, hence ``io``):

- ``.mrcs``/``.mrc``: one stack, particles in the order of ``ind`` (as cryoDRGN);
- ``.mrcs`` with ``chunk``: OUT.0.mrcs, OUT.1.mrcs, ... of ``chunk`` images each and OUT.txt
  listing them (paths relative to OUT.txt's folder), cryoDRGN's names;
- ``.star`` (from a .star input): one new stack per input stack (its file name, in ``outdir``,
  default the .star's folder) with the particles the .star selects, and a copy of the input
  .star in which only the changed values differ: ``_rlnImageName`` points at the new stacks
  (relative to the new .star), ``_rlnImagePixelSize``/``_rlnDetectorPixelSize`` scale by D/d,
  ``_rlnImageSize`` becomes d and origins in pixels (RELION 3.0) scale by d/D, so poses and
  CTF parsed from it match the new images;
- ``.txt`` (from a .txt input): one new stack per input stack, listed in OUT.txt.

With ``ind``, .star and .txt outputs keep the input's particle order (the index is sorted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft

from ..errors import InputError
from ..geometry.transforms import ht_center
from .atomic import check_writable_dir, temp_name
from .index import load_index
from .mrc import StackWriter, read_mrc, read_mrc_header, write_mrc

log = logging.getLogger(__name__)

STACK_SUFFIXES = (".mrcs", ".mrc")
OUT_SUFFIXES = (".mrcs", ".mrc", ".star", ".txt")
BATCH_BYTES = 32 << 20  # input bytes per batch when batch_size is not given
MAX_BATCH = 5000  # cryoDRGN's default batch size


@dataclass
class DownsampleResult:
    """What :func:`downsample_stack` / :func:`downsample_volume` wrote."""

    out: Path  # the file asked for (the stack, the .txt listing or the .star)
    n: int  # images written
    D: int  # new box
    D_orig: int
    apix: float | None  # new pixel size (None: unknown)
    stacks: list[Path] = field(default_factory=list)  # the stack files written


# -- the numbers ---------------------------------------------------------------------------------
def new_pixel_size(apix: float | None, D: int, d: int) -> float | None:
    """cryoDRGN's pixel size after downsampling ``D`` to ``d``: round(apix * D / d, 6)."""
    return None if apix is None else round(float(apix) * D / d, 6)


def check_box(d, D: int, what) -> int:
    """``d`` as the new box of images of side ``D``: even, positive, at most ``D``."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
        raise InputError(f"-D must be a whole number of pixels, not {d!r}.")
    d = int(d)
    if d <= 0 or d % 2:
        raise InputError(f"-D {d}: the new box must be an even number of pixels above 0 "
                         f"(at most {D}, the box of {what}).")
    if d > D:
        raise InputError(f"-D {d} is larger than the box of {what} ({D} pixels); downsampling "
                         f"can only shrink it: choose an even -D of at most {D}.")
    return d


def _centred_hartley_block(x: np.ndarray, d: int, workers: int) -> np.ndarray:
    """Central ``d`` x ``d`` block of the centred 2D Hartley transform of real images ``x``
    (B, D, D), float32.

    Hand-written from a real FFT rather than cropping ``geometry.transforms.ht_center``: the
    half-spectrum (negative kx through conjugate symmetry) and the shift as a sign
    (-1)^(ky+kx) instead of copies make D=256 -> 128 about 4x faster on one core (about 12 ms
    -> 2.7 ms per image for the whole crop, measured here), and the FFTs are most of the
    work of downsampling."""
    D = x.shape[-1]
    h = d // 2
    f = scipy.fft.rfft2(x, workers=workers)  # (B, D, D//2 + 1): kx = 0 .. D/2
    k = np.arange(-h, h)
    pos = f[:, (k % D)[:, None], np.arange(h)[None, :]]  # kx = 0 .. h-1
    neg = np.conj(f[:, ((-k) % D)[:, None], np.arange(h, 0, -1)[None, :]])  # kx = -h .. -1
    block = np.concatenate([neg, pos], axis=-1)  # columns kx = -h .. h-1, rows ky = -h .. h-1
    sign = np.where(k % 2, -1.0, 1.0).astype(np.float32)
    return ((block.real - block.imag) * sign[:, None] * sign[None, :]).astype(np.float32)


def fourier_crop(images: np.ndarray, d: int, workers: int = 1) -> np.ndarray:
    """Downsample images (B, D, D) or (D, D) to ``d`` pixels by Fourier cropping (float32).

    ``d`` equal to the box returns the images unchanged (cryoDRGN's round trip gives the same
    values to float32 precision)."""
    x = np.asarray(images, dtype=np.float32)
    single = x.ndim == 2
    x = x[None] if single else x
    if x.shape[-1] == d:
        out = x.copy()
    else:
        hart = _centred_hartley_block(x, d, workers)
        out = _centred_hartley_block(hart, d, workers) / np.float32(d * d)
    return out[0] if single else out


def fourier_crop_volume(vol: np.ndarray, d: int) -> np.ndarray:
    """Downsample a cubic map (D, D, D) to ``d`` voxels by cropping its centred 3D Hartley
    transform (float32)."""
    vol = np.asarray(vol, dtype=np.float32)
    D = vol.shape[-1]
    if D == d:
        return vol.copy()
    a = D // 2 - d // 2
    block = ht_center(vol, 3)[a:a + d, a:a + d, a:a + d]
    return (ht_center(block, 3) / np.float32(d ** 3)).astype(np.float32)


def default_batch_size(D: int) -> int:
    """Images per batch so that one batch of input is about ``BATCH_BYTES``."""
    return int(np.clip(BATCH_BYTES // (D * D * 4), 1, MAX_BATCH))


# -- writing -------------------------------------------------------------------------------------
class _Staged:
    """Output files written under temporary names beside their final names, renamed onto them
    together by :meth:`commit` (in the order staged) or all removed by :meth:`abort`; as a
    context manager, committed when the block ends normally and aborted when it raises.

    Not ``atomic_write``: a .star output may stand for thousands of stacks, which are closed
    as soon as each is written but renamed only once all of them are complete."""

    def __init__(self):
        self.items: list[tuple[Path, Path]] = []
        self.files: list = []

    def path(self, final: Path) -> Path:
        """The temporary name to write ``final`` under (moved onto it at commit)."""
        tmp = temp_name(final)
        self.items.append((tmp, final))
        return tmp

    def open(self, final: Path):
        tmp = temp_name(final)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as e:
            raise InputError(f"Cannot write {final}: {e.strerror}; choose a writable "
                             "folder.") from None
        self.items.append((tmp, final))
        f = os.fdopen(fd, "wb")
        self.files.append(f)
        return f

    def commit(self) -> None:
        for tmp, final in self.items:
            os.replace(tmp, final)
        self.items = []

    def abort(self) -> None:
        for f in self.files:
            with contextlib.suppress(OSError):
                f.close()
        for tmp, _ in self.items:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self.items = []

    def __enter__(self) -> _Staged:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _batches(src, rows: np.ndarray, d: int, batch: int, workers: int):
    """Cropped images of ``rows`` of ``src``, ``batch`` at a time; the next batch is read in a
    background thread while this one is cropped (reads and FFTs release the GIL)."""
    starts = range(0, len(rows), batch)
    if not len(rows):
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(src.images, rows[:batch])
        for s in starts:
            imgs = pending.result()
            if s + batch < len(rows):
                pending = pool.submit(src.images, rows[s + batch: s + 2 * batch])
            yield fourier_crop(imgs, d, workers)


# -- planning the outputs ------------------------------------------------------------------------
@dataclass
class _Plan:
    stacks: list[tuple[Path, np.ndarray]]  # (stack path, source rows in output order)
    listing: Path | None = None  # a .txt or .star written after the stacks
    star_rows: np.ndarray | None = None  # .star output: the kept rows, sorted


def _unique_names(paths: list[Path], folder: Path) -> list[Path]:
    """``folder``/file name of each input stack; later duplicates get ``_2``, ``_3``..."""
    used: set[str] = set()
    out = []
    for p in paths:
        name, k = p.name, 1
        while name in used:
            k += 1
            name = f"{p.stem}_{k}{p.suffix}"
        used.add(name)
        out.append(folder / name)
    return out


def _per_stack_plan(src, rows: np.ndarray, folder: Path) -> list[tuple[Path, np.ndarray]]:
    """One output stack per input stack, in order of first use, holding ``rows`` (sorted)."""
    sid = src.stack_id[rows]
    order = list(dict.fromkeys(sid.tolist()))
    names = _unique_names([Path(src.stacks[s].path) for s in order], folder)
    return [(p, rows[sid == s]) for p, s in zip(names, order, strict=True)]


def _plan(src, out: Path, rows: np.ndarray, chunk: int | None, outdir: Path | None) -> _Plan:
    suffix = out.suffix.lower()
    folder = outdir if outdir is not None else out.parent
    if suffix in STACK_SUFFIXES and chunk is None:
        if outdir is not None:
            log.warning("--outdir %s is not used: the stack is written to %s", outdir, out)
        return _Plan([(out, rows)])
    if suffix in STACK_SUFFIXES:
        parts = [(folder / f"{out.stem}.{i}{out.suffix}", rows[s:s + chunk])
                 for i, s in enumerate(range(0, len(rows), chunk))]
        return _Plan(parts, out.with_suffix(".txt"))
    rows = np.sort(rows)
    plan = _Plan(_per_stack_plan(src, rows, folder), out)
    if suffix == ".star":
        plan.star_rows = rows
    return plan


def _check_request(src, out: Path, chunk: int | None, batch_size: int | None) -> None:
    in_suffix, suffix = src.path.suffix.lower(), out.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise InputError(f"{out}: unsupported output type '{suffix}'; write a .mrcs stack (or "
                         ".star / .txt from a .star / .txt input).")
    if chunk is not None:
        if suffix != ".mrcs":
            raise InputError(f"--chunk writes OUT.0.mrcs, OUT.1.mrcs, ... and OUT.txt: give "
                             f"-o a .mrcs name, not {out.name}.")
        if chunk < 1:
            raise InputError(f"--chunk {chunk}: give a positive number of images per file.")
    if suffix == ".star" and in_suffix != ".star":
        raise InputError(f"{out}: a .star output needs a .star input (it is a copy of it); "
                         "write a .mrcs stack instead.")
    if suffix == ".txt" and in_suffix != ".txt":
        raise InputError(f"{out}: a .txt output keeps the stacks of a .txt input; for several "
                         "stacks listed in a .txt, use -o OUT.mrcs --chunk K.")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"-b {batch_size}: give a positive number of images per batch.")


def _check_targets(paths: list[Path], inputs: list[Path], overwrite: bool) -> None:
    for folder in dict.fromkeys(p.parent for p in paths):
        check_writable_dir(folder)
    for p in paths:
        if p.exists() and any(i.exists() and os.path.samefile(p, i) for i in inputs):
            raise InputError(f"{p} is an input file; downsampling would overwrite it: choose "
                             "another output name or --outdir.")
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise InputError(f"{existing[0]}{more} already exists; pass --overwrite to "
                             "replace it or choose another output name.")


def _resolve_apix(src_apix: float | None, apix: float | None, what) -> float | None:
    if apix is not None:
        if not (np.isfinite(apix) and apix > 0):
            raise InputError(f"--Apix {apix}: the pixel size must be positive.")
        if src_apix is not None and abs(apix / src_apix - 1) > 1e-3:
            log.warning("%s says %g A/px; --Apix %g is used instead", what, src_apix, apix)
        return float(apix)
    return src_apix


# -- the entry points ----------------------------------------------------------------------------
def downsample_stack(
    particles,
    out,
    D: int,
    *,
    datadir=None,
    ind=None,
    chunk: int | None = None,
    batch_size: int | None = None,
    apix: float | None = None,
    outdir=None,
    overwrite: bool = False,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> DownsampleResult:
    """Downsample the particles of ``particles`` (.mrcs/.mrc/.star/.cs/.txt, or an open
    ParticleSource) to box ``D`` and write ``out`` (see the module docstring for the output
    types). ``ind``: index file (.pkl/.txt) or array of particles to keep. ``apix``: pixel
    size of the input (default: what the input says; when it says nothing the new stacks
    record none, with a warning). ``workers``: FFT threads. ``progress(done, total)`` after
    each batch."""
    from .particles import ParticleSource, open_particles

    src = particles if isinstance(particles, ParticleSource) else open_particles(particles,
                                                                                datadir)
    out = Path(out)
    outdir = Path(outdir) if outdir is not None else None
    _check_request(src, out, chunk, batch_size)
    d = check_box(D, src.D, src.path)
    rows = np.arange(src.n)
    if ind is not None:
        rows = load_index(ind, src.n) if isinstance(ind, (str, os.PathLike)) else np.asarray(ind)
        if len(rows) == 0:
            raise InputError(f"{ind} selects no particles; nothing to downsample.")
        if rows.min() < 0 or rows.max() >= src.n:
            raise InputError(f"the index selects particle {rows.max()} but {src.path} holds "
                             f"{src.n}: is it from another dataset?")
        rows = rows.astype(np.int64)
    src_apix = _resolve_apix(src.apix, apix, src.path)
    new_apix = new_pixel_size(src_apix, src.D, d)
    if new_apix is None:
        log.warning("%s does not give a pixel size, so the new stacks record none; pass "
                    "--Apix with the input's pixel size to record the new one (%g x it)",
                    src.path, src.D / d)
    plan = _plan(src, out, rows, chunk, outdir)
    targets = [p for p, _ in plan.stacks] + ([plan.listing] if plan.listing else [])
    inputs = [src.path] + [Path(h.path) for h in src.stacks]
    _check_targets(targets, inputs, overwrite)
    star_edit = None
    if plan.star_rows is not None:
        star_edit = _star_editor(src, plan, d, apix)  # checks the .star before any work

    batch = batch_size or default_batch_size(src.D)
    total, done = len(rows), 0
    with _Staged() as staged:
        for path, part in plan.stacks:
            # apix None records an empty cell: "pixel size unknown", as the input said
            with StackWriter(staged.path(path), len(part), d, new_apix, atomic=False) as w:
                for imgs in _batches(src, part, d, batch, workers):
                    w.write(imgs)
                    done += len(imgs)
                    if progress is not None:
                        progress(done, total)
        if plan.listing is not None:
            with staged.open(plan.listing) as f:
                if star_edit is not None:
                    star_edit(f)
                else:
                    f.write("".join(f"{_rel(p, plan.listing.parent)}\n"
                                    for p, _ in plan.stacks).encode())
                f.flush()
                os.fsync(f.fileno())
    return DownsampleResult(plan.listing or out, total, d, src.D, new_apix,
                            [p for p, _ in plan.stacks])


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(start))


def downsample_volume(path, out, D: int, *, apix: float | None = None,
                      overwrite: bool = False) -> DownsampleResult:
    """Downsample the cubic map ``path`` to ``D`` voxels (3D Fourier cropping) into ``out``
    (.mrc), voxel size round(apix * D_orig / D, 6). cryoDRGN 4.3.1's ``--is-vol`` gives the
    same voxels but writes voxel size 1.0 whatever the input's."""
    path, out = Path(path), Path(out)
    header = read_mrc_header(path)
    nz, ny, nx = header.shape
    if not nz == ny == nx:
        raise InputError(f"{path} holds a {nz} x {ny} x {nx} array, not a cubic map; --is-vol "
                         "needs a cubic map (for a particle stack, drop --is-vol).")
    if nx % 2:
        raise InputError(f"{path} has an odd box ({nx} voxels); downsampling needs an even "
                         "box: pad or crop the map by one voxel first.")
    if out.suffix.lower() != ".mrc":
        raise InputError(f"{out}: write the downsampled map as a .mrc file.")
    d = check_box(D, nx, path)
    vol_apix = _resolve_apix(header.apix, apix, path)
    new_apix = new_pixel_size(vol_apix, nx, d)
    if new_apix is None:
        log.warning("%s does not give a voxel size: %s records none (pass --Apix with the "
                    "map's voxel size)", path, out)
    _check_targets([out], [path], overwrite)
    vol, _ = read_mrc(path)
    small = fourier_crop_volume(vol, d)
    with _Staged() as staged:
        write_mrc(staged.path(out), small, new_apix, stack=False, atomic=False)
    return DownsampleResult(out, 1, d, nx, new_apix, [out])


# -- the .star output ----------------------------------------------------------------------------
_TOKEN = re.compile(rb"\S+")
_PIXEL_ORIGINS = ("rlnOriginX", "rlnOriginY", "rlnOriginXPrior", "rlnOriginYPrior")


def _fmt(v: float) -> bytes:
    return f"{v:.6f}".encode()


def _star_editor(src, plan: _Plan, d: int, apix: float | None):
    """A function writing the new .star to an open file: the input .star copied line by line
    with the unselected particle rows dropped and the box, pixel size, origin-in-pixels and
    image name values of the others replaced (see the module docstring)."""
    from .subset import _StarScan, _walk_star

    star = src.path
    scan = _StarScan(star)
    if scan.n != src.n:
        raise InputError(f"{star}: its particle table has {scan.n} rows but {src.n} particles "
                         "were read from it; the file is unusual (several particle tables?).")
    scale = src.D / d
    if apix is not None and src.apix is not None and abs(apix / src.apix - 1) > 1e-3:
        raise InputError(f"{star} gives pixel size {src.apix:g} A but --Apix is {apix:g}: a "
                         ".star output keeps the file's pixel size; fix the file or drop --Apix.")
    rows = plan.star_rows
    names = {}  # source row -> new _rlnImageName
    for path, part in plan.stacks:
        rel = _rel(path, plan.listing.parent)
        for k, r in enumerate(part.tolist(), start=1):
            names[r] = f"{k:06d}@{rel}".encode()
    keep = np.zeros(src.n, bool)
    keep[rows] = True
    px = {"rlnImagePixelSize": lambda v: _fmt(round(float(v) * scale, 6)),
          "rlnDetectorPixelSize": lambda v: _fmt(float(v) * scale),
          "rlnImageSize": lambda v: str(d).encode()}
    particle = dict(px, **{k: (lambda v: _fmt(float(v) / scale)) for k in _PIXEL_ORIGINS})
    optics_loops = {i for i, (block, _) in enumerate(scan.loops) if block == "optics"}

    def write(f) -> None:
        labels: dict[int, list[str]] = {}
        seen_rows: set[int] = set()
        row = -1
        with open(star, "rb") as g:
            for raw, _block, loop, is_row in _walk_star(g):
                s = raw.strip()
                if loop >= 0 and not is_row and s.startswith(b"_") and loop not in seen_rows:
                    labels.setdefault(loop, []).append(s.split()[0][1:].decode("utf-8",
                                                                                "replace"))
                if not is_row or (loop != scan.particle_loop and loop not in optics_loops):
                    f.write(raw)
                    continue
                seen_rows.add(loop)
                edits = px if loop in optics_loops else particle
                if loop == scan.particle_loop:
                    row += 1
                    if not keep[row]:
                        continue
                    edits = dict(edits, rlnImageName=lambda v, r=row: names[r])
                f.write(_edit_row(raw, labels.get(loop, []), edits, star))
        if row + 1 != src.n:
            raise InputError(f"{star} changed while it was being copied; try again.")

    return write


def _edit_row(raw: bytes, labels: list[str], edits: dict, star: Path) -> bytes:
    """``raw`` with the values of the columns named in ``edits`` replaced (other bytes kept)."""
    tokens = list(_TOKEN.finditer(raw))
    if len(tokens) != len(labels):
        raise InputError(f"{star}: a row has {len(tokens)} values for {len(labels)} columns "
                         f"({raw.strip()[:60]!r}...); quoted values are not supported in a "
                         ".star output: write a .mrcs stack instead.")
    out, end = [], 0
    for tok, label in zip(tokens, labels, strict=True):
        fn = edits.get(label)
        if fn is None:
            continue
        try:
            new = fn(tok.group().decode())
        except ValueError:
            raise InputError(f"{star}: _{label} value {tok.group()!r} is not a number.") from None
        out += [raw[end:tok.start()], new]
        end = tok.end()
    return b"".join(out) + raw[end:]
