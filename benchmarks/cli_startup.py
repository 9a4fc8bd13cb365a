"""CLI start-up time: `mlxlab --help` and `mlxlab taxonomy --help` against a bare `python -c pass`.

Each command runs `--repeats` times, interleaved, in fresh processes; the median is reported with
the ratio to the bare interpreter (this machine is noisy). Writes benchmarks/results/cli_startup.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "mlxlab --help": [sys.executable, "-m", "mlxlab", "--help"],
    "mlxlab taxonomy --help": [sys.executable, "-m", "mlxlab", "taxonomy", "validate", "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["python -c pass"])
    rows = [{"command": name, "median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
             "vs_bare_python": round(statistics.median(t) / base, 2)} for name, t in times.items()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2) + "\n")
    lines = ["# CLI start-up", "", "| command | median s | min s | x bare python |", "|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['median_s']} | {r['min_s']} | {r['vs_bare_python']} |" for r in rows]
    (RESULTS / "cli_startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
