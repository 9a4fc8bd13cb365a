"""The seed paper's study: how answer quality changes with training iterations (100, 250, 500, 1000).

The paper trained four separate models and graded 5 prompts x 3 answers by hand. `mlxlab.evaluate.sweep`
trains once with checkpoints at the chosen iterations, lets the base model and every checkpoint answer
each prompt k times, grades them (a judge model, or 5 x ROUGE-L against reference answers without one),
measures the held-out loss, and draws the paper's plots.

    python examples/iteration_study.py --data quickstart/data                  # after quickstart_m1.py
    python examples/iteration_study.py --data quickstart/data --judge mlx-community/Qwen2.5-7B-Instruct-4bit
    python examples/iteration_study.py --tiny --data DIR                       # offline, embedded SmolLM2
"""

from __future__ import annotations

import argparse

import mlxlab  # noqa: F401  (binds OpenBLAS before mlx loads, on Linux)

STUDENT = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
FULL = dict(iters=[100, 250, 500, 1000], k=3, max_tokens=256, train=dict(batch_size=4))
TINY = dict(iters=[2, 4], k=1, max_tokens=8, train=dict(batch_size=2, num_layers=4, max_seq_length=256))


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; print the table and the plot paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="offline smoke run on the embedded SmolLM2")
    parser.add_argument("--data", default="quickstart/data", help="folder with train.jsonl, valid.jsonl, test.jsonl")
    parser.add_argument("--model", default=None, help=f"student model (default: {STUDENT}; --tiny: smollm2)")
    parser.add_argument("--iters", default=None, help="comma-separated iteration counts (default: 100,250,500,1000)")
    parser.add_argument("--judge", default=None, help="judge model (default: none, 5 x ROUGE-L)")
    parser.add_argument("--output", default="iteration_study", help="folder for training, results and plots")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    iters = [int(i) for i in args.iters.split(",")] if args.iters else sizes["iters"]

    from mlxlab.evaluate import sweep

    result = sweep(args.model or ("smollm2" if args.tiny else STUDENT), args.data, args.output, iters=iters,
                   judge=args.judge, k=sizes["k"], max_tokens=sizes["max_tokens"], train_overrides=sizes["train"])
    print(result.table.read_text(encoding="utf-8"))
    for iteration, loss in result.heldout_loss.items():
        print(f"iteration {iteration}: held-out loss {loss:.4f}" if loss is not None else f"iteration {iteration}: -")
    for name, path in result.plots.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
