"""SDG output as chat JSONL datasets: the seed split, phase 1 (knowledge), the phase-2 mix, replay, stats.

Every line is `{"messages": [...], "metadata": {"leaf", "kind", "scores", "source", ...}}` (document text is
`{"text": ..., "metadata": ...}`).

The seed split (`split_seeds`): each leaf's human-written seed Q&A are ranked by a hash of (seed, leaf, question)
— stable across runs and machines, independent of file order — and the first `heldout_fraction` (at least one
where the leaf has three or more) is the test set, never shown to the teacher or the student; the next
`valid_fraction` of the rest (at least one where four or more remain) is validation, also hidden from the
teacher; the rest are training seeds, shown to the teacher and trained on (they are the best samples there are).

- `phase1/train.jsonl`: the knowledge documents' chunks as plain text (loss on every token), their sections as
  question/answer pairs (a question from the heading, the section's text as the answer), every leaf's
  training seeds, and generated knowledge Q&A: back-translated ones (a teacher's question answered by a
  passage of the documents) closed-book, the others with their chunk in the prompt (loss on all tokens);
  `phase1/valid.jsonl`: every leaf's validation items (phase 1 trains every leaf's seeds).
- `train.jsonl` / `valid.jsonl`: the phase-2 mix — training seeds of every leaf, generated skills, back-translated
  knowledge Q&A, other generated knowledge with the answering chunk among distractor chunks (RAFT-style), and
  optional replay samples.
  Validation holds human-written seeds only: checkpoints are chosen by how well the model answers what people
  wrote, so generated data that does not help them cannot win.
- `test.jsonl`: the held-out seeds.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.prompts import DIR as PROMPTS_DIR


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


def seed_items(leaf) -> list[dict]:
    """A leaf's seed Q&A as items {question, answer, context?, example} (knowledge: one per Q&A)."""
    out = []
    for i, example in enumerate(leaf.seed_examples):
        if "question" in example:
            item = {"question": str(example["question"]), "answer": str(example.get("answer", "")), "example": i}
            if example.get("context"):
                item["context"] = str(example["context"])
            out.append(item)
        for qa in example.get("questions_and_answers") or []:
            out.append({"question": str(qa.get("question", "")), "answer": str(qa.get("answer", "")),
                        "context": str(example.get("context", "")), "example": i})
    return out


def split_seeds(leaf, *, heldout_fraction: float, valid_fraction: float, seed: int = 0) -> dict[str, list[dict]]:
    """{"train", "valid", "test"} seed items of a leaf (see the module docstring for the rule)."""
    items = seed_items(leaf)
    ranked = sorted(items, key=lambda it: _fraction("seed-split", seed, leaf.name, it["question"]))
    n_test = max(1, round(len(items) * heldout_fraction)) if len(items) >= 3 and heldout_fraction > 0 else 0
    rest = len(items) - n_test
    n_valid = max(1, round(rest * valid_fraction)) if rest >= 4 and valid_fraction > 0 else 0
    test, valid = ranked[:n_test], ranked[n_test:n_test + n_valid]
    hidden = {id(it) for it in test + valid}
    return {"train": [it for it in items if id(it) not in hidden],      # in file order: prompts stay readable
            "valid": valid, "test": test}


def seed_record(leaf, item: dict, split: str) -> dict:
    """A seed item as a messages record (a skill's context goes in the user turn; a knowledge question
    is asked without its context, as a user would ask it)."""
    grounded = leaf.kind != "knowledge" and item.get("context")
    user = _with_context(item["context"], item["question"]) if grounded else item["question"]
    return {"messages": _msgs(user, item["answer"]),
            "metadata": {"leaf": leaf.name, "kind": leaf.kind, "source": "seed", "seed": item["example"],
                         "split": split, "unit": f"seed/{item['example']}/{item['question'][:40]}"}}


def document_records(leaf, chunks: list[str]) -> list[dict]:
    """A knowledge leaf's document chunks as plain-text records (trained on every token)."""
    return [{"text": chunk, "metadata": {"leaf": leaf.name, "kind": "knowledge", "source": "document",
                                         "chunk": i, "mask_prompt": False}} for i, chunk in enumerate(chunks)]


def section_records(leaf, sections: list[dict]) -> list[dict]:
    """A knowledge leaf's document sections as chat records: a question from the heading, the text as answer."""
    return [{"messages": _msgs(s["question"], s["answer"]),
             "metadata": {"leaf": leaf.name, "kind": "knowledge", "source": "document", "unit": s["source"]}}
            for s in sections]


def read_replay(path: str | Path, count: int, seed: int) -> list[dict]:
    """`count` records drawn (without replacement, stable for a seed) from a messages JSONL file."""
    from mlxlab.train.data import read_jsonl

    records = read_jsonl(path)
    bad = next((i for i, r in enumerate(records) if not isinstance(r.get("messages"), list)), None)
    if bad is not None:
        raise MlxlabError("replay data needs a 'messages' list on every line", path=path, line=bad + 1)
    random.Random(seed).shuffle(records)
    return [{"messages": r["messages"], "metadata": {**(r.get("metadata") or {}), "source": "replay"}}
            for r in records[:count]]


REPLAY_PROMPTS = PROMPTS_DIR / "general_prompts.yaml"


def general_prompts(path: str | Path | None = None) -> list[str]:
    """The generic user prompts of the replay set (`prompts:` list in a YAML file; default: the packaged one)."""
    import yaml

    from mlxlab.config import compose_yaml

    text, root = compose_yaml(path or REPLAY_PROMPTS, "general prompts file")
    data = yaml.safe_load(text) if root is not None else None
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise MlxlabError("a general prompts file needs `prompts:` with a list of non-empty strings",
                          path=path or REPLAY_PROMPTS, line=1)
    return [p.strip() for p in prompts]


GENERAL_VALID = PROMPTS_DIR / "general_valid.jsonl"


def self_replay(teacher, output: str | Path, *, prompts: list[str] | None = None, max_tokens: int = 96,
                seed: int = 0) -> Path:
    """`output/replay.jsonl`: the base model's own answers to generic prompts, a replay buffer for training.

    Mixed into training, they hold the student near what it already does well, with no downloaded data.
    `teacher` is a `Teacher` on the *student* base model. An answer cut at `max_tokens` keeps its complete
    sentences (the end of the turn then follows a finished sentence). Forgetting itself is measured on
    hand-written general chat (`GENERAL_VALID`), not on these answers: the model's own greedy text has so low
    a loss that any training looks like forgetting there.
    """
    prompts = prompts or general_prompts()
    replies = teacher.generate([[{"role": "user", "content": p}] for p in prompts], temperature=0.0,
                               max_tokens=max_tokens, seed=seed)
    records = []
    for prompt, (reply, *_) in zip(prompts, replies):
        text = reply.text.strip()
        if reply.finish_reason == "length":
            ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
            text = text[:ends[-1]] if ends and ends[-1] > len(text) // 3 else ""
        if text:
            records.append({"messages": _msgs(prompt, text), "metadata": {"source": "replay", "leaf": "general",
                                                                          "unit": prompt}})
    return write_jsonl(Path(output) / "replay.jsonl", records)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write records atomically (temp file + rename)."""
    from mlxlab.files import atomic_write

    return atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_datasets(output: Path, leaves, by_leaf: dict[str, list[dict]], cfg, *,
                   splits: dict[str, dict[str, list[dict]]] | None = None,
                   documents: dict[str, dict] | None = None) -> dict[str, Path | None]:
    """Write phase 1, the phase-2 train/valid mix and test from every leaf's seeds, documents and kept samples.

    `splits` is each leaf's `split_seeds` (made here when not given); `documents` holds a knowledge leaf's
    {"chunks": texts, "sections": question/answer pairs}. Phase 1 also takes every leaf's training seeds:
    documents trained alone pull a chat model away from answering (measured on SmolLM2: general chat loss
    +4.4% where documents mixed with the seed Q&A gave -5.8%, for the same gain on unseen Jolie questions).
    """
    splits = splits or {leaf.name: split_seeds(leaf, heldout_fraction=cfg.heldout_fraction,
                                               valid_fraction=cfg.valid_fraction, seed=cfg.seed) for leaf in leaves}
    documents = documents or {}
    mix, valid, phase1, phase1_valid, test, skill_seeds = [], [], [], [], [], []
    for leaf in leaves:
        split = splits[leaf.name]
        seeds = {name: [seed_record(leaf, it, name) for it in split[name]] for name in ("train", "valid", "test")}
        test.extend(seeds["test"])
        samples = by_leaf.get(leaf.name, [])
        if leaf.kind != "knowledge":
            skill_seeds.extend(seeds["train"])
            mix.extend(seeds["train"] + [skill_record(s) for s in samples])
            valid.extend(seeds["valid"])
            continue
        docs = documents.get(leaf.name) or {}
        sections = section_records(leaf, docs.get("sections", []))
        phase1.extend(document_records(leaf, docs.get("chunks", [])) + seeds["train"] + sections)
        mix.extend(seeds["train"] + sections)
        valid.extend(seeds["valid"])
        # back-translated Q&A (the answer is a passage of the documents) are asked closed-book, as users ask
        for s in (s for s in samples if s.get("answer_from") == "document"):
            record = skill_record(s)
            phase1.append({**record, "metadata": {**record["metadata"], "answer_from": "document"}})
            mix.append(phase1[-1])
        samples = [s for s in samples if s.get("answer_from") != "document"]
        chunks = sorted({s["chunk"] for s in samples})
        for s in samples:
            others = [c for c in chunks if c != s["chunk"]]
            random.Random(f"{cfg.seed}\0{s.get('unit')}").shuffle(others)
            p1, p2 = knowledge_records(s, others[:cfg.distractors], cfg.seed)
            phase1.append(p1)
            mix.append(p2)
    if phase1:                  # a phase 1 only where there is knowledge; it takes every leaf's seeds too
        phase1 = skill_seeds + phase1
        # ... and is validated on every leaf's validation seeds: more items make the kept checkpoint less noisy
        phase1_valid = list(valid)
    if cfg.replay and cfg.replay_ratio > 0:
        # both phases replay general data: forgetting starts in phase 1 already
        mix.extend(read_replay(cfg.replay, round(cfg.replay_ratio * len(mix)), cfg.seed))
        if phase1:
            phase1.extend(read_replay(cfg.replay, round(cfg.replay_ratio * len(phase1)), cfg.seed + 1))
    files: dict[str, Path | None] = {
        "train": write_jsonl(output / "train.jsonl", mix),
        "valid": write_jsonl(output / "valid.jsonl", valid),
        "test": write_jsonl(output / "test.jsonl", test),
        "knowledge_phase1": None,
    }
    if phase1:
        files["knowledge_phase1"] = write_jsonl(output / "phase1" / "train.jsonl", phase1)
        write_jsonl(output / "phase1" / "valid.jsonl", phase1_valid)
    else:
        for name in ("train.jsonl", "valid.jsonl"):       # an earlier run's phase 1 no longer applies
            (output / "phase1" / name).unlink(missing_ok=True)
    return files


def stats(path: str | Path, tokenizer=None) -> dict:
    """Counts per leaf and source, and token lengths (tokenizer's, else whitespace words) of a messages JSONL."""
    from mlxlab.train.data import read_jsonl

    records = read_jsonl(path)
    count = (lambda t: len(tokenizer.encode(t))) if tokenizer is not None else (lambda t: len(t.split()))
    lengths = sorted(sum(count(m.get("content", "")) for m in r.get("messages", [])) + count(r.get("text", ""))
                     for r in records)
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
