"""Synthetic data generation: the LAB skills and knowledge pipelines, resumable and explained.

Every leaf runs its own pipeline (generate → judge → answer → judge, or Q&A → three judges), with its
own target (`samples_per_seed` attempts per seed example), so no leaf drowns another. Each stage is a
list of work units with deterministic ids; finished units are appended to a per-leaf journal
(`<output>/.journal/<leaf>.jsonl`) in fixed groups, and each unit's sampling is seeded by its id.
Killing the process at any point and running the same command again continues where it stopped and
writes the same data as an uninterrupted run. The per-leaf report says what every filter removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlxlab.config import GenerateConfig
from mlxlab.errors import MlxlabError
from mlxlab.prompts import extract, load_prompt, parse_score

JOURNAL_VERSION = 1
# the prompt templates (mlxlab/prompts/<role>.yaml) the pipelines use; other stages keep theirs there too
ROLES = ("skill_questions", "grounded_contexts", "grounded_questions", "question_judge", "answer", "pair_judge",
         "knowledge_qa", "knowledge_faithfulness", "knowledge_relevancy", "knowledge_question_quality")


@dataclass(frozen=True)
class DataResult:
    """What `generate_data` wrote, with its figures."""
    output: Path
    train: Path
    valid: Path
    test: Path
    knowledge_phase1: Path | None
    report: Path
    kept: dict[str, int]            # leaf name -> samples kept
    samples: int
    generated_tokens: int
    seconds: float
    tokens_per_second: float


@dataclass
class LeafStats:
    """The funnel of one leaf: every stage's counts, then dedup and the cap."""
    leaf: str
    kind: str
    stages: list[dict] = field(default_factory=list)   # {stage, sent, parsed, unparsed, passed}
    duplicates: int = 0
    capped: int = 0
    kept: int = 0
    tokens: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def funnel(self) -> str:
        """One line per filter: what went in, what could not be read, what passed."""
        parts = [f"{s['stage']}: {s['sent']} sent, {s['unparsed']} unparsed, {s['passed']} passed"
                 for s in self.stages]
        parts.append(f"duplicates removed: {self.duplicates}")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------- ROUGE-L

def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge_l(a: str | list[str], b: str | list[str]) -> float:
    """ROUGE-L F1 between two texts (longest common subsequence of lowercase words)."""
    x = _words(a) if isinstance(a, str) else a
    y = _words(b) if isinstance(b, str) else b
    if not x or not y:
        return 0.0
    prev = [0] * (len(y) + 1)
    for xi in x:
        cur = [0]
        for j, yj in enumerate(y):
            cur.append(prev[j] + 1 if xi == yj else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(x), lcs / len(y)
    return 2 * precision * recall / (precision + recall)


def remove_near_duplicates(texts: list[str], threshold: float, reference: list[str] = ()) -> list[int]:
    """Indices of `texts` to keep: each below `threshold` ROUGE-L to every kept text and every reference."""
    kept_words = [_words(t) for t in reference]
    keep = []
    for i, text in enumerate(texts):
        words = _words(text)
        if not words or any(rouge_l(words, other) >= threshold for other in kept_words):
            continue
        keep.append(i)
        kept_words.append(words)
    return keep


# ---------------------------------------------------------------------------------------------- journal

class Journal:
    """Append-only record of finished work units of one leaf; a torn last line is ignored."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.records: dict[str, dict] = {}
        self.restarted = False              # True when an older journal with other settings was set aside
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        header = _loads(lines[0]) if lines else None
        if header is not None and header.get("fingerprint") == fingerprint:
            for line in lines[1:]:
                record = _loads(line)
                if record and "unit" in record:
                    self.records[record["unit"]] = record
        else:
            if lines:   # settings changed: the old work does not apply; keep it aside, start afresh
                os.replace(path, path.with_suffix(".jsonl.stale"))
                self.restarted = True
            self._write([{"journal": JOURNAL_VERSION, "fingerprint": fingerprint}])

    def _write(self, records: list[dict]) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def add(self, records: list[dict]) -> None:
        """Append `records` (one group) durably."""
        self._write(records)
        for record in records:
            self.records[record["unit"]] = record


def _loads(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def leaf_key(name: str) -> str:
    """A file name for a leaf (its taxonomy path with / → __)."""
    return re.sub(r"[^\w.-]+", "_", name.replace("/", "__"))


# ---------------------------------------------------------------------------------------------- runner

class _Run:
    """One leaf's run: the teacher, the journal, the settings, the stats and the progress display."""

    def __init__(self, teacher, cfg: GenerateConfig, leaf, journal: Journal, stats: LeafStats, display):
        self.teacher, self.cfg, self.leaf, self.journal, self.stats, self.display = (
            teacher, cfg, leaf, journal, stats, display)
        self.group = max(1, teacher.batch_size if teacher.backend == "mlx" else teacher.concurrency * 2)

    def generate(self, stage: str, units: list[tuple[str, list[dict]]], *,
                 verdict: tuple[str, tuple[str, ...]] | None = None) -> dict[str, str]:
        """Texts for `units` ((id, messages)), from the journal where done, else from the teacher.

        `verdict` = (tag, choices) marks a judge stage: with judge_mode choose/auto on a teacher that can,
        the verdict is the likeliest choice after "[Start of <tag>]" instead of written text.
        """
        cfg = self.cfg
        judge = verdict is not None
        temperature = cfg.judge_temperature if judge else cfg.temperature
        max_tokens = cfg.judge_max_tokens if judge else cfg.max_tokens
        choose = judge and cfg.judge_mode in ("auto", "choose") and self.teacher.backend == "mlx"
        if judge and cfg.judge_mode == "choose" and not choose:
            raise MlxlabError(f"judge_mode 'choose' needs the mlx teacher backend, not {self.teacher.backend}",
                              hint="use --judge-mode generate (or auto)")
        task = self.display.start(f"{self.leaf.name} · {stage}", len(units))
        for lo in range(0, len(units), self.group):
            # fixed groups: a resumed run redoes a whole group, with the same batch, so results repeat exactly
            group = units[lo:lo + self.group]
            if all(uid in self.journal.records for uid, _ in group):
                self.display.restored(task, len(group))
                continue
            start = time.perf_counter()
            advance = lambda done, toks: self.display.advance(task, done, toks)  # noqa: E731
            messages = [m for _, m in group]
            picked = None
            if choose:
                tag, choices = verdict
                picked = self.teacher.choose(messages, list(choices), prefix=f"[Start of {tag}]\n", progress=advance)
            if picked is not None:
                out = [(f"[Start of {tag}]\n{p}\n[End of {tag}]" if p else "", 1, "choice") for p in picked]
            else:
                seeds = [_unit_seed(cfg.seed, self.leaf.name, uid) for uid, _ in group]
                done = self.teacher.generate(messages, n=1, temperature=temperature, top_p=cfg.top_p,
                                             max_tokens=max_tokens, seeds=seeds, progress=advance)
                out = [(c[0].text, c[0].tokens, c[0].finish_reason) for c in done]
            seconds = (time.perf_counter() - start) / len(group)
            self.journal.add([{"unit": uid, "text": text, "tokens": tokens, "finish": finish,
                               "seconds": round(seconds, 4)} for (uid, _), (text, tokens, finish) in zip(group, out)])
        self.display.finish(task)
        records = [self.journal.records[uid] for uid, _ in units]
        self.stats.tokens += sum(r["tokens"] for r in records)
        self.stats.seconds += sum(r.get("seconds", 0.0) for r in records)
        return {uid: r["text"] for (uid, _), r in zip(units, records)}

    def stage(self, name: str, items: dict[str, dict], render: Callable[[dict], list[dict]],
              parse: Callable[[str, dict], tuple[dict | None, bool]], *,
              verdict: tuple[str, tuple[str, ...]] | None = None) -> dict[str, dict]:
        """Run one role over `items`; keep what parses and passes; record the counts."""
        texts = self.generate(name, [(f"{name}/{key}", render(item)) for key, item in items.items()],
                              verdict=verdict)
        passed, unparsed = {}, 0
        for key, item in items.items():
            try:
                fields, ok = parse(texts[f"{name}/{key}"], item)
            except Exception:           # a parser bug must not lose a run: count it as unparsed
                fields, ok = None, False
            if fields is None:
                unparsed += 1
            elif ok:
                passed[key] = {**item, **fields}
        self.stats.stages.append({"stage": name, "sent": len(items), "parsed": len(items) - unparsed,
                                  "unparsed": unparsed, "passed": len(passed)})
        return passed


def _unit_seed(seed: int, leaf: str, uid: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{leaf}\0{uid}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _field(tag: str, cfg: GenerateConfig, name: str | None = None):
    """A parser that reads one tagged field into `name` (always passes when read)."""
    def parse(text: str, _item: dict):
        value = extract(text, tag, fallback=cfg.tag_fallback)
        return ({name or tag.lower(): value} if value else None), True
    return parse


def _judge(prompt, tag: str, key: str, accept: Callable[[str], bool]):
    """A parser that reads a judge's verdict into scores[key] and passes it through `accept`."""
    def parse(text: str, item: dict):
        value = parse_score(text, prompt.scores, tag)
        if value is None:
            return None, False
        return {"scores": {**item.get("scores", {}), key: value}}, accept(value)
    return parse


def _context_block(item: dict) -> str:
    return f"\n[Start of Context]\n{item['context']}\n[End of Context]" if item.get("context") else ""


# ---------------------------------------------------------------------------------------------- pipelines

def skills_pipeline(run: _Run) -> list[dict]:
    """Freeform and grounded skills: (contexts →) questions → judge → answers → judge."""
    cfg, leaf = run.cfg, run.leaf
    P = load_prompt
    task = leaf.task_description or ""
    seeds = list(leaf.seed_examples)
    items = {f"{i}/{k}": {"seed": i} for i in range(len(seeds)) for k in range(cfg.samples_per_seed)}
    if leaf.kind == "grounded_skill":
        items = run.stage("contexts", items, lambda it: P("grounded_contexts").render(
            task_description=task, seed_context=seeds[it["seed"]].get("context", "")), _field("Context", cfg))
        items = run.stage("questions", items, lambda it: P("grounded_questions").render(
            task_description=task, seed_question=seeds[it["seed"]]["question"], context=it["context"]),
            _field("Question", cfg))
    else:
        items = run.stage("questions", items, lambda it: P("skill_questions").render(
            task_description=task, seed_question=seeds[it["seed"]]["question"]), _field("Question", cfg))
    qj = P("question_judge")
    items = run.stage("question_judge", items, lambda it: qj.render(
        task_description=task, question=it["question"], context_block=_context_block(it)),
        _judge(qj, "Score", "question", lambda v: int(v) >= cfg.question_threshold), verdict=("Score", qj.scores))
    items = run.stage("answers", items, lambda it: P("answer").render(
        seed_question=seeds[it["seed"]]["question"], seed_answer=seeds[it["seed"]]["answer"],
        question=it["question"], context_block=_context_block(it)), _field("Answer", cfg))
    pj = P("pair_judge")
    items = run.stage("pair_judge", items, lambda it: pj.render(
        question=it["question"], answer=it["answer"], context_block=_context_block(it)),
        _judge(pj, "Score", "pair", lambda v: int(v) >= cfg.pair_threshold), verdict=("Score", pj.scores))
    return [{"unit": key, **item} for key, item in items.items()]


def _qa_parse(cfg: GenerateConfig):
    def parse(text: str, _item: dict):
        question, answer = extract(text, "Question"), extract(text, "Answer")
        if not question and cfg.tag_fallback:
            # the two-field form without tags: "Q: ... A: ..." is the common shape small teachers fall into
            m = re.search(r"(?:^|\n)\s*(?:Q|Question)\s*[:.]\s*(.+?)\n\s*(?:A|Answer)\s*[:.]\s*(.+)", text, re.DOTALL)
            question, answer = (m.group(1).strip(), m.group(2).strip()) if m else (None, None)
        return ({"question": question, "answer": answer} if question and answer else None), True
    return parse


def knowledge_pipeline(run: _Run, chunks: list) -> list[dict]:
    """Knowledge: Q&A grounded in a chunk (seed Q&A as examples) → faithfulness, relevancy, question quality."""
    cfg, leaf = run.cfg, run.leaf
    seeds = list(leaf.seed_examples)
    n = cfg.samples_per_seed
    items = {}
    for i in range(len(seeds)):
        for k in range(n):
            # spread attempts over the chunks so every part of the document gets questions
            chunk = chunks[(i * n + k) % len(chunks)]
            items[f"{i}/{k}"] = {"seed": i, "chunk": chunk.text, "chunk_index": chunk.index}
    P = load_prompt

    def examples(i: int) -> str:
        qas = seeds[i].get("questions_and_answers") or []
        return "\n".join(f"[Start of Question]\n{qa['question']}\n[End of Question]\n[Start of Answer]\n"
                         f"{qa['answer']}\n[End of Answer]" for qa in qas[:3])

    items = run.stage("qa", items, lambda it: P("knowledge_qa").render(
        domain=leaf.domain or "", document_outline=leaf.document_outline or "", examples=examples(it["seed"]),
        chunk=it["chunk"]), _qa_parse(cfg))
    fj, rj, qj = P("knowledge_faithfulness"), P("knowledge_relevancy"), P("knowledge_question_quality")
    items = run.stage("faithfulness", items, lambda it: fj.render(chunk=it["chunk"], answer=it["answer"]),
                      _judge(fj, "Verdict", "faithful", lambda v: v == "YES" or not cfg.require_faithful),
                      verdict=("Verdict", fj.scores))
    items = run.stage("relevancy", items, lambda it: rj.render(question=it["question"], answer=it["answer"]),
                      _judge(rj, "Score", "relevancy", lambda v: int(v) >= cfg.relevancy_threshold),
                      verdict=("Score", rj.scores))
    items = run.stage("question_quality", items, lambda it: qj.render(chunk=it["chunk"], question=it["question"]),
                      _judge(qj, "Score", "question_quality",
                             lambda v: int(v) >= cfg.question_quality_threshold), verdict=("Score", qj.scores))
    return [{"unit": key, **item} for key, item in items.items()]


def seed_questions(leaf) -> list[str]:
    """Every seed question of a leaf (skills: `question`; knowledge: the Q&A under each example)."""
    out = []
    for example in leaf.seed_examples:
        if "question" in example:
            out.append(str(example["question"]))
        for qa in example.get("questions_and_answers") or []:
            out.append(str(qa.get("question", "")))
    return out


# ---------------------------------------------------------------------------------------------- progress

class _Display:
    """A rich progress bar per stage (rate, tokens/s, ETA), or one log line per stage when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet or not sys.stderr.isatty()     # logs and pipes get plain lines, not redraws
        self.progress = None
        self.tasks: dict = {}
        if not quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rates]}"), TimeElapsedColumn(),
                                     TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True))

    def __enter__(self):
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def start(self, description: str, total: int):
        """A new stage line; returns its handle."""
        handle = self.progress.add_task(description, total=total, rates="") if self.progress else description
        self.tasks[handle] = {"start": time.perf_counter(), "done": 0, "tokens": 0, "total": total, "restored": 0}
        return handle

    def advance(self, handle, done: int, tokens: int) -> None:
        """Count finished samples and generated tokens."""
        state = self.tasks[handle]
        state["done"] += done
        state["tokens"] += tokens
        if self.progress:
            elapsed = max(1e-9, time.perf_counter() - state["start"])
            self.progress.update(handle, advance=done, rates=f"{state['done'] / elapsed:.2f} samples/s "
                                                             f"{state['tokens'] / elapsed:.1f} tok/s")

    def restored(self, handle, done: int) -> None:
        """Count samples taken from the journal (they do not enter the rates)."""
        self.tasks[handle]["restored"] += done
        if self.progress:
            self.progress.update(handle, advance=done, rates="from the journal")

    def finish(self, handle) -> None:
        """Close a stage line (quiet: print its summary)."""
        state = self.tasks.pop(handle)
        if self.quiet:
            elapsed = time.perf_counter() - state["start"]
            restored = f" ({state['restored']} from the journal)" if state["restored"] else ""
            sys.stderr.write(f"{handle}: {state['total']} units{restored}, {state['tokens']} new tokens in "
                             f"{elapsed:.1f} s ({state['tokens'] / max(elapsed, 1e-9):.1f} tok/s)\n")


# ---------------------------------------------------------------------------------------------- the stage

def _fingerprint(cfg: GenerateConfig, teacher, leaf) -> str:
    """What the journal's units depend on; a change starts the leaf afresh (thresholds do not count)."""
    from mlxlab.prompts import _DIR

    prompts = hashlib.sha256(b"".join((_DIR / f"{role}.yaml").read_bytes() for role in ROLES)).hexdigest()
    keys = ("seed", "temperature", "judge_temperature", "top_p", "max_tokens", "judge_max_tokens", "judge_mode",
            "samples_per_seed", "chunk_tokens", "chunk_overlap")
    data = {k: getattr(cfg, k) for k in keys}
    data.update(teacher=str(teacher.model_ref), backend=teacher.backend, url=teacher.url,
                group=teacher.batch_size, leaf=json.dumps(leaf.data, sort_keys=True, default=str),
                documents=[str(p) for p in leaf.documents], prompts=prompts)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_taxonomy(root: str):
    from mlxlab.taxonomy import Taxonomy

    tax = Taxonomy.load(root)
    if not tax.valid:
        errors = [str(p) for p in tax.problems if p.severity == "error"]
        raise MlxlabError(f"the taxonomy has {len(errors)} error(s); SDG needs a valid taxonomy:\n  "
                          + "\n  ".join(errors), hint=f"run `mlxlab taxonomy validate {root}` and fix them")
    if not tax.leaves:
        raise MlxlabError(f"no leaves (qna.yaml files) under {root}", path=root,
                          hint="a leaf is a folder under compositional_skills/ or knowledge/ holding qna.yaml")
    return tax


def _knowledge_chunks(leaf, teacher, cfg: GenerateConfig, stats: LeafStats) -> list:
    from mlxlab.chunking import TEXT_SUFFIXES, chunk_documents

    docs = [p for p in leaf.documents if Path(p).suffix.lower() in TEXT_SUFFIXES]
    for skipped in sorted(set(leaf.documents) - set(docs)):
        stats.notes.append(f"skipped {skipped}: only .md and .txt documents are read")
    chunks = chunk_documents(docs, teacher.count_tokens, chunk_tokens=cfg.chunk_tokens,
                             overlap_tokens=cfg.chunk_overlap)
    stats.notes.append(f"{len(docs)} document(s), {len(chunks)} chunk(s)")
    return chunks


def _run_leaf(leaf, teacher, cfg: GenerateConfig, out: Path, display: _Display) -> tuple[list[dict], LeafStats]:
    """Generate, filter and deduplicate one leaf; returns its kept samples and its stats."""
    stats = LeafStats(leaf.name, leaf.kind)
    journal = Journal(out / ".journal" / f"{leaf_key(leaf.name)}.jsonl", _fingerprint(cfg, teacher, leaf))
    if journal.restarted:
        stats.notes.append("the leaf or the generation settings changed since the last run: started afresh")
    run = _Run(teacher, cfg, leaf, journal, stats, display)
    if leaf.kind == "knowledge":
        chunks = _knowledge_chunks(leaf, teacher, cfg, stats)
        samples = knowledge_pipeline(run, chunks) if chunks else []
    else:
        samples = skills_pipeline(run)
    keep = remove_near_duplicates([s["question"] for s in samples], cfg.rouge_threshold, seed_questions(leaf))
    stats.duplicates = len(samples) - len(keep)
    samples = [samples[i] for i in keep]
    if cfg.max_per_leaf and len(samples) > cfg.max_per_leaf:
        stats.capped = len(samples) - cfg.max_per_leaf
        samples = samples[:cfg.max_per_leaf]
    stats.kept = len(samples)
    for sample in samples:
        sample.update(leaf=leaf.name, kind=leaf.kind)
    return samples, stats


def generate_data(taxonomy: str | Path | None = None, *, teacher=None, teacher_url: str | None = None,
                  output: str | Path | None = None, config: GenerateConfig | None = None,
                  **overrides) -> DataResult:
    """Run SDG over every leaf of `taxonomy` and write datasets + `report.json` into `output`.

    `teacher` is a `Teacher`, a model reference, or None (the embedded SmolLM2); `teacher_url` selects an
    OpenAI-compatible server. Other settings are `GenerateConfig` fields as keywords.
    """
    import dataclasses

    from mlxlab.config import resolve, save_resolved
    from mlxlab.teacher import make_teacher

    given = dataclasses.asdict(config) if config else {}
    instance = teacher if hasattr(teacher, "generate") else None     # a Teacher, or anything shaped like one
    given.update({k: v for k, v in dict(taxonomy=taxonomy, teacher=None if instance else teacher,
                                        teacher_url=teacher_url, output=output, **overrides).items()
                  if v is not None})
    cfg = resolve(GenerateConfig, **{k: (str(v) if isinstance(v, Path) else v) for k, v in given.items()})
    tax = _load_taxonomy(cfg.taxonomy)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(out / "config.yaml", cfg)
    start = time.perf_counter()
    teacher = instance or make_teacher(cfg.teacher, url=cfg.teacher_url, backend=cfg.teacher_backend,
                                       batch_size=cfg.batch_size or None, prefix_cache=cfg.prefix_cache,
                                       concurrency=cfg.concurrency)
    by_leaf: dict[str, list[dict]] = {}
    all_stats: list[LeafStats] = []
    with _Display(cfg.quiet) as display:
        for leaf in tax.leaves:
            samples, stats = _run_leaf(leaf, teacher, cfg, out, display)
            by_leaf[leaf.name] = samples
            all_stats.append(stats)
            _atomic_write(out / "generated" / f"{leaf_key(leaf.name)}.jsonl",
                          "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    from mlxlab.datasets import write_datasets

    files = write_datasets(out, tax.leaves, by_leaf, cfg)
    seconds = time.perf_counter() - start
    tokens = sum(s.tokens for s in all_stats)
    gen_seconds = sum(s.seconds for s in all_stats)
    report = {"taxonomy": str(cfg.taxonomy), "teacher": str(teacher.model_ref or "smollm2"),
              "backend": teacher.backend, "seed": cfg.seed, "seconds": round(seconds, 2),
              "generated_tokens": tokens, "tokens_per_second": round(tokens / gen_seconds, 2) if gen_seconds else 0.0,
              "files": {k: str(v) for k, v in files.items() if v}, "leaves": [dataclasses.asdict(s) for s in all_stats]}
    report_path = _atomic_write(out / "report.json", json.dumps(report, indent=2) + "\n")
    if not cfg.quiet:
        print_report(report)
    empty = [s for s in all_stats if s.kept == 0]
    if empty and not cfg.allow_empty:
        raise MlxlabError("these leaves ended with no samples (nothing written for them):\n  " + "\n  ".join(
            f"{s.leaf}: {s.funnel()}" for s in empty), path=report_path,
            hint="raise --samples-per-seed, lower the thresholds (question_threshold, pair_threshold, ...), "
                 "use a stronger --teacher, or pass --allow-empty")
    return DataResult(out, files["train"], files["valid"], files["test"], files.get("knowledge_phase1"),
                      report_path, {s.leaf: s.kept for s in all_stats}, sum(s.kept for s in all_stats), tokens,
                      seconds, report["tokens_per_second"])


def print_report(report: dict) -> None:
    """The per-leaf funnel as a rich table on stderr."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"SDG report ({report['generated_tokens']} tokens, {report['tokens_per_second']} tok/s)")
    for column in ("leaf", "kind", "funnel (sent→passed)", "dups", "kept", "tokens", "time s"):
        table.add_column(column)
    for leaf in report["leaves"]:
        funnel = "\n".join(f"{s['stage']} {s['sent']}→{s['passed']}" + (f" ({s['unparsed']} unparsed)"
                                                                       if s["unparsed"] else "")
                           for s in leaf["stages"])
        table.add_row(leaf["leaf"], leaf["kind"], funnel, str(leaf["duplicates"]), str(leaf["kept"]),
                      str(leaf["tokens"]), f"{leaf['seconds']:.1f}")
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    console.print(table)
    for leaf in report["leaves"]:
        for note in leaf["notes"]:
            console.print(f"{leaf['leaf']}: {note}")
