"""SDG teacher throughput: the same model and prompts one request at a time (the InstructLab Mac path),
batched, and batched with the shared prefix prefilled once; plus llama.cpp one at a time for reference.

The prompts look like SDG prompts: a long shared prefix (system prompt + in-context seed examples), then a
short part that differs. Sampling is seeded per completion, so every mode generates the same tokens and
the rates compare like with like. Time to first token (TTFT) is measured with the prefix cold and cached.
Writes benchmarks/results/sdg_throughput-<prompts>x<max_tokens>.{json,md}.

    python benchmarks/sdg_throughput.py                     # embedded SmolLM2, 8 prompts x 48 tokens
    python benchmarks/sdg_throughput.py --prompts 16 --max-tokens 64 --four-bit
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import mlxlab  # noqa: F401  (binds OpenBLAS before mlx is imported)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

EXAMPLES = [("Write a Jolie service that adds two numbers.", "service Adder { inputPort ... }"),
            ("How do I declare an output port in Jolie?", "outputPort Server { location: ... }"),
            ("What does `execution: concurrent` do?", "Each request gets its own session, served in parallel."),
            ("How are faults raised in Jolie?", "With `throw( FaultName, data )`, caught by `install`.")]


def make_prompts(count: int) -> list[list[dict]]:
    """SDG-like prompts: ~300 shared prefix tokens, then a differing request."""
    examples = "\n\n".join(f"[Start of Question]\n{q}\n[End of Question]\n[Start of Answer]\n{a}\n[End of Answer]"
                           for q, a in EXAMPLES * 3)
    system = ("You are a very knowledgeable AI assistant. You write new, varied tasks that are used to teach "
              "another assistant a skill. Follow the format of the examples exactly.")
    return [[{"role": "system", "content": system},
             {"role": "user", "content": f"Task: questions about the Jolie language.\n\n{examples}\n\n"
                                         f"Write new question number {i + 1}, about topic {i * 7 % 13}."}]
            for i in range(count)]


def measure(teacher, prompts, max_tokens: int, seed: int) -> dict:
    """One generate call: wall time, tokens, rates, TTFT of its first batch."""
    teacher.stats.reset()
    start = time.perf_counter()
    out = teacher.generate(prompts, temperature=0.7, top_p=0.95, max_tokens=max_tokens, seed=seed)
    seconds = time.perf_counter() - start
    tokens = sum(c[0].tokens for c in out)
    return {"seconds": round(seconds, 3), "generated_tokens": tokens, "tokens_per_second": round(tokens / seconds, 2),
            "samples_per_second": round(len(prompts) / seconds, 3),
            "prompt_tokens": teacher.stats.prompt_tokens, "cached_prefix_tokens": teacher.stats.cached_prefix_tokens,
            "ttft_seconds": round(teacher.stats.first_token_seconds[0], 3) if teacher.stats.first_token_seconds
            else None, "texts": [c[0].text for c in out]}


def mlx_modes(model, prompts, max_tokens: int, seed: int, dequantize: str, label: str) -> dict:
    """one-at-a-time, batched, batched + prefix cache, and TTFT cold vs cached prefix, for one MLX weight format."""
    from mlxlab.teacher import Teacher

    teacher = Teacher(model, batch_size=len(prompts), dequantize_on_load=dequantize)
    teacher.generate(prompts[:1], max_tokens=2, temperature=0.0)          # warm-up (kernels, thread pool)
    teacher.batch_size, teacher.prefix_cache = 1, False
    single = measure(teacher, prompts, max_tokens, seed)
    teacher.batch_size = len(prompts)
    batched = measure(teacher, prompts, max_tokens, seed)
    teacher.prefix_cache = True
    teacher._prefixes.clear()
    prefixed = measure(teacher, prompts, max_tokens, seed)
    # TTFT for one new prompt that shares the prefix: cold (no cache) vs the cached prefix from above
    probe = prompts[:1]
    teacher.prefix_cache = False
    cold = measure(teacher, probe, 1, seed)["seconds"]
    teacher.prefix_cache = True
    shared = prompts[:2]                                                  # two prompts: the shared prefix is used
    warm = measure(teacher, shared, 1, seed)["seconds"]             # the prefix is cached by the run above
    teacher._prefixes.clear()
    cold_two = measure(teacher, shared, 1, seed)["seconds"]
    same = single["texts"] == batched["texts"] == prefixed["texts"]
    teacher.close()
    return {"weights": label, "one_at_a_time": single, "batched": batched, "batched_prefix": prefixed,
            "same_texts_in_every_mode": same,
            "ttft": {"one_prompt_no_cache_s": round(cold, 3), "two_prompts_prefix_cold_s": round(cold_two, 3),
                     "two_prompts_prefix_cached_s": round(warm, 3),
                     "cached_vs_cold_ratio": round(cold_two / warm, 2) if warm else None}}


def llama_mode(prompts, max_tokens: int, seed: int) -> dict:
    """llama.cpp in-process, one request at a time (what ilab does on a Mac through its server)."""
    from mlxlab.teacher import Teacher

    teacher = Teacher(None, backend="llama-cpp", n_ctx=2048)
    teacher.generate(prompts[:1], max_tokens=2, temperature=0.0)
    result = measure(teacher, prompts, max_tokens, seed)
    teacher.close()
    return result


def markdown(report: dict) -> str:
    """The results as a markdown table."""
    lines = [f"# SDG teacher throughput ({report['model']}, {report['prompts']} prompts x {report['max_tokens']} "
             f"tokens, {report['machine']})", "",
             "| weights | mode | tok/s | samples/s | seconds | tokens | vs one-at-a-time | TTFT s |",
             "|---|---|---|---|---|---|---|---|"]
    for block in report["mlx"]:
        base = block["one_at_a_time"]["tokens_per_second"]
        for mode in ("one_at_a_time", "batched", "batched_prefix"):
            r = block[mode]
            lines.append(f"| mlx {block['weights']} | {mode.replace('_', ' ')} | {r['tokens_per_second']} | "
                         f"{r['samples_per_second']} | {r['seconds']} | {r['generated_tokens']} | "
                         f"x{r['tokens_per_second'] / base:.2f} | {r['ttft_seconds']} |")
    if report.get("llama_cpp"):
        r = report["llama_cpp"]
        lines.append(f"| llama.cpp gguf | one at a time | {r['tokens_per_second']} | {r['samples_per_second']} | "
                     f"{r['seconds']} | {r['generated_tokens']} | | |")
    lines.append("")
    for block in report["mlx"]:
        t = block["ttft"]
        lines.append(f"- mlx {block['weights']}: prefill of two prompts with the shared prefix cached "
                     f"{t['two_prompts_prefix_cached_s']} s vs cold {t['two_prompts_prefix_cold_s']} s "
                     f"(x{t['cached_vs_cold_ratio']}); same texts in every mode: {block['same_texts_in_every_mode']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="teacher model (default: the embedded SmolLM2)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--four-bit", action="store_true",
                        help="also run MLX with the 4-bit weights kept (slow on CPU)")
    parser.add_argument("--no-llama", action="store_true", help="skip the llama.cpp reference")
    args = parser.parse_args()
    prompts = make_prompts(args.prompts)
    from mlxlab.device import current_device

    blocks = [mlx_modes(args.model, prompts, args.max_tokens, args.seed, "auto",
                        "float32 (dequantized)" if current_device() == "cpu" else "4-bit")]
    if args.four_bit and current_device() == "cpu":
        blocks.append(mlx_modes(args.model, prompts, args.max_tokens, args.seed, "never", "4-bit"))
    report = {"model": str(args.model or "smollm2"), "prompts": args.prompts, "max_tokens": args.max_tokens,
              "machine": f"{platform.system()} {platform.machine()}, {current_device()}",
              "mlx": blocks, "llama_cpp": None if args.no_llama else llama_mode(prompts, args.max_tokens, args.seed)}
    for block in report["mlx"]:
        for mode in ("one_at_a_time", "batched", "batched_prefix"):
            block[mode].pop("texts")
    if report["llama_cpp"]:
        report["llama_cpp"].pop("texts")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"sdg_throughput-{args.prompts}x{args.max_tokens}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
