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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlxlab.config import GenerateConfig
from mlxlab.errors import MlxlabError
from mlxlab.files import atomic_write as _atomic_write
from mlxlab.progress import Display as _Display
from mlxlab.sdg.gates import rouge_l, words_of
from mlxlab.sdg.sdg_units import Journal, Run, journal_path, leaf_key

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
    prompt_style: str = ""
    scorer: str = ""
    seeds: dict = field(default_factory=dict)           # seed Q&A per split: {"train": n, "valid": n, "test": n}
    gates: dict = field(default_factory=dict)           # gate -> samples it removed
    gate_examples: dict = field(default_factory=dict)   # gate -> a few removed samples with the reason
    scores: dict = field(default_factory=dict)          # likelihood scorer: min / median / max of kept and dropped

    def funnel(self) -> str:
        """One line per filter: what went in, what could not be read, what passed."""
        parts = [f"{s['stage']}: {s['sent']} sent, {s['unparsed']} unparsed, {s['passed']} passed"
                 for s in self.stages]
        parts.append(f"duplicates removed: {self.duplicates}")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------- ROUGE-L

def remove_near_duplicates(texts: list[str], threshold: float, reference: list[str] = ()) -> list[int]:
    """Indices of `texts` to keep: each below `threshold` ROUGE-L to every kept text and every reference."""
    kept_words = [words_of(t) for t in reference]
    keep = []
    for i, text in enumerate(texts):
        words = words_of(text)
        if not words or any(rouge_l(words, other) >= threshold for other in kept_words):
            continue
        keep.append(i)
        kept_words.append(words)
    return keep


# ---------------------------------------------------------------------------------------------- filters

def gate_stage(run: Run, items: dict[str, dict], profile) -> dict[str, dict]:
    """Drop what a deterministic gate catches (`mlxlab.sdg.gates`); count each gate and keep a few examples."""
    from mlxlab.sdg.gates import GATES, check_sample

    passed = {}
    removed = {gate: 0 for gate in GATES}
    for key, item in items.items():
        hit = check_sample(item["question"], item["answer"], profile, finish_reason=item.get("finish", "stop"),
                           context=item.get("chunk") or item.get("context") or "")
        if hit is None:
            passed[key] = item
            continue
        gate, reason = hit
        removed[gate] += 1
        shown = run.stats.gate_examples.setdefault(gate, [])
        if len(shown) < 3:
            shown.append({"question": item["question"][:160], "answer": item["answer"][:160], "reason": reason})
    run.stats.gates = removed
    run.stats.stages.append({"stage": "gates", "sent": len(items), "parsed": len(items), "unparsed": 0,
                             "passed": len(passed), "removed": {g: n for g, n in removed.items() if n}})
    return passed


def likelihood_stage(run: Run, items: dict[str, dict]) -> dict[str, dict]:
    """Keep the best `keep_fraction` of samples by log p(answer | question) - log p(answer) per token (> 0)."""
    from mlxlab.sdg.fewshot import score_texts

    if not items:
        run.stats.stages.append({"stage": "likelihood", "sent": 0, "parsed": 0, "unparsed": 0, "passed": 0})
        return {}
    keys = list(items)
    pairs = [p for key in keys for p in score_texts(items[key])]
    task = run.display.start(f"{run.leaf.name} · likelihood", len(pairs))
    values = run.teacher.loglikelihood(pairs, progress=lambda done, toks: run.display.advance(task, done, toks))
    run.display.finish(task)
    scores = {}
    for n, key in enumerate(keys):
        (cond, count), (uncond, _) = values[2 * n], values[2 * n + 1]
        scores[key] = (cond - uncond) / max(count, 1)
    ranked = sorted((k for k in keys if scores[k] > 0), key=lambda k: (-scores[k], k))
    kept = ranked[:max(1, round(run.cfg.keep_fraction * len(keys)))] if ranked else []
    passed = {k: {**items[k], "scores": {**items[k].get("scores", {}), "likelihood": round(scores[k], 4)}}
              for k in keys if k in set(kept)}

    def spread(values: list[float]) -> dict:
        values = sorted(values)
        return {"min": round(values[0], 3), "median": round(values[len(values) // 2], 3),
                "max": round(values[-1], 3)} if values else {}

    run.stats.scores = {"kept": spread([scores[k] for k in kept]),
                        "dropped": spread([scores[k] for k in keys if k not in set(kept)])}
    run.stats.stages.append({"stage": "likelihood", "sent": len(keys), "parsed": len(keys), "unparsed": 0,
                             "passed": len(passed)})
    return passed


def seed_questions(leaf) -> list[str]:
    """Every seed question of a leaf (skills: `question`; knowledge: the Q&A under each example)."""
    out = []
    for example in leaf.seed_examples:
        if "question" in example:
            out.append(str(example["question"]))
        for qa in example.get("questions_and_answers") or []:
            out.append(str(qa.get("question", "")))
    return out


# ---------------------------------------------------------------------------------------------- the stage

def _fingerprint(cfg: GenerateConfig, teacher, leaf, *, content_keyed: bool = False) -> str:
    """What the journal's units depend on; a change starts the leaf afresh (thresholds do not count).

    The documents count by their bytes (an edited document in a plain folder, or at a branch name, keeps its
    path), except where the units are keyed by their passage's content (`content_keyed`: back-translation),
    so that the unchanged passages of an edited document keep their questions.
    """
    from mlxlab.prompts import DIR

    prompts = hashlib.sha256(b"".join((DIR / f"{role}.yaml").read_bytes() for role in ROLES)).hexdigest()
    from mlxlab.sdg.fewshot import LAYOUT_VERSION

    keys = ("seed", "temperature", "judge_temperature", "top_p", "max_tokens", "judge_max_tokens", "judge_mode",
            "samples_per_seed", "chunk_tokens", "chunk_overlap", "heldout_fraction", "valid_fraction")
    data = {k: getattr(cfg, k) for k in keys}
    # a server's model name, not its URLs: a fleet of any size or order gives the same data (in-process: None)
    data.update(teacher=str(teacher.model_ref), backend=teacher.backend,
                url=str(teacher.model_ref) if teacher.backend == "openai" else None,
                group=teacher.batch_size, leaf=json.dumps(leaf.data, sort_keys=True, default=str),
                documents=None if content_keyed else documents_digest(leaf.documents), prompts=prompts,
                fewshot=LAYOUT_VERSION)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_taxonomy(root: str):
    from mlxlab.taxonomy.taxonomy import Taxonomy

    tax = Taxonomy.load(root)
    if not tax.valid:
        errors = [str(p) for p in tax.problems if p.severity == "error"]
        raise MlxlabError(f"the taxonomy has {len(errors)} error(s); SDG needs a valid taxonomy:\n  "
                          + "\n  ".join(errors), hint=f"run `mlxlab taxonomy validate {root}` and fix them")
    if not tax.leaves:
        raise MlxlabError(f"no leaves (qna.yaml files) under {root}", path=root,
                          hint="a leaf is a folder under compositional_skills/ or knowledge/ holding qna.yaml")
    return tax


def _readable(leaf) -> list:
    """A knowledge leaf's documents that mlxlab reads (.md, .txt, .pdf)."""
    from mlxlab.taxonomy.documents import READABLE_SUFFIXES

    return [p for p in leaf.documents if Path(p).suffix.lower() in READABLE_SUFFIXES] if leaf.kind == "knowledge" \
        else []


def _sections(leaf) -> list[dict]:
    """A knowledge leaf's document sections as question/answer pairs (`chunking.section_pairs`)."""
    from mlxlab.sdg.chunking import section_pairs

    return section_pairs(_readable(leaf))


def _knowledge_chunks(leaf, teacher, cfg: GenerateConfig, stats: LeafStats) -> list:
    from mlxlab.sdg.chunking import chunk_documents

    docs = _readable(leaf)
    for skipped in sorted(set(leaf.documents) - set(docs)):
        stats.notes.append(f"skipped {skipped}: only .md, .txt and .pdf documents are read")
    chunks = chunk_documents(docs, teacher.count_tokens, chunk_tokens=cfg.chunk_tokens,
                             overlap_tokens=cfg.chunk_overlap)
    stats.notes.append(f"{len(docs)} document(s), {len(chunks)} chunk(s)")
    return chunks


CAPABLE_TEACHER_PARAMETERS = 3_000_000_000   # from here on a teacher follows role prompts and writes verdicts


def choose_methods(teacher, cfg: GenerateConfig) -> dict:
    """{"prompt_style", "scorer", "parameters", "why"}: the `auto` settings resolved for this teacher.

    A teacher below `CAPABLE_TEACHER_PARAMETERS` (measured on SmolLM2-135M: LAB role prompts gave template
    debris and its verdicts passed everything) gets the few-shot style and the likelihood scorer; a larger
    or remote one (size unknown: a server usually hosts a capable model) gets the LAB prompts and judges.
    """
    for name, allowed in (("prompt_style", ("auto", "lab", "fewshot")), ("scorer", ("auto", "likelihood", "judge",
                                                                                      "none"))):
        if getattr(cfg, name) not in allowed:
            raise MlxlabError(f"unknown {name} {getattr(cfg, name)!r}", hint="use one of: " + ", ".join(allowed))
    parameters = teacher.num_parameters() if hasattr(teacher, "num_parameters") else None
    small = parameters is not None and parameters < CAPABLE_TEACHER_PARAMETERS
    size = f"{parameters / 1e6:.0f}M parameters" if parameters else "size unknown"
    style = cfg.prompt_style if cfg.prompt_style != "auto" else ("fewshot" if small else "lab")
    can_score = hasattr(teacher, "can_score") and teacher.can_score()
    scorer = cfg.scorer
    if scorer == "auto":
        scorer = "likelihood" if small and can_score else "judge"
    elif scorer == "likelihood" and not can_score:
        raise MlxlabError("the likelihood scorer needs an in-process teacher (mlx or llama-cpp), not "
                          f"{teacher.backend}",
                          hint="use --scorer judge or --scorer auto")
    why = f"teacher {size} ({'small' if small else 'capable or unknown'}): " \
          f"prompt_style {style}{' (auto)' if cfg.prompt_style == 'auto' else ''}, " \
          f"scorer {scorer}{' (auto)' if cfg.scorer == 'auto' else ''}"
    return {"prompt_style": style, "scorer": scorer, "parameters": parameters, "why": why}


def _run_leaf(leaf, teacher, cfg: GenerateConfig, out: Path, display: _Display, methods: dict,
              split: dict[str, list[dict]], share: dict | None = None) -> tuple[list[dict], LeafStats, dict]:
    """Generate, gate, score and deduplicate one leaf; returns its kept samples, stats and documents
    ({"chunks": texts, "sections": question/answer pairs}).

    Only the leaf's training seeds (`split["train"]`) are shown to the teacher and the gates.
    """
    from mlxlab.sdg import lab
    from mlxlab.sdg.fewshot import fewshot_pipeline
    from mlxlab.sdg.gates import leaf_profile

    stats = LeafStats(leaf.name, leaf.kind, prompt_style=methods["prompt_style"], scorer=methods["scorer"],
                      seeds={name: len(items) for name, items in split.items()})
    from mlxlab.distributed import world

    # every rank keeps its own journal (no shared filesystem); rank 0's also holds what the others sent
    # few-shot knowledge is back-translated: the documents' passages are the answers, the teacher asks
    back_translated = leaf.kind == "knowledge" and methods["prompt_style"] == "fewshot"
    journal = Journal(journal_path(out, leaf.name, world().rank),
                      _fingerprint(cfg, teacher, leaf, content_keyed=back_translated))
    if journal.restarted:
        stats.notes.append("the leaf, its documents or the generation settings changed since the last run: "
                           "started afresh")
    run = Run(teacher, cfg, leaf, journal, stats, display, share)
    seeds = split["train"]
    chunks = _knowledge_chunks(leaf, teacher, cfg, stats) if leaf.kind == "knowledge" else []
    lengths = sorted(teacher.count_tokens(s["answer"]) for s in seeds)
    if back_translated:
        from mlxlab.sdg.chunking import passages

        run.passages = passages(_readable(leaf))
        stats.notes.append(f"{len(run.passages)} passage(s) to ask about; the answers are the documents' own text")
    if not seeds or (leaf.kind == "knowledge" and not (run.passages if back_translated else chunks)):
        items = {}
        stats.notes.append("nothing to generate from: " + ("no visible seed examples" if not seeds else
                           "no document passage long enough to ask about" if back_translated else "no chunks"))
    elif lengths[0] > cfg.max_tokens and not back_translated:
        # answers like the seeds' would all be cut off (and dropped as truncated): do not spend the time
        items = {}
        stats.notes.append(f"not generated: even the shortest seed answer has {lengths[0]} teacher tokens, over "
                           f"max_tokens={cfg.max_tokens}; raise --max-tokens to generate for this leaf (its seeds "
                           "are still trained on)")
    elif methods["prompt_style"] == "fewshot":
        items = fewshot_pipeline(run, seeds, chunks)
    elif leaf.kind == "knowledge":
        items = lab.knowledge_pipeline(run, seeds, chunks)
    else:
        items = lab.skills_pipeline(run, seeds)
    if cfg.gates:
        # a back-translated answer is a passage: its length bounds come from the passages, not the seed answers
        profile = leaf_profile([(s["question"], s["answer"]) for s in seeds], task=leaf.task_description or "",
                               documents=[c.text for c in chunks],
                               answers=[p["text"] for p in run.passages] if back_translated else None)
        items = gate_stage(run, items, profile)
    if methods["scorer"] == "likelihood":
        items = likelihood_stage(run, items)
    elif methods["scorer"] == "judge":
        items = (lab.knowledge_judges if leaf.kind == "knowledge" else lab.skills_judges)(run, items)
    samples = [{"unit": key, **item} for key, item in items.items()]
    # against every seed, held-out ones included: a generated near-copy of a test question would leak it
    keep = remove_near_duplicates([s["question"] for s in samples], cfg.rouge_threshold, seed_questions(leaf))
    stats.duplicates = len(samples) - len(keep)
    samples = [samples[i] for i in keep]
    if cfg.max_per_leaf and len(samples) > cfg.max_per_leaf:
        stats.capped = len(samples) - cfg.max_per_leaf
        samples = samples[:cfg.max_per_leaf]
    stats.kept = len(samples)
    for sample in samples:
        sample.update(leaf=leaf.name, kind=leaf.kind)
    return samples, stats, {"chunks": [c.text for c in chunks], "sections": _sections(leaf) if cfg.document_qa else []}


def documents_digest(documents) -> str:
    """A hash of the documents' names and bytes."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(f"{Path(document).name}\0".encode())
        digest.update(hashlib.sha256(Path(document).read_bytes()).digest())
    return digest.hexdigest()[:16]


def _taxonomy_digest(tax) -> str:
    """A hash of every leaf's content and documents: ranks must generate from the same taxonomy."""
    digest = hashlib.sha256()
    for leaf in tax.leaves:
        digest.update(json.dumps([leaf.name, leaf.data], sort_keys=True, default=str).encode())
        digest.update(documents_digest(leaf.documents).encode())
    return digest.hexdigest()[:16]


def make_sdg_teacher(cfg: GenerateConfig):
    """The teacher that `cfg` names (model, URL, backend, batch and prefix-cache settings)."""
    from mlxlab.distributed import from_main, world
    from mlxlab.teacher.teacher import default_batch_size, make_teacher

    # the batch decides the groups and so the text: under mlx.launch every rank takes rank 0's
    batch = cfg.batch_size or (from_main(default_batch_size, "choosing the batch size") if world().size > 1
                               else None)
    return make_teacher(cfg.teacher, url=cfg.teacher_url, backend=cfg.teacher_backend, batch_size=batch,
                        prefix_cache=cfg.prefix_cache, concurrency=cfg.concurrency)


def generate_data(taxonomy: str | Path | None = None, *, teacher=None, teacher_url: str | list[str] | None = None,
                  output: str | Path | None = None, config: GenerateConfig | None = None,
                  **overrides) -> DataResult:
    """Run SDG over every leaf of `taxonomy` and write datasets + `report.json` into `output`.

    `teacher` is a `Teacher`, a model reference, or None (the embedded SmolLM2); `teacher_url` selects an
    OpenAI-compatible server. Other settings are `GenerateConfig` fields as keywords.
    """
    import dataclasses

    from mlxlab.config import resolve

    given = dataclasses.asdict(config) if config else {}
    instance = teacher if teacher is not None and not isinstance(teacher, (str, Path)) else None  # a Teacher
    given.update({k: v for k, v in dict(taxonomy=taxonomy, teacher=None if instance else teacher,
                                        teacher_url=teacher_url, output=output, **overrides).items()
                  if v is not None})
    cfg = resolve(GenerateConfig, **{k: (str(v) if isinstance(v, Path) else v) for k, v in given.items()})
    from mlxlab.distributed import guard

    with guard("generating data"):
        return _generate(cfg, instance)


def _generate(cfg: GenerateConfig, instance) -> DataResult:
    import dataclasses

    from mlxlab.config import save_resolved
    from mlxlab.distributed import gather_json, world

    w = world()
    tax = _load_taxonomy(cfg.taxonomy)
    if w.size > 1:
        # each rank reads the taxonomy and documents from its own disk: they must be the same everywhere
        digests = gather_json(_taxonomy_digest(tax), "comparing the taxonomies", w)
        if any(d != digests[0] for d in digests):
            raise MlxlabError(f"the taxonomy under {cfg.taxonomy} differs between ranks: "
                              + ", ".join(f"rank {r}: {d}" for r, d in enumerate(digests)),
                              hint="copy the same taxonomy (and its documents) to every machine")
        cfg = dataclasses.replace(cfg, quiet=cfg.quiet or not w.main)
    out = Path(cfg.output)
    if w.main:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(out / "config.yaml", cfg)
    start = time.perf_counter()
    teacher = instance or make_sdg_teacher(cfg)
    try:
        return _generate_with(teacher, cfg, tax, out, start, w)
    finally:
        if teacher is not instance:     # ours: free its model now (a llama.cpp teacher's KV cells are ~0.5 GB)
            teacher.close()


def _generate_with(teacher, cfg: GenerateConfig, tax, out: Path, start: float, w) -> DataResult:
    """`_generate` once the teacher is loaded: every leaf, the datasets and the report."""
    import dataclasses

    from mlxlab.distributed import from_main, gather_json

    if w.size > 1 and len(set(gather_json(teacher.batch_size, "comparing the batch sizes", w))) > 1:
        raise MlxlabError("the ranks' teachers decode different batch sizes, which would change the text",
                          hint="pass the same --batch-size to every rank")
    from mlxlab.sdg.datasets import split_seeds, write_datasets

    methods = choose_methods(teacher, cfg)
    splits = {leaf.name: split_seeds(leaf, heldout_fraction=cfg.heldout_fraction, valid_fraction=cfg.valid_fraction,
                                     seed=cfg.seed) for leaf in tax.leaves}
    by_leaf: dict[str, list[dict]] = {}
    documents: dict[str, dict] = {}
    all_stats: list[LeafStats] = []
    share = {"units": 0, "tokens": 0}
    with _Display(cfg.quiet) as display:
        for leaf in tax.leaves:
            samples, stats, documents[leaf.name] = _run_leaf(leaf, teacher, cfg, out, display, methods,
                                                             splits[leaf.name], share)
            by_leaf[leaf.name] = samples
            all_stats.append(stats)
            if w.main:
                _atomic_write(out / "generated" / f"{leaf_key(leaf.name)}.jsonl",
                              "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    shares = [{"rank": r, **s} for r, s in enumerate(gather_json(share, "collecting each rank's share", w))]
    files = from_main(lambda: {k: str(v) if v else None for k, v in write_datasets(
        out, tax.leaves, by_leaf, cfg, splits=splits, documents=documents).items()}, "writing the datasets", w)
    files = {k: Path(v) if v else None for k, v in files.items()}
    seconds = time.perf_counter() - start
    tokens = sum(s.tokens for s in all_stats)
    gen_seconds = sum(s.seconds for s in all_stats)
    report = {"taxonomy": str(cfg.taxonomy), "teacher": str(teacher.model_ref or "smollm2"),
              "backend": teacher.backend, "backend_reason": getattr(teacher, "backend_reason", None),
              "servers": getattr(teacher, "servers", None),
              "teacher_file": getattr(teacher, "gguf_note", None), "seed": cfg.seed, "seconds": round(seconds, 2),
              "methods": methods, "world_size": w.size, "ranks": shares,
              "generated_tokens": tokens, "tokens_per_second": round(tokens / gen_seconds, 2) if gen_seconds else 0.0,
              "files": {k: str(v) for k, v in files.items() if v}, "leaves": [dataclasses.asdict(s) for s in all_stats]}
    report_path = out / "report.json"
    if w.main:
        _atomic_write(report_path, json.dumps(report, indent=2) + "\n")
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
