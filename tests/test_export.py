"""GGUF export: tiny random models of every supported architecture -> GGUF -> real llama.cpp -> logits match MLX."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlxlab.errors import MlxlabError


# f16 max abs logit difference allowed per architecture: gemma's GELU and scaled embeddings run through
# llama.cpp's f16 GELU table and f16 activations, so its tiny random models drift more (see the benchmark)
F16_TOLERANCE = {"llama": 1e-2, "mistral": 1e-2, "qwen2": 1e-2, "qwen3": 1e-2, "phi3": 1e-2,
                 "gemma2": 5e-2, "gemma3_text": 0.2}


def _gguf_meta(path: Path) -> dict:
    """(field name -> (value types, contents)) of a GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return {name: (field.types, field.contents()) for name, field in reader.fields.items()}


@pytest.mark.parametrize("arch", list(F16_TOLERANCE))
def test_tiny_model_exports_and_llama_cpp_matches_mlx(arch, make_tiny_model, tmp_path):
    from mlxlab.gguf.gguf_export import export_gguf

    model = make_tiny_model(arch)
    result = export_gguf(model, tmp_path, out_type="f16")
    assert result.path == tmp_path / f"{model.name}-f16.gguf" and result.path.is_file()
    assert result.max_abs_logit_diff <= F16_TOLERANCE[arch], result
    assert result.top1_agreement >= 0.95 and result.positions >= 100
    report = json.loads(result.verify_report.read_text())
    assert report["tokenizer_match"] and report["top1_agreement"] == result.top1_agreement
    assert "FROM ./" + result.path.name in result.modelfile.read_text()
    assert '<|im_end|>' in result.modelfile.read_text()
    # nothing but the GGUF, its Modelfile and its report: no temporary or intermediate files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [result.path.name, result.modelfile.name, result.verify_report.name])


def test_metadata_is_what_llama_cpp_needs(tiny_llama, tmp_path):
    from gguf import GGUFValueType

    from mlxlab.gguf.gguf_export import export_gguf

    result = export_gguf(tiny_llama, tmp_path / "x.gguf", out_type="f32", verify=False)
    meta = _gguf_meta(result.path)
    assert meta["tokenizer.ggml.token_type"][0] == [GGUFValueType.ARRAY, GGUFValueType.INT32]
    assert meta["tokenizer.ggml.model"][1] == "gpt2" and meta["tokenizer.ggml.pre"][1] == "gpt-2"
    assert meta["tokenizer.ggml.add_bos_token"][1] is False
    assert meta["tokenizer.ggml.eos_token_id"][1] == 2          # <|im_end|>
    assert "<|im_start|>" in meta["tokenizer.chat_template"][1]
    assert meta["general.architecture"][1] == "llama" and meta["llama.block_count"][1] == 2
    assert result.max_abs_logit_diff is None and result.verify_report is None


def test_f32_export_is_exact(tiny_qwen2, tmp_path):
    from mlxlab.gguf.gguf_export import export_gguf

    result = export_gguf(tiny_qwen2, tmp_path, out_type="f32")
    assert result.max_abs_logit_diff < 1e-4 and result.top1_agreement == 1.0


# q8_0 is byte for byte llama.cpp's own q8_0 of the f16 export: 18 of 19 top-1 on this tiny random model
@pytest.mark.parametrize("out_type,min_top1", [("q8_0", 0.9), ("bf16", 0.95), ("q4_k_m", 0.6)])
def test_quantized_types_load_and_agree(out_type, min_top1, tiny_llama, tmp_path):
    from mlxlab.gguf.gguf_export import export_gguf

    f16 = export_gguf(tiny_llama, tmp_path, out_type="f16", verify=False)
    result = export_gguf(tiny_llama, tmp_path, out_type=out_type)
    assert result.top1_agreement >= min_top1, result
    assert result.size_bytes < f16.size_bytes or out_type == "bf16"
    # the f16 intermediate of a K-quant is ours and removed; the user's f16 export is left alone
    assert f16.path.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unsupported_architecture_lists_the_supported_ones(tiny_llama, tmp_path):
    from mlxlab.gguf.gguf_export import export_gguf

    model = tmp_path / "neox"
    shutil.copytree(tiny_llama, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))
    with pytest.raises(MlxlabError, match="gpt_neox") as err:
        export_gguf(model, tmp_path / "out")
    assert "qwen3" in str(err.value) and "gemma2" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_failing_write_leaves_no_half_file(tiny_llama, tmp_path, monkeypatch):
    import gguf

    from mlxlab.gguf.gguf_export import export_gguf

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    with pytest.raises(MlxlabError, match="No space left on device"):
        export_gguf(tiny_llama, tmp_path / "m.gguf")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_force(tiny_llama, tmp_path):
    from mlxlab.gguf.gguf_export import export_gguf

    target = tmp_path / "mine.gguf"
    target.write_bytes(b"the user's own file")
    with pytest.raises(MlxlabError, match="refusing to overwrite"):
        export_gguf(tiny_llama, target, verify=False)
    assert target.read_bytes() == b"the user's own file"
    export_gguf(tiny_llama, target, verify=False, force=True)
    assert target.read_bytes()[:4] == b"GGUF"


def test_a_broken_export_is_caught_by_verification(tiny_llama, tmp_path, monkeypatch):
    import mlxlab.gguf.gguf_export as ge

    # forget llama.cpp's q/k row order: the file loads, but attention is wrong
    monkeypatch.setattr(ge, "_permute_qk", lambda x, n_heads: x)
    with pytest.raises(MlxlabError, match="disagrees with MLX"):
        ge.export_gguf(tiny_llama, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_out_type(tiny_llama, tmp_path):
    from mlxlab.gguf.gguf_export import export_gguf

    with pytest.raises(MlxlabError, match="q4_k_m"):
        export_gguf(tiny_llama, tmp_path, out_type="q4_kk")


@pytest.mark.slow
def test_embedded_smollm2_round_trip(smollm2_dir, tmp_path):
    """The 4-bit embedded model is dequantized and exported; llama.cpp reproduces MLX's next tokens."""
    from mlxlab.gguf.gguf_export import export_gguf

    result = export_gguf(smollm2_dir, tmp_path, out_type="f16")
    assert result.architecture == "llama" and result.top1_agreement == 1.0
    assert result.max_abs_logit_diff < 0.5
    meta = _gguf_meta(result.path)
    assert meta["tokenizer.ggml.pre"][1] == "smollm" and len(meta["tokenizer.ggml.tokens"][1]) == 49152


# ------------------------------------------------------------------------------------------------ fuse

def _train_adapters(model_dir: Path, dest: Path, *, dora: bool = False, steps: int = 4) -> Path:
    """A few real LoRA/DoRA steps with mlx-lm's tuner layers; saved as mlx-lm adapters."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, tokenizer = load(str(model_dir))
    model.freeze()
    params = {"rank": 4, "dropout": 0.0, "scale": 10.0}
    linear_to_lora_layers(model, 2, params, use_dora=dora)
    tokens = mx.array([tokenizer.encode("An output port tells a Jolie service how to call another one.")])

    def loss_fn(m):
        return nn.losses.cross_entropy(m(tokens[:, :-1]), tokens[:, 1:]).mean()

    optimizer = optim.Adam(learning_rate=1e-2)
    step = nn.value_and_grad(model, loss_fn)
    for _ in range(steps):
        _, grads = step(model)
        optimizer.update(model, grads)
        mx.eval(model.trainable_parameters())
    dest.mkdir(parents=True)
    mx.save_safetensors(str(dest / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    (dest / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "dora" if dora else "lora", "num_layers": 2, "lora_parameters": params,
        "model": str(model_dir)}))
    return dest


def _logits(model_dir: Path, adapters: Path | None = None):
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    model, tokenizer = load(str(model_dir), adapter_path=str(adapters) if adapters else None)
    return np.array(model(mx.array([tokenizer.encode("What is an input port?")]))[0])


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_fuse_reproduces_the_adapter_model(dora, tiny_llama, tmp_path):
    import numpy as np

    from mlxlab.train.fuse import fuse

    adapters = _train_adapters(tiny_llama, tmp_path / "adapters", dora=dora)
    result = fuse(tiny_llama, adapters, tmp_path / "fused")
    assert result.fused_layers > 0 and not result.quantized
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (result.path / name).is_file()
    base, with_adapters, fused = _logits(tiny_llama), _logits(tiny_llama, adapters), _logits(result.path)
    assert np.abs(with_adapters - base).max() > 1e-2          # the training changed something
    np.testing.assert_allclose(fused, with_adapters, atol=1e-4)
    # and the fused model exports and verifies like any other
    from mlxlab.gguf.gguf_export import export_gguf      # a broken import must fail here, not skip

    exported = export_gguf(result.path, tmp_path / "gguf")
    assert exported.top1_agreement >= 0.95


def test_fuse_rejects_corrupt_adapters(tiny_llama, tmp_path):
    from mlxlab.train.fuse import fuse

    adapters = _train_adapters(tiny_llama, tmp_path / "adapters", steps=1)
    weights = adapters / "adapters.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])     # truncated
    with pytest.raises(MlxlabError, match="corrupt or truncated"):
        fuse(tiny_llama, adapters, tmp_path / "fused")
    weights.write_bytes(b"\x00garbage")
    with pytest.raises(MlxlabError, match="corrupt or truncated"):
        fuse(tiny_llama, adapters, tmp_path / "fused")
    (adapters / "adapter_config.json").write_text("{not json")
    with pytest.raises(MlxlabError, match="not valid JSON"):
        fuse(tiny_llama, adapters, tmp_path / "fused")
    assert not (tmp_path / "fused").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_fuse_rejects_adapters_of_another_base(tiny_llama, make_tiny_model, tmp_path):
    from mlxlab.train.fuse import fuse

    wider = make_tiny_model("llama", tmp_path / "wider", hidden_size=96, intermediate_size=192)
    adapters = _train_adapters(wider, tmp_path / "adapters", steps=1)
    with pytest.raises(MlxlabError, match="another base"):
        fuse(tiny_llama, adapters, tmp_path / "fused")
    # without the record of the base, the shapes still give it away
    config = json.loads((adapters / "adapter_config.json").read_text())
    del config["model"]
    (adapters / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(MlxlabError, match="do not fit this base"):
        fuse(tiny_llama, adapters, tmp_path / "fused")
    assert not (tmp_path / "fused").exists()


def test_cli_export_and_fuse(tiny_llama, tmp_path, capsys):
    from mlxlab.cli import main

    assert main(["export", str(tiny_llama), "--output", str(tmp_path / "g"), "--out-type", "q8_0"]) == 0
    out = capsys.readouterr().out
    assert "top-1 agreement" in out and "ollama create" in out
    assert (tmp_path / "g" / f"{tiny_llama.name}-q8_0.gguf").is_file()
    assert main(["export", str(tiny_llama), "--output", str(tmp_path / "g"), "--out-type", "q8_0"]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["fuse", "--model", str(tiny_llama), "--adapters", str(tmp_path / "none"),
                 "--output", str(tmp_path / "f")]) == 1
    assert "adapter_config.json is missing" in capsys.readouterr().err


def test_llama_cpp_subprocesses_have_timeouts_with_a_clear_error(tiny_llama, tmp_path, monkeypatch):
    import mlxlab.gguf.gguf_export as ge
    import mlxlab.llamacpp as lc

    f16 = ge.export_gguf(tiny_llama, tmp_path / "f16.gguf", out_type="f16", verify=False).path
    monkeypatch.setattr(lc, "QUANTIZE_TIMEOUT_S", 0.01)
    with pytest.raises(MlxlabError, match="did not finish within"):
        lc.quantize_gguf(f16, tmp_path / "q4.gguf", "q4_k_m")
    monkeypatch.setattr(ge, "VERIFY_TIMEOUT_S", 0.01)
    with pytest.raises(MlxlabError, match="did not finish checking"):
        ge.export_gguf(tiny_llama, tmp_path / "checked.gguf", out_type="f16")
    assert not (tmp_path / "checked.gguf").exists()          # a failed export leaves no file


def test_q8_0_export_of_a_float32_gemma_is_llama_cpps_own_q8_0(make_tiny_model, tmp_path):
    """A float32 Gemma (what a Gemma GGUF imports as): quantizing its float32 values rather than the f16 ones moved
    some q8_0 blocks a step from llama.cpp's q8_0 of the f16 export (top-1 83% against it), and the export failed."""
    from mlxlab.gguf.gguf_export import export_gguf

    q8 = export_gguf(make_tiny_model("gemma3_text"), tmp_path / "q8.gguf", out_type="q8_0")
    ref = json.loads(q8.verify_report.read_text())["reference"]
    assert ref["top1_agreement"] == 1.0 and ref["max_abs_logit_diff"] == 0.0


def test_quantized_exports_are_checked_against_llama_cpps_own_quantizer(tiny_llama, tmp_path, monkeypatch):
    import mlxlab.gguf.gguf_export as ge

    q8 = ge.export_gguf(tiny_llama, tmp_path / "q8.gguf", out_type="q8_0")
    ref = json.loads(q8.verify_report.read_text())["reference"]
    # mlxlab's q8_0 writer quantizes the f16 values, as llama.cpp's quantizer of the f16 export does: the same file
    assert ref["top1_agreement"] == 1.0 and ref["max_abs_logit_diff"] == 0.0
    k4 = json.loads(ge.export_gguf(tiny_llama, tmp_path / "k4.gguf", out_type="q4_k_m").verify_report.read_text())
    assert "quantizer on this model's f16" in k4["reference"]["what"]
    # a q8_0 writer bug that MLX's loose q8_0 threshold lets through: the down projections come out 1.5x too big
    real = ge._tensor_data

    def skewed(name, value, out_type):
        return real(name, value * 1.5 if "ffn_down" in name and out_type == "q8_0" else value, out_type)

    monkeypatch.setattr(ge, "_tensor_data", skewed)
    with pytest.raises(MlxlabError, match="llama.cpp's own q8_0"):         # MLX's loose q8_0 check passes it
        ge.export_gguf(tiny_llama, tmp_path / "bad.gguf", out_type="q8_0")
    assert not (tmp_path / "bad.gguf").exists()
