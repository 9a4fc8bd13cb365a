"""MLX / Hugging Face weights + tokenizer -> GGUF that llama.cpp, Ollama and LM Studio load, checked numerically.

`export_gguf(model, output, out_type=...)` writes the GGUF with gguf-py (no torch, no llama.cpp converter
script): f32, f16, bf16 and q8_0 directly; K-quants and the other llama.cpp types through llama.cpp's own
quantizer (`llama_model_quantize`, in a subprocess) from a 16-bit intermediate that is ours and removed.
A 4-bit MLX model is dequantized first. After writing, the GGUF is loaded by llama-cpp-python in a
subprocess (a bad GGUF can abort the process) and its logits are compared with MLX's on a probe prompt.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlxlab.errors import MlxlabError
from mlxlab.gguf.tables import ARCHITECTURES
from mlxlab.llamacpp import quantize_gguf

DIRECT_TYPES = ("f32", "f16", "bf16", "q8_0")
LLAMA_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
               "q5_k_s", "q5_k_m", "q6_k", "iq4_nl", "iq4_xs")
OUT_TYPES = DIRECT_TYPES + LLAMA_TYPES
PROBE = ("The quick brown fox jumps over the lazy dog. In 1969, 3 astronauts flew 384,400 km to the Moon!\n"
         "def add(a, b):\n    return a + b  # café, naïve, Ünïcödé — 東京\nWhat is the capital of France?")
# the least top-1 agreement with MLX below which an export counts as broken, by output type
# (a broken export agrees at ~1/vocab of the positions; tiny random models with flat logits disagree often)
_MIN_TOP1 = {"f32": 0.8, "f16": 0.8, "bf16": 0.8, "q8_0": 0.5}
_MIN_TOP1_DEFAULT = 0.15
# the largest |Δlogit| against MLX a float export may show, as a share of MLX's logit range on the probe
# (rounding costs a few percent at most, gemma's f16 GELU table the most; a wrong tensor costs the whole range)
_MAX_DIFF_SHARE = {"f32": 0.05, "f16": 0.25, "bf16": 0.25}
# a quantized export against llama.cpp's own quantizer applied to this model's f16 export (the reference for
# what the type can do here): the same quantization must give the same logits, up to rounding. Judged by the
# largest |Δlogit| alone: where it is d, a top-1 that differs lies within 2d of the best (a tie at that precision;
# tiny random models with flat logits flip a few of those, measured 94.7% top-1 at d = 0.065), while a broken
# writer moves logits by much of their range
_REFERENCE_MAX_DIFF_SHARE = 0.05
# llama.cpp runs in subprocesses (a bad file can abort it); none may hang an export forever (see also
# llamacpp.QUANTIZE_TIMEOUT_S)
VERIFY_TIMEOUT_S = 900


@dataclass(frozen=True)
class ExportResult:
    """A written GGUF and how closely llama.cpp reproduces MLX on it."""
    path: Path
    size_bytes: int
    out_type: str
    architecture: str                      # GGUF general.architecture
    seconds: float
    max_abs_logit_diff: float | None       # None when verify=False
    top1_agreement: float | None           # fraction of probe positions with the same argmax
    positions: int                         # probe positions compared
    modelfile: Path                        # Ollama Modelfile next to the GGUF
    verify_report: Path | None             # <name>.verify.json


def _load_config(model_dir: Path) -> dict:
    """config.json of an HF-layout model directory."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise MlxlabError("not a model directory: no config.json", path=model_dir,
                          hint="pass a Hugging Face-layout directory (config.json + *.safetensors + tokenizer)")
    return json.loads(path.read_text())


def architecture_of(config: dict, path: Path | None = None) -> tuple[str, bool, bool]:
    """(GGUF arch, permute q/k, gemma norms) for a config.json, or an MlxlabError listing the supported ones."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise MlxlabError(f"architecture {model_type!r} is not supported for GGUF export", path=path,
                          hint="supported model_type values: " + ", ".join(ARCHITECTURES))
    return ARCHITECTURES[model_type]


def load_weights(model_dir: Path, config: dict) -> dict[str, np.ndarray]:
    """Every tensor of the model as float32 numpy arrays; MLX-quantized ones are dequantized."""
    from mlxlab.device import import_mlx

    mx = import_mlx()
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise MlxlabError("no *.safetensors weights in the model directory", path=model_dir)
    weights = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except Exception as exc:  # mlx raises RuntimeError/ValueError on a truncated or foreign file
            raise MlxlabError(f"cannot read weights: {exc}", path=file) from exc
    quant = config.get("quantization") or {}
    out = {}
    for name, value in weights.items():
        if name.endswith((".scales", ".biases")):
            continue
        base = name[: -len(".weight")]
        if name.endswith(".weight") and f"{base}.scales" in weights:
            spec = quant.get(base) if isinstance(quant.get(base), dict) else quant
            value = mx.dequantize(value, weights[f"{base}.scales"], weights.get(f"{base}.biases"),
                                  group_size=int(spec.get("group_size", 64)), bits=int(spec.get("bits", 4)),
                                  mode=spec.get("mode", "affine"))
        out[name] = np.array(value.astype(mx.float32))
    return out


def _permute_qk(x: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's half-split rope rows -> llama.cpp's interleaved layout (rows of a weight or a bias)."""
    return x.reshape(n_heads, 2, x.shape[0] // n_heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def _llama3_rope_factors(config: dict, head_dim: int) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1's rope scaling (llama.cpp reads them as `rope_freqs`)."""
    scaling = config["rope_scaling"]
    factor = float(scaling.get("factor", 8.0))
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (float(config.get("rope_theta", 10000.0)) ** (np.arange(0, head_dim, 2) / head_dim))
    wavelen = 2 * math.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, mid)).astype(np.float32)


def gguf_tensors(weights: dict[str, np.ndarray], config: dict) -> dict[str, np.ndarray]:
    """HF-named float32 tensors -> GGUF-named tensors with llama.cpp's layout conventions."""
    import gguf

    arch, permute, gemma = architecture_of(config)
    n_layers = int(config["num_hidden_layers"])
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, n_layers)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    # mlx-lm's gemma2 always reuses the embedding; gemma3 uses lm_head whenever the weights have one
    tied = arch == "gemma2" or (arch != "gemma3" and bool(config.get("tie_word_embeddings", True)))
    out = {}
    for name, value in weights.items():
        if "rotary_emb.inv_freq" in name or (tied and name == "lm_head.weight"):
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise MlxlabError(f"tensor {name!r} has no GGUF name for architecture {arch}",
                              hint="the weights do not match config.json's model_type")
        if permute and name.endswith(("q_proj.weight", "q_proj.bias")):
            value = _permute_qk(value, heads)
        elif permute and name.endswith(("k_proj.weight", "k_proj.bias")):
            value = _permute_qk(value, kv_heads)
        if gemma and name.endswith("norm.weight"):
            value = value + 1.0          # llama.cpp multiplies by w, gemma by (1 + w)
        out[target] = value
    scaling = config.get("rope_scaling") or {}
    if arch == "llama" and scaling.get("rope_type", scaling.get("type")) == "llama3":
        head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
        out["rope_freqs.weight"] = _llama3_rope_factors(config, head_dim)
    if arch == "phi3" and scaling.get("type") in ("longrope", "su"):
        out["rope_factors_long.weight"] = np.asarray(scaling["long_factor"], dtype=np.float32)
        out["rope_factors_short.weight"] = np.asarray(scaling["short_factor"], dtype=np.float32)
    return out


def write_hparams(writer, config: dict, arch: str) -> None:
    """Architecture hyperparameters (`<arch>.*`) from config.json."""
    import gguf

    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_context_length(int(config.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(int(head_dim * float(config.get("partial_rotary_factor", 1.0))))
    rope_theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta") or 10000.0
    writer.add_rope_freq_base(float(rope_theta))
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    elif kind not in (None, "default", "llama3", "longrope", "su") or (kind in ("longrope", "su") and arch != "phi3") \
            or (kind == "llama3" and arch != "llama"):
        raise MlxlabError(f"rope scaling {kind!r} is not supported for GGUF export of {arch}",
                          hint="supported: linear (all), llama3 (llama), longrope (phi3)")
    if arch == "phi3":
        original = int(config.get("original_max_position_embeddings", config.get("max_position_embeddings", 4096)))
        writer.add_rope_scaling_orig_ctx_len(original)
        writer.add_sliding_window(int(config.get("sliding_window") or 0))
        scale = int(config.get("max_position_embeddings", original)) / original
        if kind in ("longrope", "su"):
            writer.add_rope_scaling_attn_factors(
                math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(float(config.get("attn_logit_softcapping") or 50.0))
        writer.add_final_logit_softcapping(float(config.get("final_logit_softcapping") or 30.0))
    if arch in ("gemma2", "gemma3"):
        writer.add_sliding_window(int(config.get("sliding_window") or 4096))


def _tensor_data(name: str, value: np.ndarray, out_type: str):
    """(data, raw GGML type or None) for one tensor: norms, biases and odd shapes stay float32."""
    import gguf
    from gguf import GGMLQuantizationType as Q

    if value.ndim < 2 or out_type == "f32":
        return value.astype(np.float32), None
    if out_type == "f16":
        return value.astype(np.float16), None
    if out_type == "bf16":
        return gguf.quants.quantize(value, Q.BF16), Q.BF16
    if value.shape[-1] % 32:                    # q8_0 blocks are 32 wide
        return value.astype(np.float16), None
    # from the f16 values, as llama.cpp's own q8_0 of the f16 export (the check's reference) does: the same bytes,
    # where quantizing a float32 model's values directly moved some blocks a step (tiny gemma3: top-1 83% vs it)
    return gguf.quants.quantize(value.astype(np.float16).astype(np.float32), Q.Q8_0), Q.Q8_0


def _file_type(out_type: str):
    """gguf.LlamaFileType for an output type."""
    import gguf

    return gguf.LlamaFileType.ALL_F32 if out_type == "f32" else getattr(gguf.LlamaFileType, f"MOSTLY_{out_type.upper()}")


def write_gguf(model_dir: Path, path: Path, out_type: str) -> str:
    """Write the GGUF of `model_dir` at `out_type` (one of DIRECT_TYPES) to `path`; returns the architecture."""
    import gguf

    from mlxlab.gguf.gguf_tokenizer import pad_vocab, read_tokenizer, write_tokenizer

    config = _load_config(model_dir)
    arch = architecture_of(config, model_dir / "config.json")[0]
    tokenizer = read_tokenizer(model_dir, config)
    tensors = gguf_tensors(load_weights(model_dir, config), config)
    if "token_embd.weight" not in tensors:
        raise MlxlabError("the weights have no token embedding (model.embed_tokens)", path=model_dir)
    pad_vocab(tokenizer, tensors["token_embd.weight"].shape[0])
    writer = gguf.GGUFWriter(str(path), arch)
    try:
        name = model_dir.name
        # llama.cpp marks SentencePiece specials of models *named* phi-3 and aborts when </s>, <s> or <unk> are absent
        if not ("phi3" in name.lower() or "phi-3" in name.lower()) or \
                {"</s>", "<s>", "<unk>", "<|endoftext|>"} <= set(tokenizer.tokens):
            writer.add_name(name)
        writer.add_file_type(_file_type(out_type))
        if out_type == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        write_hparams(writer, config, arch)
        writer.add_vocab_size(len(tokenizer.tokens))
        write_tokenizer(writer, tokenizer)
        for name, value in tensors.items():
            data, raw = _tensor_data(name, value, out_type)
            writer.add_tensor(name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return arch


_VERIFY_SCRIPT = """
import json, sys
import numpy as np
from mlxlab.llamacpp import load_llama
args = json.loads(sys.argv[1])
tokens = args["tokens"]
llm = load_llama(args["gguf"], purpose="the export check", n_ctx=args["n_ctx"], n_batch=min(512, args["n_ctx"]),
                 logits_all=True, n_threads=args["threads"], n_threads_batch=args["threads"], type_k=0, type_v=0,
                 verbose=True)
text_tokens = llm.tokenize(args["text"].encode("utf-8"), add_bos=True, special=True)
llm.eval(tokens)
np.save(args["logits"], np.asarray(llm.scores[: len(tokens)], dtype=np.float32))
json.dump({"text_tokens": text_tokens, "n_vocab": llm.n_vocab()}, open(args["info"], "w"))
"""


def _probe_text(tokenizer, text: str) -> str:
    """The probe as the user turn of the model's chat template (plain text when there is none)."""
    try:
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
    except Exception:  # a template that needs other roles or variables: the plain text still probes the weights
        pass
    return text


def _llama_logits(gguf_path: Path, tokens: list[int], text: str) -> tuple[np.ndarray, dict]:
    """llama.cpp's logits for `tokens` on `gguf_path` (in a subprocess: a bad file can abort llama.cpp)."""
    from mlxlab.device import llama_threads
    from mlxlab.llamacpp import require

    require("checking the export", instead="export with --no-verify")

    with tempfile.TemporaryDirectory(prefix="mlxlab-verify-") as tmp:
        args = {"gguf": str(gguf_path), "tokens": tokens, "text": text, "n_ctx": max(64, len(tokens) + 8),
                "threads": max(1, llama_threads()), "logits": f"{tmp}/logits.npy", "info": f"{tmp}/info.json"}
        try:
            proc = subprocess.run([sys.executable, "-c", _VERIFY_SCRIPT, json.dumps(args)], capture_output=True,
                                  text=True, timeout=VERIFY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise MlxlabError(f"llama.cpp did not finish checking the exported GGUF within {VERIFY_TIMEOUT_S} s",
                              path=gguf_path, hint="check free memory; or export with --no-verify") from None
        if proc.returncode != 0:
            lines = (proc.stderr + proc.stdout).strip().splitlines()
            tail = "\n".join(([x for x in lines if "error" in x.lower() or "fail" in x.lower()] or lines)[-6:])
            raise MlxlabError(f"llama.cpp could not load or run the exported GGUF (exit {proc.returncode}): "
                              f"{tail}", path=gguf_path,
                              hint="this is a bug in the export; please report it with the model's config.json")
        return np.load(args["logits"]), json.loads(Path(args["info"]).read_text())


def _agreement(logits: np.ndarray, reference: np.ndarray) -> dict:
    """max / mean |Δlogit| and top-1 agreement of `logits` against `reference`."""
    finite = np.isfinite(logits).all()
    return {"max_abs_logit_diff": float(np.max(np.abs(logits - reference))) if finite else float("inf"),
            "mean_abs_logit_diff": float(np.mean(np.abs(logits - reference))) if finite else float("inf"),
            "top1_agreement": float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1)))}


def verify_gguf(gguf_path: Path, model_dir: Path, *, probe: str = PROBE, out_type: str = "f16",
                check: bool = True, reference_gguf: Path | None = None) -> dict:
    """Compare llama.cpp's logits on the GGUF with MLX's on `probe`; with `check`, raise MlxlabError when broken.

    A float export must agree with MLX in top-1 and stay within a share of MLX's logit range. A quantized
    export is judged against `reference_gguf`, llama.cpp's own quantizer applied to the f16 export of the
    same model: MLX float32 is no reference for what a quantized type can do on a given model.
    """
    from mlxlab.device import import_mlx
    from mlxlab.models import load_model

    mx = import_mlx()
    model, tokenizer = load_model(model_dir, dtype="float32")
    text = _probe_text(tokenizer, probe)
    tokens = list(tokenizer.encode(text))
    mlx_logits = np.array(model(mx.array([tokens]))[0].astype(mx.float32))
    logits, info = _llama_logits(gguf_path, tokens, text)
    if logits.shape != mlx_logits.shape:
        raise MlxlabError(f"llama.cpp returns logits of shape {logits.shape}, MLX {mlx_logits.shape}", path=gguf_path)
    spread = float(np.max(mlx_logits) - np.min(mlx_logits)) or 1.0
    report = {"gguf": str(gguf_path), "model": str(model_dir), "out_type": out_type, "positions": len(tokens),
              **_agreement(logits, mlx_logits), "mlx_logit_range": spread,
              "tokenizer_match": info["text_tokens"] == tokens}
    if reference_gguf is not None:
        ref_logits, _ = _llama_logits(reference_gguf, tokens, text)
        report["reference"] = {"what": f"llama.cpp's {out_type} quantizer on this model's f16 export",
                               **_agreement(logits, ref_logits)}
    if not check:
        return report
    if not report["tokenizer_match"]:
        raise MlxlabError("llama.cpp tokenizes the probe differently from the model's own tokenizer "
                          f"(first tokens {info['text_tokens'][:12]} vs {tokens[:12]})", path=gguf_path,
                          hint="the pre-tokenizer or special tokens were not exported faithfully; please report it")
    top1, diff = report["top1_agreement"], report["max_abs_logit_diff"]
    broken = top1 < _MIN_TOP1.get(out_type, _MIN_TOP1_DEFAULT) or not math.isfinite(diff)
    if out_type in _MAX_DIFF_SHARE and diff > _MAX_DIFF_SHARE[out_type] * spread:
        broken = True
    if broken:
        raise MlxlabError(f"the exported GGUF disagrees with MLX: top-1 agreement {top1:.1%}, "
                          f"max abs logit difference {diff:.3g} (MLX's logits span {spread:.3g}) over "
                          f"{len(tokens)} positions", path=gguf_path,
                          hint="a lower-bit type may be too lossy for this model; otherwise this is an export bug")
    ref = report.get("reference")
    if ref and not ref["max_abs_logit_diff"] <= _REFERENCE_MAX_DIFF_SHARE * spread:
        raise MlxlabError(f"the {out_type} export disagrees with llama.cpp's own {out_type} quantization of the same "
                          f"model: top-1 agreement {ref['top1_agreement']:.1%}, max abs logit difference "
                          f"{ref['max_abs_logit_diff']:.3g} (MLX's logits span {spread:.3g})", path=gguf_path,
                          hint="this is a bug in mlxlab's quantized writer; export f16 and quantize with llama.cpp")
    return report


# chat-template family -> (Ollama Go template, stop strings); Ollama cannot run Jinja
_OLLAMA_TEMPLATES = {
    "<|im_start|>": ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}"
                     "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}"
                     "<|im_end|>\n", ["<|im_start|>", "<|im_end|>"]),
    "<|start_header_id|>": ("{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
                            "{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}"
                            "<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}"
                            "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
    "<start_of_turn>": ("<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
                        "<start_of_turn>model\n{{ .Response }}<end_of_turn>\n", ["<start_of_turn>", "<end_of_turn>"]),
    "<|user|>": ("{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ if .Prompt }}<|user|>\n{{ .Prompt }}"
                 "<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>\n", ["<|end|>", "<|user|>", "<|assistant|>"]),
    "[INST]": ("[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]{{ .Response }}", ["[INST]", "</s>"]),
}


def write_modelfile(gguf_path: Path, chat_template: str | None, eos: str | None) -> Path:
    """An Ollama Modelfile next to the GGUF (`<name>.Modelfile`): FROM, TEMPLATE and stop tokens."""
    lines = [f"FROM ./{gguf_path.name}", ""]
    for marker, (template, stops) in _OLLAMA_TEMPLATES.items():
        if chat_template and marker in chat_template:
            lines += [f'TEMPLATE """{template}"""', ""]
            lines += [f'PARAMETER stop "{s}"' for s in dict.fromkeys([*stops, *([eos] if eos else [])])]
            break
    else:
        if eos:
            lines.append(f'PARAMETER stop "{eos}"')
    path = gguf_path.with_name(gguf_path.stem + ".Modelfile")
    _atomic_text(path, "\n".join(lines) + "\n")
    return path


def _atomic_text(path: Path, text: str) -> None:
    from mlxlab.files import atomic_write

    atomic_write(path, text)


def _output_path(output: str | Path, model_dir: Path, out_type: str) -> Path:
    """A .gguf file path: `output` itself, or `<output>/<model>-<type>.gguf` when it is a directory."""
    output = Path(output).expanduser()
    if output.suffix.lower() == ".gguf":
        return output
    return output / f"{model_dir.name}-{out_type}.gguf"


def _write_checked(model_dir: Path, tmp: Path, out_type: str, probe: str, verify: bool, intermediate: Path,
                   reference: Path) -> tuple[str, dict | None]:
    """Write the GGUF of `out_type` to `tmp` and check it (see `verify_gguf`); (architecture, report)."""
    report = None
    if out_type in ("f32", "f16", "bf16"):
        arch = write_gguf(model_dir, tmp, out_type)
        report = verify_gguf(tmp, model_dir, probe=probe, out_type=out_type) if verify else None
    elif out_type == "q8_0":              # written by mlxlab: checked against llama.cpp's own q8_0
        arch = write_gguf(model_dir, tmp, out_type)
        if verify:
            write_gguf(model_dir, intermediate, "f16")
            quantize_gguf(intermediate, reference, out_type)
            report = verify_gguf(tmp, model_dir, probe=probe, out_type=out_type, reference_gguf=reference)
    else:                                  # llama.cpp's quantizer on mlxlab's f16: that f16 must be right
        arch = write_gguf(model_dir, intermediate, "f16")
        if verify:
            verify_gguf(intermediate, model_dir, probe=probe, out_type="f16")
        quantize_gguf(intermediate, tmp, out_type)
        if verify:
            report = verify_gguf(tmp, model_dir, probe=probe, out_type=out_type)
            report["reference"] = {"what": f"this file is llama.cpp's {out_type} quantizer on this model's f16 "
                                           "export (checked against MLX before quantizing)"}
    return arch, report


def export_gguf(model: str | Path, output: str | Path, *, out_type: str = "f16", verify: bool = True,
                probe: str = PROBE, force: bool = False) -> ExportResult:
    """Export the MLX/HF model `model` as a GGUF of `out_type` at `output` (a .gguf path or a directory).

    The file appears atomically (temporary name + rename); an existing file is replaced only with `force`.
    With `verify`, llama.cpp's logits are compared with MLX's on `probe` and saved in `<name>.verify.json`.
    """
    from mlxlab.models import resolve_model

    start = time.perf_counter()
    out_type = out_type.lower()
    if out_type not in OUT_TYPES:
        raise MlxlabError(f"unknown output type {out_type!r}", hint="choose one of: " + ", ".join(OUT_TYPES))
    model_dir = resolve_model(model)
    architecture_of(_load_config(model_dir), model_dir / "config.json")     # fail before any work
    path = _output_path(output, model_dir, out_type)
    if path.exists() and not force:
        raise MlxlabError("output exists; refusing to overwrite it", path=path,
                          hint="choose another output, or pass force=True (--force) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    intermediate = path.with_name(f".{path.stem}.f16-{tag}.gguf")     # ours alone: always removed
    reference = path.with_name(f".{path.stem}.reference-{tag}.gguf")
    from mlxlab.files import atomic_path

    try:
        # the file appears, fsynced, only once written and checked (mlxlab.files)
        with atomic_path(path) as tmp:
            arch, report = _write_checked(model_dir, tmp, out_type, probe, verify, intermediate, reference)
    except OSError as exc:
        raise MlxlabError(f"could not write the GGUF: {exc.strerror or exc}", path=path,
                          hint="check free disk space and permissions") from exc
    finally:
        intermediate.unlink(missing_ok=True)
        reference.unlink(missing_ok=True)
    from mlxlab.gguf.gguf_tokenizer import chat_template, read_json, token_text

    tok_config = model_dir / "tokenizer_config.json"
    tok = read_json(tok_config) if tok_config.is_file() else {}
    modelfile = write_modelfile(path, chat_template(model_dir, tok), token_text(tok.get("eos_token")))
    verify_path = None
    if report is not None:
        report["gguf"] = str(path)
        verify_path = path.with_name(path.stem + ".verify.json")
        _atomic_text(verify_path, json.dumps(report, indent=2) + "\n")
    return ExportResult(path=path, size_bytes=path.stat().st_size, out_type=out_type, architecture=arch,
                        seconds=time.perf_counter() - start,
                        max_abs_logit_diff=report["max_abs_logit_diff"] if report else None,
                        top1_agreement=report["top1_agreement"] if report else None,
                        positions=report["positions"] if report else 0, modelfile=modelfile,
                        verify_report=verify_path)


def result_dict(result: ExportResult) -> dict:
    """An ExportResult as JSON-ready values."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}
