"""The MLX teacher's engine: mlx-lm's continuous batching (`BatchGenerator`) with prefilled shared prefixes.

The token prefix that a call's prompts share (system prompt + in-context examples) is prefilled once and its KV
cache handed to every sequence; prefilled prefixes are kept between calls (least recently used dropped first).
Each completion samples with its own PRNG key chain, so it does not depend on which prompts share its batch.
"""

from __future__ import annotations

import time

from mlxlab.teacher.completions import Completion, cut_at_stop, plan_prefixes

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
