"""One training folder (ours or cryoDRGN's): the single owner of what is known about a run.

::

    run = RunFolder.open(workdir, ind=None)   # InputError: no folder / config.yaml
    run.config, run.D (image box), run.zdim, run.lineage
    run.file("particles")                     # a recorded dataset file, found (see below)
    run.particles, run.poses, run.ctf, run.datadir
    run.weight_epochs(), run.z_epochs()       # epochs with weights.N.pkl / z.N.pkl
    run.weights(epoch) -> (path, epoch)       # latest when None; weights.pkl if unnumbered
    run.zfile(epoch) -> (path, epoch)         # latest complete epoch when None; z.pkl
    run.latents(epoch) -> Latents             # z_mu, z_logvar, checked against the config
    run.model(epoch, device) -> LoadedRun     # the decoder/encoder of an epoch
    run.ind                                   # the run's --ind (int64) or None: never guessed
    run.particle_ind(rows)                    # original-stack index of the run's rows
    run.n_original                            # particles in the original stack
    run.apix, run.require_apix(what)          # pixel size, or None / an error with a remedy
    run.state_dir, run.analysis_dir(epoch), run.umap_cache_paths(epoch)
    run.metadata_source(".star")

Dataset files are recorded in config.yaml (``dataset_args``), often as absolute paths on the
machine that trained the run. A recorded path is used when it exists; a relative one is read
against the training folder; a folder moved from a cluster with its data is handled by one
rule: the file's name in the folder of the same name beside the training folder (``run/`` next
to ``data/``), then in the training folder itself. Anything else is not found, and whatever
needs it says which file and what to do.

The particle numbering is never guessed: a run trained on a subset (``--ind``) whose index
file cannot be found has ``ind`` raise an InputError naming the file and the remedies (give the
file with ``ind=`` / ``--ind``, or the Explore dock's "Locate index file..."); it does not fall
back to the run's own row numbers, which would silently pick other particles.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import InputError
from .index import compose_index

log = logging.getLogger(__name__)

RUN_LOG = "run.log"  # the training log (ours and cryoDRGN's)
STATE_DIR = "explore"  # WORKDIR/explore/: the explorer's selection and caches
METADATA_SUFFIXES = (".star", ".cs")
DATASET_KEYS = ("particles", "poses", "ctf", "ind", "datadir", "poses_source", "ctf_source")
INDEX_NOTE = "index_location.txt"  # in STATE_DIR: an index file the user located
INDEX_REMEDY = ("give the index file: --ind FILE (select, export, eval-images), or "
                "'Locate index file...' in the Explore dock")


@dataclass
class Latents:
    """z_mu (N, zdim) float32 of one epoch (None: the final z.pkl)."""

    epoch: int | None
    zfile: Path
    z: np.ndarray
    z_logvar: np.ndarray | None

    def explorable(self) -> Latents:
        """Self, or an InputError when the latent space is 1D (no 2D views, no PCA pairs)."""
        if self.z.shape[1] < 2:
            raise InputError(f"{self.zfile}: the latent space has 1 dimension; PCA/UMAP views "
                             "and traversals need zdim >= 2")
        return self


class RunFolder:
    """A training folder and the facts derived from it; see the module docstring."""

    def __init__(self, workdir, config: dict, ind: str | os.PathLike | None = None):
        self.workdir = Path(workdir)
        self.config = config
        self._ind_override = Path(ind) if ind is not None else None

    @classmethod
    def of(cls, run) -> RunFolder:
        """``run`` itself when it is a RunFolder, else the folder it names opened."""
        return run if isinstance(run, RunFolder) else cls.open(run)

    @classmethod
    def open(cls, workdir, *, ind: str | os.PathLike | None = None) -> RunFolder:
        """Open ``workdir`` (its config.yaml); ``ind`` replaces the recorded index file."""
        from ..training.config import load_config

        workdir = Path(workdir)
        if not workdir.is_dir():
            raise InputError(f"{workdir}: no such training folder")
        run = cls(workdir, load_config(workdir / "config.yaml"), ind)
        if ind is not None and not Path(ind).is_file():
            raise InputError(f"Index file {ind} does not exist; check the file name.")
        return run

    def __repr__(self) -> str:
        return f"RunFolder({str(self.workdir)!r})"

    # -- config facts ----------------------------------------------------------------------
    @property
    def args(self) -> dict:
        return self.config.get("dataset_args") or {}

    @property
    def D(self) -> int:
        """Image box (pixels) the run was trained on."""
        return int(self.config["lattice_args"]["D"]) - 1

    @property
    def zdim(self) -> int | None:
        z = (self.config.get("model_args") or {}).get("zdim")
        return None if z is None else int(z)

    @property
    def lineage(self) -> dict | None:
        return self.config.get("lineage")

    # -- dataset files ---------------------------------------------------------------------
    def recorded(self, key: str) -> Path | None:
        """The path config.yaml records for ``key`` (relative ones against the folder)."""
        raw = self.args.get(key)
        if not raw or not isinstance(raw, str):
            return None
        p = Path(raw)
        return p if p.is_absolute() else self.workdir / p

    def file(self, key: str) -> Path | None:
        """The recorded file ``key`` where it is now (see the module docstring), or None when
        it is not recorded or not found."""
        p = self.recorded(key)
        if p is None:
            return None
        for cand in (p, self.workdir.parent / p.parent.name / p.name, self.workdir / p.name):
            if cand.exists():
                if cand != p:
                    log.info("%s: %s not found; using %s (the run folder moved with its data)",
                             self.workdir, p, cand)
                return cand
        return None

    def need(self, key: str, why: str) -> Path:
        """Like :meth:`file`, but an InputError that names the missing file and says ``why``
        it is needed."""
        p = self.file(key)
        if p is not None:
            return p
        rec = self.recorded(key)
        if rec is None:
            raise InputError(f"{self.workdir}/config.yaml records no {key} file "
                             f"(dataset_args.{key}); {why}")
        raise InputError(f"{rec} not found ({key} file of {self.workdir}, also looked in "
                         f"{self.workdir.parent / rec.parent.name} and {self.workdir}); {why}: "
                         "copy it back, or move the run folder next to its data")

    @property
    def particles(self) -> Path:
        return self.need("particles", "the particle images are needed here")

    @property
    def poses(self) -> Path | None:
        return self.file("poses")

    @property
    def ctf(self) -> Path | None:
        return self.file("ctf")

    @property
    def datadir(self) -> Path | None:
        return self.file("datadir")

    def missing(self, keys=("particles", "poses", "ctf", "ind")) -> list[Path]:
        """Recorded dataset files that are not found (cheap: reads nothing)."""
        out = []
        for k in keys:
            if k == "ind" and self.index_file is not None:
                continue
            if self.recorded(k) is not None and self.file(k) is None:
                out.append(self.recorded(k))
        return out

    def particle_data(self, n: int | None = None, why: str = "the particles are needed here"):
        """The run's particles, poses and CTF as it trained on them (``training.data``'s
        ``ParticleData``, lazy), checked: the recorded files are found, the box is the run's,
        and (``n``) one particle per row of the latents."""
        from ..training.data import load_particle_data

        particles, poses = self.need("particles", why), self.need("poses", why)
        ctf = self.need("ctf", why) if self.recorded("ctf") is not None else None
        data = load_particle_data(particles, poses, ctf=ctf, ind=self.ind, datadir=self.datadir)
        if data.D != self.D:
            raise InputError(f"{particles}: images of {data.D} pixels but the run was trained on "
                             f"{self.D}; is config.yaml's particles file the one the run used?")
        if n is not None and data.n != n:
            raise InputError(f"{self.workdir}: {n} latent points but the dataset selects "
                             f"{data.n} particles; did the index file change?")
        return data

    def metadata_source(self, suffix: str) -> Path | None:
        """A recorded file of type ``suffix`` ('.star' or '.cs') that lists every original
        particle: the particles file, else the poses or CTF file the run was given."""
        for key in ("particles", "poses_source", "ctf_source", "poses", "ctf"):
            p = self.file(key)
            if p is not None and p.suffix.lower() == suffix and p.is_file():
                return p
        return None

    # -- particle numbering ------------------------------------------------------------------
    @property
    def has_index(self) -> bool:
        """Whether the run was trained on a subset (an index file or a count)."""
        return self._ind_override is not None or self.args.get("ind") is not None

    @property
    def index_missing(self) -> bool:
        """Whether the run records an index file (it was trained on a subset) that is not
        found, and none was located: its particle numbering is unknown until one is given."""
        return self.recorded("ind") is not None and self.index_file is None

    @property
    def index_file(self) -> Path | None:
        return self._ind_override or self.file("ind") or self._located_index()

    def _located_index(self) -> Path | None:
        """The index file a user located for this run earlier (``explore/index_location.txt``)."""
        try:
            p = Path((self.state_dir / INDEX_NOTE).read_text().strip())
        except OSError:
            return None
        return p if p.is_file() else None

    def locate_index(self, path, remember: bool = True) -> None:
        """Use ``path`` as the run's index file (checked against the run's latents by the
        caller: :meth:`check_rows`); ``remember`` notes it in the run folder so that later
        sessions and commands find it too."""
        from .atomic import atomic_write

        path = Path(path).resolve()
        if not path.is_file():
            raise InputError(f"Index file {path} does not exist; check the file name.")
        self._ind_override = path
        self.__dict__.pop("ind", None)
        if remember:
            try:
                self.state_dir.mkdir(exist_ok=True)
                with atomic_write(self.state_dir / INDEX_NOTE, "w") as f:
                    f.write(f"{path}\n")
            except (OSError, InputError) as e:
                log.warning("the index location is not remembered in %s (%s)", self.state_dir, e)

    @cached_property
    def ind(self) -> np.ndarray | None:
        """The run's index into the original stack (int64), or None when it used them all.

        InputError when the run records an index file that is not found: never guessed."""
        from .index import load_index

        if self._ind_override is not None:
            return load_index(self._ind_override, None)
        raw = self.args.get("ind")
        if raw is None:
            return None
        if isinstance(raw, int) and not isinstance(raw, bool):
            return np.arange(raw, dtype=np.int64)  # cryoDRGN's --ind N: the first N
        p = self.file("ind") or self._located_index()
        if p is None:
            rec = self.recorded("ind")
            if rec is None:
                raise InputError(f"{self.workdir}/config.yaml: dataset_args.ind {raw!r} is "
                                 "neither an index file nor a particle count")
            raise InputError(
                f"{self.workdir} was trained on the particles of {rec}, which is not found: "
                f"the original particle numbers of its rows are unknown; {INDEX_REMEDY}")
        return load_index(p, None)

    def particle_ind(self, rows=None, n: int | None = None) -> np.ndarray:
        """Original-stack index of the run's ``rows`` (all rows when None; ``n`` rows when the
        run used the whole stack and ``n`` is given, else the stack is opened to count)."""
        ind = self.ind
        if ind is None:
            total = n if n is not None else self.n_original
            ind = np.arange(total, dtype=np.int64)
        return ind if rows is None else compose_index(ind, rows)

    def check_rows(self, n: int, what) -> None:
        """The run's index must hold one entry per row of ``what`` (n rows)."""
        ind = self.ind
        if ind is not None and len(ind) != n:
            raise InputError(f"{self.index_file} holds {len(ind)} indices but {what} has {n} "
                             f"rows: it is not the index this run was trained with; "
                             f"{INDEX_REMEDY}")

    @cached_property
    def n_original(self) -> int:
        """Particles in the original stack (the particles file the run's index refers to)."""
        from .particles import open_particles

        return open_particles(self.particles, datadir=self.datadir).n

    # -- pixel size --------------------------------------------------------------------------
    @cached_property
    def apix(self) -> float | None:
        """Voxel size of the run's maps (Angstrom): the recorded pixel size, else the CTF
        file's rescaled to the run's box; None when neither is known."""
        v = self.args.get("apix")
        if v:
            return float(v)
        ctf = self.ctf
        if ctf is not None:
            from .ctf import load_ctf

            try:
                table = load_ctf(ctf)
            except InputError as e:
                log.info("pixel size not read from %s: %s", ctf, e)
                return None
            return float(table[0, 1] * table[0, 0] / self.D)
        return None

    def require_apix(self, what: str = "the maps") -> float:
        """The pixel size, or an InputError that says where it was looked for and the remedy."""
        if self.apix is not None:
            return self.apix
        rec = self.recorded("ctf")
        where = (f"its CTF file {rec} is not found" if rec is not None and self.ctf is None
                 else "config.yaml records neither a pixel size nor a CTF file")
        raise InputError(f"{self.workdir}: the pixel size of {what} is unknown ({where}); "
                         "pass --Apix")

    # -- epochs, weights, latents ------------------------------------------------------------
    def weight_epochs(self) -> list[int]:
        from ..training.checkpoint import epochs_in

        return epochs_in(self.workdir)

    def z_epochs(self) -> list[int]:
        from ..training.checkpoint import epochs_in

        return epochs_in(self.workdir, "z")

    def weights(self, epoch: int | None = None) -> tuple[Path, int | None]:
        """Weights file of ``epoch`` (latest when None; weights.pkl if no numbered files)."""
        eps = self.weight_epochs()
        if epoch is None:
            if eps:
                return self.workdir / f"weights.{eps[-1]}.pkl", eps[-1]
            if (self.workdir / "weights.pkl").exists():
                return self.workdir / "weights.pkl", None
            raise InputError(f"{self.workdir}: no weights.N.pkl or weights.pkl; is this a "
                             "training folder?")
        p = self.workdir / f"weights.{epoch}.pkl"
        if not p.exists():
            have = ", ".join(map(str, eps)) or "none"
            raise InputError(f"{self.workdir}: no checkpoint for epoch {epoch} (epochs present: "
                             f"{have})")
        return p, epoch

    def zfile(self, epoch: int | None = None) -> tuple[Path, int | None]:
        """Latent file of ``epoch``; by default the latest epoch whose weights are complete
        (weights.N.pkl is written after z.N.pkl), else the final z.pkl."""
        eps = self.z_epochs()
        if epoch is None:
            done = sorted(set(eps) & set(self.weight_epochs()))
            if done or eps:
                e = (done or eps)[-1]
                return self.workdir / f"z.{e}.pkl", e
            if (self.workdir / "z.pkl").is_file():
                return self.workdir / "z.pkl", None
            raise InputError(
                f"{self.workdir}: no latent files (z.N.pkl or z.pkl); train a model into this "
                "folder first, or open the training folder itself rather than a folder above "
                "or below it")
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool):
            raise InputError(f"epoch must be a whole number, not {epoch!r}")
        p = self.workdir / f"z.{epoch}.pkl"
        if not p.is_file():
            have = ", ".join(map(str, eps)) or "none"
            raise InputError(f"{self.workdir}: no z.{epoch}.pkl for epoch {epoch} (epochs with "
                             f"latents: {have}); choose one of those")
        return p, int(epoch)

    def latents(self, epoch: int | None = None) -> Latents:
        """The latents of ``epoch`` (latest when None), checked: shape, the config's zdim,
        finite values, and one row per particle of the run's index when it has one."""
        from ..training.checkpoint import load_z

        zfile, ep = self.zfile(epoch)
        mu, logvar = load_z(zfile)
        if mu.ndim != 2 or len(mu) == 0:
            raise InputError(f"{zfile}: expected an N x zdim array of latents, found shape "
                             f"{mu.shape}")
        if self.zdim is not None and self.zdim != mu.shape[1]:
            raise InputError(f"{zfile}: latents have {mu.shape[1]} dimensions but config.yaml's "
                             f"model has zdim {self.zdim}; the files come from different runs")
        bad = ~np.isfinite(mu).all(axis=1)
        if bad.any():
            raise InputError(f"{zfile}: latents of {int(bad.sum())} particles are NaN or "
                             f"infinite (first: particle {int(np.flatnonzero(bad)[0])}); did "
                             "training diverge? Choose an earlier epoch")
        return Latents(ep, zfile, mu, logvar)

    def model(self, epoch: int | None = None, device="cpu"):
        """The trained model of ``epoch`` (latest when None): a ``model.load.LoadedRun``."""
        from ..model.load import build_model

        weights, ep = self.weights(epoch)
        return build_model(self.config, self.workdir / "config.yaml", weights, ep, device)

    # -- caches and analyses -----------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.workdir / STATE_DIR

    def analysis_dir(self, epoch: int | None, kind: str = "analyze") -> Path:
        """cryoDRGN's default folder of an analysis of ``epoch``: KIND.N (KIND for z.pkl);
        ``kind`` analyze, landscape (analyze_landscape) or match."""
        return self.workdir / (kind if epoch is None else f"{kind}.{epoch}")

    @property
    def run_log(self) -> Path:
        return self.workdir / RUN_LOG

    def umap_cache_paths(self, epoch: int | None) -> list[Path]:
        """Where an embedding of ``epoch`` may already be: the analysis folder's umap.pkl
        (ours or cryoDRGN's), then the explorer's cache."""
        tag = "final" if epoch is None else str(epoch)
        return [self.analysis_dir(epoch) / "umap.pkl", self.state_dir / f"umap.{tag}.pkl"]
