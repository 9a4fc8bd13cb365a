"""Quickstart for an M1 MacBook with 16 GB: a 7B teacher writes the data, a 0.5B student learns it.

Every stage is one function of the Python API; this script calls them in order into one folder:

    validate → generate_data → train → fuse → export_gguf → evaluate

    python examples/quickstart_m1.py                 # Qwen2.5-7B-Instruct-4bit teaches Qwen2.5-0.5B-Instruct-4bit
    python examples/quickstart_m1.py --tiny          # offline: the embedded SmolLM2 as both, tiny sizes

Memory: the 4-bit 7B teacher needs ~4.5 GB while it generates and judges; the student trains with LoRA
in ~2 GB; only one of them is loaded at a time. Run it again after an interruption: generation resumes
from its journals and training from its newest checkpoint. `mlxlab run` does the same in one command,
and also skips finished stages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlxlab  # noqa: F401  (binds OpenBLAS before mlx loads, on Linux)

TEACHER = "mlx-community/Qwen2.5-7B-Instruct-4bit"
STUDENT = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
# (generate, train, eval) settings for a real run on an M1 and for the offline smoke run
FULL = dict(generate=dict(samples_per_seed=4, max_tokens=512), train=dict(num_iters=300, batch_size=4, save_every=50),
            eval=dict(k=3, max_tokens=256), out_type="q4_k_m")
TINY = dict(generate=dict(samples_per_seed=1, max_tokens=24, judge_max_tokens=8, question_threshold=0,
                          pair_threshold=1, allow_empty=True),
            train=dict(num_iters=4, batch_size=2, save_every=2, num_layers=4, max_seq_length=256),
            eval=dict(k=1, max_tokens=8), out_type="q8_0")


def main(argv: list[str] | None = None) -> int:
    """Run the quickstart; print where everything went."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="offline smoke run on the embedded SmolLM2")
    parser.add_argument("--taxonomy", default="taxonomy", help="taxonomy root (default: the shipped Jolie one)")
    parser.add_argument("--output", default="quickstart", help="folder for data, adapters, GGUF and evaluation")
    parser.add_argument("--teacher", default=None, help=f"teacher model (default: {TEACHER})")
    parser.add_argument("--student", default=None, help=f"student model (default: {STUDENT})")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    teacher = args.teacher or ("smollm2" if args.tiny else TEACHER)
    student = args.student or ("smollm2" if args.tiny else STUDENT)
    out = Path(args.output)

    from mlxlab.errors import MlxlabError
    from mlxlab.evaluate import evaluate
    from mlxlab.train.fuse import fuse
    from mlxlab.gguf import export_gguf
    from mlxlab.sdg import generate_data
    from mlxlab.taxonomy import format_report, validate
    from mlxlab.train import train

    reports = validate([args.taxonomy])
    print(format_report(reports))
    if not all(r.valid for r in reports):
        raise SystemExit(1)

    data = generate_data(args.taxonomy, teacher=teacher, output=out / "data", **sizes["generate"])
    print(f"data: {data.samples} samples kept {data.kept} -> {data.train}")

    try:        # resume=True continues an interrupted run from its newest checkpoint (or starts fresh)
        trained = train(student, out / "data", out / "adapters", resume=True, **sizes["train"])
    except MlxlabError as exc:
        raise SystemExit(f"training failed: {exc}")
    print(f"train: loss {trained.final_loss:.3f}, validation {trained.val_loss}, plot {trained.loss_plot}")

    fused = fuse(student, trained.adapters, out / "fused", force=True)
    gguf = export_gguf(fused.path, out / "gguf", out_type=sizes["out_type"], force=True)
    print(f"gguf: {gguf.path} ({gguf.size_bytes / 1e6:.0f} MB), top-1 agreement with MLX {gguf.top1_agreement:.1%}")

    # the student before and after, on the seed paper's five Jolie prompts and the held-out seed examples;
    # the teacher grades the answers 0-5 (without --tiny; the tiny run scores by ROUGE-L)
    result = evaluate({"base": student, "trained": (student, trained.adapters)}, output=out / "eval",
                      test=data.test, judge=None if args.tiny else teacher, **sizes["eval"])
    for label, m in result.summary["models"].items():
        score = f"{m['score']['mean']:.2f}" if m["score"] else "-"
        print(f"{label}: score {score}, held-out loss {m['heldout_loss']:.3f}")
    print(f"Ollama: ollama create jolie -f {gguf.modelfile}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
