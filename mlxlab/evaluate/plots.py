"""Figures and tables of evaluation results, drawn as in the seed paper (section 4.2).

The figures come from `mlxlab.evaluate.evaluation.summarize`. For a sweep: score against iterations per prompt,
the mean with its spread, all prompts side by side, the training loss with the held-out loss at each
checkpoint, and a markdown table. matplotlib (Agg) is imported inside the functions, so importing this
module stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from mlxlab.figures import figures, save_png
from mlxlab.train.train_log import draw_loss, read_log


def _series(summary: dict) -> list[tuple[str, int, dict]]:
    """(label, iteration, figures) of each model, in iteration order (the base is iteration 0)."""
    rows = [(label, m.get("iteration") or 0, m) for label, m in summary["models"].items()]
    return sorted(rows, key=lambda r: r[1])


def _score_label(summary: dict) -> str:
    return {"rouge_l": "score (5 x ROUGE-L)", "judge": "judge score (0-5)", "manual": "mean grade over graders (0-5)"}.get(
        summary["score_kind"], "score (0-5)")


def sweep_plots(summary: dict, train_log: Path | None, output: Path) -> dict[str, Path]:
    """per_prompt.png, mean.png, side_by_side.png, loss.png and heldout_loss.png in `output`; their paths."""
    plt = figures()
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
    plots["per_prompt"] = save_png(fig, output / "per_prompt.png")

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
    plots["mean"] = save_png(fig, output / "mean.png")

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
    plots["side_by_side"] = save_png(fig, output / "side_by_side.png")

    heldout = [(x, m.get("heldout_loss")) for x, (_, _, m) in zip(xs, series) if m.get("heldout_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    draw_loss(ax, read_log(train_log), heldout)
    ax.set_title("loss curve")
    fig.tight_layout()
    plots["loss"] = save_png(fig, output / "loss.png")

    if heldout:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(*zip(*heldout), "o-")
        ax.set_xlabel("iterations")
        ax.set_ylabel("held-out loss (mean NLL per assistant token)")
        ax.grid(alpha=0.3)
        ax.set_title("held-out loss vs iterations")
        fig.tight_layout()
        plots["heldout_loss"] = save_png(fig, output / "heldout_loss.png")
    return plots


def _cell(stats: dict | None, digits: int = 2) -> str:
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}" if stats else "–"


def _agreement_line(summary: dict) -> list[str]:
    """The graders and their agreement, as a paragraph (nothing when no one graded)."""
    graders = summary.get("graders") or []
    if not graders:
        return []
    found = summary.get("agreement") or {}
    alpha = (f"{found['alpha']:.3f} over {found['answers']} answers graded by two or more"
             if found.get("alpha") is not None else f"undefined ({found.get('reason')})")
    return ["", f"Graders: {', '.join(graders)}. Each answer's score is the mean of its grades; the graders column is "
                f"the mean ± std over graders of each grader's mean. Krippendorff's alpha (ordinal): {alpha}."]


def _graders_cell(m: dict) -> str:
    spread = m.get("graders")
    return f"{spread['mean']:.2f} ± {spread['std']:.2f} ({spread['graders']})" if spread else "–"


def sweep_table(summary: dict, path: Path, plots: dict[str, Path] | None = None, *,
                title: str = "Iteration sweep") -> Path:
    """A markdown table (one row per model) of scores per prompt, graders, ROUGE-L, judge and held-out loss."""
    series = _series(summary)
    prompts = list(dict.fromkeys(p for _, _, m in series for p in m["prompts"]))
    lines = [f"# {title}", "",
             f"Score: {summary.get('score_note', summary['score_kind'])}; 0-5, mean ± std over the answers.",
             *_agreement_line(summary), ""]
    head = ["model", "iterations", "score", *prompts, "graders", "ROUGE-L", "judge (unparsed)", "held-out loss",
            "perplexity"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, it, m in series:
        loss = m.get("heldout_loss")
        judge = f"{_cell(m['judge'])} ({m['judge_unparsed']})" if m["judge"] or m["judge_unparsed"] else "–"
        cells = [label, str(it), _cell(m["score"]), *(_cell(m["prompts"].get(p)) for p in prompts),
                 _graders_cell(m), _cell(m["rouge_l"], 3), judge, f"{loss:.4f}" if loss is not None else "–",
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
