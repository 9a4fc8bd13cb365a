"""llama.cpp in mlxlab: the one place that makes llama.cpp models, after a self-test that this build survives.

pip compiles llama-cpp-python for the CPU it is built on, with every kernel that CPU has, and some crash: on an
Intel Xeon with AMX, llama.cpp 0.3.36's AMX matrix product (`ggml_backend_amx_mul_mat`, one of the CPU's "extra
buffer types") dies with SIGSEGV on the first prompt. A crash in native code cannot be caught inside the process,
so before mlxlab makes its first llama.cpp model on a build and a CPU it runs a self-test in child processes:
each candidate setting (`CANDIDATES`, fastest by design first) loads the embedded SmolLM2 GGUF (Q4_1, and a Q8_0 copy: the
batched teacher's type), evaluates a prompt and decodes a few tokens. A candidate passes when its child ends
cleanly and its logits agree with the plain CPU path's. The first passing candidate is kept in mlxlab's cache,
keyed by the llama.cpp build (its library files) and the CPU, and applied to every model mlxlab makes:
`load_llama` in this process, `child_prelude` in the processes that load one (the export check, the server).
When even the plainest path crashes, llama.cpp is unusable here: `teacher_backend: auto` picks MLX and says why,
and every other llama.cpp path stops with a clear error. A crash that still happens later (another model type,
another kernel) is reported by the CLI's supervisor (`mlxlab.crash`), which also drops the setting in use so the
next run takes the next safer one. llama.cpp's quantizer (`quantize_gguf`: GGUF export, the self-test's Q8_0 copy) runs
here too, in a child.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlxlab.errors import MlxlabError

SELFTEST_VERSION = 1            # bump when the test changes: cached verdicts are then taken again
SELFTEST_TIMEOUT_S = 300        # one candidate's child: loading two 135M models and a short prompt
CACHE_NAME = "llama-selftest.json"
QUANTIZE_TIMEOUT_S = 3600       # llama.cpp's quantizer runs in a child (it can abort); it may not hang forever
SETTINGS_ENV = "MLXLAB_LLAMA_SETTINGS"   # a candidate's name forces it (no self-test); "auto" or unset: test
# Candidate settings of `llama_model_params`, fastest by design first. "default": every buffer type llama.cpp has on this
# CPU (AMX, the repacked weight layouts of the AVX2/AVX-512/NEON kernels); "plain": no extra buffer types, the
# path every build has and the reference the others are compared with.
CANDIDATES: tuple[tuple[str, dict], ...] = (("default", {}), ("plain", {"use_extra_bufts": False}))
REFERENCE = "plain"
# A candidate agrees with the reference when the greedy tokens are the same at (nearly) every prompt position and
# the logits are close: other kernels quantize activations and sum in other orders, so a little difference is
# normal (measured: mean |dlogit| below 0.05 between the two on SmolLM2), a wrong kernel gives noise.
MIN_TOP1 = 0.9
MAX_MEAN_ABS_DIFF = 0.5
PROMPT = ("The capital of France is Paris. The capital of Italy is Rome. Jolie is a service-oriented programming "
          "language: a service listens on an input port and calls others through output ports.")
REBUILD = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir "llama-cpp-python[server]"'
# CPU features a portable (GGML_NATIVE=OFF) x86 build compiles in; a build with more was made for its own CPU
PORTABLE_X86 = {"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"}

_applied: dict = {}             # settings applied to llama_model_default_params in this process


@dataclass(frozen=True)
class Verdict:
    """What the self-test found for this llama.cpp build on this CPU, and the settings every model gets."""
    usable: bool
    name: str                   # the chosen candidate ("default", "plain"), or "none"
    settings: dict              # llama_model_params fields set on every model
    reason: str                 # one line: why this choice
    tried: list = field(default_factory=list)   # per candidate: name, outcome, prefill_tok_s, agreement
    build: dict = field(default_factory=dict)   # version, library, native, features
    seconds: float = 0.0
    cached: bool = False

    def describe(self) -> str:
        """One line for `mlxlab info` and messages."""
        if not self.usable:
            return f"unusable on this CPU: {self.reason}"
        return f"passed: settings '{self.name}' ({self.reason})"


# ------------------------------------------------------------------------------------------------ the build

def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _cpu_identity() -> str:
    """The CPU's model and feature flags (what decides which compiled kernels run)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            lines = [x for x in handle.read().splitlines() if x.startswith(("model name", "flags", "Features"))]
        if lines:
            return "\n".join(dict.fromkeys(lines))
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()} {platform.processor()}"


def build_key() -> str | None:
    """A key for this llama.cpp build on this CPU (its version and library files, the CPU); None if not installed.

    Computed without importing llama_cpp (cheap, and safe in a supervisor)."""
    folder = _package_dir()
    if folder is None:
        return None
    from importlib import metadata

    try:
        version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        version = "unknown"
    libs = []
    for path in sorted(folder.glob("lib/*")) + sorted(folder.glob("*.so")) + sorted(folder.glob("*.dylib")):
        if path.is_file():
            stat = path.stat()
            libs.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    text = json.dumps([SELFTEST_VERSION, version, str(folder), libs, _cpu_identity(), platform.machine()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def parse_features(system_info: str) -> dict[str, bool]:
    """`llama_print_system_info()` text ('CPU : SSE3 = 1 | AVX = 1 | ...') as {feature: on}."""
    features = {}
    for part in system_info.replace("\n", "|").split("|"):
        if "=" in part:
            name, _, value = part.rpartition("=")
            name = name.split(":")[-1].strip()
            if name:
                features[name] = value.strip() not in ("0", "")
    return features


def describe_build(build: dict) -> str:
    """'llama-cpp-python 0.3.36, native build (AVX512, AMX_INT8, ...)' for `mlxlab info`."""
    if not build:
        return "not installed (pip install llama-cpp-python; on Linux it builds from source)"
    on = [k for k, v in build.get("features", {}).items() if v and k.isupper()]
    kind = {True: "native build (for the CPU that built it)", False: "portable build"}.get(build.get("native"),
                                                                                          "build")
    return f"llama-cpp-python {build.get('version', '?')}, {kind}; compiled in: {', '.join(on) or 'unknown'}"


def _is_native(features: dict[str, bool]) -> bool | None:
    """Whether the build was compiled for its own CPU (GGML_NATIVE): on x86, features beyond the portable set."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None               # Arm builds differ little; Apple's are native by design
    on = {k for k, v in features.items() if v}
    if not on & PORTABLE_X86:
        return None
    return any(k.startswith(("AVX512", "AMX", "AVX_VNNI")) for k in on)


# ------------------------------------------------------------------------------------------------ settings

def apply_settings(settings: dict) -> None:
    """Make every `llama_cpp.Llama` in this process load its model with `settings` (llama_model_params fields).

    llama-cpp-python's `Llama` takes no argument for these fields (e.g. `use_extra_bufts`) and fills its model
    parameters from `llama_model_default_params()`: that function is wrapped, once, in both names it has."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    original = getattr(low.llama_model_default_params, "_mlxlab_original", low.llama_model_default_params)

    def defaults():
        params = original()
        for key, value in _applied.items():
            setattr(params, key, value)
        return params

    defaults._mlxlab_original = original
    _applied.clear()
    _applied.update(settings)
    low.llama_model_default_params = defaults
    llama_cpp.llama_model_default_params = defaults


def child_prelude(found: Verdict | None = None) -> str:
    """Python source that a child process runs before it makes a llama.cpp model: the verdict's settings."""
    found = found or require()
    return f"import mlxlab.llamacpp as _ml; _ml.apply_settings({found.settings!r})\n"


def require(purpose: str = "llama.cpp", *, instead: str = "use MLX (--teacher-backend mlx)") -> Verdict:
    """The verdict, or a clear error when llama.cpp cannot run on this machine (`instead`: what else to do)."""
    found = verdict()
    if not found.usable:
        raise MlxlabError(f"{purpose} needs llama.cpp, which cannot run here: it {found.reason}",
                          hint=f"rebuild it portable: {REBUILD}; or {instead}; `mlxlab info` shows the build "
                               "and its self-test")
    return found


def load_llama(model_path: str | Path, *, purpose: str = "llama.cpp", **kwargs):
    """A `llama_cpp.Llama` for `model_path` with the self-test's settings (the only place mlxlab makes one)."""
    found = require(purpose)
    apply_settings(found.settings)
    from llama_cpp import Llama

    return Llama(model_path=str(model_path), **kwargs)


# ------------------------------------------------------------------------------------------------ the self-test

# Run in a child per candidate: argv[1] is JSON {settings, models, threads, prompt, out}. Writes the logits of
# every prompt position (.npy per model) and a JSON of facts; a crash ends the child, never the caller.
CHILD_SCRIPT = r"""
import json, sys, time
import numpy as np
args = json.loads(sys.argv[1])
import llama_cpp
import mlxlab.llamacpp as ml
ml.apply_settings(args["settings"])
facts = {"system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace"), "models": []}
for i, path in enumerate(args["models"]):
    llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_batch=256, n_threads=args["threads"],
                          n_threads_batch=args["threads"], logits_all=True, verbose=False)
    tokens = llm.tokenize(args["prompt"].encode(), add_bos=True)
    tic = time.perf_counter()
    llm.eval(tokens)
    prefill = time.perf_counter() - tic
    for _ in range(4):                       # a few single-token decode steps (the other kernel shape)
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    np.save(f"{args['out']}-{i}.npy", np.asarray(llm.scores[:llm.n_tokens], dtype=np.float32))
    facts["models"].append({"path": path, "tokens": len(tokens), "prefill_tok_s": len(tokens) / max(prefill, 1e-9)})
    llm.close()
json.dump(facts, open(args["out"] + ".json", "w"))
"""


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _cache_path() -> Path:
    from mlxlab.files import cache_dir

    return cache_dir() / CACHE_NAME


def _read_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, found: Verdict) -> None:
    from mlxlab.files import atomic_write

    cache = _read_cache()
    cache[key] = {k: v for k, v in asdict(found).items() if k != "cached"}
    atomic_write(_cache_path(), json.dumps(cache, indent=1))


_QUANTIZE_SCRIPT = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
params.nthread = int(sys.argv[4])
params.allow_requantize = sys.argv[5] == "1"
sys.exit(0 if llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)) == 0 else 3)
"""


def quantize_gguf(source: Path, dest: Path, out_type: str, *, allow_requantize: bool = False) -> None:
    """Quantize a float GGUF to `out_type` with llama.cpp's quantizer (in a subprocess: it can abort).

    `allow_requantize`: the source may itself be quantized (llama.cpp refuses that unless asked)."""
    import llama_cpp

    from mlxlab.device import llama_threads

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{out_type.upper()}")
    try:
        proc = subprocess.run([sys.executable, "-c", _QUANTIZE_SCRIPT, str(source), str(dest), str(ftype),
                               str(max(1, llama_threads())), "1" if allow_requantize else "0"],
                              capture_output=True, text=True,
                              timeout=QUANTIZE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MlxlabError(f"llama.cpp's quantizer did not finish within {QUANTIZE_TIMEOUT_S} s ({out_type})",
                          path=source, hint="check free memory and disk; try --out-type q8_0 or f16") from None
    if proc.returncode != 0 or not dest.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise MlxlabError(f"llama.cpp could not quantize to {out_type} (exit {proc.returncode}): {tail}",
                          hint="try --out-type q8_0 or f16")


def _test_models(workdir: Path) -> list[str]:
    """The embedded SmolLM2 GGUF (Q4_1) and a Q8_0 copy of it (made by llama.cpp's quantizer in a child)."""
    from mlxlab.models import embedded_gguf

    source = embedded_gguf()
    copy = workdir / "smollm2-q8_0.gguf"
    try:
        quantize_gguf(source, copy, "q8_0", allow_requantize=True)
    except MlxlabError:
        return [str(source)]      # the quantizer is another program path: the self-test still tests Q4_1
    return [str(source), str(copy)]


def _agreement(logits, reference) -> dict:
    import numpy as np

    n = min(len(logits), len(reference))
    a, b = logits[:n], reference[:n]
    if not np.isfinite(a).all():
        return {"top1": 0.0, "mean_abs_diff": float("inf")}
    return {"top1": float(np.mean(a.argmax(-1) == b.argmax(-1))), "mean_abs_diff": float(np.mean(np.abs(a - b)))}


def _try(name: str, settings: dict, models: list[str], workdir: Path, script: str, threads: int) -> dict:
    """Run one candidate's child; its outcome, speed and (loaded) logits."""
    import numpy as np

    out = workdir / name
    args = {"settings": settings, "models": models, "threads": threads, "prompt": PROMPT, "out": str(out)}
    tic = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True,
                              timeout=SELFTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"name": name, "outcome": f"timed out after {SELFTEST_TIMEOUT_S} s", "ok": False}
    seconds = round(time.perf_counter() - tic, 2)
    if proc.returncode < 0:
        return {"name": name, "outcome": f"crashed ({_signal_name(proc.returncode)})", "ok": False,
                "seconds": seconds, "crashed": True}
    if proc.returncode != 0 or not Path(f"{out}.json").is_file():
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])[-300:]
        return {"name": name, "outcome": f"failed (exit {proc.returncode}): {tail}", "ok": False, "seconds": seconds}
    facts = json.loads(Path(f"{out}.json").read_text())
    rates = [m["prefill_tok_s"] for m in facts["models"]]
    return {"name": name, "outcome": "ran", "ok": True, "seconds": seconds, "system_info": facts["system_info"],
            "prefill_tok_s": round(sum(rates) / len(rates), 1),
            "logits": [np.load(f"{out}-{i}.npy") for i in range(len(facts["models"]))]}


def self_test(*, candidates: tuple[tuple[str, dict], ...] = CANDIDATES, script: str = CHILD_SCRIPT,
              threads: int | None = None) -> Verdict:
    """Try every candidate setting in a child process and choose (no cache; see `verdict`)."""
    from mlxlab.device import llama_threads
    from importlib import metadata

    tic = time.perf_counter()
    threads = threads or llama_threads(batched=True)
    with tempfile.TemporaryDirectory(prefix="mlxlab-llama-selftest-") as tmp:
        models = _test_models(Path(tmp))
        runs = {name: _try(name, settings, models, Path(tmp), script, threads) for name, settings in candidates}
    reference = runs.get(REFERENCE)
    tried = []
    for name, _ in candidates:
        run = runs[name]
        if run["ok"] and reference and reference["ok"] and name != REFERENCE:
            agree = [_agreement(a, b) for a, b in zip(run["logits"], reference["logits"])]
            run["top1"] = min(x["top1"] for x in agree)
            run["mean_abs_diff"] = round(max(x["mean_abs_diff"] for x in agree), 4)
            if run["top1"] < MIN_TOP1 or run["mean_abs_diff"] > MAX_MEAN_ABS_DIFF:
                run.update(ok=False, outcome=f"wrong results (top-1 {run['top1']:.0%} of the plain path's, mean "
                                             f"|dlogit| {run['mean_abs_diff']:.2f})")
        tried.append({k: v for k, v in run.items() if k not in ("logits", "system_info")})
    info = next((r["system_info"] for r in runs.values() if r.get("system_info")), "")
    features = parse_features(info)
    try:
        version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        version = "unknown"
    build = {"version": version, "native": _is_native(features), "features": features,
             "library": str(_package_dir() or "")}
    passing = [r for r in tried if r["ok"]]
    seconds = round(time.perf_counter() - tic, 2)
    failed = "; ".join(f"'{r['name']}' {r['outcome']}" for r in tried if not r["ok"])
    if not passing:
        return Verdict(False, "none", {}, f"every setting failed its self-test ({failed})", tried, build, seconds)
    # candidates come fastest by design first: the first that passes is kept. The rates are recorded, not compared:
    # on a busy machine a short prompt's timing swings by more than the candidates differ (measured: 3.2 vs 4.7
    # tok/s for the same kernels); benchmarks/sdg_throughput.py --builds measures them properly.
    best = passing[0]
    why = f"the first of {', '.join(r['name'] for r in passing)} that passed, at {best.get('prefill_tok_s', 0):.0f} " \
          "prompt tok/s"
    if failed:
        why += f"; {failed}"
    return Verdict(True, best["name"], dict(candidates)[best["name"]], why, tried, build, seconds)


def verdict(*, refresh: bool = False) -> Verdict:
    """The self-test's verdict for this llama.cpp build and CPU: cached, else measured now (a few seconds).

    `MLXLAB_LLAMA_SETTINGS=<candidate>` (e.g. `plain`) uses that candidate without a test."""
    key = build_key()
    if key is None:
        return Verdict(False, "none", {}, "is not installed (pip install llama-cpp-python)")
    forced = os.environ.get(SETTINGS_ENV, "").strip()
    if forced and forced != "auto":
        if forced not in dict(CANDIDATES):
            raise MlxlabError(f"{SETTINGS_ENV}={forced!r} names no llama.cpp setting",
                              hint=f"use one of: auto, {', '.join(name for name, _ in CANDIDATES)}")
        return Verdict(True, forced, dict(CANDIDATES)[forced], f"asked for with {SETTINGS_ENV}")
    if not refresh:
        entry = _read_cache().get(key)
        if entry:
            return Verdict(**{**entry, "cached": True})
    found = self_test()
    _write_cache(key, found)
    return found


def record_crash(stage: str, signal_name: str) -> str | None:
    """After a llama.cpp crash in a stage: stop using the settings that were in use. Returns what changes."""
    key = build_key()
    entry = _read_cache().get(key) if key else None
    if not entry or not entry.get("usable"):
        return None
    names = [name for name, _ in CANDIDATES]
    crashed = entry["name"]
    for run in entry.get("tried", []):
        if run["name"] == crashed:
            run.update(ok=False, outcome=f"crashed in {stage} ({signal_name})")
    later = [r for r in entry.get("tried", []) if r["ok"] and names.index(r["name"]) > names.index(crashed)]
    if later:
        found = Verdict(True, later[0]["name"], dict(CANDIDATES)[later[0]["name"]],
                        f"'{crashed}' crashed in {stage} ({signal_name})", entry["tried"], entry.get("build", {}))
        message = f"mlxlab now runs llama.cpp with its '{found.name}' settings instead of '{crashed}'"
    else:
        found = Verdict(False, "none", {}, f"crashed in {stage} ({signal_name}) with every setting that passed "
                                            "its self-test", entry.get("tried", []), entry.get("build", {}))
        message = "mlxlab no longer uses llama.cpp on this machine (teacher_backend auto picks mlx)"
    _write_cache(key, found)
    return message
