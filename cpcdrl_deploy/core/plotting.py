"""Matplotlib without a display, and PNGs written atomically: every stage's figures go through here."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a server or in CI; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

from cpcdrl_deploy.core.fileio import atomic_write_bytes  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig, path: str | Path) -> None:
    """``fig`` as a PNG at ``path`` (written atomically), then closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
