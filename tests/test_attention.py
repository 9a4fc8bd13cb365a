"""Attention maps: 4-bit equals its dequantized copy, causal rows summing to 1, logits untouched,
a brute-force reference from the layer's own weights, PNGs, the embedded SmolLM2 in 4-bit, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mlxlab.errors import MlxlabError

PROMPT = "What is an output port?"


def _load(path):
    from mlx_lm import load

    return load(str(path))


def _quantized(path):
    import mlx.nn as nn

    model, tokenizer = _load(path)
    nn.quantize(model, group_size=32, bits=4)
    return model, tokenizer


@pytest.fixture(scope="module")
def qwen2_result(tiny_qwen2, tmp_path_factory):
    from mlxlab.evaluate.attention import attention_maps

    out = tmp_path_factory.mktemp("attention-qwen2")
    return attention_maps(_load(tiny_qwen2), PROMPT, max_tokens=5, layers="all", heads=[0, 2], output=out)


def test_quantized_maps_equal_dequantized_copy(tiny_llama):
    import mlx.nn as nn
    from mlx_lm.utils import dequantize_model

    from mlxlab.evaluate.attention import attention_maps

    quantized = _quantized(tiny_llama)
    assert isinstance(quantized[0].layers[0].self_attn.q_proj, nn.QuantizedLinear)
    copy, tokenizer = _quantized(tiny_llama)
    dequantize_model(copy)
    assert isinstance(copy.layers[0].self_attn.q_proj, nn.Linear)
    a = attention_maps(quantized, PROMPT, max_tokens=6, layers="all")
    b = attention_maps((copy, tokenizer), PROMPT, max_tokens=6, layers="all")
    assert a.tokens == b.tokens and a.answer == b.answer
    assert a.weights.shape == (2, 4, len(a.tokens), len(a.tokens)) and a.layers == (0, 1)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-5)


def test_rows_sum_to_one_and_causal(qwen2_result):
    r = qwen2_result
    T = len(r.tokens)
    assert r.weights.dtype == np.float32 and r.weights.shape == (2, 2, T, T) and r.heads == (0, 2)
    assert 0 < r.prompt_length < T
    np.testing.assert_allclose(r.weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(r.weights[..., np.triu_indices(T, k=1)[0], np.triu_indices(T, k=1)[1]] == 0)
    assert np.all(r.weights >= 0)


def test_capture_leaves_logits_unchanged(tiny_llama):
    import mlx.core as mx

    from mlxlab.evaluate.attention import capture_attention

    model, tokenizer = _quantized(tiny_llama)
    ids = mx.array(tokenizer.encode(PROMPT))[None]
    before = model(ids)
    with capture_attention(model, [0, 1]) as maps:
        during = model(ids)
        mx.eval(during)
    after = model(ids)
    assert sorted(maps) == [0, 1] and maps[0].shape == (4, ids.shape[1], ids.shape[1])
    assert np.array_equal(np.array(before), np.array(during)) and np.array_equal(np.array(before), np.array(after))
    assert type(model.layers[0].self_attn).__name__ == "Attention"      # the wrapper is gone again


def _rope(x: np.ndarray, base: float) -> np.ndarray:
    """Non-traditional RoPE (rotate the two halves), positions 0..T-1; x is [heads, T, d]."""
    d = x.shape[-1]
    freqs = base ** (-np.arange(0, d // 2) * 2.0 / d)
    angles = np.arange(x.shape[1])[:, None] * freqs[None]
    cos, sin = np.cos(angles), np.sin(angles)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * weight


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
def test_matches_brute_force_reference(arch, tiny_llama, tiny_qwen2, make_tiny_model):
    """Layer 0's maps recomputed in float64 numpy from the saved weights: embed, RMSNorm, q/k, RoPE, GQA."""
    import json

    import mlx.core as mx

    from mlxlab.evaluate.attention import attention_maps

    path = {"llama": tiny_llama, "qwen2": tiny_qwen2}.get(arch) or make_tiny_model(arch)
    config = json.loads((path / "config.json").read_text())
    w = {k: np.array(v, dtype=np.float64) for k, v in mx.load(str(path / "model.safetensors")).items()}
    result = attention_maps(_load(path), PROMPT, max_tokens=4, layers=[0])
    ids = list(result.token_ids)
    T, eps = len(ids), config["rms_norm_eps"]
    assert T == len(result.tokens) > result.prompt_length
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or config["hidden_size"] // heads
    x = _rms(w["model.embed_tokens.weight"][ids], w["model.layers.0.input_layernorm.weight"], eps)
    p = "model.layers.0.self_attn."
    q = (x @ w[p + "q_proj.weight"].T + w.get(p + "q_proj.bias", 0)).reshape(T, heads, hd)
    k = (x @ w[p + "k_proj.weight"].T + w.get(p + "k_proj.bias", 0)).reshape(T, kv, hd)
    if p + "q_norm.weight" in w:
        q, k = _rms(q, w[p + "q_norm.weight"], eps), _rms(k, w[p + "k_norm.weight"], eps)
    q = _rope(q.transpose(1, 0, 2), config["rope_theta"])
    k = np.repeat(_rope(k.transpose(1, 0, 2), config["rope_theta"]), heads // kv, axis=0)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    scores[:, np.triu_indices(T, k=1)[0], np.triu_indices(T, k=1)[1]] = -np.inf
    ref = np.exp(scores - scores.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(result.weights[0], ref, atol=2e-5)


def test_pngs_and_arrays_written(qwen2_result):
    r = qwen2_result
    names = sorted(p.name for p in r.pngs)
    assert names == sorted(["layer00_mean.png", "layer01_mean.png", "layer00_head00.png", "layer00_head02.png",
                            "layer01_head00.png", "layer01_head02.png", "overview.png"])
    for png in r.pngs:
        assert png.is_file() and png.stat().st_size > 2000 and png.read_bytes()[:4] == b"\x89PNG"
    saved = np.load(r.arrays)
    np.testing.assert_array_equal(saved["weights"], r.weights)
    assert list(saved["tokens"]) == r.tokens and int(saved["prompt_length"]) == r.prompt_length
    assert not list(r.arrays.parent.glob("*.tmp"))


def test_plot_to_axes_and_figure(qwen2_result):
    from matplotlib.figure import Figure

    from mlxlab.evaluate.attention import plot_attention

    fig = plot_attention(qwen2_result, 1, head=2)
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "layer 1 head 2"
    ax = Figure().add_subplot()
    assert plot_attention(qwen2_result, 0, ax=ax) is ax.figure and "mean over heads" in ax.get_title()
    with pytest.raises(MlxlabError, match="head 1 was not captured"):
        plot_attention(qwen2_result, 0, head=1)


def test_unsupported_architecture_and_bad_layers(make_tiny_model, tiny_llama):
    from mlxlab.evaluate.attention import attention_maps

    phi3 = make_tiny_model("phi3")
    with pytest.raises(MlxlabError, match="not supported for the 'phi3'.*") as info:
        attention_maps(_load(phi3), PROMPT, max_tokens=1)
    assert "llama" in str(info.value) and "qwen2" in str(info.value)
    with pytest.raises(MlxlabError, match="out of range"):
        attention_maps(_load(tiny_llama), PROMPT, layers=[5])
    with pytest.raises(MlxlabError, match="comma-separated"):
        attention_maps(_load(tiny_llama), PROMPT, layers="first")
    with pytest.raises(MlxlabError, match="prompt is empty"):
        attention_maps(_load(tiny_llama), "  ")


def test_cli_writes_maps_without_heavy_imports_for_help(tiny_llama, tmp_path):
    from mlxlab.cli import main

    out = tmp_path / "maps"
    assert main(["attention", "--model", str(tiny_llama), "--prompt", PROMPT, "--max-tokens", "3",
                 "--layers", "0,-1", "--output", str(out), "--dequantize-on-load", "never"]) == 0
    assert (out / "attention.npz").is_file() and (out / "layer01_mean.png").is_file()
    code = ("import sys; from mlxlab.cli import build_parser; build_parser(); "
            "print(any(m.split('.')[0] in ('mlx', 'mlx_lm', 'matplotlib') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.slow
def test_embedded_smollm2_in_4bit(smollm2_dir, tmp_path):
    import mlx.nn as nn

    from mlxlab.evaluate.attention import attention_maps
    from mlxlab.models import load_model

    model, tokenizer = load_model(smollm2_dir, dequantize_on_load="never")
    assert isinstance(model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    r = attention_maps((model, tokenizer), "What is Jolie?", max_tokens=8, output=tmp_path)
    T = len(r.tokens)
    assert r.layers == (0, 15, 29) and r.weights.shape == (3, 9, T, T) and r.answer.strip()
    np.testing.assert_allclose(r.weights.sum(-1), 1.0, atol=1e-4)
    assert np.all(np.triu(r.weights, k=1) == 0) and (tmp_path / "overview.png").stat().st_size > 5000
