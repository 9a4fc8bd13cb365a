"""Run every benchmark in benchmarks/ and gather their markdown tables into benchmarks/RESULTS.md.

Each benchmark script writes benchmarks/results/<name>.{json,md}; this runs them one after another in
subprocesses (with `--quick` where a script accepts it), keeps going when one fails, and then writes
RESULTS.md: the date, the machine, a line per benchmark on what it measures and how this run went, and
every script's latest table (also those of scripts not run this time, marked with their date).

    python benchmarks/run_all.py                     # everything (long: SDG and training on the CPU)
    python benchmarks/run_all.py --quick             # pass --quick where supported
    python benchmarks/run_all.py --only cli_startup,taxonomy_validate
    python benchmarks/run_all.py --report            # only rewrite RESULTS.md from benchmarks/results/
"""

from __future__ import annotations

import argparse
import ast
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent


def scripts() -> dict[str, Path]:
    """name -> path of every benchmark script (this runner and private helpers left out)."""
    return {p.stem: p for p in sorted(HERE.glob("*.py")) if p.name != Path(__file__).name
            and not p.name.startswith("_")}


def describe(path: Path) -> str:
    """The first sentence of a script's docstring: what it measures (read without importing it)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s", first)[0] if first else "(no description)"


def takes_quick(path: Path) -> bool:
    """True when the script has a `--quick` flag."""
    return '"--quick"' in path.read_text(encoding="utf-8")


def run_one(name: str, path: Path, *, quick: bool, timeout: float) -> dict:
    """Run one benchmark in a subprocess; its output goes to results/<name>.log, kept when it fails."""
    command = [sys.executable, str(path)] + (["--quick"] if quick and takes_quick(path) else [])
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / f"{name}.log"
    start = time.perf_counter()
    print(f"{name}: {' '.join(command[1:])}", flush=True)
    try:
        with log.open("w", encoding="utf-8") as out:
            code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        status = "ok" if code == 0 else f"failed (exit {code}, see results/{log.name})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    if status == "ok":
        log.unlink()                # kept only to explain a failure
    seconds = time.perf_counter() - start
    print(f"{name}: {status} in {seconds:.1f} s", flush=True)
    return {"status": status, "seconds": seconds, "quick": "--quick" in command}


def machine() -> str:
    """One line on the machine: OS, CPU, cores, memory, MLX backend."""
    import mlxlab  # noqa: F401  (binds OpenBLAS before mlx loads)
    from mlxlab.device import device_info

    info = device_info(measure=False)
    return (f"{info.system} {info.machine}, {info.cpu} ({info.cpu_count} cores), {info.memory_gb:.0f} GB; "
            f"Python {platform.python_version()}; MLX {info.mlx_version} ({info.backend} backend, "
            f"{info.default_device}); BLAS {info.blas}; llama.cpp {info.llama_cpp}")


def _section(md: str) -> str:
    """A result file as a section of RESULTS.md: headings one level down, image links into results/."""
    md = re.sub(r"^(#+) ", r"#\1 ", md, flags=re.MULTILINE)
    return re.sub(r"\]\((?!https?://|/|results/)([^)]+)\)", r"](results/\1)", md)


def write_results(found: dict[str, Path], ran: dict[str, dict], path: Path = HERE / "RESULTS.md") -> Path:
    """RESULTS.md: date, machine, what each benchmark measures, then every available table."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# mlxlab benchmark results", "", f"Written {now} by `python benchmarks/run_all.py`.", "",
             f"Machine: {machine()}", "", "| benchmark | what it measures | this run | result from |",
             "|---|---|---|---|"]
    sections = []
    for name, script in found.items():
        # <name>.md, and <name>-<variant>.md where a script names its result after its settings
        tables = sorted(RESULTS.glob(f"{name}.md")) + sorted(RESULTS.glob(f"{name}-*.md"))
        state = ran.get(name)
        this_run = f"{state['status']}, {state['seconds']:.0f} s" + (" (--quick)" if state["quick"] else "") \
            if state else "not run"
        written = max((datetime.fromtimestamp(md.stat().st_mtime, timezone.utc) for md in tables), default=None)
        lines.append(f"| [{name}](#{name}) | {describe(script)} | {this_run} | "
                     f"{written.strftime('%Y-%m-%d') if written else 'no result yet'} |")
        if tables:
            sections += ["", f'<a id="{name}"></a>']
        for md in tables:
            sections += ["", _section(md.read_text(encoding="utf-8").strip())]
    path.write_text("\n".join(lines + sections) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks, write RESULTS.md; exit 1 when one failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    parser.add_argument("--quick", action="store_true", help="pass --quick to the scripts that accept it")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark before it is stopped")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and what they measure")
    parser.add_argument("--report", action="store_true", help="run nothing: rewrite RESULTS.md from the results there")
    args = parser.parse_args(argv)
    found = scripts()
    if args.list:
        for name, path in found.items():
            print(f"{name:20} {describe(path)}")
        return 0
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else list(found)
    unknown = [n for n in chosen if n not in found]
    if unknown:
        print(f"run_all: unknown benchmark {unknown[0]!r}; known: {', '.join(found)}", file=sys.stderr)
        return 2
    skip = set(found) if args.report else {n.strip() for n in args.skip.split(",")}
    ran = {name: run_one(name, found[name], quick=args.quick, timeout=args.timeout)
           for name in chosen if name not in skip}
    print(f"wrote {write_results(found, ran)}")
    return 0 if all(r["status"] == "ok" for r in ran.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
