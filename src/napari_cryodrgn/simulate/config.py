"""Simulation parameters and their validation."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from napari_cryodrgn.errors import InputError


@dataclass
class SimConfig:
    """Parameters of a simulated dataset. Defaults are the benchmark dataset of DESIGN.md.

    ``max_shift_px`` is the largest in-plane shift per axis in pixels; None means ``3 * D / 64``.
    Defocus U is uniform in [df_min, df_max] (Angstrom), V = U - uniform(0, df_astig_max).
    ``fixed_conf`` / ``fixed_state``, when set, give every (non-junk) particle that conformation
    / state; with ``junk=0`` that makes a homogeneous set (the other draws, poses, CTF and noise,
    stay those of the same seed). Invalid values raise InputError on construction (and in
    :meth:`validate`).
    """

    n: int = 10000
    D: int = 64
    apix: float = 3.0
    snr: float = 0.1
    junk: float = 0.1
    seed: int = 0
    p_state1: float = 0.5
    max_shift_px: float | None = None
    df_min: float = 10000.0
    df_max: float = 30000.0
    df_astig_max: float = 500.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amp_contrast: float = 0.1
    phase_shift_deg: float = 0.0
    n_truth_conf: int = 10
    fixed_conf: float | None = None
    fixed_state: int | None = None

    def __post_init__(self):
        self.validate()

    @property
    def shift_px(self) -> float:
        return 3.0 * self.D / 64 if self.max_shift_px is None else float(self.max_shift_px)

    @property
    def n_junk(self) -> int:
        return int(round(self.junk * self.n))

    def validate(self) -> SimConfig:
        """Raise InputError naming the first bad parameter; return self."""
        def bad(msg):
            raise InputError(f"simulation config: {msg}")

        for name in ("n", "D", "seed", "n_truth_conf"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                bad(f"{name} must be an integer, got {v!r}")
        for name in ("apix", "snr", "junk", "p_state1", "df_min", "df_max", "df_astig_max",
                     "voltage_kv", "cs_mm", "amp_contrast", "phase_shift_deg", "shift_px"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                bad(f"{name} must be a finite number, got {v!r}")
        if self.n < 1:
            bad(f"n must be at least 1, got {self.n}")
        if self.D < 8 or self.D % 2:
            bad(f"D (box size) must be even and at least 8, got {self.D}")
        if self.apix <= 0:
            bad(f"apix must be positive, got {self.apix}")
        if self.snr <= 0:
            bad(f"snr must be positive, got {self.snr}")
        if not 0 <= self.junk < 1:
            bad(f"junk fraction must be in [0, 1), got {self.junk}")
        if not 0 <= self.p_state1 <= 1:
            bad(f"p_state1 must be in [0, 1], got {self.p_state1}")
        if self.seed < 0:
            bad(f"seed must be non-negative, got {self.seed}")
        if self.n_truth_conf < 2:
            bad(f"n_truth_conf must be at least 2, got {self.n_truth_conf}")
        if not 0 <= self.shift_px <= self.D / 8:
            bad(f"max_shift_px must be in [0, D/8], got {self.shift_px}")
        if self.fixed_conf is not None and (
                isinstance(self.fixed_conf, bool) or not isinstance(self.fixed_conf, numbers.Real)
                or not 0 <= self.fixed_conf <= 1):
            bad(f"fixed_conf must be a number in [0, 1] or None, got {self.fixed_conf!r}")
        if self.fixed_state is not None and (
                isinstance(self.fixed_state, bool)
                or not isinstance(self.fixed_state, numbers.Integral)
                or self.fixed_state not in (0, 1)):
            bad(f"fixed_state must be 0, 1 or None, got {self.fixed_state!r}")
        if not 0 < self.df_min <= self.df_max or not 0 <= self.df_astig_max < self.df_min:
            bad("defocus needs 0 < df_min <= df_max and 0 <= df_astig_max < df_min")
        if self.voltage_kv <= 0 or self.cs_mm < 0 or not 0 <= self.amp_contrast < 1:
            bad("voltage_kv must be > 0, cs_mm >= 0 and amp_contrast in [0, 1)")
        return self

    def to_dict(self) -> dict:
        """Every parameter, with ``max_shift_px`` resolved (``fixed_*`` only when set)."""
        d = asdict(self)
        d["max_shift_px"] = self.shift_px
        for name in ("fixed_conf", "fixed_state"):
            if d[name] is None:
                del d[name]
        return {k: int(v) if isinstance(v, numbers.Integral) else float(v) for k, v in d.items()}
