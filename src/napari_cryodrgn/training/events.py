"""Progress events emitted by long jobs; the CLI prints them, napari workers forward them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Progress:
    """One progress report.

    kind: 'start', 'batch', 'epoch', 'checkpoint', 'refine' (the latents refined after the
    last epoch: ``done`` of ``total`` particles), 'cancelled', 'done' or 'error'.
    """

    kind: str
    epoch: int = 0
    n_epochs: int = 0
    done: int = 0  # images processed in this epoch
    total: int = 0  # images per epoch
    loss: float = float("nan")
    gen_loss: float = float("nan")
    kld: float = float("nan")
    images_per_s: float = 0.0
    eta_s: float = 0.0
    message: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Overall fraction of the run completed, 0..1."""
        if not self.n_epochs or not self.total:
            return 0.0
        return min(1.0, ((self.epoch - 1) + self.done / self.total) / self.n_epochs)


def format_duration(seconds: float) -> str:
    """1:02:03 / 2:03 style durations for progress text."""
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
