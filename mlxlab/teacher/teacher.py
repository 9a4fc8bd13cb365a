"""Text generation for SDG and evaluation: one `Teacher.generate` over chat messages, three backends.

- `mlx`: in-process through mlx-lm's continuous batching (`mlxlab.teacher.mlx_batch`). The token prefix
  that a call's prompts share (system prompt + in-context examples) is prefilled once and its KV cache is
  handed to every sequence. Each completion gets its own sampler with its own PRNG key, derived from the
  seed and the prompt, so a completion does not depend on which other prompts share its batch.
- `openai`: any `/v1/chat/completions` server (llama.cpp, mlx_lm.server, vLLM, Ollama), or a fleet of them,
  N requests in flight per server on threads (`mlxlab.teacher.openai_client`: retries with backoff, a server that
  keeps failing is dropped and the others take its requests, API key from an environment variable).
- `llama-cpp`: a GGUF in-process, batched through llama.cpp's own batch API (`mlxlab.teacher.llama_batch`): the
  shared prefix is evaluated once and its KV cells shared, all sequences decode together, finished ones
  free their slots for queued ones. On a CPU this is the fastest teacher (llama.cpp's CPU kernels beat
  MLX's CPU backend), so `auto` picks it there; see `choose_backend`.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from mlxlab.errors import MlxlabError, UsageError
from mlxlab.teacher.completions import (Completion, Engine, GenerationStats, Messages, Progress, completion_seed,
                                       shared_prefix_length)

BACKENDS = ("mlx", "openai", "llama-cpp")
API_KEY_ENV = "MLXLAB_TEACHER_API_KEY"


def default_batch_size() -> int:
    """Sequences decoded together on MLX: 32, or 16 on machines with less than 16 GB of memory.

    From total, not free, memory: the batch decides how SDG groups its work units, and a resumed run
    must group them as the first run did.
    """
    try:
        total_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        total_gb = 16.0
    return 16 if total_gb < 16 else 32


def choose_backend(url: str | list[str] | None = None) -> tuple[str, str]:
    """(backend, why) for `teacher_backend: auto`: a documented rule, and llama.cpp's self-test on a CPU.

    A URL → openai. Metal or CUDA → mlx (MLX's GPU kernels, 4-bit in unified memory). A CPU → llama-cpp
    when llama-cpp-python is installed and passes its self-test on this CPU (`mlxlab.llamacpp`): on this
    project's 2-core x86 reference machine its batched decoding runs SmolLM2 several times faster than MLX's
    CPU backend (benchmarks/sdg_throughput.py).
    """
    if url:
        return "openai", "a teacher URL was given"
    from mlxlab.device import current_device

    device = current_device()
    if device != "cpu":
        return "mlx", f"MLX runs on the {device}"
    if importlib.util.find_spec("llama_cpp") is None:
        return "mlx", "a CPU, but llama-cpp-python is not installed"
    from mlxlab.llamacpp import verdict

    found = verdict()
    if not found.usable:
        return "mlx", f"a CPU, but llama.cpp cannot run here: it {found.reason}"
    return "llama-cpp", "a CPU: llama.cpp's batched CPU kernels are the fastest teacher there"


def _engine_setting(name: str, doc: str) -> property:
    """A Teacher attribute that reads and sets the engine's."""
    return property(lambda self: getattr(self.engine, name), lambda self, value: setattr(self.engine, name, value),
                    doc=doc)


class Teacher:
    """A text generator over chat messages; see the module docstring for the backends.

    The backend is chosen once, here: an `Engine` (`mlx_batch.MlxEngine`, `llama_batch.LlamaEngine`,
    `openai_client.OpenAIEngine`) does the work, and what it cannot do is its clear error.
    """

    def __init__(self, model: str | Path | None = None, *, backend: str = "mlx", url: str | list[str] | None = None,
                 batch_size: int | None = None, prefix_cache: bool = True, dequantize_on_load: str | None = None,
                 concurrency: int = 4, retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 300.0,
                 api_key_env: str = API_KEY_ENV, n_ctx: int = 4096, requantize: bool = True):
        self.backend_reason = f"{backend} (asked for)"
        if backend == "auto":
            backend, why = choose_backend(url)
            self.backend_reason = f"{backend} (auto: {why})"
        if backend not in BACKENDS:
            raise MlxlabError(f"unknown teacher backend {backend!r}",
                              hint="use one of: auto, " + ", ".join(BACKENDS))
        self.urls: list[str] = []
        if backend == "openai":
            from mlxlab.teacher.openai_client import server_urls

            self.urls = server_urls(url)
            if not self.urls:
                raise MlxlabError("the openai teacher backend needs a URL",
                                  hint="pass --teacher-url http://127.0.0.1:8080 (any /v1/chat/completions server; "
                                       "several: comma-separated)")
            url = ",".join(self.urls)
        self.backend = backend
        self.model_ref = model
        self.url = url                  # the servers, comma-separated (openai backend)
        self.stats = GenerationStats()
        self.gguf_note = None
        shared = {"batch_size": batch_size or default_batch_size(), "prefix_cache": prefix_cache,
                  "concurrency": max(1, concurrency)}
        if backend == "mlx":
            from mlxlab.teacher.mlx_batch import MlxEngine

            self.engine: Engine = MlxEngine(model, self.stats, dequantize_on_load=dequantize_on_load, **shared)
        elif backend == "llama-cpp":
            from mlxlab.teacher.llama_batch import LlamaEngine

            self.engine = LlamaEngine(model, self.stats, n_ctx=n_ctx, requantize=requantize, **shared)
            self.gguf_note = self.engine.gguf_note
        else:
            from mlxlab.teacher.openai_client import OpenAIEngine

            self.engine = OpenAIEngine(self.urls, model, self.stats, retries=retries, backoff_s=backoff_s,
                                       timeout_s=timeout_s, api_key_env=api_key_env, **shared)

    # the engine's settings; benchmarks and tests change them between calls
    batch_size = _engine_setting("batch_size", "Sequences decoded together (and the size of SDG's unit groups).")
    prefix_cache = _engine_setting("prefix_cache", "Whether a prompt prefix is prefilled once for the prompts "
                                                   "that share it.")

    @property
    def concurrency(self) -> int:
        """Requests in flight per server (openai backend)."""
        return self.engine.concurrency

    @property
    def tokenizer(self):
        """The mlx-lm tokenizer wrapper (mlx backend), else None."""
        return self.engine.tokenizer

    @property
    def servers(self) -> list[dict] | None:
        """openai backend: per server, its URL, the requests it answered and whether it is down; else None."""
        return self.engine.servers()

    @property
    def model(self):
        """The in-process MLX model (mlx backend), else None."""
        return self.engine.model

    def weights_changed(self) -> None:
        """Say that the MLX model's weights changed in place (adapters swapped): prefilled prefixes are dropped,
        since they hold keys and values of the old weights."""
        self.engine.weights_changed()

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the teacher's tokenizer (about 4 characters a token for remote teachers)."""
        return self.engine.count_tokens(text)

    def close(self) -> None:
        """Free the model (a later `generate` on an in-process backend is an error); closing twice does nothing."""
        self.engine.close()

    def generate(self, prompts: list[Messages], *, n: int = 1, temperature: float = 0.7, top_p: float = 0.95,
                 max_tokens: int = 256, seed: int = 0, seeds: list[int] | None = None,
                 progress: Progress | None = None) -> list[list[Completion]]:
        """`n` completions for each chat prompt, in order. `seeds` (one per prompt) overrides `seed`."""
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"seeds has {len(seeds)} entries for {len(prompts)} prompts")
        if not prompts or n < 1:
            return [[] for _ in prompts]
        bases = seeds if seeds is not None else [seed] * len(prompts)
        jobs = [(i, j, completion_seed(bases[i], p, j)) for i, p in enumerate(prompts) for j in range(n)]
        start = time.perf_counter()
        flat = self.engine.generate(prompts, jobs, temperature, top_p, max_tokens, progress)
        self.stats.seconds += time.perf_counter() - start
        self.stats.completions += len(flat)
        out: list[list[Completion]] = [[] for _ in prompts]
        for (i, _j, _s), completion in zip(jobs, flat):
            out[i].append(completion)
        return out

    def choose(self, prompts: list[Messages], choices: list[str], *, prefix: str = "",
               progress: Progress | None = None) -> list[str] | None:
        """The most likely of `choices` right after each prompt's reply starts with `prefix` (one forward pass).

        A constrained verdict for judges: small teachers rarely write a parsable score, but their
        next-token distribution still ranks the choices. Only the mlx backend can do this; others get None.
        """
        if not choices:
            return None
        return self.engine.choose(prompts, choices, prefix, progress)

    def complete(self, texts: list[str], *, stop: list[str] | tuple[str, ...] = (), temperature: float = 0.7,
                 top_p: float = 0.95, max_tokens: int = 256, seed: int = 0, seeds: list[int] | None = None,
                 progress: Progress | None = None) -> list[Completion]:
        """One continuation of each raw text (no chat template), cut before the first of the `stop` strings.

        Small models continue a pattern (`Q: … A: …` lines) far more reliably than they follow instructions;
        this is the call the few-shot SDG style uses. Seeding works as in `generate`.
        """
        if seeds is not None and len(seeds) != len(texts):
            raise ValueError(f"seeds has {len(seeds)} entries for {len(texts)} texts")
        if not texts:
            return []
        stop = tuple(s for s in stop if s)
        keys = [completion_seed(seeds[i] if seeds is not None else seed, [{"text": t}]) for i, t in enumerate(texts)]
        start = time.perf_counter()
        out = self.engine.complete(texts, keys, stop, temperature, top_p, max_tokens, progress)
        self.stats.seconds += time.perf_counter() - start
        self.stats.completions += len(out)
        return out

    def can_score(self) -> bool:
        """True when `loglikelihood` works on this backend (the in-process ones: mlx and llama-cpp)."""
        return self.engine.can_score()

    def num_parameters(self) -> int | None:
        """Parameters of an in-process model (4-bit weights counted unpacked), else None (unknown)."""
        return self.engine.num_parameters()

    def loglikelihood(self, pairs: list[tuple[str, str]], *, batch_size: int = 8,
                      progress: Progress | None = None) -> list[tuple[float, int]]:
        """(sum of log p(continuation | prefix), continuation tokens) for each raw-text (prefix, continuation).

        The likelihood scorer of SDG is built on this: it needs no written verdict, so it works with
        teachers far too small to judge. One forward pass per pair, batched by length.
        """
        if not self.engine.can_score():
            raise self.engine.not_scoring()
        encoded = []
        for prefix, continuation in pairs:
            head = self.engine.tokens(prefix) if prefix else []
            full = self.engine.tokens(prefix + continuation)
            # a merge across the boundary moves it left: count every token after the common part
            boundary = min(shared_prefix_length([head, full]), len(full) - 1) if head else 0
            if not head:    # no prefix: the first token has no prediction; score from the second
                boundary = 1 if len(full) > 1 else 0
            encoded.append((full, max(boundary, 1)))
        return self.engine.score(encoded, batch_size, progress)


def make_teacher(teacher: Teacher | str | Path | None = None, *, url: str | list[str] | None = None,
                 backend: str | None = None, **options) -> Teacher:
    """A Teacher from a reference: an instance as is; a URL → openai; else `backend` (default mlx; auto chooses).

    A URL with a backend other than openai or auto is a usage error: the two ask for different teachers.
    """
    if isinstance(teacher, Teacher):
        return teacher
    if url:
        if backend not in (None, "auto", "openai"):
            raise UsageError(f"--teacher-url asks for a server, --teacher-backend {backend} for an in-process teacher",
                             hint="drop one of them: a URL already means the openai backend")
        return Teacher(teacher, backend="openai", url=url, **options)
    return Teacher(teacher, backend=backend or "mlx", **options)
