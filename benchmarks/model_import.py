"""Benchmark: import the embedded SmolLM2 GGUF into MLX (cold and cached) and compare it with llama.cpp.

Writes benchmarks/results/model_import.json and .md. Run: `python benchmarks/model_import.py`.
Parity: the same token ids through MLX (our import) and llama.cpp (the GGUF itself); max/mean absolute
logit difference and top-1 agreement over every position of a ~64-token chat prompt, and how many
greedy tokens agree before the first divergence.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import mlxlab  # binds OpenBLAS before mlx.core is imported
from mlxlab import device

MESSAGES = [
    {"role": "system", "content": "You are a concise assistant who explains programming ideas clearly."},
    {"role": "user", "content": "In two or three sentences, explain what a service-oriented programming "
                                "language is, and give one example of where such a language is useful, "
                                "for instance in a web shop or a bank."},
]


def _parity(model_dir: Path, gguf: Path, greedy_tokens: int) -> dict:
    """Logit and greedy-decoding agreement between MLX and llama.cpp on the same ids."""
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    from mlxlab.models import load_model

    mx = device.import_mlx()
    model, tokenizer = load_model(model_dir)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    from mlxlab.llamacpp import load_llama

    llm = load_llama(gguf, logits_all=True, n_ctx=512, n_threads=1, n_threads_batch=1, verbose=False)
    cpp_ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)

    start = time.perf_counter()
    llm.eval(ids)
    cpp_prefill = time.perf_counter() - start
    theirs = np.array(llm.scores[: len(ids)])
    start = time.perf_counter()
    cache = make_prompt_cache(model)
    out = model(mx.array([ids]), cache=cache)
    mx.eval(out)
    mlx_prefill = time.perf_counter() - start
    ours = np.array(out[0])
    diff = np.abs(ours - theirs)

    mlx_tokens, cpp_tokens = [], []
    logits = out[:, -1]
    start = time.perf_counter()
    for _ in range(greedy_tokens):
        token = int(mx.argmax(logits, axis=-1).item())
        mlx_tokens.append(token)
        logits = model(mx.array([[token]]), cache=cache)[:, -1]
    mlx_decode = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(greedy_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        cpp_tokens.append(token)
        llm.eval([token])
    cpp_decode = time.perf_counter() - start
    match = next((i for i, (a, b) in enumerate(zip(mlx_tokens, cpp_tokens)) if a != b), greedy_tokens)
    return {
        "prompt_tokens": len(ids),
        "tokenization_matches_llama_cpp": cpp_ids == ids,
        "max_abs_logit_diff": round(float(diff.max()), 4),
        "mean_abs_logit_diff": round(float(diff.mean()), 4),
        "logit_std": round(float(theirs.std()), 3),
        "top1_agreement": round(float((ours.argmax(-1) == theirs.argmax(-1)).mean()), 4),
        "greedy_tokens": greedy_tokens,
        "greedy_match_length": match,
        "mlx_continuation": tokenizer.decode(mlx_tokens),
        "llama_cpp_continuation": tokenizer.decode(cpp_tokens),
        "prefill_tok_per_s": {"mlx": round(len(ids) / mlx_prefill, 1), "llama_cpp": round(len(ids) / cpp_prefill, 1)},
        "decode_tok_per_s": {"mlx": round(greedy_tokens / mlx_decode, 1),
                             "llama_cpp": round(greedy_tokens / cpp_decode, 1)},
    }


def run(greedy_tokens: int = 32) -> dict:
    """Time the import (cold, then cached) into a fresh cache, then measure parity."""
    from mlxlab.models import embedded_gguf, import_gguf

    gguf = embedded_gguf()
    with tempfile.TemporaryDirectory(prefix="mlxlab-bench-") as tmp:
        os.environ["MLXLAB_CACHE"] = tmp
        cold = import_gguf(gguf)
        cached = import_gguf(gguf)
        forced = import_gguf(gguf, force=True)
        parity = _parity(cold.path, gguf, greedy_tokens)
        size_mb = sum(p.stat().st_size for p in cold.path.iterdir()) / 1e6
    mx = device.import_mlx()
    return {
        "model": gguf.name,
        "gguf_mb": round(gguf.stat().st_size / 1e6, 1),
        "imported_mb": round(size_mb, 1),
        "architecture": cold.architecture,
        "quantization": cold.quantization,
        "parameters": cold.parameters,
        "import_cold_s": round(cold.seconds, 3),
        "import_forced_s": round(forced.seconds, 3),
        "import_cached_s": round(cached.seconds, 5),
        "parity": parity,
        "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "mlx": mx.__version__, "device": device.current_device(), "dtype": device.dtype_name(),
                    "blas": device.blas_status()[0] or device.blas_status()[1]},
    }


def _markdown(r: dict) -> str:
    """The results as a small markdown report."""
    p = r["parity"]
    lines = [
        f"# GGUF import: {r['model']}",
        "",
        f"{r['architecture']}, {r['parameters']:,} parameters, {r['quantization']}; "
        f"GGUF {r['gguf_mb']} MB -> MLX dir {r['imported_mb']} MB.",
        f"Machine: {r['machine']['system']} {r['machine']['machine']}, {r['machine']['cpus']} CPUs, "
        f"MLX {r['machine']['mlx']} on {r['machine']['device']} ({r['machine']['dtype']}), BLAS: {r['machine']['blas']}.",
        "",
        "| import | seconds |",
        "|---|---|",
        f"| cold (fresh cache) | {r['import_cold_s']} |",
        f"| forced re-import | {r['import_forced_s']} |",
        f"| cached | {r['import_cached_s']} |",
        "",
        f"Parity with llama.cpp on a {p['prompt_tokens']}-token chat prompt "
        f"(tokenization identical: {p['tokenization_matches_llama_cpp']}):",
        "",
        "| metric | value |",
        "|---|---|",
        f"| max abs logit diff | {p['max_abs_logit_diff']} |",
        f"| mean abs logit diff | {p['mean_abs_logit_diff']} (logit std {p['logit_std']}) |",
        f"| top-1 agreement over positions | {p['top1_agreement']:.1%} |",
        f"| greedy match length | {p['greedy_match_length']} / {p['greedy_tokens']} |",
        f"| prefill tok/s (MLX / llama.cpp, 1 thread) | {p['prefill_tok_per_s']['mlx']} / {p['prefill_tok_per_s']['llama_cpp']} |",
        f"| decode tok/s (MLX / llama.cpp, 1 thread) | {p['decode_tok_per_s']['mlx']} / {p['decode_tok_per_s']['llama_cpp']} |",
        "",
        f"MLX continuation: {p['mlx_continuation']!r}",
        "",
        f"llama.cpp continuation: {p['llama_cpp_continuation']!r}",
        "",
        "The logit gap is kernel arithmetic: llama.cpp's CPU path rounds activations to 8 bits before each "
        "Q4_1 matmul, MLX keeps float32; an F16 re-encoding of the same model agrees within ~0.07 "
        "(tests/test_models.py).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write JSON + markdown under benchmarks/results/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--greedy-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    result = run(args.greedy_tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_import.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "model_import.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
