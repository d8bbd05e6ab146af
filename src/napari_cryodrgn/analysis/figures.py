"""PNG figures of an analysis: embeddings as scatter and density plots, traversal paths and
k-means centres drawn on them, and the learning curve.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly (no pyplot), so
they neither need a display nor touch the backend of a running napari session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = (4.0, 4.0)
DPI = 150
MAX_SCATTER = 200_000  # a random subset of this many points is drawn in scatter plots


def _figure(size=SIZE):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _subset(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_SCATTER:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_SCATTER, replace=False))


def _background(ax, xy, kind: str, colour=None):
    if kind == "hex":
        ax.hexbin(xy[:, 0], xy[:, 1], gridsize=40, bins="log", cmap="Blues", mincnt=1)
    else:
        sel = _subset(len(xy))
        alpha = float(np.clip(3000 / max(len(sel), 1), 0.05, 0.6))
        size = float(np.clip(4000 / max(len(sel), 1), 1, 6))
        if colour is None:
            ax.scatter(xy[sel, 0], xy[sel, 1], s=size, alpha=alpha, rasterized=True, lw=0)
        else:
            sc = ax.scatter(xy[sel, 0], xy[sel, 1], s=size, c=np.asarray(colour)[sel],
                            cmap="viridis", rasterized=True, lw=0)
            ax.figure.colorbar(sc, ax=ax, shrink=0.8)


def _labels(ax, xlabel: str, ylabel: str, title: str | None = None):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)


def scatter_plot(path, xy, xlabel: str, ylabel: str, title: str | None = None,
                 colour=None) -> Path:
    """Scatter of an (N, 2) embedding (a random subset beyond MAX_SCATTER points)."""
    fig, ax = _figure()
    _background(ax, np.asarray(xy), "scatter", colour)
    _labels(ax, xlabel, ylabel, title)
    return _save(fig, path)


def density_plot(path, xy, xlabel: str, ylabel: str, title: str | None = None) -> Path:
    """Hexagonal-bin density (log colour scale) of an (N, 2) embedding."""
    fig, ax = _figure()
    _background(ax, np.asarray(xy), "hex")
    _labels(ax, xlabel, ylabel, title)
    return _save(fig, path)


def path_plot(path, xy, path_xy, xlabel: str, ylabel: str, title: str | None = None,
              kind: str = "scatter", connect: bool = True, start: int = 1) -> Path:
    """An embedding with a path's points drawn on it, numbered from ``start`` (vol_001 ...)."""
    fig, ax = _figure()
    _background(ax, np.asarray(xy), kind)
    p = np.asarray(path_xy)
    if connect:
        ax.plot(p[:, 0], p[:, 1], "-", color="k", lw=1)
    ax.scatter(p[:, 0], p[:, 1], c=np.arange(len(p)), cmap="plasma", s=18, edgecolor="k",
               lw=0.5, zorder=3)
    step = max(1, len(p) // 20)
    for i in range(0, len(p), step):
        ax.annotate(str(i + start), p[i], fontsize=6, xytext=(3, 3), textcoords="offset points")
    _labels(ax, xlabel, ylabel, title)
    return _save(fig, path)


def learning_curve_plot(path, losses: dict[int, float], epoch: int | None = None) -> Path:
    """Loss per epoch, with a dashed line at the analysed ``epoch``."""
    fig, ax = _figure()
    if losses:
        ep = np.array(list(losses), float)
        ax.plot(ep, list(losses.values()), "-o", ms=3)
    else:
        ax.text(0.5, 0.5, "run.log records no epochs", ha="center", transform=ax.transAxes)
    if epoch is not None:
        ax.axvline(epoch, ls="--", color="k", label=f"epoch {epoch}")
        ax.legend()
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _labels(ax, "epoch", "loss")
    return _save(fig, path)
