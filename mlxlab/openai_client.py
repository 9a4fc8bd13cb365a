"""Requests to one OpenAI-compatible server (llama.cpp, mlx_lm.server, vLLM, Ollama): the teacher's openai backend.

A request is retried on connection failures, 408, 429 and 5xx, with exponential backoff; any other refusal is
an MlxlabError at once. The API key comes from an environment variable, never from a flag or a file.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from mlxlab.errors import MlxlabError
from mlxlab.teacher import Completion, until_stop


class OpenAIClient:
    """`chat` and `complete` against the server at `url` (with or without its `/v1`)."""

    def __init__(self, url: str, model: str, *, retries: int, backoff_s: float, timeout_s: float,
                 api_key_env: str, count_tokens: Callable[[str], int]):
        self.url, self.model = url, model
        self.retries, self.backoff_s, self.timeout_s = max(0, retries), backoff_s, timeout_s
        self.api_key_env, self.count_tokens = api_key_env, count_tokens

    def endpoint(self, path: str = "chat/completions") -> str:
        """The full URL of `path` below the server's `/v1`."""
        base = self.url.rstrip("/")
        for known in ("/chat/completions", "/completions"):
            if base.endswith(known):
                base = base[:-len(known)]
        return base + (f"/{path}" if base.endswith("/v1") else f"/v1/{path}")

    def post(self, body: dict, path: str = "chat/completions") -> dict:
        """POST `body`, retrying connection failures, 408, 429 and 5xx with exponential backoff."""
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
        raise MlxlabError(f"teacher endpoint {endpoint} failed after {self.retries + 1} attempts: {last}",
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
