"""`mlxlab run`: validate → generate → train → fuse → export → eval into one run directory, resumable.

Everything lands in `runs/<name>/{config.yaml, data/, adapters/, fused/, gguf/, eval/, manifest.json}`. For
each stage the manifest records the hashes of its inputs (the contents of its input files and its resolved
settings), its outputs, figures, time and status. A rerun skips a finished stage whose inputs did not change;
`from_stage` redoes a stage and every later one. Killing a run loses nothing: generate resumes from its
journals, train from its newest checkpoint, fuse and export write atomically, and the manifest is replaced
atomically after every change of state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlxlab.config import (EvalConfig, ExportConfig, FuseConfig, GenerateConfig, ModelConfig, RunConfig,
                           TaxonomyConfig, TrainConfig, load_config, resolve, save_resolved, to_dict)
from mlxlab.crash import set_stage
from mlxlab.sdg.datasets import GENERAL_VALID
from mlxlab.errors import MlxlabError
from mlxlab.run_result import STAGES, RunResult, print_summary

SHARDED = ("generate", "train")     # the stages every rank runs under mlx.launch; rank 0 alone runs the others
# stage -> (config section, its dataclass)
SECTION = {"validate": ("taxonomy", TaxonomyConfig), "generate": ("generate", GenerateConfig),
           "train": ("train", TrainConfig), "fuse": ("fuse", FuseConfig), "export": ("export", ExportConfig),
           "eval": ("eval", EvalConfig)}
# section -> {stage setting: RunConfig field that sizes it inside a run}
SIZING = {"generate": {"samples_per_seed": "samples_per_seed", "max_tokens": "max_tokens"},
          "train": {"num_epochs": "num_epochs", "num_iters": "num_iters", "batch_size": "batch_size",
                    "num_layers": "num_layers", "save_every": "save_every", "steps_per_eval": "steps_per_eval",
                    "patience": "patience"},
          "eval": {"k": "k", "max_tokens": "answer_tokens"},
          "export": {"out_type": "out_type"}}
# A run keeps going when one leaf of several ends empty (the summary shows it); train fails if all do.
# Its training (documents and seeds at batch 2, the best checkpoint kept within the forgetting tolerance) learns
# more at 2e-4 than at train's own 1e-4: on benchmarks/data's unseen Jolie questions -24.2 % NLL instead of
# -19.3 %, general chat -3.5 % instead of -4.3 %, ROUGE-L 0.171 -> 0.201 (benchmarks/learning_effect.py).
RUN_DEFAULTS = {"generate": {"allow_empty": True}, "train": {"keep_best": True, "learning_rate": 2e-4}}
# a run is sized by epochs or by iterations: either one set in the config file or a stage dict replaces both
LENGTH = ("num_epochs", "num_iters")
# settings left out of a stage's inputs hash: they do not change what it produces, or they are paths whose
# files are hashed by content (so a run folder can be moved or copied without redoing anything)
VOLATILE = {"quiet", "resume", "force", "output", "concurrency", "taxonomy", "test", "prompts"}
MANIFEST_VERSION = 1


@dataclass
class _Plan:
    """Resolved settings and paths of one run."""
    run: RunConfig
    dir: Path
    model: str
    configs: dict[str, object]     # section -> resolved stage config
    quiet: bool
    forced: bool = False           # the stage now running was asked to redo (from_stage)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def adapters(self) -> Path:
        return self.dir / "adapters"

    @property
    def fused(self) -> Path:
        return self.dir / "fused"

    @property
    def gguf(self) -> Path:
        out_type = self.configs["export"].out_type.lower()
        return self.dir / "gguf" / f"{self.run.name}-{out_type}.gguf"


# ---------------------------------------------------------------------------------------------- helpers

def file_hash(path: Path) -> str:
    """sha256 of a file's contents (first 16 hex digits)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _files(base: Path, *paths: Path) -> dict[str, str]:
    """{path relative to `base`: content hash} of files and of every file inside folders (hidden ones left out)."""
    out: dict[str, str] = {}
    for path in map(Path, paths):
        inside = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in inside:
            if path.is_dir() and any(part.startswith(".") for part in file.relative_to(path).parts):
                continue                    # journals and temporary files
            out[Path(os.path.relpath(file, base)).as_posix()] = file_hash(file)
    return out


def _write_json(path: Path, data: dict) -> None:
    from mlxlab.files import atomic_write

    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _settings(cfg) -> dict:
    """A stage config as hashable settings (without the ones that do not change its result)."""
    (values,) = to_dict(cfg).values()
    return {k: v for k, v in values.items() if k not in VOLATILE}


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rel(path: Path | str | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _need(path: Path, stage: str, producer: str) -> Path:
    if not path.exists():
        raise MlxlabError(f"the {stage} stage needs {path}, which the {producer} stage writes",
                          hint=f"run the {producer} stage first (leave out --stages, or add {producer} to it)")
    return path


def read_manifest(run_dir: str | Path) -> dict:
    """The run's manifest.json (an empty one for a new run)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return {"version": MANIFEST_VERSION, "stages": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MlxlabError(f"cannot read the run's manifest: {exc}", path=path,
                          hint="delete it to redo every stage (the stages' own outputs are kept)") from None
    manifest.setdefault("stages", {})
    return manifest


# ---------------------------------------------------------------------------------------------- settings

def plan_run(name=None, *, taxonomy=None, model=None, teacher=None, runs_dir=None, stages=None,
             config_file=None, quiet: bool = False, **overrides) -> _Plan:
    """Resolve every stage's settings: defaults < the run's sizing < config file sections < keywords."""
    per_stage = {k: overrides.pop(k) for k in list(overrides) if k in {s for s, _ in SECTION.values()}}
    for section, given in per_stage.items():
        if not isinstance(given, dict):
            raise MlxlabError(f"{section}= takes a dict of {section} settings, found {given!r}",
                              hint=f"e.g. run({section}={{...}})")
    file_config = load_config(config_file)
    paths = {k: None if v is None else str(v) for k, v in
             dict(taxonomy=taxonomy, model=model, teacher=teacher, runs_dir=runs_dir).items()}
    run_cfg = resolve(RunConfig, file_config=file_config, name=name, stages=stages, **paths, **overrides)
    unknown = [s for s in run_cfg.stages if s not in STAGES]
    if unknown:
        raise MlxlabError(f"unknown stage {unknown[0]!r}", hint="stages are: " + ", ".join(STAGES))
    run_dir = Path(run_cfg.runs_dir) / run_cfg.name
    configs: dict[str, object] = {}
    for section, cls in SECTION.values():
        in_file = file_config.get(section, {})
        values = dataclasses.asdict(resolve(cls, file_config=file_config))     # file values checked, with file:line
        values.update({k: v for k, v in RUN_DEFAULTS.get(section, {}).items() if k not in in_file})
        given = {*in_file, *per_stage.get(section, {})}
        sizing = {k: getattr(run_cfg, f) for k, f in SIZING.get(section, {}).items() if k not in given}
        if given & set(LENGTH):
            sizing = {k: v for k, v in sizing.items() if k not in LENGTH}
        elif section == "train" and run_cfg.num_iters is not None:
            sizing["num_epochs"] = None             # iterations asked for: they replace the epochs
        values.update(sizing)
        configs[section] = resolve(cls, **{**values, **per_stage.get(section, {})})
    tax = run_cfg.taxonomy or configs["taxonomy"].taxonomy
    configs["taxonomy"] = dataclasses.replace(configs["taxonomy"], taxonomy=tax)
    configs["generate"] = dataclasses.replace(configs["generate"], taxonomy=tax, output=str(run_dir / "data"),
                                              teacher=run_cfg.teacher or configs["generate"].teacher,
                                              quiet=quiet or configs["generate"].quiet)
    if configs["eval"].test is None:
        configs["eval"] = dataclasses.replace(configs["eval"], test=str(run_dir / "data" / "test.jsonl"))
    student = run_cfg.model or resolve(ModelConfig, file_config=file_config).model
    return _Plan(run_cfg, run_dir, student, configs, quiet)


# ---------------------------------------------------------------------------------------------- stages

def _inputs(stage: str, plan: _Plan) -> dict:
    """What a stage reads: file hashes and settings (the skip decision compares their digest)."""
    cfg = plan.configs[SECTION[stage][0]]
    settings = _settings(cfg)
    if stage in ("validate", "generate"):
        from mlxlab.taxonomy.taxonomy import Taxonomy

        root = Path(plan.configs["taxonomy"].taxonomy)
        if not root.is_dir():
            raise MlxlabError(f"no such taxonomy folder: {root}", hint="pass --taxonomy ROOT")
        files = _files(root, root)
        if stage == "generate":   # the knowledge documents are inputs too, and the student writes the replay
            tax = Taxonomy.load(root, strict=plan.configs["taxonomy"].strict)
            files.update(_files(root, *(doc for leaf in tax.leaves for doc in leaf.documents)))
            return {"files": files, "settings": settings, "student": plan.model,
                    "replay": [plan.run.replay, plan.run.replay_ratio]}
        return {"files": files, "settings": settings}
    if stage == "train":
        optional = (plan.data / "valid.jsonl", plan.data / "phase1")
        files = _files(plan.dir, _need(plan.data / "train.jsonl", stage, "generate"),
                       *[p for p in optional if p.exists()])
        general = Path(plan.configs["train"].general_valid or GENERAL_VALID)
        return {"files": files, "settings": settings, "model": plan.model,
                "general_valid": file_hash(general) if general.is_file() else None}
    adapters = [plan.adapters / "adapters.safetensors", plan.adapters / "adapter_config.json"]
    if stage == "fuse":
        return {"files": _files(plan.dir, *(_need(p, stage, "train") for p in adapters)), "settings": settings,
                "model": plan.model}
    if stage == "export":
        return {"files": _files(plan.dir, _need(plan.fused, stage, "fuse")), "settings": settings}
    test = Path(cfg.test)
    extra = [Path(cfg.prompts)] if cfg.prompts else []
    return {"files": _files(plan.dir, *(_need(p, stage, "train") for p in adapters), _need(test, stage, "generate"),
                            *extra),
            "settings": settings, "model": plan.model}


def _run_validate(plan: _Plan, resume: bool) -> tuple[dict, dict]:
    from mlxlab.taxonomy.taxonomy import format_report, validate

    cfg = plan.configs["taxonomy"]
    reports = validate([cfg.taxonomy], strict=cfg.strict, fetch_documents=cfg.fetch_documents)
    if not all(r.valid for r in reports):
        raise MlxlabError("the taxonomy has errors:\n" + format_report(reports),
                          hint="fix them, check with `mlxlab taxonomy validate`, and run again")
    figures = {"taxonomy": cfg.taxonomy, "files": len(reports), "warnings": sum(len(r.problems) for r in reports),
               "kinds": {k: sum(1 for r in reports if r.kind == k) for k in sorted({r.kind for r in reports})}}
    return {}, figures             # it writes nothing: the verdict is in the figures


def _run_generate(plan: _Plan, resume: bool) -> tuple[dict, dict]:
    from mlxlab.sdg.datasets import self_replay
    from mlxlab.distributed import world
    from mlxlab.sdg.sdg import generate_data, make_sdg_teacher
    from mlxlab.teacher.teacher import Teacher

    if not resume and plan.forced:          # a redo asked for: journals would otherwise replay the old data
        _clear_data(plan.data)
    cfg = plan.configs["generate"]
    teacher = make_sdg_teacher(cfg)
    outputs = {}
    try:
        if plan.run.replay and world().main:      # the replay is mixed in by rank 0, which writes the datasets
            replay = plan.data / "replay.jsonl"
            if not (resume and replay.is_file()):
                same = teacher.backend == "mlx" and str(cfg.teacher) == str(plan.model)
                student = teacher if same else Teacher(plan.model, backend="mlx")
                try:
                    replay = self_replay(student, plan.data, seed=cfg.seed)
                finally:
                    if student is not teacher:
                        student.close()
            cfg = dataclasses.replace(cfg, replay=str(replay),
                                      replay_ratio=cfg.replay_ratio or plan.run.replay_ratio)
            outputs.update(replay=replay)
        result = generate_data(config=cfg, teacher=teacher)
    finally:
        teacher.close()                     # its model and (llama.cpp) KV cells are not needed by train and later
    outputs.update(train=result.train, valid=result.valid, test=result.test, report=result.report)
    if result.knowledge_phase1:
        outputs.update(phase1=result.knowledge_phase1)
    figures = {"samples": result.samples, "kept": result.kept, "generated_tokens": result.generated_tokens,
               "tokens_per_second": result.tokens_per_second}
    return outputs, figures


def _clear_data(data: Path) -> None:
    """Empty the data folder for a redo, the ranks in step.

    Rank 0, which writes the data, removes the folder while the others wait: ranks on one machine share it, two
    removals at once collide, and a late one would delete rank 0's new files. Then every other rank drops its own
    journals, which are on its own disk when it runs on another machine.
    """
    from mlxlab.distributed import from_main, world
    from mlxlab.sdg.sdg_units import rank_journals

    def remove() -> None:
        if data.exists():
            shutil.rmtree(data)

    w = world()
    from_main(remove, "clearing the data folder for the redo", w)
    if not w.main:
        for journal in rank_journals(data, w.rank):
            journal.unlink(missing_ok=True)


def plan_phases(data: Path, enabled: bool = True) -> list[dict] | None:
    """The phases to train on a data folder: phase 1 (knowledge documents and Q&A) then phase 2 (the mix),
    when `data/phase1/` exists; None: one training on the mix.

    Phase 2 is left out when every record of the mix is already in phase 1 (the default run with a small
    teacher: the seeds and back-translated knowledge). It would only repeat phase 1's data, and it measurably
    added nothing: on the Jolie taxonomy phase 2 kept its iteration 0 and cost a quarter of the training time.
    """
    data = Path(data)
    phase1 = data / "phase1" / "train.jsonl"
    if not enabled or not phase1.is_file():
        return None
    phases = [{"data": str(data / "phase1")}, {"data": str(data)}]
    return phases[:1] if _contents(data / "train.jsonl") <= _contents(phase1) else phases


def _phases(plan: _Plan) -> list[dict] | None:
    from mlxlab.distributed import from_main

    return from_main(lambda: plan_phases(plan.data, plan.run.phases), "planning phases")   # rank 0's disk


def _contents(path: Path) -> set[str]:
    """The training content (messages or text) of each record of a JSONL file, as canonical JSON."""
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {json.dumps([r.get("messages"), r.get("text")], sort_keys=True) for r in rows}


def _run_train(plan: _Plan, resume: bool) -> tuple[dict, dict]:
    from mlxlab.train.loop import checkpoints, train

    from mlxlab.distributed import from_main, world

    cfg = plan.configs["train"]
    if cfg.general_valid is None:           # forgetting is watched on hand-written general chat (package data)
        cfg = dataclasses.replace(cfg, general_valid=str(GENERAL_VALID))

    def look() -> dict:                     # rank 0's disk holds the checkpoints
        folders = [plan.adapters, *sorted(plan.adapters.glob("phase_*"))]
        done = {i: str(p) for folder in folders for i, p in checkpoints(folder).items()} if resume else {}
        finished = resume and any(plan.adapters.glob("phase_*/result.json"))
        if not (done or finished) and plan.adapters.exists():
            shutil.rmtree(plan.adapters)    # old checkpoints belong to other inputs: train refuses to mix them
        return {"done": max(map(int, done), default=0), "resume": bool(done or finished)}

    found = from_main(look, "looking for checkpoints")
    phases = _phases(plan)
    result = train(plan.model, plan.data, plan.adapters, config=cfg, phases=phases, quiet=plan.quiet,
                   resume=found["resume"])
    outputs = {"adapters": result.adapters, "log": result.log, "loss_plot": result.loss_plot}
    figures = {"final_loss": result.final_loss, "val_loss": result.val_loss, "num_iters": result.num_iters,
               "num_epochs": result.num_epochs, "tokens_per_second": result.tokens_per_second,
               "peak_memory_gb": result.peak_memory_gb, "resumed_from": found["done"],
               "best_iter": result.best_iter, "best_reason": result.best_reason,
               "general_loss": result.general_loss, "general_base_loss": result.general_base_loss,
               "stopped_early": result.stopped_early, "world_size": result.world_size}
    if phases and world().main:
        figures["phases"] = [json.loads((plan.adapters / f"phase_{i}" / "result.json").read_text(encoding="utf-8"))
                             for i in range(1, len(phases) + 1)]
        if len(phases) == 1:
            figures["phase_2"] = "skipped: every record of data/train.jsonl is in phase 1"
    return outputs, figures


def _run_fuse(plan: _Plan, resume: bool) -> tuple[dict, dict]:
    from mlxlab.train.fuse import fuse

    result = fuse(plan.model, plan.adapters, plan.fused, dequantize=plan.configs["fuse"].dequantize, force=True)
    return {"fused": result.path}, {"fused_layers": result.fused_layers, "quantized": result.quantized}


def _run_export(plan: _Plan, resume: bool) -> tuple[dict, dict]:
    from mlxlab.gguf.gguf_export import export_gguf

    cfg = plan.configs["export"]
    result = export_gguf(plan.fused, plan.gguf, out_type=cfg.out_type, verify=cfg.verify, force=True)
    outputs = {"gguf": result.path, "modelfile": result.modelfile, "verify_report": result.verify_report}
    figures = {"out_type": result.out_type, "size_bytes": result.size_bytes, "architecture": result.architecture,
               "max_abs_logit_diff": result.max_abs_logit_diff, "top1_agreement": result.top1_agreement,
               "positions": result.positions}
    return outputs, figures


def _run_eval(plan: _Plan, resume: bool) -> tuple[dict, dict]:
    from mlxlab.evaluate.evaluation import evaluate
    from mlxlab.evaluate.plots import sweep_plots

    trained = json.loads((plan.adapters / "result.json").read_text(encoding="utf-8")) \
        if (plan.adapters / "result.json").is_file() else {}
    # the iteration of the adapters evaluated: the kept checkpoint's (keep_best), counted across phases
    iters = trained.get("best_iter") if trained.get("best_iter") is not None else \
        trained.get("num_iters") or plan.configs["train"].num_iters or 0
    models = {"base": plan.model, "trained": (plan.model, plan.adapters)}
    result = evaluate(models, output=plan.dir / "eval", iterations={"base": 0, "trained": iters},
                      config=plan.configs["eval"], quiet=plan.quiet)
    plots = sweep_plots(result.summary, plan.adapters / "train_log.jsonl", plan.dir / "eval")
    outputs = {"results": result.results, "summary": result.summary_path, **plots}
    figures = {"score_kind": result.summary["score_kind"], "judge_unparsed": result.judge_unparsed, "models": {
        label: {"score": (m["score"] or {}).get("mean"), "score_std": (m["score"] or {}).get("std"),
                "heldout_loss": m.get("heldout_loss"), "perplexity": m.get("perplexity")}
        for label, m in result.summary["models"].items()}}
    return outputs, figures


RUNNERS = {"validate": _run_validate, "generate": _run_generate, "train": _run_train, "fuse": _run_fuse,
           "export": _run_export, "eval": _run_eval}
PLOTS = {"train": ("loss_plot",), "eval": ("per_prompt", "mean", "side_by_side", "loss", "heldout_loss")}


# ---------------------------------------------------------------------------------------------- the run

def run(name: str | None = None, *, taxonomy: str | Path | None = None, model: str | Path | None = None,
        teacher: str | Path | None = None, runs_dir: str | Path | None = None, from_stage: str | None = None,
        stages: list[str] | str | None = None, config_file: str | Path | None = None, quiet: bool = False,
        **overrides) -> RunResult:
    """Run validate → generate → train → fuse → export → eval into `runs_dir/name` (defaults: runs/default).

    Keyword settings are `RunConfig` fields (num_iters, k, out_type, ...); a stage's own settings go in a dict
    named after its config section, e.g. `train={"learning_rate": 2e-4}`. Finished stages whose inputs did not
    change are skipped; `from_stage` redoes that stage and every later one.
    """
    from mlxlab.config import DeviceConfig
    from mlxlab.device import device_policy, policy_from_env

    # the `device:` section of mlxlab.yaml holds for the run, from Python as from the CLI (whose flags, like
    # MLXLAB_DEVICE / MLXLAB_DTYPE set by hand, come through the environment and win over the file)
    with device_policy(resolve(DeviceConfig, file_config=load_config(config_file), **policy_from_env())):
        return _run(name, taxonomy=taxonomy, model=model, teacher=teacher, runs_dir=runs_dir, from_stage=from_stage,
                    stages=stages, config_file=config_file, quiet=quiet, **overrides)


def _run(name, *, taxonomy, model, teacher, runs_dir, from_stage, stages, config_file, quiet,
         **overrides) -> RunResult:
    start = time.perf_counter()
    plan = plan_run(name, taxonomy=taxonomy, model=model, teacher=teacher, runs_dir=runs_dir, stages=stages,
                    config_file=config_file, quiet=quiet, **overrides)
    if from_stage is not None and from_stage not in STAGES:
        raise MlxlabError(f"unknown stage {from_stage!r} for --from", hint="stages are: " + ", ".join(STAGES))
    from mlxlab.distributed import from_main, world

    # under mlx.launch: generate and train run on every rank (sharded), the other stages on rank 0, which alone
    # reads and writes the run folder and tells the others what to do
    w = world()
    if w.main:
        plan.dir.mkdir(parents=True, exist_ok=True)
        save_resolved(plan.dir / "config.yaml", plan.run, *plan.configs.values())
    manifest_path = plan.dir / "manifest.json"
    manifest = read_manifest(plan.dir) if w.main else {"version": MANIFEST_VERSION, "stages": {}}
    manifest.update({"version": MANIFEST_VERSION, "name": plan.run.name, "model": plan.model,
                     "teacher": plan.configs["generate"].teacher, "taxonomy": plan.configs["taxonomy"].taxonomy,
                     "world_size": w.size})
    say = (lambda text: None) if quiet or not w.main else (lambda text: print(text, file=sys.stderr, flush=True))
    write = _write_json if w.main else (lambda path, data: None)
    ran, skipped = [], []
    for stage in [s for s in STAGES if s in plan.run.stages]:
        forced = from_stage is not None and STAGES.index(stage) >= STAGES.index(from_stage)
        previous = manifest["stages"].get(stage, {})

        def decide() -> dict:               # on rank 0, whose run folder and manifest are the real ones
            inputs = _inputs(stage, plan)
            same = previous.get("inputs_hash") == _digest(inputs)
            outputs_there = all((plan.dir / p).exists() for p in previous.get("outputs", {}).values() if p)
            done = previous.get("status") == "done"
            # resume: the same inputs, killed, failed or interrupted
            return {"inputs": inputs, "skip": not forced and same and done and outputs_there,
                    "resume": same and not done and not forced}

        decision = from_main(decide, f"planning {stage}", w)
        inputs, resume = decision["inputs"], decision["resume"]
        digest = _digest(inputs)
        if decision["skip"]:
            say(f"{stage}: skipped, inputs unchanged since {previous.get('finished', 'the last run')}")
            skipped.append(stage)
            continue
        why = "forced (--from)" if forced else "resuming an interrupted run" if resume else \
            "inputs changed" if previous else "first run"
        say(f"{stage}: running ({why})" + (f" on {w.size} ranks" if w.size > 1 and stage in SHARDED else ""))
        record = {"status": "running", "inputs_hash": digest, "inputs": inputs, "started": _now()}
        manifest["stages"][stage] = record
        write(manifest_path, manifest)
        tic = time.perf_counter()
        plan.forced = forced
        set_stage(f"run: {stage}")
        if not w.main and stage not in SHARDED:
            continue
        try:
            outputs, figures = RUNNERS[stage](plan, resume)
        except BaseException as exc:       # Ctrl-C included: the manifest says where the run stopped
            record.update({"status": "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                           "error": str(exc) or type(exc).__name__, "seconds": round(time.perf_counter() - tic, 2)})
            write(manifest_path, manifest)
            raise
        record.update({"status": "done", "finished": _now(), "seconds": round(time.perf_counter() - tic, 2),
                       "outputs": {k: _rel(v, plan.dir) for k, v in outputs.items() if v is not None},
                       "figures": figures})
        write(manifest_path, manifest)
        ran.append(stage)
        say(f"{stage}: done in {record['seconds']:.1f} s")
    manifest["updated"] = _now()
    write(manifest_path, manifest)
    result = _result(plan, manifest, ran, skipped, time.perf_counter() - start)
    if w.main:                             # after eval: the page shows every stage's files
        from mlxlab.evaluate.report import write_report

        result = dataclasses.replace(result, report=write_report(plan.dir))
    if not quiet and w.main:
        print_summary(result)
    return result


def _result(plan: _Plan, manifest: dict, ran: list[str], skipped: list[str], seconds: float) -> RunResult:
    stages = manifest["stages"]
    plots = {f"{stage}_{key}" if key != "loss_plot" else "train_loss": plan.dir / stages[stage]["outputs"][key]
             for stage, keys in PLOTS.items() for key in keys
             if stage in stages and stages[stage].get("outputs", {}).get(key)}
    gguf = stages.get("export", {}).get("outputs", {}).get("gguf")
    return RunResult(plan.dir, plan.dir / "manifest.json", ran, skipped, stages,
                     plan.dir / gguf if gguf else None, plots, seconds)
