"""SDG output as chat JSONL datasets: train/valid/test, knowledge phase-1 and the phase-2 mix, replay, stats.

Every line is `{"messages": [...], "metadata": {"leaf", "kind", "scores", "source", ...}}`.
- `train.jsonl` / `valid.jsonl`: the phase-2 mix — skills, knowledge with the answering chunk among
  distractor chunks (RAFT-style), and optional replay samples — split deterministically by seed.
- `knowledge_phase1.jsonl`: knowledge Q&A with its chunk in the prompt (train with loss on all tokens).
- `test.jsonl`: the leaves' seed examples, held out from training.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from mlxlab.errors import MlxlabError


def _msgs(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user.strip()}, {"role": "assistant", "content": assistant.strip()}]


def _with_context(context: str, question: str) -> str:
    return f"{context.strip()}\n\n{question.strip()}"


def _fraction(*parts) -> float:
    """A stable number in [0, 1) for a tuple of values (the same on every machine and run)."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def skill_record(sample: dict) -> dict:
    """A generated skill sample as a messages record (a grounded sample's context goes in the user turn)."""
    user = _with_context(sample["context"], sample["question"]) if sample.get("context") else sample["question"]
    return {"messages": _msgs(user, sample["answer"]),
            "metadata": {"leaf": sample["leaf"], "kind": sample["kind"], "scores": sample.get("scores", {}),
                         "source": "generated", "unit": sample.get("unit")}}


def knowledge_records(sample: dict, distractors: list[str], seed: int) -> tuple[dict, dict]:
    """(phase-1 record: chunk + question; phase-2 record: chunk shuffled among distractors + question)."""
    meta = {"leaf": sample["leaf"], "kind": "knowledge", "scores": sample.get("scores", {}), "unit": sample.get("unit")}
    phase1 = {"messages": _msgs(_with_context(sample["chunk"], sample["question"]), sample["answer"]),
              "metadata": {**meta, "source": "generated", "phase": 1, "mask_prompt": False}}
    docs = [sample["chunk"], *distractors]
    random.Random(f"{seed}\0{sample['leaf']}\0{sample.get('unit')}").shuffle(docs)
    context = "\n\n".join(f"Document {i + 1}:\n{d}" for i, d in enumerate(docs))
    phase2 = {"messages": _msgs(_with_context(context, sample["question"]), sample["answer"]),
              "metadata": {**meta, "source": "generated", "phase": 2, "distractors": len(distractors)}}
    return phase1, phase2


def seed_records(leaf) -> list[dict]:
    """A leaf's seed examples as messages records (the held-out test set)."""
    meta = {"leaf": leaf.name, "kind": leaf.kind, "source": "seed"}
    out = []
    for i, example in enumerate(leaf.seed_examples):
        if "question" in example:
            question = str(example["question"])
            user = _with_context(str(example["context"]), question) if example.get("context") else question
            out.append({"messages": _msgs(user, str(example.get("answer", ""))), "metadata": {**meta, "seed": i}})
        for qa in example.get("questions_and_answers") or []:
            user = _with_context(str(example.get("context", "")), str(qa.get("question", "")))
            out.append({"messages": _msgs(user, str(qa.get("answer", ""))), "metadata": {**meta, "seed": i}})
    return out


def read_replay(path: str | Path, count: int, seed: int) -> list[dict]:
    """`count` records drawn (without replacement, stable for a seed) from a messages JSONL file."""
    from mlxlab.data import read_jsonl

    records = read_jsonl(path)
    bad = next((i for i, r in enumerate(records) if not isinstance(r.get("messages"), list)), None)
    if bad is not None:
        raise MlxlabError("replay data needs a 'messages' list on every line", path=path, line=bad + 1)
    random.Random(seed).shuffle(records)
    return [{"messages": r["messages"], "metadata": {**(r.get("metadata") or {}), "source": "replay"}}
            for r in records[:count]]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write records atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_datasets(output: Path, leaves, by_leaf: dict[str, list[dict]], cfg) -> dict[str, Path | None]:
    """Write train/valid/test (+ knowledge_phase1) from the kept samples of every leaf; return the paths."""
    mix, phase1 = [], []
    for leaf in leaves:
        samples = by_leaf.get(leaf.name, [])
        if leaf.kind != "knowledge":
            mix.extend(skill_record(s) for s in samples)
            continue
        chunks = sorted({s["chunk"] for s in samples})
        for s in samples:
            others = [c for c in chunks if c != s["chunk"]]
            random.Random(f"{cfg.seed}\0{s.get('unit')}").shuffle(others)
            p1, p2 = knowledge_records(s, others[:cfg.distractors], cfg.seed)
            phase1.append(p1)
            mix.append(p2)
    valid = [r for r in mix if _fraction(cfg.seed, r["metadata"]["leaf"], r["metadata"]["unit"]) < cfg.valid_fraction]
    if not valid and len(mix) >= 2 and cfg.valid_fraction > 0:
        valid = [min(mix, key=lambda r: _fraction(cfg.seed, r["metadata"]["leaf"], r["metadata"]["unit"]))]
    train = [r for r in mix if r not in valid]
    if cfg.replay and cfg.replay_ratio > 0:
        train.extend(read_replay(cfg.replay, round(cfg.replay_ratio * len(train)), cfg.seed))
    test = [r for leaf in leaves for r in seed_records(leaf)]
    files: dict[str, Path | None] = {
        "train": write_jsonl(output / "train.jsonl", train),
        "valid": write_jsonl(output / "valid.jsonl", valid),
        "test": write_jsonl(output / "test.jsonl", test),
        "knowledge_phase1": write_jsonl(output / "knowledge_phase1.jsonl", phase1) if phase1 else None,
    }
    return files


def stats(path: str | Path, tokenizer=None) -> dict:
    """Counts per leaf and source, and token lengths (tokenizer's, else whitespace words) of a messages JSONL."""
    from mlxlab.data import read_jsonl

    records = read_jsonl(path)
    count = (lambda t: len(tokenizer.encode(t))) if tokenizer is not None else (lambda t: len(t.split()))
    lengths = sorted(sum(count(m.get("content", "")) for m in r.get("messages", [])) for r in records)
    by_leaf: dict[str, int] = {}
    by_source: dict[str, int] = {}
    for r in records:
        meta = r.get("metadata") or {}
        by_leaf[meta.get("leaf", "?")] = by_leaf.get(meta.get("leaf", "?"), 0) + 1
        by_source[meta.get("source", "?")] = by_source.get(meta.get("source", "?"), 0) + 1
    return {"path": str(path), "records": len(records), "by_leaf": by_leaf, "by_source": by_source,
            "tokens": {"min": lengths[0] if lengths else 0, "max": lengths[-1] if lengths else 0,
                       "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
                       "median": lengths[len(lengths) // 2] if lengths else 0},
            "unit": "tokens" if tokenizer is not None else "words"}
