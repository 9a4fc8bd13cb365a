"""The LAB prompt templates (one YAML file per role, package data) and tolerant parsers of their outputs.

Teacher outputs are untrusted text: every parser returns None for what it cannot read and never raises,
so the pipeline can count unparsed outputs instead of crashing on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from mlxlab.errors import MlxlabError

DIR = Path(__file__).parent     # the data folder: every stage's prompt templates and reference sets


@dataclass(frozen=True)
class Prompt:
    """A role's template: system text, user text with {placeholders}, the tags its output uses."""
    role: str
    system: str
    user: str
    output: tuple[str, ...]
    scores: tuple[str, ...] = ()

    def render(self, **values: str) -> list[dict]:
        """Chat messages with `values` filled in (values may contain braces; they are not re-parsed)."""
        try:
            user = self.user.format_map({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise MlxlabError(f"prompt {self.role!r} needs a value for {exc}") from None
        return [{"role": "system", "content": self.system.strip()}, {"role": "user", "content": user.strip()}]


@cache
def load_prompt(role: str, directory: str | None = None) -> Prompt:
    """The template for `role` from `directory` (default: the packaged prompts)."""
    import yaml

    path = Path(directory or DIR) / f"{role}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlxlabError(f"no prompt template for role {role!r}", path=path) from None
    except yaml.YAMLError as exc:
        raise MlxlabError(f"invalid prompt template: {exc}", path=path) from None
    missing = [k for k in ("system", "user", "output") if k not in (data or {})]
    if missing:
        raise MlxlabError(f"prompt template lacks {', '.join(missing)}", path=path)
    return Prompt(role, data["system"], data["user"], tuple(data["output"]),
                  tuple(str(s) for s in data.get("scores", ())))


def _tag_re(kind: str, tag: str) -> str:
    # tolerate "[Start of Question]", "[start of question]", "[ Start Of Question ]", "**[Start of Question]**"
    return r"\[\s*" + kind + r"\s+of\s+" + r"\s+".join(map(re.escape, tag.split())) + r"\s*\]"


def extract(text: str, tag: str, *, fallback: bool = False) -> str | None:
    """The text between `[Start of tag]` and `[End of tag]`; tolerant of case, spacing and a missing end tag.

    With `fallback`, untagged output (the whole text, minus stray tags of other kinds) counts as the value.
    """
    if not isinstance(text, str):
        return None
    start, end = _tag_re("start", tag), _tag_re("end", tag)
    match = re.search(start + r"(.*?)" + end, text, re.IGNORECASE | re.DOTALL)
    if match is None:
        # a missing end tag: take what follows the start tag up to the next tag of any kind
        match = re.search(start + r"(.*?)(?=\[\s*(?:start|end)\s+of\b|\Z)", text, re.IGNORECASE | re.DOTALL)
    if match is None and fallback and not re.search(r"\[\s*(?:start|end)\s+of\b", text, re.IGNORECASE):
        # untagged text counts only when it looks like prose: three words or more, no control characters
        if len(re.findall(r"[^\W\d_]{2,}", text)) < 3 or re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", text):
            return None
        value = text
    elif match is None:
        return None
    else:
        value = match.group(1)
    value = value.strip().strip("*").strip()
    return value or None


def parse_score(text: str, allowed: tuple[str, ...] | list[str], tag: str = "Score") -> str | None:
    """The judge's verdict among `allowed` (e.g. "0"/"1" or "YES"/"NO"), or None when it cannot be read."""
    if not isinstance(text, str) or not allowed:
        return None
    alternatives = "|".join(re.escape(a) for a in sorted(allowed, key=len, reverse=True))
    token = re.compile(r"(?<![\w.])(" + alternatives + r")(?![\w.])", re.IGNORECASE)
    tagged = extract(text, tag)
    if tagged is not None:
        found = token.search(tagged)
        return _canonical(found.group(1), allowed) if found else None
    labelled = re.search(r"(?:score|verdict|rating)\s*(?:is|:|=)?\s*\**\s*(" + alternatives + r")(?![\w.])",
                         text, re.IGNORECASE)
    if labelled:
        return _canonical(labelled.group(1), allowed)
    # otherwise only an unambiguous output: every allowed token found in it is the same one
    found = {_canonical(m.group(1), allowed) for m in token.finditer(text)}
    return found.pop() if len(found) == 1 else None


def _canonical(value: str, allowed) -> str:
    return next(a for a in allowed if a.lower() == value.lower())
