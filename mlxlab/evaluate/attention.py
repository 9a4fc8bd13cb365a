"""Attention maps: which tokens each layer and head looks at, for a prompt and the model's answer.

Works on 4-bit models as they are: the scores are recomputed from the layer's own q/k projections
(quantized matmuls included), RoPE, GQA grouping, scale and mask, so nothing is dequantized and no
fused attention kernel has to expose its internals. The answer is generated first; then one forward
pass over prompt + answer captures the chosen layers, each map evaluated as soon as its layer runs.
Memory is the model plus the maps (len(layers) x heads x T x T float32).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mlxlab.errors import MlxlabError
from mlxlab.files import atomic_path

# module of mlx-lm's attention class -> what it covers; these share llama's q/k/rope/scale layout
_SUPPORTED = {
    "mlx_lm.models.llama": "llama (also mistral, SmolLM2)",
    "mlx_lm.models.qwen2": "qwen2",
    "mlx_lm.models.qwen3": "qwen3",
}


@dataclass(frozen=True)
class AttentionResult:
    """Attention weights of the chosen layers over prompt + generated answer, and the files written."""
    tokens: list[str]                 # decoded token pieces (prompt + generated)
    prompt_length: int
    layers: tuple[int, ...]           # which layers were captured
    weights: np.ndarray               # float32 [len(layers), len(heads), T, T] (causal, rows sum to 1)
    answer: str
    pngs: tuple[Path, ...]            # written heatmaps (empty if output is None)
    arrays: Path | None               # .npz with weights + tokens
    heads: tuple[int, ...] = ()       # which heads (axis 1 of weights)
    token_ids: tuple[int, ...] = ()   # the ids behind `tokens`


def _blocks(model) -> list:
    layers = getattr(model, "layers", None)
    if layers is None:
        layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        raise MlxlabError(f"{type(model).__name__} has no transformer layers mlxlab can find",
                          hint="pass an mlx-lm language model")
    return list(layers)


def _check_supported(attn) -> None:
    module = type(attn).__module__
    if module not in _SUPPORTED or not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "rope", "scale")):
        arch = module.rsplit(".", 1)[-1]
        raise MlxlabError(f"attention maps are not supported for the '{arch}' architecture",
                          hint="supported: " + ", ".join(_SUPPORTED.values()))


def _pick(spec, n: int, what: str, default: Sequence[int]) -> tuple[int, ...]:
    """Indices from None/'auto' (default) | 'all' | '0,15,-1' | a list; negatives count from the end."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "auto")):
        return tuple(default)
    if isinstance(spec, str) and spec.strip().lower() == "all":
        return tuple(range(n))
    try:
        items = [int(s) for s in spec.split(",") if s.strip()] if isinstance(spec, str) else [int(s) for s in spec]
    except (TypeError, ValueError):
        raise MlxlabError(f"{what}: expected 'all' or comma-separated numbers like 0,3,-1, found {spec!r}") from None
    bad = [i for i in items if not -n <= i < n]
    if bad or not items:
        raise MlxlabError(f"{what}: {bad or 'none given'} out of range; the model has {n} {what} (0..{n - 1})")
    return tuple(dict.fromkeys(i % n for i in items))


def attention_probabilities(attn, x, mask=None, heads: Sequence[int] | None = None):
    """Softmax attention of mlx-lm's `attn` module on input `x` [B, T, D], as float32 [B, heads, T, T]."""
    from mlxlab.device import import_mlx

    mx = import_mlx()
    _check_supported(attn)
    B, T, _ = x.shape
    q = attn.q_proj(x).reshape(B, T, attn.n_heads, -1)
    k = attn.k_proj(x).reshape(B, T, attn.n_kv_heads, -1)
    if hasattr(attn, "q_norm"):                  # qwen3 normalises each head before RoPE
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = attn.rope(q.transpose(0, 2, 1, 3)), attn.rope(k.transpose(0, 2, 1, 3))
    heads = list(range(attn.n_heads)) if heads is None else list(heads)
    group = attn.n_heads // attn.n_kv_heads     # GQA: query head h reads kv head h // group
    q = mx.take(q, mx.array(heads), axis=1).astype(mx.float32)
    k = mx.take(k, mx.array([h // group for h in heads]), axis=1).astype(mx.float32)
    scores = (q * attn.scale) @ k.swapaxes(-1, -2)
    if isinstance(mask, str):                    # "causal": what mx.fast.scaled_dot_product_attention does
        idx = mx.arange(T)
        mask = idx[:, None] >= idx[None]
    if mask is not None:
        scores = mx.where(mask, scores, -mx.inf) if mask.dtype == mx.bool_ else scores + mask.astype(mx.float32)
    return mx.softmax(scores, axis=-1, precise=True)


@contextmanager
def capture_attention(model, layers: Sequence[int], heads: Sequence[int] | None = None) -> Iterator[dict]:
    """Within the block, forward passes store {layer: float32 [heads, T, T]} of batch row 0 in the yielded dict.

    The attention modules of `layers` are wrapped for the duration; each still returns exactly what it
    did (the original runs unchanged), and each map is evaluated as soon as its layer runs.
    """
    from mlxlab.device import import_mlx

    mx = import_mlx()
    import mlx.nn as nn

    class _Capture(nn.Module):
        def __init__(self, attn, index: int):
            super().__init__()
            self.attn = attn
            self.index = index

        def __call__(self, x, *args, **kwargs):
            mask = kwargs.get("mask", args[0] if args else None)
            probs = attention_probabilities(self.attn, x, mask, heads)
            mx.eval(probs)
            maps[self.index] = np.array(probs[0], dtype=np.float32)
            return self.attn(x, *args, **kwargs)

    blocks = _blocks(model)
    for i in layers:
        _check_supported(blocks[i].self_attn)
    maps: dict[int, np.ndarray] = {}
    originals = {i: blocks[i].self_attn for i in layers}
    try:
        for i, attn in originals.items():
            blocks[i].self_attn = _Capture(attn, i)
        yield maps
    finally:
        for i, attn in originals.items():
            blocks[i].self_attn = attn


def _encode(tokenizer, prompt: str | list[dict], chat: bool) -> list[int]:
    if isinstance(prompt, str) and not prompt.strip():
        raise MlxlabError("the prompt is empty", hint="pass the text to look at, e.g. --prompt 'What is Jolie?'")
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if isinstance(prompt, list) or (chat and has_template):
        if not has_template:
            raise MlxlabError("chat messages need a tokenizer with a chat template; this one has none",
                              hint="pass the prompt as plain text with chat=False")
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)
    return list(tokenizer.encode(prompt))


def _generate(model, tokenizer, prompt_ids: list[int], max_tokens: int, temperature: float, seed: int) -> list[int]:
    """The answer's token ids (without the end-of-turn token)."""
    from mlxlab.device import import_mlx

    mx = import_mlx()
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    if max_tokens <= 0:
        return []
    mx.random.seed(seed)
    ids, finish = [], None
    for response in stream_generate(model, tokenizer, prompt_ids, max_tokens=max_tokens,
                                    sampler=make_sampler(temp=temperature)):
        ids.append(response.token)
        finish = response.finish_reason
    # stream_generate repeats the last token in its final response; an eos there ends the turn
    return ids[:-1] if finish == "stop" else ids


def attention_maps(model="smollm2", prompt: str | list[dict] = "", *, max_tokens: int = 32,
                   layers: str | Sequence[int] | None = None, heads: str | Sequence[int] | None = None,
                   output: str | Path | None = None, chat: bool = True, temperature: float = 0.0,
                   seed: int = 0) -> AttentionResult:
    """Generate an answer to `prompt`, then capture attention of `layers` x `heads` over prompt + answer.

    `model` is a reference for `load_model` or a loaded (model, tokenizer) pair (4-bit stays 4-bit).
    `layers`: None (first, middle, last) | "all" | [0, 15, -1]; `heads`: None (all) | [0, 3], whose heads
    then also get their own PNG. With `output`, writes attention.npz, layerLL_mean.png, overview.png.
    """
    from mlxlab.device import import_mlx

    mx = import_mlx()
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    if isinstance(model, tuple):
        model, tokenizer = model
    else:
        from mlxlab.models import load_model

        model, tokenizer = load_model(model)
    if not isinstance(tokenizer, TokenizerWrapper):
        tokenizer = TokenizerWrapper(tokenizer)
    blocks = _blocks(model)
    n = len(blocks)
    layer_ids = _pick(layers, n, "layers", sorted({0, n // 2, n - 1}))
    attn = blocks[layer_ids[0]].self_attn
    _check_supported(attn)
    head_ids = _pick(heads, attn.n_heads, "heads", range(attn.n_heads))

    prompt_ids = _encode(tokenizer, prompt, chat)
    answer_ids = _generate(model, tokenizer, prompt_ids, max_tokens, temperature, seed)
    ids = prompt_ids + answer_ids
    with capture_attention(model, layer_ids, head_ids) as maps:
        model(mx.array(ids)[None])               # logits never evaluated: only the hooked layers run
    result = AttentionResult(
        tokens=[tokenizer.decode([t]) for t in ids], prompt_length=len(prompt_ids), layers=layer_ids,
        weights=np.stack([maps[i] for i in layer_ids]), answer=tokenizer.decode(answer_ids),
        pngs=(), arrays=None, heads=head_ids, token_ids=tuple(ids))
    if output is None:
        return result
    listed = heads is not None and not (isinstance(heads, str) and heads.strip().lower() in ("", "auto", "all"))
    return _write(result, Path(output), head_ids if listed else ())


def _write(result: AttentionResult, output: Path, per_head: Sequence[int]) -> AttentionResult:
    """Save the arrays and heatmaps under `output` (atomically) and return the result with their paths."""
    output.mkdir(parents=True, exist_ok=True)
    arrays = output / "attention.npz"
    with atomic_path(arrays) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, weights=result.weights, tokens=np.array(result.tokens, dtype=str),
                            token_ids=np.array(result.token_ids),
                            layers=np.array(result.layers), heads=np.array(result.heads),
                            prompt_length=result.prompt_length, answer=result.answer)
    pngs = []
    for layer in result.layers:
        pngs.append(plot_attention(result, layer, path=output / f"layer{layer:02d}_mean.png"))
        for head in per_head:
            pngs.append(plot_attention(result, layer, head, path=output / f"layer{layer:02d}_head{head:02d}.png"))
    pngs.append(_overview(result, output / "overview.png"))
    return replace(result, pngs=tuple(pngs), arrays=arrays)


def _label(piece: str, width: int = 10) -> str:
    text = piece.replace("\n", "\\n").replace("\t", "\\t").replace("$", r"\$")   # "$" would start mathtext
    return text if len(text) <= width else text[:width - 1] + "…"


def _draw(ax, data: np.ndarray, tokens: list[str], prompt_length: int, title: str, *, labels: bool = True):
    """One heatmap on `ax`: queries down, keys across, a dashed line where the answer starts."""
    from matplotlib.colors import PowerNorm

    T = len(tokens)
    # gamma < 1 lifts the small weights that the first ("sink") token would otherwise drown out
    image = ax.imshow(data, cmap="viridis", norm=PowerNorm(0.5, vmin=0.0, vmax=max(float(data.max()), 1e-9)),
                      interpolation="nearest")
    if 0 < prompt_length < T:
        for line in (ax.axhline, ax.axvline):
            line(prompt_length - 0.5, color="red", linewidth=0.8, linestyle="--")
    ax.set_title(title, fontsize=10)
    if labels:
        # the figure grows 0.16 in per token up to 16 in: ~100 labels of 6 pt still fit, beyond that thin them
        step = max(1, math.ceil(T / 100))
        ticks = list(range(0, T, step))
        size = 7 if T <= 36 else 6
        ax.set_xticks(ticks, [_label(tokens[i]) for i in ticks], rotation=90, fontsize=size)
        ax.set_yticks(ticks, [_label(tokens[i]) for i in ticks], fontsize=size)
        ax.set_xlabel("attended token (key)", fontsize=8)
        ax.set_ylabel("token (query)", fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return image


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_attention(result: AttentionResult, layer: int, head: int | None = None, path: str | Path | None = None,
                   ax=None):
    """Heatmap of `layer` (one `head`, or the mean over heads); saved to `path` (returns it), drawn on `ax`
    (returns its figure), or returned as a new matplotlib Figure (shown inline in a notebook)."""
    from matplotlib.figure import Figure      # Agg rendering, no pyplot state: safe in notebooks and threads

    if layer not in result.layers:
        raise MlxlabError(f"layer {layer} was not captured; captured: {list(result.layers)}",
                          hint="pass it in layers=... (or 'all')")
    maps = result.weights[result.layers.index(layer)]
    heads = result.heads or tuple(range(maps.shape[0]))
    if head is None:
        data, title = maps.mean(axis=0), f"layer {layer}, mean over heads"
    elif head in heads:
        data, title = maps[heads.index(head)], f"layer {layer} head {head}"
    else:
        raise MlxlabError(f"head {head} was not captured; captured: {list(heads)}")
    if ax is not None:
        _draw(ax, data, result.tokens, result.prompt_length, title)
        return ax.figure
    side = min(16.0, max(6.0, 0.16 * len(result.tokens)))
    fig = Figure(figsize=(side + 1.2, side))
    image = _draw(fig.add_subplot(), data, result.tokens, result.prompt_length, title)
    fig.colorbar(image, fraction=0.046, pad=0.02)
    return _save(fig, Path(path)) if path is not None else fig


def _overview(result: AttentionResult, path: Path) -> Path:
    """A grid of every captured layer's mean map."""
    from matplotlib.figure import Figure

    n = len(result.layers)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4 * cols, 4 * rows + 0.4))
    labels = len(result.tokens) <= 24
    for k, layer in enumerate(result.layers):
        _draw(fig.add_subplot(rows, cols, k + 1), result.weights[k].mean(axis=0), result.tokens,
              result.prompt_length, f"layer {layer}", labels=labels)
    fig.suptitle(f"attention, mean over heads (prompt | answer at token {result.prompt_length})", fontsize=11)
    return _save(fig, path)
