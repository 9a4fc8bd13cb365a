"""Requests to OpenAI-compatible servers (llama.cpp, mlx_lm.server, vLLM, Ollama): the teacher's openai backend.

A request is retried on connection failures, 408, 429 and 5xx, with exponential backoff; any other refusal is
an MlxlabError at once. The API key comes from an environment variable, never from a flag or a file.
A `Fleet` spreads requests over several servers of the same model and carries on while one of them is up.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from mlxlab.errors import MlxlabError
from mlxlab.teacher.completions import Completion, Engine, GenerationStats, until_stop


class ServerDown(MlxlabError):
    """A server that still failed after every retry (refused connection, timeout, 5xx): another may take over."""


def _base(url: str) -> str:
    """`url` without a trailing slash or a known endpoint path (so `/v1/chat/completions` can be appended)."""
    base = url.rstrip("/")
    for known in ("/chat/completions", "/completions"):
        if base.endswith(known):
            base = base[:-len(known)]
    return base


def server_urls(url: str | Sequence[str] | None) -> list[str]:
    """The server URLs in `url` (comma-separated text or a list); empty entries are skipped.

    A URL without http:// or https://, or one server listed twice (`http://a:8080` and `http://a:8080/v1` are
    the same server), is an MlxlabError: twice the requests to one server is what `concurrency` is for.
    """
    items = url.split(",") if isinstance(url, str) else list(url or [])
    urls = [str(u).strip() for u in items if str(u).strip()]
    seen: dict[str, str] = {}
    for u in urls:
        if not u.lower().startswith(("http://", "https://")):
            raise MlxlabError(f"teacher URL {u!r} does not start with http:// or https://",
                              hint="give the server's base URL, e.g. --teacher-url http://127.0.0.1:8080")
        key = _base(u).removesuffix("/v1").lower()
        if key in seen:
            raise MlxlabError(f"the teacher URLs list one server twice: {seen[key]} and {u}",
                              hint="list each server once; --concurrency sets the requests in flight per server")
        seen[key] = u
    return urls


class OpenAIClient:
    """`chat` and `complete` against the server at `url` (with or without its `/v1`)."""

    def __init__(self, url: str, model: str, *, retries: int, backoff_s: float, timeout_s: float,
                 api_key_env: str, count_tokens: Callable[[str], int]):
        self.url, self.model = url, model
        self.retries, self.backoff_s, self.timeout_s = max(0, retries), backoff_s, timeout_s
        self.api_key_env, self.count_tokens = api_key_env, count_tokens

    def endpoint(self, path: str = "chat/completions") -> str:
        """The full URL of `path` below the server's `/v1`."""
        base = _base(self.url)
        return base + (f"/{path}" if base.endswith("/v1") else f"/v1/{path}")

    def post(self, body: dict, path: str = "chat/completions") -> dict:
        """POST `body`, retrying connection failures, 408, 429 and 5xx with exponential backoff.

        Still failing after the last retry is a `ServerDown`; any other refusal is an MlxlabError at once.
        """
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        endpoint = self.endpoint(path)
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(endpoint, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                last = f"HTTP {exc.code}: {detail}"
                if exc.code not in (408, 429) and exc.code < 500:
                    hint = (f"set {self.api_key_env} to the server's API key" if exc.code in (401, 403)
                            else "check --teacher (the model name the server expects) and --teacher-url")
                    raise MlxlabError(f"teacher endpoint {endpoint} refused the request: {last}",
                                      hint=hint) from None
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except json.JSONDecodeError as exc:
                last = f"the reply is not JSON ({exc})"
        raise ServerDown(f"teacher endpoint {endpoint} failed after {self.retries + 1} attempts: {last}",
                          hint="start the server (e.g. `python -m llama_cpp.server --model M.gguf`) "
                               "or fix --teacher-url")

    def chat(self, messages: list[dict], temperature: float, top_p: float, max_tokens: int,
             seed: int) -> tuple[Completion, int]:
        """(one chat completion, the prompt tokens the server counted)."""
        body = {"model": self.model, "messages": messages, "temperature": temperature, "top_p": top_p,
                "max_tokens": max_tokens, "seed": seed, "n": 1}
        reply = self.post(body)
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
            finish = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError, AttributeError):
            return Completion("", 0, "error"), 0
        usage = reply.get("usage") or {}
        tokens = int(usage.get("completion_tokens") or self.count_tokens(text))
        return (Completion(text, tokens, "length" if finish == "length" else "stop"),
                int(usage.get("prompt_tokens") or 0))

    def complete(self, text: str, stop: tuple[str, ...], temperature: float, top_p: float, max_tokens: int,
                 seed: int) -> tuple[Completion, int]:
        """(one raw-text continuation cut before the first stop string, the prompt tokens counted)."""
        body = {"model": self.model, "prompt": text, "temperature": temperature, "top_p": top_p,
                "max_tokens": max_tokens, "seed": seed, "n": 1}
        if stop:
            body["stop"] = list(stop)
        reply = self.post(body, path="completions")
        try:
            choice = reply["choices"][0]
            value = choice.get("text") or ""
            finish = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError, AttributeError):
            return Completion("", 0, "error"), 0
        usage = reply.get("usage") or {}
        tokens = int(usage.get("completion_tokens") or self.count_tokens(value))
        return (Completion(until_stop(value, stop), tokens, "length" if finish == "length" else "stop"),
                int(usage.get("prompt_tokens") or 0))


class Fleet:
    """Requests spread over servers of one model, N in flight per server, results in unit order.

    A server whose request still fails after all its retries (`ServerDown`) is marked down, and its unanswered
    requests go to the servers still up; only when every server is down is the call an error. A down server
    stays down for later calls while others are up (a dead host would cost every call its timeouts again); a
    call that finds every server down tries them all afresh. Any other refusal (400, 401, ...) or error stops
    the call at once. Each request carries its own seed and results keep the order of
    the units, so the data is what a single server of the same model gives.
    """

    def __init__(self, clients: list[OpenAIClient]):
        self.clients = clients
        self.answered = [0] * len(clients)
        self.down: list[ServerDown | None] = [None] * len(clients)   # a down server's last error

    def status(self) -> list[dict[str, Any]]:
        """Per server: its URL, the requests it answered, whether it is down (and then its last error)."""
        return [{"url": c.url, "answered": n, "down": e is not None, **({"error": e.message} if e else {})}
                for c, n, e in zip(self.clients, self.answered, self.down)]

    def _all_down(self) -> MlxlabError:
        if len(self.clients) == 1:
            return self.down[0]         # the single-server error, word for word
        lines = "\n  ".join(f"{c.url}: {e.message}" for c, e in zip(self.clients, self.down))
        return MlxlabError(f"all {len(self.clients)} teacher servers are down:\n  {lines}",
                           hint="start them (e.g. `python -m llama_cpp.server --model M.gguf`) or fix --teacher-url")

    def run(self, units: list, send: Callable[[OpenAIClient, Any], Any], concurrency: int) -> list:
        """`send(client, unit)` for every unit, `concurrency` at a time on each server still up; the results in
        the order of `units`."""
        live = [s for s in range(len(self.clients)) if self.down[s] is None]
        if not live:                        # the alternative is a certain failure: give them all another chance
            self.down = [None] * len(self.clients)
            live = list(range(len(self.clients)))
        results: list = [None] * len(units)
        answered = [False] * len(units)
        pending = deque(range(len(units)))
        cond = threading.Condition()
        state: dict[str, Any] = {"in_flight": 0, "fatal": None}

        def worker(s: int) -> None:
            while True:
                with cond:
                    # nothing queued but requests in flight: one may come back from a server going down
                    while (not pending and state["in_flight"] and self.down[s] is None
                           and state["fatal"] is None):
                        cond.wait()
                    if not pending or self.down[s] is not None or state["fatal"] is not None:
                        return
                    i = pending.popleft()
                    state["in_flight"] += 1
                try:
                    value = send(self.clients[s], units[i])
                except ServerDown as exc:
                    with cond:
                        self.down[s] = exc
                        pending.appendleft(i)
                        state["in_flight"] -= 1
                        cond.notify_all()
                    return
                except Exception as exc:   # a refusal or a bug: stop every server's workers
                    with cond:
                        state["fatal"] = state["fatal"] or exc
                        state["in_flight"] -= 1
                        cond.notify_all()
                    return
                with cond:
                    results[i], answered[i] = value, True
                    self.answered[s] += 1
                    state["in_flight"] -= 1
                    cond.notify_all()

        threads = [threading.Thread(target=worker, args=(s,), daemon=True, name=f"teacher-{s}-{k}")
                   for s in live for k in range(min(max(1, concurrency), len(units)))]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:               # Ctrl-C: let the workers stop after their current request
            with cond:
                state["fatal"] = state["fatal"] or MlxlabError("interrupted")
                cond.notify_all()
            raise
        if state["fatal"] is not None:
            raise state["fatal"]
        if not all(answered):
            raise self._all_down()
        return results


class OpenAIEngine(Engine):
    """The openai backend: requests to a fleet of servers, `concurrency` in flight per server."""

    backend = "openai"

    def __init__(self, urls: list[str], model_ref, stats: GenerationStats, *, retries: int, backoff_s: float,
                 timeout_s: float, api_key_env: str, **settings):
        super().__init__(stats, **settings)
        self._lock = threading.Lock()
        self.fleet = Fleet([OpenAIClient(u, str(model_ref or "default"), retries=retries, backoff_s=backoff_s,
                                         timeout_s=timeout_s, api_key_env=api_key_env,
                                         count_tokens=self.count_tokens) for u in urls])

    def generate(self, prompts, jobs, temperature, top_p, max_tokens, progress) -> list[Completion]:
        return self._requests(jobs, lambda client, job: client.chat(prompts[job[0]], temperature, top_p, max_tokens,
                                                                    job[2]), progress)

    def complete(self, texts, keys, stop, temperature, top_p, max_tokens, progress) -> list[Completion]:
        return self._requests(list(range(len(texts))), lambda client, i: client.complete(
            texts[i], stop, temperature, top_p, max_tokens, keys[i]), progress)

    def servers(self) -> list[dict]:
        return self.fleet.status()

    def _requests(self, units: list, send, progress) -> list[Completion]:
        """`send(client, unit)` for each unit across the fleet (`concurrency` in flight per server), in unit
        order; the stats counted under a lock."""
        def one(client, unit):
            completion, prompt_tokens = send(client, unit)
            with self._lock:
                self.stats.prompt_tokens += prompt_tokens
                self.stats.generated_tokens += completion.tokens
            if progress:
                progress(1, completion.tokens)
            return completion

        return self.fleet.run(units, one, self.concurrency)
