"""An OpenAI-compatible server for a model, as a subprocess: llama.cpp for a GGUF, mlx-lm for an MLX model.

    with serve("gguf/model-q4_k_m.gguf") as url:      # url = "http://127.0.0.1:8000/v1"
        ...                                            # any OpenAI client, or mlxlab.chat

The server runs in its own process (a bad GGUF can abort llama.cpp), is polled until it answers, and is
stopped cleanly (SIGTERM, then SIGKILL) when the block ends, also on errors and Ctrl-C. The child also ends
by itself when its parent dies (even by SIGKILL): a watchdog thread in it sees that it was orphaned. The
API key travels in the child's environment, never on a command line that `ps` shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from mlxlab.errors import MlxlabError

DEFAULT_N_CTX = 2048


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# Run in the child before the server module: exit when orphaned (the parent's pid is no longer our parent).
_WATCHDOG = ("import os, sys, threading, time, runpy\n"
             "parent = os.getppid()\n"
             "def watch():\n"
             "    while os.getppid() == parent:\n"
             "        time.sleep(0.5)\n"
             "    os._exit(0)\n"
             "threading.Thread(target=watch, daemon=True).start()\n")


def llama_server_environment(api_key: str | None = None) -> dict[str, str]:
    """This process's environment for a llama.cpp server child, without any variable that names one of the
    server's settings, plus `API_KEY` when `api_key` is given.

    llama-cpp-python's server reads every settings field (API_KEY, MODEL, N_GPU_LAYERS, ...) from the environment,
    in any case, and a config file from CONFIG_FILE: an unrelated API_KEY exported in a shell would turn on auth.
    The names come from the installed server's own settings classes, so they follow its version.
    """
    from llama_cpp.server.settings import ConfigFileSettings, ModelSettings, ServerSettings

    names = {"config_file"}
    for settings in (ModelSettings, ServerSettings, ConfigFileSettings):
        prefix = settings.model_config.get("env_prefix") or ""
        for name, info in settings.model_fields.items():
            names.update((prefix + alias).lower() for alias in (name, info.alias) if isinstance(alias, str))
    env = {key: value for key, value in os.environ.items() if key.lower() not in names}
    if api_key:
        env["API_KEY"] = api_key
    return env


def _command(model: str | Path, host: str, port: int, api_key: str | None,
             n_ctx: int | None) -> tuple[list[str], dict[str, str]]:
    """(command line, environment) of the server for `model` (.gguf -> llama.cpp, else mlx-lm)."""
    from mlxlab.device import llama_threads

    path = Path(str(model)).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise MlxlabError("no such file", path=path)
        _check_gguf(path)
        from mlxlab.llamacpp import child_prelude, require

        prelude = child_prelude(require("serving a GGUF", instead="serve the MLX model (a folder) with mlx-lm"))
        threads = str(max(1, llama_threads()))
        script = _WATCHDOG + prelude + ("sys.argv = ['llama_cpp.server'] + sys.argv[1:]\n"
                              "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n")
        cmd = [sys.executable, "-c", script, "--model", str(path), "--host", host, "--port", str(port),
               "--n_ctx", str(n_ctx or DEFAULT_N_CTX), "--n_threads", threads, "--n_threads_batch", threads]
        return cmd, llama_server_environment(api_key)
    if api_key:
        raise MlxlabError("mlx-lm's server has no API keys; --api-key needs a GGUF model (served by llama.cpp)",
                          hint="export the model first: mlxlab export MODEL --out-type q4_k_m")
    if n_ctx is not None:
        raise MlxlabError("n_ctx sets the context of the llama.cpp server; mlx-lm's server has no such setting",
                          hint="drop --n-ctx, or export the model to GGUF and serve that")
    from mlxlab.models import resolve_model

    model_dir = resolve_model(model)
    # run mlx-lm's server after `import mlxlab`, so MLX binds OpenBLAS on Linux
    script = _WATCHDOG + ("import mlxlab\nsys.argv = ['mlx_lm.server'] + sys.argv[1:]\n"
                          "runpy.run_module('mlx_lm.server', run_name='__main__')\n")
    # mlx-lm's server reads no settings from the environment (its Hugging Face client's HF_* variables are meant)
    return ([sys.executable, "-c", script, "--model", str(model_dir), "--host", host, "--port", str(port)],
            dict(os.environ))


def _check_gguf(path: Path) -> None:
    """Refuse a file that is no GGUF before a server starts on it (and prints its own traceback)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise MlxlabError("not a GGUF file (it does not start with the GGUF magic bytes)", path=path,
                          hint="pass a .gguf made by `mlxlab export` or llama.cpp")


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _get(url: str, api_key: str | None, timeout: float = 2.0) -> int:
    """HTTP status of GET `url` (0 when nothing answers)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


class Server:
    """A running server subprocess: its base URL, its log, and how to stop it."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path):
        self.process, self.url, self.log = process, url, log

    def log_tail(self, lines: int = 8) -> str:
        """The last lines the server printed."""
        try:
            return "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; only this server's own process (group)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(OSError):
            self.log.unlink()


def start_server(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                 n_ctx: int | None = None, timeout: float = 180.0) -> Server:
    """Start the server for `model` and return once it answers HTTP (port 0: pick a free port).

    `n_ctx` is the llama.cpp server's context (GGUF only; default 2048).
    """
    port = port or free_port(host)
    cmd, env = _command(model, host, port, api_key, n_ctx)
    if not _loopback(host) and not api_key:
        print(f"mlxlab: warning: serving on {host} without an API key: anyone who can reach this machine can use "
              "the model (pass --api-key)", file=sys.stderr)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex((host if host not in ("0.0.0.0", "") else "127.0.0.1", port)) == 0:
            raise MlxlabError(f"port {port} on {host} is already in use", hint="pass another --port (0 = any free one)")
    fd, log_name = tempfile.mkstemp(prefix="mlxlab-serve-", suffix=".log")
    log = Path(log_name)
    with os.fdopen(fd, "wb") as handle:     # its own group: stopped as a whole, not by Ctrl-C twice
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
    local = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    server = Server(process, f"http://{local}:{port}/v1", log)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise MlxlabError(f"the server exited with code {process.returncode} before answering:\n"
                                  f"{server.log_tail()}", path=model if str(model).endswith(".gguf") else None)
            if _get(f"{server.url}/models", api_key) == 200:
                return server
            time.sleep(0.25)
        raise MlxlabError(f"the server did not answer within {timeout:.0f} s:\n{server.log_tail()}")
    except BaseException:       # Ctrl-C and errors too: nobody else holds the server yet to stop it
        server.stop()
        raise


@contextlib.contextmanager
def serve(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          n_ctx: int | None = None, timeout: float = 180.0):
    """Run an OpenAI-compatible server for `model` for the length of a `with` block; yields its base URL."""
    server = start_server(model, host=host, port=port, api_key=api_key, n_ctx=n_ctx, timeout=timeout)
    try:
        yield server.url
    finally:
        server.stop()


def models(url: str, api_key: str | None = None) -> list[str]:
    """The model ids an OpenAI-compatible server lists."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with urllib.request.urlopen(urllib.request.Request(f"{url.rstrip('/')}/models", headers=headers), timeout=10) as r:
        return [m.get("id", "") for m in json.load(r).get("data", [])]
