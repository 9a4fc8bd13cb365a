"""PNG figures the stages draw (loss curves, sweep plots): matplotlib without pyplot's global state.

matplotlib is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path


class Figures:
    """`subplots` like pyplot's, on bare `matplotlib.figure.Figure`s: no global backend is switched, so a
    notebook's inline display keeps working and nothing needs closing."""

    @staticmethod
    def subplots(*grid, figsize=None, squeeze=True):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*grid, squeeze=squeeze)


def figures() -> Figures:
    """Where the figures come from (`figures().subplots(...)`), as one would use pyplot."""
    return Figures()


def save_png(fig, path: Path) -> Path:
    """`fig` as a PNG at `path`, written atomically; returns `path`."""
    from mlxlab.files import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
