"""validate() never raises, whatever a qna.yaml holds; and agrees with InstructLab's parser when it is installed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxlab.taxonomy.taxonomy import validate

GOOD = Path(__file__).parent / "data" / "good_qna"
SEEDS = {rel: (GOOD / rel / "qna.yaml").read_text() for rel in (
    "compositional_skills/skill_v1", "compositional_skills/freeform_v2", "compositional_skills/grounded_v3",
    "knowledge/jolie_v3")}
KEYS = ["version", "created_by", "task_description", "seed_examples", "question", "answer", "context", "domain",
        "document_outline", "questions_and_answers", "document", "repo", "commit", "patterns", "attribution",
        "questions", "<<"]
VALUES = ["", '""', "42", "3.0", "yes", "null", "[]", "{}", "[a, b]", "'x'", "x: y", "2024-01-01", "!!str 5", '"3"',
          "*a", "&a x", "|\n  text", "- a", "!!binary aGk=", "!!set {a}", "!foo x", "0x1f", ".nan", "~", "'''"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FOLDERS = st.sampled_from(["compositional_skills/f", "knowledge/f", "foundational_skills/f"])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXLAB_CACHE", str(tmp_path / "cache"))


def check_bytes(root: Path, folder: str, content: bytes, fetch: bool = False):
    path = root / folder / "qna.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    [report] = validate([path], fetch_documents=fetch)
    for problem in report.problems:
        assert isinstance(problem.line, int) and problem.line >= 1, problem
        assert isinstance(problem.column, int) and problem.column >= 1, problem
        assert problem.severity in ("error", "warning") and problem.message, problem
        assert "could not check this file" not in problem.message, problem  # our safety net, i.e. a bug
    assert report.kind in ("knowledge", "freeform_skill", "grounded_skill", "unknown")
    return report


@SETTINGS
@given(folder=FOLDERS, content=st.binary(max_size=400))
def test_random_bytes_never_raise(tmp_path, folder, content):
    check_bytes(tmp_path, folder, content)


@SETTINGS
@given(folder=FOLDERS, text=st.text(alphabet=st.sampled_from(list("ab :-[]{}?!&*|>'\"#,\n\t\r ") + ["\x00", "é"]),
                                    max_size=300))
def test_random_yaml_like_text_never_raises(tmp_path, folder, text):
    check_bytes(tmp_path, folder, text.encode())


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                    st.dates())
structures = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.sampled_from(KEYS[:-1]) | st.text(max_size=8), inner, max_size=6)),
    max_leaves=40)


@SETTINGS
@given(folder=FOLDERS, data=structures, flow=st.booleans())
def test_random_structures_never_raise(tmp_path, folder, data, flow):
    check_bytes(tmp_path, folder, yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True).encode())


def mutate(text: str, ops: list) -> str:
    """Apply line edits (delete, duplicate, swap, re-indent, retype a value, rename a key) to `text`."""
    lines = text.split("\n")
    for op, a, b in ops:
        i, j = a % len(lines), b % len(lines)
        head, sep, _ = lines[i].partition(": ")
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip(" -"))]
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = "  " + lines[i] if b % 2 else lines[i][2:]
        elif op == "value" and sep:
            lines[i] = f"{head}: {VALUES[b % len(VALUES)]}"
        elif op == "key" and sep:
            lines[i] = f"{indent}{KEYS[b % len(KEYS)]}: {lines[i].partition(': ')[2]}"
        if not lines:
            lines = [""]
    return "\n".join(lines)


mutations = st.lists(st.tuples(st.sampled_from(["delete", "duplicate", "swap", "indent", "value", "key"]),
                               st.integers(0, 200), st.integers(0, 200)), min_size=1, max_size=3)


@SETTINGS
@given(seed=st.sampled_from(sorted(SEEDS)), ops=mutations)
def test_mutated_good_files_never_raise(tmp_path, seed, ops):
    (tmp_path / "docs").mkdir(exist_ok=True)  # the knowledge seed's ../../docs: documents resolve, offline
    (tmp_path / "docs/a.md").write_text("a\n")
    check_bytes(tmp_path, seed, mutate(SEEDS[seed], ops).encode(), fetch=True)


@pytest.fixture(scope="module")
def instructlab_parser():
    """InstructLab's own parser without its yamllint/yq subprocesses (we compare schema verdicts)."""
    taxonomy = pytest.importorskip("instructlab.schema.taxonomy")
    parser = taxonomy.TaxonomyParser(schema_version=0, message_format=taxonomy.TaxonomyMessageFormat.LOGGING)
    parser.yq_available = False
    parser._yamllint = lambda text, taxonomy: None
    return parser


@SETTINGS
@given(seed=st.sampled_from(sorted(SEEDS)), ops=mutations)
def test_same_verdict_as_instructlab(tmp_path, instructlab_parser, seed, ops):
    text = mutate(SEEDS[seed], ops)
    report = check_bytes(tmp_path, seed, text.encode())
    logging.disable(logging.CRITICAL)
    try:
        theirs = instructlab_parser.parse(tmp_path / seed / "qna.yaml").errors == 0
    except Exception:  # InstructLab raises on YAML it cannot read
        theirs = False
    finally:
        logging.disable(logging.NOTSET)
    # duplicate keys are yamllint's finding in InstructLab, switched off above
    ours = not any(p.severity == "error" and not p.message.startswith("duplicate key") for p in report.problems)
    assert ours == theirs, f"{text}\n---\n" + "\n".join(map(str, report.problems))
