"""Training throughput: mlxlab.train.loop vs mlx-lm's tuner loop, same model, data and hyperparameters, side by side.

Each run happens in its own subprocess (clean peak-memory counters). Two datasets: uniform lengths and
mixed SDG-like lengths (a long tail). Reported: samples/s and trained-token/s over the training loop only
(no model load, no validation, no saving), peak memory, padding. Writes JSON + a markdown table to
benchmarks/results/.

    python benchmarks/train_throughput.py                 # a small random llama (built here), 30 iterations
    python benchmarks/train_throughput.py --model smollm2 --iters 10
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORDS = ("service port input output message operation interface program language socket jolie request "
         "response location protocol execution concurrent sequential embed courier").split()


def write_data(folder: Path, mixed: bool, count: int, seed: int = 0) -> Path:
    """train.jsonl with uniform (~40 words) or mixed (5..300 words, long-tailed) replies."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(count):
        n = min(300, int(rng.paretovariate(1.2) * 8)) if mixed else 40
        reply = " ".join(rng.choice(WORDS) for _ in range(max(5, n)))
        question = " ".join(rng.choice(WORDS) for _ in range(8))
        lines.append(json.dumps({"messages": [{"role": "user", "content": f"Explain {question}."},
                                              {"role": "assistant", "content": reply}]}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def build_model(folder: Path) -> Path:
    """A random llama (4 layers, hidden 256) with the tests' tiny BPE tokenizer."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import _train_tokenizer, build_tiny_model

    tokenizer = _train_tokenizer(folder / "tokenizer")
    return build_tiny_model("llama", folder / "model", tokenizer, hidden_size=256, intermediate_size=512,
                            num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4)


def run_mlxlab(model: str, data: Path, hp: dict) -> dict:
    """One mlxlab.train.loop run; figures from its result."""
    from mlxlab.train import train

    out = Path(tempfile.mkdtemp()) / "run"
    result = train(model, data, out, num_iters=hp["iters"], batch_size=hp["batch_size"], lora_rank=hp["rank"],
                   num_layers=hp["num_layers"], learning_rate=1e-4, max_seq_length=hp["max_seq_length"],
                   save_every=0, steps_per_eval=0, quiet=True)
    rows = [json.loads(line) for line in result.log.read_text().splitlines() if line.strip()]
    seconds = sum(r["tokens"] / r["tokens_per_second"] for r in rows if "loss" in r)
    return {"seconds": seconds, "samples_per_second": hp["iters"] * hp["batch_size"] / seconds,
            "input_tokens_per_second": result.tokens_per_second, "peak_memory_gb": result.peak_memory_gb,
            "padding_fraction": result.padding_fraction, "final_loss": result.final_loss}


def run_mlx_lm(model: str, data: Path, hp: dict) -> dict:
    """mlx-lm's own loop (`mlx_lm.tuner.trainer.train`, what `mlx_lm.lora` runs), set up as `mlx_lm.lora` does."""
    import mlxlab  # noqa: F401  (binds OpenBLAS first)
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from mlxlab.train import read_jsonl
    from mlxlab.device import apply_dtype
    from mlxlab.models import load_model

    net, tokenizer = load_model(model)
    apply_dtype(net)
    mx.random.seed(0)
    net.freeze()
    linear_to_lora_layers(net, hp["num_layers"], {"rank": hp["rank"], "scale": 20.0, "dropout": 0.0})
    dataset = CacheDataset(ChatDataset(read_jsonl(data / "train.jsonl"), tokenizer, mask_prompt=True))
    reports = []

    class Collect(TrainingCallback):
        def on_train_loss_report(self, info):
            reports.append(info)

    out = Path(tempfile.mkdtemp())
    args = TrainingArgs(batch_size=hp["batch_size"], iters=hp["iters"], val_batches=0,
                        steps_per_report=hp["iters"], steps_per_eval=10**9, steps_per_save=10**9,
                        max_seq_length=hp["max_seq_length"], adapter_file=str(out / "adapters.safetensors"))
    train(net, optim.Adam(learning_rate=1e-4), dataset, None, args=args, training_callback=Collect())
    info = reports[-1]
    seconds = info["trained_tokens"] / info["tokens_per_second"]
    return {"seconds": seconds, "samples_per_second": hp["iters"] * hp["batch_size"] / seconds,
            "trained_tokens_per_second": info["tokens_per_second"], "peak_memory_gb": info["peak_memory"],
            "final_loss": info["train_loss"]}


def _worker(args) -> None:
    hp = json.loads(args.hp)
    fn = run_mlxlab if args.worker == "mlxlab" else run_mlx_lm
    print("RESULT " + json.dumps(fn(args.model, Path(args.data), hp)))


def _spawn(which: str, model: str, data: Path, hp: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", which, "--model", model, "--data", str(data),
                           "--hp", json.dumps(hp)], capture_output=True, text=True, cwd=ROOT)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{which} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def main() -> None:
    """Run both trainers on both datasets and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model reference (default: a random llama built here)")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--samples", type=int, default=120)
    parser.add_argument("--worker", choices=["mlxlab", "mlx_lm"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--hp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    model = args.model or str(build_model(work))
    hp = {"iters": args.iters, "batch_size": args.batch_size, "rank": 8, "num_layers": 16, "max_seq_length": 512}
    rows = []
    for kind in ("uniform", "mixed"):
        data = write_data(work / kind, mixed=kind == "mixed", count=args.samples)
        ours = _spawn("mlxlab", model, data, hp)
        theirs = _spawn("mlx_lm", model, data, hp)
        rows.append({"data": kind, "mlxlab": ours, "mlx_lm": theirs,
                     "speed_ratio": ours["samples_per_second"] / theirs["samples_per_second"],
                     "memory_ratio": ours["peak_memory_gb"] / theirs["peak_memory_gb"]})
        print(f"{kind}: {rows[-1]['speed_ratio']:.2f}x speed, {rows[-1]['memory_ratio']:.2f}x memory", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model or "random llama 4x256", "hyperparameters": hp, "results": rows}
    (RESULTS / "train_throughput.json").write_text(json.dumps(report, indent=2))
    table = ["| data | mlxlab samples/s | mlx-lm samples/s | speed ratio | mlxlab peak GB | mlx-lm peak GB | "
             "memory ratio | mlxlab padding |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['data']} | {r['mlxlab']['samples_per_second']:.2f} | {r['mlx_lm']['samples_per_second']:.2f}"
                     f" | {r['speed_ratio']:.2f}x | {r['mlxlab']['peak_memory_gb']:.3f} | "
                     f"{r['mlx_lm']['peak_memory_gb']:.3f} | {r['memory_ratio']:.2f}x | "
                     f"{r['mlxlab']['padding_fraction']:.1%} |")
    (RESULTS / "train_throughput.md").write_text(
        f"# Training throughput, {report['model']}, {hp}\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
