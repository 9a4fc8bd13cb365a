"""Training: real MLX LoRA/DoRA/QLoRA runs on a tiny llama, checkpoints, a real SIGKILL and resume, phases."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlxlab.errors import MlxlabError

WORDS = "jolie service port input output message operation interface program language socket".split()


def _record(rng: random.Random, words: int | None = None) -> dict:
    text = " ".join(rng.choice(WORDS) for _ in range(words or rng.randint(2, 9)))
    return {"messages": [{"role": "user", "content": f"What is {text}?"},
                         {"role": "assistant", "content": f"{text.upper()} is part of Jolie."}]}


def write_chat(folder: Path, train: int = 24, valid: int = 8, seed: int = 0) -> Path:
    """A chat dataset folder with train.jsonl and valid.jsonl of mixed lengths."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", train), ("valid", valid)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(_record(rng)) + "\n" for _ in range(count)))
    return folder


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> Path:
    return write_chat(tmp_path_factory.mktemp("chat"))


def adapters_max_diff(a: Path, b: Path) -> float:
    import mlx.core as mx

    wa, wb = mx.load(str(a / "adapters.safetensors")), mx.load(str(b / "adapters.safetensors"))
    assert wa.keys() == wb.keys()
    return max(mx.abs(wa[k] - wb[k]).max().item() for k in wa)


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


FAST = dict(learning_rate=2e-3, batch_size=4, quiet=True)


def test_lora_loss_falls_and_writes_everything(tiny_llama, chat_data, tmp_path):
    from mlx_lm import load
    from mlx_lm.tuner.lora import LoRALinear

    from mlxlab.train.loop import train

    out = tmp_path / "run"
    result = train(tiny_llama, chat_data, out, num_iters=30, steps_per_eval=10, **FAST)
    rows = [r for r in _log(result.log) if "loss" in r]
    assert [r["iter"] for r in rows] == list(range(1, 31))
    assert sum(r["loss"] for r in rows[-5:]) / 5 < rows[0]["loss"] - 0.5
    assert {"loss", "lr", "tokens_per_second", "peak_memory_gb"} <= rows[0].keys()
    assert [r["iter"] for r in _log(result.log) if "val_loss" in r] == [10, 20, 30]
    assert result.val_loss is not None and result.tokens_per_second > 0
    assert 0 <= result.padding_fraction < 0.5
    assert (out / "config.yaml").read_text().startswith("train:")
    assert result.loss_plot is not None and result.loss_plot.read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "result.json").read_text())["num_iters"] == 30
    model, _ = load(str(tiny_llama), adapter_path=str(out))
    assert isinstance(model.layers[-1].self_attn.q_proj, LoRALinear)


@pytest.mark.parametrize("method,extra", [("dora", {}), ("lora", {"quantize": 4}), ("full", {"num_layers": 1})])
def test_dora_qlora_full_train_save_and_load(tiny_llama, chat_data, tmp_path, method, extra, monkeypatch):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import load
    from mlx_lm.tuner.lora import LoRALinear

    import mlxlab.train.loop
    from mlxlab.train.loop import train

    trained = {}
    real_load = mlxlab.train.loop.load_base

    def spy(ref, cfg):
        out = real_load(ref, cfg)
        trained["model"] = out[0]
        return out

    monkeypatch.setattr(mlxlab.train.loop, "load_base", spy)
    result = train(tiny_llama, chat_data, tmp_path / "run", method=method, num_iters=6, lora_rank=4, **extra, **FAST)
    if extra.get("quantize"):       # QLoRA: the frozen base under the adapters stayed 4-bit while training
        layer = trained["model"].layers[-1].self_attn.q_proj
        assert isinstance(layer, LoRALinear) and isinstance(layer.linear, nn.QuantizedLinear)
    rows = [r for r in _log(result.log) if "loss" in r]
    assert rows[-1]["loss"] < rows[0]["loss"]
    config = json.loads((result.adapters / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == method
    saved = mx.load(str(result.adapters / "adapters.safetensors"))
    if method == "dora":
        assert any(k.endswith(".m") for k in saved)
    if method == "full":
        assert saved and all(".layers.1." in k for k in saved)
    model, tokenizer = load(str(tiny_llama), adapter_path=str(result.adapters))
    logits = model(mx.array([tokenizer.encode("What is jolie?")]))
    assert mx.isfinite(logits).all().item()


def test_qlora_on_a_quantized_base(tiny_llama, chat_data, tmp_path, monkeypatch):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import load, save_model

    from mlxlab.train.adapters import load_base
    from mlxlab.train.loop import train
    from mlxlab.config import TrainConfig

    model, tokenizer = load(str(tiny_llama))
    nn.quantize(model, group_size=64, bits=4)
    base = tmp_path / "q4"
    save_model(base, model)
    config = json.loads((tiny_llama / "config.json").read_text())
    config["quantization"] = {"group_size": 64, "bits": 4}
    (base / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (base / name).write_bytes((tiny_llama / name).read_bytes())
    # On the CPU the device policy would expand a small 4-bit base to float32 (faster there); keep it 4-bit.
    monkeypatch.setenv("MLXLAB_DEQUANTIZE_ON_LOAD", "never")
    loaded, _, _ = load_base(base, TrainConfig())
    assert isinstance(loaded.layers[0].mlp.up_proj, nn.QuantizedLinear)
    result = train(base, chat_data, tmp_path / "run", num_iters=4, **FAST)
    assert math.isfinite(result.final_loss) and result.final_loss > 0
    saved = mx.load(str(result.adapters / "adapters.safetensors"))
    # the adapters learned something: LoRA's B matrices start at zero
    assert any(k.endswith("lora_b") and mx.abs(v).max().item() > 0 for k, v in saved.items())


def test_epochs_and_iterations_are_both_honored(tiny_llama, chat_data, tmp_path):
    from mlxlab.train.loop import train

    by_epochs = train(tiny_llama, chat_data, tmp_path / "e", num_epochs=2, grad_accumulation=2, **FAST)
    assert by_epochs.num_iters == 6 and by_epochs.num_epochs == 2      # 24 samples / 4 = 6 batches, 2 per step
    by_iters = train(tiny_llama, chat_data, tmp_path / "i", num_iters=3, **FAST)
    assert by_iters.num_iters == 3 and by_iters.num_epochs == pytest.approx(0.5)
    with pytest.raises(MlxlabError, match="not both"):
        train(tiny_llama, chat_data, tmp_path / "both", num_iters=3, num_epochs=1, **FAST)


def test_checkpoints_at_chosen_iterations(tiny_llama, chat_data, tmp_path):
    from mlxlab.train.loop import train

    result = train(tiny_llama, chat_data, tmp_path / "run", num_iters=8, save_at=[2, 5], save_every=4, **FAST)
    assert sorted(result.checkpoints) == [2, 4, 5, 8]
    ckpt = result.checkpoints[5]
    assert {p.name for p in ckpt.iterdir()} == {"adapters.safetensors", "adapter_config.json",
                                                "optimizer.safetensors", "state.json"}
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 5 and state["epoch"] == 0 and state["position"] == 5 and state["model_fingerprint"]
    with pytest.raises(MlxlabError, match="--resume"):
        train(tiny_llama, chat_data, tmp_path / "run", num_iters=8, **FAST)


def test_kill_and_resume_equals_uninterrupted(tiny_llama, chat_data, tmp_path):
    from mlxlab.train.loop import train

    # dropout and accumulation make the RNG and the data position matter
    settings = dict(num_iters=40, save_every=5, lora_dropout=0.1, grad_accumulation=2, batch_size=3,
                    learning_rate=1e-3, steps_per_eval=0, seed=3)
    out = tmp_path / "killed"
    script = ("import sys, json; import mlxlab; from mlxlab.train.loop import train; "
              "train(sys.argv[1], sys.argv[2], sys.argv[3], quiet=True, **json.loads(sys.argv[4]))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tiny_llama), str(chat_data), str(out),
                             json.dumps(settings)], env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.time() + 120
    while not (out / "checkpoints" / "iter_000010").exists():
        assert proc.poll() is None and time.time() < deadline, "training subprocess ended before a checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "result.json").exists()
    killed_at = max(int(p.name[5:]) for p in (out / "checkpoints").glob("iter_??????"))
    assert killed_at < 40

    resumed = train(tiny_llama, chat_data, out, resume=True, quiet=True, **settings)
    full = train(tiny_llama, chat_data, tmp_path / "full", quiet=True, **settings)
    assert adapters_max_diff(full.adapters, resumed.adapters) <= 1e-5
    assert [r["iter"] for r in _log(resumed.log) if "loss" in r] == list(range(1, 41))
    assert resumed.final_loss == pytest.approx(full.final_loss, abs=1e-5)


def test_resume_refuses_another_model_and_changed_settings(tiny_llama, make_tiny_model, chat_data, tmp_path):
    from mlxlab.train.loop import train

    out = tmp_path / "run"
    train(tiny_llama, chat_data, out, num_iters=2, save_at=[1], **FAST)
    other = make_tiny_model("llama", tmp_path / "other", seed=1)
    with pytest.raises(MlxlabError, match="different base model"):
        train(other, chat_data, out, num_iters=2, resume=True, **FAST)
    with pytest.raises(MlxlabError, match="lora_rank"):
        train(tiny_llama, chat_data, out, num_iters=2, resume=True, lora_rank=4, **FAST)
    # a longer run would bend the cosine schedule the checkpoint was made under: refused, with the way out
    with pytest.raises(MlxlabError, match="planned for 2 iterations") as info:
        train(tiny_llama, chat_data, out, num_iters=5, resume=True, **FAST)
    assert "--num-iters 2" in info.value.hint


def test_phases_chain(tiny_llama, chat_data, tmp_path):
    from mlxlab.train.loop import train

    phase2 = write_chat(tmp_path / "skills", train=8, valid=0, seed=5)
    result = train(tiny_llama, None, tmp_path / "run", quiet=True, batch_size=4, phases=[
        {"data": chat_data, "num_epochs": 2, "learning_rate": 2e-3},
        # a zero learning rate leaves phase 1's adapters untouched, which shows phase 2 started from them
        {"data": phase2, "num_iters": 2, "learning_rate": 0.0}])
    assert adapters_max_diff(tmp_path / "run" / "phase_1", result.adapters) == 0.0
    first = [r["loss"] for r in _log(tmp_path / "run" / "phase_1" / "train_log.jsonl") if "loss" in r]
    second = [r["loss"] for r in _log(tmp_path / "run" / "phase_2" / "train_log.jsonl") if "loss" in r]
    assert second[0] < first[0]
    # one training as a whole: iterations run on across phases, every log row says its phase
    ran = [len(first), len(second)]
    assert result.num_iters == sum(ran) and [p["num_iters"] for p in result.phases] == ran
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["num_iters"] == sum(ran) and len(saved["phases"]) == 2
    rows = [r for r in _log(tmp_path / "run" / "train_log.jsonl") if "loss" in r]
    assert [r["iter"] for r in rows] == list(range(1, sum(ran) + 1))
    assert [r["phase"] for r in rows] == [1] * ran[0] + [2] * ran[1] and rows[-1]["loss"] == second[-1]
    assert result.log == tmp_path / "run" / "train_log.jsonl" and (tmp_path / "run" / "loss.png").is_file()
    again = train(tiny_llama, None, tmp_path / "run", quiet=True, resume=True, batch_size=4, phases=[
        {"data": chat_data, "num_epochs": 2, "learning_rate": 2e-3}, {"data": phase2, "num_iters": 2,
                                                                      "learning_rate": 0.0}])
    assert again.num_iters == sum(ran) and again.phases == result.phases


def test_combined_phases_name_the_kept_iteration(tmp_path):
    from mlxlab.train.phases import combine_phases

    def phase(number: int, num_iters: int, best_iter: int | None, stopped: int | None = None) -> None:
        folder = tmp_path / f"phase_{number}"
        folder.mkdir()
        rows = [{"iter": 0, "val_loss": 3.0}] + [{"iter": i, "loss": 3.0 - i / 10} for i in range(1, num_iters + 1)]
        (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:(stopped or 99) + 1]))
        (folder / "result.json").write_text(json.dumps({
            "adapters": str(folder), "checkpoints": {}, "final_loss": 1.0, "val_loss": 2.0, "tokens_per_second": 1.0,
            "peak_memory_gb": 0.1, "padding_fraction": 0.0, "num_iters": num_iters, "num_epochs": 1.0,
            "truncated": 0, "dropped": 0, "log": str(folder / "train_log.jsonl"), "loss_plot": None,
            "best_iter": best_iter, "stopped_early": stopped}))

    phase(1, 10, 6, stopped=8)          # stopped at 8, kept 6
    phase(2, 5, 0)                      # kept its iteration 0: phase 1's adapters
    combined = combine_phases(tmp_path, 2)
    assert combined["num_iters"] == 8 + 5 and combined["best_iter"] == 6 and combined["num_epochs"] == 2.0
    rows = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [(r["iter"], r["phase"]) for r in rows if "val_loss" in r] == [(0, 1), (8, 2)]
    assert json.loads((tmp_path / "result.json").read_text())["best_iter"] == 6
    (tmp_path / "phase_2" / "result.json").write_text(
        (tmp_path / "phase_2" / "result.json").read_text().replace('"best_iter": 0', '"best_iter": 3'))
    assert combine_phases(tmp_path, 2)["best_iter"] == 8 + 3


def test_bad_data_is_reported_clearly(tiny_llama, tmp_path):
    from mlxlab.train.loop import train

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(MlxlabError, match="empty"):
        train(tiny_llama, empty, tmp_path / "a", num_iters=1, **FAST)
    bad = write_chat(tmp_path / "bad", train=4, valid=0)
    lines = (bad / "train.jsonl").read_text().splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "hi"}'
    (bad / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(MlxlabError) as info:
        train(tiny_llama, bad, tmp_path / "b", num_iters=1, **FAST)
    assert f"{bad / 'train.jsonl'}:3" in str(info.value)
    with pytest.raises(MlxlabError, match="not found"):
        train(tiny_llama, tmp_path / "missing", tmp_path / "c", num_iters=1, **FAST)


def test_long_samples_are_truncated_and_counted(tiny_llama, tmp_path):
    from mlxlab.train.loop import train

    rng = random.Random(1)
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(_record(rng, words=60 if i % 2 else 3)) + "\n" for i in range(8)))
    result = train(tiny_llama, data, tmp_path / "run", num_iters=2, max_seq_length=64, **FAST)
    assert result.truncated == 4 and result.dropped == 4      # their prompts alone fill 64 tokens


def test_model_without_chat_template_is_refused(make_tiny_model, chat_data, tmp_path):
    from mlxlab.train.loop import train

    model = make_tiny_model("llama", tmp_path / "plain")
    config = json.loads((model / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(MlxlabError, match="chat template"):
        train(model, chat_data, tmp_path / "run", num_iters=1, **FAST)


def test_cli_train(tiny_llama, chat_data, tmp_path, capsys):
    from mlxlab.cli import main

    out = tmp_path / "cli"
    code = main(["train", "--model", str(tiny_llama), "--data", str(chat_data), "--output", str(out),
                 "--num-iters", "3", "--save-at", "1,2", "--lora-keys", "self_attn.q_proj,self_attn.v_proj"])
    assert code == 0
    assert "checkpoint 2" in capsys.readouterr().out
    keys = json.loads((out / "adapter_config.json").read_text())["lora_parameters"]["keys"]
    assert keys == ["self_attn.q_proj", "self_attn.v_proj"]
    assert main(["train", "--model", str(tiny_llama), "--data", str(tmp_path / "nope"), "--output",
                 str(tmp_path / "x")]) == 1


def test_cli_phases_file_chains_phases(tiny_llama, chat_data, tmp_path):
    from mlxlab.cli import main

    phase2 = write_chat(tmp_path / "skills", train=8, valid=0, seed=5)
    phases = tmp_path / "phases.yaml"
    phases.write_text(f"- data: {chat_data}\n  num_iters: 3\n  learning_rate: 2e-3\n"
                      f"- data: {phase2}\n  num_iters: 2\n  learning_rate: 0.0\n")
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_llama), "--phases", str(phases), "--output", str(out),
                 "--batch-size", "4"]) == 0
    assert (out / "phase_1" / "adapters.safetensors").is_file() and (out / "adapters.safetensors").is_file()
    assert adapters_max_diff(out / "phase_1", out) == 0.0   # phase 2 (learning rate 0) started from phase 1


@pytest.mark.parametrize("text, line, message", [
    ("- data: d\n  num_iter: 3\n", 2, "unknown key 'num_iter' in a phase (did you mean 'num_iters'?)"),
    ("- data: d\n  num_iters: many\n", 2, "num_iters expects an integer, found 'many'"),
    ("- num_iters: 3\n", 1, "this phase has no `data`"),
    ("data: d\n", 1, "a phases file is a non-empty YAML list"),
    ("- data: [d\n", 2, "invalid YAML"),
])
def test_phases_file_errors_name_file_and_line(tmp_path, text, line, message):
    from mlxlab.errors import MlxlabError
    from mlxlab.train.phases import read_phases

    path = tmp_path / "phases.yaml"
    path.write_text(text)
    with pytest.raises(MlxlabError) as err:
        read_phases(path)
    assert err.value.line == line and message in str(err.value) and str(err.value).startswith(str(path))


# ---------------------------------------------------------------------------------------------- best checkpoint

def test_select_best_prefers_validation_within_the_forgetting_tolerance():
    from mlxlab.train.loop import select_best

    rows = [{"iter": 0, "val_loss": 3.0, "general_loss": 1.0}, {"iter": 10, "val_loss": 2.0, "general_loss": 1.02},
            {"iter": 20, "val_loss": 1.9, "general_loss": 1.2}, {"iter": 30, "val_loss": 2.5, "general_loss": 1.0}]
    best, reason = select_best(rows, reference=1.0, tolerance=0.05)
    assert best["iter"] == 10
    assert "iteration 20" in reason and "forgot too much" in reason and "+20.0%" in reason
    assert select_best(rows, reference=1.0, tolerance=0.5)[0]["iter"] == 20
    assert select_best(rows, reference=None, tolerance=0.05)[0]["iter"] == 20          # no reference: no guard
    # without an in-domain validation set the least forgetting wins
    general_only = [{"iter": r["iter"], "general_loss": r["general_loss"]} for r in rows]
    assert select_best(general_only, reference=1.0, tolerance=0.05)[0]["iter"] == 0
    assert select_best([], reference=None, tolerance=0.05) == (None, "no evaluated checkpoint")


def test_keep_best_and_early_stopping_watch_both_validation_sets(tiny_llama, chat_data, tmp_path, monkeypatch):
    import mlx.core as mx

    import mlxlab.train.loop as train_module

    general = write_chat(tmp_path / "general", train=6, valid=0, seed=7) / "train.jsonl"
    # scripted losses per evaluation (iterations 0, 2, 4, ...): validation keeps falling, but from iteration 6
    # on the general loss is 20% above the base's: the best is iteration 4, and patience 2 stops at 8
    val = iter([3.0, 2.5, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4])
    gen = iter([1.0, 1.01, 1.02, 1.2, 1.3, 1.3, 1.3, 1.3, 1.3])
    monkeypatch.setattr(train_module, "_validate",
                        lambda model, dataset, cfg: next(gen if dataset.path == general else val))
    result = train_module.train(tiny_llama, chat_data, tmp_path / "run", num_iters=20, steps_per_eval=2,
                                save_at=[4], general_valid=str(general), keep_best=True, patience=2, **FAST)
    assert result.best_iter == 4 and result.stopped_early == 8
    assert "iteration 4" in result.best_reason and "forgot too much" in result.best_reason
    assert result.general_base_loss == 1.0 and result.general_loss == 1.02 and result.val_loss == 2.0
    kept = mx.load(str(tmp_path / "run" / "adapters.safetensors"))
    at4 = mx.load(str(result.checkpoints[4] / "adapters.safetensors"))
    assert all(mx.array_equal(kept[k], at4[k]).item() for k in kept)
    rows = [r for r in _log(result.log) if "general_loss" in r]
    assert [r["iter"] for r in rows] == [0, 2, 4, 6, 8]
    assert max(r["iter"] for r in _log(result.log) if "loss" in r) == 8
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["best_iter"] == 4 and saved["stopped_early"] == 8


def test_text_records_and_per_record_mask_prompt(tiny_llama, tmp_path):
    from mlx_lm import load

    from mlxlab.train.data import read_jsonl, tokenize

    _, tokenizer = load(str(tiny_llama))
    path = tmp_path / "mixed.jsonl"
    chat = {"messages": [{"role": "user", "content": "What is a port?"},
                         {"role": "assistant", "content": "Where a service listens."}]}
    path.write_text("\n".join(json.dumps(r) for r in [
        {"text": "A document chunk about ports.", "metadata": {"source": "document"}},
        chat, {**chat, "metadata": {"mask_prompt": False}}]) + "\n")
    data = tokenize(read_jsonl(path), tokenizer, path=path, max_seq_length=512, mask_prompt=True)
    (text, text_offset), (masked, masked_offset), (whole, whole_offset) = data.samples
    assert text_offset == 0 and text[-1] == tokenizer.eos_token_id
    assert masked == whole and masked_offset > 0 and whole_offset == 0


def test_unknown_roles_and_missing_replies_are_file_line_errors(tmp_path):
    from mlxlab.train.data import read_jsonl

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n'
                   '{"messages": [{"role": "wizard", "content": "abracadabra"}]}\n')
    with pytest.raises(MlxlabError, match=r"bad.jsonl:2.*role 'wizard'"):
        read_jsonl(bad)
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(MlxlabError, match="no assistant message"):
        read_jsonl(bad)


def test_resume_drops_a_torn_last_line_of_the_training_log(tiny_llama, chat_data, tmp_path):
    """A kill in the middle of writing a log line leaves it torn; resume keeps every whole line and goes on."""
    from mlxlab.train.train_log import read_log
    from mlxlab.train.loop import train

    settings = dict(num_iters=8, save_every=4, steps_per_eval=4, seed=1, **FAST)
    out = tmp_path / "run"
    full = train(tiny_llama, chat_data, out, **settings)
    expected = _log(full.log)
    # as if killed while writing iteration 7's line: the last checkpoint is iteration 4
    shutil.rmtree(out / "checkpoints" / "iter_000008")
    (out / "result.json").unlink()
    whole = [line for line in full.log.read_text().splitlines() if json.loads(line)["iter"] <= 6]
    full.log.write_text("".join(line + "\n" for line in whole) + '{"iter": 7, "loss": 2.7')
    resumed = train(tiny_llama, chat_data, out, resume=True, **settings)
    rows = _log(resumed.log)                               # every line whole again, the same as uninterrupted
    assert [sorted(r) for r in rows] == [sorted(r) for r in expected]
    assert [r["iter"] for r in rows if "loss" in r] == list(range(1, 9))
    assert resumed.final_loss == pytest.approx(full.final_loss, abs=1e-5)
    # a broken line that is not the last is no torn write: a clear error naming it
    resumed.log.write_text('{"iter": 1, "loss": 2.0}\n{"iter": 2, "lo\n{"iter": 3, "loss": 1.0}\n')
    with pytest.raises(MlxlabError, match="not valid JSON") as info:
        read_log(resumed.log)
    assert info.value.line == 2
