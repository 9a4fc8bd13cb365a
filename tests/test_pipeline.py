"""`mlxlab run`: every stage end to end on a tiny configuration (the embedded SmolLM2 teaching a tiny llama),
a rerun that skips everything, `--from train`, SIGKILL during training and a resume that loses nothing, and
the errors for bad settings, a missing upstream stage and an invalid taxonomy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlxlab.errors import MlxlabError
from mlxlab.pipeline import STAGES, plan_run, read_manifest, run

SKILL = """\
version: 3
created_by: tester
task_description: Explain one idea of the Jolie programming language in one sentence.
seed_examples:
  - question: What is a service in Jolie?
    answer: A service is a program that offers operations to other programs through ports.
  - question: What is an input port in Jolie?
    answer: An input port says where a service listens and which operations it offers.
  - question: What is an output port in Jolie?
    answer: An output port says how a service reaches and calls another service.
  - question: What is an interface in Jolie?
    answer: An interface lists the operations of a service and the types of their messages.
  - question: What is a one-way operation in Jolie?
    answer: A one-way operation receives a message and sends no reply back to the caller.
"""

# Tiny sizes: each stage runs for real, in seconds. Low thresholds keep the 135M teacher's samples.
CONFIG = """\
run:
  samples_per_seed: 1
  max_tokens: 24
  num_iters: 6
  save_every: 2
  k: 1
  answer_tokens: 8
generate:
  judge_max_tokens: 8
  question_threshold: 0
  pair_threshold: 1
  batch_size: 5
train:
  batch_size: 2
  max_seq_length: 128
eval:
  max_seq_length: 128
"""


def make_taxonomy(root: Path) -> Path:
    """A valid one-leaf taxonomy (a freeform skill)."""
    leaf = root / "compositional_skills" / "programming" / "jolie_terms"
    leaf.mkdir(parents=True)
    (leaf / "qna.yaml").write_text(SKILL)
    return root


def _cli(tmp: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlxlab", "--config", str(tmp / "mlxlab.yaml"), "run", "tiny", "--runs-dir",
            str(tmp / "runs"), "--taxonomy", str(tmp / "taxonomy"), "--model", str(model), *extra]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_llama, smollm2_dir):
    """A finished tiny run through the CLI: (tmp folder, completed process)."""
    tmp = tmp_path_factory.mktemp("pipeline")
    make_taxonomy(tmp / "taxonomy")
    (tmp / "mlxlab.yaml").write_text(CONFIG)
    proc = subprocess.run(_cli(tmp, tiny_llama, "--quiet"), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, proc


def _again(tmp: Path, model: Path, quiet: bool = True, **kwargs):
    return run("tiny", runs_dir=tmp / "runs", taxonomy=tmp / "taxonomy", model=model,
               config_file=tmp / "mlxlab.yaml", quiet=quiet, **kwargs)


@pytest.mark.slow
def test_run_end_to_end_writes_a_complete_manifest(tiny_run):
    tmp, proc = tiny_run
    run_dir = tmp / "runs" / "tiny"
    manifest = read_manifest(run_dir)
    assert list(manifest["stages"]) == list(STAGES)
    for stage, record in manifest["stages"].items():
        assert record["status"] == "done" and record["seconds"] >= 0 and len(record["inputs_hash"]) == 16
        assert record["inputs"]["settings"], stage
        for path in record["outputs"].values():
            assert (run_dir / path).exists(), (stage, path)
    assert manifest["stages"]["generate"]["inputs"]["files"]           # the taxonomy's content hashes
    assert manifest["stages"]["train"]["figures"]["num_iters"] == 6     # the run's sizing from the file
    gguf = run_dir / manifest["stages"]["export"]["outputs"]["gguf"]
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 0
    assert manifest["stages"]["export"]["figures"]["top1_agreement"] > 0.5
    models = manifest["stages"]["eval"]["figures"]["models"]
    assert set(models) == {"base", "trained"} and all(m["heldout_loss"] > 0 for m in models.values())
    for name in ("config.yaml", "data/train.jsonl", "adapters/adapters.safetensors", "fused/config.json",
                 "eval/summary.json", "eval/mean.png", "report.html"):
        assert (run_dir / name).exists(), name
    assert "gguf" in proc.stdout and "held-out loss" in proc.stdout and str(gguf.name) in proc.stdout
    assert f"report: {run_dir / 'report.html'}" in proc.stdout


@pytest.mark.slow
def test_rerun_skips_every_stage_and_from_train_redoes_the_rest(tiny_run, tiny_llama, capsys):
    tmp, _ = tiny_run
    before = read_manifest(tmp / "runs" / "tiny")["stages"]
    again = _again(tmp, tiny_llama, quiet=False)
    assert again.ran == [] and again.skipped == list(STAGES)
    assert read_manifest(tmp / "runs" / "tiny")["stages"] == before
    out = capsys.readouterr()
    assert out.err.count("skipped, inputs unchanged") == len(STAGES) and "held-out loss" in out.out
    redo = _again(tmp, tiny_llama, from_stage="train")
    assert redo.skipped == ["validate", "generate"] and redo.ran == ["train", "fuse", "export", "eval"]
    after = read_manifest(tmp / "runs" / "tiny")["stages"]
    assert after["train"]["started"] >= before["train"]["finished"]
    assert after["generate"] == before["generate"]
    # same data and seed: the redone training reaches the same loss
    assert after["train"]["figures"]["final_loss"] == pytest.approx(before["train"]["figures"]["final_loss"],
                                                                      rel=1e-4)
    assert redo.gguf is not None and redo.gguf.is_file()


@pytest.mark.slow
def test_sigkill_during_train_then_rerun_resumes(tiny_run, tiny_llama, tmp_path):
    src, _ = tiny_run
    for name in ("taxonomy", "mlxlab.yaml"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, tmp_path / name)
    shutil.copytree(src / "runs", tmp_path / "runs")          # a copied run folder is still finished
    # more iterations: the train stage's inputs change, so it runs (and can be killed) while the others wait
    command = _cli(tmp_path, tiny_llama, "--num-iters", "200", "--save-every", "5", "--patience", "0", "--quiet")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "runs" / "tiny" / "adapters" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (checkpoints / "iter_000010" / "state.json").is_file():     # the copy holds 2, 4 and 6 only
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = read_manifest(tmp_path / "runs" / "tiny")["stages"]
    assert killed["train"]["status"] == "running" and killed["generate"]["status"] == "done"

    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = read_manifest(tmp_path / "runs" / "tiny")["stages"]
    assert all(stages[s]["status"] == "done" for s in STAGES)
    assert stages["train"]["figures"]["resumed_from"] >= 5          # continued from the checkpoint on disk
    assert stages["train"]["figures"]["num_iters"] == 200
    assert stages["generate"] == killed["generate"]                  # data untouched
    log = (tmp_path / "runs" / "tiny" / "adapters" / "train_log.jsonl").read_text().splitlines()
    steps = [json.loads(line)["iter"] for line in log if '"loss"' in line]
    assert steps[-1] == 200 and (tmp_path / "runs" / "tiny" / "gguf" / "tiny-q8_0.gguf").is_file()


# ---------------------------------------------------------------------------------------------- settings and errors

def test_settings_precedence(tmp_path):
    (tmp_path / "c.yaml").write_text("run:\n  num_iters: 9\n  k: 1\ntrain:\n  num_iters: 7\n  learning_rate: 0.001\n")
    plan = plan_run("x", runs_dir=tmp_path / "runs", config_file=tmp_path / "c.yaml", taxonomy="tax",
                    samples_per_seed=3, train={"batch_size": 1}, eval={"k": 2})
    gen, tr, ev = plan.configs["generate"], plan.configs["train"], plan.configs["eval"]
    assert gen.samples_per_seed == 3 and gen.taxonomy == "tax" and gen.output == str(tmp_path / "runs" / "x" / "data")
    assert tr.num_iters == 7 and tr.learning_rate == 0.001 and tr.batch_size == 1    # file's train section wins
    assert tr.save_every == plan.run.save_every                                        # run sizing
    assert ev.k == 2 and ev.test == str(tmp_path / "runs" / "x" / "data" / "test.jsonl")
    assert plan.model == "smollm2" and gen.teacher == "smollm2"


def test_epochs_or_iterations_from_any_level(tmp_path):
    # a run trains by epochs by default; the file's train section may give either length, and it replaces both
    plan = plan_run("x", runs_dir=tmp_path / "runs", config_file=None)
    assert plan.configs["train"].num_epochs == plan.run.num_epochs and plan.configs["train"].num_iters is None
    assert plan.configs["train"].keep_best and plan.configs["train"].patience == plan.run.patience
    (tmp_path / "e.yaml").write_text("train:\n  num_epochs: 1.5\n")
    tr = plan_run("x", runs_dir=tmp_path / "runs", config_file=tmp_path / "e.yaml").configs["train"]
    assert tr.num_epochs == 1.5 and tr.num_iters is None
    (tmp_path / "i.yaml").write_text("train:\n  num_iters: 12\n")
    tr = plan_run("x", runs_dir=tmp_path / "runs", config_file=tmp_path / "i.yaml").configs["train"]
    assert tr.num_iters == 12 and tr.num_epochs is None
    tr = plan_run("x", runs_dir=tmp_path / "runs", config_file=None, num_iters=30).configs["train"]
    assert tr.num_iters == 30 and tr.num_epochs is None
    tr = plan_run("x", runs_dir=tmp_path / "runs", config_file=None, train={"num_epochs": 3}).configs["train"]
    assert tr.num_epochs == 3 and tr.num_iters is None


@pytest.mark.slow
def test_run_trains_by_epochs_from_the_config_file(tiny_llama, smollm2_dir, tmp_path):
    make_taxonomy(tmp_path / "taxonomy")
    (tmp_path / "mlxlab.yaml").write_text(CONFIG.replace("  num_iters: 6\n", "").replace("train:\n", "train:\n  num_epochs: 2\n"))
    result = run("ep", runs_dir=tmp_path / "runs", taxonomy=tmp_path / "taxonomy", model=tiny_llama,
                 config_file=tmp_path / "mlxlab.yaml", quiet=True, stages=["validate", "generate", "train"],
                 patience=0, replay=True)
    figures = result.stages["train"]["figures"]
    train_records = len((tmp_path / "runs" / "ep" / "data" / "train.jsonl").read_text().splitlines())
    assert figures["num_epochs"] == pytest.approx(2.0) and figures["num_iters"] == 2 * -(-train_records // 2)
    assert figures["best_iter"] is not None and "lowest" in figures["best_reason"]
    assert figures["general_base_loss"] > 0          # hand-written general chat, watched for forgetting
    replay = (tmp_path / "runs" / "ep" / "data" / "replay.jsonl").read_text().splitlines()
    assert replay and all(json.loads(line)["metadata"]["source"] == "replay" for line in replay)


def test_phase_2_only_where_the_mix_holds_something_new(tmp_path):
    from mlxlab.pipeline import plan_phases

    def write(path: Path, *contents: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": c},
                                                         {"role": "assistant", "content": "a"}],
                                            "metadata": {"source": c}}) + "\n" for c in contents))

    data = tmp_path / "data"
    write(data / "train.jsonl", "seed", "generated skill")
    assert plan_phases(data) is None                                   # no knowledge: one training on the mix
    write(data / "phase1" / "train.jsonl", "seed", "back-translated")
    assert [p["data"] for p in plan_phases(data)] == [str(data / "phase1"), str(data)]     # the skill is new
    write(data / "train.jsonl", "back-translated", "seed")            # metadata and order do not matter
    assert [p["data"] for p in plan_phases(data)] == [str(data / "phase1")]
    assert plan_phases(data, enabled=False) is None


@pytest.mark.slow
def test_run_on_knowledge_alone_trains_phase_1_and_says_phase_2_was_skipped(tiny_llama, smollm2_dir, tmp_path):
    from mlxlab.run_result import summary_rows
    from tests.test_sdg import make_taxonomy as make_knowledge

    tax = make_knowledge(tmp_path / "taxonomy", knowledge=True)
    shutil.rmtree(tax / "compositional_skills")          # knowledge only: the mix holds nothing phase 1 lacks
    (tmp_path / "mlxlab.yaml").write_text(CONFIG)
    result = run("k", runs_dir=tmp_path / "runs", taxonomy=tax, model=tiny_llama, quiet=True,
                 config_file=tmp_path / "mlxlab.yaml", stages=["validate", "generate", "train"])
    report = json.loads((tmp_path / "runs" / "k" / "data" / "report.json").read_text())
    # one question per passage of mars.md: the introduction, Surface and Atmosphere
    assert report["leaves"][0]["stages"][0] == {**report["leaves"][0]["stages"][0], "stage": "questions", "sent": 3}
    figures = result.stages["train"]["figures"]
    assert len(figures["phases"]) == 1 and figures["phase_2"].startswith("skipped")
    adapters = tmp_path / "runs" / "k" / "adapters"
    assert (adapters / "phase_1" / "result.json").is_file() and not (adapters / "phase_2").exists()
    assert (adapters / "adapters.safetensors").is_file()
    assert ("  phase 2", figures["phase_2"]) in summary_rows(result)


def test_phased_run_evaluates_the_trained_model_at_its_iteration_with_every_phase_in_the_curve(tiny_llama,
                                                                                               tmp_path):
    from tests.test_train import write_chat

    data = tmp_path / "runs" / "p" / "data"
    write_chat(data / "phase1", train=6, valid=2, seed=1)
    write_chat(data, train=6, valid=2, seed=2)                   # the mix holds something new: two phases
    shutil.copy(data / "valid.jsonl", data / "test.jsonl")
    (tmp_path / "mlxlab.yaml").write_text(CONFIG)
    result = run("p", runs_dir=tmp_path / "runs", model=tiny_llama, quiet=True, config_file=tmp_path / "mlxlab.yaml",
                 stages=["train", "eval"], num_iters=3, train={"keep_best": False})
    summary = json.loads((tmp_path / "runs" / "p" / "eval" / "summary.json").read_text())
    assert summary["models"]["trained"]["iteration"] == 6 and summary["models"]["base"]["iteration"] == 0
    rows = [json.loads(x) for x in (tmp_path / "runs" / "p" / "adapters" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["iter"], r["phase"]) for r in rows if "loss" in r] == [(i, 1 + (i > 3)) for i in range(1, 7)]
    figures = result.stages["train"]["figures"]
    assert len(figures["phases"]) == 2 and figures["num_iters"] == 6
    assert result.plots["eval_loss"].is_file() and result.plots["train_loss"].parent == tmp_path / "runs" / "p" / \
        "adapters"


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(MlxlabError, match="did you mean 'num_iters'"):
        plan_run(runs_dir=tmp_path, config_file=None, num_iter=3)
    with pytest.raises(MlxlabError, match="unknown stage 'trian'"):
        plan_run(runs_dir=tmp_path, stages=["validate", "trian"])
    with pytest.raises(MlxlabError, match="takes a dict"):
        plan_run(runs_dir=tmp_path, train=5)


def test_missing_upstream_stage_and_invalid_taxonomy(tmp_path):
    make_taxonomy(tmp_path / "taxonomy")
    with pytest.raises(MlxlabError) as info:
        run("r", runs_dir=tmp_path / "runs", taxonomy=tmp_path / "taxonomy", stages=["train"], quiet=True)
    assert "generate stage" in str(info.value) and "train.jsonl" in str(info.value)
    leaf = tmp_path / "taxonomy" / "compositional_skills" / "programming" / "jolie_terms" / "qna.yaml"
    leaf.write_text(SKILL.replace("task_description:", "task_descriptio:"))
    cli = subprocess.run([sys.executable, "-m", "mlxlab", "run", "r", "--runs-dir", str(tmp_path / "runs"),
                          "--taxonomy", str(tmp_path / "taxonomy"), "--stages", "validate"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "qna.yaml:" in cli.stderr and "Traceback" not in cli.stderr
    record = read_manifest(tmp_path / "runs" / "r")["stages"]["validate"]
    assert record["status"] == "failed" and "qna.yaml:" in record["error"]


def test_the_device_section_holds_for_a_python_run(tmp_path, monkeypatch):
    import os

    import mlxlab.device
    from mlxlab.pipeline import run

    (tmp_path / "c.yaml").write_text("device:\n  device: cpu\n  dtype: float32\n  dequantize_on_load: never\n")
    seen = {}
    real_validate = mlxlab.pipeline.RUNNERS["validate"]

    def spy(plan, resume):
        seen.update(device=mlxlab.device.current_device(), dtype=os.environ.get(mlxlab.device.DTYPE_ENV),
                    dequantize=os.environ.get(mlxlab.device.DEQUANTIZE_ENV))
        return real_validate(plan, resume)

    monkeypatch.setitem(mlxlab.pipeline.RUNNERS, "validate", spy)
    for env in (mlxlab.device.DEVICE_ENV, mlxlab.device.DTYPE_ENV, mlxlab.device.DEQUANTIZE_ENV):
        monkeypatch.delenv(env, raising=False)
    run("dev", runs_dir=tmp_path / "runs", config_file=tmp_path / "c.yaml", stages=["validate"], quiet=True,
        taxonomy=str(Path(__file__).resolve().parents[1] / "taxonomy"))
    assert seen == {"device": "cpu", "dtype": "float32", "dequantize": "never"}
    assert os.environ.get(mlxlab.device.DTYPE_ENV) is None          # the process is left as it was


@pytest.mark.slow
def test_run_on_two_ranks_gives_the_same_data_and_rank_0_alone_writes(tiny_run, tiny_llama):
    """`mlx.launch -n 2 -- mlxlab run`: generate and train on both ranks, the rest on rank 0 (own run folders)."""
    from tests.test_distributed import run_launch

    tmp, _ = tiny_run
    args = ["--config", str(tmp / "mlxlab.yaml"), "run", "tiny", "--runs-dir", str(tmp / "ranks{rank}"),
            "--taxonomy", str(tmp / "taxonomy"), "--model", str(tiny_llama), "--quiet"]
    text = run_launch(args, timeout=900)
    assert "Traceback" not in text, text
    run_dir = tmp / "ranks0" / "tiny"
    manifest = read_manifest(run_dir)
    assert manifest["world_size"] == 2 and list(manifest["stages"]) == list(STAGES), text
    assert all(r["status"] == "done" for r in manifest["stages"].values())
    assert manifest["stages"]["train"]["figures"]["world_size"] == 2
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        assert (run_dir / "data" / name).read_bytes() == (tmp / "runs" / "tiny" / "data" / name).read_bytes(), name
    assert (run_dir / "gguf").is_dir() and (run_dir / "eval" / "summary.json").is_file()
    # rank 1 kept its SDG journal and wrote nothing else
    assert {p.parent.name for p in (tmp / "ranks1").rglob("*") if p.is_file()} <= {".journal"}
    assert text.count("held-out loss") == 1            # one summary, from rank 0
