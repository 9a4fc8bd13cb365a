"""What a pipeline run gives back and prints: the stages in their order, `RunResult` (where the run is, what ran
or was skipped, each stage's manifest record), and the stage and result tables `mlxlab run` prints at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = ("validate", "generate", "train", "fuse", "export", "eval")


@dataclass(frozen=True)
class RunResult:
    """A pipeline run: where it is, what ran or was skipped, and each stage's manifest record."""
    path: Path                     # runs/<name>
    manifest: Path                 # runs/<name>/manifest.json
    ran: list[str]                 # stages run this time
    skipped: list[str]             # finished stages whose inputs had not changed
    stages: dict[str, dict]        # stage -> its manifest record (status, inputs, outputs, figures, seconds)
    gguf: Path | None
    plots: dict[str, Path]         # name -> PNG
    seconds: float
    report: Path | None = None     # runs/<name>/report.html: stages, data, training, plots and answers on one page


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_rows(result: RunResult) -> list[tuple[str, str]]:
    """(what, value) rows of the run's results: data kept, losses, scores, the GGUF and its parity."""
    st = {k: v.get("figures", {}) for k, v in result.stages.items() if v.get("status") == "done"}
    rows: list[tuple[str, str]] = []
    if "generate" in st:
        g = st["generate"]
        rows.append(("data kept", f"{g['samples']} samples ({g['generated_tokens']} tokens, "
                                  f"{g['tokens_per_second']:.1f} tok/s)"))
        rows += [(f"  {leaf}", str(n)) for leaf, n in g["kept"].items()]
    if "train" in st:
        t = st["train"]
        rows.append(("train loss", f"{_fmt(t['final_loss'])} after {t['num_iters']} iterations "
                                   f"({t['num_epochs']:.2f} epochs), validation {_fmt(t['val_loss'])}"))
        for n, phase in enumerate(t.get("phases") or [], start=1):
            stop = f", stopped early at {phase['stopped_early']}" if phase.get("stopped_early") else ""
            rows.append((f"  phase {n}", f"kept {phase.get('best_reason') or 'the last iteration'}{stop}"))
        if t.get("phase_2"):
            rows.append(("  phase 2", t["phase_2"]))
        if not t.get("phases") and t.get("best_reason"):
            rows.append(("  kept", t["best_reason"]))
        if t.get("general_loss") is not None and t.get("general_base_loss"):
            change = t["general_loss"] / t["general_base_loss"] - 1
            rows.append(("general loss (forgetting)", f"base {_fmt(t['general_base_loss'])} -> kept "
                                                      f"{_fmt(t['general_loss'])} ({change:+.1%})"))
    if "eval" in st:
        models = st["eval"]["models"]
        base, trained = models.get("base", {}), models.get("trained", {})
        rows.append(("held-out loss", f"base {_fmt(base.get('heldout_loss'))} -> trained "
                                      f"{_fmt(trained.get('heldout_loss'))}"))
        rows.append((f"score ({st['eval']['score_kind']})", f"base {_fmt(base.get('score'), 2)} -> trained "
                                                           f"{_fmt(trained.get('score'), 2)} (0-5)"))
    if "export" in st:
        e = st["export"]
        parity = (f"max abs logit diff {e['max_abs_logit_diff']:.3g}, top-1 {e['top1_agreement']:.1%}"
                  if e.get("top1_agreement") is not None else "not verified")
        rows.append(("gguf", f"{result.gguf} ({e['out_type']}, {e['size_bytes'] / 1e6:.1f} MB)"))
        rows.append(("llama.cpp vs MLX", parity))
    return rows


def print_summary(result: RunResult, file=None) -> None:
    """The run's stages (ran / skipped, seconds) and results as rich tables, then the plot paths."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    if not console.is_terminal:            # logs and pipes: no wrapping of paths at 80 columns
        console = Console(file=file, width=160)
    stages = Table(title=f"mlxlab run: {result.path.name}")
    for column in ("stage", "status", "seconds"):
        stages.add_column(column)
    for stage in STAGES:
        record = result.stages.get(stage)
        if record is None:
            continue
        status = "ran" if stage in result.ran else "skipped (unchanged)" if stage in result.skipped else \
            record.get("status", "-")
        stages.add_row(stage, status, _fmt(record.get("seconds"), 1))
    console.print(stages)
    table = Table(title="results", show_header=False)
    table.add_column(style="bold", overflow="fold")
    table.add_column(overflow="fold")
    for what, value in summary_rows(result):
        table.add_row(what, value)
    console.print(table)
    for name, path in result.plots.items():
        console.print(f"{name}: {path}", highlight=False, soft_wrap=True)
    if result.report is not None:
        console.print(f"report: {result.report}", highlight=False, soft_wrap=True)
    console.print(f"manifest: {result.manifest}  ({result.seconds:.0f} s)", highlight=False, soft_wrap=True)
