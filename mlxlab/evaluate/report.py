"""One self-contained `report.html` of a run (`runs/NAME`), a sweep (`eval_sweep`) or an evaluation folder.

It holds the run's stages and times, the SDG funnel per leaf, the training and validation curves with the kept
checkpoint marked, the paper's plots, every prompt's answers side by side across models with their grades (mean
over graders, and each grader's), and the graders' agreement. Images are inlined as data URIs and the style sits
in the page, so it opens anywhere without a network. A section whose files are missing is left out with a note.
Every text from the files (answers are model output) is escaped.
"""

from __future__ import annotations

import base64
import io
import json
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.files import atomic_write

PLOTS = (("per_prompt", "score per prompt"), ("mean", "mean performance"), ("side_by_side", "all prompts side by side"),
         ("heldout_loss", "held-out loss vs iterations"), ("loss", "loss curve with held-out loss at checkpoints"))
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#777;font-style:italic}.answers{width:100%;table-layout:fixed}
.answer{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;max-height:20em;
overflow:auto}.grade{font-weight:bold}.graders{color:#555;font-size:.85em}
img{max-width:100%;border:1px solid #eee}figure{margin:0}figcaption{color:#555}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{flex:0 1 48%;min-width:320px}
.plots figure.wide{flex-basis:100%}
.question{white-space:pre-wrap;background:#f8f8f8;padding:.5em;border-left:3px solid #88a}
.reference{white-space:pre-wrap;background:#f4faf4;padding:.5em;border-left:3px solid #8a8}
"""


# ---------------------------------------------------------------------------------------------- reading

def _json(path: Path):
    """The JSON in `path`, or None when it is missing or unreadable (a report never fails on one file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file that parse as objects ([] when it is missing)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue                    # a torn line (a kill mid-write) is left out
        if isinstance(row, dict):
            rows.append(row)
    return rows


def grades_by_grader(path: Path) -> dict[str, dict[str, int]]:
    """answer id -> {grader: grade} from a grades.jsonl, read as the grading reads it (`grading.read_grades`:
    the last grade of a grader wins; a record without "grader" is the default grader's)."""
    from mlxlab.evaluate.grading import read_grades

    by_answer: dict[str, dict[str, int]] = {}
    for grader, grades in read_grades(path).items():
        for answer, value in grades.items():
            by_answer.setdefault(answer, {})[grader] = value
    return by_answer


def find_parts(path: Path) -> dict[str, Path]:
    """The files a report reads under `path` (a run, a sweep or an evaluation folder), by part name."""
    candidates = {
        "manifest": [path / "manifest.json"],
        "sdg": [path / "data" / "report.json"],
        "train_log": [path / "adapters" / "train_log.jsonl", path / "train" / "train_log.jsonl",
                      path / "train_log.jsonl"],
        "train_result": [path / "adapters" / "result.json", path / "train" / "result.json"],
        "results": [path / "results.jsonl", path / "eval" / "results.jsonl"],
    }
    parts = {name: next((p for p in paths if p.is_file()), None) for name, paths in candidates.items()}
    found = {name: p for name, p in parts.items() if p is not None}
    evaluation = found["results"].parent if "results" in found else \
        next((p for p in (path, path / "eval") if (p / "summary.json").is_file()), None)
    if evaluation is not None:
        found["eval"] = evaluation
        places = (evaluation, path, evaluation.parent)      # a run draws them into eval/, a sweep next to eval/
        for name, _ in PLOTS:
            png = next((p / f"{name}.png" for p in places if (p / f"{name}.png").is_file()), None)
            if png is not None:
                found[f"plot_{name}"] = png
    return found


# ---------------------------------------------------------------------------------------------- html pieces

def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _table(head: list[str] | None, rows: list[list[str]], cls: str = "") -> str:
    """An HTML table (no header row when `head` is None); `head` is escaped here, the cells are HTML already."""
    out = [f"<table class='{cls}'>" + ("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
                                       if head is not None else "")]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out) + "</table>"


def _note(text: str) -> str:
    return f"<p class='note'>{escape(text)}</p>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{data}'>"


def _stats_cell(stats: dict | None) -> str:
    return f"{stats['mean']:.2f} ± {stats['std']:.2f} (n={stats['n']})" if stats else "–"


# ---------------------------------------------------------------------------------------------- sections

def _stages(parts: dict[str, Path]) -> str:
    manifest = _json(parts["manifest"]) if "manifest" in parts else None
    if not isinstance(manifest, dict) or not manifest.get("stages"):
        return _note("No manifest.json here: this is not a `mlxlab run` folder, so no stages and times.")
    rows = [[escape(stage), escape(str(r.get("status", "–"))), _fmt(r.get("seconds"), 1),
             escape(str(r.get("finished") or r.get("started") or "–")), escape(str(r.get("error") or ""))]
            for stage, r in manifest["stages"].items() if isinstance(r, dict)]
    total = sum(r.get("seconds") or 0 for r in manifest["stages"].values() if isinstance(r, dict))
    about = ", ".join(f"{k}: {escape(str(manifest[k]))}" for k in ("name", "model", "teacher", "taxonomy")
                      if manifest.get(k))
    return (f"<p>{about}</p>" + _table(["stage", "status", "seconds", "finished", "error"], rows)
            + f"<p>{total:.1f} s in all.</p>")


def _funnel(parts: dict[str, Path]) -> str:
    report = _json(parts["sdg"]) if "sdg" in parts else None
    if not isinstance(report, dict) or not report.get("leaves"):
        return _note("No data/report.json here: no SDG funnel to show.")
    rows = []
    for leaf in report["leaves"]:
        funnel = "<br>".join(
            f"{escape(str(s.get('stage')))} {s.get('sent')}→{s.get('passed')}"
            + (f" ({s['unparsed']} unparsed)" if s.get("unparsed") else "") for s in leaf.get("stages", []))
        gates = "<br>".join(f"{escape(str(g))}: {n}" for g, n in (leaf.get("gates") or {}).items() if n)
        notes = "<br>".join(escape(str(n)) for n in leaf.get("notes") or [])
        rows.append([escape(str(leaf.get("leaf"))), escape(str(leaf.get("kind", ""))), funnel or "–", gates or "–",
                     _fmt(leaf.get("duplicates")), f"<b>{_fmt(leaf.get('kept'))}</b>", _fmt(leaf.get("tokens")),
                     _fmt(leaf.get("seconds"), 1), notes])
    head = (f"<p>teacher {escape(str(report.get('teacher', '–')))} ({escape(str(report.get('backend', '–')))}), "
            f"{_fmt(report.get('generated_tokens'))} tokens at {_fmt(report.get('tokens_per_second'), 1)} tok/s</p>")
    return head + _table(["leaf", "kind", "funnel (sent→passed)", "removed by gate", "duplicates", "kept", "tokens",
                          "seconds", "notes"], rows)


def _training(parts: dict[str, Path]) -> str:
    from mlxlab.figures import figures
    from mlxlab.train.train_log import draw_loss, read_log

    if "train_log" not in parts:
        return _note("No train_log.jsonl here: no training curves to show.")
    try:
        rows = read_log(parts["train_log"])
    except MlxlabError as exc:
        return _note(f"The training log could not be read: {exc}")
    result = _json(parts["train_result"]) if "train_result" in parts else None
    result = result if isinstance(result, dict) else {}
    kept = result.get("best_iter")
    fig, ax = figures().subplots(figsize=(8, 4))
    draw_loss(ax, rows, kept=kept)
    ax.set_title("training and validation loss")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    facts = [("iterations", _fmt(result.get("num_iters"))), ("epochs", _fmt(result.get("num_epochs"), 2)),
             ("final training loss", _fmt(result.get("final_loss"), 4)),
             ("validation loss", _fmt(result.get("val_loss"), 4)),
             ("kept", escape(str(result.get("best_reason") or (f"iteration {kept}" if kept is not None
                                                               else "the last iteration"))))]
    return _img(buffer.getvalue(), "training and validation loss") + _table(None, [[escape(k), v] for k, v in facts])


def _plots(parts: dict[str, Path]) -> str:
    found = [(name, title) for name, title in PLOTS if f"plot_{name}" in parts]
    if not found:
        return _note("No plots here (per_prompt.png, mean.png, ...): run `mlxlab eval sweep` or `mlxlab run`.")
    figures = []
    for name, title in found:
        png = parts[f"plot_{name}"]
        wide = " class='wide'" if name == "per_prompt" else ""     # a grid of small plots needs the width
        figures.append(f"<figure{wide}>{_img(png.read_bytes(), title)}"
                       f"<figcaption>{escape(title)} ({escape(png.name)})</figcaption></figure>")
    return "<div class='plots'>" + "\n".join(figures) + "</div>"


def _scores(summary: dict) -> str:
    models = summary.get("models") or {}
    if not models:
        return _note("summary.json lists no models.")
    prompts = list(dict.fromkeys(p for m in models.values() for p in (m.get("prompts") or {})))
    rows = [[escape(label), _fmt(m.get("iteration")), _stats_cell(m.get("score")),
             *(_stats_cell((m.get("prompts") or {}).get(p)) for p in prompts), _fmt(m.get("heldout_loss"), 4)]
            for label, m in sorted(models.items(), key=lambda kv: kv[1].get("iteration") or 0)]
    note = escape(str(summary.get("score_note") or summary.get("score_kind") or ""))
    return (f"<p>Score: {note}; 0-5, mean ± std over the answers.</p>"
            + _table(["model", "iterations", "score", *prompts, "held-out loss"], rows))


def _agreement(summary: dict) -> str:
    agreement = summary.get("agreement")
    if agreement is None:
        return _note("summary.json holds no agreement between graders (it needs two graders or more).")
    if not isinstance(agreement, dict):
        return f"<p>{_fmt(agreement)}</p>"
    rows = [[escape(str(k)), _fmt(v) if not isinstance(v, (dict, list)) else escape(json.dumps(v))]
            for k, v in agreement.items()]
    return _table(None, rows)


def _grade_cell(row: dict, grades: dict[str, dict[str, int]]) -> str:
    """An answer's grades: the mean over graders in bold, each grader's, the judge's and ROUGE-L."""
    mine = grades.get(str(row.get("id")), {})
    bits = []
    if mine:
        mean = sum(mine.values()) / len(mine)
        bits.append(f"<span class='grade'>grade {mean:.2f}</span>" + (
            f" <span class='graders'>({', '.join(f'{escape(g)}: {v}' for g, v in sorted(mine.items()))})</span>"
            if len(mine) > 1 or "grader" not in mine else ""))
    if row.get("judge_score") is not None:
        bits.append(f"judge {_fmt(row['judge_score'])}")
    if row.get("rouge_l") is not None:
        bits.append(f"ROUGE-L {_fmt(row['rouge_l'])}")
    return "<div class='graders'>" + (" · ".join(bits) or "not graded") + "</div>"


def _answers(evaluation: Path, rows: list[dict]) -> str:
    if not rows:
        return _note(f"No answers here: {evaluation / 'results.jsonl'} is missing or empty.")
    grades = grades_by_grader(evaluation / "grades.jsonl")
    prompts = _json(evaluation / "prompts.json")
    prompts = prompts if isinstance(prompts, dict) else {}
    order = {}
    for row in rows:                         # models in iteration order, the base (iteration 0 or none) first
        order.setdefault(str(row.get("model")), row.get("iteration") or 0)
    models = sorted(order, key=lambda m: order[m])
    graders = sorted({g for by in grades.values() for g in by})
    out = [f"<p>{len(rows)} answers of {len(models)} models; "
           + (f"graders: {escape(', '.join(graders))}" if graders else "no manual grades yet") + ".</p>"]
    for pid in dict.fromkeys(str(r.get("prompt")) for r in rows):
        saved = prompts.get(pid) if isinstance(prompts.get(pid), dict) else {}
        question = "\n\n".join(str(m.get("content", "")) for m in saved.get("messages") or []
                               if isinstance(m, dict) and m.get("role") == "user")
        cells: dict[tuple[str, int], dict] = {(str(r.get("model")), r.get("sample") or 0): r
                                              for r in rows if str(r.get("prompt")) == pid}
        samples = sorted({s for _, s in cells})
        table = [[f"<div class='answer'>{escape(str(r.get('answer') or '') or '(empty)')}</div>"
                  + _grade_cell(r, grades) if (r := cells.get((m, s))) else "–" for m in models]
                 for s in samples]
        out.append(f"<h3 id='prompt-{escape(pid)}'>{escape(pid)}</h3>"
                   + (f"<div class='question'>{escape(question)}</div>" if question else "")
                   + (f"<p>reference answer:</p><div class='reference'>{escape(str(saved['reference']))}</div>"
                      if saved.get("reference") else "")
                   + _table([f"{m} (iteration {order[m]})" for m in models], table, "answers"))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- the report

def report_sections(parts: dict[str, Path]) -> list[tuple[str, str]]:
    """(title, HTML) of each section of the report, in order."""
    evaluation = parts.get("eval")
    summary = _json(evaluation / "summary.json") if evaluation is not None else None
    summary = summary if isinstance(summary, dict) else None
    rows = _jsonl(parts["results"]) if "results" in parts else []
    no_eval = _note("No evaluation here (results.jsonl, summary.json): run `mlxlab eval run` or `mlxlab eval sweep`.")
    return [("Stages and times", _stages(parts)), ("Synthetic data: the funnel per leaf", _funnel(parts)),
            ("Training", _training(parts)), ("Scores", _scores(summary) if summary else no_eval),
            ("Agreement between graders", _agreement(summary) if summary else no_eval), ("Plots", _plots(parts)),
            ("Answers side by side", _answers(evaluation, rows) if evaluation is not None else no_eval)]


def write_report(path: str | Path = ".") -> Path:
    """Write `report.html` into `path` (a run folder, a sweep folder or an evaluation folder); return its path."""
    path = Path(path)
    if not path.is_dir():
        raise MlxlabError("no such folder", path=path,
                          hint="pass a run folder (runs/NAME), a sweep folder (eval_sweep) or an evaluation folder")
    parts = find_parts(path)
    if not parts:
        raise MlxlabError("nothing to report here: no manifest.json, results.jsonl, summary.json or "
                          "train_log.jsonl", path=path,
                          hint="pass a run folder (runs/NAME), a sweep folder (eval_sweep) or an evaluation "
                               "folder (eval), written by `mlxlab run`, `mlxlab eval sweep` or `mlxlab eval run`")
    sections = report_sections(parts)
    title = f"mlxlab report: {path.resolve().name}"
    toc = " · ".join(f"<a href='#s{n}'>{escape(t)}</a>" for n, (t, _) in enumerate(sections))
    body = "\n".join(f"<section id='s{n}'><h2>{escape(t)}</h2>\n{html}</section>"
                     for n, (t, html) in enumerate(sections))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1><p class='note'>{escape(str(path.resolve()))}, written {when}</p>"
            f"<nav>{toc}</nav>\n{body}\n</body></html>\n")
    return atomic_write(path / "report.html", page)
