"""SDG teacher throughput, side by side in one run: llama.cpp one request at a time (the InstructLab path,
the baseline), mlxlab's batched llama.cpp teacher with and without the shared prefix, and the MLX teacher
one at a time, batched, and batched with the shared prefix prefilled once.

The prompts look like SDG prompts: a long shared prefix (system prompt + in-context seed examples), then a
short part that differs. Sampling is seeded per completion. The headline is *the backend `auto` chooses on
this machine ÷ llama.cpp one at a time*, next to the compute-bound ceiling: measured float32 matmul GFLOP/s
÷ (2 × parameters) FLOP per token. Every run starts with the shared prefix cold (the baseline evaluates it
once, for its first prompt, and reuses it for the rest, as llama-cpp-python does between calls). Prefill
and decode rates are reported apart where the backend can time them. Writes
benchmarks/results/sdg_throughput-<prompts>x<max_tokens>.{json,md}.

    python benchmarks/sdg_throughput.py --prompts 16 --max-tokens 48     # embedded SmolLM2 (the issue's setting)
    python benchmarks/sdg_throughput.py --prompts 16 --max-tokens 64 --four-bit --no-mlx
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
    teacher.engine.prefixes.clear()
    prefixed = measure(teacher, prompts, max_tokens, seed)
    # TTFT for one new prompt that shares the prefix: cold (no cache) vs the cached prefix from above
    probe = prompts[:1]
    teacher.prefix_cache = False
    cold = measure(teacher, probe, 1, seed)["seconds"]
    teacher.prefix_cache = True
    shared = prompts[:2]                                                  # two prompts: the shared prefix is used
    warm = measure(teacher, shared, 1, seed)["seconds"]             # the prefix is cached by the run above
    teacher.engine.prefixes.clear()
    cold_two = measure(teacher, shared, 1, seed)["seconds"]
    same = single["texts"] == batched["texts"] == prefixed["texts"]
    teacher.close()
    return {"weights": label, "one_at_a_time": single, "batched": batched, "batched_prefix": prefixed,
            "same_texts_in_every_mode": same,
            "ttft": {"one_prompt_no_cache_s": round(cold, 3), "two_prompts_prefix_cold_s": round(cold_two, 3),
                     "two_prompts_prefix_cached_s": round(warm, 3),
                     "cached_vs_cold_ratio": round(cold_two / warm, 2) if warm else None}}


def llama_one_at_a_time(model, prompts, max_tokens: int, seed: int, threads: int) -> dict:
    """llama-cpp-python, one chat request at a time on the model's own GGUF (what ilab's server does)."""
    import llama_cpp

    from mlxlab.llamacpp import load_llama
    from mlxlab.models import embedded_gguf

    llm = load_llama(model or embedded_gguf(), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                     verbose=False)
    llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0.0)
    llm.reset()                                             # warm kernels, cold prefix
    llama_cpp.llama_perf_context_reset(llm.ctx)
    start = time.perf_counter()
    tokens, texts = 0, []
    for i, messages in enumerate(prompts):
        reply = llm.create_chat_completion(messages=messages, temperature=0.7, top_p=0.95, max_tokens=max_tokens,
                                           seed=seed + i)
        tokens += int(reply["usage"]["completion_tokens"])
        texts.append(reply["choices"][0]["message"]["content"])
    seconds = time.perf_counter() - start
    perf = llama_cpp.llama_perf_context(llm.ctx)
    del llm
    return {"threads": threads, "seconds": round(seconds, 3), "generated_tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 2), "samples_per_second": round(len(prompts) / seconds, 3),
            "prefill_tokens_per_second": round(perf.n_p_eval / (perf.t_p_eval_ms / 1e3), 1) if perf.t_p_eval_ms
            else None, "decode_tokens_per_second": round(perf.n_eval / (perf.t_eval_ms / 1e3), 1)
            if perf.t_eval_ms else None, "prefill_tokens": int(perf.n_p_eval), "ttft_seconds": None, "texts": texts}


def llama_batched(model, prompts, max_tokens: int, seed: int, prefix: bool) -> dict:
    """mlxlab's batched llama.cpp teacher (one llama_decode per step for all sequences)."""
    from mlxlab.teacher import Teacher

    teacher = Teacher(model, backend="llama-cpp", batch_size=len(prompts), prefix_cache=prefix, n_ctx=2048)
    teacher.generate([[{"role": "user", "content": "Hi"}]], max_tokens=2, temperature=0.0)      # warm kernels
    result = measure(teacher, prompts, max_tokens, seed)
    s = teacher.stats
    result.update(prefill_tokens=s.prefill_tokens, gguf=teacher.gguf_note,
                  prefill_tokens_per_second=round(s.prefill_tokens / s.prefill_seconds, 1) if s.prefill_seconds
                  else None,
                  decode_tokens_per_second=round(s.generated_tokens / s.decode_seconds, 1) if s.decode_seconds
                  else None, parameters=teacher.num_parameters())
    teacher.close()
    return result


def llama_rows(model, prompts, max_tokens: int, seed: int) -> dict:
    """llama.cpp one at a time (each thread count the policy uses), batched, and batched with the shared prefix."""
    from mlxlab.device import llama_threads

    singles = [llama_one_at_a_time(model, prompts, max_tokens, seed, threads)
               for threads in sorted({llama_threads(), llama_threads(batched=True)})]
    return {"one_at_a_time": singles,
            "batched": llama_batched(model, prompts, max_tokens, seed, prefix=False),
            "batched_prefix": llama_batched(model, prompts, max_tokens, seed, prefix=True)}


def compare_builds(builds: list[tuple[str, str]], args) -> list[dict]:
    """The llama.cpp rows once per (build, self-test setting), each in a child process with that build first on
    its path: a native build (what `pip install` compiles) next to a portable one (GGML_NATIVE=OFF)."""
    import os
    import subprocess
    import sys
    import tempfile

    from mlxlab.llamacpp import CANDIDATES

    rows = []
    for name, folder in builds:
        for setting, _ in CANDIDATES:
            env = {**os.environ, "MLXLAB_LLAMA_SETTINGS": setting}
            if folder:
                env["PYTHONPATH"] = os.pathsep.join([folder, env.get("PYTHONPATH", "")])
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                proc = subprocess.run([sys.executable, __file__, "--llama-only", out.name, "--prompts",
                                       str(args.prompts), "--max-tokens", str(args.max_tokens), "--seed",
                                       str(args.seed)] + (["--model", args.model] if args.model else []),
                                      env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    rows.append({"build": name, "settings": setting, "error": f"exit {proc.returncode}: "
                                 + " ".join(proc.stderr.strip().splitlines()[-2:])[-300:]})
                    continue
                result = json.loads(Path(out.name).read_text())
            rows.append({"build": name, "settings": setting, **result})
    return rows


def _llama_only(path: str, args) -> None:
    """Child of `compare_builds`: the llama.cpp rows and the build they ran on, as JSON into `path`."""
    from mlxlab.llamacpp import describe_build, self_test

    rows = llama_rows(args.model, make_prompts(args.prompts), args.max_tokens, args.seed)
    for r in [*rows["one_at_a_time"], rows["batched"], rows["batched_prefix"]]:
        r.pop("texts", None)
    build = self_test().build        # this build's compiled features (not the forced setting's verdict)
    Path(path).write_text(json.dumps({"build_info": describe_build(build), **rows}))


def builds_markdown(rows: list[dict]) -> list[str]:
    """The native-vs-portable table."""
    lines = ["", "## llama.cpp builds and self-test settings", "",
             "| build | settings | compiled in | one at a time tok/s (best threads) | batched + shared prefix "
             "tok/s | its prefill tok/s | its decode tok/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['build']} | {r['settings']} | – | {r['error']} | | | |")
            continue
        best = max(x["tokens_per_second"] for x in r["one_at_a_time"])
        b = r["batched_prefix"]
        lines.append(f"| {r['build']} | {r['settings']} | {r['build_info'].split('compiled in: ')[-1]} | {best} | "
                     f"{b['tokens_per_second']} | {b.get('prefill_tokens_per_second') or '–'} | "
                     f"{b.get('decode_tokens_per_second') or '–'} |")
    return lines


def markdown(report: dict) -> str:
    """The results as a markdown table."""
    base = report["baseline"]
    lines = [f"# SDG teacher throughput ({report['model']}, {report['prompts']} prompts x {report['max_tokens']} "
             f"tokens, {report['machine']})", "",
             f"**Headline:** `auto` chooses **{report['chosen']['backend']}** here ({report['chosen']['why']}): "
             f"**x{report['headline_ratio']}** llama.cpp one at a time (the InstructLab path). Compute-bound "
             f"ceiling: {report['ceiling']['matmul_gflops']} GFLOP/s ÷ {report['ceiling']['gflop_per_token']} "
             f"GFLOP/token = {report['ceiling']['tokens_per_second']} tok/s = x{report['ceiling']['ratio']} the "
             f"baseline; the chosen backend reaches **{report['ceiling']['share_percent']}%** of it.", "",
             "| backend | mode | tok/s | vs llama.cpp one at a time | prefill tok/s | decode tok/s | samples/s | "
             "seconds | tokens |", "|---|---|---|---|---|---|---|---|---|"]

    def row(backend, mode, r):
        ratio = r["tokens_per_second"] / base["tokens_per_second"]
        lines.append(f"| {backend} | {mode} | {r['tokens_per_second']} | x{ratio:.2f} | "
                     f"{r.get('prefill_tokens_per_second') or '–'} | {r.get('decode_tokens_per_second') or '–'} | "
                     f"{r['samples_per_second']} | {r['seconds']} | {r['generated_tokens']} |")

    for r in report["llama_cpp"]["one_at_a_time"]:
        row(f"llama.cpp ({r['threads']} thread{'s' if r['threads'] > 1 else ''})", "one at a time"
            + (" (baseline)" if r is base else ""), r)
    row("llama.cpp (mlxlab)", "batched", report["llama_cpp"]["batched"])
    row("llama.cpp (mlxlab)", "batched + shared prefix", report["llama_cpp"]["batched_prefix"])
    for block in report["mlx"]:
        for mode in ("one_at_a_time", "batched", "batched_prefix"):
            row(f"mlx {block['weights']}", mode.replace("_", " ").replace("prefix", "+ shared prefix"), block[mode])
    lines.append("")
    lines.append(f"- llama.cpp batched runs {report['llama_cpp']['batched_prefix'].get('gguf')}; the baseline runs "
                 "the model's own GGUF, with the threads that make it fastest (both measured).")
    for block in report["mlx"]:
        t = block["ttft"]
        lines.append(f"- mlx {block['weights']}: prefill of two prompts with the shared prefix cached "
                     f"{t['two_prompts_prefix_cached_s']} s vs cold {t['two_prompts_prefix_cold_s']} s "
                     f"(x{t['cached_vs_cold_ratio']}); same texts in every mode: {block['same_texts_in_every_mode']}")
    if report.get("builds"):
        lines += builds_markdown(report["builds"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="teacher model (default: the embedded SmolLM2)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--four-bit", action="store_true",
                        help="also run MLX with the 4-bit weights kept (slow on CPU)")
    parser.add_argument("--no-mlx", action="store_true", help="skip the MLX rows")
    parser.add_argument("--builds", default="",
                        help="also compare llama.cpp builds: NAME=SITE_DIR,... (a folder holding another "
                             "llama_cpp package, e.g. `pip install --target DIR` with CMAKE_ARGS=-DGGML_NATIVE=OFF); "
                             "the installed build is always one row, as 'installed'")
    parser.add_argument("--llama-only", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.llama_only:
        return _llama_only(args.llama_only, args)
    prompts = make_prompts(args.prompts)
    from mlxlab.device import current_device, matmul_gflops
    from mlxlab.teacher import choose_backend

    llama = llama_rows(args.model, prompts, args.max_tokens, args.seed)
    singles = llama["one_at_a_time"]
    baseline = max(singles, key=lambda r: r["tokens_per_second"])
    blocks = []
    if not args.no_mlx:
        blocks.append(mlx_modes(args.model, prompts, args.max_tokens, args.seed, "auto",
                                "float32 (dequantized)" if current_device() == "cpu" else "4-bit"))
        if args.four_bit and current_device() == "cpu":
            blocks.append(mlx_modes(args.model, prompts, args.max_tokens, args.seed, "never", "4-bit"))
    backend, why = choose_backend()
    chosen = llama["batched_prefix"] if backend == "llama-cpp" else (blocks[0]["batched_prefix"] if blocks else None)
    if chosen is None:
        raise SystemExit("auto chooses mlx here: run without --no-mlx")
    gflops = matmul_gflops(n=1024)
    per_token = 2 * llama["batched_prefix"]["parameters"] / 1e9
    ceiling = gflops / per_token
    report = {"model": str(args.model or "smollm2"), "prompts": args.prompts, "max_tokens": args.max_tokens,
              "machine": f"{platform.system()} {platform.machine()}, {current_device()}",
              "chosen": {"backend": backend, "why": why, "tokens_per_second": chosen["tokens_per_second"]},
              "baseline": baseline,
              "headline_ratio": round(chosen["tokens_per_second"] / baseline["tokens_per_second"], 2),
              "ceiling": {"matmul_gflops": round(gflops, 1), "gflop_per_token": round(per_token, 3),
                          "tokens_per_second": round(ceiling, 1),
                          "ratio": round(ceiling / baseline["tokens_per_second"], 1),
                          "share_percent": round(100 * chosen["tokens_per_second"] / ceiling, 1)},
              "llama_cpp": llama, "mlx": blocks}
    if args.builds:
        extra = [tuple(x.split("=", 1)) for x in args.builds.split(",") if "=" in x]
        report["builds"] = compare_builds([("installed", ""), *extra], args)
    for r in [*singles, llama["batched"], llama["batched_prefix"]]:
        r.pop("texts", None)
    for block in blocks:
        for mode in ("one_at_a_time", "batched", "batched_prefix"):
            block[mode].pop("texts")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"sdg_throughput-{args.prompts}x{args.max_tokens}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
