"""The `mlxlab` command: one verb per stage, a thin shell over the Python API.

This module builds the parser and runs a verb's handler (`mlxlab.commands`); heavy modules (mlx, mlx_lm,
llama_cpp) are imported inside the handlers only, so `mlxlab --help` stays fast. An `MlxlabError` is printed as one clear message (exit 1; usage errors exit 2);
anything else is a bug and shows its traceback only with `--debug`.
"""

from __future__ import annotations

import argparse
import sys

from mlxlab import commands
from mlxlab.config import DeviceConfig, TaxonomyConfig, add_arguments
from mlxlab.errors import MlxlabError, UsageError


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
    p.set_defaults(handler=commands.cmd_init)

    p = verbs.add_parser("info", help="machine, MLX backend, BLAS, dtype policy, llama.cpp")
    add_arguments(p, DeviceConfig)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-measure", action="store_true", help="skip the matmul speed measurement")
    p.add_argument("--llama-selftest", action="store_true",
                   help="run llama.cpp's self-test again (its verdict is cached per build and CPU)")
    p.set_defaults(handler=commands.cmd_info)

    tax = verbs.add_parser("taxonomy", help="validate and diff InstructLab taxonomies (qna.yaml)")
    tax_verbs = tax.add_subparsers(dest="taxonomy_verb", metavar="VERB")
    tax.set_defaults(handler=lambda args: _missing_verb(tax))
    p = tax_verbs.add_parser("validate", help="validate every qna.yaml under each root (or single files)")
    p.add_argument("paths", nargs="*", metavar="ROOT_OR_FILE", help="taxonomy roots or qna.yaml files "
                   "(default: the taxonomy setting, 'taxonomy')")
    add_arguments(p, TaxonomyConfig, skip=("taxonomy",))
    p.add_argument("--json", action="store_true", help="print one JSON array with a record per file")
    p.set_defaults(handler=commands.cmd_taxonomy_validate)
    p = tax_verbs.add_parser("diff", help="new and changed leaves against a git ref, validated")
    p.add_argument("paths", nargs="*", metavar="ROOT", help="taxonomy root (default: 'taxonomy')")
    p.add_argument("--base", default=None,
                   help="git ref to compare with ('empty' = every leaf; default: origin/main, else main, else HEAD)")
    add_arguments(p, TaxonomyConfig, skip=("taxonomy",))
    p.add_argument("--json", action="store_true", help="print one JSON array with a record per file")
    p.set_defaults(handler=commands.cmd_taxonomy_diff)

    model = verbs.add_parser("model", help="resolve and import models")
    model_verbs = model.add_subparsers(dest="model_verb", metavar="VERB")
    model.set_defaults(handler=lambda args: _missing_verb(model))
    p = model_verbs.add_parser("import", help="make REF loadable by MLX (GGUF -> MLX 4-bit, HF id -> download)")
    p.add_argument("ref", nargs="?", default=None,
                   help="'smollm2' (embedded default), a .gguf file, a local model folder, or a Hugging Face id")
    p.add_argument("--output", default=None, help="where to write the imported model (GGUF only)")
    p.add_argument("--force", action="store_true", help="import again even if a cached copy exists")
    p.set_defaults(handler=commands.cmd_model_import)

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
    p.set_defaults(handler=commands.cmd_train)

    from mlxlab.config import GenerateConfig

    p = verbs.add_parser("generate", help="synthetic data from a taxonomy with a teacher model (LAB pipelines)")
    add_arguments(p, GenerateConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=commands.cmd_generate)

    from mlxlab.config import ChatConfig, ExportConfig, FuseConfig, ServeConfig

    p = verbs.add_parser("fuse", help="merge LoRA/DoRA adapters into the base model (dequantizing a 4-bit base)")
    p.add_argument("--model", default=None, help="base model reference (default: the model setting, 'smollm2')")
    p.add_argument("--adapters", default="adapters", help="adapter folder (adapter_config.json + adapters.safetensors)")
    p.add_argument("--output", default="fused", help="folder for the fused model")
    add_arguments(p, FuseConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=commands.cmd_fuse)

    p = verbs.add_parser("export", help="write a GGUF (f16, q8_0, q4_k_m, ...) for llama.cpp / Ollama, checked against MLX")
    p.add_argument("model", nargs="?", default=None, help="model folder, .gguf-imported model or reference "
                   "(default: the model setting)")
    p.add_argument("--output", default="gguf", help="a .gguf file, or a folder for <model>-<type>.gguf")
    add_arguments(p, ExportConfig)
    add_arguments(p, DeviceConfig)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=commands.cmd_export)

    p = verbs.add_parser("serve", help="OpenAI-compatible server: llama.cpp for a .gguf, mlx-lm for an MLX model")
    p.add_argument("model", nargs="?", default=None, help="a .gguf file or an MLX model (default: the model setting)")
    add_arguments(p, ServeConfig)
    p.set_defaults(handler=commands.cmd_serve)

    p = verbs.add_parser("chat", help="chat in the terminal with a model or a running server (--url); -q: one answer")
    p.add_argument("model", nargs="?", default=None, help="a .gguf file or an MLX model to serve for the chat")
    p.add_argument("-q", "--question", default=None, help="ask once, print the answer, exit")
    add_arguments(p, ChatConfig)
    p.set_defaults(handler=commands.cmd_chat)

    from mlxlab.config import AttentionConfig

    p = verbs.add_parser("attention", help="attention maps (heatmap PNGs + arrays) of a prompt and the model's answer")
    p.add_argument("--model", default=None, help="model reference (default: the model setting, 'smollm2')")
    p.add_argument("--prompt", required=True, help="the question or text to look at")
    add_arguments(p, AttentionConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=commands.cmd_attention)

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
    p.set_defaults(handler=commands.cmd_eval_run)
    p = ev_verbs.add_parser("grade", help="grade the answers of an `eval run` by hand, blind, one or several "
                            "graders (terminal or --web page); resumable")
    p.add_argument("--output", default="eval", help="the evaluation folder")
    p.add_argument("--grader", default="default", help="your name: each grader grades every answer, in their "
                   "own blind order; the summary averages over graders")
    p.add_argument("--web", action="store_true", help="serve a grading page for several graders at once instead")
    p.add_argument("--host", default="127.0.0.1", help="address of the grading page (default: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port of the grading page (0: any free one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the blind orders")
    p.set_defaults(handler=commands.cmd_eval_grade)
    p = ev_verbs.add_parser("sweep", help="train once with checkpoints at --iters, evaluate base + each, plot")
    p.add_argument("--model", default=None, help="base model reference (default: the model setting, 'smollm2')")
    p.add_argument("--data", default="data", help="folder with train.jsonl (+ valid.jsonl, test.jsonl)")
    p.add_argument("--output", default="eval_sweep", help="folder for training, results, PNGs and summary.md "
                   "(training settings: the train section of mlxlab.yaml)")
    add_arguments(p, EvalConfig)
    add_arguments(p, DeviceConfig)
    p.set_defaults(handler=commands.cmd_eval_sweep)
    p = ev_verbs.add_parser("report", help="one self-contained report.html of a run, a sweep or an evaluation")
    p.add_argument("path", nargs="?", default=None, metavar="RUN_OR_EVAL_DIR",
                   help="a run folder (runs/NAME), a sweep folder or an evaluation folder (default: the current "
                        "folder when it holds a run's manifest.json, else 'eval')")
    p.set_defaults(handler=commands.cmd_eval_report)

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
    p.set_defaults(handler=commands.cmd_run)
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
