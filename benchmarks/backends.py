"""Backend benchmark: MLX's stock BLAS vs OpenBLAS, and float32 vs 16-bit, side by side in one run.

The BLAS is bound once per process (before mlx.core loads), so each configuration runs in its own
worker subprocess (`MLXLAB_BLAS=off` for the stock wheel's reference BLAS). Measured per worker:
float32 matmul GFLOP/s, LoRA training tokens/s on a tiny float32 llama and on the embedded
SmolLM2 (as the CPU policy loads it: 4-bit expanded to float32), and batched decode tokens/s on the embedded model.
A float16 worker measures the same model with 16-bit scales/weights to show why the CPU policy is
float32. Writes benchmarks/results/backends.{json,md}.

    python benchmarks/backends.py            # full run (~5-10 min on 2 cores)
    python benchmarks/backends.py --quick    # fewer steps, for a smoke check
    python benchmarks/backends.py --worker --probe OUT.npz   # used by the tests: logits + LoRA steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def tiny_llama(seed: int = 0, vocab: int = 512, hidden: int = 256, layers: int = 4):
    """A small random float32 llama (mlx-lm's own model class), deterministic for `seed`."""
    import mlx.core as mx
    from mlx_lm.models import llama

    mx.random.seed(seed)
    args = llama.ModelArgs(model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
                           intermediate_size=hidden * 2, num_attention_heads=8, num_key_value_heads=4,
                           rms_norm_eps=1e-5, vocab_size=vocab, tie_word_embeddings=False)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model


def lora_steps(model, steps: int, *, batch: int = 4, seq: int = 128, seed: int = 0, vocab: int | None = None):
    """Run `steps` LoRA steps (rank 8, all layers, Adam) on fixed random tokens; return (losses, tok/s, model)."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.trainer import default_loss
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    linear_to_lora_layers(model, len(model.layers), {"rank": 8, "scale": 20.0, "dropout": 0.0})
    mx.random.seed(seed)
    mx.eval(model.parameters())
    vocab = vocab or model.args.vocab_size
    tokens = mx.random.randint(0, vocab, (batch, seq + 1), key=mx.random.key(seed))
    lengths = mx.array([[0, seq]] * batch)
    opt = optim.Adam(learning_rate=1e-3)
    loss_and_grad = nn.value_and_grad(model, default_loss)
    losses = []
    start = None
    for i in range(steps + 1):  # step 0 is a warm-up, not timed
        if i == 1:
            start = time.perf_counter()
        (loss, _), grads = loss_and_grad(model, tokens, lengths)
        opt.update(model, grads)
        mx.eval(loss, model.trainable_parameters(), opt.state)
        losses.append(loss.item())
    elapsed = time.perf_counter() - start
    return losses, steps * batch * seq / elapsed, model


def probe(out: Path) -> None:
    """Deterministic outputs for the BLAS agreement test: tiny-llama logits and 3 LoRA steps."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    model = tiny_llama(seed=0, hidden=128, layers=2)
    tokens = mx.random.randint(0, 512, (2, 32), key=mx.random.key(1))
    logits = model(tokens)
    mx.eval(logits)
    losses, _, model = lora_steps(model, 3, batch=2, seq=32)
    adapters = {k: np.array(v) for k, v in tree_flatten(model.trainable_parameters())}
    np.savez(out, logits=np.array(logits), losses=np.array(losses), **adapters)


def worker(args: argparse.Namespace) -> dict:
    """Measure one configuration in this process and return its figures."""
    import mlxlab  # noqa: F401  (binds OpenBLAS unless MLXLAB_BLAS=off)
    from mlxlab import device

    mx = device.import_mlx()
    mx.set_default_device(mx.cpu)
    dtype = args.dtype
    result: dict = {"blas": device.blas_status()[0] or "stock", "dtype": dtype}
    result["matmul_gflops"] = round(device.matmul_gflops(n=1024, repeats=3) if dtype == "float32"
                                    else _matmul_gflops_dtype(mx, dtype), 2)
    steps = 3 if args.quick else 8
    if dtype == "float32":
        _, tps, _ = lora_steps(tiny_llama(), steps)
        result["lora_tiny_tokens_per_s"] = round(tps, 1)
    from mlxlab.models import load_model

    model, tokenizer = load_model("smollm2", dtype=dtype)
    _, tps, _ = lora_steps(model, 2 if args.quick else 4, batch=2, seq=64, vocab=8000)
    result["lora_smollm2_tokens_per_s"] = round(tps, 1)
    model, tokenizer = load_model("smollm2", dtype=dtype)
    result.update(_batched_decode(model, tokenizer, batch=4 if dtype == "float32" else 2,
                                  tokens=24 if dtype == "float32" else 4))
    return result


def _matmul_gflops_dtype(mx, dtype: str, n: int = 512) -> float:
    a = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    mx.eval(a @ a)
    start = time.perf_counter()
    mx.eval(a @ a)
    return 2 * n**3 / (time.perf_counter() - start) / 1e9


def _batched_decode(model, tokenizer, *, batch: int, tokens: int) -> dict:
    from mlx_lm import batch_generate

    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Name {i + 2} colours."}],
                                             add_generation_prompt=True) for i in range(batch)]
    batch_generate(model, tokenizer, prompts[:1], max_tokens=2)  # warm-up
    start = time.perf_counter()
    out = batch_generate(model, tokenizer, prompts, max_tokens=tokens)
    elapsed = time.perf_counter() - start
    generated = sum(len(tokenizer.encode(t)) for t in out.texts)
    return {"decode_batch": batch, "decode_tokens_per_s": round(generated / elapsed, 2)}


def run_worker(env_blas: str | None, dtype: str, quick: bool) -> dict:
    """Run one configuration in a fresh process (the BLAS binding is per process)."""
    env = dict(os.environ)
    if env_blas is not None:
        env["MLXLAB_BLAS"] = env_blas
    cmd = [sys.executable, __file__, "--worker", "--dtype", dtype] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"worker {env_blas=} {dtype=} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        import mlxlab  # noqa: F401  (binds OpenBLAS unless MLXLAB_BLAS=off)
        probe(args.probe)
        return
    if args.worker:
        print(json.dumps(worker(args)))
        return

    stock = run_worker("off", "float32", args.quick)
    openblas = run_worker(None, "float32", args.quick)
    half = run_worker(None, "float16", args.quick)
    metrics = ["matmul_gflops", "lora_tiny_tokens_per_s", "lora_smollm2_tokens_per_s", "decode_tokens_per_s"]
    rows = [{"metric": m, "stock_blas_f32": stock.get(m), "openblas_f32": openblas.get(m),
             "openblas_vs_stock": ratio(openblas.get(m), stock.get(m)), "openblas_f16": half.get(m),
             "f32_vs_f16": ratio(openblas.get(m), half.get(m))} for m in metrics]
    report = {"machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
              "openblas": openblas["blas"], "quick": args.quick, "rows": rows,
              "workers": {"stock_f32": stock, "openblas_f32": openblas, "openblas_f16": half}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backends.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Backends ({report['machine']})", "",
             "| metric | stock BLAS f32 | OpenBLAS f32 | OpenBLAS / stock | OpenBLAS f16 | f32 / f16 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k in ("metric", "stock_blas_f32", "openblas_f32",
                                                               "openblas_vs_stock", "openblas_f16",
                                                               "f32_vs_f16")) + " |")
    lines += ["", "LoRA tiny: rank-8 LoRA on a 4-layer hidden-256 float32 llama, batch 4 x 128 tokens. "
              "LoRA SmolLM2: the embedded model as the CPU policy loads it (expanded from 4-bit to float32; "
              "the f16 column: float16), batch 2 x 64. Decode: mlx-lm batch_generate on "
              "the embedded model. f16 column: 16-bit weights and quantization scales (the GPU policy)."]
    (RESULTS / "backends.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
