"""CUDA check: the tiny pipeline on MLX's GPU backend, with tokens/s per stage.

For a machine with an NVIDIA GPU and `pip install -e ".[cuda12]"` (or cuda13). Runs on whatever
MLX's default device is, and says which, so it also runs (slowly) on a CPU or on Metal:

    python benchmarks/cuda_check.py            # prints a table, writes benchmarks/results/cuda_check.{json,md}

Stages: load the embedded SmolLM2 (4-bit), batched generation, 20 LoRA steps, fuse the adapters into
the base (dequantized), and GGUF export when mlxlab has its exporter.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    import mlxlab  # noqa: F401  (binds OpenBLAS on a Linux CPU)
    from mlxlab import device

    from backends import _batched_decode, lora_steps  # noqa: E402  (same folder)

    mx = device.import_mlx()
    dev = device.select_device("auto")
    rows: list[dict] = []

    def stage(name: str, fn):
        start = time.perf_counter()
        try:
            figures = fn() or {}
            status = "ok"
        except Exception as exc:  # report every stage, even after one fails
            figures, status = {}, f"failed: {type(exc).__name__}: {exc}"
        rows.append({"stage": name, "seconds": round(time.perf_counter() - start, 2), "status": status, **figures})
        print(rows[-1], flush=True)

    state: dict = {}

    def load():
        from mlxlab.models import load_model
        state["model"], state["tokenizer"] = load_model("smollm2")
        return {"dtype": device.dtype_name()}

    def generate():
        return _batched_decode(state["model"], state["tokenizer"], batch=8, tokens=64)

    def train():
        losses, tps, state["model"] = lora_steps(state["model"], 20, batch=4, seq=128, vocab=8000)
        return {"lora_tokens_per_s": round(tps, 1), "loss_first": round(losses[1], 3),
                "loss_last": round(losses[-1], 3)}

    def fuse():
        from mlx.utils import tree_unflatten
        fused = [(n, m.fuse(dequantize=True)) for n, m in state["model"].named_modules() if hasattr(m, "fuse")]
        state["model"].update_modules(tree_unflatten(fused))
        return {"fused_layers": len(fused)}

    def export():
        try:
            from mlxlab.gguf import export_gguf  # noqa: F401
        except ImportError:
            return {"note": "mlxlab.gguf.gguf_export not available in this version"}
        return {"note": "export is checked by tests/test_export.py"}

    for name, fn in (("load", load), ("batched generate", generate), ("20 LoRA steps", train),
                     ("fuse", fuse), ("export", export)):
        stage(name, fn)
    report = {"device": dev, "backend": device.backend(), "machine": platform.platform(),
              "mlx": getattr(mx, "__version__", "?"), "stages": rows}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "cuda_check.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# CUDA check on {report['backend']} ({report['machine']})", "", "| stage | s | status | figures |",
             "|---|---|---|---|"]
    for r in rows:
        figures = ", ".join(f"{k}={v}" for k, v in r.items() if k not in {"stage", "seconds", "status"})
        lines.append(f"| {r['stage']} | {r['seconds']} | {r['status']} | {figures} |")
    (out / "cuda_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
