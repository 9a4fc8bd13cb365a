"""Figures and tables of evaluation results, drawn as in the seed paper (section 4.2).

The figures come from `mlxlab.evaluate.evaluation.summarize`. For a sweep: score against iterations per prompt,
the mean with its spread, all prompts side by side, the training loss with the held-out loss at each
checkpoint, and a markdown table. matplotlib (Agg) is imported inside the functions, so importing this
module stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlxlab.errors import MlxlabError


class _Figures:
    """`subplots` like pyplot's, on bare `matplotlib.figure.Figure`s: no global backend is switched, so a
    notebook's inline display keeps working and nothing needs closing."""

    @staticmethod
    def subplots(*grid, figsize=None, squeeze=True):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*grid, squeeze=squeeze)


def _pyplot() -> _Figures:
    return _Figures()


def _save(fig, path: Path) -> Path:
    from mlxlab.files import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


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
        fig, ax = _pyplot().subplots(figsize=(7, 4))
    except ImportError:
        return None
    draw_loss(ax, read_log(train_log), kept=kept)
    fig.tight_layout()
    return _save(fig, Path(png))


def _series(summary: dict) -> list[tuple[str, int, dict]]:
    """(label, iteration, figures) of each model, in iteration order (the base is iteration 0)."""
    rows = [(label, m.get("iteration") or 0, m) for label, m in summary["models"].items()]
    return sorted(rows, key=lambda r: r[1])


def _score_label(summary: dict) -> str:
    return {"rouge_l": "score (5 x ROUGE-L)", "judge": "judge score (0-5)", "manual": "grade (0-5)"}.get(
        summary["score_kind"], "score (0-5)")


def sweep_plots(summary: dict, train_log: Path | None, output: Path) -> dict[str, Path]:
    """per_prompt.png, mean.png, side_by_side.png, loss.png and heldout_loss.png in `output`; their paths."""
    plt = _pyplot()
    output.mkdir(parents=True, exist_ok=True)
    series = _series(summary)
    xs = [it for _, it, _ in series]
    prompts = list(dict.fromkeys(p for _, _, m in series for p in m["prompts"]))
    ylabel = _score_label(summary)
    plots = {}

    cols = min(3, len(prompts))
    rows = -(-len(prompts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, pid in zip(axes.flat, prompts):
        stats = [m["prompts"].get(pid) for _, _, m in series]
        points = [(x, s) for x, s in zip(xs, stats) if s]
        if points:
            px, ps = zip(*points)
            means = [s["mean"] for s in ps]
            ax.errorbar(px, means, yerr=[[m - s["min"] for m, s in zip(means, ps)],
                                         [s["max"] - m for m, s in zip(means, ps)]], fmt="o-", capsize=3)
        ax.set_title(pid, fontsize=10)
        ax.set_ylim(-0.2, 5.2)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(prompts):]:
        ax.axis("off")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle("score per prompt (mean of the answers; bars: min-max)")
    fig.tight_layout()
    plots["per_prompt"] = _save(fig, output / "per_prompt.png")

    fig, ax = plt.subplots(figsize=(6.5, 4))
    scores = [m["score"] for _, _, m in series]
    ok = [(x, s) for x, s in zip(xs, scores) if s]
    if ok:
        px, ps = zip(*ok)
        mean = [s["mean"] for s in ps]
        ax.fill_between(px, [s["min"] for s in ps], [s["max"] for s in ps], alpha=0.12, label="min-max")
        ax.fill_between(px, [m - s["std"] for m, s in zip(mean, ps)], [m + s["std"] for m, s in zip(mean, ps)],
                        alpha=0.3, label="mean ± std")
        ax.plot(px, mean, "o-", label="mean over all answers")
    ax.set_xlabel("iterations")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.2, 5.2)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("mean performance")
    fig.tight_layout()
    plots["mean"] = _save(fig, output / "mean.png")

    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(prompts) + 2), 4))
    width = 0.8 / max(1, len(series))
    for n, (label, _, m) in enumerate(series):
        values = [(m["prompts"].get(p) or {}).get("mean", 0.0) for p in prompts]
        ax.bar([i + n * width - 0.4 + width / 2 for i in range(len(prompts))], values, width, label=label)
    ax.set_xticks(range(len(prompts)), prompts, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 5.2)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title("all prompts side by side")
    fig.tight_layout()
    plots["side_by_side"] = _save(fig, output / "side_by_side.png")

    heldout = [(x, m.get("heldout_loss")) for x, (_, _, m) in zip(xs, series) if m.get("heldout_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    draw_loss(ax, read_log(train_log), heldout)
    ax.set_title("loss curve")
    fig.tight_layout()
    plots["loss"] = _save(fig, output / "loss.png")

    if heldout:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(*zip(*heldout), "o-")
        ax.set_xlabel("iterations")
        ax.set_ylabel("held-out loss (mean NLL per assistant token)")
        ax.grid(alpha=0.3)
        ax.set_title("held-out loss vs iterations")
        fig.tight_layout()
        plots["heldout_loss"] = _save(fig, output / "heldout_loss.png")
    return plots


def _cell(stats: dict | None, digits: int = 2) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}" if stats else "–"


def sweep_table(summary: dict, path: Path, plots: dict[str, Path] | None = None) -> Path:
    """A markdown table (one row per model) of scores per prompt, ROUGE-L, judge and held-out loss."""
    series = _series(summary)
    prompts = list(dict.fromkeys(p for _, _, m in series for p in m["prompts"]))
    lines = ["# Iteration sweep", "",
             f"Score: {summary.get('score_note', summary['score_kind'])}; 0-5, mean ± std over the answers.", ""]
    head = ["model", "iterations", "score", *prompts, "ROUGE-L", "judge (unparsed)", "held-out loss", "perplexity"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, it, m in series:
        loss = m.get("heldout_loss")
        judge = f"{_cell(m['judge'])} ({m['judge_unparsed']})" if m["judge"] or m["judge_unparsed"] else "–"
        cells = [label, str(it), _cell(m["score"]), *(_cell(m["prompts"].get(p)) for p in prompts),
                 _cell(m["rouge_l"], 3), judge, f"{loss:.4f}" if loss is not None else "–",
                 f"{m['perplexity']:.2f}" if m.get("perplexity") is not None else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    losses = [(it, m["heldout_loss"]) for _, it, m in series if m.get("heldout_loss") is not None]
    if len(losses) > 1:
        first, last = losses[0][1], losses[-1][1]
        lines += ["", (f"Held-out loss {first:.4f} (iteration {losses[0][0]}) -> {last:.4f} (iteration "
                       f"{losses[-1][0]}): {last - first:+.4f} ({(last - first) / first:+.1%}).")]
    if plots:
        lines += ["", *(f"![{name}]({p.name})" for name, p in plots.items())]
    from mlxlab.files import atomic_write as _atomic_write

    return _atomic_write(path, "\n".join(lines) + "\n")
