"""Evaluation prompt sets: YAML files of prompts (with optional references and rubrics) plus SDG's held-out split.

Reading is strict: an unknown key, an empty text or a duplicate id is an MlxlabError at file:line:column.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.prompts import DIR as PROMPTS_DIR

DEFAULT_SET = PROMPTS_DIR / "eval_jolie.yaml"


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt: its chat messages, an optional reference answer and rubric, and where it was read."""
    id: str
    messages: list[dict]
    reference: str | None = None
    rubric: str | None = None
    source: str = ""


@dataclass(frozen=True)
class PromptSet:
    """Prompts to answer, the default rubric, and held-out chat records for the loss."""
    name: str
    prompts: list[EvalPrompt]
    rubric: str
    heldout: list[dict]
    heldout_path: Path | None = None



def _mark_error(message: str, path: Path, node, hint: str | None = None) -> MlxlabError:
    mark = node.start_mark
    return MlxlabError(message, path=path, line=mark.line + 1, column=mark.column + 1, hint=hint)


def _mapping(node, path: Path, what: str, keys: tuple[str, ...]) -> dict:
    """{key: value node} of a YAML mapping node whose keys must be among `keys`."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise _mark_error(f"{what} must be a mapping", path, node)
    fields = {key.value: value for key, value in node.value}
    for key, value in fields.items():
        if key not in keys:
            raise _mark_error(f"unknown key '{key}' in {what}", path, value, hint="valid keys: " + ", ".join(keys))
    return fields


def _text(node, path: Path, what: str) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
        raise _mark_error(f"{what} must be non-empty text", path, node)
    return str(node.value)


def read_prompt_set(path: str | Path | None = None) -> PromptSet:
    """The prompt set in a YAML file (default: the paper's Jolie prompts); errors name file:line:column."""
    import yaml

    from mlxlab.config import compose_yaml

    path = Path(path) if path is not None else DEFAULT_SET
    _, root = compose_yaml(path, "the prompt set")
    if root is None:
        raise MlxlabError("the prompt set is empty", path=path, hint="add a `prompts:` list")
    top = _mapping(root, path, "the prompt set", ("version", "name", "description", "system", "rubric", "prompts"))
    if "prompts" not in top:
        raise _mark_error("the prompt set has no `prompts:` list", path, root)
    items = top["prompts"]
    if not isinstance(items, yaml.SequenceNode) or not items.value:
        raise _mark_error("prompts must be a non-empty list", path, items)
    rubric = _text(top["rubric"], path, "rubric") if "rubric" in top else "0 (wrong or empty) to 5 (correct, complete)"
    system = _text(top["system"], path, "system") if "system" in top else None
    prompts, seen = [], set()
    for n, item in enumerate(items.value):
        fields = _mapping(item, path, f"prompts[{n}]", ("id", "prompt", "reference", "rubric", "domain"))
        if "prompt" not in fields:
            raise _mark_error(f"prompts[{n}] has no `prompt:`", path, item)
        pid = _text(fields["id"], path, f"prompts[{n}].id") if "id" in fields else f"prompt_{n + 1}"
        if pid in seen:
            raise _mark_error(f"duplicate prompt id '{pid}'", path, fields.get("id", item))
        seen.add(pid)
        messages = ([{"role": "system", "content": system.strip()}] if system else []) + [
            {"role": "user", "content": _text(fields["prompt"], path, f"prompts[{n}].prompt").strip()}]
        prompts.append(EvalPrompt(
            pid, messages,
            _text(fields["reference"], path, f"prompts[{n}].reference").strip() if "reference" in fields else None,
            _text(fields["rubric"], path, f"prompts[{n}].rubric").strip() if "rubric" in fields else None,
            f"{path}:{item.start_mark.line + 1}"))
    name = str(top["name"].value) if "name" in top else path.stem
    return PromptSet(name, prompts, rubric.strip(), [])


def load_prompts(prompts: str | Path | PromptSet | None = None, test: str | Path | None = None, *,
                 test_prompts: int = 0) -> PromptSet:
    """A prompt set plus the held-out `test` split (chat JSONL): all of it for the loss, `test_prompts` answered."""
    from mlxlab.train.data import read_jsonl

    base = prompts if isinstance(prompts, PromptSet) else read_prompt_set(prompts)
    if test is None:
        return base
    test = Path(test)
    records = read_jsonl(test)
    extra = []
    count = len(records) if test_prompts < 0 else min(test_prompts, len(records))
    for n, record in enumerate(records[:count], start=1):
        messages = record["messages"]
        if messages[-1]["role"] == "assistant" and len(messages) > 1:
            extra.append(EvalPrompt(f"test_{n}", messages[:-1], messages[-1]["content"], None, f"{test}:{n}"))
    return dataclasses.replace(base, prompts=base.prompts + extra, heldout=records, heldout_path=test)
