"""Settings: one dataclass per stage; one name per setting in Python, YAML and on the command line.

`num_iters` is the keyword `train(..., num_iters=500)`, the key `num_iters:` under `train:` in
`mlxlab.yaml`, and the flag `--num-iters`. Precedence: dataclass defaults < the user's
`~/.config/mlxlab/config.yaml` < the project's `mlxlab.yaml` < flags / keyword arguments.
Unknown keys and wrong types are errors with file:line and the nearest valid key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxlab.errors import MlxlabError

PROJECT_FILE = "mlxlab.yaml"


@dataclass
class DeviceConfig:
    """Where and in which precision MLX computes."""
    device: str = field(default="auto", metadata={"help": "auto | gpu | cpu (auto: Metal or CUDA when present)"})
    dtype: str = field(default="auto", metadata={
        "help": "auto | float32 | float16 | bfloat16 (auto: float32 on CPU, float16 on GPU)"})
    dequantize_on_load: str = field(default="auto", metadata={
        "help": "auto | always | never: expand 4-bit models to floats (auto: on the CPU when the float copy "
                "is small, since MLX's CPU quantized kernels are ~10x slower)"})


@dataclass
class ModelConfig:
    """Which model the stages use unless told otherwise."""
    model: str = field(default="smollm2", metadata={
        "help": "Hugging Face id, local directory, .gguf file, or 'smollm2' (the embedded default)"})


@dataclass
class TaxonomyConfig:
    """Where the taxonomy is and how strictly it is checked."""
    taxonomy: str = field(default="taxonomy", metadata={"help": "taxonomy root folder"})
    strict: bool = field(default=False, metadata={"help": "treat cosmetic YAML warnings as errors (as ilab does)"})
    fetch_documents: bool = field(default=True, metadata={
        "help": "resolve knowledge documents (clone repos, check patterns)"})


@dataclass
class TrainConfig:
    """How adapters are trained (LoRA / DoRA / QLoRA / full) on chat JSONL data."""
    method: str = field(default="lora", metadata={"help": "lora | dora | full (QLoRA = lora on a quantized base)"})
    lora_rank: int = field(default=8, metadata={"help": "rank of the LoRA matrices"})
    lora_scale: float = field(default=20.0, metadata={"help": "LoRA scale (mlx-lm's 'scale'; alpha / rank elsewhere)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    num_layers: int = field(default=16, metadata={"help": "adapt the last N transformer blocks (-1: all)"})
    lora_keys: list[str] = field(default_factory=list, metadata={
        "help": "target modules inside a block, e.g. self_attn.q_proj,self_attn.v_proj (empty: every linear)"})
    optimizer: str = field(default="adam", metadata={"help": "adam | adamw"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup from 0 over this many iterations"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine (decay to 0 at the end) | constant"})
    batch_size: int = field(default=4, metadata={"help": "samples per micro-batch"})
    grad_accumulation: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_seq_length: int = field(default=2048, metadata={"help": "longer samples are cut to this many tokens"})
    num_iters: int | None = field(default=None, metadata={
        "help": "optimizer steps (or give num_epochs; neither: 100)"})
    num_epochs: float | None = field(default=None, metadata={"help": "passes over the training data"})
    save_at: list[int] = field(default_factory=list, metadata={"help": "iterations to checkpoint at, e.g. 100,250,500"})
    save_every: int = field(default=100, metadata={"help": "also checkpoint every N iterations (0: off)"})
    steps_per_eval: int = field(default=50, metadata={"help": "validation loss every N iterations (0: only at the end)"})
    val_batches: int = field(default=25, metadata={"help": "validation batches per evaluation (-1: all)"})
    mask_prompt: bool = field(default=True, metadata={
        "help": "train on the assistant's last reply only (a record's metadata.mask_prompt overrides it)"})
    general_valid: str | None = field(default=None, metadata={
        "help": "chat JSONL of general-ability data (e.g. the base model's own answers to generic prompts): "
                "its loss is watched so that training forgets nothing"})
    forgetting_tolerance: float = field(default=0.05, metadata={
        "help": "a checkpoint whose general_valid loss is more than this share above the base model's cannot "
                "be the best one"})
    keep_best: bool = field(default=False, metadata={
        "help": "end with the best evaluated checkpoint (lowest validation loss within the forgetting "
                "tolerance) instead of the last"})
    patience: int = field(default=0, metadata={
        "help": "stop after this many evaluations without a better checkpoint (0: never stop early)"})
    grad_checkpoint: bool = field(default=False, metadata={"help": "recompute activations to save memory"})
    quantize: int | None = field(default=None, metadata={"help": "quantize the base to 4 or 8 bits on load (QLoRA)"})
    seed: int = field(default=0, metadata={"help": "seed for adapter init, data order and dropout"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in the output"})


@dataclass
class GenerateConfig:
    """Synthetic data generation (LAB skills and knowledge pipelines) with a teacher model."""
    taxonomy: str = field(default="taxonomy", metadata={"help": "taxonomy root folder"})
    teacher: str = field(default="smollm2", metadata={
        "help": "teacher model: HF id, local dir, .gguf, 'smollm2'; with --teacher-url the server's model name"})
    teacher_url: list[str] | None = field(default=None, metadata={
        "help": "OpenAI-compatible server(s), comma-separated (e.g. http://a:8080,http://b:8080); uses the openai "
                "backend; a server still failing after its retries is dropped and the others take its requests"})
    teacher_backend: str = field(default="auto", metadata={
        "help": "auto (llama-cpp on a CPU, mlx on Metal/CUDA, openai with a URL) | mlx | openai | llama-cpp"})
    output: str = field(default="data", metadata={"help": "output folder for datasets, report and journals"})
    samples_per_seed: int = field(default=2, metadata={
        "help": "generation attempts per seed example and leaf (back-translated knowledge: questions per passage)"})
    seed: int = field(default=0, metadata={"help": "random seed (same seed, same data, also after a resume)"})
    quiet: bool = field(default=False, metadata={"help": "plain log lines instead of the progress display"})
    allow_empty: bool = field(default=False, metadata={"help": "let a leaf end with no samples (else an error)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of generation roles"})
    judge_temperature: float = field(default=0.0, metadata={"help": "sampling temperature of judge roles"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold"})
    max_tokens: int = field(default=192, metadata={"help": "most new tokens per generation"})
    judge_max_tokens: int = field(default=64, metadata={"help": "most new tokens per judgement"})
    prompt_style: str = field(default="auto", metadata={
        "help": "fewshot (seed pairs as a Q:/A: pattern the teacher continues) | lab (InstructLab's role "
                "prompts) | auto (fewshot for small teachers, lab for capable ones)"})
    scorer: str = field(default="auto", metadata={
        "help": "likelihood (log p(answer | question) - log p(answer) per token; mlx teacher) | judge (the LAB "
                "judge roles) | none | auto (likelihood for small teachers, judge for capable ones)"})
    keep_fraction: float = field(default=0.6, metadata={
        "help": "likelihood scorer: keep this best share of each leaf's samples (those scoring above 0)"})
    document_qa: bool = field(default=False, metadata={
        "help": "knowledge: also train on each document section as a question (from its heading) answered by the "
                "section's text"})
    gates: bool = field(default=True, metadata={
        "help": "drop samples with template leakage, repetition, truncation, echoes, odd lengths, seed copies "
                "or off-task text before any judge"})
    judge_mode: str = field(default="auto", metadata={
        "help": "choose (the likeliest verdict, one forward pass; mlx only) | generate (parse a written "
                "verdict) | auto (choose where possible)"})
    batch_size: int = field(default=0, metadata={"help": "sequences decoded together (0: from free memory)"})
    concurrency: int = field(default=4, metadata={"help": "requests in flight per teacher server (openai backend)"})
    prefix_cache: bool = field(default=True, metadata={"help": "prefill the prompts' shared prefix once (mlx)"})
    question_threshold: int = field(default=1, metadata={"help": "keep questions judged at least this (0-1)"})
    pair_threshold: int = field(default=2, metadata={"help": "keep question-answer pairs rated at least this (1-3)"})
    require_faithful: bool = field(default=True, metadata={"help": "knowledge: keep only answers judged faithful"})
    relevancy_threshold: int = field(default=2, metadata={"help": "knowledge: keep answers rated at least this (0-2)"})
    question_quality_threshold: int = field(default=1, metadata={
        "help": "knowledge: keep questions rated at least this (0-1)"})
    tag_fallback: bool = field(default=True, metadata={
        "help": "accept an untagged output as the value when it has no tags at all"})
    rouge_threshold: float = field(default=0.7, metadata={
        "help": "drop a question this ROUGE-L-similar to a kept or seed one (1: exact duplicates only)"})
    chunk_tokens: int = field(default=500, metadata={"help": "knowledge document chunk size in teacher tokens"})
    chunk_overlap: int = field(default=50, metadata={"help": "tokens of overlap between chunks"})
    max_per_leaf: int = field(default=0, metadata={"help": "cap on samples kept per leaf (0: no cap)"})
    heldout_fraction: float = field(default=0.2, metadata={
        "help": "share of each leaf's seed Q&A held out as test.jsonl (never shown to the teacher or student)"})
    valid_fraction: float = field(default=0.2, metadata={
        "help": "share of the other seed Q&A put in valid.jsonl (hidden from the teacher; checkpoints are chosen "
                "by it)"})
    distractors: int = field(default=2, metadata={"help": "knowledge phase-2: unrelated chunks mixed into the context"})
    replay: str | None = field(default=None, metadata={"help": "messages JSONL mixed into train.jsonl (replay)"})
    replay_ratio: float = field(default=0.0, metadata={"help": "replay samples per generated sample (e.g. 0.5)"})


@dataclass(frozen=True)
class Setting:
    """A value read from a config file, with where it came from."""
    value: Any
    path: Path
    line: int
    column: int


FileConfig = dict[str, dict[str, Setting]]


def user_config_path() -> Path:
    """`$XDG_CONFIG_HOME/mlxlab/config.yaml` (default `~/.config/mlxlab/config.yaml`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mlxlab" / "config.yaml"


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def compose_yaml(path: str | Path, what: str, hint: str | None = None):
    """(text, root node) of a small YAML file; a missing, unreadable or invalid file is an MlxlabError with
    file:line:column. Node marks let callers point at the offending key or value."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MlxlabError(f"{what} not found", path=path, hint=hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MlxlabError(f"cannot read {what}: {exc}", path=path) from None
    try:
        return text, yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise MlxlabError(f"invalid YAML: {problem}", path=path,
                          line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None) from None


def read_config_file(path: str | Path) -> FileConfig:
    """Parse one config file into {section: {key: Setting}}; unknown sections/keys are errors with file:line."""
    import yaml

    path = Path(path)
    text, root = compose_yaml(path, "config file", hint="run `mlxlab init` to write one")
    result: FileConfig = {}
    if root is None:
        return result
    if not isinstance(root, yaml.MappingNode):
        raise MlxlabError("a config file must be a mapping of sections (device:, model:, taxonomy:, ...)",
                          path=path, line=root.start_mark.line + 1, column=root.start_mark.column + 1)
    for key_node, value_node in root.value:
        section = key_node.value
        where = dict(path=path, line=key_node.start_mark.line + 1, column=key_node.start_mark.column + 1)
        if section not in SECTIONS:
            raise MlxlabError(f"unknown section '{section}'{_suggest(section, SECTIONS)}", **where,
                              hint="valid sections: " + ", ".join(SECTIONS))
        if section in result:
            raise MlxlabError(f"section '{section}' appears twice", **where)
        cls = SECTIONS[section]
        names = [f.name for f in dataclasses.fields(cls)]
        settings: dict[str, Setting] = {}
        if isinstance(value_node, yaml.ScalarNode) and value_node.value in ("", "~", "null"):
            result[section] = settings
            continue
        if not isinstance(value_node, yaml.MappingNode):
            raise MlxlabError(f"section '{section}' must be a mapping of settings", path=path,
                              line=value_node.start_mark.line + 1, column=value_node.start_mark.column + 1)
        for k_node, v_node in value_node.value:
            key = k_node.value
            kwhere = dict(path=path, line=k_node.start_mark.line + 1, column=k_node.start_mark.column + 1)
            if key not in names:
                raise MlxlabError(f"unknown key '{key}' in {section}{_suggest(key, names)}", **kwhere)
            if key in settings:
                raise MlxlabError(f"key '{key}' appears twice in {section}", **kwhere)
            value = yaml.SafeLoader(text).construct_object(v_node, deep=True)
            settings[key] = Setting(value, path, v_node.start_mark.line + 1, v_node.start_mark.column + 1)
        result[section] = settings
    return result


def load_config(path: str | Path | None = None, *, user: bool = True) -> FileConfig:
    """The user's config merged under the project's (`path`, default `./mlxlab.yaml` when present)."""
    merged: FileConfig = {}
    files = []
    if user and user_config_path().is_file():
        files.append(user_config_path())
    if path is not None:
        files.append(Path(path))
    elif Path(PROJECT_FILE).is_file():
        files.append(Path(PROJECT_FILE))
    for file in files:
        for section, settings in read_config_file(file).items():
            merged.setdefault(section, {}).update(settings)
    return merged


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def coerce(value: Any, tp, name: str) -> Any:
    """Check/convert `value` to the annotated type `tp`; raise ValueError with what was expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, name)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else
                         f"{name} expects {' or '.join(_type_name(a) for a in args if a is not type(None))}, "
                         f"found {value!r}")
    if origin is list:
        (item_tp,) = args or (Any,)
        if isinstance(value, str):  # "100,250,500" from a flag or a YAML scalar
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} expects a list, found {value!r}")
        return [coerce(v, item_tp, name) for v in value]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
            return value.lower() in {"true", "yes", "on", "1"}
        raise ValueError(f"{name} expects true or false, found {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{name} expects an integer, found {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ValueError(f"{name} expects an integer, found {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{name} expects a number, found {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{name} expects a number, found {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{name} expects a string, found {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ValueError(f"{name} expects a path, found {value!r}")
    return value


def resolve(cls: type, section: str | None = None, file_config: FileConfig | None = None, **overrides):
    """Build `cls` from defaults < `file_config[section]` < `overrides` (None means 'not given')."""
    section = section or next((s for s, c in SECTIONS.items() if c is cls), None)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, setting in ((file_config or {}).get(section, {}) if section else {}).items():
        try:
            values[key] = coerce(setting.value, hints[key], key)
        except ValueError as exc:
            raise MlxlabError(str(exc), path=setting.path, line=setting.line, column=setting.column) from None
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in names:
            raise MlxlabError(f"unknown setting '{key}' for {section or cls.__name__}{_suggest(key, names)}")
        try:
            values[key] = coerce(value, hints[key], key)
        except ValueError as exc:
            raise MlxlabError(str(exc), hint=f"check --{key.replace('_', '-')}") from None
    return cls(**values)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one `--flag-name` per field of `cls` (help from the field's metadata; default None = not given)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        shown = str(default).lower() if isinstance(default, bool) else (
            ",".join(map(str, default)) or "none" if isinstance(default, list) else default)
        if "default" not in help_text and default is not None:  # some helps explain their default already
            help_text = f"{help_text} (default: {shown})"
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags of `cls` that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def to_dict(*configs) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} for saving resolved configs next to a stage's output."""
    out: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        section = next((s for s, c in SECTIONS.items() if c is type(cfg)), type(cfg).__name__)
        out[section] = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    return out


def save_resolved(path: str | Path, *configs) -> Path:
    """Write the resolved settings as YAML (atomically) so a run can be reproduced."""
    import yaml

    from mlxlab.files import atomic_write

    return atomic_write(Path(path), yaml.safe_dump(to_dict(*configs), sort_keys=False))


def render_default_config() -> str:
    """A commented `mlxlab.yaml` listing every setting with its default and help."""
    import yaml

    lines = ["# mlxlab project settings. Every key is also a CLI flag (--num-iters) and a keyword",
             "# argument (num_iters=...). Precedence: defaults < ~/.config/mlxlab/config.yaml < this file < flags.",
             "# Uncomment and edit what you want to change.", ""]
    for section, cls in SECTIONS.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        lines.append(f"{section}:  # {doc[0]}" if doc else f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rendered = yaml.safe_dump({f.name: default}, default_flow_style=True, width=1000).strip()[1:-1]
            lines.append(f"  # {rendered:<40} # {f.metadata.get('help', '')}".rstrip())
        lines.append("")
    return "\n".join(lines)


def init_config(path: str | Path = PROJECT_FILE, *, force: bool = False) -> Path:
    """Write a commented default `mlxlab.yaml`; never overwrite an existing one unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise MlxlabError(f"{path} already exists; not overwriting it", path=path,
                          hint="edit it, or pass --force to replace it with the defaults")
    from mlxlab.files import atomic_write

    return atomic_write(path, render_default_config())


@dataclass
class FuseConfig:
    """Merging adapters into their base model."""
    dequantize: bool = field(default=True, metadata={
        "help": "save a quantized base dequantized (16-bit); --no-dequantize re-quantizes the merged layers"})
    force: bool = field(default=False, metadata={"help": "replace an existing output directory"})


@dataclass
class ExportConfig:
    """GGUF export for llama.cpp, Ollama and LM Studio, checked against MLX."""
    out_type: str = field(default="f16", metadata={
        "help": "f32 | f16 | bf16 | q8_0 (written directly) | q4_k_m | q5_k_m | q6_k | q4_0 | ... (llama.cpp)"})
    verify: bool = field(default=True, metadata={"help": "compare llama.cpp's logits with MLX's after writing"})
    force: bool = field(default=False, metadata={"help": "replace an existing GGUF file"})


@dataclass
class ServeConfig:
    """The OpenAI-compatible server (llama.cpp for a GGUF, mlx-lm otherwise)."""
    host: str = field(default="127.0.0.1", metadata={"help": "listen address (0.0.0.0 exposes it to the network)"})
    port: int = field(default=8000, metadata={"help": "listen port (0: any free port)"})
    api_key: str | None = field(default=None, metadata={"help": "require this key (Authorization: Bearer KEY)"})
    n_ctx: int | None = field(default=None, metadata={
        "help": "context length of the llama.cpp server (GGUF models only; default 2048)"})


@dataclass
class ChatConfig:
    """Terminal chat with a model or a running server."""
    url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (default: serve the model)"})
    api_key: str | None = field(default=None, metadata={"help": "the server's API key"})
    system: str | None = field(default=None, metadata={"help": "system prompt"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    max_tokens: int = field(default=512, metadata={"help": "most new tokens per answer"})


@dataclass
class AttentionConfig:
    """Attention maps of a prompt and the model's answer (also on 4-bit models)."""
    max_tokens: int = field(default=32, metadata={
        "help": "most answer tokens generated before the maps (0: the prompt only)"})
    layers: str = field(default="auto", metadata={
        "help": "layers to capture: auto (first, middle, last) | all | 0,15,29 (negative counts from the end)"})
    heads: str = field(default="all", metadata={
        "help": "heads kept: all | 0,3 (listed heads also get their own PNG besides the mean)"})
    output: str = field(default="attention", metadata={"help": "folder for attention.npz and the heatmap PNGs"})
    chat: bool = field(default=True, metadata={"help": "wrap the prompt in the model's chat template"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature of the answer (0: greedy)"})
    seed: int = field(default=0, metadata={"help": "random seed for sampling"})


@dataclass
class EvalConfig:
    """Evaluation: k answers per prompt and model, graded by a judge, by hand, or by automatic metrics."""
    prompts: str | None = field(default=None, metadata={
        "help": "prompt set YAML (default: the seed paper's five Jolie prompts)"})
    test: str | None = field(default=None, metadata={
        "help": "held-out chat JSONL (SDG's test.jsonl) for the loss (default in a sweep: DATA/test.jsonl)"})
    test_prompts: int = field(default=0, metadata={
        "help": "also answer the first N prompts of the test split, ROUGE-L against its answers (-1: all)"})
    k: int = field(default=3, metadata={"help": "answers per prompt and model"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "one sampling seed per answer (fixed: a rerun gives the same answers)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the answers"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold of the answers"})
    max_tokens: int = field(default=256, metadata={"help": "most new tokens per answer"})
    max_seq_length: int = field(default=2048, metadata={"help": "held-out samples are cut to this many tokens"})
    batch_size: int = field(default=0, metadata={"help": "answers decoded together (0: from free memory)"})
    concurrency: int = field(default=4, metadata={"help": "requests in flight to a server (URL models, judge)"})
    judge: str | None = field(default=None, metadata={
        "help": "judge model (reference, or with --judge-url the server's model name); none: automatic score"})
    judge_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server of the judge"})
    judge_backend: str = field(default="mlx", metadata={"help": "mlx | llama-cpp (for a .gguf judge)"})
    judge_temperature: float = field(default=0.0, metadata={"help": "sampling temperature of the judge"})
    judge_max_tokens: int = field(default=128, metadata={"help": "most new tokens per judgement"})
    iters: list[int] = field(default_factory=lambda: [100, 250, 500, 1000], metadata={
        "help": "sweep: iterations to checkpoint and evaluate at, e.g. 100,250,500,1000"})


@dataclass
class RunConfig:
    """`mlxlab run`: every stage into runs/<name>/; the sizing below finishes in ~19 min on a 2-core CPU."""
    name: str = field(default="default", metadata={"help": "the run's folder under runs_dir"})
    runs_dir: str = field(default="runs", metadata={"help": "folder that holds the runs"})
    taxonomy: str | None = field(default=None, metadata={"help": "taxonomy root (none: the taxonomy setting)"})
    model: str | None = field(default=None, metadata={"help": "student model (none: the model setting, 'smollm2')"})
    teacher: str | None = field(default=None, metadata={
        "help": "SDG teacher (none: generate's teacher setting, 'smollm2')"})
    stages: list[str] = field(default_factory=lambda: ["validate", "generate", "train", "fuse", "export", "eval"],
                              metadata={"help": "stages to run, in order (others are left as they are)"})
    # The sizing: each value is the stage setting of the same name inside a run, unless the config file's
    # stage section sets it. Tuned to the embedded SmolLM2 on a 2-core CPU.
    samples_per_seed: int = field(default=1, metadata={
        "help": "generate: attempts per seed example and leaf (back-translated knowledge: questions per passage)"})
    max_tokens: int = field(default=96, metadata={"help": "generate: most new tokens per generation"})
    replay: bool = field(default=False, metadata={
        "help": "generate: the student's own answers to generic prompts, mixed into training (replay); off by "
                "default: with SmolLM2 it did not lower the loss on general chat, the human-written seeds did"})
    replay_ratio: float = field(default=0.3, metadata={"help": "generate: replay samples per training sample"})
    phases: bool = field(default=True, metadata={
        "help": "train: phase 1 (knowledge documents and Q&A) before phase 2 (the skills mix; left out when it "
                "holds nothing phase 1 did not train on)"})
    num_epochs: float | None = field(default=1.2, metadata={"help": "train: passes over each phase's data"})
    num_iters: int | None = field(default=None, metadata={"help": "train: optimizer steps per phase (instead of "
                                                                  "num_epochs)"})
    batch_size: int = field(default=2, metadata={"help": "train: samples per batch"})
    num_layers: int = field(default=16, metadata={"help": "train: adapt the last N transformer blocks"})
    save_every: int = field(default=20, metadata={"help": "train: checkpoint every N steps (a killed run resumes)"})
    steps_per_eval: int = field(default=20, metadata={
        "help": "train: validation (in-domain and general) every N steps and at the end; the best checkpoint is "
                "kept (each costs about as much as 3 training steps on a CPU)"})
    patience: int = field(default=3, metadata={"help": "train: stop a phase after N evaluations without a better "
                                                       "checkpoint"})
    k: int = field(default=1, metadata={"help": "eval: answers per prompt and model"})
    answer_tokens: int = field(default=64, metadata={"help": "eval: most new tokens per answer (eval's max_tokens)"})
    out_type: str = field(default="q8_0", metadata={"help": "export: GGUF type (f16, q8_0, q4_k_m, ...)"})


# YAML section name -> its dataclass: the one table (also the order of `mlxlab config init`'s sections)
SECTIONS: dict[str, type] = {
    "device": DeviceConfig, "model": ModelConfig, "taxonomy": TaxonomyConfig, "train": TrainConfig,
    "generate": GenerateConfig, "fuse": FuseConfig, "export": ExportConfig, "serve": ServeConfig, "chat": ChatConfig,
    "attention": AttentionConfig, "eval": EvalConfig, "run": RunConfig,
}
