"""Whether the default `mlxlab run` makes the student better on Jolie questions it never saw, with nothing
forgotten, compared with an ablation trained without the generated samples.

The pipeline runs on the shipped taxonomy into a run folder (a temp dir unless `--runs-dir`; `--run-dir` reuses
a finished run). The ablation copies the run's data with every `metadata.source == "generated"` record removed
(validation files as they are), and trains with the run's resolved train settings and phases. Base, trained and
ablation are then measured on the benchmark's own held-out sets, which no stage reads:

- mean NLL per assistant token on benchmarks/data/jolie_heldout.jsonl (also split by `only_in_documents`) and
  benchmarks/data/general_chat.jsonl (forgetting), with `mlxlab.evaluate.evaluation.heldout_loss`;
- ROUGE-L of greedy answers (80 new tokens) against the Jolie reference answers.

It also reports the SDG gate pass shares per leaf (data/report.json), the checkpoint each training kept, the stage
times, and 20 random generated training samples with their leakage / repetition verdicts. Targets: Jolie NLL
<= -40 % vs base, general NLL <= +5 %, trained at least as good as the ablation on both, the whole run <= 20 min,
>= 90 % of the sampled generated samples free of leakage and repetition. Writes
benchmarks/results/learning_effect.{json,md}.

    python benchmarks/learning_effect.py                            # the whole default run (~20 min on 2 cores)
    python benchmarks/learning_effect.py --runs-dir runs --keep     # keep the run in runs/default
    python benchmarks/learning_effect.py --run-dir runs/default     # re-measure a finished run
    python benchmarks/learning_effect.py --run-dir runs/default --quick --ablation-length settings
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")      # no network: the embedded model and local files only

import argparse
import dataclasses
import gc
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
JOLIE = ROOT / "benchmarks" / "data" / "jolie_heldout.jsonl"
GENERAL = ROOT / "benchmarks" / "data" / "general_chat.jsonl"
STAGES = ("validate", "generate", "train", "fuse", "export", "eval")
# files of runs/<name>/data that training reads; only the *train* files lose their generated records
TRAIN_FILES = ("train.jsonl", "phase1/train.jsonl")
KEPT_FILES = ("valid.jsonl", "phase1/valid.jsonl", "replay.jsonl", "test.jsonl")
TARGETS = {"jolie_nll_change": -40.0, "general_nll_change": 5.0, "total_seconds": 20 * 60, "clean_share": 0.9}


class BenchError(Exception):
    """A problem with the inputs of this benchmark, said plainly (no traceback)."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _pct(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or not base or value != value or base != base:
        return None
    return 100.0 * (value - base) / base


def _fmt(value, spec: str = ".4f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return none
    return format(value, spec)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _read_records(path: Path) -> list[dict]:
    from mlxlab.train import read_jsonl

    if not path.is_file():
        raise BenchError(f"{path}: not found")
    return read_jsonl(path)


def _lines(path: Path) -> list[dict]:
    """Every JSON object of a JSONL file (chat and plain-text records alike), in order."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sources(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if path.is_file():
        for record in _lines(path):
            source = (record.get("metadata") or {}).get("source", "?")
            counts[source] = counts.get(source, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------- the run

def _stages(text: str | None) -> list[str] | None:
    stages = [s.strip() for s in text.split(",") if s.strip()] if text else None
    unknown = [s for s in stages or [] if s not in STAGES]
    if unknown:
        raise BenchError(f"unknown stage {unknown[0]!r} in --stages; stages are: {', '.join(STAGES)}")
    return stages


def run_pipeline(args) -> tuple[Path, dict]:
    """Run the default pipeline on the shipped taxonomy; (run folder, timing)."""
    from mlxlab.pipeline import run

    stages = _stages(args.stages)
    say(f"running the pipeline into {Path(args.runs_dir) / args.name} "
        f"(stages: {', '.join(stages or STAGES)}); this is the long part")
    result = run(args.name, runs_dir=args.runs_dir, taxonomy=str(ROOT / "taxonomy"), stages=stages, quiet=True)
    say(f"pipeline done in {result.seconds:.0f} s (ran {', '.join(result.ran) or 'nothing'}, "
        f"skipped {', '.join(result.skipped) or 'nothing'})")
    timing = {"source": "measured now", "total_seconds": round(result.seconds, 1), "ran": result.ran,
              "skipped": result.skipped,
              "stages": {s: {"status": r.get("status"), "seconds": r.get("seconds")} for s, r in result.stages.items()}}
    return result.path, timing


def existing_run(run_dir: Path) -> dict:
    """Timing of a finished run from its manifest (no wall time of the whole run is recorded there)."""
    from mlxlab.pipeline import read_manifest

    manifest = read_manifest(run_dir)
    stages = {s: {"status": r.get("status"), "seconds": r.get("seconds")} for s, r in manifest["stages"].items()}
    total = sum(r["seconds"] or 0 for r in stages.values())
    return {"source": f"manifest of {run_dir} (sum of stage times)", "total_seconds": round(total, 1),
            "ran": [], "skipped": [], "stages": stages}


def run_figures(run_dir: Path) -> dict:
    """Each stage's figures from the run's manifest (the pipeline's own train and eval numbers among them)."""
    from mlxlab.pipeline import read_manifest

    return {s: r.get("figures") for s, r in read_manifest(run_dir)["stages"].items()}


def run_settings(run_dir: Path):
    """(model reference, TrainConfig, run section, generate section, taxonomy root) of a finished run."""
    import yaml

    from mlxlab.config import TrainConfig, resolve
    from mlxlab.pipeline import read_manifest

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise BenchError(f"{path}: not found; is {run_dir} a run folder written by `mlxlab run`?")
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    section = dict(saved.get("train") or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    dropped = sorted(set(section) - known)
    if dropped:
        say(f"note: {path} has train settings this mlxlab does not know, left out: {', '.join(dropped)}")
    cfg = resolve(TrainConfig, **{k: v for k, v in section.items() if k in known})
    cfg = dataclasses.replace(cfg, resume=False)
    manifest = read_manifest(run_dir)
    model = manifest.get("model") or (saved.get("run") or {}).get("model") or "smollm2"
    tax = (saved.get("generate") or {}).get("taxonomy") or (saved.get("taxonomy") or {}).get("taxonomy") \
        or manifest.get("taxonomy") or "taxonomy"
    tax_path = Path(tax)
    if not tax_path.is_absolute() and not tax_path.is_dir():
        tax_path = ROOT / tax_path
    return model, cfg, saved.get("run") or {}, saved.get("generate") or {}, tax_path


# ---------------------------------------------------------------------------------------------- the ablation

def _digest(paths: list[Path], extra: dict) -> str:
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def ablation_data(data: Path, out: Path) -> dict:
    """Copy `data` into `out` without the generated records of the train files; counts by source."""
    if not (data / "train.jsonl").is_file():
        raise BenchError(f"{data / 'train.jsonl'}: not found; the run's generate stage writes it")
    counts = {}
    for name in TRAIN_FILES:
        src = data / name
        if not src.is_file():
            continue
        dst = out / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        kept = [line for line in src.read_text(encoding="utf-8").splitlines()
                if line.strip() and (json.loads(line).get("metadata") or {}).get("source") != "generated"]
        if not kept:
            raise BenchError(f"{src}: nothing is left once the generated records are removed, so the ablation "
                             "has no training data")
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, dst)
        counts[name] = {"run": _sources(src), "ablation": _sources(dst)}
    for name in KEPT_FILES:
        if (data / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data / name, out / name)
            counts[name] = {"run": _sources(data / name), "ablation": _sources(out / name)}
    return counts


def _phase_records(adapters: Path) -> list[dict]:
    """The result.json of each phase (or of the single training) in an adapters folder."""
    phases = sorted(adapters.glob("phase_*/result.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    files = phases or ([adapters / "result.json"] if (adapters / "result.json").is_file() else [])
    out = []
    for number, path in enumerate(files, start=1):
        saved = json.loads(path.read_text(encoding="utf-8"))
        trained = saved.get("stopped_early") or saved.get("num_iters")
        out.append({"phase": number if phases else None, "planned_iters": saved.get("num_iters"),
                    "trained_iters": trained, "num_epochs": saved.get("num_epochs"),
                    "best_iter": saved.get("best_iter"), "best_reason": saved.get("best_reason"),
                    "stopped_early": saved.get("stopped_early"), "val_loss": saved.get("val_loss"),
                    "general_loss": saved.get("general_loss"), "general_base_loss": saved.get("general_base_loss"),
                    "final_loss": saved.get("final_loss"), "result": str(path)})
    return out


def train_ablation(run_dir: Path, out: Path, model: str, cfg, run_section: dict, *, length: str,
                   redo: bool) -> dict:
    """Train the ablation (same settings and phases as the run, no generated samples) into `out`."""
    from mlxlab.sdg.datasets import GENERAL_VALID
    from mlxlab.pipeline import plan_phases
    from mlxlab.train import train

    data, abl_data, adapters = run_dir / "data", out / "data", out / "adapters"
    counts = ablation_data(data, abl_data)
    if cfg.general_valid is None:       # as the pipeline's train stage does: the packaged general chat set
        cfg = dataclasses.replace(cfg, general_valid=str(GENERAL_VALID))
    # the pipeline's own rule (phase 2 only where the mix holds something phase 1 does not)
    phases = plan_phases(abl_data, bool(run_section.get("phases", True)))
    ran_phases = len(list((run_dir / "adapters").glob("phase_*/result.json")))
    if len(phases or []) != ran_phases:
        say(f"note: the run trained {ran_phases} phase(s), the ablation's data and settings give "
            f"{len(phases or [])}; the ablation follows its own data")
    if length == "iters":                  # the same number of optimizer steps per phase as the run took
        steps = [p["trained_iters"] for p in _phase_records(run_dir / "adapters")]
        if not steps or (phases and len(steps) != len(phases)):
            raise BenchError(f"{run_dir / 'adapters'}: no result.json per phase to read the run's step counts from")
        cfg = dataclasses.replace(cfg, num_epochs=None, num_iters=steps[-1])
        if phases:
            phases = [{**p, "num_iters": n} for p, n in zip(phases, steps)]
    files = [abl_data / n for n in TRAIN_FILES + KEPT_FILES] + [Path(cfg.general_valid)]
    inputs = _digest(files, {"train": dataclasses.asdict(cfg), "phases": phases, "model": str(model)})
    stamp = out / "inputs.json"
    reuse = not redo and (adapters / "adapters.safetensors").is_file() and stamp.is_file() and \
        json.loads(stamp.read_text(encoding="utf-8")).get("digest") == inputs
    tic = time.perf_counter()
    if reuse:
        say(f"ablation: reusing the finished training in {adapters} (same data and settings; --redo-ablation "
            "trains it again)")
    else:
        if adapters.exists():
            shutil.rmtree(adapters)        # other inputs: train refuses to mix checkpoints
        stamp.unlink(missing_ok=True)
        say(f"ablation: training {len(phases or [None])} phase(s) without generated samples -> {adapters}")
        if phases:
            train(model, abl_data, adapters, config=cfg, phases=phases, quiet=True)
        else:
            train(model, abl_data, adapters, config=cfg, quiet=True)
        stamp.write_text(json.dumps({"digest": inputs}) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - tic
    return {"folder": str(out), "adapters": str(adapters), "reused": reuse, "seconds": round(seconds, 1),
            "length": length, "phases": phases, "data": counts,
            "train_settings": {k: v for k, v in dataclasses.asdict(cfg).items()}}


# ---------------------------------------------------------------------------------------------- measuring

def measure(label: str, model: str, adapters: Path | None, jolie: list[dict], general: list[dict],
            rouge_n: int, max_tokens: int) -> dict:
    """NLL on the Jolie (split by only_in_documents) and general sets, and ROUGE-L of greedy Jolie answers."""
    from mlxlab.evaluate.evaluation import _ModelTeacher, heldout_loss
    from mlxlab.sdg import rouge_l

    if adapters is not None:
        missing = [n for n in ("adapters.safetensors", "adapter_config.json") if not (adapters / n).is_file()]
        if missing:
            raise BenchError(f"{adapters}: no {' or '.join(missing)}; did the training finish?")
    tic = time.perf_counter()
    # a fresh base for every adapters folder: load_model + mlx_lm's load_adapters + eval(), as _ModelTeacher does
    teacher = _ModelTeacher(model, adapters)
    try:
        net, tokenizer = teacher.model, teacher.tokenizer
        net.eval()
        split = {}
        for key, want in (("only_in_documents", True), ("also_in_seeds", False)):
            subset = [r for r in jolie if bool((r.get("metadata") or {}).get("only_in_documents")) is want]
            loss, count = heldout_loss(net, tokenizer, subset) if subset else (float("nan"), 0)
            split[key] = {"nll": loss, "tokens": count, "questions": len(subset)}
        tokens = sum(s["tokens"] for s in split.values())
        jolie_nll = sum(s["nll"] * s["tokens"] for s in split.values() if s["tokens"]) / max(tokens, 1)
        general_nll, general_tokens = heldout_loss(net, tokenizer, general)
        asked = jolie[:rouge_n]
        outs = teacher.generate([r["messages"][:-1] for r in asked], temperature=0.0, max_tokens=max_tokens)
        answers = []
        for record, out in zip(asked, outs):
            text = out[0].text if out else ""
            answers.append({"id": (record.get("metadata") or {}).get("id"), "answer": text,
                            "finish_reason": out[0].finish_reason if out else "error",
                            "rouge_l": rouge_l(text, record["messages"][-1]["content"])})
    finally:
        teacher.close()
        del teacher
        gc.collect()
    rouge = sum(a["rouge_l"] for a in answers) / len(answers) if answers else None
    seconds = time.perf_counter() - tic
    say(f"{label}: Jolie NLL {jolie_nll:.4f}, general NLL {general_nll:.4f}, ROUGE-L {_fmt(rouge, '.3f')} "
        f"({seconds:.0f} s)")
    return {"model": model, "adapters": str(adapters) if adapters else None, "jolie_nll": jolie_nll,
            "jolie_tokens": tokens, "jolie_split": split, "general_nll": general_nll,
            "general_tokens": general_tokens, "rouge_l": rouge, "rouge_questions": len(answers),
            "answers": answers, "seconds": round(seconds, 1)}


def add_changes(models: dict) -> None:
    """Relative change vs the base model in % (NLL: negative is better)."""
    base = models["base"]
    for row in models.values():
        row["jolie_nll_change"] = _pct(row["jolie_nll"], base["jolie_nll"])
        row["general_nll_change"] = _pct(row["general_nll"], base["general_nll"])
        row["rouge_l_change"] = _pct(row["rouge_l"], base["rouge_l"])
        for key, part in row["jolie_split"].items():
            part["change"] = _pct(part["nll"], base["jolie_split"][key]["nll"])


# ---------------------------------------------------------------------------------------------- SDG report

def gate_shares(report_path: Path) -> dict:
    """Per leaf: the gates' sent/passed share, what each gate removed, the methods and the kept count."""
    if not report_path.is_file():
        return {"error": f"{report_path}: not found", "leaves": []}
    report = json.loads(report_path.read_text(encoding="utf-8"))
    leaves = []
    for leaf in report.get("leaves", []):
        gates = next((s for s in leaf.get("stages", []) if s.get("stage") == "gates"), None)
        funnel = {s.get("stage"): f"{s.get('sent')}→{s.get('passed')}" for s in leaf.get("stages", [])}
        leaves.append({"leaf": leaf.get("leaf"), "kind": leaf.get("kind"),
                       "prompt_style": leaf.get("prompt_style"), "scorer": leaf.get("scorer"),
                       "sent": gates.get("sent") if gates else None, "passed": gates.get("passed") if gates else None,
                       "pass_share": gates["passed"] / gates["sent"] if gates and gates.get("sent") else None,
                       "removed": {g: n for g, n in (leaf.get("gates") or {}).items() if n},
                       "funnel": funnel, "duplicates": leaf.get("duplicates"), "capped": leaf.get("capped"),
                       "kept": leaf.get("kept"), "seeds": leaf.get("seeds")})
    sent = sum(x["sent"] or 0 for x in leaves)
    passed = sum(x["passed"] or 0 for x in leaves)
    return {"methods": report.get("methods"), "teacher": report.get("teacher"), "leaves": leaves,
            "sent": sent, "passed": passed, "pass_share": passed / sent if sent else None,
            "kept": sum(x["kept"] or 0 for x in leaves)}


# ---------------------------------------------------------------------------------------------- samples

def _raw_samples(data: Path) -> dict[tuple[str, str], dict]:
    """(leaf, unit) -> the generated sample as SDG kept it (question and answer without the prompt's context)."""
    raw = {}
    for path in sorted((data / "generated").glob("*.jsonl")):
        for sample in _lines(path):
            raw[(sample.get("leaf"), sample.get("unit"))] = sample
    return raw


def _profiles(tax_root: Path, gen: dict) -> dict:
    """leaf name -> the gates' LeafProfile from its training seeds, as SDG built it (documents left out)."""
    from mlxlab.sdg import split_seeds
    from mlxlab.sdg import leaf_profile
    from mlxlab.taxonomy import Taxonomy

    try:
        tax = Taxonomy.load(tax_root, fetch_documents=False)
    except Exception as exc:   # noqa: BLE001  (the verdicts we need do not depend on the profile)
        say(f"note: cannot load the taxonomy {tax_root} ({exc}); profiles without seeds")
        return {}
    profiles = {}
    for leaf in tax.leaves:
        split = split_seeds(leaf, heldout_fraction=gen.get("heldout_fraction", 0.2),
                            valid_fraction=gen.get("valid_fraction", 0.15), seed=gen.get("seed", 0))
        profiles[leaf.name] = leaf_profile([(s["question"], s["answer"]) for s in split["train"]],
                                           task=leaf.task_description or "")
    return profiles


def sample_generated(run_dir: Path, tax_root: Path, gen: dict, count: int, seed: int) -> dict:
    """`count` random generated training samples with their gate verdicts (leakage and repetition count)."""
    from mlxlab.sdg import check_sample, leaf_profile

    data = run_dir / "data"
    pool, seen = [], set()
    for name in ("train.jsonl", "valid.jsonl", "phase1/train.jsonl"):
        if not (data / name).is_file():
            continue
        for record in _lines(data / name):
            meta = record.get("metadata") or {}
            key = (meta.get("leaf"), meta.get("unit"))
            # a knowledge sample is in phase 1 and phase 2 with other contexts: count it once
            if meta.get("source") == "generated" and key not in seen:
                seen.add(key)
                pool.append((name, record))
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(count, len(pool)))
    raw = _raw_samples(data)
    profiles = _profiles(tax_root, gen)
    empty = leaf_profile([])
    rows = []
    for name, record in chosen:
        meta = record.get("metadata") or {}
        sample = raw.get((meta.get("leaf"), meta.get("unit")))
        messages = record.get("messages") or []
        if sample is not None:
            question, answer = sample.get("question", ""), sample.get("answer", "")
            context = sample.get("chunk") or sample.get("context") or ""
            if sample.get("answer_from") == "document":
                context = answer        # the profile has no documents here; SDG's had them, this passage included
        else:                              # no generated/ file: the record's own last turns
            question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            answer = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
            context = ""
        hit = check_sample(question, answer, profiles.get(meta.get("leaf"), empty), context=context)
        # check_sample runs the gates in order and leakage, repetition come first: any other verdict passed both
        dirty = hit is not None and hit[0] in ("leakage", "repetition")
        rows.append({"file": name, "leaf": meta.get("leaf"), "kind": meta.get("kind"), "unit": meta.get("unit"),
                     "question": _short(question), "answer": _short(answer),
                     "leakage_or_repetition": f"{hit[0]}: {hit[1]}" if dirty else None,
                     "first_failed_gate": f"{hit[0]}: {hit[1]}" if hit else None})
    clean = sum(1 for r in rows if r["leakage_or_repetition"] is None)
    return {"pool": len(pool), "count": len(rows), "seed": seed, "clean": clean,
            "clean_share": clean / len(rows) if rows else None, "samples": rows}


# ---------------------------------------------------------------------------------------------- writing

def targets(models: dict, timing: dict, samples: dict) -> list[dict]:
    """Each target of the issue with its value and verdict (None: not measured)."""
    trained, abl = models.get("trained") or {}, models.get("ablation") or {}

    def row(target: str, value, unit: str, limit) -> dict:
        ok = None if value is None or limit is None or value != value else value <= limit
        return {"target": target, "value": value, "unit": unit, "pass": ok}

    def gap(key: str):
        a, b = trained.get(key), abl.get(key)
        return None if a is None or b is None else a - b

    clean = samples.get("clean_share")
    out = [
        row("Jolie NLL of trained vs base <= -40 %", trained.get("jolie_nll_change"), "%", TARGETS["jolie_nll_change"]),
        row("general NLL of trained vs base <= +5 %", trained.get("general_nll_change"), "%",
            TARGETS["general_nll_change"]),
        row("trained Jolie NLL <= ablation's", gap("jolie_nll"), "nats", 0.0),
        row("trained general NLL <= ablation's", gap("general_nll"), "nats", 0.0),
        row("whole run <= 20 min", timing.get("total_seconds"), "s", TARGETS["total_seconds"]),
        {"target": "sampled generated samples free of leakage and repetition >= 90 %",
         "value": None if clean is None else 100 * clean, "unit": "%",
         "pass": None if clean is None else clean >= TARGETS["clean_share"]},
    ]
    done = [s for s, r in timing.get("stages", {}).items() if r.get("status") == "done"]
    if set(done) != set(STAGES):           # a partial run says nothing about the whole run's time
        out[4]["pass"] = None
        out[4]["note"] = f"not the whole default run (stages done: {', '.join(done) or 'none'})"
    elif timing.get("skipped"):           # finished earlier: this call's time is not the run's
        out[4]["pass"] = None
        out[4]["note"] = f"stages skipped as unchanged: {', '.join(timing['skipped'])}"
    elif timing.get("source", "").startswith("manifest"):
        out[4]["note"] = timing["source"]
    return out


def _verdict(ok) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def markdown(result: dict) -> str:
    """The result as markdown tables."""
    setup, models = result["setup"], result["models"]
    lines = ["# Learning effect: default run vs base vs no-generated-samples ablation", "",
             f"Setup: model {setup['model']}, run folder `{setup['run_dir']}`"
             f"{' (reused)' if setup['reused_run'] else ''}, Jolie held-out set {setup['jolie_questions']} questions "
             f"(ROUGE-L on the first {setup['rouge_questions']}, greedy, {setup['max_tokens']} new tokens), general "
             f"set {setup['general_questions']} questions; "
             + (f"ablation length: {setup['ablation_length']}." if setup["ablation_length"] else "no ablation."), "",
             "NLL = mean negative log-likelihood per assistant token (lower is better); Δ vs base in %. "
             "'only in documents': questions whose answer is in the knowledge documents but in no seed example; "
             "'also in seeds': the others.", "",
             "| model | Jolie NLL | Δ | only in documents | Δ | also in seeds | Δ | general NLL | Δ | ROUGE-L |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, m in models.items():
        docs, seeds = m["jolie_split"]["only_in_documents"], m["jolie_split"]["also_in_seeds"]
        lines.append(f"| {label} | {_fmt(m['jolie_nll'])} | {_fmt(m['jolie_nll_change'], '+.1f')} % | "
                     f"{_fmt(docs['nll'])} | {_fmt(docs.get('change'), '+.1f')} % | {_fmt(seeds['nll'])} | "
                     f"{_fmt(seeds.get('change'), '+.1f')} % | {_fmt(m['general_nll'])} | "
                     f"{_fmt(m['general_nll_change'], '+.1f')} % | {_fmt(m['rouge_l'], '.3f')} |")
    timing = result["timing"]
    lines += ["", f"## Time ({timing['source']})", "", "| stage | status | seconds |", "|---|---|---|"]
    for stage, record in timing["stages"].items():
        lines.append(f"| {stage} | {record.get('status')} | {_fmt(record.get('seconds'), '.1f')} |")
    lines.append(f"| **whole run** | | **{_fmt(timing.get('total_seconds'), '.1f')}** "
                 f"({_fmt((timing.get('total_seconds') or 0) / 60, '.1f')} min) |")
    abl = result.get("ablation") or {}
    if abl:
        lines.append(f"| ablation training{' (reused)' if abl.get('reused') else ''} | | {abl['seconds']:.1f} |")
    lines.append(f"| measuring (3 models) | | {result['measure_seconds']:.1f} |")
    gates = result["gates"]
    methods = gates.get("methods") or {}
    lines += ["", "## SDG gates per leaf", "",
              f"Methods: {methods.get('why', json.dumps(methods))}. Gates: samples sent to the gates → passed; "
              "kept = after the scorer, dedup and the cap.", "",
              "| leaf | kind | style / scorer | gates sent | passed | pass share | removed by gate | kept |",
              "|---|---|---|---|---|---|---|---|"]
    for leaf in gates.get("leaves", []):
        removed = ", ".join(f"{g} {n}" for g, n in leaf["removed"].items()) or "-"
        lines.append(f"| {leaf['leaf']} | {leaf['kind']} | {leaf['prompt_style']} / {leaf['scorer']} | "
                     f"{_fmt(leaf['sent'], 'd')} | {_fmt(leaf['passed'], 'd')} | {_fmt(leaf['pass_share'], '.0%')} | "
                     f"{removed} | {leaf['kept']} |")
    if gates.get("leaves"):
        lines.append(f"| **all** | | | {gates['sent']} | {gates['passed']} | {_fmt(gates['pass_share'], '.0%')} | "
                     f"| {gates['kept']} |")
    lines += ["", "## Checkpoints kept", "",
              "| model | phase | planned iters | trained iters | epochs | best iter | stopped early | why |",
              "|---|---|---|---|---|---|---|---|"]
    for label, phases in result["checkpoints"].items():
        for p in phases:
            lines.append(f"| {label} | {p['phase'] or '-'} | {_fmt(p['planned_iters'], 'd')} | "
                         f"{_fmt(p['trained_iters'], 'd')} | {_fmt(p['num_epochs'], '.2f')} | "
                         f"{_fmt(p['best_iter'], 'd', 'last')} | {_fmt(p['stopped_early'], 'd', 'no')} | "
                         f"{p['best_reason'] or '-'} |")
        total = sum(p["trained_iters"] or 0 for p in phases)
        lines.append(f"| {label} | total | | {total} | | | | |")
    if abl:
        lines += ["", "Training data (records by source), run → ablation:", ""]
        for name, counts in abl["data"].items():
            lines.append(f"- `{name}`: {json.dumps(counts['run'])} → {json.dumps(counts['ablation'])}")
    samples = result["samples"]
    lines += ["", f"## {samples['count']} random generated samples (seed {samples['seed']}, of {samples['pool']})", "",
              f"Free of leakage and repetition: {samples['clean']} of {samples['count']} "
              f"({_fmt(samples['clean_share'], '.0%')}). The questions and answers are in learning_effect.json.", "",
              "| leaf | question | leakage / repetition | first failed gate |", "|---|---|---|---|"]
    for s in samples["samples"]:
        question = _short(s["question"], 90).replace("|", "\\|")
        lines.append(f"| {(s['leaf'] or '?').split('/')[-1]} | {question} | "
                     f"{(s['leakage_or_repetition'] or 'clean').replace('|', '/')} | "
                     f"{(s['first_failed_gate'] or 'none').replace('|', '/')} |")
    lines += ["", "## Targets", "", "| target | value | result |", "|---|---|---|"]
    for t in result["targets"]:
        value = _fmt(t["value"], {"s": ".1f", "nats": "+.4f"}.get(t["unit"], "+.1f" if "vs base" in t["target"]
                                                                   else ".1f"))
        lines.append(f"| {t['target']} | {value} {t['unit']}{' (' + t['note'] + ')' if t.get('note') else ''} | "
                     f"{_verdict(t['pass'])} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    """Run (or reuse) the pipeline, train the ablation, measure, write benchmarks/results/learning_effect.*."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="default", help="the run's name (its folder under --runs-dir)")
    parser.add_argument("--runs-dir", default=None, help="where to run the pipeline (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp run folder")
    parser.add_argument("--run-dir", default=None, help="measure this finished run instead of running one")
    parser.add_argument("--stages", default=None, help="comma-separated stages to run (default: all)")
    parser.add_argument("--ablation-dir", default=None, help="where the ablation trains (default: RUN/ablation)")
    parser.add_argument("--ablation-length", choices=("settings", "iters"), default="iters",
                        help="iters (the same budget): as many optimizer steps per phase as the run took; "
                             "settings: the run's epochs (fewer steps on less data)")
    parser.add_argument("--redo-ablation", action="store_true", help="train the ablation even if a matching one exists")
    parser.add_argument("--no-ablation", action="store_true", help="measure base and trained only")
    parser.add_argument("--rouge-questions", type=int, default=None,
                        help="Jolie questions answered for ROUGE-L (default: all; 12 with --quick)")
    parser.add_argument("--max-tokens", type=int, default=80, help="new tokens per greedy answer")
    parser.add_argument("--samples", type=int, default=20, help="random generated samples to show and check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample draw")
    parser.add_argument("--quick", action="store_true", help="ROUGE-L on the first 12 Jolie questions only")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where learning_effect.{json,md} go")
    args = parser.parse_args(argv)

    import mlxlab  # noqa: F401  (binds the BLAS before mlx loads)
    from mlxlab.errors import MlxlabError

    try:
        _stages(args.stages)
    except BenchError as exc:
        print(f"learning_effect: {exc}", file=sys.stderr)
        return 2
    temp = None
    if args.run_dir is None and args.runs_dir is None:
        temp = Path(tempfile.mkdtemp(prefix="mlxlab-learning-effect-"))
        args.runs_dir = str(temp)
    failed = True
    try:
        code = _bench(args)
        failed = False
        return code
    except (BenchError, MlxlabError) as exc:
        print(f"learning_effect: {exc}", file=sys.stderr)
        return 1
    finally:
        if temp is not None:
            if args.keep or failed:
                run_dir = temp / args.name
                say(f"the run folder is kept in {run_dir}" + ("" if args.keep else " (the benchmark failed); "
                    f"once it is complete, measure it again with --run-dir {run_dir}"))
            else:
                shutil.rmtree(temp, ignore_errors=True)


def _bench(args) -> int:
    start = time.perf_counter()
    if args.run_dir is not None:
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            raise BenchError(f"--run-dir {run_dir}: no such folder")
        timing = existing_run(run_dir)
    else:
        run_dir, timing = run_pipeline(args)
    model, cfg, run_section, gen, tax_root = run_settings(run_dir)
    adapters = run_dir / "adapters"
    if not (adapters / "adapters.safetensors").is_file():
        raise BenchError(f"{adapters}: no adapters.safetensors; the run needs its train stage")

    ablation = None
    if not args.no_ablation:
        out = Path(args.ablation_dir) if args.ablation_dir else run_dir / "ablation"
        ablation = train_ablation(run_dir, out, model, cfg, run_section, length=args.ablation_length,
                                  redo=args.redo_ablation)

    jolie, general = _read_records(JOLIE), _read_records(GENERAL)
    rouge_n = args.rouge_questions if args.rouge_questions is not None else (12 if args.quick else len(jolie))
    rouge_n = max(0, min(rouge_n, len(jolie)))
    tic = time.perf_counter()
    models = {"base": measure("base", model, None, jolie, general, rouge_n, args.max_tokens),
              "trained": measure("trained", model, adapters, jolie, general, rouge_n, args.max_tokens)}
    if ablation is not None:
        models["ablation"] = measure("ablation", model, Path(ablation["adapters"]), jolie, general, rouge_n,
                                     args.max_tokens)
    measure_seconds = time.perf_counter() - tic
    add_changes(models)

    checkpoints = {"trained": _phase_records(adapters)}
    if ablation is not None:
        checkpoints["ablation"] = _phase_records(Path(ablation["adapters"]))
    gates = gate_shares(run_dir / "data" / "report.json")
    samples = sample_generated(run_dir, tax_root, gen, args.samples, args.seed)
    for n, s in enumerate(samples["samples"], start=1):
        print(f"--- sample {n} ({s['leaf']}, {s['file']}): {s['leakage_or_repetition'] or 'no leakage, no repetition'}")
        print(f"Q: {s['question']}")
        print(f"A: {s['answer']}")
    result = {"setup": {"model": model, "run_dir": str(run_dir), "reused_run": args.run_dir is not None,
                        "stages": args.stages or "all", "jolie_questions": len(jolie),
                        "general_questions": len(general), "rouge_questions": rouge_n, "max_tokens": args.max_tokens,
                        "quick": args.quick, "ablation_length": None if ablation is None else args.ablation_length,
                        "train_settings": dataclasses.asdict(cfg), "phases": run_section.get("phases"),
                        "jolie_file": str(JOLIE.relative_to(ROOT)), "general_file": str(GENERAL.relative_to(ROOT))},
              "timing": timing, "ablation": ablation, "models": models, "measure_seconds": round(measure_seconds, 1),
              "checkpoints": checkpoints, "gates": gates, "samples": samples, "run_figures": run_figures(run_dir),
              "benchmark_seconds": round(time.perf_counter() - start, 1)}
    result["targets"] = targets(models, timing, samples)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "learning_effect.json").write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    md = markdown(result)
    (results / "learning_effect.md").write_text(md, encoding="utf-8")
    print(md)
    say(f"wrote {results / 'learning_effect.json'} and {results / 'learning_effect.md'}")
    return 1 if args.strict and any(t["pass"] is False for t in result["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
