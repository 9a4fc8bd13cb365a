"""Evaluation: prompt sets, judge parsing and aggregation, a real sweep on a tiny model, blind manual grading."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from mlxlab.errors import MlxlabError

WORDS = "jolie service port input output message operation interface program language socket".split()
PROMPTS = """\
name: tiny
rubric: 5 good, 0 bad
prompts:
  - id: ports
    prompt: What is an output port?
    reference: An output port tells a Jolie service how to call another one.
  - id: services
    prompt: What is a service?
    reference: A Jolie program is a service.
"""


def _record(rng: random.Random) -> dict:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
    return {"messages": [{"role": "user", "content": f"What is {text}?"},
                         {"role": "assistant", "content": f"{text.upper()} is part of Jolie."}]}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """train/valid/test chat JSONL like SDG's output, small."""
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("eval-data")
    for name, count in (("train", 16), ("valid", 4), ("test", 6)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(_record(rng)) + "\n" for _ in range(count)))
    return folder


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "tiny.yaml"
    path.write_text(PROMPTS)
    return path


@pytest.fixture(scope="module")
def swept(tiny_llama, tiny_data, prompt_file, tmp_path_factory):
    """One real sweep (2 and 4 iterations) on the tiny llama, shared by the tests that read its output."""
    from mlxlab.evaluate.evaluation import sweep

    out = tmp_path_factory.mktemp("sweep")
    return sweep(tiny_llama, tiny_data, out, iters=[2, 4], prompts=prompt_file, k=2, max_tokens=12,
                 quiet=True, train_overrides={"learning_rate": 5e-3, "batch_size": 4, "steps_per_eval": 0})


# ---------------------------------------------------------------------------------------------- unit

@pytest.mark.parametrize("text, score", [
    ("[Start of Rationale]\nGood.\n[End of Rationale]\n[Start of Score]\n4\n[End of Score]", 4),
    ("[start of score] 5 [end of score]", 5),
    ("Score: 3", 3),
    ("I'd give it 2/5 because it is vague.", 2),
    ("Rating: **0**", 0),
    ("2", 2),
    ("between 2 and 4", None),
    ("7", None),
    ("", None),
    ("\x00\x01 ports ports ports", None),
    (None, None),
])
def test_parse_judgement(text, score):
    from mlxlab.evaluate.evaluation import parse_judgement

    got, rationale = parse_judgement(text)
    assert got == score
    if text and "Rationale" in text:
        assert rationale == "Good."


def test_default_prompt_set_is_the_papers():
    from mlxlab.evaluate.prompt_sets import read_prompt_set

    pset = read_prompt_set()
    assert [p.id for p in pset.prompts] == ["rest_api", "processes_sessions", "database", "hello_world", "calculator"]
    assert pset.prompts[0].messages[-1]["content"].startswith("How does Jolie handle REST API's?")
    assert all(p.reference for p in pset.prompts) and "5:" in pset.rubric


@pytest.mark.parametrize("text, line, needle", [
    ("prompts:\n  - id: a\n    prompt: hi\n  - id: b\n    promt: typo\n", 5, "unknown key 'promt'"),
    ("prompts:\n  - id: a\n    prompt: hi\n  - id: a\n    prompt: again\n", 4, "duplicate prompt id 'a'"),
    ("name: x\nprompts: []\n", 2, "non-empty list"),
    ("prompts:\n  - id: a\n    prompt: [1, 2]\n", 3, "must be non-empty text"),
    ("prompts:\n  - id: a\n    prompt: 'unclosed\n", 4, "invalid YAML"),
])
def test_prompt_set_errors_name_file_and_line(tmp_path, text, line, needle):
    from mlxlab.evaluate.prompt_sets import read_prompt_set

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MlxlabError) as info:
        read_prompt_set(path)
    assert needle in str(info.value)
    assert info.value.path == path and info.value.line == line


def test_summary_aggregates_judge_manual_and_rouge():
    from mlxlab.evaluate.evaluation import summarize

    rows = [{"id": f"a{i}", "model": "m", "iteration": 3, "prompt": "p" if i < 2 else "q", "sample": i,
             "rouge_l": 0.5, "judge_score": s, "judge_raw": "x"} for i, s in enumerate([4, None, 2])]
    summary = summarize(rows, {"m": {"heldout_loss": 1.5, "perplexity": 4.48, "heldout_tokens": 10}})
    m = summary["models"]["m"]
    # the unparsed verdict falls back to 5 x ROUGE-L for the score but counts as unparsed for the judge
    assert summary["score_kind"] == "mixed: judge, rouge_l"
    assert m["judge"]["mean"] == 3.0 and m["judge"]["n"] == 2 and m["judge_unparsed"] == 1
    assert m["prompts"]["p"]["mean"] == pytest.approx((4 + 2.5) / 2) and m["prompts"]["q"]["max"] == 2
    assert m["heldout_loss"] == 1.5 and m["iteration"] == 3
    graded = summarize(rows, {}, {"a0": 1, "a1": 1, "a2": 1})
    assert graded["score_kind"] == "manual" and graded["models"]["m"]["score"]["mean"] == 1.0


def test_scripted_judge_outputs_counted(prompt_file):
    from mlxlab.config import EvalConfig
    from mlxlab.evaluate.evaluation import judge_rows
    from mlxlab.evaluate.prompt_sets import read_prompt_set
    from mlxlab.teacher.completions import Completion
    from mlxlab.teacher.teacher import Teacher

    class Scripted(Teacher):
        def __init__(self, outputs):
            self.outputs = outputs

        def generate(self, prompts, **_):
            return [[Completion(o, 1, "stop")] for o in self.outputs[:len(prompts)]]

    pset = read_prompt_set(prompt_file)
    rows = [{"prompt": "ports", "answer": "a"}, {"prompt": "services", "answer": ""}, {"prompt": "ports", "answer": "b"}]
    unparsed = judge_rows(rows, {p.id: p for p in pset.prompts}, pset.rubric,
                          Scripted(["Score: 5", "%%%% no idea", "[Start of Score] 1 [End of Score]"]), EvalConfig())
    assert unparsed == 1 and [r["judge_score"] for r in rows] == [5, None, 1]


# ---------------------------------------------------------------------------------------------- real models

def test_sweep_writes_plots_table_and_heldout_loss(swept):
    assert sorted(swept.train.checkpoints) == [2, 4]
    for name in ("per_prompt", "mean", "side_by_side", "loss", "heldout_loss"):
        assert swept.plots[name].is_file() and swept.plots[name].read_bytes()[:4] == b"\x89PNG"
    assert set(swept.heldout_loss) == {0, 2, 4} and all(v > 0 for v in swept.heldout_loss.values())
    assert swept.heldout_loss[4] < swept.heldout_loss[0]       # training on the same kind of data helps
    table = swept.table.read_text()
    assert "5 x ROUGE-L" in table and "| iter 4 | 4 |" in table and "held-out loss" in table.lower()
    rows = [json.loads(line) for line in swept.eval.results.read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2                              # models x prompts x k
    assert {r["model"] for r in rows} == {"base", "iter 2", "iter 4"}
    summary = json.loads(swept.eval.summary_path.read_text())
    assert summary["score_kind"] == "rouge_l" and summary["models"]["iter 4"]["heldout_tokens"] > 0
    report = swept.report.read_text(encoding="utf-8")           # one page: training, plots, answers
    assert swept.report == swept.output / "report.html" and report.count("data:image/png;base64,") == 6
    assert all(f"{label} (iteration {it})" in report for label, it in (("base", 0), ("iter 2", 2), ("iter 4", 4)))


def test_answers_repeat_with_fixed_seeds(swept, tiny_llama, prompt_file, tmp_path):
    from mlxlab.evaluate.evaluation import evaluate

    ckpt = swept.train.checkpoints[2]
    again = evaluate({"iter 2": (tiny_llama, ckpt)}, prompt_file, output=tmp_path, k=2, max_tokens=12, quiet=True)
    first = [r["answer"] for r in map(json.loads, swept.eval.results.read_text().splitlines()) if r["model"] == "iter 2"]
    assert [r["answer"] for r in map(json.loads, again.results.read_text().splitlines())] == first


def test_missing_checkpoint_is_a_clear_error(tiny_llama, swept, tmp_path):
    from mlxlab.evaluate.evaluation import evaluate

    with pytest.raises(MlxlabError) as info:
        evaluate({"base": tiny_llama, "gone": (tiny_llama, tmp_path / "checkpoints" / "iter_000999")},
                 output=tmp_path / "eval")
    assert "checkpoint not found" in str(info.value) and "iter_000999" in str(info.value)
    assert not (tmp_path / "eval" / "results.jsonl").exists()


def test_garbage_judge_is_counted_not_fatal(tiny_llama, make_tiny_model, prompt_file, tmp_path):
    from mlxlab.evaluate.evaluation import evaluate

    judge = make_tiny_model("qwen2", tmp_path / "judge", seed=3)   # a random model: its verdicts are noise
    result = evaluate({"base": tiny_llama}, prompt_file, output=tmp_path / "eval", k=1, max_tokens=8,
                      judge=str(judge), judge_max_tokens=16, quiet=True)
    rows = [json.loads(line) for line in result.results.read_text().splitlines()]
    assert len(rows) == 2 and all("judge_raw" in r for r in rows)
    assert result.judge_unparsed == sum(r["judge_score"] is None for r in rows) >= 1
    assert result.summary["models"]["base"]["judge_unparsed"] == result.judge_unparsed


def test_manual_grading_blind_interrupted_and_resumed(swept, tmp_path):
    import shutil

    from mlxlab.evaluate.evaluation import grade

    shutil.copytree(swept.output, tmp_path / "sweep")
    out = tmp_path / "sweep" / "eval"
    total = len(swept.eval.results.read_text().splitlines())
    screen = io.StringIO()
    first = grade(out, input=io.StringIO("4\nbanana\n3\ns\nq\n"), out=screen)
    shown = screen.getvalue()
    assert first.graded == 2 and first.total == total
    assert "not a grade" in shown
    headers = [line for line in shown.splitlines() if line.startswith("===")]
    assert headers and not any(label in h for h in headers for label in ("base", "iter"))      # blind
    second = grade(out, input=io.StringIO("".join(f"{i % 6}\n" for i in range(total))), out=io.StringIO())
    assert second.graded == total                      # the skipped answer comes back, nothing twice
    lines = [json.loads(line) for line in (out / "grades.jsonl").read_text().splitlines()]
    assert len(lines) == total and len({g["id"] for g in lines}) == total
    summary = json.loads((out / "summary.json").read_text())
    assert summary["score_kind"] == "manual" and summary["models"]["iter 4"]["manual"]["n"] == 4
    assert summary["models"]["iter 4"]["heldout_loss"] is not None      # grading keeps the measured losses
    table = (tmp_path / "sweep" / "summary.md").read_text()             # the sweep's table and plots follow
    assert "mean grade over graders" in table and "Graders: default" in table


def test_cli_eval_run_and_grade(tiny_llama, prompt_file, tmp_path, capsys):
    from mlxlab.cli import main

    out = tmp_path / "eval"
    assert main(["eval", "run", f"tiny={tiny_llama}", "--prompts", str(prompt_file), "--output", str(out),
                 "--k", "1", "--max-tokens", "4"]) == 0
    assert (out / "summary.json").is_file() and "tiny" in capsys.readouterr().out
    assert main(["eval", "run", f"x={tiny_llama}@{tmp_path / 'nope'}", "--output", str(out)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_gguf_answers_through_llama_cpp(smollm2_gguf, prompt_file, tmp_path):
    from mlxlab.evaluate.evaluation import evaluate

    result = evaluate({"gguf": str(smollm2_gguf)}, prompt_file, output=tmp_path, k=1, max_tokens=6, quiet=True)
    rows = [json.loads(line) for line in result.results.read_text().splitlines()]
    assert len(rows) == 2 and all(r["tokens"] > 0 and r["answer"] for r in rows)
    assert result.summary["models"]["gguf"]["heldout_loss"] is None     # no MLX model to measure


@pytest.mark.parametrize("content, message", [(b"prompts:\n  - id: a\n    prompt: caf\xe9\n", "cannot read the prompt set"),
                                              (None, "the prompt set not found")])
def test_unreadable_or_missing_prompt_set_is_a_clear_error(tmp_path, content, message):
    from mlxlab.errors import MlxlabError
    from mlxlab.evaluate.prompt_sets import read_prompt_set

    path = tmp_path / "prompts.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MlxlabError, match=message) as err:
        read_prompt_set(path)
    assert str(err.value).startswith(str(path))


# ---------------------------------------------------------------------------------------------- several graders

def _quality(row: dict) -> int:
    return row["quality"]                 # the grade a test grader gives (small_eval sets it per answer)


def test_several_graders_blind_orders_resume_and_agreement(small_eval):
    import krippendorff
    import numpy as np

    from mlxlab.evaluate.evaluation import grade, read_results

    rows = {r["id"]: r for r in read_results(small_eval)}
    # an old grades file, from before graders had names: its lines belong to grader "default"
    first = sorted(rows)[0]
    (small_eval / "grades.jsonl").write_text(json.dumps({"id": first, "grade": 2, "time": 0}) + "\n")

    def answers(grader: str, shift: int, count: int) -> tuple[list[str], object]:
        """Grade `count` answers as `grader` (grade = quality - shift); the answer ids in the order shown."""
        screen, shown = io.StringIO(), []

        class Keys(io.StringIO):
            """A person at the keyboard: reads the answer on the screen, types its grade, then q."""

            def readline(self):
                text = screen.getvalue().rsplit("--- answer ---\n", 1)[1].rsplit("\ngrade (0-5", 1)[0]
                answer = next(r for r in rows.values() if (r["answer"].strip() or "(empty)") == text.strip())
                shown.append(answer["id"])
                return f"{max(0, _quality(answer) - shift)}\n" if len(shown) <= count else "q\n"

        result = grade(small_eval, grader=grader, input=Keys(), out=screen)
        assert "reference answer" in screen.getvalue()        # shown where the prompt has one
        return shown[:count], result

    alice, _ = answers("alice", 0, 3)
    bob, _ = answers("bob", 1, 8)
    assert alice != bob[:3]                                   # each grader has their own blind order
    again, result = answers("alice", 0, 8)
    assert not set(again) & set(alice) and len(alice + again[:5]) == 8 == result.graded   # resumed, nothing twice
    lines = [json.loads(line) for line in (small_eval / "grades.jsonl").read_text().splitlines()]
    assert {(g.get("grader"), len([x for x in lines if x.get("grader") == g.get("grader")])) for g in lines} == {
        (None, 1), ("alice", 8), ("bob", 8)}

    summary = json.loads((small_eval / "summary.json").read_text())
    assert summary["graders"] == ["alice", "bob", "default"] and summary["score_kind"] == "manual"
    for answer, row in rows.items():
        given = [_quality(row), max(0, _quality(row) - 1)] + ([2] if answer == first else [])
        assert summary["answers"][answer]["mean"] == pytest.approx(sum(given) / len(given))
    base = summary["models"]["base"]
    assert base["graders"]["graders"] == 3 and base["graders"]["std"] > 0
    assert base["prompt_graders"]["ports"]["per_grader"]["alice"] == pytest.approx(
        np.mean([_quality(r) for r in rows.values() if r["model"] == "base" and r["prompt"] == "ports"]))
    assert base["heldout_loss"] == 2.5                        # grading keeps the measured losses
    ids = sorted(rows)
    data = [[_quality(rows[a]) for a in ids], [max(0, _quality(rows[a]) - 1) for a in ids],
            [2 if a == first else np.nan for a in ids]]
    expected = krippendorff.alpha(reliability_data=np.array(data, dtype=float), level_of_measurement="ordinal",
                                  value_domain=list(range(6)))
    assert summary["agreement"]["alpha"] == pytest.approx(expected) and summary["agreement"]["answers"] == 8
    table = (small_eval / "summary.md").read_text()
    assert "Krippendorff's alpha (ordinal)" in table and "alice, bob, default" in table


def test_agreement_undefined_is_null_with_a_reason():
    from mlxlab.evaluate.evaluation import summarize
    from mlxlab.evaluate.grading import agreement

    rows = [{"id": f"a{i}", "model": "m", "iteration": 0, "prompt": "p", "sample": i, "rouge_l": None}
            for i in range(3)]
    one = summarize(rows, {}, {"alice": {"a0": 3, "a1": 4}})
    assert one["agreement"]["alpha"] is None and "two graders" in one["agreement"]["reason"]
    assert one["models"]["m"]["graders"]["std"] == 0.0 and one["answers"]["a0"]["mean"] == 3.0
    apart = agreement({"alice": {"a0": 3}, "bob": {"a1": 4}})
    assert apart["alpha"] is None and "no answer was graded by two" in apart["reason"]
    same = agreement({"alice": {"a0": 3, "a1": 3}, "bob": {"a0": 3, "a1": 3}})
    assert same["alpha"] is None and "undefined" in same["reason"]
    assert summarize(rows, {})["agreement"]["alpha"] is None


def test_same_grader_twice_at_once_is_refused(small_eval):
    from mlxlab.evaluate.evaluation import grade
    from mlxlab.evaluate.grading import GraderLock

    with GraderLock(small_eval, "alice"):
        with pytest.raises(MlxlabError, match="already grading"):
            grade(small_eval, grader="alice", input=io.StringIO("3\n"), out=io.StringIO())
        assert grade(small_eval, grader="bob", input=io.StringIO("3\nq\n"), out=io.StringIO()).graded == 1
    with pytest.raises(MlxlabError, match="needs a name"):
        grade(small_eval, grader="  ", input=io.StringIO(""), out=io.StringIO())


def test_cli_grade_with_grader(small_eval, monkeypatch, capsys):
    from mlxlab.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("5\n4\nq\n"))
    assert main(["eval", "grade", "--grader", "carol", "--output", str(small_eval)]) == 0
    shown = capsys.readouterr().out
    assert "carol: 2 of 8 answers graded" in shown and "alpha (ordinal): undefined (needs two graders" in shown
    lines = [json.loads(line) for line in (small_eval / "grades.jsonl").read_text().splitlines()]
    assert [(g["grader"], g["grade"]) for g in lines] == [("carol", 5), ("carol", 4)]
