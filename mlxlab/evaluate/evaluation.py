"""Evaluation as in the seed paper: each model answers each prompt k times; a judge, a person or a metric grades.

- Prompt sets (`mlxlab.evaluate.prompt_sets`) are YAML (`mlxlab/prompts/eval_jolie.yaml` holds the paper's five Jolie
  prompts) plus, when given, the held-out `test.jsonl` that SDG writes (its prompts and reference answers).
- Answers come from any model reference, a `(base, adapters)` pair (a training checkpoint), or a GGUF
  (llama.cpp), always with fixed seeds, so a rerun gives the same answers.
- Grades: a judge model with a rubric (0-5 plus a rationale, tolerant parsing: unreadable verdicts are
  counted, never fatal), blind manual grading by several graders in the terminal (`grade`, resumable) or on the
  grading page (`mlxlab.evaluate.grading_page`), averaged over graders with their agreement, and automatic metrics:
  held-out loss over assistant tokens and ROUGE-L against reference answers.
- `sweep` trains once with checkpoints at chosen iterations and evaluates the base and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mlxlab.config import EvalConfig, resolve, save_resolved
from mlxlab.errors import MlxlabError
from mlxlab.evaluate.prompt_sets import EvalPrompt, PromptSet, load_prompts
from mlxlab.evaluate.grading import (DEFAULT_GRADER, GraderLock, agreement, append_grade, blind_order, grader_name,
                                     prompt_texts, read_grades)
from mlxlab.files import atomic_write as _atomic_write
from mlxlab.sdg.gates import rouge_l
from mlxlab.teacher.teacher import Teacher, make_teacher

SCORES = tuple(str(i) for i in range(6))
JUDGE_SYSTEM = "You are a strict, fair grader of answers. Follow the rubric exactly."
JUDGE_USER = """Grade the answer to the question below with a whole number from 0 to 5.

Rubric:
{rubric}

[Start of Question]
{question}
[End of Question]
{reference}
[Start of Answer]
{answer}
[End of Answer]

Reply in exactly this format:
[Start of Rationale]
one or two sentences
[End of Rationale]
[Start of Score]
one digit from 0 to 5
[End of Score]"""
GRADE_HELP = "grade 0-5, s = skip, q = quit (grades so far are kept)"


# ---------------------------------------------------------------------------------------------- summaries

def _stats(values: list[float]) -> dict | None:
    """mean, std, min, max and n of `values` (None when empty)."""
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": len(values)}


def score_of(row: dict, grades: dict[str, float]) -> tuple[float | None, str]:
    """(0-5 score, its kind) of one answer: its graders' mean grade, else the judge's, else 5 x ROUGE-L."""
    if row["id"] in grades:
        return float(grades[row["id"]]), "manual"
    if row.get("judge_score") is not None:
        return float(row["judge_score"]), "judge"
    if row.get("rouge_l") is not None:
        return 5.0 * row["rouge_l"], "rouge_l"
    return None, "none"


def _by_grader(grades: dict | None) -> dict[str, dict[str, int]]:
    """Grades by grader; a flat {answer id: grade} (one unnamed grader, as before graders had names) is 'default'."""
    if not grades:
        return {}
    if all(isinstance(v, dict) for v in grades.values()):
        return grades
    return {DEFAULT_GRADER: grades}


def _spread(graders: dict[str, dict[str, int]], ids: list[str]) -> dict | None:
    """Each grader's mean over the answers `ids` they graded, and the mean and std of those means over graders."""
    means = {g: sum(mine[a] for a in ids if a in mine) / n for g, mine in graders.items()
             if (n := sum(a in mine for a in ids))}
    stats = _stats(list(means.values()))
    return {"mean": stats["mean"], "std": stats["std"], "graders": len(means), "per_grader": means} if stats else None


def _answer_grades(graders: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Per graded answer: the mean and std of its grades over graders, and each grader's grade."""
    found: dict[str, dict] = {}
    for name, mine in sorted(graders.items()):
        for answer, value in mine.items():
            found.setdefault(answer, {})[name] = value
    return {a: {**_stats([float(v) for v in g.values()]), "grades": g} for a, g in found.items()}


def summarize(rows: list[dict], losses: dict[str, dict], grades: dict | None = None) -> dict:
    """Per model: score per prompt (mean, std, min, max), overall, ROUGE-L, judge figures, held-out loss; with
    manual grades (`{grader: {answer id: 0-5}}`) the graders' mean per answer, spread over graders, and alpha."""
    graders = _by_grader(grades)
    answers = _answer_grades(graders)
    means = {a: v["mean"] for a, v in answers.items()}
    kinds: set[str] = set()
    models: dict[str, dict] = {}
    for label in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == label]
        scored = [(r, *score_of(r, means)) for r in mine]
        kinds.update(kind for _, s, kind in scored if s is not None)
        pids = list(dict.fromkeys(r["prompt"] for r in mine))
        per_prompt = {pid: _stats([s for r, s, _ in scored if r["prompt"] == pid and s is not None]) for pid in pids}
        judged = [r for r in mine if "judge_raw" in r]
        ids = [r["id"] for r in mine]
        models[label] = {
            "iteration": mine[0].get("iteration"),
            "score": _stats([s for _, s, _ in scored if s is not None]),
            "score_of_prompt_means": _stats([p["mean"] for p in per_prompt.values() if p]),
            "prompts": per_prompt,
            "rouge_l": _stats([r["rouge_l"] for r in mine if r.get("rouge_l") is not None]),
            "judge": _stats([float(r["judge_score"]) for r in judged if r.get("judge_score") is not None]),
            "judge_unparsed": sum(1 for r in judged if r.get("judge_score") is None),
            "manual": _stats([means[a] for a in ids if a in means]),
            "graders": _spread(graders, ids),
            "prompt_graders": {pid: _spread(graders, [r["id"] for r in mine if r["prompt"] == pid]) for pid in pids},
            "agreement": agreement(graders, ids),
            **losses.get(label, {"heldout_loss": None, "perplexity": None, "heldout_tokens": 0}),
        }
    kind = "mixed: " + ", ".join(sorted(kinds)) if len(kinds) > 1 else next(iter(kinds), "none")
    return {"score_kind": kind, "score_note": {
        "manual": "mean grade over graders (0-5)", "judge": "mean judge score (0-5)",
        "rouge_l": "5 x ROUGE-L against the reference answers (no judge given)"}.get(kind, kind),
        "graders": sorted(graders), "agreement": agreement(graders, [r["id"] for r in rows]),
        "answers": answers, "models": models}


@dataclass(frozen=True)
class EvalResult:
    """Where the answers and grades went, and the per-model figures of `summary.json`."""
    output: Path
    results: Path                  # results.jsonl: one line per answer
    summary_path: Path             # summary.json
    summary: dict                  # {"score_kind": ..., "models": {label: {...}}}
    judge_unparsed: int            # judge outputs that held no readable 0-5 score


# ---------------------------------------------------------------------------------------------- answering

class _ModelTeacher(Teacher):
    """An mlx Teacher whose base model can carry mlx-lm adapters, swapped in place between checkpoints."""

    def __init__(self, base, adapters: Path | None = None, **options):
        self.base_ref, self.adapters, self._adapter_config = base, None, None
        super().__init__(base, backend="mlx", **options)
        if adapters is not None:
            self.use_adapters(adapters)

    def use_adapters(self, adapters: Path) -> None:
        """Apply the adapters in `adapters` (the LoRA layers are made once, later checkpoints only load weights)."""
        from mlx_lm.tuner.utils import load_adapters

        config = json.loads((adapters / "adapter_config.json").read_text(encoding="utf-8"))
        if self._adapter_config is None:
            load_adapters(self.model, str(adapters))
        elif config == self._adapter_config:
            self.model.load_weights(str(adapters / "adapters.safetensors"), strict=False)
        else:
            raise ValueError("adapters of another shape need a fresh base")
        self.model.eval()                   # new LoRA layers start in training mode (dropout on)
        self.weights_changed()
        self._adapter_config, self.adapters = config, adapters

    def accepts(self, base, adapters: Path | None) -> bool:
        """True when this teacher can become (base, adapters) without reloading the base."""
        if str(base) != str(self.base_ref) or adapters is None:
            return str(base) == str(self.base_ref) and adapters is None and self._adapter_config is None
        if self._adapter_config is None:
            return True
        return json.loads((adapters / "adapter_config.json").read_text(encoding="utf-8")) == self._adapter_config


def _split(spec) -> tuple[object, Path | None]:
    """(base, adapters or None) from a model spec, checking that a checkpoint folder is complete."""
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise MlxlabError(f"a model with adapters is a (base, adapters) pair, found {spec!r}")
        base, adapters = spec
        adapters = Path(adapters)
        missing = [n for n in ("adapter_config.json", "adapters.safetensors") if not (adapters / n).is_file()]
        if missing:
            raise MlxlabError(f"checkpoint not found: no {' or '.join(missing)}", path=adapters,
                              hint="pass a folder written by `mlxlab train` (its output or one of its "
                                   "checkpoints/iter_NNNNNN); list them with `ls OUTPUT/checkpoints`")
        return base, adapters
    return spec, None


def _answerer(spec, previous: Teacher | None, cfg: EvalConfig) -> Teacher:
    """The teacher that answers for `spec`. `previous` is one that an earlier call made (never the caller's): it is
    reused when only its adapters change, else closed first, so one answering model is in memory at a time."""
    base, adapters = (None, None) if isinstance(spec, Teacher) else _split(spec)
    text = str(base) if base is not None else ""
    local = not isinstance(spec, Teacher) and not text.startswith(("http://", "https://")) \
        and not text.lower().endswith(".gguf")
    if local and isinstance(previous, _ModelTeacher) and previous.accepts(base, adapters):
        if adapters is not None:
            previous.use_adapters(adapters)
        return previous
    if previous is not None:
        previous.close()
    if isinstance(spec, Teacher):
        return spec
    if text.startswith(("http://", "https://")):
        return make_teacher("default", url=text, concurrency=cfg.concurrency)
    if text.lower().endswith(".gguf"):
        if adapters is not None:
            raise MlxlabError("adapters cannot be applied to a GGUF", path=adapters,
                              hint="evaluate the MLX base with the adapters, or export the fused model to GGUF")
        return make_teacher(base, backend="llama-cpp", requantize=False)     # this very file, not a copy
    return _ModelTeacher(base, adapters, batch_size=cfg.batch_size or None)


def heldout_loss(model, tokenizer, records: list[dict], *, max_seq_length: int = 2048, batch_size: int = 4,
                 path: Path | None = None) -> tuple[float, int]:
    """(mean NLL per assistant token, tokens counted) of `model` on chat `records` (the training loss's masking)."""
    import mlx.core as mx
    from mlx_lm.tuner.trainer import default_loss

    from mlxlab.train.data import make_batch, tokenize

    data = tokenize(records, tokenizer, path=path or Path("heldout"), max_seq_length=max_seq_length)
    if not data.samples:
        return float("nan"), 0
    model.eval()
    order = sorted(range(len(data.samples)), key=lambda i: len(data.samples[i][0]))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        tokens, lengths, _, _ = make_batch(data.samples, order[start:start + batch_size])
        loss, ntoks = default_loss(model, tokens, lengths)
        mx.eval(loss, ntoks)
        total += loss.item() * ntoks.item()
        count += int(ntoks.item())
    return total / max(count, 1), count


# ---------------------------------------------------------------------------------------------- judging

def parse_judgement(text: str) -> tuple[int | None, str]:
    """(score 0-5 or None, rationale) from a judge's output; never raises."""
    from mlxlab.prompts import extract, parse_score

    if not isinstance(text, str):
        return None, ""
    rationale = extract(text, "Rationale") or ""
    # "4/5" and "4 out of 5" name the score and the scale; parse_score would see two candidates
    fraction = re.search(r"(?<![\w.])([0-5])\s*(?:/|out\s+of)\s*5(?![\w.])", text, re.IGNORECASE)
    score = fraction.group(1) if fraction else parse_score(text, SCORES, "Score")
    if not rationale:
        rationale = re.sub(r"\[\s*(?:start|end)\s+of\s+\w+\s*\]", " ", text, flags=re.IGNORECASE)
        rationale = " ".join(rationale.split())[:300]
    return (int(score) if score is not None else None), rationale.strip()


def judge_messages(prompt: EvalPrompt, answer: str, rubric: str) -> list[dict]:
    """The judge's chat prompt for one answer (reference shown when the prompt has one)."""
    question = "\n\n".join(m["content"] for m in prompt.messages if m["role"] == "user")
    reference = (f"\n[Start of Reference Answer]\n{prompt.reference}\n[End of Reference Answer]\n"
                 if prompt.reference else "")
    user = JUDGE_USER.format(rubric=prompt.rubric or rubric, question=question, reference=reference,
                             answer=answer.strip() or "(empty)")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def _judge_teacher(judge, cfg: EvalConfig) -> Teacher:
    """A Teacher for `judge`: an instance as is, an http(s) URL (model name from cfg.judge), or a reference."""
    if isinstance(judge, Teacher):
        return judge
    if str(judge).startswith(("http://", "https://")):
        return make_teacher(cfg.judge or "default", url=str(judge), concurrency=cfg.concurrency)
    return make_teacher(judge, backend=cfg.judge_backend)


def judge_rows(rows: list[dict], prompts: dict[str, EvalPrompt], rubric: str, judge: Teacher,
               cfg: EvalConfig) -> int:
    """Add judge_score / judge_rationale / judge_raw to each row in place; return the unparsed count."""
    if not rows:
        return 0
    messages = [judge_messages(prompts[r["prompt"]], r["answer"], rubric) for r in rows]
    outputs = judge.generate(messages, n=1, temperature=cfg.judge_temperature, top_p=1.0,
                             max_tokens=cfg.judge_max_tokens, seed=cfg.seeds[0] if cfg.seeds else 0)
    unparsed = 0
    for row, out in zip(rows, outputs):
        raw = out[0].text if out else ""
        score, rationale = parse_judgement(raw)
        unparsed += score is None
        row.update(judge_score=score, judge_rationale=rationale, judge_raw=raw[:2000])
    return unparsed


# ---------------------------------------------------------------------------------------------- aggregation

def write_summary(output: Path, rows: list[dict], losses: dict[str, dict] | None = None, *,
                  plots: bool = False) -> dict:
    """Summarize `rows` with the grades in `output/grades.jsonl` into summary.json and summary.md; the summary.

    Without `losses`, the held-out losses that `evaluate` measured are kept: grading changes only the scores.
    With `plots`, when `output` is a sweep's `eval/` folder, the sweep's PNGs and table are drawn again, so
    they show the graders' means once people have graded.
    """
    from mlxlab.evaluate.plots import sweep_plots, sweep_table

    output = Path(output)
    losses = losses if losses is not None else _saved_losses(output)
    summary = summarize(rows, losses, read_grades(output / "grades.jsonl"))
    _atomic_write(output / "summary.json", json.dumps({**summary, "losses": losses}, indent=2) + "\n")
    sweep_table(summary, output / "summary.md", title="Evaluation")
    sweep = output.parent
    if plots and output.name == "eval" and (sweep / "train" / "result.json").is_file():
        drawn = sweep_plots(summary, sweep / "train" / "train_log.jsonl", sweep)
        sweep_table(summary, sweep / "summary.md", drawn)
    return summary


def read_results(output: str | Path) -> list[dict]:
    """The answer rows of an evaluation folder's results.jsonl."""
    path = Path(output) / "results.jsonl"
    if not path.is_file():
        raise MlxlabError("no results.jsonl here", path=path.parent, hint="run `mlxlab eval run` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- evaluate

def _answer_id(label: str, prompt: str, sample: int) -> str:
    return hashlib.sha256(f"{label}\0{prompt}\0{sample}".encode()).hexdigest()[:12]


def _seeds(cfg: EvalConfig) -> list[int]:
    seeds = list(cfg.seeds)[:cfg.k]
    while len(seeds) < cfg.k:          # more answers than seeds: continue after the last one
        seeds.append((seeds[-1] + 1) if seeds else len(seeds))
    return seeds


def evaluate(models: dict, prompts: str | Path | PromptSet | None = None, *, output: str | Path = "eval",
             test: str | Path | None = None, judge: Teacher | str | Path | None = None,
             iterations: dict[str, int] | None = None, config: EvalConfig | None = None, quiet: bool = False,
             **overrides) -> EvalResult:
    """Each model ({label: ref | (base, adapters) | Teacher}) answers each prompt k times; grade and summarize.

    Writes `results.jsonl` (one line per answer) and `summary.json` to `output`. `judge` (a model
    reference, an http(s) URL or a Teacher) grades each answer 0-5; without one the score is 5 x ROUGE-L
    against the prompts' reference answers. `test` adds the held-out split: loss per model, and prompts.
    """
    cfg = config if config is not None else EvalConfig()
    cfg = resolve(EvalConfig, **{**dataclasses.asdict(cfg), **overrides})
    if not models:
        raise MlxlabError("no model to evaluate", hint="pass at least one model reference")
    if cfg.k < 1:
        raise MlxlabError(f"k must be at least 1, found {cfg.k}")
    for spec in models.values():             # every checkpoint checked before an hour of answering
        if not isinstance(spec, Teacher):
            _split(spec)
    pset = load_prompts(prompts if prompts is not None else cfg.prompts, test if test is not None else cfg.test,
                        test_prompts=cfg.test_prompts)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    save_resolved(output / "config.yaml", cfg)
    _atomic_write(output / "prompts.json", json.dumps(
        {p.id: {"messages": p.messages, "reference": p.reference, "source": p.source} for p in pset.prompts},
        indent=2, ensure_ascii=False) + "\n")
    say = (lambda *a: None) if quiet else (lambda text: print(text, file=sys.stderr))
    seeds = _seeds(cfg)
    by_id = {p.id: p for p in pset.prompts}
    rows: list[dict] = []
    losses: dict[str, dict] = {}
    ours: Teacher | None = None             # the answerer this call made (closed here), not one the caller passed
    try:
        for label, spec in models.items():
            tic = time.perf_counter()
            teacher = _answerer(spec, ours, cfg)
            ours = None if teacher is spec else teacher
            jobs = [(p, j, s) for j, s in enumerate(seeds) for p in pset.prompts]
            outs = teacher.generate([p.messages for p, _, _ in jobs], seeds=[s for _, _, s in jobs], n=1,
                                    temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
            for (prompt, sample, seed), out in zip(jobs, outs):
                completion = out[0]
                rows.append({"id": _answer_id(label, prompt.id, sample), "model": label,
                             "iteration": (iterations or {}).get(label), "prompt": prompt.id, "sample": sample,
                             "seed": seed, "answer": completion.text, "tokens": completion.tokens,
                             "finish_reason": completion.finish_reason,
                             "rouge_l": rouge_l(completion.text, prompt.reference) if prompt.reference else None})
            if pset.heldout and isinstance(teacher, _ModelTeacher):
                loss, count = heldout_loss(teacher.model, teacher.tokenizer, pset.heldout, path=pset.heldout_path,
                                           max_seq_length=cfg.max_seq_length)
                losses[label] = {"heldout_loss": loss, "perplexity": math.exp(min(loss, 50)),
                                 "heldout_tokens": count}
            say(f"{label}: {len(jobs)} answers in {time.perf_counter() - tic:.1f} s" +
                (f", held-out loss {losses[label]['heldout_loss']:.4f}" if label in losses else ""))
    finally:
        if ours is not None:
            ours.close()                     # free the last answerer before a judge loads
    unparsed = 0
    judge = judge if judge is not None else (cfg.judge_url or cfg.judge)
    if judge is not None:
        grader = _judge_teacher(judge, cfg)
        try:
            unparsed = judge_rows(rows, by_id, pset.rubric, grader, cfg)
        finally:
            if grader is not judge:
                grader.close()
        say(f"judge: {len(rows) - unparsed} of {len(rows)} verdicts read, {unparsed} unparsed")
    results = _atomic_write(output / "results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary = write_summary(output, rows, losses)
    return EvalResult(output, results, output / "summary.json", summary, unparsed)


# ---------------------------------------------------------------------------------------------- manual grades

@dataclass(frozen=True)
class GradeResult:
    """How far a manual grading session got."""
    grades: Path
    graded: int          # answers this grader has graded, over all sessions
    total: int
    summary: dict


def grade(output: str | Path = "eval", *, grader: str = DEFAULT_GRADER, input: TextIO | None = None,
          out: TextIO | None = None, seed: int = 0) -> GradeResult:
    """Grade the answers in `output/results.jsonl` by hand as `grader`, blind: model hidden, in the grader's own
    shuffled order; resumable.

    Each grade is appended to `grades.jsonl` as it is given, so quitting (q, Ctrl-D, Ctrl-C) loses nothing
    and the next session continues with the grader's next ungraded answer. Other graders' grades are kept
    apart; the summary averages over graders. The grading page (`mlxlab eval grade --web`) writes the same file.
    """
    input = input or sys.stdin
    out = out or sys.stdout
    output = Path(output)
    grader = grader_name(grader)
    rows = read_results(output)
    path = output / "grades.jsonl"
    with GraderLock(output, grader):
        mine = read_grades(path).get(grader, {})
        prompts = prompt_texts(output)
        todo = [r for r in blind_order(rows, grader, seed) if r["id"] not in mine]
        out.write(f"{grader}: {len(mine)} of {len(rows)} answers graded; {len(todo)} to go. {GRADE_HELP}\n")
        for number, row in enumerate(todo, start=len(mine) + 1):
            out.write(f"\n=== answer {number} of {len(rows)} === prompt: {row['prompt']}\n")
            question, reference = prompts.get(row["prompt"], ("", None))
            if question:
                out.write(question.strip() + "\n")
            if reference:
                out.write(f"--- reference answer ---\n{reference.strip()}\n")
            out.write(f"--- answer ---\n{row['answer'].strip() or '(empty)'}\n")
            value = _ask(input, out)
            if value is None:
                break
            if value == "s":
                continue
            append_grade(path, row["id"], value, grader)
            mine[row["id"]] = value
    summary = write_summary(output, rows, plots=True)
    out.write(f"\n{grader}: {len(mine)} of {len(rows)} answers graded -> {path}\n")
    return GradeResult(path, len(mine), len(rows), summary)


def _ask(input: TextIO, out: TextIO) -> int | str | None:
    """A grade 0-5, 's' to skip, or None to stop (q, end of input)."""
    while True:
        out.write("grade (0-5, s, q)> ")
        out.flush()
        line = input.readline()
        if not line:
            return None
        text = line.strip().lower()
        if text in ("q", "quit", "exit"):
            return None
        if text == "s":
            return "s"
        if text in SCORES:
            return int(text)
        out.write(f"  '{line.strip()}' is not a grade: {GRADE_HELP}\n")


def _saved_losses(output: Path) -> dict:
    try:   # the held-out losses that `evaluate` measured: grading changes only the scores
        return json.loads((output / "summary.json").read_text(encoding="utf-8")).get("losses", {})
    except (OSError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------------------------------------- sweep

@dataclass(frozen=True)
class SweepResult:
    """An iteration sweep: the training run, the evaluation of base + checkpoints, the figures and table."""
    output: Path
    train: object                          # TrainResult
    eval: EvalResult
    heldout_loss: dict[int, float | None]  # iteration (0 = base) -> held-out loss
    plots: dict[str, Path]
    table: Path
    report: Path | None = None             # report.html: everything above on one page


def _heldout_file(data: Path, test) -> Path | None:
    """The held-out split for a sweep: `test`, else DATA/test.jsonl, else DATA/valid.jsonl (never trained on)."""
    if test is not None:
        return Path(test)
    for name in ("test.jsonl", "valid.jsonl"):
        if data.is_dir() and (data / name).is_file():
            return data / name
    return None


def sweep(model=None, data: str | Path = "data", output: str | Path = "eval_sweep", *,
          iters: list[int] | tuple[int, ...] | None = None, prompts: str | Path | PromptSet | None = None,
          test: str | Path | None = None, judge=None, config: EvalConfig | None = None,
          train_config=None, train_overrides: dict | None = None, quiet: bool = False, **overrides) -> SweepResult:
    """Train once with checkpoints at `iters`, evaluate the base and every checkpoint, draw the paper's plots.

    Writes `train/` (adapters, checkpoints, train_log.jsonl), `eval/` (results, summary), the PNGs,
    `summary.md` and `report.html` (all of it on one page) into `output`. A finished training run there is reused; an interrupted one resumes.
    """
    from mlxlab.evaluate.plots import sweep_plots, sweep_table
    from mlxlab.evaluate.report import write_report
    from mlxlab.train.checkpoints import checkpoints
    from mlxlab.train.loop import TrainResult, train

    cfg = config if config is not None else EvalConfig()
    cfg = resolve(EvalConfig, **{**dataclasses.asdict(cfg), **overrides, **({"iters": list(iters)} if iters else {})})
    points = sorted(set(cfg.iters))
    if not points or points[0] < 1:
        raise MlxlabError(f"iters must be positive iteration counts, found {cfg.iters}",
                          hint="e.g. --iters 100,250,500,1000")
    output, data = Path(output), Path(data)
    train_dir = output / "train"
    done = checkpoints(train_dir)
    if (train_dir / "result.json").is_file() and all(i in done for i in points):
        trained = TrainResult.from_json(json.loads((train_dir / "result.json").read_text(encoding="utf-8")))
    else:
        trained = train(model, data, train_dir, config=train_config, quiet=quiet,
                        **{**(train_overrides or {}), "num_iters": points[-1], "save_at": points,
                           "save_every": 0, "num_epochs": None, "resume": bool(done)})
    missing = [i for i in points if i not in trained.checkpoints]
    if missing:
        raise MlxlabError(f"training left no checkpoint at iteration {', '.join(map(str, missing))}",
                          path=train_dir / "checkpoints", hint="check --iters against the run's num_iters")
    base = model if model is not None else "smollm2"
    models = {"base": base, **{f"iter {i}": (base, trained.checkpoints[i]) for i in points}}
    labels = {"base": 0, **{f"iter {i}": i for i in points}}
    result = evaluate(models, prompts, output=output / "eval", test=_heldout_file(data, test), judge=judge,
                      iterations=labels, config=cfg, quiet=quiet)
    losses = {labels[m]: v.get("heldout_loss") for m, v in result.summary["models"].items()}
    plots = sweep_plots(result.summary, trained.log, output)
    table = sweep_table(result.summary, output / "summary.md", plots)
    return SweepResult(output, trained, result, losses, plots, table, write_report(output))
