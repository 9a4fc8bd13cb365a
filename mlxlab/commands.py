"""The handlers of the `mlxlab` verbs: each turns parsed flags into settings, calls the stage's Python function
and prints what it made. `mlxlab.cli` builds the parser that points at them and runs them; heavy modules (mlx,
mlx_lm, llama_cpp) are imported inside the handlers only, so `mlxlab --help` stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlxlab.config import (DeviceConfig, ModelConfig, TaxonomyConfig, load_config, overrides_from_args,
                           resolve)
from mlxlab.errors import MlxlabError, UsageError


def settings(args: argparse.Namespace, cls: type):
    """`cls` resolved from defaults < config files < the flags given."""
    return resolve(cls, file_config=load_config(args.config), **overrides_from_args(args, cls))


def setup_device(args: argparse.Namespace) -> DeviceConfig:
    """The device settings of the flags, applied to this process."""
    from mlxlab import device

    cfg = settings(args, DeviceConfig)
    device.apply_device_config(cfg)     # for the whole CLI process: a flag reaches every model load
    return cfg


def say(text: str = "") -> None:
    """One line on stdout."""
    sys.stdout.write(text + "\n")


def other_rank() -> bool:
    """True on ranks other than 0 under mlx.launch: they work but leave the printing to rank 0."""
    from mlxlab.distributed import world

    return not world().main


# ---------------------------------------------------------------------------------------------- verbs

def cmd_init(args: argparse.Namespace) -> int:
    from mlxlab.config import init_config, user_config_path

    path = init_config(args.path, force=args.force)
    say(f"wrote {path}")
    if user_config_path().is_file():
        say(f"also reading your user settings from {user_config_path()} (the project file wins)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import dataclasses

    from mlxlab import device

    setup_device(args)
    from mlxlab.distributed import world

    info = device.device_info(measure=not args.no_measure)
    group = world()
    from mlxlab.llamacpp import describe_build, verdict

    llama = verdict(refresh=args.llama_selftest)
    if args.json:
        say(json.dumps({**dataclasses.asdict(info), "llama_cpp_selftest": dataclasses.asdict(llama),
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
    cfg = settings(args, TaxonomyConfig)
    return cfg, list(args.paths) or [cfg.taxonomy]


def _report_taxonomy(reports, args: argparse.Namespace) -> int:
    from mlxlab.taxonomy.taxonomy import format_report

    if args.json:
        say(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        say(format_report(reports))
    return 0 if all(r.valid for r in reports) else 1


def cmd_taxonomy_validate(args: argparse.Namespace) -> int:
    cfg, paths = _taxonomy_roots(args)
    from mlxlab.taxonomy.taxonomy import validate

    reports = validate(paths, strict=cfg.strict, fetch_documents=cfg.fetch_documents)
    return _report_taxonomy(reports, args)


def cmd_taxonomy_diff(args: argparse.Namespace) -> int:
    cfg, paths = _taxonomy_roots(args)
    if len(paths) != 1:
        raise UsageError("taxonomy diff takes one taxonomy root")
    from mlxlab.taxonomy.taxonomy import diff

    reports = diff(paths[0], base=args.base, strict=cfg.strict, fetch_documents=cfg.fetch_documents)
    if not reports and not args.json:
        say("no new or changed leaves")
        return 0
    return _report_taxonomy(reports, args)


def cmd_model_import(args: argparse.Namespace) -> int:
    from mlxlab.models import import_gguf, resolve_model

    ref = args.ref or settings(args, ModelConfig).model
    if str(ref).endswith(".gguf") or args.output or args.force:
        from mlxlab.models import EMBEDDED, embedded_gguf

        source = embedded_gguf() if ref == EMBEDDED else Path(ref)
        if not str(source).endswith(".gguf"):
            raise UsageError(f"--output and --force apply to GGUF imports; {ref!r} is not a .gguf file")
        result = import_gguf(source, args.output, force=args.force)
        state = "already imported" if result.cached else f"imported in {result.seconds:.1f} s"
        say(f"{result.source} -> {result.path}\n  {result.architecture}, {result.parameters / 1e6:.1f}M "
               f"parameters, {result.quantization}; {state}")
        return 0
    path = resolve_model(ref)
    say(f"{ref} -> {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mlxlab.config import TrainConfig

    setup_device(args)
    cfg = settings(args, TrainConfig)
    model = args.model or settings(args, ModelConfig).model
    from mlxlab.train.loop import train
    from mlxlab.train.phases import read_phases

    phases = read_phases(args.phases) if args.phases else None
    result = train(model, args.data, args.output, config=cfg, phases=phases)
    if other_rank():
        return 0
    say(f"adapters: {result.adapters}")
    for it, path in result.checkpoints.items():
        say(f"  checkpoint {it}: {path}")
    val = f", validation loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    say(f"{result.num_iters} iterations ({result.num_epochs:.2f} epochs): loss {result.final_loss:.4f}{val}, "
           f"{result.tokens_per_second:.0f} tokens/s, padding {result.padding_fraction:.1%}, "
           f"peak memory {result.peak_memory_gb:.2f} GB")
    say(f"log: {result.log}" + (f"  plot: {result.loss_plot}" if result.loss_plot else ""))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from mlxlab.config import GenerateConfig

    setup_device(args)
    cfg = settings(args, GenerateConfig)
    from mlxlab.sdg.sdg import generate_data

    from mlxlab.sdg.datasets import stats

    result = generate_data(config=cfg)
    if other_rank():
        return 0
    for leaf, kept in result.kept.items():
        say(f"{leaf}: {kept} samples kept")
    say(f"{result.samples} samples, {result.generated_tokens} tokens ({result.tokens_per_second:.1f} tok/s) "
           f"in {result.seconds:.0f} s")
    for path in (result.train, result.valid, result.test, result.knowledge_phase1):
        if path is not None:
            s = stats(path)
            say(f"{path}: {s['records']} records, {s['tokens']['mean']} {s['unit']} on average "
                   f"(max {s['tokens']['max']})")
    say(f"report: {result.report}")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from mlxlab.config import FuseConfig

    setup_device(args)
    cfg = settings(args, FuseConfig)
    from mlxlab.train.fuse import fuse

    result = fuse(args.model or settings(args, ModelConfig).model, args.adapters, args.output,
                  dequantize=cfg.dequantize, force=cfg.force)
    state = "quantized" if result.quantized else "dequantized" if cfg.dequantize else "float"
    say(f"{result.path}: {result.fused_layers} layers merged ({state}) in {result.seconds:.1f} s")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mlxlab.config import ExportConfig

    setup_device(args)
    cfg = settings(args, ExportConfig)
    from mlxlab.gguf.gguf_export import export_gguf, result_dict

    result = export_gguf(args.model or settings(args, ModelConfig).model, args.output, out_type=cfg.out_type,
                         verify=cfg.verify, force=cfg.force)
    if args.json:
        say(json.dumps(result_dict(result), indent=2))
        return 0
    say(f"{result.path}: {result.architecture}, {result.out_type}, {result.size_bytes / 1e6:.1f} MB "
           f"in {result.seconds:.1f} s")
    if result.top1_agreement is not None:
        say(f"  llama.cpp vs MLX over {result.positions} positions: max abs logit difference "
               f"{result.max_abs_logit_diff:.3g}, top-1 agreement {result.top1_agreement:.1%}")
    say(f"  Ollama: ollama create NAME -f {result.modelfile}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    from mlxlab.config import ServeConfig

    cfg = settings(args, ServeConfig)
    from mlxlab.serve import start_server

    server = start_server(args.model or settings(args, ModelConfig).model, host=cfg.host, port=cfg.port,
                          api_key=cfg.api_key, n_ctx=cfg.n_ctx)

    def ended(signum, _frame):          # SIGTERM / SIGHUP: leave through `finally`, which stops the server
        raise SystemExit(128 + signum)

    import signal

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), ended)
    try:
        say(f"serving on {server.url} (OpenAI-compatible; Ctrl-C stops it)")
        while server.process.poll() is None:
            time.sleep(0.5)
        raise MlxlabError(f"the server stopped with code {server.process.returncode}:\n{server.log_tail()}")
    finally:
        server.stop()


def cmd_chat(args: argparse.Namespace) -> int:
    from mlxlab.config import ChatConfig

    cfg = settings(args, ChatConfig)
    from mlxlab.chat import chat

    model = None if cfg.url else (args.model or settings(args, ModelConfig).model)
    stream = (lambda piece: (sys.stdout.write(piece), sys.stdout.flush())) if args.question is not None else None
    chat(model, url=cfg.url, question=args.question, system=cfg.system, temperature=cfg.temperature,
         max_tokens=cfg.max_tokens, api_key=cfg.api_key, on_token=stream)
    if args.question is not None:
        say()
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from mlxlab.config import AttentionConfig

    setup_device(args)
    cfg = settings(args, AttentionConfig)
    from mlxlab.evaluate.attention import attention_maps

    result = attention_maps(args.model or settings(args, ModelConfig).model, args.prompt,
                            max_tokens=cfg.max_tokens, layers=cfg.layers, heads=cfg.heads, output=Path(cfg.output),
                            chat=cfg.chat, temperature=cfg.temperature, seed=cfg.seed)
    say(f"answer: {result.answer}")
    say(f"{len(result.tokens)} tokens ({result.prompt_length} prompt), layers {list(result.layers)}, "
           f"{result.weights.shape[1]} heads")
    say(f"arrays: {result.arrays}\nheatmaps: {len(result.pngs)} PNG files in {result.arrays.parent} "
           f"(overview.png: every layer)")
    return 0


def cmd_eval_run(args: argparse.Namespace) -> int:
    from mlxlab.config import EvalConfig

    setup_device(args)
    cfg = settings(args, EvalConfig)
    models = {}
    for spec in args.models or [settings(args, ModelConfig).model]:
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
    say(f"results: {result.results}\nsummary: {result.summary_path}")
    return 0


def _cmd_eval_print(summary: dict) -> None:
    say(f"score: {summary['score_note']}")
    for label, m in summary["models"].items():
        score = f"{m['score']['mean']:.2f} ± {m['score']['std']:.2f}" if m["score"] else "-"
        loss = f", held-out loss {m['heldout_loss']:.4f}" if m.get("heldout_loss") is not None else ""
        unparsed = f", {m['judge_unparsed']} judge verdicts unreadable" if m["judge_unparsed"] else ""
        say(f"  {label}: score {score}{loss}{unparsed}")
    if summary.get("graders"):
        found = summary["agreement"]
        alpha = f"{found['alpha']:.3f}" if found["alpha"] is not None else f"undefined ({found['reason']})"
        say(f"graders: {', '.join(summary['graders'])}; Krippendorff's alpha (ordinal): {alpha}")


def cmd_eval_grade(args: argparse.Namespace) -> int:
    if args.web:
        from mlxlab.evaluate.grading_page import GradingPage

        page = GradingPage(args.output, host=args.host, port=args.port, seed=args.seed)
        say(f"grading page: {page.url} (each grader types their name; Ctrl-C stops it, grades are kept)")
        page.serve()
        say(f"grades: {page.board.grades_path}\nsummary: {Path(args.output) / 'summary.json'}")
        return 0
    from mlxlab.evaluate.evaluation import grade

    result = grade(args.output, grader=args.grader, seed=args.seed)
    _cmd_eval_print(result.summary)
    return 0


def cmd_eval_sweep(args: argparse.Namespace) -> int:
    from mlxlab.config import EvalConfig, TrainConfig

    setup_device(args)
    cfg = settings(args, EvalConfig)
    # training settings come from the `train:` section only: eval's flags (batch_size, ...) are not train's
    train_cfg = resolve(TrainConfig, file_config=load_config(args.config))
    from mlxlab.evaluate.evaluation import sweep

    result = sweep(args.model or settings(args, ModelConfig).model, args.data, args.output, config=cfg,
                   train_config=train_cfg)
    _cmd_eval_print(result.eval.summary)
    for name, path in result.plots.items():
        say(f"{name}: {path}")
    say(f"table: {result.table}")
    if result.report is not None:
        say(f"report: {result.report}")
    return 0


def cmd_eval_report(args: argparse.Namespace) -> int:
    from mlxlab.evaluate.report import write_report

    # default: the run folder we stand in, else its evaluation folder
    folder = args.path or ("." if Path("manifest.json").is_file() else "eval")
    say(str(write_report(folder)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mlxlab.config import RunConfig

    setup_device(args)
    from mlxlab.pipeline import run
    from mlxlab.run_result import print_summary

    result = run(from_stage=args.from_stage, config_file=args.config, quiet=args.quiet,
                 **overrides_from_args(args, RunConfig))
    if args.quiet and not other_rank():    # the run prints its summary itself unless quiet; a log still wants it
        print_summary(result)
    return 0
