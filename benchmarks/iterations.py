"""The seed paper's study as a benchmark: answer quality against training iterations, on the embedded model.

Data: the shipped Jolie taxonomy's short seed question-answer pairs as chat records (knowledge pairs without
their context; no SDG), so it runs in minutes on a 2-core CPU.
Records whose question is one of the paper's five evaluation prompts are held out, with a random quarter of the
rest; the others are the training set. `mlxlab.evaluate.sweep` trains once with checkpoints at the chosen
iterations and evaluates the base and each checkpoint: held-out loss (mean NLL per assistant token) and 5 x
ROUGE-L of 3 answers per paper prompt against the reference answers. Writes JSON + a markdown table (+ the
sweep's PNGs) to benchmarks/results/.

    python benchmarks/iterations.py                          # SmolLM2-135M, iters 10,25,50
    python benchmarks/iterations.py --iters 100,250,500,1000 --max-tokens 256     # the paper's grid
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _short_records(leaves, max_chars: int) -> list[dict]:
    """Question-answer chat records from the leaves' seeds (knowledge without its context), short ones only."""
    records = []
    for leaf in leaves:
        for example in leaf.seed_examples:
            pairs = example.get("questions_and_answers") or [example]
            for qa in pairs:
                question, answer = str(qa.get("question", "")), str(qa.get("answer", ""))
                if question and answer and len(question) + len(answer) <= max_chars:
                    records.append({"messages": [{"role": "user", "content": question.strip()},
                                                 {"role": "assistant", "content": answer.strip()}]})
    return records


def taxonomy_data(folder: Path, *, holdout: float = 0.25, max_chars: int = 1400, seed: int = 0) -> tuple[Path, dict]:
    """train/valid/test JSONL from the Jolie taxonomy's seed pairs; the paper's prompts are always held out."""
    from mlxlab.evaluate import read_prompt_set
    from mlxlab.sdg import rouge_l
    from mlxlab.taxonomy import Taxonomy

    records = _short_records(Taxonomy.load(ROOT / "taxonomy", fetch_documents=False).leaves, max_chars)
    paper = [p.messages[-1]["content"] for p in read_prompt_set().prompts]
    rng = random.Random(seed)
    rng.shuffle(records)
    test = [r for r in records if max(rouge_l(r["messages"][0]["content"], q) for q in paper) > 0.6]
    rest = [r for r in records if r not in test]
    cut = max(1, round(holdout * len(rest)))
    test, train = test + rest[:cut], rest[cut:]
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("valid", test[:4]), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder, {"train": len(train), "test": len(test), "paper_prompts_in_taxonomy": len(test) - cut}


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and write benchmarks/results/iterations.{json,md} and its plots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--iters", default="10,25,50")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--output", default=None, help="keep the sweep here (default: a temp dir)")
    args = parser.parse_args(argv)

    import mlxlab.device

    mlxlab.device.bind_blas()
    from mlxlab.evaluate import sweep

    iters = [int(i) for i in args.iters.split(",")]
    work = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="mlxlab-iterations-"))
    data, sizes = taxonomy_data(work / "data")
    tic = time.perf_counter()
    result = sweep(args.model, data, work / "sweep", iters=iters, k=args.k, max_tokens=args.max_tokens,
                   max_seq_length=args.max_seq_length,
                   train_overrides={"learning_rate": args.learning_rate, "batch_size": args.batch_size,
                                    "num_layers": 8,
                                    "max_seq_length": args.max_seq_length, "steps_per_eval": 0})
    seconds = time.perf_counter() - tic
    models = result.eval.summary["models"]
    rows = [{"model": label, "iteration": m["iteration"], "heldout_loss": m["heldout_loss"],
             "perplexity": m["perplexity"], "rouge_l": m["rouge_l"]["mean"] if m["rouge_l"] else None,
             "score": m["score"]["mean"] if m["score"] else None} for label, m in models.items()]
    base, last = rows[0]["heldout_loss"], rows[-1]["heldout_loss"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    setup = {"model": args.model, "iters": iters, "k": args.k, "max_tokens": args.max_tokens,
             "learning_rate": args.learning_rate, "batch_size": args.batch_size, "num_layers": 8, **sizes,
             "final_train_loss": result.train.final_loss, "seconds": round(seconds, 1)}
    (RESULTS / "iterations.json").write_text(json.dumps({"setup": setup, "rows": rows,
                                                         "heldout_loss_drop": base - last,
                                                         "heldout_loss_drop_fraction": (base - last) / base},
                                                        indent=2) + "\n")
    lines = [f"# Quality vs training iterations ({args.model})", "",
             f"Setup: {json.dumps(setup)}", "",
             ("Score = 5 x ROUGE-L of the answers to the paper's five prompts against the reference answers "
              "(no judge); held-out loss = mean NLL per assistant token on the held-out taxonomy pairs."), "",
             "| model | iterations | held-out loss | perplexity | ROUGE-L | score (0-5) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['iteration']} | {r['heldout_loss']:.4f} | {r['perplexity']:.2f} | "
                     f"{r['rouge_l']:.3f} | {r['score']:.2f} |")
    lines += ["", (f"Held-out loss falls from {base:.4f} to {last:.4f} ({base - last:.4f}, "
                   f"{(base - last) / base:.1%}) between the base model and iteration {iters[-1]}."), ""]
    for name, path in result.plots.items():
        shutil.copy(path, RESULTS / f"iterations_{path.name}")
        lines.append(f"![{name}](iterations_{path.name})")
    (RESULTS / "iterations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
