"""Serve and chat: a real llama.cpp server on 127.0.0.1 answering real HTTP clients."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from mlxlab.errors import MlxlabError


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory) -> Path:
    """The tiny llama as an f16 GGUF."""
    from mlxlab.gguf.gguf_export import export_gguf

    return export_gguf(tiny_llama, tmp_path_factory.mktemp("gguf"), out_type="f16", verify=False).path


def _request(url: str, method: str, path: str, body: dict | None = None, key: str | None = None):
    """(status, parsed JSON or text) of one plain http.client request."""
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, parts.path + path, body=json.dumps(body) if body else None, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    try:
        return resp.status, json.loads(text)
    except json.JSONDecodeError:
        return resp.status, text


def _port_open(url: str) -> bool:
    parts = urlparse(url)
    with socket.socket() as sock:
        return sock.connect_ex((parts.hostname, parts.port)) == 0


def test_llama_cpp_server_answers_and_checks_the_key(tiny_gguf, capsys):
    from mlxlab.chat import ask
    from mlxlab.cli import main
    from mlxlab.serve import serve

    with serve(tiny_gguf, port=0, api_key="sesame") as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert _request(url, "GET", "/models")[0] == 401
        assert _request(url, "GET", "/models", key="wrong")[0] == 401
        status, models = _request(url, "GET", "/models", key="sesame")
        assert status == 200 and models["data"]
        status, reply = _request(url, "POST", "/chat/completions", key="sesame", body={
            "messages": [{"role": "user", "content": "What is a port?"}], "max_tokens": 8, "temperature": 0,
            "logit_bias": {"2": -100}})        # keep the random model from ending at once
        assert status == 200 and reply["usage"]["completion_tokens"] >= 1
        assert isinstance(reply["choices"][0]["message"]["content"], str)
        # streamed, through mlxlab's own client
        pieces = []
        answer = ask(url, "Hello", api_key="sesame", max_tokens=8, on_token=pieces.append)
        assert answer == "".join(pieces)
        with pytest.raises(MlxlabError, match="401"):
            ask(url, "Hello", api_key="wrong", max_tokens=4)
        # the one-shot CLI
        assert main(["chat", "--url", url, "--api-key", "sesame", "-q", "Hi there", "--max-tokens", "8"]) == 0
        assert capsys.readouterr().out.endswith("\n")
    assert not _port_open(url)                     # stopped when the block ended


def test_chat_repl_commands(tiny_gguf, tmp_path):
    from rich.console import Console

    from mlxlab.chat import repl
    from mlxlab.serve import serve

    lines = iter(["/system be brief", "/temp 0", "Hello", "/save " + str(tmp_path / "c.jsonl"), "/clear",
                  "/bogus", "/quit"])
    console = Console(file=open(tmp_path / "out.txt", "w"), width=100)
    with serve(tiny_gguf, port=0) as url:
        history = repl(url, console=console, read=lambda prompt: next(lines), max_tokens=6)
    assert history == []                           # cleared before quitting
    saved = json.loads((tmp_path / "c.jsonl").read_text())
    assert [m["role"] for m in saved["messages"]] == ["system", "user", "assistant"]
    assert "unknown command /bogus" in (tmp_path / "out.txt").read_text()


def test_bad_gguf_is_a_clear_error(tmp_path):
    from mlxlab.serve import serve

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(MlxlabError, match="exited with code"):
        with serve(bad, port=0, timeout=60):
            pass


def test_unreachable_server_is_a_clear_error():
    from mlxlab.chat import ask
    from mlxlab.serve import free_port

    with pytest.raises(MlxlabError, match="cannot reach"):
        ask(f"http://127.0.0.1:{free_port()}/v1", "Hi")


def _command_lines() -> list[str]:
    """Every process's command line, as `ps` shows it to any user (/proc on Linux, else `ps -ww`)."""
    import subprocess

    proc = Path("/proc")
    if proc.is_dir():
        lines = []
        for entry in proc.iterdir():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
        return lines
    return subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGINT", "SIGKILL"])
def test_every_way_serve_ends_also_ends_its_server(tiny_gguf, how):
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlxlab.serve import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    proc = subprocess.Popen([sys.executable, "-m", "mlxlab", "serve", str(tiny_gguf), "--port", str(port),
                             "--api-key", "sekret-key"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MLXLAB_TEST_KEY": "x"})
    deadline = time.monotonic() + 120
    while not _port_open(url) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert _port_open(url), "the server never came up"
    # the key reached the server through its environment, not a command line that `ps` shows
    children = [line for line in _command_lines() if "llama_cpp.server" in line and str(port) in line]
    assert children and not any("sekret-key" in line for line in children)
    assert _request(url, "GET", "/models")[0] == 401 and _request(url, "GET", "/models", key="sekret-key")[0] == 200
    os.kill(proc.pid, getattr(signal, how))
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20       # SIGKILL: the orphaned server notices within a second or so
    while _port_open(url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _port_open(url), f"the server outlived `mlxlab serve` ended by {how}"


def test_serve_refuses_bad_input_before_starting(tmp_path, tiny_llama):
    from mlxlab.serve import _loopback, start_server

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(MlxlabError, match="not a GGUF"):
        start_server(junk, port=0)
    with pytest.raises(MlxlabError, match="n_ctx"):
        start_server(tiny_llama, port=0, n_ctx=4096)
    assert _loopback("127.0.0.1") and _loopback("localhost") and not _loopback("0.0.0.0")


def test_server_settings_in_our_environment_do_not_reach_the_server(tiny_gguf, tmp_path, monkeypatch):
    """llama-cpp-python's server reads its settings from the environment, in any case: an API_KEY exported for
    something else would turn on auth (the start-up probe then gets 401 until it times out), a CONFIG_FILE would
    replace our settings."""
    from mlxlab.serve import serve

    monkeypatch.setenv("API_KEY", "unrelated")
    monkeypatch.setenv("CONFIG_FILE", str(tmp_path / "absent.json"))
    monkeypatch.setenv("disable_ping_events", "maybe")              # not a bool: the server would not start
    monkeypatch.setenv("MLXLAB_TEST_KEEP", "kept")
    with serve(tiny_gguf, port=0, timeout=120) as url:
        assert _request(url, "GET", "/models")[0] == 200           # no --api-key: no auth
    from mlxlab.serve import llama_server_environment

    env = llama_server_environment("sesame")
    assert env["API_KEY"] == "sesame" and env["MLXLAB_TEST_KEEP"] == "kept"
    assert not {"CONFIG_FILE", "disable_ping_events"} & set(env)


def test_ctrl_c_while_the_server_starts_stops_it(tiny_gguf, monkeypatch):
    import os
    import signal
    import subprocess

    import mlxlab.serve
    from mlxlab.serve import start_server

    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def recorded(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    def interrupted(*args, **kwargs):
        assert started[0].poll() is None                           # the server is starting
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess, "Popen", recorded)
    monkeypatch.setattr(mlxlab.serve, "_get", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            start_server(tiny_gguf, port=0)
        assert len(started) == 1 and started[0].poll() is not None, "the server outlived the Ctrl-C"
    finally:
        if started and started[0].poll() is None:
            os.killpg(started[0].pid, signal.SIGKILL)
            started[0].wait()
