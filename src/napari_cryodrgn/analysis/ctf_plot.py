"""A PNG of one particle's CTF (``parse_ctf_star --png``): the 2D CTF on the image's Fourier
grid and its 1D profile along the two defocus axes. Drawn with the Agg canvas (no pyplot)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..geometry.ctf import compute_ctf
from ..io.atomic import atomic_write


def ctf_image(row: np.ndarray) -> tuple[np.ndarray, float]:
    """The CTF of table row ``row`` (D, Apix, dfU, dfV, dfang, kV, Cs, w, phase) on the
    centred D x D grid of frequencies, and the Nyquist frequency (1/A)."""
    D, apix = int(row[0]), float(row[1])
    k = (np.arange(D) - D // 2) / (D * apix)  # 1/A
    ky, kx = np.meshgrid(k, k, indexing="ij")
    freqs = np.stack([kx, ky], -1).reshape(-1, 2)
    ctf = compute_ctf(freqs, *(float(v) for v in row[2:9]))
    return ctf.reshape(D, D), 0.5 / apix


def plot_ctf(row, path, title: str = "") -> Path:
    """Write the figure of CTF row ``row`` to ``path`` (PNG, atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    row = np.asarray(row, dtype=np.float64)
    img, nyq = ctf_image(row)
    fig = Figure(figsize=(9.0, 4.0))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    im = ax1.imshow(img, cmap="gray", vmin=-1, vmax=1, extent=(-nyq, nyq, nyq, -nyq))
    ax1.set_xlabel("kx (1/A)")
    ax1.set_ylabel("ky (1/A)")
    fig.colorbar(im, ax=ax1, shrink=0.8)
    s = np.linspace(0, nyq, 512)
    for label, df_axis in (("along defocus U", 0.0), ("along defocus V", 90.0)):
        ang = np.deg2rad(row[4] + df_axis)
        freqs = np.stack([s * np.cos(ang), s * np.sin(ang)], -1)
        ax2.plot(s, compute_ctf(freqs, *(float(v) for v in row[2:9])), lw=0.8, label=label)
    ax2.set_xlabel("spatial frequency (1/A)")
    ax2.set_ylabel("CTF")
    ax2.set_ylim(-1.05, 1.05)
    ax2.legend(fontsize=8, loc="lower left")
    fig.suptitle(title or (f"D={int(row[0])}, {row[1]:g} A/px, dfU={row[2]:.0f} A, "
                           f"dfV={row[3]:.0f} A, {row[5]:g} kV, Cs={row[6]:g} mm, "
                           f"w={row[7]:g}, phase {row[8]:g} deg"), fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return path
