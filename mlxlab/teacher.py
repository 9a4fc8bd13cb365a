"""Text generation for SDG and evaluation: one `Teacher.generate` over chat messages, three backends.

- `mlx` (default): in-process through mlx-lm's continuous batching (`BatchGenerator`). The token prefix
  that a call's prompts share (system prompt + in-context examples) is prefilled once and its KV cache is
  handed to every sequence. Each completion gets its own sampler with its own PRNG key, derived from the
  seed and the prompt, so a completion does not depend on which other prompts share its batch.
- `openai`: any `/v1/chat/completions` server (llama.cpp, mlx_lm.server, vLLM, Ollama), N requests in
  flight on threads, retries with exponential backoff, API key from an environment variable.
- `llama-cpp`: a GGUF in-process, batched through llama.cpp's own batch API (`mlxlab.llama_batch`): the
  shared prefix is evaluated once and its KV cells shared, all sequences decode together, finished ones
  free their slots for queued ones. On a CPU this is the fastest teacher (llama.cpp's CPU kernels beat
  MLX's CPU backend), so `auto` picks it there; see `choose_backend`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlxlab.errors import MlxlabError, UsageError

BACKENDS = ("mlx", "openai", "llama-cpp")
# weight types llama.cpp multiplies as whole matrices on a CPU (tinyBLAS); others go row by row, and a batch
# gains little: measured on SmolLM2, Q4_1 prefills at 180 tok/s, its Q8_0 re-encoding at 340
FAST_BATCH_TYPES = {"F32", "F16", "BF16", "Q8_0", "Q4_0"}
API_KEY_ENV = "MLXLAB_TEACHER_API_KEY"
MIN_SHARED_PREFIX = 16          # shorter shared prefixes are not worth a separate prefill
PREFIX_CACHE_BYTES = 512 * 2**20  # prefilled prefixes kept between calls, least recently used dropped first

Messages = list[dict]
Progress = Callable[[int, int], None]   # (finished completions, generated tokens) since the last call


@dataclass(frozen=True)
class Completion:
    """One generated answer: its text, how many tokens it took, and why it stopped."""
    text: str
    tokens: int
    finish_reason: str          # "stop" | "length" | "error"


@dataclass
class GenerationStats:
    """Counters of the teacher's work since it was made (or since `reset`)."""
    prompt_tokens: int = 0
    cached_prefix_tokens: int = 0   # prompt tokens served from a prefilled shared prefix
    prefill_tokens: int = 0         # prompt tokens the model evaluated (llama-cpp backend)
    generated_tokens: int = 0
    prefill_seconds: float = 0.0    # llama-cpp backend: time in calls that evaluate prompt tokens
    decode_seconds: float = 0.0     # llama-cpp backend: time in calls that only decode next tokens
    completions: int = 0
    seconds: float = 0.0
    first_token_seconds: list[float] = field(default_factory=list)  # per call: time to the first new token

    def reset(self) -> None:
        """Zero every counter."""
        self.__init__()


def completion_seed(seed: int, messages: Messages, index: int = 0) -> int:
    """A 31-bit seed for completion `index` of `messages`: depends on content, never on batch position."""
    text = json.dumps([seed, index, messages], sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest token prefix common to every sequence."""
    if not sequences:
        return 0
    first, length = sequences[0], min(len(s) for s in sequences)
    for seq in sequences[1:]:
        i = 0
        while i < length and seq[i] == first[i]:
            i += 1
        length = i
    return length


def plan_prefixes(sequences: list[list[int]], *, ratio: float = 0.5) -> list[int]:
    """For each sequence, the length of the prefix it shares with its group (0: none worth caching).

    Sequences are grouped in sorted order; one joins the current group while their common prefix keeps
    at least `ratio` of the group's prefix, so prompts built from the same seed example share the long
    prefix (system + examples) instead of only the short one every prompt has. Every sequence keeps at
    least one token of its own (BatchGenerator needs a non-empty prompt).
    """
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])
    lengths = [0] * len(sequences)
    groups: list[tuple[int, list[int]]] = []
    for i in order:
        if groups:
            length, members = groups[-1]
            common = shared_prefix_length([sequences[members[0]][:length], sequences[i]])
            if common >= MIN_SHARED_PREFIX and common >= ratio * length:
                groups[-1] = (common, [*members, i])
                continue
        groups.append((len(sequences[i]), [i]))
    for length, members in groups:
        if len(members) > 1:
            for i in members:
                lengths[i] = min(length, len(sequences[i]) - 1)
    return [n if n >= MIN_SHARED_PREFIX else 0 for n in lengths]


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str | None:
    """`text` up to the earliest of the `stop` strings, or None when none occurs."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(hits)] if hits else None


def until_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """`text` up to the earliest stop string (all of it when none occurs; "" when one starts it)."""
    cut = cut_at_stop(text, stop)
    return text if cut is None else cut


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


def choose_backend(url: str | None = None) -> tuple[str, str]:
    """(backend, why) for `teacher_backend: auto`: a documented rule, no probe.

    A URL → openai. Metal or CUDA → mlx (MLX's GPU kernels, 4-bit in unified memory). A CPU → llama-cpp
    when llama-cpp-python is installed: on this project's 2-core x86 reference machine its batched
    decoding runs SmolLM2 several times faster than MLX's CPU backend (benchmarks/sdg_throughput.py).
    """
    if url:
        return "openai", "a teacher URL was given"
    from mlxlab.device import current_device

    device = current_device()
    if device != "cpu":
        return "mlx", f"MLX runs on the {device}"
    if importlib.util.find_spec("llama_cpp") is None:
        return "mlx", "a CPU, but llama-cpp-python is not installed"
    return "llama-cpp", "a CPU: llama.cpp's batched CPU kernels are the fastest teacher there"


def _gguf_types(path: Path) -> set[str]:
    """The weight types of a GGUF's matrices (gguf-py reads the header only)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2}


def teacher_gguf(model: str | Path | None, *, requantize: bool = True) -> tuple[Path, str]:
    """(GGUF file, note) for the llama-cpp teacher: the file itself, or a Q8_0 copy made once and cached.

    A GGUF whose matrices have a fast batched CPU kernel (`FAST_BATCH_TYPES`), or any GGUF when not
    `requantize` (evaluating a quantized export must run that very file), is used as it is. Any other GGUF,
    and an MLX or Hugging Face model, is exported to Q8_0 through mlxlab's own export (verified against MLX
    like every export) into the cache. Q8_0 holds a 4-bit model's weights almost exactly.
    """
    from mlxlab.models import EMBEDDED, cache_dir, embedded_gguf

    text = "" if model is None else str(model).strip()
    source = embedded_gguf() if not text or text.lower() == EMBEDDED else Path(text).expanduser()
    if source.is_file():
        try:
            types = _gguf_types(source)
        except Exception as exc:            # gguf-py says why in its own words
            raise MlxlabError(f"not a readable GGUF file ({exc})", path=source,
                              hint="pass a .gguf file, a model directory or a Hugging Face id") from None
        if types <= FAST_BATCH_TYPES or not requantize:
            return source, f"{source.name} as is ({', '.join(sorted(types))})"
        stat = source.stat()
        key = f"{source.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    else:
        key = text
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = source.stem if source.is_file() else Path(text).name
    target = cache_dir() / "teacher-gguf" / f"{name}-{digest}.q8_0.gguf"
    if not target.is_file():
        from mlxlab.gguf_export import export_gguf

        try:
            export_gguf(source if source.is_file() else text, target, out_type="q8_0", verify=True)
        except MlxlabError:
            if not source.is_file():
                raise
            return source, f"{source.name} as is (no Q8_0 copy: this GGUF cannot be re-exported)"
    return target, f"a Q8_0 copy of {source.name if source.is_file() else text} (cached: {target})"


class Teacher:
    """A text generator over chat messages; see the module docstring for the backends."""

    def __init__(self, model: str | Path | None = None, *, backend: str = "mlx", url: str | None = None,
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
        if backend == "openai" and not url:
            raise MlxlabError("the openai teacher backend needs a URL",
                              hint="pass --teacher-url http://127.0.0.1:8080 (any /v1/chat/completions server)")
        self.backend = backend
        self.model_ref = model
        self.url = url
        self.batch_size = batch_size or default_batch_size()
        self.prefix_cache = prefix_cache
        self.concurrency = max(1, concurrency)
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.api_key_env = api_key_env
        self.stats = GenerationStats()
        self._model = self._tokenizer = self._llama = self._engine = self._chat = None
        self.gguf_note = None
        self._prefixes: dict[tuple[int, ...], list] = {}
        self._lock = threading.Lock()
        if backend == "mlx":
            self._load_mlx(dequantize_on_load)
        elif backend == "llama-cpp":
            self._load_llama(n_ctx, requantize)

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
        from mlxlab.llama_batch import LlamaBatch

        path, self.gguf_note = teacher_gguf(self.model_ref, requantize=requantize)
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = llama_threads()
        # the Llama object gives the model, its tokenizer and metadata (and serves chat prompts of a GGUF
        # without a chat template); the batched engine decodes in a context of its own
        self._llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                            verbose=False)
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
        """Free the model (a later `generate` on an in-process backend is an error)."""
        if self._engine is not None:
            self._engine.close()
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
            flat = self._generate_openai(prompts, jobs, temperature, top_p, max_tokens, progress)
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

    def _prefix_cache(self, prefix: tuple[int, ...]):
        """The KV cache after `prefix`, prefilled once and kept for later calls (a few entries)."""
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        cache = self._prefixes.get(prefix)
        if cache is None:
            cache = make_prompt_cache(self._model)
            tokens = mx.array(prefix)[None]
            for start in range(0, len(prefix), 512):       # bounded activation memory on long prefixes
                self._model(tokens[:, start:start + 512], cache=cache)
                mx.eval([c.state for c in cache])
            self._prefixes[prefix] = cache
            while len(self._prefixes) > 1 and sum(
                    c.nbytes for entry in self._prefixes.values() for c in entry) > PREFIX_CACHE_BYTES:
                self._prefixes.pop(next(iter(self._prefixes)))
        else:
            self._prefixes[prefix] = self._prefixes.pop(prefix)      # most recently used goes last
        return cache

    def _generate_mlx(self, prompts, jobs, temperature, top_p, max_tokens, progress) -> list[Completion]:
        if self._model is None:
            raise MlxlabError("this teacher was closed; make a new Teacher")
        encoded = [self._encode(p) for p in prompts]
        greedy = _greedy_sampler()
        samplers = [greedy if temperature <= 0 else _seeded_sampler(temperature, top_p, s) for _i, _j, s in jobs]
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
            encoded = [list(self._tokenizer.encode(t)) for t in texts]
            samplers = [_greedy_sampler() if temperature <= 0 else _seeded_sampler(temperature, top_p, k)
                        for k in keys]
            out = self._run_batches(encoded, samplers, max_tokens, progress, stop)
        elif self.backend == "openai":
            def one(i):
                completion = self._request_text(texts[i], stop, temperature, top_p, max_tokens, keys[i])
                if progress:
                    progress(1, completion.tokens)
                return completion

            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                out = list(pool.map(one, range(len(texts))))
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
        """Decode token sequences in fixed chunks of `batch_size`, reusing the prefilled shared prefix.

        A sequence whose text reaches one of the `stop` strings ends there (cut before it) and leaves the
        batch, so the others decode on without it.
        """
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator

        # Each prefix is always prefilled from scratch (never extended from a shorter cached one), so
        # its KV values are bitwise the same whatever ran before: resumed runs repeat exactly.
        plan = plan_prefixes(sequences) if self.prefix_cache and len(sequences) > 1 else [0] * len(sequences)
        results: list[Completion | None] = [None] * len(sequences)
        started = time.perf_counter()
        first_token = None
        # Fixed chunks in job order: the same prompts always meet the same batch, so floating-point
        # results repeat exactly when a resumed run redoes a chunk.
        for lo in range(0, len(sequences), self.batch_size):
            chunk = list(range(lo, min(lo + self.batch_size, len(sequences))))
            # BatchKVCache.merge copies (left-padding shorter prefixes), so cache entries stay intact
            caches = [self._prefix_cache(tuple(sequences[k][:plan[k]])) if plan[k] else None for k in chunk]
            self.stats.cached_prefix_tokens += sum(plan[k] for k in chunk)
            gen = BatchGenerator(self._model, max_tokens=max_tokens,
                                 stop_tokens=[[t] for t in self._tokenizer.eos_token_ids],
                                 completion_batch_size=len(chunk), prefill_batch_size=len(chunk))
            uids = gen.insert([sequences[k][plan[k]:] for k in chunk], [max_tokens] * len(chunk),
                              caches=caches if any(plan[k] for k in chunk) else None,
                              samplers=[samplers[k] for k in chunk])
            self.stats.prompt_tokens += sum(len(sequences[k]) for k in chunk)
            by_uid = dict(zip(uids, chunk))
            tokens: dict[int, list[int]] = {uid: [] for uid in uids}
            try:
                while responses := gen.next_generated():
                    if first_token is None:
                        first_token = time.perf_counter() - started
                    done, stopped = 0, []
                    for r in responses:
                        if r.finish_reason != "stop":
                            tokens[r.uid].append(r.token)
                        text = self._tokenizer.decode(tokens[r.uid]) if (stop or r.finish_reason) else ""
                        cut = cut_at_stop(text, stop) if stop else None
                        if cut is not None and r.finish_reason is None:
                            stopped.append(r.uid)
                        if r.finish_reason is not None or cut is not None:
                            done += 1
                            results[by_uid[r.uid]] = Completion(text if cut is None else cut, len(tokens[r.uid]),
                                                                "stop" if cut is not None else r.finish_reason)
                    if stopped:
                        gen.remove(stopped)
                    self.stats.generated_tokens += len(responses)
                    if progress:
                        progress(done, len(responses))
            finally:
                gen.close()
            mx.clear_cache()
        if first_token is not None:
            self.stats.first_token_seconds.append(first_token)
        return [r or Completion("", 0, "error") for r in results]

    # openai ---------------------------------------------------------------------------------------------

    def _endpoint(self, path: str = "chat/completions") -> str:
        base = self.url.rstrip("/")
        for known in ("/chat/completions", "/completions"):
            if base.endswith(known):
                base = base[:-len(known)]
        return base + (f"/{path}" if base.endswith("/v1") else f"/v1/{path}")

    def _post(self, body: dict, path: str = "chat/completions") -> dict:
        """POST `body`, retrying connection failures, 429 and 5xx with exponential backoff."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        endpoint = self._endpoint(path)
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

    def _request(self, messages: Messages, temperature: float, top_p: float, max_tokens: int,
                 seed: int) -> Completion:
        body = {"model": str(self.model_ref or "default"), "messages": messages, "temperature": temperature,
                "top_p": top_p, "max_tokens": max_tokens, "seed": seed, "n": 1}
        reply = self._post(body)
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
            finish = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError, AttributeError):
            return Completion("", 0, "error")
        usage = reply.get("usage") or {}
        tokens = int(usage.get("completion_tokens") or self.count_tokens(text))
        with self._lock:
            self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.stats.generated_tokens += tokens
        return Completion(text, tokens, "length" if finish == "length" else "stop")

    def _request_text(self, text: str, stop: tuple[str, ...], temperature: float, top_p: float, max_tokens: int,
                      seed: int) -> Completion:
        body = {"model": str(self.model_ref or "default"), "prompt": text, "temperature": temperature,
                "top_p": top_p, "max_tokens": max_tokens, "seed": seed, "n": 1}
        if stop:
            body["stop"] = list(stop)
        reply = self._post(body, path="completions")
        try:
            choice = reply["choices"][0]
            value = choice.get("text") or ""
            finish = choice.get("finish_reason") or "stop"
        except (KeyError, IndexError, TypeError, AttributeError):
            return Completion("", 0, "error")
        tokens = int((reply.get("usage") or {}).get("completion_tokens") or self.count_tokens(value))
        with self._lock:
            self.stats.generated_tokens += tokens
        return Completion(until_stop(value, stop), tokens, "length" if finish == "length" else "stop")

    def _generate_openai(self, prompts, jobs, temperature, top_p, max_tokens, progress) -> list[Completion]:
        def one(job):
            completion = self._request(prompts[job[0]], temperature, top_p, max_tokens, job[2])
            if progress:
                progress(1, completion.tokens)
            return completion

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, jobs))

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


def _greedy_sampler():
    """argmax over the vocabulary (one shared object, so BatchGenerator samples the batch in one call)."""
    import mlx.core as mx

    return lambda logprobs: mx.argmax(logprobs, axis=-1)


def _seeded_sampler(temperature: float, top_p: float, seed: int):
    """Temperature + top-p sampling with its own PRNG key chain, independent of the global MLX seed."""
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_top_p

    state = {"key": mx.random.key(seed)}

    def sample(logprobs):
        if 0 < top_p < 1:
            logprobs = apply_top_p(logprobs, top_p)
        state["key"], sub = mx.random.split(state["key"])
        return mx.random.categorical(logprobs * (1.0 / temperature), key=sub)

    return sample


def make_teacher(teacher: Teacher | str | Path | None = None, *, url: str | None = None,
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
