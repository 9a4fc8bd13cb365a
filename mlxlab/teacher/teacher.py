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

import dataclasses
import importlib.util
import os
import threading
import time
from pathlib import Path

from mlxlab.errors import MlxlabError, UsageError
from mlxlab.teacher.completions import (Completion, GenerationStats, Messages, Progress, completion_seed,
                                       plan_prefixes, shared_prefix_length)

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


class Teacher:
    """A text generator over chat messages; see the module docstring for the backends."""

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
        self.batch_size = batch_size or default_batch_size()
        self.prefix_cache = prefix_cache
        self.concurrency = max(1, concurrency)
        self.stats = GenerationStats()
        self._model = self._tokenizer = self._llama = self._engine = self._chat = None
        self.gguf_note = None
        self._prefixes: dict[tuple[int, ...], list] = {}
        self._lock = threading.Lock()
        self._fleet = None
        if backend == "mlx":
            self._load_mlx(dequantize_on_load)
        elif backend == "llama-cpp":
            self._load_llama(n_ctx, requantize)
        else:
            from mlxlab.teacher.openai_client import Fleet, OpenAIClient

            self._fleet = Fleet([OpenAIClient(u, str(model or "default"), retries=retries, backoff_s=backoff_s,
                                              timeout_s=timeout_s, api_key_env=api_key_env,
                                              count_tokens=self.count_tokens) for u in self.urls])

    # ------------------------------------------------------------------------------------------ loading

    def _load_mlx(self, dequantize_on_load: str | None) -> None:
        from mlxlab.models import load_model

        # The device policy expands a small 4-bit teacher to float32 on the CPU: MLX's CPU 4-bit matmul
        # costs the same per row at any batch size (measured: 0.37 s per token for SmolLM2 at batch 1,
        # 2.8 s at batch 8), so batching gains nothing there, while float32 goes through BLAS (0.065 s
        # and 0.107 s). On Metal the 4-bit kernels win and the model stays 4-bit.
        self._model, self._tokenizer = load_model(self.model_ref, dequantize_on_load=dequantize_on_load)

    def _load_llama(self, n_ctx: int, requantize: bool) -> None:
        from mlxlab.device import llama_threads
        from mlxlab.teacher.llama_batch import LlamaBatch, teacher_gguf

        path, self.gguf_note = teacher_gguf(self.model_ref, requantize=requantize)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from mlxlab.llamacpp import load_llama

        threads = llama_threads()
        # the Llama object gives the model, its tokenizer and metadata (and serves chat prompts of a GGUF
        # without a chat template); the batched engine decodes in a context of its own
        self._llama = load_llama(path, purpose="the llama.cpp teacher", n_ctx=n_ctx, n_threads=threads,
                                 n_threads_batch=threads, verbose=False)
        template = self._llama.metadata.get("tokenizer.chat_template")
        if template:
            token = lambda key: (self._llama.detokenize([int(self._llama.metadata[key])], special=True).decode(
                "utf-8", "replace") if key in self._llama.metadata else "")
            self._chat = Jinja2ChatFormatter(template, eos_token=token("tokenizer.ggml.eos_token_id"),
                                             bos_token=token("tokenizer.ggml.bos_token_id"))
        self._engine = LlamaBatch(self._llama, slots=self.batch_size, n_ctx=n_ctx,
                                  threads=llama_threads(batched=True))

    @property
    def tokenizer(self):
        """The mlx-lm tokenizer wrapper (mlx backend), else None."""
        return self._tokenizer

    @property
    def servers(self) -> list[dict] | None:
        """openai backend: per server, its URL, the requests it answered and whether it is down; else None."""
        return self._fleet.status() if self._fleet is not None else None

    @property
    def model(self):
        """The in-process MLX model (mlx backend), else None."""
        return self._model

    def weights_changed(self) -> None:
        """Say that the MLX model's weights changed in place (adapters swapped): prefilled prefixes are dropped,
        since they hold keys and values of the old weights."""
        self._prefixes.clear()

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the teacher's tokenizer (about 4 characters a token for remote teachers)."""
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False))
        if self._llama is not None:
            return len(self._llama.tokenize(text.encode(), add_bos=False, special=False))
        return max(1, len(text) // 4)

    def close(self) -> None:
        """Free the model (a later `generate` on an in-process backend is an error); closing twice does nothing."""
        if self._engine is not None:
            self._engine.close()            # the batched context first: it was made from the Llama's model
        if self._llama is not None:
            self._llama.close()
        self._model = self._tokenizer = self._llama = self._engine = self._chat = None
        self._prefixes.clear()

    # ------------------------------------------------------------------------------------------ generate

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
        if self.backend == "mlx":
            flat = self._generate_mlx(prompts, jobs, temperature, top_p, max_tokens, progress)
        elif self.backend == "openai":
            flat = self._requests(jobs, lambda client, job: client.chat(prompts[job[0]], temperature, top_p,
                                                                        max_tokens, job[2]), progress)
        else:
            flat = self._generate_llama(prompts, jobs, temperature, top_p, max_tokens, progress)
        self.stats.seconds += time.perf_counter() - start
        self.stats.completions += len(flat)
        out: list[list[Completion]] = [[] for _ in prompts]
        for (i, _j, _s), completion in zip(jobs, flat):
            out[i].append(completion)
        return out

    # mlx ------------------------------------------------------------------------------------------------

    def _encode(self, messages: Messages) -> list[int]:
        tokens = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(tokens["input_ids"] if isinstance(tokens, dict) else tokens)

    def _generate_mlx(self, prompts, jobs, temperature, top_p, max_tokens, progress) -> list[Completion]:
        if self._model is None:
            raise MlxlabError("this teacher was closed; make a new Teacher")
        from mlxlab.teacher.mlx_batch import greedy_sampler, seeded_sampler

        encoded = [self._encode(p) for p in prompts]
        greedy = greedy_sampler()
        samplers = [greedy if temperature <= 0 else seeded_sampler(temperature, top_p, s) for _i, _j, s in jobs]
        return self._run_batches([encoded[i] for i, _j, _s in jobs], samplers, max_tokens, progress)

    def choose(self, prompts: list[Messages], choices: list[str], *, prefix: str = "",
               progress: Progress | None = None) -> list[str] | None:
        """The most likely of `choices` right after each prompt's reply starts with `prefix` (one forward pass).

        A constrained verdict for judges: small teachers rarely write a parsable score, but their
        next-token distribution still ranks the choices. Only the mlx backend can do this; others get None.
        """
        if self.backend != "mlx" or self._tokenizer is None or not choices:
            return None
        encode = lambda text: self._tokenizer.encode(text, add_special_tokens=False)
        head = encode(prefix)
        firsts = []
        for choice in choices:
            tokens = encode(prefix + choice)
            if tokens[:len(head)] != head or len(tokens) == len(head):
                return None                 # the prefix and the choice merge into other tokens
            firsts.append(tokens[len(head)])
        if len(set(firsts)) != len(firsts):
            return None                     # choices that share a first token cannot be told apart
        import mlx.core as mx

        ids = mx.array(firsts)
        pick = lambda logprobs: ids[mx.argmax(logprobs[:, ids], axis=-1)]
        sequences = [self._encode(p) + head for p in prompts]
        out = self._run_batches(sequences, [pick] * len(sequences), 1, progress)
        by_text = {self._tokenizer.decode([t]): c for t, c in zip(firsts, choices)}
        return [by_text.get(c.text) for c in out]

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
        if self.backend == "mlx":
            if self._model is None:
                raise MlxlabError("this teacher was closed; make a new Teacher")
            from mlxlab.teacher.mlx_batch import greedy_sampler, seeded_sampler

            encoded = [list(self._tokenizer.encode(t)) for t in texts]
            samplers = [greedy_sampler() if temperature <= 0 else seeded_sampler(temperature, top_p, k)
                        for k in keys]
            out = self._run_batches(encoded, samplers, max_tokens, progress, stop)
        elif self.backend == "openai":
            out = self._requests(list(range(len(texts))), lambda client, i: client.complete(
                texts[i], stop, temperature, top_p, max_tokens, keys[i]), progress)
        else:
            encoded = [self._llama_tokens(t, special=False) for t in texts]
            out = self._run_llama(encoded, keys, temperature, top_p, max_tokens, stop, progress)
        self.stats.seconds += time.perf_counter() - start
        self.stats.completions += len(out)
        return out

    def can_score(self) -> bool:
        """True when `loglikelihood` works on this backend (the in-process ones: mlx and llama-cpp)."""
        return self._model is not None or self._engine is not None

    def num_parameters(self) -> int | None:
        """Parameters of an in-process model (4-bit weights counted unpacked), else None (unknown)."""
        if self._engine is not None:
            import llama_cpp

            return int(llama_cpp.llama_model_n_params(self._llama.model))
        if self.backend != "mlx" or self._model is None:
            return None
        import mlx.core as mx
        from mlx.utils import tree_flatten

        total = 0
        for _name, module in self._model.named_modules():
            bits = getattr(module, "bits", None)
            for key, value in tree_flatten(module.parameters()):
                if "." in key:
                    continue                # a child module's parameter: counted with that module
                if key == "weight" and value.dtype == mx.uint32 and bits:
                    total += value.size * 32 // bits
                elif mx.issubdtype(value.dtype, mx.floating) and not (bits and key in ("scales", "biases")):
                    total += value.size
        return total

    def loglikelihood(self, pairs: list[tuple[str, str]], *, batch_size: int = 8,
                      progress: Progress | None = None) -> list[tuple[float, int]]:
        """(sum of log p(continuation | prefix), continuation tokens) for each raw-text (prefix, continuation).

        The likelihood scorer of SDG is built on this: it needs no written verdict, so it works with
        teachers far too small to judge. One forward pass per pair, batched by length.
        """
        if not self.can_score():
            raise MlxlabError(f"log-likelihood scoring needs an in-process teacher (mlx or llama-cpp), not "
                              f"{self.backend}", hint="use --scorer judge (or auto) with this teacher")
        encode = ((lambda text: self._llama_tokens(text, special=False)) if self._engine is not None
                  else (lambda text: list(self._tokenizer.encode(text))))
        encoded = []
        for prefix, continuation in pairs:
            head = encode(prefix) if prefix else []
            full = encode(prefix + continuation)
            # a merge across the boundary moves it left: count every token after the common part
            boundary = min(shared_prefix_length([head, full]), len(full) - 1) if head else 0
            if not head:    # no prefix: the first token has no prediction; score from the second
                boundary = 1 if len(full) > 1 else 0
            encoded.append((full, max(boundary, 1)))
        if self._engine is not None:
            before = dataclasses.replace(self._engine.counters)
            out = self._engine.loglikelihood(encoded)
            self._count_engine(before)
            self.stats.prompt_tokens += sum(len(full) for full, _b in encoded)
            if progress:
                progress(len(pairs), 0)
            return out
        import mlx.core as mx
        import numpy as np

        out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: len(encoded[i][0]))
        for lo in range(0, len(order), batch_size):
            chunk = order[lo:lo + batch_size]
            width = max(len(encoded[i][0]) for i in chunk)
            array = np.zeros((len(chunk), width), np.int32)
            for r, i in enumerate(chunk):
                array[r, :len(encoded[i][0])] = encoded[i][0]
            tokens = mx.array(array)
            logits = self._model(tokens[:, :-1]).astype(mx.float32)
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            picked = mx.take_along_axis(logprobs, tokens[:, 1:, None], axis=-1)[..., 0]
            picked = np.array(picked)
            for r, i in enumerate(chunk):
                full, boundary = encoded[i]
                values = picked[r, boundary - 1:len(full) - 1]
                out[i] = (float(values.sum()), int(values.size))
            self.stats.prompt_tokens += int(array.size)
            if progress:
                progress(len(chunk), 0)
        return out

    def _run_batches(self, sequences: list[list[int]], samplers: list, max_tokens: int,
                     progress: Progress | None, stop: tuple[str, ...] = ()) -> list[Completion]:
        """Token sequences through MLX's continuous batching (`mlxlab.teacher.mlx_batch.run_batches`)."""
        from mlxlab.teacher.mlx_batch import run_batches

        if self._model is None:
            raise MlxlabError("this teacher was closed; make a new Teacher")
        return run_batches(self._model, self._tokenizer, self._prefixes, sequences, samplers, max_tokens,
                           batch_size=self.batch_size, share_prefix=self.prefix_cache, stats=self.stats,
                           progress=progress, stop=stop)

    # openai ---------------------------------------------------------------------------------------------

    def _requests(self, units: list, send, progress: Progress | None) -> list[Completion]:
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

        return self._fleet.run(units, one, self.concurrency)

    # llama-cpp ------------------------------------------------------------------------------------------

    def _llama_tokens(self, text: str, *, special: bool, add_bos: bool = True) -> list[int]:
        if self._llama is None:
            raise MlxlabError("this teacher was closed; make a new Teacher")
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def _count_engine(self, before) -> None:
        """Add what the batched engine did since `before` (a copy of its counters) to the stats."""
        now = self._engine.counters
        self.stats.prefill_tokens += now.prefill_tokens - before.prefill_tokens
        self.stats.cached_prefix_tokens += now.shared_prefix_tokens - before.shared_prefix_tokens
        self.stats.prefill_seconds += now.prefill_seconds - before.prefill_seconds
        self.stats.decode_seconds += now.decode_seconds - before.decode_seconds

    def _run_llama(self, sequences: list[list[int]], seeds: list[int], temperature: float, top_p: float,
                   max_tokens: int, stop: tuple[str, ...], progress: Progress | None) -> list[Completion]:
        """Token sequences through the batched llama.cpp engine, sharing each group's prefix."""
        plan = plan_prefixes(sequences) if self.prefix_cache and len(sequences) > 1 else [0] * len(sequences)
        before = dataclasses.replace(self._engine.counters)
        started = time.perf_counter()
        first: list[float] = []

        def advance(done: int, tokens: int) -> None:
            if not first and tokens:
                first.append(time.perf_counter() - started)
            if progress:
                progress(done, tokens)

        results = self._engine.generate(sequences, plan, seeds, temperature=temperature, top_p=top_p,
                                        max_tokens=max_tokens, stop=stop, progress=advance)
        self._count_engine(before)
        self.stats.first_token_seconds.extend(first)
        self.stats.prompt_tokens += sum(len(s) for s in sequences)
        self.stats.generated_tokens += sum(tokens for _text, tokens, _finish in results)
        return [Completion(text, tokens, finish) for text, tokens, finish in results]

    def _generate_llama(self, prompts, jobs, temperature, top_p, max_tokens, progress) -> list[Completion]:
        if self._llama is None:
            raise MlxlabError("this teacher was closed; make a new Teacher")
        if self._chat is not None:
            sequences = []
            for i, _j, _s in jobs:
                rendered = self._chat(messages=prompts[i])
                sequences.append(self._llama_tokens(rendered.prompt, special=True,
                                                    add_bos=not getattr(rendered, "added_special", False)))
            return self._run_llama(sequences, [s for _i, _j, s in jobs], temperature, top_p, max_tokens, (),
                                   progress)
        # no chat template in the GGUF: llama-cpp-python's own chat formats, one request at a time
        out = []
        for i, _j, s in jobs:
            reply = self._llama.create_chat_completion(messages=prompts[i], temperature=temperature, top_p=top_p,
                                                       max_tokens=max_tokens, seed=s)
            choice = reply["choices"][0]
            usage = reply.get("usage") or {}
            text = choice["message"].get("content") or ""
            tokens = int(usage.get("completion_tokens") or 0)
            self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.stats.generated_tokens += tokens
            out.append(Completion(text, tokens, "length" if choice.get("finish_reason") == "length" else "stop"))
            if progress:
                progress(1, tokens)
        return out


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
