"""`report.html`: one self-contained page of a run, opened in headless Chromium; missing parts are notes; the CLI.

The run folder is built from files in the formats the stages write (manifest.json, data/report.json, the training
log and result, an evaluation with two graders), and the plots are drawn by the plots module itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlxlab.errors import MlxlabError
from mlxlab.evaluate.grading import DEFAULT_GRADER
from mlxlab.evaluate.report import grades_by_grader, write_report

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"base": 0, "iter 100": 100, "iter 250": 250}
PROMPTS = {"ports": ("What is an output port?", "An output port tells a Jolie service how to call another one."),
           "services": ("What is a service in Jolie?", "A program that offers operations through ports."),
           "heldout-0": ("What is an interface?", None)}
# model output is untrusted text: markup in it must show as text, never run
HOSTILE = "<script>window.injected = 1</script><img src=x onerror=\"window.injected=2\"> & </td></table>"


def _answer(model: str, prompt: str, sample: int) -> str:
    if (model, prompt, sample) == ("iter 250", "ports", 1):
        return HOSTILE
    return f"{model} says about {prompt} (sample {sample}): an output port calls another service."


def _stages() -> dict:
    stages = {}
    for n, stage in enumerate(("validate", "generate", "train", "fuse", "export", "eval")):
        stages[stage] = {"status": "done", "inputs_hash": "0123456789abcdef", "inputs": {"settings": {}},
                         "started": "2026-12-07T10:00:00+00:00", "finished": "2026-12-07T10:05:00+00:00",
                         "seconds": 1.5 + 10 * n, "outputs": {}, "figures": {}}
    return {"version": 1, "name": "tiny", "model": "smollm2", "teacher": "smollm2", "taxonomy": "taxonomy",
            "world_size": 1, "stages": stages, "updated": "2026-12-07T10:06:00+00:00"}


def _sdg_report() -> dict:
    leaf = {"leaf": "knowledge/programming/jolie", "kind": "knowledge", "duplicates": 2, "capped": 0, "kept": 41,
            "tokens": 5123, "seconds": 80.2, "notes": ["3 passages asked again: their document changed"],
            "prompt_style": "fewshot", "scorer": "likelihood", "seeds": {"train": 4, "valid": 1, "test": 1},
            "gates": {"leakage": 3, "truncated": 1}, "gate_examples": {}, "scores": {},
            "stages": [{"stage": "generate", "sent": 60, "parsed": 58, "unparsed": 2, "passed": 58},
                       {"stage": "gates", "sent": 58, "parsed": 58, "unparsed": 0, "passed": 54}]}
    skill = {**leaf, "leaf": "compositional_skills/jolie_terms", "kind": "freeform_skill", "kept": 7, "notes": [],
             "stages": [{"stage": "generate", "sent": 10, "parsed": 10, "unparsed": 0, "passed": 9}]}
    return {"taxonomy": "taxonomy", "teacher": "smollm2", "backend": "llama-cpp-batch", "seed": 0, "seconds": 95.0,
            "generated_tokens": 6000, "tokens_per_second": 63.2, "files": {}, "leaves": [leaf, skill]}


def _training(folder: Path) -> None:
    folder.mkdir(parents=True)
    rows = [{"iter": 0, "val_loss": 2.9, "general_loss": 1.8, "phase": 1}]
    rows += [{"iter": i, "loss": 3.0 - i / 150, "lr": 2e-4, "tokens": 900, "phase": 1} for i in range(10, 260, 10)]
    rows += [{"iter": i, "val_loss": 2.8 - i / 400, "general_loss": 1.8 + i / 2000, "phase": 1}
             for i in (50, 100, 150, 200, 250)]
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iter": 26')  # torn
    result = {"adapters": str(folder), "checkpoints": {"100": str(folder / "checkpoints" / "iter_000100")},
              "final_loss": 1.35, "val_loss": 2.17, "tokens_per_second": 850.0, "peak_memory_gb": 1.2, "padding_fraction": 0.1,
              "num_iters": 250, "num_epochs": 1.2, "truncated": 0, "dropped": 0,
              "log": str(folder / "train_log.jsonl"),
              "loss_plot": None, "best_iter": 200, "best_reason": "iteration 200: lowest val_loss 2.3000",
              "general_loss": 1.9, "general_base_loss": 1.8, "stopped_early": None, "world_size": 1}
    (folder / "result.json").write_text(json.dumps(result, indent=2))


def _evaluation(folder: Path, train_log: Path) -> None:
    """results.jsonl, prompts.json, grades.jsonl (two graders and one unnamed), summary.json with agreement, PNGs."""
    from mlxlab.evaluate.evaluation import read_grades, summarize
    from mlxlab.evaluate.plots import sweep_plots

    folder.mkdir(parents=True)
    rows = [{"id": f"{m}-{p}-{s}".replace(" ", ""), "model": m, "iteration": it, "prompt": p, "sample": s,
             "seed": s, "answer": _answer(m, p, s), "tokens": 12, "finish_reason": "stop",
             "rouge_l": 0.2 + it / 1000 if PROMPTS[p][1] else None}
            for m, it in MODELS.items() for s in (0, 1) for p in PROMPTS]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "prompts.json").write_text(json.dumps(
        {p: {"messages": [{"role": "user", "content": q}], "reference": ref, "source": "tiny.yaml"}
         for p, (q, ref) in PROMPTS.items()}))
    grades = [{"id": r["id"], "grade": (n + g) % 6, "grader": grader, "time": 1.0}
              for n, r in enumerate(rows) for g, grader in enumerate(("ada", "bob"))]
    grades.append({"id": rows[0]["id"], "grade": 5, "time": 2.0})        # an older record: no grader field
    (folder / "grades.jsonl").write_text("".join(json.dumps(g) + "\n" for g in grades) + "{torn")
    losses = {m: {"heldout_loss": 2.5 - it / 500, "perplexity": 10.0, "heldout_tokens": 300}
              for m, it in MODELS.items()}
    summary = summarize(rows, losses, read_grades(folder / "grades.jsonl"))
    summary.update(losses=losses)               # the agreement is the real summary's (grading.agreement)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    sweep_plots(summary, train_log, folder)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run's folder: manifest, SDG report, training log and result, evaluation with plots."""
    run = tmp_path / "runs" / "tiny"
    (run / "data").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(_stages(), indent=2))
    (run / "data" / "report.json").write_text(json.dumps(_sdg_report(), indent=2))
    _training(run / "adapters")
    _evaluation(run / "eval", run / "adapters" / "train_log.jsonl")
    return run


def test_grades_are_kept_per_grader_and_an_unnamed_grade_is_its_own_grader(run_dir):
    grades = grades_by_grader(run_dir / "eval" / "grades.jsonl")
    assert len(grades) == len(MODELS) * len(PROMPTS) * 2
    first = grades["base-ports-0"]
    assert first == {"ada": 0, "bob": 1, DEFAULT_GRADER: 5}


def test_report_of_a_run_renders_in_the_browser_with_everything(run_dir, browser):
    page = write_report(run_dir)
    assert page == run_dir / "report.html"
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*['"]?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert "<script>window.injected" not in html and "&lt;script&gt;window.injected" in html

    browser.get(page.as_uri())
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    text = browser.find_element("tag name", "body").text
    for pid, (question, _) in PROMPTS.items():
        assert pid in text and question in text
    for label, iteration in MODELS.items():
        assert f"{label} (iteration {iteration})" in text
    alpha = json.loads((run_dir / "eval" / "summary.json").read_text())["agreement"]["alpha"]
    for needle in ("Stages and times", "knowledge/programming/jolie", "54", "iteration 200: lowest val_loss",
                   "Agreement between graders", f"{alpha:.3f}", "ordinal", "ada: 0", "bob: 1",
                   f"graders: ada, bob, {DEFAULT_GRADER}"):
        assert needle in text, needle
    assert HOSTILE.split("<img")[0] in text                              # the markup shows as text
    assert browser.execute_script("return window.injected === undefined")
    images = browser.find_elements("tag name", "img")
    assert len(images) == 6                                              # training curve + 5 plots
    widths = browser.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 0 for w in widths), widths
    if os.environ.get("MLXLAB_SCREENSHOTS") == "1":                     # the README's picture
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1280, min(height + 40, 6000))
        out = ROOT / "benchmarks" / "results" / "report.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(out))


def test_missing_parts_are_notes_not_errors(run_dir, tmp_path):
    (run_dir / "manifest.json").unlink()
    (run_dir / "data" / "report.json").write_text("{not json")
    (run_dir / "eval" / "summary.json").unlink()
    for png in (run_dir / "eval").glob("*.png"):
        png.unlink()
    html = write_report(run_dir).read_text(encoding="utf-8")
    assert "No manifest.json here" in html and "No data/report.json here" in html and "No plots here" in html
    assert "iter 250 (iteration 250)" in html                           # the answers are still there

    evaluation = tmp_path / "only-answers"
    evaluation.mkdir()
    (evaluation / "results.jsonl").write_text(json.dumps(
        {"id": "a", "model": "m", "prompt": "p", "sample": 0, "answer": "hi"}) + "\n")
    html = write_report(evaluation).read_text(encoding="utf-8")
    assert "No train_log.jsonl here" in html and "m (iteration 0)" in html and "not graded" in html


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(MlxlabError, match="no such folder") as missing:
        write_report(tmp_path / "nope")
    assert missing.value.path == tmp_path / "nope" and missing.value.hint
    with pytest.raises(MlxlabError, match="nothing to report here") as empty:
        write_report(tmp_path)
    assert empty.value.path == tmp_path and "mlxlab run" in empty.value.hint


def test_cli_eval_report(run_dir, tmp_path, capsys, monkeypatch):
    from mlxlab.cli import main

    assert main(["eval", "report", str(run_dir / "eval")]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "eval" / "report.html")
    monkeypatch.chdir(run_dir)                                           # the default: the run we stand in
    assert main(["eval", "report"]) == 0
    assert capsys.readouterr().out.strip() == "report.html" and (run_dir / "report.html").is_file()

    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")                                # no run here, and no eval/ either
    assert main(["eval", "report"]) == 1
    assert "eval: no such folder" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-m", "mlxlab", "eval", "report", str(tmp_path / "empty")],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1 and str(tmp_path / "empty") in out.stderr and "hint:" in out.stderr
