"""mlxlab.taxonomy.taxonomy: InstructLab's verdicts with real line numbers; documents; diff; the CLI contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlxlab.errors import UsageError
from mlxlab.taxonomy.taxonomy import Leaf, Problem, Taxonomy, diff, format_report, validate

DATA = Path(__file__).parent / "data"
BAD, GOOD = DATA / "bad_qna", DATA / "good_qna"
SKILL = (GOOD / "compositional_skills/freeform_v2/qna.yaml").read_text()
GROUNDED = (GOOD / "compositional_skills/grounded_v3/qna.yaml").read_text()
KNOWLEDGE = (GOOD / "knowledge/jolie_v3/qna.yaml").read_text()

# The corpus of broken files: folder -> (line, column, severity, part of the message).
# Warnings there are InstructLab's warnings too (the file is skipped, not failed): invalid with strict.
BAD_CASES = {
    "compositional_skills/answer_boolean": (12, 13, "error", "seed_examples[3].answer: expected a string, found a "
                                                             "boolean (true); put it in quotes if you meant text"),
    "compositional_skills/answer_integer": (10, 13, "error", "seed_examples[2].answer: expected a string, found an "
                                                             "integer (5)"),
    "compositional_skills/answer_null": (14, 12, "error", "seed_examples[4].answer: expected a string, found nothing"),
    "compositional_skills/bad_int_tag": (12, 13, "error", "cannot read !!int value"),
    "compositional_skills/billion_laughs": (3, 11, "error", "aliases expand to more than"),
    "compositional_skills/comment_only": (1, 1, "warning", "the file is empty"),
    "compositional_skills/duplicate_examples": (13, 5, "error", "seed_examples[4] repeats seed_examples[0]"),
    "compositional_skills/duplicate_key": (3, 1, "error", "duplicate key 'created_by' (first on line 2)"),
    "compositional_skills/empty_context": (11, 14, "error", "seed_examples[2].context is empty"),
    "compositional_skills/empty_file": (1, 1, "warning", "the file is empty"),
    "compositional_skills/empty_task_description": (3, 19, "error", "task_description is empty"),
    "compositional_skills/invalid_yaml": (9, 32, "error", "invalid YAML: mapping values are not allowed here"),
    "compositional_skills/list_as_key": (2, 3, "error", "found unhashable key"),
    "compositional_skills/missing_answer": (7, 5, "error", "missing required key 'answer' in seed_examples[1]"),
    "compositional_skills/missing_created_by": (1, 1, "error", "missing required key 'created_by'"),
    "compositional_skills/seed_examples_mapping": (5, 3, "error", "seed_examples: expected a list, found a mapping"),
    "compositional_skills/tab_indent": (8, 1, "error", "YAML does not allow tabs for indentation"),
    "compositional_skills/too_few_examples": (5, 3, "error", "seed_examples needs at least 5 items, found 3"),
    "compositional_skills/top_level_list": (1, 1, "error", "the top level must be a mapping"),
    "compositional_skills/top_level_scalar": (1, 1, "error", "found a string ('just some text')"),
    "compositional_skills/two_documents": (15, 1, "error", "expected a single document"),
    "compositional_skills/unclosed_quote": (15, 1, "error", "while scanning a quoted scalar at line 3"),
    "compositional_skills/undefined_alias": (2, 13, "error", "found undefined alias 'who'"),
    "compositional_skills/unknown_key_questions": (11, 5, "error", "unknown key 'questions' in seed_examples[3] "
                                                                   "(did you mean 'question'?)"),
    "compositional_skills/unknown_tag": (2, 13, "error", "could not determine a constructor for the tag '!person'"),
    "compositional_skills/unknown_top_key": (2, 1, "error", "unknown key 'createdby' (did you mean 'created_by'?)"),
    "compositional_skills/v1_too_many_keys": (6, 5, "error", "unknown key 'explanation' in seed_examples[0]"),
    "compositional_skills/version_4": (1, 10, "error", "version must be 1, 2 or 3, found an integer (4)"),
    "compositional_skills/version_boolean": (1, 10, "error", "version must be 1, 2 or 3, found a boolean"),
    "compositional_skills/version_string": (1, 10, "error", "version: expected an integer, found a string ('3')"),
    "compositional_skills/with space": (1, 1, "error", "folder name 'with space' contains a space"),
    "compositional_skills/wrong_name": (1, 1, "warning", "taxonomy files must be named 'qna.yaml'; 'qna.yml'"),
    "knowledge/attribution": (17, 5, "error", "unknown key 'attribution' in seed_examples[1]"),
    "knowledge/commit_number": (53, 11, "error", "document.commit: expected a string, found an integer"),
    "knowledge/duplicate_patterns": (56, 7, "error", "document.patterns[1] repeats document.patterns[0]"),
    "knowledge/duplicate_qna": (40, 9, "error", "seed_examples[3].questions_and_answers[2] repeats "
                                                "seed_examples[3].questions_and_answers[1]"),
    "knowledge/empty_patterns": (54, 13, "error", "document.patterns needs at least 1 item, found 0"),
    "knowledge/knowledge_v1": (1, 1, "error", "Version 1 is not supported for knowledge. Minimum supported "
                                              "version is 3."),
    "knowledge/knowledge_v2": (1, 10, "error", "Version 2 is not supported for knowledge."),
    "knowledge/missing_document": (1, 1, "error", "missing required key 'document'"),
    "knowledge/questions_typo": (44, 5, "error", "unknown key 'question_and_answers' in seed_examples[4] "
                                                 "(did you mean 'questions_and_answers'?)"),
    "knowledge/task_description": (4, 1, "error", "unknown key 'task_description'; knowledge version 3 has no"),
    "knowledge/too_few_examples": (6, 3, "error", "seed_examples needs at least 5 items, found 4"),
    "knowledge/too_few_qna": (27, 7, "error", "seed_examples[2].questions_and_answers needs at least 3 items, "
                                              "found 2"),
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLXLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bad_reports() -> dict[str, object]:
    reports = validate([BAD])  # documents too: none of the corpus's document folders exists
    return {str(r.path.parent.relative_to(BAD)): r for r in reports}


def leaf(root: Path, folder: str, text: str | bytes, name: str = "qna.yaml") -> Path:
    path = root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def line_of(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1


def git(cwd: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def check(path: Path, **kwargs):
    [report] = validate([path], **kwargs)
    return report


def has(report, line: int, column: int | None, severity: str, text: str) -> bool:
    return any(p.line == line and column in (None, p.column) and p.severity == severity and text in p.message
               for p in report.problems)


# --- the corpus ---------------------------------------------------------------------------------------

def test_corpus_and_table_agree(bad_reports):
    assert sorted(bad_reports) == sorted(BAD_CASES)
    assert not [p for r in bad_reports.values() for p in r.problems if "could not check" in p.message]


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_gets_a_clear_message_at_the_right_place(case, bad_reports):
    line, column, severity, text = BAD_CASES[case]
    report = bad_reports[case]
    assert has(report, line, column, severity, text), "\n".join(map(str, report.problems))
    strict = validate([report.path], strict=True, fetch_documents=False)[0] if severity == "warning" else report
    assert not strict.valid


def test_good_files_are_valid_with_no_problem(tmp_path):
    shutil.copytree(GOOD, tmp_path / "tax")  # outside any git work tree: docs/ is a plain folder
    reports = validate([tmp_path / "tax"], strict=True)
    assert [(r.path.parent.name, r.kind, r.version) for r in reports] == [
        ("freeform_v2", "freeform_skill", 2), ("grounded_v3", "grounded_skill", 3), ("skill_v1", "freeform_skill", 1),
        ("reasoning", "freeform_skill", 3), ("jolie_v3", "knowledge", 3)]
    assert all(r.valid and not r.problems for r in reports), format_report(reports)


@pytest.mark.parametrize("content, line, column, text", [
    (b"version: 3\ncreated_by: caf\xe9\n", 2, 16, "not UTF-8 text at byte 26"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, 1, "not UTF-8 text at byte 0"),
    (b"version: 3\ncreated_by: a\x00b\n", 2, 14, "unacceptable character #x0000"),
    (b"[" * 100_000 + b"]" * 100_000, 1, 101, "nested more than 100 levels"),
    (b"- " * 5000 + b"a\n", 1, 201, "nested more than 100 levels"),
    (b"a: b\n" * 2_100_000, 1, 1, "file is 10.5 MB; a qna.yaml is expected to be small"),
], ids=["latin-1", "png", "nul", "deep-flow", "deep-block", "10MB"])
def test_garbage_is_an_error_with_a_position(tmp_path, content, line, column, text):
    report = check(leaf(tmp_path, "compositional_skills/junk", content))
    assert not report.valid and has(report, line, column, "error", text), report.problems


def test_qna_yml_is_warned_about_in_a_tree_and_refused_when_named(bad_reports):
    path = BAD / "compositional_skills/wrong_name/qna.yml"
    assert bad_reports["compositional_skills/wrong_name"].valid  # InstructLab also only warns and skips it
    assert has(check(path), 1, 1, "error", "must be named 'qna.yaml'")


# --- lint: cosmetic problems are warnings, errors with strict -----------------------------------------

@pytest.mark.parametrize("text, line, column, message", [
    (SKILL.replace("created_by: mlxlab", "created_by: mlxlab  "), 2, 19, "trailing spaces"),
    (SKILL.rstrip("\n"), 14, 27, "no newline at end of file"),
    (SKILL + "\n\n", 15, 1, "2 blank lines at end of file"),
    ("\n" + SKILL, 1, 1, "1 blank line at start of file"),
    (SKILL.replace("\n", "\r\n"), 1, 1, "Windows line endings (CRLF)"),
], ids=["trailing-spaces", "no-final-newline", "blank-at-end", "blank-at-start", "crlf"])
def test_cosmetic_problems_are_warnings(tmp_path, text, line, column, message):
    path = leaf(tmp_path, "compositional_skills/lint", text)
    report = check(path)
    assert report.valid and has(report, line, column, "warning", message), report.problems
    assert not check(path, strict=True).valid


def test_inconsistent_list_indentation_is_a_warning(tmp_path):
    text = "version: 3\ncreated_by: mlxlab\ntask_description: t\nseed_examples:\n" + "".join(
        f"- question: q{i}\n  answer: a{i}\n" for i in range(5))
    text += "extra:\n    - x\n"
    report = check(leaf(tmp_path, "compositional_skills/lint", text))
    assert has(report, 16, 5, "warning", "list items indented here, not indented on line 5")


def test_version_1_is_not_linted_and_duplicate_keys_only_warn(tmp_path):
    text = "created_by: a  \ncreated_by: b\ntask_description: ''\nseed_examples:\n  - question: q\n    answer: a"
    report = check(leaf(tmp_path, "compositional_skills/v1", text))
    assert report.valid and [p.message[:13] for p in report.problems] == ["duplicate key"]


# --- soft limits ---------------------------------------------------------------------------------------

def test_soft_limits_are_warnings(tmp_path):
    long_context = " ".join(["word"] * 501)
    text = GROUNDED.replace("The shop sells apples for 4 dollars each.", long_context)
    report = check(leaf(tmp_path, "compositional_skills/long", text))
    assert report.valid and has(report, line_of(text, long_context), 14, "warning", "has 501 words")
    text = SKILL.replace("answer: 2 plus 3 is 5.", "answer: " + "five " * 260)
    report = check(leaf(tmp_path, "compositional_skills/long_qa", text))
    assert has(report, 9, 5, "warning", "seed_examples[2] has 265 words of question and answer")
    text = SKILL.replace("is", " ".join(["is"] * 480))
    assert has(check(leaf(tmp_path, "compositional_skills/total", text)), 5, 3, "warning", "InstructLab expects")


def test_more_than_three_qna_per_context_is_a_warning(tmp_path):
    extra = "      - question: A fourth question?\n        answer: A fourth answer.\n"
    text = KNOWLEDGE.replace("    questions_and_answers:\n", "    questions_and_answers:\n" + extra, 1)
    report = check(leaf(tmp_path, "knowledge/four", text), fetch_documents=False)
    assert report.valid and has(report, 9, 7, "warning", "has 4 questions_and_answers; SDG uses only the first 3")


# --- which schema, which files ------------------------------------------------------------------------

def test_schema_follows_the_folder_then_the_document_key(tmp_path):
    assert has(check(leaf(tmp_path, "compositional_skills/k", KNOWLEDGE), fetch_documents=False), 3, 1, "error",
               "unknown key 'domain'")
    assert has(check(leaf(tmp_path, "knowledge/s", SKILL)), 1, 10, "error", "Version 2 is not supported")
    report = check(leaf(tmp_path, "foundational_skills/k", KNOWLEDGE), fetch_documents=False)
    assert report.valid and report.kind == "knowledge"
    assert check(leaf(tmp_path, "foundational_skills/s", SKILL)).kind == "freeform_skill"
    outside = check(leaf(tmp_path, "elsewhere", SKILL))
    assert outside.root is None and outside.valid


def test_walk_finds_leaves_only_under_the_top_folders(tmp_path):
    for folder in ("compositional_skills/a", "compositional_skills/b/c", "knowledge/x", "docs/not_a_leaf", ".git/y"):
        leaf(tmp_path, folder, SKILL if "knowledge" not in folder else KNOWLEDGE)
    reports = validate([tmp_path], fetch_documents=False)
    assert [str(r.path.relative_to(tmp_path).parent) for r in reports] == [
        "compositional_skills/a", "compositional_skills/b/c", "knowledge/x"]
    assert all(r.root == tmp_path for r in reports)
    below = validate([tmp_path / "compositional_skills/b"], fetch_documents=False)
    assert [r.path for r in below] == [tmp_path / "compositional_skills/b/c/qna.yaml"] and below[0].root == tmp_path
    again = validate([tmp_path, tmp_path / "compositional_skills/a/qna.yaml"], fetch_documents=False)
    assert len(again) == 3


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file or directory"):
        validate([tmp_path / "missing"])
    # a folder that is no taxonomy is reported, never a batch-stopping error
    [empty] = validate([tmp_path])
    assert not empty.valid and "not a taxonomy" in empty.problems[0].message and empty.path == tmp_path
    with pytest.raises(UsageError):
        Taxonomy.load(tmp_path / "missing")


def test_reports_and_problems_print_and_serialise(bad_reports):
    [report] = validate([BAD / "knowledge/too_few_qna"], fetch_documents=False)
    problem = report.problems[0]
    assert str(problem) == f"{report.path}:27:7: error: {problem.message}"
    assert problem.to_json() == {"line": 27, "column": 7, "severity": "error", "message": problem.message}
    data = json.loads(json.dumps(report.to_json()))
    assert data["path"] == str(report.path) and data["root"] == str(BAD) and data["kind"] == "knowledge"
    assert data["version"] == 3 and data["valid"] is False and len(data["problems"]) == 1
    text = format_report([report, bad_reports["compositional_skills/empty_file"]])
    assert text.splitlines()[-1] == "2 files, 1 errors, 1 warnings" and str(problem) in text
    assert isinstance(problem, Problem)


def test_taxonomy_load_keeps_valid_leaves(tmp_path):
    shutil.copytree(GOOD, tmp_path / "tax")
    leaf(tmp_path / "tax", "compositional_skills/broken", "version: 3\n")
    tax = Taxonomy.load(tmp_path / "tax")
    assert not tax.valid and len(tax.reports) == 6 and len(tax.leaves) == 5
    assert [p.message for p in tax.problems] == ["missing required key 'created_by'",
                                                 "missing required key 'task_description'",
                                                 "missing required key 'seed_examples'"]
    by_name = {lf.name: lf for lf in tax.leaves}
    know = by_name["knowledge/jolie_v3"]
    assert isinstance(know, Leaf) and know.kind == "knowledge" and know.domain == "programming_languages"
    assert know.document_outline and know.task_description is None and len(know.seed_examples) == 5
    assert know.documents == (tmp_path / "tax/docs/jolie.md",) and know.root == tmp_path / "tax"
    skill = by_name["compositional_skills/grounded_v3"]
    assert skill.kind == "grounded_skill" and skill.task_description and skill.created_by == "mlxlab"
    assert skill.seed_examples[0]["context"] and skill.data["version"] == 3 and skill.documents == ()


# --- documents ----------------------------------------------------------------------------------------

@pytest.fixture
def docs_repo(tmp_path) -> tuple[Path, str]:
    repo = tmp_path / "docs_repo"
    (repo / "guide").mkdir(parents=True)
    (repo / "guide/intro.md").write_text("# Intro\n")
    (repo / "guide/notes.txt").write_text("notes\n")
    (repo / "guide/logo.png").write_bytes(b"\x89PNG")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "docs")
    return repo, git(repo, "rev-parse", "HEAD")


def knowledge_leaf(tmp_path: Path, repo: str, commit: str, patterns: str = '    - "guide/*.md"\n') -> Path:
    text = KNOWLEDGE.replace("repo: ../../docs", f"repo: {repo}").replace("commit: 0123abc", f"commit: {commit}")
    return leaf(tmp_path / "tax", "knowledge/k", text.replace('    - "*.md"\n', patterns))


def test_local_git_repo_is_read_at_the_commit(tmp_path, docs_repo):
    repo, sha = docs_repo
    (repo / "guide/intro.md").write_text("# Changed after the commit\n")
    path = knowledge_leaf(tmp_path, "../../../docs_repo", sha, '    - "guide/*"\n')
    report = check(path)
    assert report.valid and has(report, line_of(path.read_text(), '"guide/*"'), 7, "warning", "logo.png")
    [leaf_] = Taxonomy.load(tmp_path / "tax").leaves
    assert [p.name for p in leaf_.documents] == ["intro.md", "notes.txt"]
    assert leaf_.documents[0].read_text() == "# Intro\n"  # the commit's text, from the cache
    assert (tmp_path / "cache/documents") in leaf_.documents[0].parents


def test_missing_commit_in_a_git_repo_is_an_error(tmp_path, docs_repo):
    path = knowledge_leaf(tmp_path, str(docs_repo[0]), "deadbeef")
    assert has(check(path), line_of(path.read_text(), "commit:"), 11, "error", "commit deadbeef not found")


def test_git_url_is_cloned_into_the_cache(tmp_path, docs_repo):
    repo, sha = docs_repo
    path = knowledge_leaf(tmp_path, repo.as_uri(), sha)
    report = check(path)
    assert report.valid and not report.problems
    assert any((tmp_path / "cache/documents").glob("*/guide/intro.md"))
    assert has(check(knowledge_leaf(tmp_path, repo.as_uri(), "feedface")), 53, 11, "error", "not found in file://")
    report = check(knowledge_leaf(tmp_path, (tmp_path / "nowhere").as_uri(), sha))
    assert has(report, 52, 9, "error", "cannot clone")


def test_folder_inside_a_work_tree(tmp_path, docs_repo):
    repo, sha = docs_repo
    report = check(knowledge_leaf(tmp_path, "../../../docs_repo/guide", "cafe123", '    - "*.md"\n'))
    assert report.valid and has(report, 53, 11, "warning", "commit cafe123 not found in ../../../docs_repo/guide; "
                                                           "using the working tree")
    (repo / "guide/intro.md").unlink()
    report = check(knowledge_leaf(tmp_path, "../../../docs_repo/guide", sha, '    - "*.md"\n'))
    assert report.valid and not report.problems  # read at the commit, where intro.md still exists


def test_plain_folder_and_pattern_problems(tmp_path):
    docs = tmp_path / "plain"
    docs.mkdir()
    (docs / "a.md").write_text("a\n")
    assert check(knowledge_leaf(tmp_path, str(docs), "anything", '    - "*.md"\n')).problems == ()
    report = check(knowledge_leaf(tmp_path, str(docs), "x", '    - "*.md"\n    - "none/*.md"\n'))
    assert report.valid and has(report, 56, 7, "warning", "pattern 'none/*.md' matches no .md/.txt/.pdf file")
    report = check(knowledge_leaf(tmp_path, str(docs), "x", '    - "../*.md"\n    - "/etc/*.md"\n'))
    assert has(report, 55, 7, "error", "points outside") and has(report, 56, 7, "error", "points outside")
    report = check(knowledge_leaf(tmp_path, str(docs), "x", '    - "*.rst"\n'))
    assert has(report, 55, 5, "error", "document.patterns match no .md/.txt/.pdf file")
    report = check(knowledge_leaf(tmp_path, "no/such/folder", "x"))
    assert has(report, 52, 9, "error", "neither a git URL nor a folder")
    assert check(knowledge_leaf(tmp_path, "no/such/folder", "x"), fetch_documents=False).valid


# --- diff ---------------------------------------------------------------------------------------------

@pytest.fixture
def tax_repo(tmp_path) -> Path:
    root = tmp_path / "taxrepo"
    for name in ("same", "changed", "deleted"):
        leaf(root, f"compositional_skills/{name}", SKILL)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "base")
    leaf(root, "compositional_skills/changed", SKILL.replace("mlxlab", "someone"))
    (root / "compositional_skills/deleted/qna.yaml").unlink()
    leaf(root, "compositional_skills/untracked", SKILL)
    leaf(root, "docs/not_a_leaf", SKILL)
    return root


def names(reports) -> list[str]:
    return [r.path.parent.name for r in reports]


def test_diff_new_changed_and_untracked_not_deleted(tax_repo):
    assert names(diff(tax_repo)) == ["changed", "untracked"]
    assert names(diff(tax_repo, base="main")) == ["changed", "untracked"]
    assert names(diff(tax_repo, base="empty")) == ["changed", "same", "untracked"]


def test_diff_against_a_branch_includes_committed_work(tax_repo):
    git(tax_repo, "checkout", "-q", "-b", "feature")
    git(tax_repo, "add", "-A")
    git(tax_repo, "commit", "-q", "-m", "work")
    leaf(tax_repo, "knowledge/new", "version: 3\n")
    assert names(diff(tax_repo, base="HEAD")) == ["new"]
    reports = diff(tax_repo, fetch_documents=False)  # origin/main is absent, so "main" is the base
    assert names(reports) == ["changed", "untracked", "new"]
    assert [r.valid for r in reports if r.path.parent.name == "new"] == [False]


def test_diff_in_a_subfolder_of_a_repository_and_without_commits(tmp_path):
    leaf(tmp_path / "taxonomy", "knowledge/a", SKILL)
    git(tmp_path, "init", "-q", "-b", "main")
    assert names(diff(tmp_path / "taxonomy")) == ["a"]
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "x")
    assert diff(tmp_path / "taxonomy") == []


def test_diff_usage_errors(tmp_path, tax_repo):
    with pytest.raises(UsageError, match="unknown git ref 'nope'"):
        diff(tax_repo, base="nope")
    plain = tmp_path / "plain"
    leaf(plain, "compositional_skills/a", SKILL)
    with pytest.raises(UsageError, match="not inside a git repository"):
        diff(plain)
    assert names(diff(plain, base="empty")) == ["a"]


# --- the CLI contract (exit 0 / 1 / 2, --json, --strict) ----------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlxlab", "taxonomy", "validate", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_validate(tmp_path):
    out = cli(str(BAD / "knowledge/too_few_qna"), "--json")
    assert out.returncode == 1, out.stderr
    [record] = json.loads(out.stdout)
    assert record["valid"] is False and record["problems"][0]["line"] == 27
    good = leaf(tmp_path, "compositional_skills/ok", SKILL + "\n")
    out = cli(str(good))
    assert out.returncode == 0 and "1 blank line at end of file" in out.stdout
    assert cli(str(good), "--strict").returncode == 1
    assert cli(str(tmp_path / "missing")).returncode == 2


def test_a_root_that_is_no_taxonomy_is_reported_and_the_others_go_on(tmp_path):
    stray = tmp_path / "stray" / "notes"
    stray.mkdir(parents=True)
    leaf = sorted(GOOD.glob("compositional_skills/**/qna.yaml"))[0]       # a good leaf, in the wrong place
    (stray / "qna.yaml").write_text(leaf.read_text())
    out = cli("--json", str(GOOD), str(tmp_path / "stray"))
    assert out.returncode == 1, out.stderr
    records = json.loads(out.stdout)
    outside = [r for r in records if r["path"].startswith(str(tmp_path))]
    assert len(outside) == 1 and not outside[0]["valid"] and outside[0]["root"] is None
    assert any("not in a taxonomy" in p["message"] for p in outside[0]["problems"])
    assert len(records) > 1 and all(r["valid"] for r in records if r not in outside)
