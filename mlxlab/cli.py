"""The `mlxlab` command: one verb per stage, a thin shell over the Python API.

Heavy modules (mlx, mlx_lm, llama_cpp) are imported inside the handlers only, so `mlxlab --help`
stays fast. An `MlxlabError` is printed as one clear message (exit 1; usage errors exit 2);
anything else is a bug and shows its traceback only with `--debug`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlxlab.config import (DeviceConfig, ModelConfig, TaxonomyConfig, add_arguments, load_config,
                           overrides_from_args, resolve)
from mlxlab.errors import MlxlabError, UsageError


def _settings(args: argparse.Namespace, cls: type):
    """`cls` resolved from defaults < config files < the flags given."""
    return resolve(cls, file_config=load_config(args.config), **overrides_from_args(args, cls))


def _setup_device(args: argparse.Namespace) -> DeviceConfig:
    from mlxlab import device

    cfg = _settings(args, DeviceConfig)
    device.apply_device_config(cfg)     # for the whole CLI process: a flag reaches every model load
    return cfg


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _other_rank() -> bool:
    """True on ranks other than 0 under mlx.launch: they work but leave the printing to rank 0."""
    from mlxlab.distributed import world

    return not world().main


# ---------------------------------------------------------------------------------------------- verbs

def _cmd_init(args: argparse.Namespace) -> int:
    from mlxlab.config import init_config, user_config_path

    path = init_config(args.path, force=args.force)
    _print(f"wrote {path}")
    if user_config_path().is_file():
        _print(f"also reading your user settings from {user_config_path()} (the project file wins)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import dataclasses

    from mlxlab import device

    _setup_device(args)
    from mlxlab.distributed import world

    info = device.device_info(measure=not args.no_measure)
    group = world()
    from mlxlab.llamacpp import describe_build, verdict

    llama = verdict(refresh=args.llama_selftest)
    if args.json:
        _print(json.dumps({**dataclasses.asdict(info), "llama_cpp_selftest": dataclasses.asdict(llama),
                           "distributed": {"rank": group.rank, "size": group.size, "backend": group.backend}},
                          indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, padding=(0, 2))
    rows = [
        ("system", f"{info.system} ({info.machine})"),
        ("cpu", f"{info.cpu}, {info.cpu_count} cores"),
        ("memory", f"{info.memory_gb:.1f} GB"),
        ("python", info.python),
        ("mlx", f"{info.mlx_version}, backend {info.backend}"),
        ("default device", info.default_device),
        ("compute dtype", info.dtype),
        ("blas", info.blas),
        ("float32 matmul", f"{info.matmul_gflops:.1f} GFLOP/s (512x512)" if info.matmul_gflops else "not measured"),
        ("llama.cpp", describe_build(llama.build) if llama.build else info.llama_cpp),
        ("llama.cpp self-test", llama.describe() + (" (cached; --llama-selftest runs it again)" if llama.cached
                                                     else f" (ran now, {llama.seconds:.0f} s)")),
        ("llama.cpp threads", str(device.llama_threads())),
        ("distributed", group.describe() if group.size > 1 else "single process (start several with mlx.launch)"),
    ]
    if info.wired_limit_note:
        rows.append(("metal memory", info.wired_limit_note))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/bold]", value)
    Console().print(table)
    return 0


def _taxonomy_roots(args: argparse.Namespace) -> tuple[TaxonomyConfig, list[str]]:
    cfg = _settings(args, TaxonomyConfig)
    return cfg, list(args.paths) or [cfg.taxonomy]


def _report_taxonomy(reports, args: argparse.Namespace) -> int:
    from mlxlab.taxonomy.taxonomy import format_report

    if args.json:
        _print(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        _print(format_report(reports))
    return 0 if all(r.valid for r in reports) else 1


def _cmd_taxonomy_validate(args: argparse.Namespace) -> int:
    cfg, paths = _taxonomy_roots(args)
    from mlxlab.taxonomy.taxonomy import validate

    reports = validate(paths, strict=cfg.strict, fetch_documents=cfg.fetch_documents)
    return _report_taxonomy(reports, args)


def _cmd_taxonomy_diff(args: argparse.Namespace) -> int:
    cfg, paths = _taxonomy_roots(args)
    if len(paths) != 1:
        raise UsageError("taxonomy diff takes one taxonomy root")
    from mlxlab.taxonomy.taxonomy import diff

    reports = diff(paths[0], base=args.base, strict=cfg.strict, fetch_documents=cfg.fetch_documents)
    if not reports and not args.json:
        _print("no new or changed leaves")
        return 0
    return _report_taxonomy(reports, args)


def _cmd_model_import(args: argparse.Namespace) -> int:
    from mlxlab.models import import_gguf, resolve_model

    ref = args.ref or _settings(args, ModelConfig).model
    if str(ref).endswith(".gguf") or args.output or args.force:
        from mlxlab.models import EMBEDDED, embedded_gguf

        source = embedded_gguf() if ref == EMBEDDED else Path(ref)
        if not str(source).endswith(".gguf"):
            raise UsageError(f"--output and --force apply to GGUF imports; {ref!r} is not a .gguf file")
        result = import_gguf(source, args.output, force=args.force)
        state = "already imported" if result.cached else f"imported in {result.seconds:.1f} s"
        _print(f"{result.source} -> {result.path}\n  {result.architecture}, {result.parameters / 1e6:.1f}M "
               f"parameters, {result.quantization}; {state}")
        return 0
    path = resolve_model(ref)
    _print(f"{ref} -> {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mlxlab.config import TrainConfig

    _setup_device(args)
    cfg = _settings(args, TrainConfig)
    model = args.model or _settings(args, ModelConfig).model
    from mlxlab.train.loop import read_phases, train

    phases = read_phases(args.phases) if args.phases else None
    result = train(model, args.data, args.output, config=cfg, phases=phases)
    if _other_rank():
        return 0
    _print(f"adapters: {result.adapters}")
    for it, path in result.checkpoints.items():
        _print(f"  checkpoint {it}: {path}")
    val = f", validation loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    _print(f"{result.num_iters} iterations ({result.num_epochs:.2f} epochs): loss {result.final_loss:.4f}{val}, "
           f"{result.tokens_per_second:.0f} tokens/s, padding {result.padding_fraction:.1%}, "
           f"peak memory {result.peak_memory_gb:.2f} GB")
    _print(f"log: {result.log}" + (f"  plot: {result.loss_plot}" if result.loss_plot else ""))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from mlxlab.config import GenerateConfig

    _setup_device(args)
    cfg = _settings(args, GenerateConfig)
    from mlxlab.sdg.sdg import generate_data

    from mlxlab.sdg.datasets import stats

    result = generate_data(config=cfg)
    if _other_rank():
        return 0
    for leaf, kept in result.kept.items():
        _print(f"{leaf}: {kept} samples kept")
    _print(f"{result.samples} samples, {result.generated_tokens} tokens ({result.tokens_per_second:.1f} tok/s) "
           f"in {result.seconds:.0f} s")
    for path in (result.train, result.valid, result.test, result.knowledge_phase1):
        if path is not None:
            s = stats(path)
            _print(f"{path}: {s['records']} records, {s['tokens']['mean']} {s['unit']} on average "
                   f"(max {s['tokens']['max']})")
    _print(f"report: {result.report}")
    return 0


def _cmd_fuse(args: argparse.Namespace) -> int:
    from mlxlab.config import FuseConfig

    _setup_device(args)
    cfg = _settings(args, FuseConfig)
    from mlxlab.train.fuse import fuse

    result = fuse(args.model or _settings(args, ModelConfig).model, args.adapters, args.output,
                  dequantize=cfg.dequantize, force=cfg.force)
    state = "quantized" if result.quantized else "dequantized" if cfg.dequantize else "float"
    _print(f"{result.path}: {result.fused_layers} layers merged ({state}) in {result.seconds:.1f} s")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from mlxlab.config import ExportConfig

    _setup_device(args)
    cfg = _settings(args, ExportConfig)
    from mlxlab.gguf.gguf_export import export_gguf, result_dict

    result = export_gguf(args.model or _settings(args, ModelConfig).model, args.output, out_type=cfg.out_type,
                         verify=cfg.verify, force=cfg.force)
    if args.json:
        _print(json.dumps(result_dict(result), indent=2))
        return 0
    _print(f"{result.path}: {result.architecture}, {result.out_type}, {result.size_bytes / 1e6:.1f} MB "
           f"in {result.seconds:.1f} s")
    if result.top1_agreement is not None:
        _print(f"  llama.cpp vs MLX over {result.positions} positions: max abs logit difference "
               f"{result.max_abs_logit_diff:.3g}, top-1 agreement {result.top1_agreement:.1%}")
    _print(f"  Ollama: ollama create NAME -f {result.modelfile}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import time

    from mlxlab.config import ServeConfig

    cfg = _settings(args, ServeConfig)
    from mlxlab.serve import start_server

    server = start_server(args.model or _settings(args, ModelConfig).model, host=cfg.host, port=cfg.port,
                          api_key=cfg.api_key, n_ctx=cfg.n_ctx)

    def ended(signum, _frame):          # SIGTERM / SIGHUP: leave through `finally`, which stops the server
        raise SystemExit(128 + signum)

    import signal

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), ended)
    try:
        _print(f"serving on {server.url} (OpenAI-compatible; Ctrl-C stops it)")
        while server.process.poll() is None:
            time.sleep(0.5)
        raise MlxlabError(f"the server stopped with code {server.process.returncode}:\n{server.log_tail()}")
    finally:
        server.stop()


def _cmd_chat(args: argparse.Namespace) -> int:
    from mlxlab.config import ChatConfig

    cfg = _settings(args, ChatConfig)
    from mlxlab.chat import chat

    model = None if cfg.url else (args.model or _settings(args, ModelConfig).model)
    stream = (lambda piece: (sys.stdout.write(piece), sys.stdout.flush())) if args.question is not None else None
    chat(model, url=cfg.url, question=args.question, system=cfg.system, temperature=cfg.temperature,
         max_tokens=cfg.max_tokens, api_key=cfg.api_key, on_token=stream)
    if args.question is not None:
        _print()
    return 0


def _cmd_attention(args: argparse.Namespace) -> int:
    from mlxlab.config import AttentionConfig

    _setup_device(args)
    cfg = _settings(args, AttentionConfig)
    from mlxlab.evaluate.attention import attention_maps

    result = attention_maps(args.model or _settings(args, ModelConfig).model, args.prompt,
                            max_tokens=cfg.max_tokens, layers=cfg.layers, heads=cfg.heads, output=Path(cfg.output),
                            chat=cfg.chat, temperature=cfg.temperature, seed=cfg.seed)
    _print(f"answer: {result.answer}")
    _print(f"{len(result.tokens)} tokens ({result.prompt_length} prompt), layers {list(result.layers)}, "
           f"{result.weights.shape[1]} heads")
    _print(f"arrays: {result.arrays}\nheatmaps: {len(result.pngs)} PNG files in {result.arrays.parent} "
           f"(overview.png: every layer)")
    return 0


def _cmd_eval_run(args: argparse.Namespace) -> int:
    from mlxlab.config import EvalConfig

    _setup_device(args)
    cfg = _settings(args, EvalConfig)
    models = {}
    for spec in args.models or [_settings(args, ModelConfig).model]:
        # LABEL=REF, REF@ADAPTERS (a checkpoint); URLs are taken whole
        label, ref = spec.split("=", 1) if "=" in spec and not spec.startswith(("http://", "https://")) else (spec, spec)
        if "@" in ref and not ref.startswith(("http://", "https://")):
            base, adapters = ref.rsplit("@", 1)
            models[label] = (base, adapters)
        else:
            models[label] = ref
    from mlxlab.evaluate.evaluation import evaluate

    result = evaluate(models, output=args.output, config=cfg)
    _cmd_eval_print(result.summary)
    _print(f"results: {result.results}\nsummary: {result.summary_path}")
    return 0


def _cmd_eval_print(summary: dict) -> None:
    _print(f"score: {summary['score_note']}")
    for label, m in summary["models"].items():
        score = f"{m['score']['mean']:.2f} ± {m['score']['std']:.2f}" if m["score"] else "-"
        loss = f", held-out loss {m['heldout_loss']:.4f}" if m.get("heldout_loss") is not None else ""
        unparsed = f", {m['judge_unparsed']} judge verdicts unreadable" if m["judge_unparsed"] else ""
        _print(f"  {label}: score {score}{loss}{unparsed}")
    if summary.get("graders"):
        found = summary["agreement"]
        alpha = f"{found['alpha']:.3f}" if found["alpha"] is not None else f"undefined ({found['reason']})"
        _print(f"graders: {', '.join(summary['graders'])}; Krippendorff's alpha (ordinal): {alpha}")


def _cmd_eval_grade(args: argparse.Namespace) -> int:
    if args.web:
        from mlxlab.evaluate.grading_page import GradingPage

        page = GradingPage(args.output, host=args.host, port=args.port, seed=args.seed)
        _print(f"grading page: {page.url} (each grader types their name; Ctrl-C stops it, grades are kept)")
        page.serve()
        _print(f"grades: {page.board.grades_path}\nsummary: {Path(args.output) / 'summary.json'}")
        return 0
    from mlxlab.evaluate.evaluation import grade

    result = grade(args.output, grader=args.grader, seed=args.seed)
    _cmd_eval_print(result.summary)
    return 0


def _cmd_eval_sweep(args: argparse.Namespace) -> int:
    from mlxlab.config import EvalConfig, TrainConfig

    _setup_device(args)
    cfg = _settings(args, EvalConfig)
    # training settings come from the `train:` section only: eval's flags (batch_size, ...) are not train's
    train_cfg = resolve(TrainConfig, file_config=load_config(args.config))
    from mlxlab.evaluate.evaluation import sweep

    result = sweep(args.model or _settings(args, ModelConfig).model, args.data, args.output, config=cfg,
                   train_config=train_cfg)
    _cmd_eval_print(result.eval.summary)
    for name, path in result.plots.items():
        _print(f"{name}: {path}")
    _print(f"table: {result.table}")
    if result.report is not None:
        _print(f"report: {result.report}")
    return 0


def _cmd_eval_report(args: argparse.Namespace) -> int:
    from mlxlab.evaluate.report import write_report

    # default: the run folder we stand in, else its evaluation folder
    folder = args.path or ("." if Path("manifest.json").is_file() else "eval")
    _print(str(write_report(folder)))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from mlxlab.config import RunConfig

    _setup_device(args)
    from mlxlab.pipeline import print_summary, run

    result = run(from_stage=args.from_stage, config_file=args.config, quiet=args.quiet,
                 **overrides_from_args(args, RunConfig))
    if args.quiet and not _other_rank():    # the run prints its summary itself unless quiet; a log still wants it
        print_summary(result)
    return 0


# ---------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (no heavy imports)."""
    parser = argparse.ArgumentParser(
        prog="mlxlab",
        description="Teach an open model something new on one laptop: taxonomy -> synthetic data -> "
                    "LoRA/QLoRA -> GGUF, on MLX.")
    from mlxlab import __version__

    parser.add_argument("--version", action="version", version=f"mlxlab {__version__}")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="project settings file (default: ./mlxlab.yaml when present)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    p = verbs.add_parser("init", help="write a commented mlxlab.yaml with every setting")
    p.add_argument("path", nargs="?", default="mlxlab.yaml", help="where to write it (default: mlxlab.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(handler=_cmd_init)

    p = verbs.add_parser("info", help="machine, MLX backend, BLAS, dtype policy, llama.cpp")
    add_arguments(p, DeviceConfig)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-measure", action="store_true", help="skip the matmul speed measurement")
    p.add_argument("--llama-selftest", action="store_true",
                   help="run llama.cpp's self-test again (its verdict is cached per build and CPU)")
    p.set_defaults(handler=_cmd_info)

    tax = verbs.add_parser("taxonomy", help="validate and diff InstructLab taxonomies (qna.yaml)")
    tax_verbs = tax.add_subparsers(dest="taxonomy_verb", metavar="VERB")
    tax.set_defaults(handler=lambda args: _missing_verb(tax))
    p = tax_verbs.add_parser("validate", help="validate every qna.yaml under each root (or single files)")
    p.add_argument("paths", nargs="*", metavar="ROOT_OR_FILE", help="taxonomy roots or qna.yaml files "
                   "(default: the taxonomy setting, 'taxonomy')")
    add_arguments(p, TaxonomyConfig, skip=("taxonomy",))
    p.add_argument("--json", action="store_true", help="print one JSON array with a record per file")
    p.set_defaults(handler=_cmd_taxonomy_validate)
    p = tax_verbs.add_parser("diff", help="new and changed leaves against a git ref, validated")
    p.add_argument("paths", nargs="*", metavar="ROOT", help="taxonomy root (default: 'taxonomy')")
    p.add_argument("--base", default=None,
                   help="git ref to compare with ('empty' = every leaf; default: origin/main, else main, else HEAD)")
    add_arguments(p, TaxonomyConfig, skip=("taxonomy",))
    p.add_argument("--json", action="store_true", help="print one JSON array with a record per file")
    p.set_defaults(handler=_cmd_taxonomy_diff)

    model = verbs.add_parser("model", help="resolve and import models")
    model_verbs = model.add_subparsers(dest="model_verb", metavar="VERB")
    model.set_defaults(handler=lambda args: _missing_verb(model))
    p = model_verbs.add_parser("import", help="make REF loadable by MLX (GGUF -> MLX 4-bit, HF id -> download)")
    p.add_argument("ref", nargs="?", default=None,
                   help="'smollm2' (embedded default), a .gguf file, a local model folder, or a Hugging Face id")
    p.add_argument("--output", default=None, help="where to write the imported model (GGUF only)")
    p.add_argument("--force", action="store_true", help="import again even if a cached copy exists")
    p.set_defaults(handler=_cmd_model_import)

    from mlxlab.config import TrainConfig

    p = verbs.add_parser("train", help="fine-tune with LoRA / DoRA / QLoRA on chat JSONL; checkpoints and --resume")
    p.add_argument("--model", default=None, help="model reference (default: the model setting, 'smollm2')")
    p.add_argument("--data", default="data", help="folder with train.jsonl (+ valid.jsonl) or one .jsonl file")
    p.add_argument("--output", default="adapters", help="folder for adapters, checkpoints, log and plot")
    p.add_argument("--phases", default=None, metavar="FILE",
                   help="YAML list of phases (data + train settings each), trained in order, each from the "
                        "last adapters (e.g. knowledge phase 1, then the skills mix); --data is then unused")
    add_arguments(p, TrainConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=_cmd_train)

    from mlxlab.config import GenerateConfig

    p = verbs.add_parser("generate", help="synthetic data from a taxonomy with a teacher model (LAB pipelines)")
    add_arguments(p, GenerateConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=_cmd_generate)

    from mlxlab.config import ChatConfig, ExportConfig, FuseConfig, ServeConfig

    p = verbs.add_parser("fuse", help="merge LoRA/DoRA adapters into the base model (dequantizing a 4-bit base)")
    p.add_argument("--model", default=None, help="base model reference (default: the model setting, 'smollm2')")
    p.add_argument("--adapters", default="adapters", help="adapter folder (adapter_config.json + adapters.safetensors)")
    p.add_argument("--output", default="fused", help="folder for the fused model")
    add_arguments(p, FuseConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=_cmd_fuse)

    p = verbs.add_parser("export", help="write a GGUF (f16, q8_0, q4_k_m, ...) for llama.cpp / Ollama, checked against MLX")
    p.add_argument("model", nargs="?", default=None, help="model folder, .gguf-imported model or reference "
                   "(default: the model setting)")
    p.add_argument("--output", default="gguf", help="a .gguf file, or a folder for <model>-<type>.gguf")
    add_arguments(p, ExportConfig)
    add_arguments(p, DeviceConfig)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_cmd_export)

    p = verbs.add_parser("serve", help="OpenAI-compatible server: llama.cpp for a .gguf, mlx-lm for an MLX model")
    p.add_argument("model", nargs="?", default=None, help="a .gguf file or an MLX model (default: the model setting)")
    add_arguments(p, ServeConfig)
    p.set_defaults(handler=_cmd_serve)

    p = verbs.add_parser("chat", help="chat in the terminal with a model or a running server (--url); -q: one answer")
    p.add_argument("model", nargs="?", default=None, help="a .gguf file or an MLX model to serve for the chat")
    p.add_argument("-q", "--question", default=None, help="ask once, print the answer, exit")
    add_arguments(p, ChatConfig)
    p.set_defaults(handler=_cmd_chat)

    from mlxlab.config import AttentionConfig

    p = verbs.add_parser("attention", help="attention maps (heatmap PNGs + arrays) of a prompt and the model's answer")
    p.add_argument("--model", default=None, help="model reference (default: the model setting, 'smollm2')")
    p.add_argument("--prompt", required=True, help="the question or text to look at")
    add_arguments(p, AttentionConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=_cmd_attention)

    from mlxlab.config import EvalConfig

    ev = verbs.add_parser("eval", help="answer prompts k times per model; judge, grade by hand, sweep iterations")
    ev_verbs = ev.add_subparsers(dest="eval_verb", metavar="VERB")
    ev.set_defaults(handler=lambda args: _missing_verb(ev))
    p = ev_verbs.add_parser("run", help="each model answers each prompt k times; judge / ROUGE-L / held-out loss")
    p.add_argument("models", nargs="*", metavar="[LABEL=]REF[@ADAPTERS]",
                   help="model references (a .gguf runs on llama.cpp; REF@ADAPTERS: a checkpoint folder; "
                        "default: the model setting)")
    p.add_argument("--output", default="eval", help="folder for results.jsonl and summary.json")
    add_arguments(p, EvalConfig, skip=("iters",))
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=_cmd_eval_run)
    p = ev_verbs.add_parser("grade", help="grade the answers of an `eval run` by hand, blind, one or several "
                            "graders (terminal or --web page); resumable")
    p.add_argument("--output", default="eval", help="the evaluation folder")
    p.add_argument("--grader", default="default", help="your name: each grader grades every answer, in their "
                   "own blind order; the summary averages over graders")
    p.add_argument("--web", action="store_true", help="serve a grading page for several graders at once instead")
    p.add_argument("--host", default="127.0.0.1", help="address of the grading page (default: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port of the grading page (0: any free one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the blind orders")
    p.set_defaults(handler=_cmd_eval_grade)
    p = ev_verbs.add_parser("sweep", help="train once with checkpoints at --iters, evaluate base + each, plot")
    p.add_argument("--model", default=None, help="base model reference (default: the model setting, 'smollm2')")
    p.add_argument("--data", default="data", help="folder with train.jsonl (+ valid.jsonl, test.jsonl)")
    p.add_argument("--output", default="eval_sweep", help="folder for training, results, PNGs and summary.md "
                   "(training settings: the train section of mlxlab.yaml)")
    add_arguments(p, EvalConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=_cmd_eval_sweep)
    p = ev_verbs.add_parser("report", help="one self-contained report.html of a run, a sweep or an evaluation")
    p.add_argument("path", nargs="?", default=None, metavar="RUN_OR_EVAL_DIR",
                   help="a run folder (runs/NAME), a sweep folder or an evaluation folder (default: the current "
                        "folder when it holds a run's manifest.json, else 'eval')")
    p.set_defaults(handler=_cmd_eval_report)

    from mlxlab.config import RunConfig

    p = verbs.add_parser("run", help="every stage into runs/NAME (validate, generate, train, fuse, export, eval); "
                                     "reruns skip what is done")
    p.add_argument("name", nargs="?", default=None, help="the run's name (default: 'default')")
    p.add_argument("--from", dest="from_stage", default=None, metavar="STAGE",
                   choices=["validate", "generate", "train", "fuse", "export", "eval"],
                   help="redo this stage and every later one")
    add_arguments(p, RunConfig, skip=("name",))
    add_arguments(p, DeviceConfig)
    p.add_argument("--quiet", action="store_true", help="no progress displays (the summary is still printed)")
    p.set_defaults(handler=_cmd_run)
    return parser


def _missing_verb(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


_VERBS = ("init", "info", "taxonomy", "model", "train", "generate", "fuse", "export", "serve", "chat", "attention",
          "eval", "run")


def _verb(argv: list[str]) -> str | None:
    """The command line's verb ('taxonomy validate', 'run', ...), or None for help and bare `mlxlab`."""
    if {"-h", "--help"} & set(argv):
        return None
    at = next((i for i, a in enumerate(argv) if a in _VERBS), None)
    if at is None:
        return None
    sub = argv[at + 1] if at + 1 < len(argv) and argv[at] in ("taxonomy", "model", "eval") else ""
    return f"{argv[at]} {sub}".strip()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlxlab` console script.

    Called without `argv` (the console script, `python -m mlxlab`), the command runs in a supervised child
    process, so that a crash in native code ends with a clear line instead of silence (`mlxlab.crash`)."""
    import os

    from mlxlab import crash

    verb = _verb(sys.argv[1:]) if argv is None and not os.environ.get(crash.ENV_CHILD) else None
    if verb:
        return crash.supervise(sys.argv[1:], verb)
    if os.environ.get(crash.ENV_CHILD):
        crash.start_child()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2

    saved = dict(os.environ)  # _setup_device passes the policy on through the environment; undo that after
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        sys.stderr.write(f"mlxlab: error: {exc}\n")
        return 2
    except MlxlabError as exc:
        sys.stderr.write(f"mlxlab: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("mlxlab: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so plainly, keep the traceback for --debug
        if args.debug:
            raise
        sys.stderr.write(f"mlxlab: internal error: {type(exc).__name__}: {exc}\n"
                         "  this is a bug in mlxlab; rerun with --debug for the traceback and report it\n")
        return 1
    finally:
        if os.environ != saved:
            os.environ.clear()
            os.environ.update(saved)


if __name__ == "__main__":
    sys.exit(main())
