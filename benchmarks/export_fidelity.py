"""Export fidelity: every supported architecture x GGUF output type -> time, size, llama.cpp vs MLX logits.

Tiny random models (the test fixtures' builder and tokenizer) of each architecture, plus the embedded
SmolLM2-135M-Instruct (4-bit MLX import, dequantized on export), are exported to each type; llama.cpp's
logits are compared with MLX's over >= 256 probe positions. Writes benchmarks/results/export_fidelity.{json,md}.

    python benchmarks/export_fidelity.py              # tiny models + SmolLM2 (~5 min on 2 cores)
    python benchmarks/export_fidelity.py --no-smollm  # tiny models only (~1 min)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))

import mlxlab  # noqa: E402,F401  (binds OpenBLAS before mlx loads)

TINY_ARCHS = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text"]
TINY_TYPES = ["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"]
SMOLLM_TYPES = ["f16", "q8_0", "q4_1", "q4_k_m"]


def long_probe(tokenizer, positions: int = 256) -> str:
    """The export probe repeated until it tokenizes to at least `positions` tokens."""
    from mlxlab.gguf.gguf_export import PROBE

    text = PROBE
    while len(tokenizer.encode(text)) < positions:
        text += "\n" + PROBE
    return text


def measure(model_dir: Path, out_dir: Path, out_type: str, probe: str) -> dict:
    """Export once without the built-in check, then verify with the long probe; one result row."""
    from mlxlab.gguf import export_gguf, verify_gguf

    start = time.perf_counter()
    result = export_gguf(model_dir, out_dir, out_type=out_type, verify=False, force=True)
    seconds = time.perf_counter() - start
    report = verify_gguf(result.path, model_dir, probe=probe, out_type=out_type, check=False)
    result.path.unlink()
    return {"out_type": out_type, "export_seconds": round(seconds, 2), "size_bytes": result.size_bytes,
            "positions": report["positions"], "max_abs_logit_diff": report["max_abs_logit_diff"],
            "mean_abs_logit_diff": report["mean_abs_logit_diff"], "top1_agreement": report["top1_agreement"],
            "tokenizer_match": report["tokenizer_match"]}


def main() -> None:
    """Run the grid and write JSON + markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-smollm", action="store_true", help="skip the embedded SmolLM2")
    args = parser.parse_args()
    import conftest
    from mlxlab.models import load_model

    rows = []
    with tempfile.TemporaryDirectory(prefix="mlxlab-fidelity-") as tmp:
        root = Path(tmp)
        tokenizer_dir = conftest._train_tokenizer(root / "tokenizer")
        # mlx-lm's gemma2 has no sliding window while llama.cpp applies it: keep the window past the probe
        extra = {"gemma2": {"sliding_window": 4096}, "gemma3_text": {"sliding_window": 512}}
        models = [(arch, conftest.build_tiny_model(arch, root / arch, tokenizer_dir, **extra.get(arch, {})),
                   TINY_TYPES) for arch in TINY_ARCHS]
        if not args.no_smollm:
            models.append(("smollm2 (llama, 4-bit MLX)", mlxlab.resolve_model("smollm2"), SMOLLM_TYPES))
        for name, model_dir, types in models:
            _, tokenizer = load_model(model_dir)
            probe = long_probe(tokenizer)
            for out_type in types:
                row = {"model": name, **measure(model_dir, root / "out", out_type, probe)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": f"{platform.system()} {platform.machine()}", "python": platform.python_version()}
    (RESULTS / "export_fidelity.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Export fidelity: llama.cpp vs MLX logits", "",
             f"{meta['machine']}; tiny random models (hidden 64) and the embedded SmolLM2-135M. "
             "Targets: f16 max abs diff <= 1e-2 (float32 tiny models), q8_0 top-1 >= 99%.", "",
             "| model | type | export s | size KB | positions | max abs diff | mean abs diff | top-1 | tokens match |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['out_type']} | {r['export_seconds']:.1f} | {r['size_bytes'] / 1024:.0f} | "
                     f"{r['positions']} | {r['max_abs_logit_diff']:.2e} | {r['mean_abs_logit_diff']:.2e} | "
                     f"{r['top1_agreement']:.1%} | {'yes' if r['tokenizer_match'] else 'NO'} |")
    (RESULTS / "export_fidelity.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'export_fidelity.md'}")


if __name__ == "__main__":
    main()
