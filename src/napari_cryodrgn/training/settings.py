"""The training settings, declared once.

:class:`TrainSettings` lists every setting of a training run: default, kind, range or choices,
help text, command-line flags (cryoDRGN's spellings) and the face that shows it (``gui``: the
Train dock's form and the CLI; ``advanced``: the form's collapsible section and the CLI;
``cli``: the command line only; ``api``: library callers only). Everything else is made from it:

- the ``train``/``train_vae`` arguments (:func:`add_arguments`) and the settings of a parsed
  command line (:func:`from_args`);
- the Train dock's form (``_napari/settings_form.py``), which starts from :func:`gui_defaults`;
- the demo's settings (``demo.DEMO_SETTINGS``, an instance);
- the checks every caller's values pass (:meth:`TrainSettings.checked`, :func:`check_values`:
  one-line :class:`~napari_cryodrgn.errors.InputError`);
- the trainer's :class:`TrainConfig` (:func:`to_config`) after :func:`resolve`, the one place
  where sentinel values (beta ``None`` = 1/zdim, enc_mask ``None`` = D/2, shuffler_size
  ``None`` = auto, precision ``auto``) become numbers.

Qt-free and torch-free at import (the CLI builds its parser from it at start-up).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ..model.vae import ModelArgs

FACES = ("gui", "advanced", "cli", "api")
PARTS = ("input", "model", "train", "process")
PARTICLE_FILTER = "*.mrcs *.mrc *.star *.cs *.txt"
META_FILTER = "*.pkl *.star *.cs"
INDEX_FILTER = "*.pkl *.txt"


@dataclass(frozen=True)
class Spec:
    """How one setting is shown and checked.

    ``kind``: int, float, str, bool, file (an existing file), dir (an existing folder), outdir
    (a folder to write) or dict. ``part``: where it goes (input: read by the data loader and
    recorded in dataset_args; model: ModelArgs / model_args; train: TrainConfig / train_args;
    process: how this process runs, not recorded). ``min``/``above``: inclusive/exclusive lower
    bound; ``below``: exclusive upper bound. ``auto``: what ``None`` means (None is allowed only
    then, or for optional files).
    ``none_alias``: a value read as ``None`` (enc_mask -2). ``cli_required``: the CLI insists
    (the GUI has its own default). ``gui``: widget options (max, step, decimals, choices,
    filter, placeholder, auto_text). For a bool, the flag stores the opposite of the default.
    """

    help: str
    kind: str
    part: str
    face: str = "advanced"
    flags: tuple[str, ...] = ()
    label: str = ""
    choices: tuple = ()
    min: float | None = None
    above: float | None = None
    below: float | None = None
    auto: str | None = None
    none_alias: Any = None
    cli_required: bool = False
    positional: bool = False
    missing: str = ""
    gui: dict = field(default_factory=dict)

    @property
    def flag(self) -> str:
        """The flag a message names (the long one; empty for the positional argument)."""
        longs = [f for f in self.flags if f.startswith("--")]
        return (longs or list(self.flags) or [""])[0]


def _s(default, help: str, kind: str, part: str, **spec):
    return field(default=default, metadata={"spec": Spec(help, kind, part, **spec)})


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a training run (see the module docstring). Field order is the form's."""

    # -- inputs ---------------------------------------------------------------------------------
    particles: str | None = _s(
        None, ".mrcs/.mrc stack, .star, .cs or .txt list of stacks", "file", "input",
        face="gui", positional=True, label="Particles",
        missing="Choose a particle file (.mrcs, .star, .cs or .txt).",
        gui={"filter": PARTICLE_FILTER, "placeholder": ".mrcs, .star, .cs or .txt"})
    poses: str | None = _s(
        None, "pose .pkl, .star or .cs", "file", "input", face="gui", flags=("--poses",),
        label="Poses", cli_required=True,
        missing="Choose a pose file (.pkl, or the .star/.cs with the particles).",
        gui={"filter": META_FILTER, "placeholder": "pose .pkl (or the .star/.cs)"})
    ctf: str | None = _s(
        None, "CTF .pkl, .star or .cs", "file", "input", face="gui", flags=("--ctf",),
        label="CTF", gui={"filter": META_FILTER, "placeholder": "CTF .pkl (or the .star/.cs)"})
    outdir: str | None = _s(
        None, "output folder: new or empty (one that holds a run: continue it with --load "
        "latest)", "outdir", "input", face="gui", flags=("-o", "--outdir"),
        label="Output folder", cli_required=True, missing="Choose an output folder for the run.",
        gui={"placeholder": "a new folder for the run"})
    # -- the common settings --------------------------------------------------------------------
    zdim: int = _s(8, "latent dimension (8 is typical)", "int", "model", face="gui",
                   flags=("--zdim",), label="Latent dim (zdim)", min=1, cli_required=True,
                   gui={"max": 256})
    num_epochs: int = _s(20, "number of epochs", "int", "train", face="gui",
                         flags=("-n", "--num-epochs"), label="Epochs", min=1,
                         gui={"max": 10000})
    batch_size: int = _s(16, "images per batch", "int", "train", face="gui",
                         flags=("-b", "--batch-size"), label="Batch size", min=1,
                         gui={"max": 4096})
    beta: float | None = _s(None, "KL weight", "float", "train", face="gui", flags=("--beta",),
                            label="Beta (KL weight)", min=0.0, auto="1/zdim",
                            gui={"max": 1000.0, "step": 0.01, "decimals": 4})
    lr: float = _s(1e-3, "learning rate", "float", "train", face="gui", flags=("--lr",),
                   label="Learning rate", above=0.0,
                   gui={"min": 1e-6, "max": 1.0, "step": 1e-4, "decimals": 6})
    device: str = _s("auto", "auto, cpu, cuda, cuda:N or mps", "str", "train", face="gui",
                     flags=("--device",), label="Device",
                     gui={"choices": ("auto", "cpu", "cuda", "mps")})
    seed: int = _s(0, "random seed", "int", "train", face="gui", flags=("--seed",),
                   label="Seed", min=0)
    # -- the network (the form's preset sets these) ---------------------------------------------
    qdim: int = _s(1024, "encoder width", "int", "model", flags=("--enc-dim",),
                   label="Encoder width", min=1, gui={"max": 8192})
    qlayers: int = _s(3, "encoder hidden layers", "int", "model", flags=("--enc-layers",),
                      label="Encoder layers", min=0, gui={"max": 64})
    pdim: int = _s(1024, "decoder width", "int", "model", flags=("--dec-dim",),
                   label="Decoder width", min=1, gui={"max": 8192})
    players: int = _s(3, "decoder hidden layers", "int", "model", flags=("--dec-layers",),
                      label="Decoder layers", min=0, gui={"max": 64})
    encode_mode: str = _s("resid", "encoder architecture", "str", "model",
                          flags=("--encode-mode",), label="Encoder mode",
                          choices=("resid", "mlp"))
    enc_mask: int | None = _s(
        None, "encoder mask radius (-1: none)", "int", "model", flags=("--enc-mask",),
        label="Encoder mask radius", min=-1, auto="D/2", none_alias=-2, gui={"max": 4096})
    enc_input: str = _s(
        "image", "encoder input: the image (cryoDRGN) or its difference from the model's "
        "projection at z = 0", "str", "model", flags=("--enc-input",), label="Encoder input",
        choices=("image", "residual"))
    enc_inplane: bool = _s(
        True, "feed the encoder images as they are (cryoDRGN) instead of turned to a "
        "canonical in-plane angle using the known pose", "bool", "model",
        flags=("--no-enc-inplane",), label="Encoder sees images turned in-plane")
    pe_type: str = _s("gaussian", "positional encoding", "str", "model", flags=("--pe-type",),
                      label="Positional encoding",
                      choices=("gaussian", "geom_lowf", "geom_ft", "geom_full",
                               "geom_nohighf", "linear_lowf"))
    pe_dim: int | None = _s(None, "frequencies per axis", "int", "model", flags=("--pe-dim",),
                            label="Encoding frequencies", min=1, auto="D/2",
                            gui={"max": 4096})
    feat_sigma: float = _s(0.5, "scale of the gaussian encoding's random frequencies", "float",
                           "model", flags=("--feat-sigma",), label="Feature sigma", min=0.0,
                           gui={"max": 100.0, "step": 0.05, "decimals": 3})
    domain: str = _s("fourier", "decoder output", "str", "model", flags=("--domain",),
                     label="Decoder domain", choices=("fourier", "hartley"))
    activation: str = _s("relu", "activation function", "str", "model",
                         flags=("--activation",), label="Activation",
                         choices=("relu", "leaky_relu"))
    wd: float = _s(0.0, "weight decay", "float", "train", flags=("--wd",),
                   label="Weight decay", min=0.0,
                   gui={"max": 1.0, "step": 1e-5, "decimals": 6})
    refine_steps: int = _s(0, "per-batch gradient steps on each latent through the decoder "
                           "during training (the refinement after it: --z-refine-steps)",
                           "int", "train", flags=("--refine-steps",),
                           label="Per-batch latent steps", min=0, gui={"max": 100})
    refine_step: float = _s(0.5, "length of the per-batch latent steps", "float", "train",
                            flags=("--refine-step",), label="Per-batch latent step", min=0.0,
                            gui={"max": 100.0, "step": 0.05, "decimals": 3})
    robust: float = _s(0.25, "weigh down images (junk) whose error up to Nyquist/4 exceeds "
                       "the batch median by more than this part of the model images' power "
                       "there (0: off, as cryoDRGN)", "float", "train",
                       flags=("--robust",), label="Outlier excess cap", min=0.0,
                       gui={"max": 100.0, "step": 0.05, "decimals": 3})
    ema: float = _s(0.995, "decay per batch of the moving average of the weights that "
                    "checkpoints save and z is encoded with; it spans at most a quarter of an "
                    "epoch (0: off, the last weights, as cryoDRGN)",
                    "float", "train", flags=("--ema",), label="Weight average decay", min=0.0,
                    below=1.0, gui={"max": 0.99999, "step": 0.0005, "decimals": 5})
    lr_anneal: int = _s(3, "epochs at the end of training over which the learning rate falls "
                        "from --lr to zero on a cosine (0: constant, as cryoDRGN)", "int",
                        "train", flags=("--lr-anneal",), label="Learning-rate anneal (epochs)",
                        min=0, gui={"max": 10000})
    z_refine_steps: int = _s(3, "after the last epoch, Gauss-Newton iterations that move each "
                             "particle's z up its posterior under the trained decoder, at "
                             "its pose and CTF (z.N.pkl: refined; z.N.encoder.pkl: the "
                             "encoder's; 0: off, as cryoDRGN)", "int", "train",
                             flags=("--z-refine-steps",), label="Latent refinement iterations",
                             min=0, gui={"max": 1000})
    # -- data ------------------------------------------------------------------------------------
    ind: str | None = _s(None, "index .pkl selecting particles", "file", "input",
                         flags=("--ind",), label="Index (subset)",
                         gui={"filter": INDEX_FILTER, "placeholder": "optional index .pkl"})
    datadir: str | None = _s(None, "folder that relative stack paths in .star/.cs resolve to",
                             "dir", "input", flags=("--datadir",), label="Data folder",
                             gui={"placeholder": "optional: where .star/.cs stacks are"})
    apix: float | None = _s(None, "pixel size check/override in Angstrom", "float", "input",
                            flags=("--Apix",), label="Pixel size (A)", above=0.0,
                            auto="from the files", gui={"max": 100.0, "decimals": 4})
    invert_data: bool = _s(True, "do not sign-invert the images", "bool", "train",
                           flags=("--uninvert-data",), label="Invert the images' sign")
    window: bool = _s(True, "do not window the images", "bool", "train",
                      flags=("--no-window",), label="Window the images")
    window_r: float = _s(0.85, "window radius (fraction of the box)", "float", "train",
                         flags=("--window-r",), label="Window radius", min=0.0,
                         gui={"max": 1.0, "step": 0.05, "decimals": 3})
    # -- the run ---------------------------------------------------------------------------------
    load: str | None = _s(
        None, "weights.N.pkl to resume from, or 'latest' (the newest checkpoint, mid-epoch ones "
        "included; a folder without any starts afresh)", "str", "train", face="cli",
        flags=("--load",), auto="a new run")
    checkpoint: int = _s(1, "save every N epochs", "int", "train", flags=("--checkpoint",),
                         label="Checkpoint every (epochs)", min=1, gui={"max": 10000})
    checkpoint_minutes: float = _s(
        30.0, "also save the position inside an epoch every M minutes "
        "(checkpoint.inprogress.pkl; 0: never); SIGUSR1 saves it at once, SIGTERM saves it and "
        "stops", "float", "train", flags=("--checkpoint-minutes",),
        label="Mid-epoch checkpoint (minutes)", min=0.0,
        gui={"max": 10000.0, "step": 5.0, "decimals": 1})
    precision: str = _s("auto", "arithmetic precision (auto: bf16 where the device supports "
                        "it, else fp16 on GPUs, fp32)", "str", "train", flags=("--precision",),
                        label="Precision", choices=("auto", "fp32", "bf16", "fp16"))
    shuffler_size: int | None = _s(
        None, "chunked shuffle for stacks larger than RAM: contiguous chunks in random order, "
        "images shuffled within windows of this many particles (0: shuffle the whole epoch)",
        "int", "train", flags=("--shuffler-size",), label="Shuffle window (particles)", min=0,
        auto="chunked only when the stack exceeds half the RAM",
        gui={"max": 2**31 - 1, "auto_text": "auto (chunked only beyond half the RAM)"})
    prefetch: int = _s(4, "batches read ahead", "int", "train", flags=("--prefetch",),
                       label="Batches read ahead", min=1, gui={"max": 256})
    launcher: str = _s(
        "auto", "how the processes of a multi-GPU run were started: auto (torchrun's "
        "environment when present), slurm (srun without torchrun), none", "str", "train",
        face="cli", flags=("--launcher",), choices=("auto", "torchrun", "slurm", "none"))
    # -- library callers only --------------------------------------------------------------------
    log_interval_s: float = _s(0.5, "seconds between progress events", "float", "train",
                               face="api", min=0.0)
    eval_batch_size: int = _s(256, "images per batch when encoding every particle", "int",
                              "train", face="api", min=1)
    lineage: dict | None = _s(None, "where the run came from (parent run, selection file), "
                              "recorded as config.yaml's lineage", "dict", "train", face="api",
                              auto="none")

    # -- checks ----------------------------------------------------------------------------------
    @classmethod
    def from_kwargs(cls, **kw) -> TrainSettings:
        """Settings with ``kw`` replacing the defaults; unknown names are an InputError."""
        unknown = sorted(set(kw) - set(NAMES))
        if unknown:
            raise InputError(f"no training setting named {', '.join(unknown)}; known settings: "
                             f"{', '.join(NAMES)}")
        return cls(**kw)

    def checked(self) -> TrainSettings:
        """These settings with each value checked and converted (ints for float settings
        become floats, numpy scalars builtins, enc_mask -2 None); inputs must be given and
        input files must exist. Raises a one-line InputError naming the setting and flag."""
        for name in NAMES:
            spec = SPECS[name]
            if spec.missing and getattr(self, name) in (None, ""):
                raise InputError(spec.missing)
        out = replace(self, **check_values({n: getattr(self, n) for n in NAMES}))
        for name in NAMES:
            spec, value = SPECS[name], getattr(out, name)
            if spec.kind in ("file", "dir") and value is not None:
                ok = Path(value).is_file() if spec.kind == "file" else Path(value).is_dir()
                if not ok:
                    raise InputError(f"{spec.label}: {value} does not exist; check the "
                                     f"{'file' if spec.kind == 'file' else 'folder'} name.")
        return out

    def part(self, part: str) -> dict:
        """{name: value} of the settings of one part (input, model, train)."""
        return {n: getattr(self, n) for n in NAMES if SPECS[n].part == part}


def _specs_of(cls) -> dict[str, Spec]:
    return {f.name: f.metadata["spec"] for f in fields(cls)}


SPECS: dict[str, Spec] = _specs_of(TrainSettings)
NAMES: tuple[str, ...] = tuple(SPECS)


def specs(*faces: str, part: str | None = None) -> dict[str, Spec]:
    """{name: Spec} of the settings shown on ``faces`` (all when none given), in form order."""
    return {n: s for n, s in SPECS.items()
            if (not faces or s.face in faces) and (part is None or s.part == part)}


def default(name: str):
    """The declared default of setting ``name``."""
    return TrainSettings.__dataclass_fields__[name].default


def _expected(spec: Spec) -> str:
    if spec.choices:
        what = "one of " + ", ".join(map(str, spec.choices))
    elif spec.kind == "bool":
        what = "true or false"
    elif spec.kind in ("file", "dir", "outdir"):
        what = "a file path" if spec.kind == "file" else "a folder path"
    elif spec.kind == "dict":
        what = "a dict"
    elif spec.kind == "int":
        what = {None: "an integer", 1: "a positive integer", 0: "an integer >= 0"}.get(
            spec.min, f"an integer >= {spec.min:g}")
    elif spec.kind == "float":
        what = (f"a number > {spec.above:g}" if spec.above is not None
                else f"a number >= {spec.min:g}" if spec.min is not None else "a number")
        if spec.below is not None:
            what += f" and < {spec.below:g}"
    else:
        what = "text"
    if spec.auto is not None:
        what += f" (or unset: {spec.auto})"
    return what


def check_value(name: str, value, spec: Spec | None = None):
    """``value`` of setting ``name`` checked and converted, or a one-line InputError."""
    spec = spec or SPECS[name]
    if spec.none_alias is not None and value == spec.none_alias and not isinstance(value, bool):
        return None
    if value is None and (spec.auto is not None or spec.kind in ("file", "dir", "outdir")):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    k = spec.kind
    ok = True
    if k == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif k == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif k == "bool":
        ok = isinstance(value, bool)
    elif k == "str":
        ok = isinstance(value, str)
    elif k in ("file", "dir", "outdir"):
        ok = isinstance(value, (str, os.PathLike)) and str(value) != ""
    elif k == "dict":
        ok = isinstance(value, dict)
    if ok and k in ("int", "float"):
        ok = ((spec.min is None or value >= spec.min)
              and (spec.above is None or value > spec.above)
              and (spec.below is None or value < spec.below) and value == value)
    if ok and spec.choices:
        ok = value in spec.choices
    if not ok:
        flag = f" ({spec.flag})" if spec.flag and not spec.positional else ""
        raise InputError(f"setting {name}={value!r}{flag} is invalid: expected "
                         f"{_expected(spec)}")
    return value


def check_values(values: dict, specs_: dict[str, Spec] | None = None) -> dict:
    """Each of ``values`` checked and converted (see :func:`check_value`); an unknown name is
    an InputError."""
    specs_ = SPECS if specs_ is None else specs_
    unknown = sorted(set(values) - set(specs_))
    if unknown:
        raise InputError(f"no training setting named {', '.join(unknown)}; known settings: "
                         f"{', '.join(specs_)}")
    return {n: check_value(n, v, specs_[n]) for n, v in values.items()}


# -- the command line ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CliOptions:
    """How one ``train`` process runs (not settings of the run: never recorded)."""

    multigpu: bool = _s(False, "cryoDRGN's flag: here, start one process per GPU with torchrun "
                        "instead", "bool", "process", face="cli", flags=("--multigpu",))
    no_amp: bool = _s(False, "cryoDRGN's flag: same as --precision fp32", "bool", "process",
                      face="cli", flags=("--no-amp",))
    max_threads: int | None = _s(None, "CPU threads for torch", "int", "process", face="cli",
                                 flags=("--max-threads",), min=1, auto="torch's")
    num_workers: int | None = _s(None, "accepted for cryoDRGN compatibility; one background "
                                 "reader prefetches the batches", "int", "process", face="cli",
                                 flags=("--num-workers",), min=0, auto="one reader")
    lazy: bool = _s(False, "accepted for cryoDRGN compatibility; stacks are always read lazily "
                    "(never loaded whole)", "bool", "process", face="cli", flags=("--lazy",))
    overwrite: bool = _s(False, "allow writing into a folder that is not empty or already holds "
                         "a run (the run's files are replaced)", "bool", "process", face="cli",
                         flags=("--overwrite",))
    quiet: bool = _s(False, "no progress bar", "bool", "process", face="cli",
                     flags=("-q", "--quiet"))


CLI_SPECS: dict[str, Spec] = _specs_of(CliOptions)


def _help(name: str, spec: Spec, dflt) -> str:
    text = spec.help
    if spec.kind == "bool" or spec.cli_required or spec.positional:
        return text
    if spec.auto is not None and dflt is None:
        return f"{text} (default: {spec.auto})"
    if dflt is not None and "default" not in text:
        return f"{text} (default {dflt:g})" if isinstance(dflt, float) else \
            f"{text} (default {dflt})"
    return text


def _add(parser: argparse.ArgumentParser, name: str, spec: Spec, dflt) -> None:
    if spec.face == "api":
        return
    if spec.kind == "bool":
        action = "store_false" if dflt else "store_true"
        parser.add_argument(*spec.flags, dest=name, action=action,
                            help=_help(name, spec, dflt))
        return
    kw: dict = {"help": _help(name, spec, dflt)}
    if spec.kind in ("int", "float"):
        kw["type"] = int if spec.kind == "int" else float
    elif spec.kind == "outdir":
        kw["type"] = Path
    if spec.choices:
        kw["choices"] = list(spec.choices)
    if spec.positional:
        parser.add_argument(name, **kw)
        return
    if not spec.choices:
        kw["metavar"] = spec.flag.lstrip("-").upper().replace("-", "_")
    if spec.cli_required:
        kw["required"] = True
    else:
        kw["default"] = dflt
    parser.add_argument(*spec.flags, dest=name, **kw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` command's arguments, made from :class:`TrainSettings` and
    :class:`CliOptions` (flags, defaults, types, choices and help come from the declaration)."""
    for name, spec in SPECS.items():
        _add(parser, name, spec, default(name))
    for f in fields(CliOptions):
        _add(parser, f.name, CLI_SPECS[f.name], f.default)


def from_args(args: argparse.Namespace) -> tuple[TrainSettings, CliOptions]:
    """The settings and process options of a parsed ``train`` command line, checked
    (``--no-amp`` becomes precision fp32)."""
    opts = CliOptions(**check_values({f.name: getattr(args, f.name) for f in fields(CliOptions)},
                                     CLI_SPECS))
    given = {n: getattr(args, n) for n in NAMES if hasattr(args, n)}
    if opts.no_amp:
        given["precision"] = "fp32"
    return TrainSettings.from_kwargs(**given), opts


# -- sentinels and the trainer's configuration --------------------------------------------------
def resolve(settings: TrainSettings, D: int, n: int, device) -> TrainSettings:
    """``settings`` with every sentinel replaced by the value this run uses (box ``D``,
    ``n`` particles, on torch ``device``): beta ``None`` -> 1/zdim; enc_mask ``None`` -> D/2;
    shuffler_size ``None`` -> 0 (whole-epoch shuffle) or a window (chunked, when the stack
    exceeds half the RAM); precision ``auto`` -> bf16/fp16/fp32 for ``device``.

    The one place these rules are applied; the trainer receives the result (and config.yaml
    records it). Not replaced, on purpose: ``device`` (``device`` here is the one this process
    was given: under torchrun each rank takes its own GPU; the request, e.g. ``auto``, is
    recorded so that a resumed run chooses again on the machine it resumes on), ``launcher``
    and ``load`` (read by the distributed context and the checkpoint loader), and pe_dim
    ``None``, which is cryoDRGN's own spelling of D/2 in model_args (both tools' decoders read
    it, and cryoDRGN records null too).
    """
    from .trainer import pick_precision, resolve_shuffle  # the trainer imports this module

    s = settings
    window, _ = resolve_shuffle(s.shuffler_size, n, D)
    return replace(
        s,
        beta=1.0 / s.zdim if s.beta is None else float(s.beta),
        enc_mask=D // 2 if s.enc_mask in (None, -2) else int(s.enc_mask),
        shuffler_size=int(window),
        precision=pick_precision(device, s.precision),
    )


def _model_args():
    from ..model.vae import ModelArgs

    return ModelArgs()


@dataclass
class TrainConfig:
    """What the :class:`~.trainer.Trainer` runs with: the train settings (defaults from
    :class:`TrainSettings`), the network (``model``), the dataset paths recorded in config.yaml
    and the output folder. Made by :func:`to_config` from resolved settings; the field order is
    that of config.yaml's train_args."""

    outdir: str
    num_epochs: int = default("num_epochs")
    batch_size: int = default("batch_size")
    lr: float = default("lr")
    wd: float = default("wd")
    beta: float | None = default("beta")
    seed: int = default("seed")
    checkpoint: int = default("checkpoint")
    invert_data: bool = default("invert_data")
    window: bool = default("window")
    window_r: float = default("window_r")
    device: str = default("device")
    precision: str = default("precision")
    load: str | None = default("load")
    model: ModelArgs = field(default_factory=_model_args)
    dataset_args: dict = field(default_factory=dict)
    refine_steps: int = default("refine_steps")
    refine_step: float = default("refine_step")
    ema: float = default("ema")
    robust: float = default("robust")
    lr_anneal: int = default("lr_anneal")
    z_refine_steps: int = default("z_refine_steps")
    log_interval_s: float = default("log_interval_s")
    eval_batch_size: int = default("eval_batch_size")
    lineage: dict | None = default("lineage")
    checkpoint_minutes: float = default("checkpoint_minutes")
    shuffler_size: int | None = default("shuffler_size")
    prefetch: int = default("prefetch")
    launcher: str = default("launcher")


def to_config(settings: TrainSettings, dataset_args: dict) -> TrainConfig:
    """The trainer's configuration of (resolved) ``settings``."""
    from ..model.vae import ModelArgs

    return TrainConfig(outdir=str(settings.outdir), model=ModelArgs(**settings.part("model")),
                       dataset_args=dict(dataset_args), **settings.part("train"))


def run_settings(cfg: dict) -> dict:
    """{name: value} of the model and train settings a run's config.yaml records (ours or
    cryoDRGN's: unknown keys are ignored; invert_data/window/window_r may sit in
    dataset_args). Values are as recorded (resolved); check them with :func:`check_values`."""
    out = {}
    ds = cfg.get("dataset_args") or {}
    for k in ("invert_data", "window", "window_r"):  # cryoDRGN's runs record them here
        if ds.get(k) is not None:
            out[k] = ds[k]
    ta = dict(cfg.get("train_args") or {})
    out.update({k: v for k, v in ta.items() if k in SPECS and SPECS[k].part == "train"})
    out.update({k: v for k, v in (cfg.get("model_args") or {}).items()
                if k in SPECS and SPECS[k].part == "model"})
    return out


# -- the Train dock's conveniences -------------------------------------------------------------
#: Network presets of the Train dock: name -> (layers, width) of encoder and decoder.
NETWORK_PRESETS = {
    "tiny, for a quick look (64 x 2)": (2, 64),
    "small (256 x 3)": (3, 256),
    "medium (512 x 3)": (3, 512),
    "cryoDRGN default (1024 x 3)": (3, 1024),
}
#: The preset the Train dock starts with (a network that trains in minutes on a workstation).
GUI_PRESET = "small (256 x 3)"


def network(preset: str) -> dict:
    """qdim, qlayers, pdim, players of a network preset."""
    layers, width = NETWORK_PRESETS[preset]
    return {"qdim": width, "qlayers": layers, "pdim": width, "players": layers}


def preset_of(settings: TrainSettings) -> str | None:
    """The preset whose network ``settings`` have, or None."""
    for name in NETWORK_PRESETS:
        if all(getattr(settings, k) == v for k, v in network(name).items()):
            return name
    return None


def preset_for_box(D: int) -> str:
    """A network size that trains in reasonable time for the box size."""
    if D <= 64:
        return "small (256 x 3)"
    if D <= 160:
        return "medium (512 x 3)"
    return "cryoDRGN default (1024 x 3)"


def batch_for_box(D: int) -> int:
    """The Train dock's batch size for the box size."""
    return 8 if D <= 48 else 16


def gui_defaults() -> TrainSettings:
    """The settings the Train dock starts from: the declared defaults with the dock's network
    preset (:data:`GUI_PRESET`)."""
    return replace(TrainSettings(), **network(GUI_PRESET))

