"""Taxonomy validation speed: 2,000 generated leaves (skills and knowledge) checked by `validate()`.

Rows: validate with documents resolved (a shared local docs folder), without (`fetch_documents=False`),
`Taxonomy.load`, and the same validation with libyaml switched off (PyYAML only) to show why mlxlab
composes with libyaml. When `instructlab-schema` (and yamllint) are installed, InstructLab's own parser
is timed on a 100-leaf sample and scaled to 2,000. Writes benchmarks/results/taxonomy_validate.{json,md}.

    python benchmarks/taxonomy_validate.py [--leaves 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

from mlxlab import taxonomy

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = "Jolie services talk to each other by sending messages through ports and interfaces".split()


def sentence(i: int, n: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n)) + f" {i}."


def skill(i: int) -> dict:
    grounded = i % 2 == 0
    examples = [{"question": sentence(i + j, 12), "answer": sentence(i * 7 + j, 40),
                 **({"context": sentence(i + 3 * j, 60)} if grounded else {})} for j in range(6)]
    return {"version": 3, "created_by": "bench", "task_description": sentence(i, 15), "seed_examples": examples}


def knowledge(i: int) -> dict:
    examples = [{"context": sentence(i + j, 120),
                 "questions_and_answers": [{"question": sentence(i + j + k, 12), "answer": sentence(i + 5 * k, 35)}
                                           for k in range(3)]} for j in range(5)]
    return {"version": 3, "created_by": "bench", "domain": "programming", "document_outline": sentence(i, 20),
            "seed_examples": examples, "document": {"repo": "../../../docs", "commit": "main", "patterns": ["*.md"]}}


def generate(root: Path, leaves: int) -> None:
    (root / "docs").mkdir(parents=True)
    for name in ("a.md", "b.md"):
        (root / "docs" / name).write_text("# Jolie\n\nServices and ports.\n")
    for i in range(leaves):
        is_knowledge = i % 3 == 2
        folder = root / ("knowledge/topic" if is_knowledge else "compositional_skills/topic") / f"leaf_{i:05d}"
        folder.mkdir(parents=True)
        data = knowledge(i) if is_knowledge else skill(i)
        (folder / "qna.yaml").write_text(yaml.safe_dump(data, sort_keys=False, width=100))


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def instructlab_seconds(root: Path, sample: int) -> float | None:
    """InstructLab's parser (schema + yamllint subprocess, as `ilab taxonomy diff` runs it) on `sample` leaves."""
    try:
        from instructlab.schema.taxonomy import TaxonomyMessageFormat, TaxonomyParser
    except ImportError:
        return None
    logging.disable(logging.CRITICAL)
    parser = TaxonomyParser(schema_version=0, message_format=TaxonomyMessageFormat.LOGGING, yamllint_strict=True)
    files = sorted(root.rglob("qna.yaml"))[:sample]
    start = time.perf_counter()
    for path in files:
        parser.parse(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leaves", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "taxonomy"
        generate(root, args.leaves)
        size = sum(p.stat().st_size for p in root.rglob("qna.yaml"))
        rows = []
        for name, fn in [
            ("validate (documents resolved)", lambda: taxonomy.validate([root])),
            ("validate (fetch_documents=False)", lambda: taxonomy.validate([root], fetch_documents=False)),
            ("Taxonomy.load", lambda: taxonomy.Taxonomy.load(root).reports),
        ]:
            seconds, reports = timed(fn, args.repeats)
            assert len(reports) == args.leaves and all(r.valid for r in reports), taxonomy.format_report(reports)
            rows.append({"what": name, "seconds": round(seconds, 3), "leaves_per_s": round(args.leaves / seconds)})
        with mock.patch.object(taxonomy, "_FAST_LOADER", yaml.SafeLoader):
            seconds, _ = timed(lambda: taxonomy.validate([root], fetch_documents=False), 1)
        rows.append({"what": "validate, PyYAML only (no libyaml)", "seconds": round(seconds, 3),
                     "leaves_per_s": round(args.leaves / seconds)})
        sample = min(100, args.leaves)
        ilab = instructlab_seconds(root, sample)
        if ilab is not None:
            scaled = ilab * args.leaves / sample
            rows.append({"what": f"InstructLab parser + yamllint ({sample} leaves, scaled)",
                         "seconds": round(scaled, 1), "leaves_per_s": round(args.leaves / scaled)})
    record = {"leaves": args.leaves, "megabytes": round(size / 1e6, 1), "repeats": args.repeats,
              "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
              "libyaml": bool(getattr(yaml, "__with_libyaml__", False)), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "taxonomy_validate.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Taxonomy validation: {args.leaves} leaves ({record['megabytes']} MB of qna.yaml)", "",
             f"{record['machine']}; median of {args.repeats} runs.", "",
             "| what | seconds | leaves/s |", "|---|---|---|"]
    lines += [f"| {r['what']} | {r['seconds']} | {r['leaves_per_s']} |" for r in rows]
    (RESULTS / "taxonomy_validate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
