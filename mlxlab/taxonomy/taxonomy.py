"""Load, validate and diff InstructLab taxonomies (qna.yaml versions 1-3), with real line numbers.

A file gets the verdict InstructLab's own parser (instructlab-schema + `ilab taxonomy diff`) gives it,
and every problem points at the offending YAML node. Deliberate differences, all documented here:
cosmetic findings (trailing spaces, blank lines at the end, CRLF, indentation style) are warnings,
errors only with strict=True; soft limits (words per context / Q&A) are warnings; folder names
with spaces are errors; files over 1 MB or nested over 100 levels are refused; `foundational_skills/`
leaves are checked too (ilab skips them); documents may be a local folder and `.txt` files.
"""

from __future__ import annotations

import datetime
import difflib
import os
from dataclasses import dataclass
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from mlxlab.taxonomy.documents import resolve_documents, run_git, try_git
from mlxlab.errors import UsageError
from mlxlab.taxonomy.qna_yaml import Builder as _Builder
from mlxlab.taxonomy.qna_yaml import lint as _lint
from mlxlab.taxonomy.qna_yaml import parse as _parse
from mlxlab.taxonomy.qna_yaml import yaml_error as _yaml_error

TOP_FOLDERS = ("compositional_skills", "knowledge", "foundational_skills")
SCHEMA_FOLDERS = ("compositional_skills", "knowledge")  # InstructLab picks the schema from these
MAX_BYTES = 1_000_000
CONTEXT_WORDS, QA_WORDS, TOTAL_QA_WORDS = 500, 250, 2300
_FILE_NAMES = ("qna.yaml", "qna.yml")


@dataclass(frozen=True)
class Problem:
    """One finding in one file, at the 1-based line and column of the offending YAML node."""
    path: str
    line: int
    column: int
    severity: str  # "error" | "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.severity}: {self.message}"

    def to_json(self) -> dict:
        """The problem as JSON-ready data (the path lives in the report)."""
        return {"line": self.line, "column": self.column, "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class LeafReport:
    """The verdict on one qna.yaml file."""
    path: Path
    root: Path | None
    kind: str  # "knowledge" | "freeform_skill" | "grounded_skill" | "unknown"
    version: int | None
    problems: tuple[Problem, ...]

    @property
    def valid(self) -> bool:
        """True when no problem is an error."""
        return not any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict:
        """The report as JSON-ready data."""
        return {"path": str(self.path), "root": None if self.root is None else str(self.root), "kind": self.kind,
                "version": self.version, "valid": self.valid, "problems": [p.to_json() for p in self.problems]}


@dataclass(frozen=True)
class Leaf:
    """A valid leaf, ready for SDG."""
    path: Path
    root: Path
    name: str  # e.g. "knowledge/programming_languages/jolie"
    kind: str
    version: int
    data: dict
    task_description: str | None
    created_by: str
    domain: str | None
    document_outline: str | None
    seed_examples: tuple[dict, ...]
    documents: tuple[Path, ...]  # resolved .md/.txt/.pdf files (knowledge only; empty if not fetched)


# --- schemas, as data: (kind, ...) tuples mirroring instructlab-schema's JSON schemas -----------------

def _text(min_len: int = 1) -> tuple:
    return ("str", min_len)


def _list(item: tuple, min_items: int, unique: bool = True) -> tuple:
    return ("list", item, min_items, unique)


def _map(required: dict, optional: dict | None = None, extra: str = "error") -> tuple:
    return ("map", {**required, **(optional or {})}, tuple(required), extra)


def _skill_schema(version: int) -> tuple:
    example = _map({"question": _text(), "answer": _text()}, {"context": _text()})
    props = {"created_by": _text(), "task_description": _text(0 if version == 1 else 1),
             "seed_examples": _list(example, 1 if version == 1 else 5, unique=version > 1)}
    if version == 1:
        return _map(props, {"version": ("version", 1)})
    return _map({"version": ("version", version), **props})


# the schema leaves question/answer items open; InstructLab ignores other keys there, so we only warn
_QA = _map({"question": _text(), "answer": _text()}, extra="warning")
_KNOWLEDGE = _map({
    "version": ("version", 3), "created_by": _text(), "domain": _text(), "document_outline": _text(),
    "seed_examples": _list(_map({"context": _text(), "questions_and_answers": _list(_QA, 3)}), 5),
    "document": _map({"repo": _text(), "commit": _text(), "patterns": _list(_text(), 1)}),
})
SCHEMAS = {("skill", v): _skill_schema(v) for v in (1, 2, 3)} | {("knowledge", 3): _KNOWLEDGE}


def _name(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level"


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


_TYPE_NAMES = {type(None): "nothing (null)", bool: "a boolean", int: "an integer", float: "a number",
               str: "a string", dict: "a mapping", datetime.date: "a date", datetime.datetime: "a date and time"}


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' * (len(value) != 1)}"
    name = _TYPE_NAMES.get(type(value), f"a {type(value).__name__}")
    if value is None or isinstance(value, dict):
        return name
    shown = str(value).lower() if isinstance(value, bool) else value if isinstance(value, (int, float)) else None
    return f"{name} ({_short(str(value)) if shown is None else shown})"


def _is_integer(value: Any) -> bool:
    # JSON Schema (hence InstructLab) counts 3.0 as an integer, and a boolean as none
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())


def _freeze(value: Any) -> Any:
    """A hashable stand-in with JSON Schema equality (1 == 1.0, true != 1, key order ignored)."""
    if isinstance(value, dict):
        return ("map", frozenset((_freeze(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(_freeze(v) for v in value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float, str)):
        return ("value", value)
    return ("object", id(value))  # never repr(): an alias-shared structure could be huge


def _check(value: Any, spec: tuple, path: tuple, found: list) -> None:
    """Compare `value` with `spec`; append (path, at_key, severity, message) to `found`."""
    what, name = spec[0], _name(path)
    expected = {"version": "an integer", "str": "a string", "list": "a list", "map": "a mapping"}[what]
    if not (_is_integer(value) if what == "version" else isinstance(value, {"str": str, "list": list}.get(what, dict))):
        scalar = isinstance(value, (int, float, datetime.date))  # YAML read `yes`, `5`, `2024-01-01` as non-text
        hint = "; put it in quotes if you meant text" if what == "str" and scalar else ""
        found.append((path, False, "error", f"{name}: expected {expected}, found {_describe(value)}{hint}"))
    elif what == "str" and len(value) < spec[1]:
        found.append((path, False, "error", f"{name} is empty; expected a non-empty string"))
    elif what == "list":
        _, item, min_items, unique = spec
        if len(value) < min_items:
            found.append((path, False, "error", f"{name} needs at least {min_items} item{'s' * (min_items > 1)}, "
                                                f"found {len(value)}"))
        first: dict = {}
        for i, element in enumerate(value):
            key = _freeze(element) if unique else i
            if key in first:
                found.append((path + (i,), False, "error",
                              f"{_name(path + (i,))} repeats {_name(path + (first[key],))}; items must be unique"))
            first.setdefault(key, i)
            _check(element, item, path + (i,), found)
    elif what == "map":
        _check_mapping(value, spec, path, found)


def _check_mapping(value: dict, spec: tuple, path: tuple, found: list) -> None:
    _, props, required, extra = spec
    where = f" in {_name(path)}" if path else ""
    found += [(path, False, "error", f"missing required key '{key}'{where}") for key in required if key not in value]
    for key, element in value.items():
        if key in props:
            _check(element, props[key], path + (key,), found)
            continue
        message = f"unknown key '{key}'{where}"
        close = difflib.get_close_matches(str(key), list(props), n=1, cutoff=0.6)
        if key == "task_description" and not path and "document_outline" in props:
            message += "; knowledge version 3 has no task_description (describe the document in document_outline)"
        elif close:
            message += f" (did you mean '{close[0]}'?)"
        elif extra == "warning":
            message += "; InstructLab ignores it"
        found.append((path + (key,), True, extra, message))


# --- one file ---------------------------------------------------------------------------------------

def _soft_limits(data: dict, knowledge: bool, found: list) -> None:
    examples = data.get("seed_examples")
    total = 0
    for i, example in enumerate(examples if isinstance(examples, list) else []):
        if not isinstance(example, dict):
            continue
        path = ("seed_examples", i)
        context = example.get("context")
        if isinstance(context, str) and len(context.split()) > CONTEXT_WORDS:
            found.append((path + ("context",), False, "warning", f"{_name(path + ('context',))} has "
                          f"{len(context.split())} words; keep a context under {CONTEXT_WORDS}"))
        pairs = example.get("questions_and_answers") if knowledge else [example]
        if knowledge and isinstance(pairs, list) and len(pairs) > 3:
            found.append((path + ("questions_and_answers",), False, "warning",
                          f"{_name(path)} has {len(pairs)} questions_and_answers; SDG uses only the first 3"))
        for j, pair in enumerate(pairs if isinstance(pairs, list) else []):
            if not isinstance(pair, dict):
                continue
            words = sum(len(pair[k].split()) for k in ("question", "answer") if isinstance(pair.get(k), str))
            total += words
            where = path + ("questions_and_answers", j) if knowledge else path
            if words > QA_WORDS:
                found.append((where, False, "warning",
                              f"{_name(where)} has {words} words of question and answer; keep each under {QA_WORDS}"))
    if total > TOTAL_QA_WORDS:
        found.append((("seed_examples",), False, "warning", f"seed examples hold {total} words of questions "
                      f"and answers; InstructLab expects at most about {TOTAL_QA_WORDS}"))


def _schema_version(raw: Any) -> int | None:
    """The schema InstructLab picks for `version: raw`: int(raw), or 1 when that fails; None if there is none."""
    if isinstance(raw, bool):
        return None
    try:  # a "3" picks schema 3, whose integer type check then reports it
        version = int(raw)
    except (TypeError, ValueError, OverflowError):
        return 1
    return version if version in (1, 2, 3) else None


def _schema_folder(parts: Iterable[str]) -> str | None:
    return next((p for p in reversed(tuple(parts)) if p in SCHEMA_FOLDERS), None)


def _leaf_parts(path: Path, root: Path | None) -> tuple[str, ...]:
    if root is not None:
        try:
            return path.parent.absolute().relative_to(root.absolute()).parts
        except ValueError:
            pass
    return path.parent.absolute().parts[-1:]


def _inspect(path: Path, root: Path | None, explicit: bool, fetch: bool, memo: dict, add) -> dict:
    """Check one file, reporting through add(line, col, severity, message); return what was learned."""
    facts: dict = {"kind": "unknown", "version": None}
    parts = _leaf_parts(path, root)
    for part in parts:
        if " " in part:
            add(1, 1, "error", f"folder name '{part}' contains a space; use '_' instead")
    if path.name != "qna.yaml":
        add(1, 1, "error" if explicit else "warning",
            f"taxonomy files must be named 'qna.yaml'; '{path.name}' is not read")
        return facts
    size = path.stat().st_size
    if size > MAX_BYTES:
        add(1, 1, "error", f"file is {size / 1e6:.1f} MB; a qna.yaml is expected to be small (at most 1 MB)")
        return facts
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        add(line, exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1, "error",
            f"not UTF-8 text at byte {exc.start}; save the file as UTF-8")
        return facts
    node, error = _parse(text)
    if error:
        add(*error)
        return facts
    built = _Builder()
    try:
        data = None if node is None else built.build(node, ())
    except yaml.YAMLError as exc:
        add(*_yaml_error(exc, text))
        return facts
    if not data:  # InstructLab warns "The file is empty" and skips the file
        add(1, 1, "warning", "the file is empty" + ("" if data is None else f" (its content is {data!r})"))
        return facts

    def pos(path: tuple, at_key: bool = False) -> tuple[int, int]:
        found = (built.keymarks if at_key else built.marks).get(path)
        return found or (pos(path[:-1]) if path else (1, 1))

    if not isinstance(data, dict):
        add(*pos(()), "error", f"the top level must be a mapping of keys (version, created_by, seed_examples, ...), "
                               f"found {_describe(data)}")
        return facts
    folder = _schema_folder(parts)
    knowledge = folder == "knowledge" or (folder is None and "document" in data)
    examples = data.get("seed_examples")
    grounded = isinstance(examples, list) and any(isinstance(e, dict) and "context" in e for e in examples)
    facts["kind"] = "knowledge" if knowledge else "grounded_skill" if grounded else "freeform_skill"
    raw_version = data.get("version", 1)
    version = _schema_version(raw_version)
    if version is None:
        add(*pos(("version",)), "error", f"version must be 1, 2 or 3, found {_describe(raw_version)}")
        return facts
    facts["version"] = version
    if version > 1:  # like InstructLab, version 1 files are not linted
        _lint(text, node, add)
    for line, col, key, first in built.duplicates:
        add(line, col, "error" if version > 1 else "warning",
            f"duplicate key '{key}' (first on line {first}); YAML keeps only the last value")
    if knowledge and version < 3:
        add(*pos(("version",)), "error",
            f"Version {version} is not supported for knowledge. Minimum supported version is 3.")
        return facts
    found: list = []
    _check(data, SCHEMAS["knowledge" if knowledge else "skill", version], (), found)
    _soft_limits(data, knowledge, found)
    document = data.get("document")
    if (knowledge and fetch and isinstance(document, dict)
            and not any(p[:1] == ("document",) and s == "error" for p, _, s, _ in found)):
        docs = resolve_documents(document["repo"], document["commit"], document["patterns"],
                                 base_dir=path.parent, memo=memo)
        found += [(("document",) + note.field, False, note.severity, note.message) for note in docs.notes]
        facts["documents"] = docs.files
    for where, at_key, severity, message in found:
        add(*pos(where, at_key), severity, message)
    facts["data"] = data
    return facts


def _check_file(path: Path, root: Path | None, *, explicit: bool | str, strict: bool, fetch: bool,
                memo: dict) -> tuple[LeafReport, Leaf | None]:
    found: list[tuple[int, int, str, str]] = []
    add = lambda line, col, severity, message: found.append((line, col, severity, message))  # noqa: E731
    where = ", ".join(f"{top}/" for top in TOP_FOLDERS)
    if explicit == OUTSIDE and path.is_dir():
        message = f"not a taxonomy: no {where} folder and no qna.yaml file below it"
        return LeafReport(path, None, "unknown", None, (Problem(str(path), 1, 1, "error", message),)), None
    if explicit == OUTSIDE:     # as InstructLab judges it: a leaf file outside the top folders is not a leaf
        add(1, 1, "error", f"not in a taxonomy: a qna.yaml must be below one of {where} (the folder given has none)")
    try:
        facts = _inspect(path, root, bool(explicit), fetch, memo, add)
    except Exception as exc:  # a bug in mlxlab or an unreadable file: still a Problem, never a traceback
        facts = {"kind": "unknown", "version": None}
        add(1, 1, "error", f"could not check this file: {type(exc).__name__}: {exc}")
    problems = tuple(Problem(str(path), line, col, "error" if strict else severity, message)
                     for line, col, severity, message in sorted(found, key=lambda f: (f[0], f[1])))
    report = LeafReport(path, root, facts["kind"], facts["version"], problems)
    data = facts.get("data")
    if not report.valid or data is None:
        return report, None
    base = root if root is not None else path.parent
    name = "/".join(_leaf_parts(path, root))
    leaf = Leaf(path, base, name, facts["kind"], facts["version"], data, data.get("task_description"),
                data["created_by"], data.get("domain"), data.get("document_outline"),
                tuple(data["seed_examples"]), tuple(facts.get("documents", ())))
    return report, leaf


# --- trees, diffs and the public API ---------------------------------------------------------------

def _find_root(folder: Path) -> Path | None:
    """The taxonomy root above `folder`: the parent of its nearest knowledge/ or *_skills/ ancestor."""
    for candidate in (folder, folder.absolute()):
        parts = candidate.parts
        for i in range(len(parts) - 1, -1, -1):
            if parts[i] in TOP_FOLDERS:
                return Path(*parts[:i]) if i else Path(".")
    return None


OUTSIDE = "outside"     # a target found in a folder that is no taxonomy


def _taxonomy_root(folder: Path) -> Path:
    if any((folder / top).is_dir() for top in TOP_FOLDERS):
        return folder
    root = _find_root(folder)
    if root is None:
        raise UsageError(f"{folder} is not a taxonomy: it has no {', '.join(TOP_FOLDERS)} folder",
                         hint="pass the taxonomy root, a folder below it, or a qna.yaml file")
    return root


def _is_leaf_file(rel: Path) -> bool:
    return len(rel.parts) > 1 and rel.parts[0] in TOP_FOLDERS and rel.name.casefold() in _FILE_NAMES


def _walk(folder: Path, root: Path | None) -> list[Path]:
    """Leaf files below `folder` (every qna.yaml when `root` is None: a folder outside any taxonomy)."""
    starts = [folder / top for top in TOP_FOLDERS] if folder == root else [folder]
    found = []
    for start in starts:
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [Path(dirpath, n) for n in sorted(filenames) if n.casefold() in _FILE_NAMES]
    return found if root is None else [p for p in found if _is_leaf_file(Path(os.path.relpath(p, root)))]


def _check_all(targets: dict, *, strict: bool, fetch: bool) -> list[tuple[LeafReport, Leaf | None]]:
    memo: dict = {}  # leaves sharing a document repo and commit fetch it once
    results = [_check_file(path, root, explicit=explicit, strict=strict, fetch=fetch, memo=memo)
               for path, root, explicit in targets.values()]
    return sorted(results, key=lambda result: str(result[0].path))


def _targets(paths: Iterable[str | Path]) -> dict:
    targets: dict = {}
    for given in map(Path, paths):
        if given.is_file():
            targets.setdefault(given.resolve(), (given, _find_root(given.parent), True))
        elif given.is_dir():
            try:
                root = _taxonomy_root(given)
            except UsageError:      # not a taxonomy: its files are reported invalid, the other roots go on
                files = _walk(given, None) or [given]
                for path in files:
                    targets.setdefault(path.resolve(), (path, None, OUTSIDE))
                continue
            for path in _walk(given, root):
                targets.setdefault(path.resolve(), (path, root, False))
        else:
            raise UsageError(f"no such file or directory: {given}")
    return targets


def validate(paths: Iterable[str | Path] | str | Path = ("taxonomy",), *, strict: bool = False,
             fetch_documents: bool = True) -> list[LeafReport]:
    """Check taxonomy roots, folders below them, or single qna.yaml files; one report per file, by path."""
    if isinstance(paths, (str, os.PathLike)):
        paths = (paths,)
    return [report for report, _ in _check_all(_targets(paths), strict=strict, fetch=fetch_documents)]


def _commit(root: Path, ref: str) -> str | None:
    return try_git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")


def changed_files(root: str | Path = "taxonomy", base: str | None = None) -> list[Path]:
    """Leaf files under `root` that are new or changed since `base` (see `diff`), relative to `root`."""
    root = Path(root)
    if try_git(root, "rev-parse", "--show-toplevel") is None:
        raise UsageError(f"{root} is not inside a git repository, so there is nothing to diff against",
                         hint="use base 'empty' (--base empty) to check every leaf")
    if base is not None and (base.startswith("-") or _commit(root, base) is None):
        raise UsageError(f"unknown git ref '{base}' in {root}", hint="use a branch, tag or commit, or 'empty'")
    ref = base or next((r for r in ("origin/main", "main", "HEAD") if _commit(root, r)), None)
    names = run_git(root, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    if ref is not None:  # None: a repository without commits, where every file is untracked
        since = try_git(root, "merge-base", ref, "HEAD") or _commit(root, ref)
        names += run_git(root, "diff", "--name-only", "-z", "--no-renames", "--diff-filter=d", "--relative",
                         since, "--").split("\0")
    return sorted({Path(n) for n in names if n and _is_leaf_file(Path(n)) and (root / n).is_file()})


def diff(root: str | Path = "taxonomy", *, base: str | None = None, strict: bool = False,
         fetch_documents: bool = True) -> list[LeafReport]:
    """Check the leaves new or changed since git ref `base` (untracked included, deleted excluded).

    `base` "empty" checks every leaf (no git needed); None means "origin/main", else "main", else
    "HEAD" (only uncommitted work), whichever exists. Outside a git repository -> UsageError.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"no such taxonomy folder: {root}")
    if base == "empty":
        return validate([root], strict=strict, fetch_documents=fetch_documents)
    targets = {(root / rel).resolve(): (root / rel, root, False) for rel in changed_files(root, base)}
    return [report for report, _ in _check_all(targets, strict=strict, fetch=fetch_documents)]


@dataclass
class Taxonomy:
    """A checked taxonomy: every file's report, and the valid leaves for SDG."""
    root: Path
    leaves: list[Leaf]
    reports: list[LeafReport]

    @classmethod
    def load(cls, root: str | Path = "taxonomy", *, strict: bool = False, fetch_documents: bool = True) -> Taxonomy:
        """Check every leaf under `root`; keep the valid ones in `leaves`."""
        root = Path(root)
        if not root.is_dir():
            raise UsageError(f"no such taxonomy folder: {root}")
        results = _check_all(_targets([root]), strict=strict, fetch=fetch_documents)
        return cls(root, [leaf for _, leaf in results if leaf is not None], [report for report, _ in results])

    @property
    def problems(self) -> list[Problem]:
        """Every problem in every file."""
        return [p for report in self.reports for p in report.problems]

    @property
    def valid(self) -> bool:
        """True when no file has an error."""
        return all(report.valid for report in self.reports)


def format_report(reports: Iterable[LeafReport]) -> str:
    """Human text: one `file:line:col: severity: message` line per problem, then a summary line."""
    reports = list(reports)
    problems = [p for report in reports for p in report.problems]
    errors = sum(p.severity == "error" for p in problems)
    summary = f"{len(reports)} files, {errors} errors, {len(problems) - errors} warnings"
    return "\n".join([*map(str, problems), summary])
