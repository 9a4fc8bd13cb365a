"""Terminal chat with any OpenAI-compatible server (or a model served for the occasion), streamed token by token.

`mlxlab chat MODEL` serves MODEL (see `mlxlab.serve`) and opens a REPL; `--url URL` talks to a running server;
`-q "question"` answers once and exits. REPL commands: /clear /save FILE /system TEXT /temp T /quit.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from mlxlab.errors import MlxlabError

HELP = ("/clear (forget the conversation)  /save FILE (write it as JSONL messages)  /system TEXT (set the system "
        "prompt)  /temp T (sampling temperature)  /quit")


def stream_chat(url: str, messages: list[dict], *, temperature: float = 0.7, max_tokens: int = 512,
                api_key: str | None = None, model: str | None = None, timeout: float = 300.0) -> Iterator[str]:
    """Yield the assistant's reply piece by piece from `POST {url}/chat/completions` with `stream: true`."""
    body = {"messages": messages, "temperature": temperature, "max_tokens": max_tokens, "stream": True,
            "model": model or "default"}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"{url.rstrip('/')}/chat/completions", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        hint = "pass the server's key with --api-key" if exc.code in (401, 403) else None
        raise MlxlabError(f"the server at {url} answered HTTP {exc.code}: {detail}", hint=hint) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise MlxlabError(f"cannot reach a server at {url}: {getattr(exc, 'reason', exc)}",
                          hint="start one with `mlxlab serve MODEL`, or pass a model instead of --url") from exc
    with response:
        for raw in response:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            choices = json.loads(data).get("choices") or [{}]
            piece = (choices[0].get("delta") or {}).get("content")
            if piece:
                yield piece


def ask(url: str, question: str, *, system: str | None = None, history: list[dict] | None = None,
        on_token: Callable[[str], None] | None = None, **options) -> str:
    """One answer to `question` (after `system` and `history`); `on_token` sees each streamed piece."""
    messages = ([{"role": "system", "content": system}] if system else []) + list(history or [])
    messages.append({"role": "user", "content": question})
    parts = []
    for piece in stream_chat(url, messages, **options):
        parts.append(piece)
        if on_token:
            on_token(piece)
    return "".join(parts)


def save_conversation(path: str | Path, system: str | None, history: list[dict]) -> Path:
    """Write the conversation as one chat-JSONL line ({"messages": [...]}), the format training reads."""
    path = Path(path).expanduser()
    messages = ([{"role": "system", "content": system}] if system else []) + history
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    return path


def repl(url: str, *, system: str | None = None, temperature: float = 0.7, max_tokens: int = 512,
         api_key: str | None = None, console=None, read: Callable[[str], str] | None = None) -> list[dict]:
    """The interactive chat loop; returns the conversation when the user quits."""
    from rich.console import Console

    console = console or Console()
    read = read or (lambda prompt: console.input(prompt))
    history: list[dict] = []
    console.print(f"[dim]chatting with {url} - {HELP}[/dim]")
    while True:
        try:
            line = read("[bold green]you>[/bold green] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return history
        if not line:
            continue
        command, _, arg = line.partition(" ")
        if command in ("/quit", "/exit", "/q"):
            return history
        if command == "/clear":
            history.clear()
            console.print("[dim]conversation cleared[/dim]")
        elif command == "/save":
            console.print(f"[dim]saved to {save_conversation(arg.strip() or 'chat.jsonl', system, history)}[/dim]")
        elif command == "/system":
            system = arg.strip() or None
            console.print(f"[dim]system prompt {'set' if system else 'removed'}[/dim]")
        elif command == "/temp":
            try:
                temperature = float(arg)
            except ValueError:
                console.print("[red]usage: /temp 0.7[/red]")
                continue
            console.print(f"[dim]temperature {temperature}[/dim]")
        elif command.startswith("/"):
            console.print(f"[red]unknown command {command}[/red] - {HELP}")
        else:
            console.print("[bold blue]model>[/bold blue] ", end="")
            try:
                answer = ask(url, line, system=system, history=history, temperature=temperature,
                             max_tokens=max_tokens, api_key=api_key,
                             on_token=lambda piece: console.print(piece, end="", markup=False, highlight=False))
            except KeyboardInterrupt:
                console.print("[dim] (interrupted)[/dim]")
                continue
            console.print()
            history += [{"role": "user", "content": line}, {"role": "assistant", "content": answer}]


def chat(model: str | Path | None = None, *, url: str | None = None, question: str | None = None,
         system: str | None = None, temperature: float = 0.7, max_tokens: int = 512, api_key: str | None = None,
         on_token: Callable[[str], None] | None = None) -> str | list[dict]:
    """Chat with `url`, or with `model` served for the occasion: one answer for `question`, else the REPL."""
    if url is None:
        from mlxlab.serve import serve

        with serve(model if model is not None else "smollm2", port=0, api_key=api_key) as served:
            return chat(url=served, question=question, system=system, temperature=temperature,
                        max_tokens=max_tokens, api_key=api_key, on_token=on_token)
    if question is not None:
        return ask(url, question, system=system, temperature=temperature, max_tokens=max_tokens, api_key=api_key,
                   on_token=on_token)
    return repl(url, system=system, temperature=temperature, max_tokens=max_tokens, api_key=api_key)
