"""SDG on leaves of the public InstructLab taxonomy, one leaf at a time: what the gates keep and remove, per kind.

Every leaf of `benchmarks/data/taxonomy_sweep/` (27 leaves: freeform skills with short and long answers, grounded
skills, knowledge with Markdown documents, one non-English leaf; see SOURCES.md there) runs `generate_data` with
the default teacher (the embedded SmolLM2, `teacher_backend` auto) in a child process of its own, so one crash
does not end the sweep: its exit code and the end of its stderr are recorded. Per leaf: kind, language, seeds,
generated, kept, gate removals by reason, scorer, seconds, clean or crash. Every generated pair (before any gate)
is written to a JSONL with the gate that removed it, and the hand labels in `benchmarks/data/gate_labels.jsonl`
(on task and usable as training data: yes/no) give each gate's precision and recall per kind (skills freeform,
skills grounded, knowledge): a gate's positive is "remove", so precision is the share of its removals that were
labelled unusable and recall the share of unusable pairs it removed. Writes benchmarks/results/taxonomy_sweep.{json,md}
(a run under `--tag` keeps the other tags' figures, so before/after sit side by side) and
benchmarks/results/taxonomy_sweep_pairs-<tag>.jsonl.

    python benchmarks/taxonomy_sweep.py --tag after              # the whole sweep (~20 min on 2 CPU cores)
    python benchmarks/taxonomy_sweep.py --only chickadee,haiku   # some leaves (path substrings)
    python benchmarks/taxonomy_sweep.py --report                 # only re-score the labels, rewrite the md
    python benchmarks/taxonomy_sweep.py --whole taxonomy --samples-per-seed 2 --tag jolie-after   # the Jolie check
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "benchmarks" / "data" / "taxonomy_sweep"
LABELS = ROOT / "benchmarks" / "data" / "gate_labels.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
KINDS = {"freeform_skill": "skills freeform", "grounded_skill": "skills grounded", "knowledge": "knowledge"}


# ---------------------------------------------------------------------------------------------- child: one leaf

def child(taxonomy: Path, out: Path, samples_per_seed: int) -> None:
    """Generate one leaf's data into `out`, recording every pair the gates saw and the profile they used."""
    import mlxlab.sdg.gates as gates
    import mlxlab.sdg.sdg as sdg

    seen: list[dict] = []
    profiles: list[dict] = []
    leaf_profile, gate_stage = gates.leaf_profile, sdg.gate_stage

    def recording_profile(pairs, **kwargs):
        profiles.append({"pairs": [list(p) for p in pairs],
                         **{k: v if v is None or isinstance(v, str) else list(v) for k, v in kwargs.items()}})
        return leaf_profile(pairs, **kwargs)

    def recording_gates(run, items, profile):
        for key, item in items.items():
            context = item.get("chunk") or item.get("context") or ""
            finish = item.get("finish", "stop")
            hits = gates.check_all(item["question"], item["answer"], profile, finish_reason=finish,
                                   context=context) if hasattr(gates, "check_all") else []
            first = gates.check_sample(item["question"], item["answer"], profile, context=context,
                                       finish_reason=finish)
            seen.append({"leaf": run.leaf.name, "kind": run.leaf.kind, "unit": key, "question": item["question"],
                         "answer": item["answer"], "context": item.get("context") or "",
                         "answer_from": item.get("answer_from", "teacher"), "finish": item.get("finish", "stop"),
                         "gate": first[0] if first else None, "reason": first[1] if first else None,
                         "gates": [g for g, _ in hits]})
        return gate_stage(run, items, profile)

    gates.leaf_profile, sdg.gate_stage = recording_profile, recording_gates
    if os.environ.get("SWEEP_LLAMA_THREADS"):
        # a machine shared with other busy processes: llama.cpp's threads busy-wait on each other, and one thread
        # decodes faster than two there (the text may differ from a two-thread run; compare runs with one setting)
        import mlxlab.device

        mlxlab.device.llama_threads = lambda **_: int(os.environ["SWEEP_LLAMA_THREADS"])
    result = sdg.generate_data(taxonomy, output=out, samples_per_seed=samples_per_seed, allow_empty=True, quiet=True)
    kept = {json.loads(line)["unit"] for path in (out / "generated").glob("*.jsonl")
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    for row in seen:
        row["kept"] = row["unit"] in kept
    (out / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in seen), encoding="utf-8")
    (out / "profiles.json").write_text(json.dumps(profiles, ensure_ascii=False), encoding="utf-8")
    print(json.dumps({"kept": result.kept}))


# ---------------------------------------------------------------------------------------------- parent: the sweep

def leaves(corpus: Path) -> list[Path]:
    """Every leaf folder (holding a qna.yaml) under `corpus`, in path order."""
    return sorted(p.parent for p in corpus.rglob("qna.yaml"))


def language(leaf: Path) -> str:
    """The leaf's main script, from its seed text: 'en' for Latin letters, else the Unicode script's name."""
    letters = [ch for ch in (leaf / "qna.yaml").read_text(encoding="utf-8") if ch.isalpha()]
    scripts = Counter(unicodedata.name(ch, "?").split()[0] for ch in letters if ord(ch) > 0x24F)
    if scripts and sum(scripts.values()) > 0.05 * len(letters):
        return scripts.most_common(1)[0][0].lower()
    return "en"


def run_leaf(leaf: Path, corpus: Path, work: Path, samples_per_seed: int, timeout: float) -> dict:
    """One leaf in a child process, in a taxonomy of its own under `work`; its figures, pairs and outcome. A `work`
    kept from an earlier run keeps its SDG journal: generations already made are reused, gates and scorer rerun."""
    rel = leaf.relative_to(corpus)
    tax, out = work / "taxonomy", work / "out"
    shutil.rmtree(tax, ignore_errors=True)
    shutil.copytree(leaf, tax / rel)
    for stale in ("report.json", "pairs.jsonl", "profiles.json"):
        (out / stale).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", str(tax), str(out), str(samples_per_seed)],
                              capture_output=True, text=True, timeout=timeout, env=env)
        code, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, err = "timeout", (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) \
            else (exc.stderr or "")
    seconds = time.perf_counter() - start
    row = {"leaf": str(rel), "language": language(leaf), "seconds": round(seconds, 1),
           "outcome": "clean" if code == 0 else f"crash ({code})", "stderr": "" if code == 0 else err[-1500:]}
    report = out / "report.json"
    if report.exists():
        stats = json.loads(report.read_text(encoding="utf-8"))["leaves"][0]
        gated = next((s for s in stats["stages"] if s["stage"] == "gates"), None)
        scored = next((s for s in stats["stages"] if s["stage"] in ("likelihood", "judges")), None)
        row.update(name=stats["leaf"], kind=stats["kind"], seeds=stats["seeds"].get("train", 0),
                   generated=gated["sent"] if gated else 0, stages=stats["stages"],
                   gates={g: n for g, n in stats["gates"].items() if n}, after_gates=gated["passed"] if gated else 0,
                   scorer=stats["scorer"], scorer_removed=(scored["sent"] - scored["passed"]) if scored else 0,
                   duplicates=stats["duplicates"], kept=stats["kept"], notes=stats["notes"])
    pairs_file = out / "pairs.jsonl"
    row["pairs"] = [json.loads(line) for line in pairs_file.read_text(encoding="utf-8").splitlines()] \
        if pairs_file.exists() else []
    row["profiles"] = json.loads((out / "profiles.json").read_text(encoding="utf-8")) \
        if (out / "profiles.json").exists() else []
    return row


def sweep(corpus: Path, only: list[str], samples_per_seed: int, timeout: float, work: Path | None,
          jobs: int = 1) -> list[dict]:
    """Every chosen leaf, one child process each (`jobs` at a time); a progress line per leaf."""
    from concurrent.futures import ThreadPoolExecutor

    chosen = [p for p in leaves(corpus) if not only or any(o in str(p.relative_to(corpus)) for o in only)]
    done = []

    def one(leaf: Path) -> dict:
        key = str(leaf.relative_to(corpus)).replace("/", "__")
        if work is not None:
            row = run_leaf(leaf, corpus, work / key, samples_per_seed, timeout)
        else:
            with tempfile.TemporaryDirectory(prefix="sweep-") as scratch:
                row = run_leaf(leaf, corpus, Path(scratch), samples_per_seed, timeout)
        done.append(row)
        print(f"[{len(done)}/{len(chosen)}] {row['leaf']}: {row['outcome']}, {row.get('generated', 0)} generated, "
              f"{row.get('kept', 0)} kept, {row['seconds']} s", flush=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, chosen))


def run_whole(taxonomy: Path, out: Path, samples_per_seed: int, timeout: float) -> list[dict]:
    """All of `taxonomy` in one child process (its documents stay where its qna.yaml files point): a row per leaf,
    with the pairs the gates saw. A kept `out` keeps the SDG journal, so a rerun only regates and rescores."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "pairs.jsonl", "profiles.json"):
        (out / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(taxonomy), str(out), str(samples_per_seed)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise SystemExit(f"generate on {taxonomy} failed:\n{proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    profiles = json.loads((out / "profiles.json").read_text(encoding="utf-8"))
    rows = []
    for stats, inputs in zip(report["leaves"], profiles):   # one profile per leaf, in the leaves' order
        gated = next((x for x in stats["stages"] if x["stage"] == "gates"), {"sent": 0, "passed": 0})
        rows.append({"leaf": stats["leaf"], "kind": stats["kind"], "generated": gated["sent"],
                     "after_gates": gated["passed"], "gates": {g: n for g, n in stats["gates"].items() if n},
                     "kept": stats["kept"], "notes": stats["notes"], "profiles": [inputs],
                     "pairs": [x for x in pairs if x["leaf"] == stats["leaf"]]})
    print(f"{taxonomy}: {round(time.perf_counter() - start)} s, kept {({r['leaf']: r['kept'] for r in rows})}")
    return rows


# ---------------------------------------------------------------------------------------------- labels

def load_labels(path: Path = LABELS) -> list[dict]:
    """The hand labels: {leaf, kind, question, answer, label: yes/no, why}."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gate_verdicts(rows: list[dict]) -> dict[tuple[str, str, str], list[str]]:
    """(leaf, question, answer) -> every gate that fails the pair, by the gates of this checkout and the leaf's
    recorded profile inputs (so labels made on one run are scored against today's gates)."""
    import mlxlab.sdg.gates as gates

    out = {}
    for row in rows:
        if not row.get("profiles"):
            continue
        inputs = dict(row["profiles"][0])
        pairs = [tuple(p) for p in inputs.pop("pairs")]
        passages = list(dict.fromkeys(x["answer"] for x in row["pairs"] if x.get("answer_from") == "document"))
        if "answers" in inspect.signature(gates.leaf_profile).parameters and passages and not inputs.get("answers"):
            inputs["answers"] = passages    # a run before the retune did not record them: every passage is asked
        profile = gates.leaf_profile(pairs, **inputs)
        for pair in row["pairs"]:
            kwargs = {"finish_reason": pair["finish"], "context": pair["context"]}
            if hasattr(gates, "check_all"):
                hits = gates.check_all(pair["question"], pair["answer"], profile, **kwargs)
            else:       # the gates before the retune name only the first gate a pair fails
                hits = [hit for hit in [gates.check_sample(pair["question"], pair["answer"], profile, **kwargs)] if hit]
            out[(pair["leaf"], pair["question"], pair["answer"])] = [g for g, _ in hits]
    return out


def precision_recall(labels: list[dict], verdicts: dict) -> dict:
    """Per kind group and gate (and 'any gate'): removals, precision and recall of removing unusable pairs."""
    from mlxlab.sdg import GATES

    table: dict[str, dict] = {}
    for group in [*KINDS.values(), "all"]:
        rows = [(lab, verdicts.get((lab["leaf"], lab["question"], lab["answer"]))) for lab in labels
                if group == "all" or KINDS.get(lab["kind"]) == group]
        rows = [(lab, hits) for lab, hits in rows if hits is not None]
        bad = sum(lab["label"] == "no" for lab, _ in rows)
        entry = {"labelled": len(rows), "unusable": bad, "gates": {}}
        for gate in [*GATES, "any"]:
            fired = [lab for lab, hits in rows if (hits if gate == "any" else gate in hits)]
            hit = sum(lab["label"] == "no" for lab in fired)
            entry["gates"][gate] = {"removed": len(fired), "precision": round(hit / len(fired), 2) if fired else None,
                                    "recall": round(hit / bad, 2) if bad else None}
        table[group] = entry
    return table


# ---------------------------------------------------------------------------------------------- report

def summary(rows: list[dict]) -> dict:
    """Leaves that ended with kept samples, per kind group, and crashes."""
    out = {}
    for group in ("skills", "knowledge"):
        chosen = [r for r in rows if (r.get("kind") == "knowledge") == (group == "knowledge") and "kind" in r]
        out[group] = {"leaves": len(chosen), "with_kept": sum(r["kept"] > 0 for r in chosen)}
    out["crashes"] = sum(r["outcome"] != "clean" for r in rows)
    out["seconds"] = round(sum(r["seconds"] for r in rows), 1)
    return out


def why_empty(row: dict) -> str:
    """Where a leaf's samples went: not generated (and why), unparsed, removed by gates or by the scorer."""
    if row["outcome"] != "clean":
        return f"{row['outcome']}: {row['stderr'].strip().splitlines()[-1] if row.get('stderr') else ''}"
    notes = [n for n in row.get("notes", []) if n.startswith(("not generated", "nothing to generate"))]
    if notes:
        return notes[0]
    first = (row.get("stages") or [{}])[0]
    if not row.get("generated"):
        counts = f": {first['unparsed']} of {first['sent']} continuations unparsed" if first else ""
        return f"the teacher did not follow the pattern{counts}"
    if not row.get("after_gates"):
        return "the gates removed all " + str(row["generated"]) + ": " + \
            ", ".join(f"{g} {n}" for g, n in row.get("gates", {}).items())
    return f"{row['after_gates']} passed the gates; the {row.get('scorer')} scorer removed " \
           f"{row.get('scorer_removed', 0)}, and {row.get('duplicates', 0)} were near-duplicates of a seed question " \
           "(ROUGE-L of the questions, the held-out seeds included)"


def kept_precision(labels: list[dict], pairs: list[dict]) -> dict:
    """Per kind group: of a run's finally kept pairs that were labelled, how many are usable."""
    kept = {(p["leaf"], p["question"], p["answer"]) for p in pairs if p.get("kept")}
    out = {}
    for group in [*KINDS.values(), "all"]:
        chosen = [x for x in labels if (group == "all" or KINDS.get(x["kind"]) == group)
                  and (x["leaf"], x["question"], x["answer"]) in kept]
        yes = sum(x["label"] == "yes" for x in chosen)
        out[group] = {"kept": len(chosen), "usable": yes, "precision": round(yes / len(chosen), 2) if chosen else None}
    return out


def markdown(data: dict) -> str:
    """The results file: per tag a leaf table and a summary, then the gates against the labels."""
    lines = ["# Taxonomy sweep: SDG and gates on public InstructLab leaves", "",
             "Default teacher (embedded SmolLM2, backend auto), one child process per leaf, "
             f"samples_per_seed {data.get('samples_per_seed', 1)}. Corpus: benchmarks/data/taxonomy_sweep "
             "(see SOURCES.md there). A later run with the same `--work` reuses each leaf's SDG journal: the same "
             "generated pairs, gated and scored again, so runs differ only by their gates (and what the scorer "
             "then keeps). Seconds are wall time on a machine shared with other jobs (3 leaves at a time).", ""]
    for tag, run in data["runs"].items():
        s = run["summary"]
        lines += [f"## {tag} ({run.get('date', '')}, gates of {run.get('commit', '?')})", "",
                  f"Skill leaves with kept samples: {s['skills']['with_kept']}/{s['skills']['leaves']}; knowledge "
                  f"leaves: {s['knowledge']['with_kept']}/{s['knowledge']['leaves']}; crashes: {s['crashes']}; "
                  f"{s['seconds'] / 60:.1f} min in all.", "",
                  "| leaf | kind | lang | seeds | generated | gate removals | after gates | scorer (removed) | kept "
                  "| s | outcome |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in run["leaves"]:
            removals = ", ".join(f"{g} {n}" for g, n in r.get("gates", {}).items()) or "-"
            lines.append(f"| {r['leaf']} | {r.get('kind', '?')} | {r['language']} | {r.get('seeds', '-')} "
                         f"| {r.get('generated', '-')} | {removals} | {r.get('after_gates', '-')} "
                         f"| {r.get('scorer', '-')} ({r.get('scorer_removed', 0)}) | {r.get('kept', 0)} "
                         f"| {r['seconds']} | {r['outcome']} |")
        empty = [r for r in run["leaves"] if not r.get("kept")]
        if empty:
            lines += ["", "Leaves with nothing kept, and why:", ""]
            lines += [f"- {r['leaf']}: {why_empty(r)}" for r in empty]
        lines.append("")
    if data.get("jolie"):
        lines += ["## The shipped Jolie taxonomy, default settings", "",
                  "`generate` on taxonomy/ with the default settings (samples_per_seed 2): 'passed (run)' is what "
                  "the gates of that run let through, 'passed (checkout)' what the gates of this checkout let "
                  "through on the same pairs. The same pairs passing means the same scoring and the same kept "
                  "samples. " + data.get("jolie_note", ""), "",
                  "| tag | leaf | generated | removed by the run's gates | passed (run) | passed (checkout) | kept |",
                  "|---|---|---|---|---|---|---|"]
        for tag, run in data["jolie"].items():
            for r in run["leaves"]:
                removed = ", ".join(f"{g} {n}" for g, n in r["removed_by_run_gates"].items()) or "-"
                lines.append(f"| {tag} | {r['leaf']} | {r['generated']} | {removed} | {r['passed_run_gates']} "
                             f"| {r['passed_checkout_gates']} | {r['kept']} |")
        lines.append("")
    metrics = data.get("labels")
    if metrics:
        lines += ["## Gates against the hand labels", "",
                  f"{metrics['count']} pairs labelled by hand (benchmarks/data/gate_labels.jsonl: on task and usable "
                  "as training data, yes/no), read before any gate. A gate's positive is *remove*: precision = "
                  "share of its removals labelled unusable, recall = share of unusable pairs it removes. "
                  "'any' is all gates together.", ""]
        lines += ["What the whole funnel kept (gates, scorer, dedup), per run: labelled pairs kept, and how many of "
                  "them are usable.", "", "| run | kind | kept | usable | precision |", "|---|---|---|---|---|"]
        for tag, table in metrics.get("kept", {}).items():
            for group, m in table.items():
                lines.append(f"| {tag} | {group} | {m['kept']} | {m['usable']} | {m['precision']} |")
        lines.append("")
        for version, table in metrics["by_gates"].items():
            lines += [f"### {version}", "", "| kind | labelled | unusable | gate | removed | precision | recall |",
                      "|---|---|---|---|---|---|---|"]
            for group, entry in table.items():
                for gate, m in entry["gates"].items():
                    if m["removed"] or gate == "any":
                        lines.append(f"| {group} | {entry['labelled']} | {entry['unusable']} | {gate} "
                                     f"| {m['removed']} | {m['precision']} | {m['recall']} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def whole(args) -> int:
    """The Jolie check: one default `generate` on a whole taxonomy, and per leaf the pairs passing the gates of the
    run and the gates of this checkout (same pairs), with what the run kept; merged into taxonomy_sweep.json."""
    work = args.work or Path(tempfile.mkdtemp(prefix="sweep-whole-"))
    rows = run_whole(args.whole, work, args.samples_per_seed, args.timeout * 4)
    now = gate_verdicts(rows)
    table = []
    for row in rows:
        passing = sum(not now[(p["leaf"], p["question"], p["answer"])] for p in row["pairs"])
        table.append({"leaf": row["leaf"], "generated": row["generated"], "passed_run_gates": row["after_gates"],
                      "removed_by_run_gates": row["gates"], "passed_checkout_gates": passing, "kept": row["kept"]})
    path = RESULTS / "taxonomy_sweep.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"runs": {}}
    data.setdefault("jolie", {})[args.tag] = {"taxonomy": str(args.whole), "samples_per_seed": args.samples_per_seed,
                                              "commit": commit(), "leaves": table}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (RESULTS / "taxonomy_sweep.md").write_text(markdown(data), encoding="utf-8")
    print(json.dumps(table, indent=1))
    return 0


def commit() -> str:
    """The short commit of this checkout (the gates that ran)."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    """Run the sweep (or only re-score labels) and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("TAXONOMY", "OUT", "SAMPLES"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--tag", default="after", help="name of this run in the results (e.g. before, after)")
    parser.add_argument("--only", default="", help="comma-separated substrings of leaf paths")
    parser.add_argument("--samples-per-seed", type=int, default=1)
    parser.add_argument("--gates-name", default="", help="name of this checkout's gates in the label metrics")
    parser.add_argument("--jobs", type=int, default=1, help="leaves run at the same time")
    parser.add_argument("--work", type=Path, help="keep each leaf's run here (a rerun reuses its SDG journal)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per leaf")
    parser.add_argument("--report", action="store_true", help="run nothing: re-score the labels, rewrite the md")
    parser.add_argument("--whole", type=Path, help="run this whole taxonomy in one child (the Jolie check): "
                        "per leaf, what passes the gates recorded in the run and what passes this checkout's gates")
    args = parser.parse_args(argv)
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
        return 0
    if args.whole:
        return whole(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "taxonomy_sweep.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"runs": {}}
    data["samples_per_seed"] = args.samples_per_seed
    if not args.report:
        rows = sweep(args.corpus, [o for o in args.only.split(",") if o], args.samples_per_seed, args.timeout,
                     args.work, args.jobs)
        pairs = [p for r in rows for p in r["pairs"]]
        (RESULTS / f"taxonomy_sweep_pairs-{args.tag}.jsonl").write_text(
            "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
        (RESULTS / f"taxonomy_sweep_profiles-{args.tag}.json").write_text(json.dumps(
            {r.get("name", r["leaf"]): r["profiles"] for r in rows}, ensure_ascii=False), encoding="utf-8")
        data["runs"][args.tag] = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit(),
                                  "summary": summary(rows),
                                  "leaves": [{k: v for k, v in r.items() if k not in ("pairs", "profiles")}
                                             for r in rows]}
    labels = load_labels()
    if labels:
        # every leaf's recorded profile inputs, from any run (the labelled pairs carry what the gates read)
        profiles: dict = {}
        for found in sorted(RESULTS.glob("taxonomy_sweep_profiles-*.json")):
            profiles.update(json.loads(found.read_text(encoding="utf-8")))
        rows = [{"profiles": profiles.get(name, []), "pairs": [x for x in labels if x["leaf"] == name]}
                for name in dict.fromkeys(x["leaf"] for x in labels)]
        metrics = data.setdefault("labels", {"by_gates": {}})
        metrics["count"] = len(labels)
        metrics["kept"] = {}
        for found in sorted(RESULTS.glob("taxonomy_sweep_pairs-*.jsonl")):
            pairs = [json.loads(line) for line in found.read_text(encoding="utf-8").splitlines()]
            metrics["kept"][found.stem.split("-", 1)[1]] = kept_precision(labels, pairs)
        metrics["by_gates"][args.gates_name or f"gates of {commit()}"] = precision_recall(labels, gate_verdicts(rows))
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (RESULTS / "taxonomy_sweep.md").write_text(markdown(data), encoding="utf-8")
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
