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


# YAML section name -> its dataclass. Later stages add theirs here.
SECTIONS: dict[str, type] = {
    "device": DeviceConfig,
    "model": ModelConfig,
    "taxonomy": TaxonomyConfig,
}


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


def read_config_file(path: str | Path) -> FileConfig:
    """Parse one config file into {section: {key: Setting}}; unknown sections/keys are errors with file:line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MlxlabError("config file not found", path=path, hint="run `mlxlab init` to write one") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MlxlabError(f"cannot read config file: {exc}", path=path) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise MlxlabError(f"invalid YAML: {problem}", path=path,
                          line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None) from None
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
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {str(default).lower()})")
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                                help=f"{help_text} (default: {default})")


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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(*configs), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_default_config(), encoding="utf-8")
    os.replace(tmp, path)
    return path
