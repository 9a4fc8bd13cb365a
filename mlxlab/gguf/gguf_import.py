"""GGUF -> Hugging Face layout that mlx-lm loads: weights (kept quantized), config.json, tokenizer files.

`convert(gguf, dest)` does the work; `mlxlab.models.import_gguf` adds caching and atomic writes.

Tensor types:
- Q4_0, Q4_1 and Q8_0 arrive from `mx.load` as MLX affine-quantized triplets (weight, scales, biases;
  group size 32) and are kept packed: nothing is dequantized, so the import is exact.
- F32, F16 and BF16 stay float.
- Every other llama.cpp type (K-quants, IQ-quants, Q5_x, ...) is dequantized with gguf-py and
  re-quantized to MLX affine 8-bit, group 32 (4-bit would add a second rounding on top of the
  source's; 8-bit keeps it near-lossless at twice the memory). It is named in
  `ImportResult.quantization` as "(requantized)".

Architectures: every one that `mlxlab.gguf.gguf_export` writes: llama (also SmolLM2 and Mistral-style GGUFs),
qwen2, qwen3, phi3, gemma2 and gemma3. Tensor names are found by asking mlx-lm's model for the config which
parameters it has and gguf-py's own name map what llama.cpp calls each one (the map the export uses).
Tokenizers: byte-level BPE ("gpt2" model) and SentencePiece ("llama" model: merges from the piece scores,
byte fallback), both written as a tokenizer.json and checked against llama.cpp's tokenizer in the tests.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlxlab.device import import_mlx
from mlxlab.errors import MlxlabError
from mlxlab.gguf.tables import ARCHITECTURES, IMPORTABLE, PRE_TOKENIZERS

GROUP_SIZE = 32
# bumped whenever the same GGUF would convert differently, so that cached imports are redone (mlxlab.models)
CONVERTER_VERSION = 2          # 2: no float16 in Gemma, llama.cpp's query scale and tokenizer defaults
_MLX_NATIVE = {"F32", "F16", "Q4_0", "Q4_1", "Q8_0"}   # what mx.load reads without loss
_FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}

_SUFFIXES = {"weight", "scales", "biases", "bias"}

# Gemma's residual stream leaves float16's range (gemma-3-270m at BOS: 67,000 > 65,504), so what would be float16
# (scales, biases, F16 tensors; mlx-lm computes in their dtype) is float32: in float16 the imported gemma-3-270m got
# BOS's top-1 wrong (mean |Δlogit| 4.9 against llama.cpp); bfloat16 is safe too but its scales and biases cost
# fidelity (mean |Δlogit| against llama.cpp 0.33 instead of 0.27 over 284 positions)
_FLOAT32_ARCHS = {"gemma2", "gemma3"}
# layer count by which llama.cpp's loader recognises a 27B Gemma (llama-model.cpp, load_hparams)
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}
# GGUF tensors that are no weights of mlx-lm's model: folded into config.json (or not needed)
_CONFIG_TENSORS = {"rope_factors_long.weight", "rope_factors_short.weight"}

# What llama.cpp assumes where a GGUF lacks a tokenizer key (llama-vocab.cpp, load): a SentencePiece ("llama")
# vocabulary has <unk> 0, <s> 1, </s> 2 and adds <s>; of the byte-level BPE pre-tokenizers (tables.PRE_TOKENIZERS),
# the Llama 3 ones add BOS, and take a word that is a token whole before any merge ("ignore_merges", as HF's Llama 3
# tokenizer.json)
_SPM_SPECIAL_IDS = {"unknown": 0, "bos": 1, "eos": 2}
_LLAMA3_PRE = {"llama-bpe", "llama3"}


@dataclass(frozen=True)
class Converted:
    """What `convert` wrote and found."""
    architecture: str
    quantization: str
    parameters: int


def read_gguf(path: Path):
    """(metadata dict of plain Python values, {tensor name: GGML type name}) of a GGUF file."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # gguf-py raises ValueError / struct.error on junk
        raise MlxlabError(f"not a readable GGUF file: {exc}", path=path,
                          hint="check the download; a GGUF file starts with the bytes 'GGUF'") from exc
    meta = {key: field.contents() for key, field in reader.fields.items()}
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    return reader, meta, types


def _layout(arch: str) -> tuple[bool, bool]:
    """(q/k rows permuted by llama.cpp, norms stored as 1 + w) for a GGUF architecture."""
    _, permuted, gemma = ARCHITECTURES[IMPORTABLE[arch][0]]
    return permuted, gemma


def name_map(config: dict, arch: str) -> dict[str, str]:
    """{GGUF tensor name: mlx-lm parameter name} for the model `config` describes.

    mlx-lm's model class lists its parameters (built lazily: nothing is allocated), and gguf-py's tensor name
    map, the one the export writes with, says what llama.cpp calls each.
    """
    import importlib

    import gguf
    from mlx.utils import tree_flatten

    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    model = module.Model(module.ModelArgs.from_dict(config))
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, int(config["num_hidden_layers"]))
    out = {}
    for name, _ in tree_flatten(model.parameters()):
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is not None:
            out[target] = name
    return out


def _unpermute_rows(x, n_heads: int):
    """Undo llama.cpp's q/k row permutation (HF half-split rope -> interleaved) on rows of `x`."""
    rows = x.shape[0]
    half = rows // n_heads // 2
    # llama.cpp did reshape(heads, 2, half).swapaxes(1, 2); the inverse swaps back the other way
    return x.reshape(n_heads, half, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def _load_tensors(path: Path, reader, types: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """GGUF tensors as MLX arrays ({name: array}, quantized as triplets) and {tensor base: how}."""
    mx = import_mlx()
    how: dict[str, str] = {}
    if set(types.values()) <= _MLX_NATIVE:
        arrays = mx.load(str(path))
        for name, kind in types.items():
            base = name.rpartition(".")[0]
            if kind.startswith("Q"):
                how[base] = f"{kind.lower()} -> mlx {8 if kind == 'Q8_0' else 4}-bit g{GROUP_SIZE}"
        return arrays, how
    from gguf.quants import dequantize

    arrays = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        shape = [int(d) for d in reversed(tensor.shape)]   # GGML lists dims fastest-first
        if kind in ("F32", "F16"):
            arrays[tensor.name] = mx.array(np.asarray(tensor.data).reshape(shape))
            continue
        try:
            values = dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
        except NotImplementedError as exc:
            raise MlxlabError(f"tensor {tensor.name} has GGML type {kind}, which gguf-py cannot dequantize",
                              path=path, hint="re-quantize the model to Q4_0, Q4_1, Q8_0 or Q4_K_M") from exc
        base = tensor.name.rpartition(".")[0]
        if kind in _FLOAT_TYPES or len(shape) != 2 or shape[-1] % GROUP_SIZE:
            # BF16/F64 stay float32 (float16 could overflow); small odd tensors stay float16
            arrays[tensor.name] = mx.array(values if kind in _FLOAT_TYPES else values.astype(np.float16))
            continue
        # 8-bit: a 4-bit MLX grid cannot hold a K-quant's values (measured: top-1 agreement with
        # llama.cpp 86% at 4-bit vs 90% at 8-bit on SmolLM2 Q4_K_M), so spend the memory for fidelity
        bits = 8
        weight, scales, biases = mx.quantize(mx.array(values), group_size=GROUP_SIZE, bits=bits)
        arrays[tensor.name] = weight
        arrays[f"{base}.scales"] = scales.astype(mx.float16)
        arrays[f"{base}.biases"] = biases.astype(mx.float16)
        how[base] = f"{kind.lower()} -> mlx {bits}-bit g{GROUP_SIZE} (requantized)"
    return arrays, how


def _meta(meta: dict, key: str, default=None, *, path: Path | None = None):
    """`meta[key]`, or `default`, or an MlxlabError naming the missing key."""
    if key in meta:
        return meta[key]
    if default is not None:
        return default
    raise MlxlabError(f"GGUF metadata has no {key!r}", path=path,
                      hint="the file may come from an old or unusual converter; re-convert it with llama.cpp")


def _special_token_id(meta: dict, key: str) -> int | None:
    """`tokenizer.ggml.{key}_token_id` (key: bos, eos, unknown, padding) as llama.cpp reads it: the GGUF's id if it
    names a token, else llama.cpp's default for the tokenizer model (SentencePiece: unknown 0, bos 1, eos 2)."""
    n_tokens = len(meta.get("tokenizer.ggml.tokens", ()))
    default = _SPM_SPECIAL_IDS.get(key) if meta.get("tokenizer.ggml.model") == "llama" else None
    value = meta.get(f"tokenizer.ggml.{key}_token_id")
    if value is not None and 0 <= int(value) < n_tokens:
        return int(value)
    return default if default is not None and default < n_tokens else None


def _adds_bos(meta: dict) -> bool:
    """Whether llama.cpp puts BOS in front of a text: `tokenizer.ggml.add_bos_token`, else its default, which is
    yes for SentencePiece and for the Llama-3-style BPE pre-tokenizers, no for other BPE."""
    if "tokenizer.ggml.add_bos_token" in meta:
        return bool(meta["tokenizer.ggml.add_bos_token"])
    if meta.get("tokenizer.ggml.model") == "llama":
        return True
    return meta.get("tokenizer.ggml.pre") in _LLAMA3_PRE


def _architecture(meta: dict, path: Path) -> str:
    """The GGUF's architecture, if import supports it; else an MlxlabError."""
    arch = meta.get("general.architecture")
    if arch not in IMPORTABLE:
        raise MlxlabError(f"GGUF architecture {arch!r} is not supported for import", path=path,
                          hint=f"supported: {', '.join(sorted(IMPORTABLE))}; or pass a Hugging Face model id")
    return arch


def build_config(meta: dict, path: Path, gguf_tensors=()) -> dict:
    """config.json for mlx-lm from GGUF hyperparameters (quantization is added once the weights are known)."""
    arch = _architecture(meta, path)
    model_type, hf_arch = IMPORTABLE[arch]
    if "rope_freqs.weight" in gguf_tensors:
        raise MlxlabError("this GGUF uses llama3-style rope scaling (rope_freqs), which import does not support yet",
                          path=path, hint="pass the Hugging Face id (e.g. mlx-community/...) instead")
    heads = int(_meta(meta, f"{arch}.attention.head_count", path=path))
    hidden = int(_meta(meta, f"{arch}.embedding_length", path=path))
    head_dim = int(meta.get(f"{arch}.attention.key_length", hidden // heads))
    rope_dim = int(meta.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dim != head_dim and arch != "phi3":
        raise MlxlabError(f"partial rotary embeddings ({rope_dim} of {head_dim} dims) are not supported for {arch}",
                          path=path)
    bos, eos = _special_token_id(meta, "bos"), _special_token_id(meta, "eos")
    context = int(meta.get(f"{arch}.context_length", 2048))
    config = {
        "architectures": [hf_arch],
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": int(_meta(meta, f"{arch}.block_count", path=path)),
        "intermediate_size": int(_meta(meta, f"{arch}.feed_forward_length", path=path)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(_meta(meta, f"{arch}.attention.layer_norm_rms_epsilon", path=path)),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": context,
        "vocab_size": len(_meta(meta, "tokenizer.ggml.tokens", path=path)),
        "tie_word_embeddings": "output.weight" not in gguf_tensors,
        "rope_traditional": False,   # q/k rows are un-permuted below, so HF's half-split rope applies
    }
    if meta.get(f"{arch}.rope.scaling.type") == "linear":
        factor = float(meta[f"{arch}.rope.scaling.factor"])
        config["rope_scaling"] = {"type": "linear", "rope_type": "linear", "factor": factor}
    if arch == "phi3":
        config["partial_rotary_factor"] = rope_dim / head_dim
        config["original_max_position_embeddings"] = int(meta.get(f"{arch}.rope.scaling.original_context_length",
                                                                  context))
        if "rope_factors_long.weight" in gguf_tensors:
            config["rope_scaling"] = {"type": "longrope"}        # factors filled in from the tensors
    if arch in ("gemma2", "gemma3"):
        config["query_pre_attn_scalar"] = _query_pre_attn_scalar(arch, config)
        config["sliding_window"] = int(meta.get(f"{arch}.attention.sliding_window", 4096))
    if arch == "gemma2":
        config["attn_logit_softcapping"] = float(meta.get(f"{arch}.attn_logit_softcapping", 50.0))
        config["final_logit_softcapping"] = float(meta.get(f"{arch}.final_logit_softcapping", 30.0))
    if arch == "gemma3":
        config["sliding_window_pattern"] = 6          # llama.cpp's fixed 5 local : 1 global layout
        config["rope_local_base_freq"] = 10000.0
    if bos is not None:
        config["bos_token_id"] = bos
    if eos is not None:
        config["eos_token_id"] = eos
    return config


def _query_pre_attn_scalar(arch: str, config: dict) -> int:
    """The Gemma 2/3 query scale's denominator (queries are scaled by 1/sqrt of it), as llama.cpp chooses it.

    A GGUF has no key for it: llama.cpp names the model size by its layer count and gives the 27B models
    1/sqrt(hidden / heads) (Google's reference; HF configs say 144 for gemma-2-27b, 168 for gemma-3-27b) and
    every other size 1/sqrt(head_dim), even where the two differ (gemma-3-1b: 288 vs 256).
    """
    if int(config["num_hidden_layers"]) == _GEMMA_27B_LAYERS[arch]:
        return int(config["hidden_size"]) // int(config["num_attention_heads"])
    return int(config["head_dim"])


def _quantization_config(weights: dict) -> dict | None:
    """mlx-lm's `quantization` entry: the common bits, plus per-module overrides where they differ."""
    bits_of = {}
    for name, value in weights.items():
        if name.endswith(".scales"):
            module = name[: -len(".scales")]
            in_dims = value.shape[-1] * GROUP_SIZE
            bits_of[module] = weights[f"{module}.weight"].shape[-1] * 32 // in_dims
    if not bits_of:
        return None
    common = Counter(bits_of.values()).most_common(1)[0][0]
    quant: dict = {"group_size": GROUP_SIZE, "bits": common}
    for module, bits in sorted(bits_of.items()):
        if bits != common:
            quant[module] = {"group_size": GROUP_SIZE, "bits": bits}
    # a 2-D float weight among quantized ones stays float; say so, since older mlx-lm would quantize it
    for name, value in weights.items():
        module = name[: -len(".weight")]
        if name.endswith(".weight") and value.ndim == 2 and module not in bits_of:
            quant[module] = False
    return quant


def convert_weights(arrays: dict, meta: dict, config: dict, path: Path | None = None) -> dict:
    """GGUF-named MLX arrays -> mlx-lm-named arrays: q/k rows un-permuted (llama), norms back to w (gemma)."""
    mx = import_mlx()
    arch = meta["general.architecture"]
    permuted, gemma = _layout(arch)
    heads = int(meta[f"{arch}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    names = name_map(config, arch)
    out, unknown = {}, []
    for name, value in arrays.items():
        base, _, suffix = name.rpartition(".")
        target = names.get(name) or names.get(f"{base}.weight") or names.get(f"{base}.bias")
        if target is None or suffix not in _SUFFIXES:
            if name not in _CONFIG_TENSORS:
                unknown.append(name)
            continue
        module = target.rpartition(".")[0]
        if permuted and (".attn_q." in name or ".attn_k." in name):
            # rows of weight, scales, biases (and a bias vector) all index output features
            value = _unpermute_rows(value, heads if ".attn_q." in name else kv_heads)
        if gemma and base.endswith("norm") and suffix == "weight":
            value = (value.astype(mx.float32) - 1.0).astype(value.dtype)     # llama.cpp stores 1 + w
        out[f"{module}.{suffix}"] = value
    if unknown:
        raise MlxlabError(f"the GGUF has tensors mlx-lm's {config['model_type']} model has no place for: "
                          f"{', '.join(sorted(unknown)[:5])}{' ...' if len(unknown) > 5 else ''}", path=path,
                          hint="the file may be a variant this importer does not know; pass the Hugging Face id")
    return out


def parameter_count(weights: dict) -> int:
    """Logical parameters (a packed quantized matrix counts as rows x input features)."""
    total = 0
    for name, value in weights.items():
        if name.endswith((".scales", ".biases")):
            continue
        scales = weights.get(name[: -len(".weight")] + ".scales") if name.endswith(".weight") else None
        total += value.shape[0] * scales.shape[-1] * GROUP_SIZE if scales is not None else value.size
    return int(total)


def _sentencepiece(meta: dict, tokens: list[str], types: list[int], vocab: dict[str, int]):
    """A SentencePiece-BPE GGUF tokenizer ("llama" model) as a `tokenizers` BPE with byte fallback.

    llama.cpp's SPM tokenizer merges, again and again, the adjacent pair whose joined piece has the highest
    score. The same order as BPE merges: every split (a, b) of every piece, ranked by the piece's score (ties
    by the parts' ids), as Hugging Face converts SentencePiece models. Spaces become "▁" (with one in front
    when the GGUF says `add_space_prefix`); characters outside the vocabulary fall back to <0xXX> bytes.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = list(meta.get("tokenizer.ggml.scores", [0.0] * len(tokens)))
    merges = []
    for piece, score, kind in zip(tokens, scores, types):
        if kind != 1 or len(piece) < 2:             # normal pieces only: controls and bytes are matched whole
            continue
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece)) if piece[:i] in vocab and piece[i:] in vocab]
        merges += [(-score, vocab[a], vocab[b], a, b) for a, b in splits]
    merges.sort()
    unk = _special_token_id(meta, "unknown")
    model = models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges], byte_fallback=True, fuse_unk=True,
                       unk_token=tokens[unk] if unk is not None else None)
    tokenizer = Tokenizer(model)
    steps = [normalizers.Prepend("▁")] if meta.get("tokenizer.ggml.add_space_prefix", True) else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if steps:
        decode.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode)
    return tokenizer


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1                     # int32 -1 (no pad token) is written as ten bytes, as protobuf does
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value) -> bytes:
    """One protobuf field: bytes/str (length-delimited), float (fixed32), or int/bool (varint)."""
    import struct

    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3) + _varint(int(value))


def sentencepiece_model(meta: dict, tokens: list[str], types: list[int]) -> bytes:
    """A SentencePiece `tokenizer.model` (BPE, byte fallback) holding the GGUF's pieces, scores and types.

    What the export's SentencePiece path reads back, so an imported model exports with its own tokenizer.
    Written field by field (sentencepiece_model.proto) so no protobuf library is needed.
    """
    scores = list(meta.get("tokenizer.ggml.scores", [0.0] * len(tokens)))
    pieces = b"".join(_field(1, _field(1, t) + _field(2, float(sc)) + _field(3, ty if 1 <= ty <= 6 else 1))
                      for t, sc, ty in zip(tokens, scores, types))
    ids = {key: _special_token_id(meta, key) for key in ("unknown", "bos", "eos", "padding")}
    # model_type BPE, whitespace-only pieces allowed (llama.cpp merges runs of "▁"), byte fallback; the special
    # tokens by id and by piece (SentencePiece finds bos/eos/unk/pad by their piece text)
    trainer = _field(3, 2) + _field(4, len(tokens)) + _field(26, True) + _field(35, True)
    for (id_field, piece_field), key in (((40, 45), "unknown"), ((41, 46), "bos"), ((42, 47), "eos"),
                                         ((43, 48), "padding")):
        idx = ids[key]
        trainer += _field(id_field, -1 if idx is None else idx)
        if idx is not None:
            trainer += _field(piece_field, tokens[idx])
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    normalizer = _field(1, "identity") + _field(3, prefix) + _field(4, False) + _field(5, True)
    return pieces + _field(2, trainer) + _field(3, normalizer)


def build_tokenizer(meta: dict, dest: Path, path: Path) -> None:
    """Write tokenizer.json and tokenizer_config.json from the GGUF's tokenizer metadata."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = meta.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        raise MlxlabError(f"GGUF tokenizer model {kind!r} is not supported for import (byte-level BPE 'gpt2' and "
                          "SentencePiece 'llama' are)", path=path,
                          hint="pass the Hugging Face id of the model instead of its GGUF file")
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    vocab = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    if kind == "llama":
        tokenizer = _sentencepiece(meta, tokens, types, vocab)
        (dest / "tokenizer.model").write_bytes(sentencepiece_model(meta, tokens, types))
    else:
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
        pre = meta.get("tokenizer.ggml.pre", "default")
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=pre in _LLAMA3_PRE))
        regexes = PRE_TOKENIZERS.get(pre)
        if regexes is None:
            raise MlxlabError(f"GGUF pre-tokenizer {pre!r} is not known to mlxlab", path=path,
                              hint=f"known: {', '.join(sorted(PRE_TOKENIZERS))}; or pass the Hugging Face id")
        splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tokenizer.decoder = decoders.ByteLevel()
    # 3 = control (<|im_end|>...), 4 = user-defined: both are matched whole, before BPE, as llama.cpp does
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                  for i, t in enumerate(types) if t == 3])
    tokenizer.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                          for i, t in enumerate(types) if t == 4])

    def token(key: str) -> str | None:
        idx = _special_token_id(meta, key)
        return None if idx is None else tokens[idx]

    bos, eos, unk, pad = token("bos"), token("eos"), token("unknown"), token("padding")
    add_bos = _adds_bos(meta) and bos is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    single = (["$A:0"] if not add_bos else [bos, "$A:0"]) + ([eos] if add_eos else [])
    pair = single + ["$B:1"] + ([eos] if add_eos else [])
    specials = [(t, vocab[t]) for t in dict.fromkeys(x for x in (bos if add_bos else None,
                                                                  eos if add_eos else None) if x)]
    tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    tokenizer.save(str(dest / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(meta.get(f"{meta.get('general.architecture')}.context_length", 2048)),
        "bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad or eos,
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def convert(path: Path, dest: Path) -> Converted:
    """Write an mlx-lm-loadable model directory for the GGUF at `path` into the existing dir `dest`."""
    mx = import_mlx()
    reader, meta, types = read_gguf(path)
    arch = _architecture(meta, path)          # before the slow part: fail fast
    config = build_config(meta, path, gguf_tensors=types)
    arrays, how = _load_tensors(path, reader, types)
    del reader                                   # drops gguf-py's memory map of the file
    if config.get("rope_scaling", {}).get("type") == "longrope":
        for kind in ("long", "short"):
            config["rope_scaling"][f"{kind}_factor"] = [float(x) for x in
                                                        np.array(arrays[f"rope_factors_{kind}.weight"])]
    weights = convert_weights(arrays, meta, config, path)
    if arch in _FLOAT32_ARCHS:
        weights = {k: v.astype(mx.float32) if v.dtype == mx.float16 else v for k, v in weights.items()}
    quant = _quantization_config(weights)
    if quant:
        config["quantization"] = config["quantization_config"] = quant
    build_tokenizer(meta, dest, path)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if meta.get("tokenizer.chat_template"):
        (dest / "chat_template.jinja").write_text(meta["tokenizer.chat_template"])
    return Converted(architecture=arch, quantization=_describe(how, types), parameters=parameter_count(weights))


def _describe(how: dict[str, str], types: dict[str, str]) -> str:
    """'q4_1 -> mlx 4-bit g32' for the common case, then the other mappings with their counts."""
    if not how:
        floats = sorted({t.lower() for t in types.values()})
        return "float (" + ", ".join(floats) + ")"
    counts = Counter(how.values()).most_common()
    parts = [counts[0][0]] + [f"{what} (x{n})" for what, n in counts[1:]]
    return "; ".join(parts)
