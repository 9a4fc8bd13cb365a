"""YAML for qna.yaml files: parse once with every value's line and column, and the cosmetic lint.

Split from taxonomy.py: this part knows YAML (libyaml/PyYAML differences, alias bombs, deep
nesting, yamllint-style cosmetics), taxonomy.py knows InstructLab's schema.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import CollectionEndEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DEPTH = 100
MAX_ALIAS_NODES = 10_000  # nodes reached again through aliases: stops "billion laughs"
LINT_CAP = 20  # findings of one cosmetic kind per file before they are summed up
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR, _MAP, _SEQ = (f"tag:yaml.org,2002:{t}" for t in ("str", "map", "seq"))


# --- parse once, keep where every value and key came from ------------------------------------

def line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def yaml_error(exc: Exception, text: str) -> tuple[int, int, str, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line, col = mark.line + 1, mark.column + 1
    elif isinstance(exc, yaml.reader.ReaderError):
        line, col = line_col(text, exc.position)
    else:
        line, col = 1, 1
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    message = f"invalid YAML: {problem}"
    if context and context_mark is not None and context_mark is not mark:
        message += f" ({context} at line {context_mark.line + 1})"
    if "\\t" in problem or "tab" in problem:
        message += "; YAML does not allow tabs for indentation, use spaces"
    return line, col, "error", message


def parse(text: str) -> tuple[Node | None, tuple | None]:
    """Compose `text` into one YAML node tree, or return the syntax error as a problem tuple."""
    # libyaml is ~30x faster than PyYAML, but InstructLab runs PyYAML and the two disagree on tabs;
    # text with tabs, or that libyaml rejects, gets PyYAML's verdict and message.
    fast = "\t" not in text and _FAST_LOADER is not yaml.SafeLoader
    error = None
    for loader in ((_FAST_LOADER, yaml.SafeLoader) if fast else (yaml.SafeLoader,)):
        try:
            depth = 0  # libyaml's composer recurses in C and crashes on deep nesting: measure first
            for event in yaml.parse(text, Loader=loader):
                if isinstance(event, CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH:
                        mark = event.start_mark
                        return None, (mark.line + 1, mark.column + 1, "error",
                                      f"YAML nested more than {MAX_DEPTH} levels deep; a qna.yaml needs about 5")
                elif isinstance(event, CollectionEndEvent):
                    depth -= 1
            return yaml.compose(text, Loader=loader), None
        except yaml.YAMLError as exc:
            error = yaml_error(exc, text)
    return None, error


class Builder:
    """Turn a node tree into plain data as yaml.safe_load would, remembering each value's position."""

    def __init__(self) -> None:
        self.marks: dict[tuple, tuple[int, int]] = {}     # path -> (line, col) of the value
        self.keymarks: dict[tuple, tuple[int, int]] = {}  # path -> (line, col) of its key
        self.duplicates: list[tuple[int, int, Any, int]] = []  # line, col, key, first line
        self.seen: set[int] = set()
        self.revisits = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node: Node, path: tuple) -> Any:
        if id(node) in self.seen:
            self.revisits += 1
            if self.revisits > MAX_ALIAS_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes; refusing to expand "
                    "them", node.start_mark)
        self.seen.add(id(node))
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, SequenceNode) and node.tag == _SEQ:
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        if isinstance(node, MappingNode) and node.tag == _MAP:
            return self.mapping(node, path)
        if isinstance(node, ScalarNode) and node.tag == _STR:
            return node.value
        try:  # numbers, booleans, dates, !!set, !!omap, unknown tags: exactly as yaml.safe_load does
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # e.g. `!!int abc` raises ValueError inside PyYAML
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise yaml.constructor.ConstructorError(None, None, f"cannot read {tag} value: {exc}",
                                                    node.start_mark) from exc

    def mapping(self, node: MappingNode, path: tuple) -> dict:
        own = {id(k) for k, _ in node.value}
        self.constructor.flatten_mapping(node)  # merge keys (<<): merged pairs first, own pairs override
        out: dict = {}
        first: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        "found unhashable key", key_node.start_mark)
            key = key_node.value if key_node.tag == _STR else self.build(key_node, path + ("<key>",))
            mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if id(key_node) in own:
                if key in first:
                    self.duplicates.append((*mark, key, first[key]))
                first.setdefault(key, mark[0])
            self.keymarks[path + (key,)] = mark
            out[key] = self.build(value_node, path + (key,))
        return out


# --- cosmetic lint: the part of yamllint "relaxed" that InstructLab users trip over ----------------

def lint(text: str, node: Node, add) -> None:
    lines = text.split("\n")
    trailing = [(i + 1, len(s.rstrip(" \t")) + 1) for i, s in enumerate(ln.rstrip("\r") for ln in lines)
                if s != s.rstrip(" \t")]
    for line, col in trailing[:LINT_CAP]:
        add(line, col, "warning", "trailing spaces")
    if len(trailing) > LINT_CAP:
        add(*trailing[LINT_CAP], "warning", f"trailing spaces on {len(trailing) - LINT_CAP} more lines")
    if "\r\n" in text:
        add(line_col(text, text.index("\r\n"))[0], 1, "warning", "Windows line endings (CRLF); use LF")
    if text and not text.endswith("\n"):
        add(len(lines), len(lines[-1]) + 1, "warning", "no newline at end of file")
    body = text.rstrip("\r\n")
    end = max(text[len(body):].count("\n") - 1, 0)
    if end:
        add(body.count("\n") + 2, 1, "warning", f"{end} blank line{'s' * (end > 1)} at end of file")
    start = text[:len(text) - len(text.lstrip("\r\n"))].count("\n")
    if start:
        add(1, 1, "warning", f"{start} blank line{'s' * (start > 1)} at start of file")
    inconsistent: list[tuple[int, int, str]] = []
    _indentation(node, {}, inconsistent, set())
    for line, col, message in inconsistent[:LINT_CAP]:
        add(line, col, "warning", message)


def _indentation(node: Node, first: dict, out: list, seen: set) -> None:
    """Flag block indentation unlike its first use in the file (yamllint's spaces and indent-sequences)."""
    if id(node) in seen or not isinstance(node, (MappingNode, SequenceNode)):
        return
    seen.add(id(node))
    for key, value in node.value if isinstance(node, MappingNode) else ((None, v) for v in node.value):
        if (key is not None and isinstance(value, (MappingNode, SequenceNode)) and not value.flow_style
                and value.start_mark.line > key.start_mark.line):
            step = value.start_mark.column - key.start_mark.column
            uses = [("indentation", f"{step} spaces")] if step else []
            if isinstance(value, SequenceNode):
                uses.append(("list items", "indented" if step else "not indented"))
            for kind, style in uses:
                style0, line0 = first.setdefault(kind, (style, value.start_mark.line + 1))
                if style != style0:
                    out.append((value.start_mark.line + 1, value.start_mark.column + 1,
                                f"{kind} {style} here, {style0} on line {line0}"))
        _indentation(value, first, out, seen)
