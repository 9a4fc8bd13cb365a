"""The training log (train_log.jsonl, one JSON row per report) and its loss curve."""

from __future__ import annotations

import json
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.figures import figures, save_png


def draw_loss(ax, log_rows: list[dict], heldout: list[tuple[int, float]] | None = None,
              kept: int | None = None) -> None:
    """Training loss, validation loss and (optionally) held-out loss at checkpoints against iteration.

    Rows of phased training (tagged `phase`) get a line where each later phase starts; `kept` marks the
    iteration whose adapters were kept."""
    train_rows = [(r["iter"], r["loss"]) for r in log_rows if "loss" in r]
    val_rows = [(r["iter"], r["val_loss"]) for r in log_rows if "val_loss" in r]
    if train_rows:
        ax.plot(*zip(*train_rows), linewidth=1, label="training loss")
    if val_rows:
        ax.plot(*zip(*val_rows), "s--", label="validation loss")
    if heldout:
        ax.plot(*zip(*heldout), "o-", label="held-out loss (checkpoints)")
    starts = {}
    for row in log_rows:
        starts.setdefault(row.get("phase"), row["iter"])
    for phase, start in list(starts.items())[1:]:
        if phase is not None:
            ax.axvline(start, color="gray", linestyle=":", linewidth=1)
            ax.annotate(f"phase {phase}", (start, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="gray")
    if kept is not None:
        ax.axvline(kept, color="green", linestyle="--", linewidth=1, label=f"kept (iteration {kept})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()


def read_log(train_log: Path | None) -> list[dict]:
    """The rows of a train_log.jsonl ([] when there is none); a torn last line (a kill mid-write) is left out."""
    if train_log is None or not Path(train_log).is_file():
        return []
    lines = Path(train_log).read_text(encoding="utf-8").splitlines()
    last = max((n for n, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == last:
                break
            raise MlxlabError(f"not valid JSON: {exc.msg}", path=Path(train_log), line=number + 1,
                              column=exc.colno, hint="a training log is written by `mlxlab train`: delete the "
                                                     "broken line, or train into a new --output") from None
    return rows


def plot_loss(train_log: Path, png: Path, *, kept: int | None = None) -> Path | None:
    """The loss curve of a training log as a PNG (None when matplotlib is not installed)."""
    try:
        fig, ax = figures().subplots(figsize=(7, 4))
    except ImportError:
        return None
    draw_loss(ax, read_log(train_log), kept=kept)
    fig.tight_layout()
    return save_png(fig, Path(png))
