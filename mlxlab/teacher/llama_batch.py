"""Batched llama.cpp generation in-process: many sequences decoded per step, a shared prefix evaluated once.

llama-cpp-python's `Llama` decodes one sequence at a time. This module drives llama.cpp's own batch API
through llama-cpp-python's low-level bindings:

- one context holds up to `slots` sequences in a unified KV cache;
- a group's shared prefix (system prompt + in-context examples) is evaluated once, into a *holder*
  sequence, and `llama_memory_seq_cp` shares its cells with every sequence that starts with it (in a
  unified cache that adds a sequence id to the cells: no copy);
- the sequences' own suffixes are prefilled in the same `llama_decode` call that decodes the running
  sequences' next tokens, and a sequence that ends (end of generation, a stop string, `max_tokens`) frees
  its slot and its cells for the next queued one (continuous batching);
- each sequence samples with its own llama.cpp sampler chain seeded per completion, so its text does not
  depend on its neighbours in the batch, up to the float effects of batch shape (llama.cpp's matmul
  kernels sum in a different order for a different number of rows).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.teacher.completions import Completion, Engine, GenerationStats, cut_at_stop, plan_prefixes

HOLDERS = 2                    # shared prefixes kept resident at once (the queue is ordered by prefix)
N_BATCH = 2048                 # most tokens in one llama_decode call
MAX_OUTPUTS = 256              # most logit rows asked of one llama_decode call (n_vocab floats each)
CELLS_PER_SLOT = 512           # KV cells planned per sequence slot (a long few-shot prompt's own part + answer)
KV_BUDGET_BYTES = 2**30        # the unified KV cache is sized to this, but never below one full context


# weight types llama.cpp multiplies as whole matrices on a CPU (tinyBLAS); others go row by row, and a batch
# gains little: measured on SmolLM2, Q4_1 prefills at 180 tok/s, its Q8_0 re-encoding at 340
FAST_BATCH_TYPES = {"F32", "F16", "BF16", "Q8_0", "Q4_0"}


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
    from mlxlab.models import EMBEDDED, cache_dir, embedded_gguf, model_identity, resolve_model

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
    else:       # a folder or id by what it holds now: `fused` of two projects, or re-fused in place, differ
        key = model_identity(text)
        if key == text:     # a Hugging Face id not in the cache yet: fetch it (the export needs it) and key by that
            key = model_identity(resolve_model(text))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = source.stem if source.is_file() else Path(text).name
    target = cache_dir() / "teacher-gguf" / f"{name}-{digest}.q8_0.gguf"
    if not target.is_file():
        from mlxlab.gguf.gguf_export import export_gguf

        try:
            export_gguf(source if source.is_file() else text, target, out_type="q8_0", verify=True)
        except MlxlabError:
            if not source.is_file():
                raise
            return source, f"{source.name} as is (no Q8_0 copy: this GGUF cannot be re-exported)"
    return target, f"a Q8_0 copy of {source.name if source.is_file() else text} (cached: {target})"


@dataclass
class _Job:
    index: int
    tokens: list[int]
    prefix: tuple[int, ...]
    seed: int
    slot: int = -1
    pos: int = 0
    pending: list[int] = field(default_factory=list)
    out: list[int] = field(default_factory=list)
    chain: object = None
    result: tuple[str, int, str] | None = None


@dataclass
class Counters:
    """What the engine did: prompt tokens it evaluated vs those served from a shared prefix, and time."""
    prefixes_evaluated: int = 0
    prefill_tokens: int = 0          # prompt tokens run through the model (holder prefixes + suffixes)
    shared_prefix_tokens: int = 0    # prompt tokens a sequence got from a holder instead of evaluating them
    generated_tokens: int = 0
    decode_calls: int = 0
    prefill_seconds: float = 0.0     # llama_decode calls that evaluate prompt tokens (a step mixing both counts here)
    decode_seconds: float = 0.0      # llama_decode calls that only decode next tokens


class LlamaBatch:
    """A batched generator over a loaded `llama_cpp.Llama` (its model and tokenizer; its own context is not used)."""

    def __init__(self, llama, *, slots: int, n_ctx: int, threads: int):
        import llama_cpp as lc

        self._lc, self.llama = lc, llama
        self.slots = max(1, min(slots, lc.llama_max_parallel_sequences() - HOLDERS))
        model = llama.model
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
        self._vocab = lc.llama_model_get_vocab(model)
        layers, embd = lc.llama_model_n_layer(model), lc.llama_model_n_embd(model)
        heads, kv_heads = max(1, lc.llama_model_n_head(model)), lc.llama_model_n_head_kv(model)
        per_cell = 2 * 2 * layers * embd * kv_heads // heads          # K and V, f16
        # room for every slot to hold a long prompt, within a memory budget, never below one full context
        self.cells = int(max(n_ctx, min(n_ctx + self.slots * CELLS_PER_SLOT, KV_BUDGET_BYTES // max(1, per_cell))))
        params = lc.llama_context_default_params()
        params.n_ctx = self.cells
        params.n_batch = N_BATCH
        params.n_ubatch = 512
        params.n_seq_max = self.slots + HOLDERS
        params.kv_unified = True                 # one cell pool: a shared prefix is stored once
        params.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED   # measured on CPU: 30% slower steps with it
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        with _quiet():          # llama.cpp notes that a unified cache of many cells exceeds one training context
            self.ctx = lc.llama_init_from_model(model, params)
        if not self.ctx:
            raise MlxlabError(f"llama.cpp could not make a context of {self.cells} cells for {self.slots} sequences",
                              hint="use a smaller --batch-size or n_ctx")
        self.cells = lc.llama_n_ctx(self.ctx)
        self._memory = lc.llama_get_memory(self.ctx)
        self._batch = lc.llama_batch_init(N_BATCH, 0, 1)
        self.counters = Counters()
        # freed by `close`, else when the engine is collected. The finaliser holds the `Llama`, so its model
        # outlives this context even when both are collected at once (a context must go before its model).
        self._finalizer = weakref.finalize(self, _free_context, lc, self.ctx, self._batch, llama)

    def close(self) -> None:
        """Free the context and the batch (the model belongs to the `Llama`); closing twice does nothing.

        Sampler chains live only within a `generate` call, which frees them however it ends."""
        self._finalizer()
        self.ctx = self._memory = None

    # ------------------------------------------------------------------------------------------ llama.cpp

    def _decode(self, entries: list[tuple[int, int, int, bool]], *, prefill: bool) -> None:
        """One llama_decode of (token, position, sequence id, wants logits) entries."""
        b = self._batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(entries)
        start = time.perf_counter()
        code = self._lc.llama_decode(self.ctx, b)
        seconds = time.perf_counter() - start
        if prefill:
            self.counters.prefill_seconds += seconds
        else:
            self.counters.decode_seconds += seconds
        self.counters.decode_calls += 1
        if code != 0:
            raise MlxlabError(f"llama.cpp llama_decode failed with code {code} ({len(entries)} tokens)",
                              hint="code 1 means the KV cache is full: use a smaller batch_size or shorter prompts")

    def _forget(self, seq: int) -> None:
        self._lc.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def _chain(self, temperature: float, top_p: float, seed: int):
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            if 0 < top_p < 1:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def text(self, tokens: list[int], prev: list[int] | None = None) -> str:
        """Detokenized text of `tokens` (after `prev`, so a leading space is kept as the model meant it)."""
        return self.llama.detokenize(tokens, prev_tokens=prev).decode("utf-8", errors="ignore")

    # ------------------------------------------------------------------------------------------ generate

    def generate(self, sequences: list[list[int]], prefixes: list[int], seeds: list[int], *, temperature: float,
                 top_p: float, max_tokens: int, stop: tuple[str, ...] = (),
                 progress: Callable[[int, int], None] | None = None) -> list[tuple[str, int, str]]:
        """(text, tokens, finish) for each token sequence: `prefixes[i]` leading tokens come from a shared holder."""
        jobs = [_Job(i, list(s), tuple(s[:p]), seed) for i, (s, p, seed) in enumerate(zip(sequences, prefixes, seeds))]
        for job in jobs:
            if len(job.tokens) + max_tokens > self.cells:
                raise MlxlabError(f"a prompt of {len(job.tokens)} tokens + {max_tokens} new ones does not fit the "
                                  f"teacher's context of {self.cells} tokens", hint="shorten the prompt or max_tokens")
        # jobs that share a prefix run next to each other, so each prefix is evaluated about once
        queue = deque(sorted(jobs, key=lambda j: (j.prefix, j.index)))
        free_slots = list(range(self.slots))
        # prefix -> [holder sequence id, running jobs using it], least recently used first
        holders: dict[tuple[int, ...], list[int]] = {}
        free_holders = list(range(self.slots, self.slots + HOLDERS))
        active: list[_Job] = []
        used = 0                                              # KV cells reserved by holders and running jobs
        # Every call starts from an empty cache: where cells land changes the attention's float sums, so a
        # resumed SDG run, redoing one group, gets the same text only from the same starting state.
        self._clear()
        try:
            while queue or active:
                used = self._admit(queue, active, free_slots, holders, free_holders, used, max_tokens,
                                   temperature, top_p)
                finished, sampled = self._step(active, max_tokens, stop)
                for job in finished:
                    active.remove(job)
                    self._forget(job.slot)
                    free_slots.append(job.slot)
                    used -= len(job.tokens) - len(job.prefix) + max_tokens
                    if job.prefix:
                        holders[job.prefix][1] -= 1
                    self._lc.llama_sampler_free(job.chain)
                    job.chain = None
                if progress:
                    progress(len(finished), sampled)
        finally:
            for job in jobs:
                if job.chain is not None:
                    self._lc.llama_sampler_free(job.chain)
            self._clear()
        return [job.result for job in jobs]

    def _clear(self) -> None:
        """Empty the KV cache (every sequence, every prefix holder)."""
        self._lc.llama_memory_clear(self._memory, True)

    def _admit(self, queue, active, free_slots, holders, free_holders, used, max_tokens, temperature, top_p) -> int:
        """Move queued jobs into free slots while their KV cells fit; evaluate a new shared prefix once."""
        while queue and free_slots:
            job = queue[0]
            holder = holders.get(job.prefix) if job.prefix else None
            if holder is not None:
                holders[job.prefix] = holders.pop(job.prefix)      # most recently used goes last
            need = len(job.tokens) - len(job.prefix) + max_tokens + (len(job.prefix) if job.prefix and not holder
                                                                      else 0)
            # make room: drop resident prefixes that no running job uses, least recently used first
            for prefix in [p for p, (_seq, users) in holders.items() if users == 0 and p != job.prefix]:
                if used + need <= self.cells and (holder or not job.prefix or free_holders):
                    break
                seq, _ = holders.pop(prefix)
                self._forget(seq)
                used -= len(prefix)
                free_holders.append(seq)
            if job.prefix and not holder and not free_holders:
                break
            if used + need > self.cells and active:
                break
            if job.prefix and holder is None:
                seq = free_holders.pop()
                self._prefill(seq, list(job.prefix), 0)
                self.counters.prefixes_evaluated += 1
                holder = holders[job.prefix] = [seq, 0]
            queue.popleft()
            used += need
            job.slot = free_slots.pop(0)
            if job.prefix:
                self._lc.llama_memory_seq_cp(self._memory, holder[0], job.slot, -1, -1)
                holder[1] += 1
                self.counters.shared_prefix_tokens += len(job.prefix)
            job.pos, job.pending = len(job.prefix), job.tokens[len(job.prefix):]
            job.chain = self._chain(temperature, top_p, job.seed)
            active.append(job)
        return used

    def _prefill(self, seq: int, tokens: list[int], start: int) -> None:
        """Evaluate `tokens` at positions `start`… of sequence `seq`, asking for no logits."""
        for lo in range(0, len(tokens), N_BATCH):
            chunk = tokens[lo:lo + N_BATCH]
            self._decode([(t, start + lo + k, seq, False) for k, t in enumerate(chunk)], prefill=True)
            self.counters.prefill_tokens += len(chunk)

    def _step(self, active: list[_Job], max_tokens: int, stop: tuple[str, ...]) -> tuple[list[_Job], int]:
        """One llama_decode: every decoding job's next token and as much pending prefill as fits; sample.

        Returns the jobs that finished and how many tokens were sampled."""
        entries, sampled = [], []
        for job in active:
            if not job.pending:
                sampled.append((job, len(entries)))
                entries.append((job.out[-1], job.pos, job.slot, True))
                job.pos += 1
        prefill = False
        for job in active:
            room = N_BATCH - len(entries)
            if not job.pending or room <= 0:
                continue
            chunk, job.pending = job.pending[:room], job.pending[room:]
            for k, token in enumerate(chunk):
                last = not job.pending and k == len(chunk) - 1
                if last:
                    sampled.append((job, len(entries)))
                entries.append((token, job.pos, job.slot, last))
                job.pos += 1
            self.counters.prefill_tokens += len(chunk)
            prefill = True
        self._decode(entries, prefill=prefill)
        finished = []
        lc = self._lc
        for job, index in sampled:
            token = lc.llama_sampler_sample(job.chain, self.ctx, index)
            self.counters.generated_tokens += 1
            if lc.llama_vocab_is_eog(self._vocab, token):
                job.result = (self.text(job.out, job.tokens), len(job.out), "stop")
            else:
                job.out.append(token)
                if stop:
                    text = self.text(job.out, job.tokens)
                    cut = cut_at_stop(text, stop)
                    if cut is not None:
                        job.result = (cut, len(job.out), "stop")
                if job.result is None and len(job.out) >= max_tokens:
                    job.result = (self.text(job.out, job.tokens), len(job.out), "length")
            if job.result is not None:
                finished.append(job)
        return finished, len(sampled)

    # ------------------------------------------------------------------------------------------ scoring

    def loglikelihood(self, encoded: list[tuple[list[int], int]]) -> list[tuple[float, int]]:
        """(sum of log p(token | earlier tokens) over tokens[boundary:], their count) for each (tokens, boundary)."""
        import numpy as np

        lc = self._lc
        out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
        pending = deque(range(len(encoded)))
        while pending:
            # several sequences share the cache at once; a call takes at most N_BATCH tokens and MAX_OUTPUTS
            # logit rows, so a long sequence runs over several calls (its earlier part stays in the cache)
            chosen, cells = [], 0
            while pending and len(chosen) < self.slots and (not chosen or cells + len(encoded[pending[0]][0])
                                                            <= self.cells):
                cells += len(encoded[pending[0]][0])
                chosen.append(pending.popleft())
            entries, wanted = [], []              # wanted: (pair, the token its row predicts), per entry
            for seq, i in enumerate(chosen):
                full, boundary = encoded[i]
                for pos, token in enumerate(full):
                    want = boundary - 1 <= pos < len(full) - 1
                    entries.append((token, pos, seq, want))
                    wanted.append((i, full[pos + 1]) if want else None)
            sums: dict[int, list[float]] = {i: [] for i in chosen}
            try:
                lo = 0
                while lo < len(entries):
                    hi, rows = lo, 0
                    while hi < len(entries) and hi - lo < N_BATCH and rows + entries[hi][3] <= MAX_OUTPUTS:
                        rows += entries[hi][3]
                        hi += 1
                    self._decode(entries[lo:hi], prefill=True)
                    self.counters.prefill_tokens += hi - lo
                    for k in range(lo, hi):
                        if wanted[k] is None:
                            continue
                        i, target = wanted[k]
                        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self.ctx, k - lo),
                                                       shape=(self.n_vocab,)).astype(np.float64)
                        top = logits.max()
                        sums[i].append(logits[target] - top - np.log(np.exp(logits - top).sum()))
                    lo = hi
            finally:
                self._clear()
            for i in chosen:
                out[i] = (float(sum(sums[i])), len(sums[i]))
        return out


def _free_context(lc, ctx, batch, llama) -> None:
    """Free a `LlamaBatch`'s context and batch; `llama` is only held until then (its model must outlive them)."""
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)


def _quiet():
    """Silence llama.cpp's own stderr logging while a context is made (what `Llama(verbose=False)` does)."""
    try:
        from llama_cpp._utils import suppress_stdout_stderr
    except ImportError:                 # a private helper: without it the notes are only noise
        return contextlib.nullcontext()
    return suppress_stdout_stderr(disable=False)


class LlamaEngine(Engine):
    """The llama-cpp backend: a GGUF in this process, decoded in batches by `LlamaBatch`."""

    backend = "llama-cpp"

    def __init__(self, model_ref, stats: GenerationStats, *, n_ctx: int, requantize: bool, **settings):
        from mlxlab.device import llama_threads

        super().__init__(stats, **settings)
        self.chat = None
        path, self.gguf_note = teacher_gguf(model_ref, requantize=requantize)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from mlxlab.llamacpp import load_llama

        threads = llama_threads()
        # the Llama object gives the model, its tokenizer and metadata (and serves chat prompts of a GGUF
        # without a chat template); the batched engine decodes in a context of its own
        self.llama = load_llama(path, purpose="the llama.cpp teacher", n_ctx=n_ctx, n_threads=threads,
                                n_threads_batch=threads, verbose=False)
        template = self.llama.metadata.get("tokenizer.chat_template")
        if template:
            token = lambda key: (self.llama.detokenize([int(self.llama.metadata[key])], special=True).decode(
                "utf-8", "replace") if key in self.llama.metadata else "")
            self.chat = Jinja2ChatFormatter(template, eos_token=token("tokenizer.ggml.eos_token_id"),
                                            bos_token=token("tokenizer.ggml.bos_token_id"))
        self.batch = LlamaBatch(self.llama, slots=self.batch_size, n_ctx=n_ctx, threads=llama_threads(batched=True))

    def llama_tokens(self, text: str, *, special: bool, add_bos: bool = True) -> list[int]:
        """`text` in the GGUF's tokenizer (`special`: control tokens in the text are parsed as such)."""
        if self.llama is None:
            raise MlxlabError("this teacher was closed; make a new Teacher")
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def generate(self, prompts, jobs, temperature, top_p, max_tokens, progress) -> list[Completion]:
        if self.llama is None:
            raise MlxlabError("this teacher was closed; make a new Teacher")
        if self.chat is not None:
            sequences = []
            for i, _j, _s in jobs:
                rendered = self.chat(messages=prompts[i])
                sequences.append(self.llama_tokens(rendered.prompt, special=True,
                                                   add_bos=not getattr(rendered, "added_special", False)))
            return self._run(sequences, [s for _i, _j, s in jobs], temperature, top_p, max_tokens, (), progress)
        # no chat template in the GGUF: llama-cpp-python's own chat formats, one request at a time
        out = []
        for i, _j, s in jobs:
            reply = self.llama.create_chat_completion(messages=prompts[i], temperature=temperature, top_p=top_p,
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

    def complete(self, texts, keys, stop, temperature, top_p, max_tokens, progress) -> list[Completion]:
        encoded = [self.llama_tokens(t, special=False) for t in texts]
        return self._run(encoded, keys, temperature, top_p, max_tokens, stop, progress)

    def can_score(self) -> bool:
        return self.batch is not None

    def tokens(self, text: str) -> list[int]:
        return self.llama_tokens(text, special=False)

    def score(self, encoded, batch_size, progress) -> list[tuple[float, int]]:
        before = dataclasses.replace(self.batch.counters)
        out = self.batch.loglikelihood(encoded)
        self._count(before)
        self.stats.prompt_tokens += sum(len(full) for full, _b in encoded)
        if progress:
            progress(len(encoded), 0)
        return out

    def count_tokens(self, text: str) -> int:
        return (len(self.llama.tokenize(text.encode(), add_bos=False, special=False)) if self.llama is not None
                else super().count_tokens(text))

    def num_parameters(self) -> int | None:
        if self.batch is None:
            return None
        import llama_cpp

        return int(llama_cpp.llama_model_n_params(self.llama.model))

    def close(self) -> None:
        if self.batch is not None:
            self.batch.close()              # the batched context first: it was made from the Llama's model
        if self.llama is not None:
            self.llama.close()
        self.llama = self.batch = self.chat = None

    def _count(self, before: Counters) -> None:
        """Add what the batched engine did since `before` (a copy of its counters) to the stats."""
        now = self.batch.counters
        self.stats.prefill_tokens += now.prefill_tokens - before.prefill_tokens
        self.stats.cached_prefix_tokens += now.shared_prefix_tokens - before.shared_prefix_tokens
        self.stats.prefill_seconds += now.prefill_seconds - before.prefill_seconds
        self.stats.decode_seconds += now.decode_seconds - before.decode_seconds

    def _run(self, sequences: list[list[int]], seeds: list[int], temperature: float, top_p: float,
             max_tokens: int, stop: tuple[str, ...], progress) -> list[Completion]:
        """Token sequences through the batched engine, sharing each group's prefix."""
        plan = plan_prefixes(sequences) if self.prefix_cache and len(sequences) > 1 else [0] * len(sequences)
        before = dataclasses.replace(self.batch.counters)
        started = time.perf_counter()
        first: list[float] = []

        def advance(done: int, tokens: int) -> None:
            if not first and tokens:
                first.append(time.perf_counter() - started)
            if progress:
                progress(done, tokens)

        results = self.batch.generate(sequences, plan, seeds, temperature=temperature, top_p=top_p,
                                      max_tokens=max_tokens, stop=stop, progress=advance)
        self._count(before)
        self.stats.first_token_seconds.extend(first)
        self.stats.prompt_tokens += sum(len(s) for s in sequences)
        self.stats.generated_tokens += sum(tokens for _text, tokens, _finish in results)
        return [Completion(text, tokens, finish) for text, tokens, finish in results]
