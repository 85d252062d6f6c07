"""Figures of the stages and the reports: matplotlib without a display, every figure saved one way."""

from __future__ import annotations

from pathlib import Path


def subplots(*args, **kwargs):
    """`plt.subplots` on the Agg backend (no display needed): (figure, axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def dress(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axis labels, a title and a light grid."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def save(fig, path: Path) -> Path:
    """Lay out, write at 120 dpi and close `fig` (an open figure holds its memory until closed)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
