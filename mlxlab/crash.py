"""A native crash is never silent: the `mlxlab` command runs in a child of itself and says how it ended.

mlxlab calls native libraries (llama.cpp, MLX, OpenBLAS). When one of them crashes (SIGSEGV, SIGABRT, SIGILL,
SIGBUS, SIGFPE), or the system kills the process (SIGKILL, usually for memory), Python cannot catch it and the
process vanishes with the line it was printing. So the console script starts the command as a child process with
Python's faulthandler writing the crashing thread's stack to a file, and the child notes the stage it is in
(`set_stage`). When the child dies by a signal the parent prints one line: which library (the innermost Python
frame that belongs to one), which stage, and what to try; finished work and the SDG journal stay, so the same
command resumes. Standard library only: the parent imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_CHILD = "MLXLAB_SUPERVISED"      # set in the child: run the command itself; its value is the parent's pid
ENV_FAULT = "MLXLAB_FAULT_FILE"      # where the child's faulthandler writes the stacks of a crash
ENV_STAGE = "MLXLAB_STAGE_FILE"      # where the child notes the stage it is in
_FATAL = {"SIGSEGV": "segmentation fault", "SIGABRT": "aborted", "SIGILL": "illegal instruction",
          "SIGBUS": "bus error", "SIGFPE": "arithmetic error", "SIGKILL": "killed"}
DOUBLE_INTERRUPT_S = 0.5
_fault_handle = None


def set_stage(stage: str) -> None:
    """Note the stage this process is in, for the supervisor's message after a crash (no-op unsupervised)."""
    path = os.environ.get(ENV_STAGE)
    if path:
        with contextlib.suppress(OSError):
            Path(path).write_text(stage, encoding="utf-8")


def start_child() -> None:
    """In the supervised child: dump stacks on a fatal signal, and end when the supervisor ends."""
    global _fault_handle
    import faulthandler

    path = os.environ.get(ENV_FAULT)
    if path and _fault_handle is None:
        with contextlib.suppress(OSError):
            _fault_handle = open(path, "w", encoding="utf-8")       # noqa: SIM115 (open for the process's life)
            faulthandler.enable(file=_fault_handle, all_threads=True)
    last = [float("-inf")]

    def interrupt(signum, frame) -> None:
        # one Ctrl-C arrives twice (from the terminal and passed on by the supervisor): a second one within
        # DOUBLE_INTERRUPT_S must not break the clean-up that the first one started
        now = time.monotonic()
        if now - last[0] >= DOUBLE_INTERRUPT_S:
            last[0] = now
            raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupt)
    parent = int(os.environ.get(ENV_CHILD, "0") or 0)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)             # PR_SET_PDEATHSIG: die with the supervisor
    else:
        import threading

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(137)

        threading.Thread(target=watch, daemon=True, name="mlxlab-supervisor-watch").start()
    if parent and os.getppid() != parent:                            # it died before prctl took effect
        os._exit(137)


def _library(stacks: str) -> str | None:
    """The native library the crashing thread was in, from faulthandler's dump (innermost frame first)."""
    block = stacks.split("Current thread", 1)[-1].split("\n\n", 1)[0] if "Current thread" in stacks else stacks
    for path in re.findall(r'File "([^"]+)"', block):
        path = path.replace("\\", "/")
        if "/llama_cpp/" in path or path.endswith(("mlxlab/teacher/llama_batch.py", "mlxlab/llamacpp.py")):
            return "llama.cpp"
        if "/mlx_lm/" in path or "/mlx/" in path or path.endswith(("mlxlab/teacher/mlx_batch.py",
                                                                     "mlxlab/train/loop.py",
                                                                     "mlxlab/train/adapters.py")):
            return "MLX"
        if "/gguf/" in path and "/mlxlab/gguf/" not in path:   # gguf-py, not mlxlab's own gguf stage
            return "gguf-py"
    return None


def explain(signal_name: str, stage: str, stacks: str, saved: Path | None) -> str:
    """The one line printed when the command died by `signal_name` in `stage`."""
    what = _FATAL.get(signal_name, "a fatal signal")
    library = _library(stacks)
    resume = "finished work and the SDG journal are kept: run the same command again to resume"
    where = f"; the stacks are in {saved}" if saved else ""
    if signal_name == "SIGKILL":
        return (f"mlxlab: error: {stage} was killed by the system ({signal_name}), most likely for lack of memory; "
                f"{resume}; try a smaller --batch-size or --max-seq-length, or close other programs")
    if library == "llama.cpp":
        from mlxlab.llamacpp import REBUILD, record_crash

        change = record_crash(stage, signal_name)
        change = f"; {change}" if change else ""
        return (f"mlxlab: error: {stage} crashed in native code: llama.cpp died with {signal_name} ({what}){change}; "
                f"{resume}; if it happens again, rebuild llama.cpp portable ({REBUILD}) or use "
                f"--teacher-backend mlx, and see `mlxlab info`{where}")
    name = library or "a native library"
    return (f"mlxlab: error: {stage} crashed in native code: {name} died with {signal_name} ({what}); {resume}; "
            f"`mlxlab info` shows the libraries in use; try --device cpu or a smaller --batch-size, and report it "
            f"with the stacks{where}")


def _keep(fault: Path) -> Path | None:
    """Copy the crash's stacks into the cache (the temporary folder goes away)."""
    try:
        text = fault.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            return None
        from mlxlab.files import atomic_write, cache_dir

        return atomic_write(cache_dir() / "crashes" / time.strftime("crash-%Y%m%d-%H%M%S.txt"), text)
    except OSError:
        return None


def supervise(argv: list[str], verb: str) -> int:
    """Run `mlxlab ARGV` in a child process; its exit code, or a clear line and 128+N when signal N ended it."""
    with tempfile.TemporaryDirectory(prefix="mlxlab-") as tmp:
        fault, stage_file = Path(tmp) / "fault.txt", Path(tmp) / "stage"
        stage_file.write_text(verb, encoding="utf-8")
        env = {**os.environ, ENV_CHILD: str(os.getpid()), ENV_FAULT: str(fault), ENV_STAGE: str(stage_file)}
        child = subprocess.Popen([sys.executable, "-m", "mlxlab", *argv], env=env)
        forward = lambda signum, frame: child.send_signal(signum)         # noqa: E731
        # every stop signal is passed on; a Ctrl-C at a terminal reaches the child twice (its process group, and
        # this), which the child takes as one (`start_child`)
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, forward),
                    signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
        if hasattr(signal, "SIGHUP"):
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, forward)
        try:
            code = child.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if code >= 0:
            return code
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if name in ("SIGTERM", "SIGHUP", "SIGINT"):                    # asked to stop: no crash to explain
            return 128 - code
        stage = stage_file.read_text(encoding="utf-8").strip() or verb
        stacks = fault.read_text(encoding="utf-8", errors="replace") if fault.is_file() else ""
        print(explain(name, stage, stacks, _keep(fault)), file=sys.stderr, flush=True)
        return 128 - code
