"""The MLX teacher's engine: mlx-lm's continuous batching (`BatchGenerator`) with prefilled shared prefixes.

The token prefix that a call's prompts share (system prompt + in-context examples) is prefilled once and its KV
cache handed to every sequence; prefilled prefixes are kept between calls (least recently used dropped first).
Each completion samples with its own PRNG key chain, so it does not depend on which prompts share its batch.
"""

from __future__ import annotations

import time

from mlxlab.errors import MlxlabError
from mlxlab.teacher.completions import (Completion, Engine, GenerationStats, Messages, cut_at_stop,
                                       plan_prefixes)

PREFIX_CACHE_BYTES = 512 * 2**20  # prefilled prefixes kept between calls, least recently used dropped first


def prefix_cache(model, prefixes: dict, prefix: tuple[int, ...]):
    """The KV cache after `prefix`, prefilled once and kept for later calls (a few entries)."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = prefixes.get(prefix)
    if cache is None:
        cache = make_prompt_cache(model)
        tokens = mx.array(prefix)[None]
        for start in range(0, len(prefix), 512):       # bounded activation memory on long prefixes
            model(tokens[:, start:start + 512], cache=cache)
            mx.eval([c.state for c in cache])
        prefixes[prefix] = cache
        while len(prefixes) > 1 and sum(
                c.nbytes for entry in prefixes.values() for c in entry) > PREFIX_CACHE_BYTES:
            prefixes.pop(next(iter(prefixes)))
    else:
        prefixes[prefix] = prefixes.pop(prefix)      # most recently used goes last
    return cache


def run_batches(model, tokenizer, prefixes: dict, sequences: list[list[int]], samplers: list, max_tokens: int, *,
            batch_size: int, share_prefix: bool, stats, progress=None, stop: tuple[str, ...] = ()) -> list:
    """Completions of token sequences decoded in fixed chunks of `batch_size`, reusing prefilled shared prefixes.

    A sequence whose text reaches one of the `stop` strings ends there (cut before it) and leaves the
    batch, so the others decode on without it.
    """
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    # Each prefix is always prefilled from scratch (never extended from a shorter cached one), so
    # its KV values are bitwise the same whatever ran before: resumed runs repeat exactly.
    plan = plan_prefixes(sequences) if share_prefix and len(sequences) > 1 else [0] * len(sequences)
    results: list[Completion | None] = [None] * len(sequences)
    started = time.perf_counter()
    first_token = None
    # Fixed chunks in job order: the same prompts always meet the same batch, so floating-point
    # results repeat exactly when a resumed run redoes a chunk.
    for lo in range(0, len(sequences), batch_size):
        chunk = list(range(lo, min(lo + batch_size, len(sequences))))
        # BatchKVCache.merge copies (left-padding shorter prefixes), so cache entries stay intact
        caches = [prefix_cache(model, prefixes, tuple(sequences[k][:plan[k]])) if plan[k] else None for k in chunk]
        stats.cached_prefix_tokens += sum(plan[k] for k in chunk)
        gen = BatchGenerator(model, max_tokens=max_tokens,
                             stop_tokens=[[t] for t in tokenizer.eos_token_ids],
                             completion_batch_size=len(chunk), prefill_batch_size=len(chunk))
        uids = gen.insert([sequences[k][plan[k]:] for k in chunk], [max_tokens] * len(chunk),
                          caches=caches if any(plan[k] for k in chunk) else None,
                          samplers=[samplers[k] for k in chunk])
        stats.prompt_tokens += sum(len(sequences[k]) for k in chunk)
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
                    text = tokenizer.decode(tokens[r.uid]) if (stop or r.finish_reason) else ""
                    cut = cut_at_stop(text, stop) if stop else None
                    if cut is not None and r.finish_reason is None:
                        stopped.append(r.uid)
                    if r.finish_reason is not None or cut is not None:
                        done += 1
                        results[by_uid[r.uid]] = Completion(text if cut is None else cut, len(tokens[r.uid]),
                                                            "stop" if cut is not None else r.finish_reason)
                if stopped:
                    gen.remove(stopped)
                stats.generated_tokens += len(responses)
                if progress:
                    progress(done, len(responses))
        finally:
            gen.close()
        mx.clear_cache()
    if first_token is not None:
        stats.first_token_seconds.append(first_token)
    return [r or Completion("", 0, "error") for r in results]


def greedy_sampler():
    """argmax over the vocabulary (one shared object, so BatchGenerator samples the batch in one call)."""
    import mlx.core as mx

    return lambda logprobs: mx.argmax(logprobs, axis=-1)


def seeded_sampler(temperature: float, top_p: float, seed: int):
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


class MlxEngine(Engine):
    """The mlx backend: an MLX model in this process, batched by `run_batches`, its shared prefixes kept."""

    backend = "mlx"

    def __init__(self, model_ref, stats: GenerationStats, *, dequantize_on_load: str | None = None, **settings):
        from mlxlab.models import load_model

        super().__init__(stats, **settings)
        self.prefixes: dict[tuple[int, ...], list] = {}
        # The device policy expands a small 4-bit teacher to float32 on the CPU: MLX's CPU 4-bit matmul
        # costs the same per row at any batch size (measured: 0.37 s per token for SmolLM2 at batch 1,
        # 2.8 s at batch 8), so batching gains nothing there, while float32 goes through BLAS (0.065 s
        # and 0.107 s). On Metal the 4-bit kernels win and the model stays 4-bit.
        self.model, self.tokenizer = load_model(model_ref, dequantize_on_load=dequantize_on_load)

    def _encode(self, messages: Messages) -> list[int]:
        tokens = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(tokens["input_ids"] if isinstance(tokens, dict) else tokens)

    def _open(self) -> None:
        if self.model is None:
            raise MlxlabError("this teacher was closed; make a new Teacher")

    def generate(self, prompts, jobs, temperature, top_p, max_tokens, progress) -> list[Completion]:
        self._open()
        encoded = [self._encode(p) for p in prompts]
        greedy = greedy_sampler()
        samplers = [greedy if temperature <= 0 else seeded_sampler(temperature, top_p, s) for _i, _j, s in jobs]
        return self._run([encoded[i] for i, _j, _s in jobs], samplers, max_tokens, progress)

    def complete(self, texts, keys, stop, temperature, top_p, max_tokens, progress) -> list[Completion]:
        self._open()
        encoded = [list(self.tokenizer.encode(t)) for t in texts]
        samplers = [greedy_sampler() if temperature <= 0 else seeded_sampler(temperature, top_p, k) for k in keys]
        return self._run(encoded, samplers, max_tokens, progress, stop)

    def choose(self, prompts, choices, prefix, progress) -> list[str] | None:
        if self.tokenizer is None:
            return None
        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)
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
        out = self._run(sequences, [pick] * len(sequences), 1, progress)
        by_text = {self.tokenizer.decode([t]): c for t, c in zip(firsts, choices)}
        return [by_text.get(c.text) for c in out]

    def can_score(self) -> bool:
        return self.model is not None

    def tokens(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def score(self, encoded, batch_size, progress) -> list[tuple[float, int]]:
        import mlx.core as mx
        import numpy as np

        out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        for lo in range(0, len(order), batch_size):
            chunk = order[lo:lo + batch_size]
            width = max(len(encoded[i][0]) for i in chunk)
            array = np.zeros((len(chunk), width), np.int32)
            for r, i in enumerate(chunk):
                array[r, :len(encoded[i][0])] = encoded[i][0]
            tokens = mx.array(array)
            logits = self.model(tokens[:, :-1]).astype(mx.float32)
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

    def count_tokens(self, text: str) -> int:
        return (len(self.tokenizer.encode(text, add_special_tokens=False)) if self.tokenizer is not None
                else super().count_tokens(text))

    def num_parameters(self) -> int | None:
        """Parameters of the model, 4-bit weights counted unpacked (None once closed)."""
        if self.model is None:
            return None
        import mlx.core as mx
        from mlx.utils import tree_flatten

        total = 0
        for _name, module in self.model.named_modules():
            bits = getattr(module, "bits", None)
            for key, value in tree_flatten(module.parameters()):
                if "." in key:
                    continue                # a child module's parameter: counted with that module
                if key == "weight" and value.dtype == mx.uint32 and bits:
                    total += value.size * 32 // bits
                elif mx.issubdtype(value.dtype, mx.floating) and not (bits and key in ("scales", "biases")):
                    total += value.size
        return total

    def weights_changed(self) -> None:
        """Prefilled prefixes hold keys and values of the old weights: drop them."""
        self.prefixes.clear()

    def close(self) -> None:
        self.model = self.tokenizer = None
        self.prefixes.clear()

    def _run(self, sequences: list[list[int]], samplers: list, max_tokens: int, progress,
             stop: tuple[str, ...] = ()) -> list[Completion]:
        self._open()
        return run_batches(self.model, self.tokenizer, self.prefixes, sequences, samplers, max_tokens,
                           batch_size=self.batch_size, share_prefix=self.prefix_cache, stats=self.stats,
                           progress=progress, stop=stop)
