"""Hugging Face tokenizer files -> GGUF tokenizer metadata (`tokenizer.ggml.*`), for `gguf_export`.

Byte-level BPE (`tokenizer.json` with a BPE model and a ByteLevel pre-tokenizer: GPT-2, SmolLM, Llama 3,
Qwen) is written as llama.cpp's "gpt2" tokenizer model, with the pre-tokenizer name llama.cpp needs to
split text the same way (`tokenizer.ggml.pre`). SentencePiece tokenizers (`tokenizer.model`: Llama 2,
Mistral v0.1, Gemma, Phi-3) are written as the "llama" model with their real scores and token types.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.gguf.tables import GPT2_RE, PRE_TOKENIZERS

# pre-tokenizer names (of gguf_import's regex table) that llama.cpp's loader accepts, most specific first
_EXPORT_PRE = ("smollm", "llama-bpe", "qwen2", "gpt2")
# llama.cpp token types (llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class TokenizerMeta:
    """Everything `tokenizer.ggml.*` needs, read from a model directory."""
    model: str                                   # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None                              # llama.cpp pre-tokenizer name (BPE only)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)   # bos/eos/unknown/padding -> id
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None
    add_space_prefix: bool | None = None          # SentencePiece: "▁" before the text (None: llama.cpp's default)


def read_json(path: Path) -> dict:
    """A JSON file as a dict, or an MlxlabError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MlxlabError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno, column=exc.colno) from exc


def token_text(value) -> str | None:
    """A special token entry of tokenizer_config.json (a string or an AddedToken dict) as text."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _normalize_regex(regex: str) -> str:
    """HF writes the contraction alternatives case-insensitively (`(?i:'s|...)`); llama.cpp spells them out."""
    match = re.match(r"^\(\?i:((?:'[a-z]+\|?)+)\)", regex)
    if not match:
        return regex
    spelled = "|".join("'" + "".join(f"[{c.lower()}{c.upper()}]" for c in alt[1:])
                       for alt in match.group(1).split("|"))
    return f"(?:{spelled})" + regex[match.end():]


def _pre_regexes(pre: dict | None) -> list[str] | None:
    """The split regexes a tokenizer.json pre-tokenizer applies, in order (None: not byte-level BPE)."""
    if pre is None:
        return None
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    regexes, byte_level = [], False
    for part in parts:
        kind = part.get("type")
        if kind == "Split" and "Regex" in part.get("pattern", {}):
            regexes.append(_normalize_regex(part["pattern"]["Regex"]))
        elif kind == "Digits":
            regexes.append(r"\p{N}" if part.get("individual_digits") else r"\p{N}+")
        elif kind == "ByteLevel":
            byte_level = True
            if part.get("use_regex", True):
                regexes.append(GPT2_RE)
        else:
            return None
    return regexes if byte_level else None


def pre_tokenizer_name(tokenizer_json: dict, path: Path) -> str:
    """The `tokenizer.ggml.pre` value under which llama.cpp splits text as this tokenizer.json does."""
    regexes = _pre_regexes(tokenizer_json.get("pre_tokenizer"))
    if regexes is None:
        raise MlxlabError("this tokenizer.json is not byte-level BPE with a known pre-tokenizer", path=path,
                          hint="supported: GPT-2, SmolLM, Llama 3 and Qwen style byte-level BPE, or SentencePiece")
    for name in _EXPORT_PRE:
        if PRE_TOKENIZERS.get(name) == regexes:
            return "gpt-2" if name == "gpt2" else name      # llama.cpp spells the GPT-2 style "gpt-2"
    raise MlxlabError(f"unknown pre-tokenizer regexes {regexes!r}: llama.cpp would split text differently",
                      path=path, hint="known styles: GPT-2, SmolLM, Llama 3, Qwen 2")


def _bpe_meta(model_dir: Path, tok_json: dict, config: dict) -> TokenizerMeta:
    """Byte-level BPE vocabulary, merges and token types from tokenizer.json."""
    path = model_dir / "tokenizer.json"
    model = tok_json.get("model", {})
    if model.get("type") != "BPE":
        raise MlxlabError(f"tokenizer model {model.get('type')!r} is not supported", path=path,
                          hint="supported: byte-level BPE (tokenizer.json) or SentencePiece (tokenizer.model)")
    vocab: dict[str, int] = dict(model.get("vocab", {}))
    added = {a["id"]: a for a in tok_json.get("added_tokens", [])}
    for idx, entry in added.items():
        vocab.setdefault(entry["content"], idx)
    size = max(vocab.values()) + 1
    tokens: list[str | None] = [None] * size
    for text, idx in vocab.items():
        tokens[idx] = text
    types = []
    for idx, text in enumerate(tokens):
        if text is None:
            tokens[idx], kind = f"[PAD{idx}]", UNUSED
        elif idx in added:
            entry = added[idx]
            # specials (<|im_end|>) are control tokens; other added tokens are matched whole, as user-defined
            kind = CONTROL if entry.get("special") else USER_DEFINED
        else:
            kind = NORMAL
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    meta = TokenizerMeta(model="gpt2", pre=pre_tokenizer_name(tok_json, path), tokens=tokens, types=types,
                         merges=merges)
    post = json.dumps(tok_json.get("post_processor") or {})
    bos = token_text(config.get("bos_token"))
    meta.add_bos = bool(config.get("add_bos_token", bos is not None and json.dumps(bos) in post))
    meta.add_eos = bool(config.get("add_eos_token", False))
    return meta


def _sentencepiece_meta(model_dir: Path, config: dict) -> TokenizerMeta:
    """SentencePiece pieces with their real scores and types (llama.cpp's "llama" tokenizer model)."""
    path = model_dir / "tokenizer.model"
    try:
        from sentencepiece import SentencePieceProcessor
    except ImportError as exc:
        raise MlxlabError("exporting a SentencePiece tokenizer needs the `sentencepiece` package", path=path,
                          hint="pip install sentencepiece") from exc
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(path))
    tokens, scores, types = [], [], []
    for idx in range(sp.vocab_size()):
        tokens.append(sp.IdToPiece(idx))
        scores.append(float(sp.GetScore(idx)))
        types.append(UNKNOWN if sp.IsUnknown(idx) else CONTROL if sp.IsControl(idx) else
                     UNUSED if sp.IsUnused(idx) else BYTE if sp.IsByte(idx) else NORMAL)
    # SentencePiece cannot say which pieces are user-defined (matched whole, like Gemma's whitespace runs);
    # tokenizer.json lists them as added tokens that are not special
    tok_json = model_dir / "tokenizer.json"
    space_prefix = None
    if tok_json.is_file():
        fast = read_json(tok_json)
        # the fast tokenizer's normalizer says whether a "▁" goes before the text (Llama 2 yes, Gemma no)
        space_prefix = '"Prepend"' in json.dumps(fast.get("normalizer")) or fast.get("pre_tokenizer") is not None \
            and '"prepend_scheme": "always"' in json.dumps(fast.get("pre_tokenizer"))
        for entry in fast.get("added_tokens", []):
            idx = entry.get("id")
            if not entry.get("special") and isinstance(idx, int) and idx < len(types) and types[idx] == NORMAL:
                types[idx] = USER_DEFINED
    added = read_json(model_dir / "added_tokens.json") if (model_dir / "added_tokens.json").is_file() else {}
    for text, idx in sorted(added.items(), key=lambda kv: kv[1]):
        if idx == len(tokens):
            tokens.append(text), scores.append(-1000.0), types.append(USER_DEFINED)
    meta = TokenizerMeta(model="llama", pre="default", tokens=tokens, types=types, scores=scores,
                         add_space_prefix=space_prefix)
    meta.add_bos = bool(config.get("add_bos_token", True))
    meta.add_eos = bool(config.get("add_eos_token", False))
    return meta


def chat_template(model_dir: Path, config: dict) -> str | None:
    """The Jinja chat template: chat_template.jinja wins over tokenizer_config.json (as in transformers)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):       # named templates: llama.cpp reads the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template


def _loaded_tokenizer_json(model_dir: Path) -> dict | None:
    """The fast tokenizer as transformers loads it (what mlx-lm tokenizes with), else tokenizer.json as is.

    transformers 5 rebuilds some tokenizers from the model type (Qwen2's digit-splitting regex replaces the
    file's pre-tokenizer), so the file alone can disagree with what the model was trained on.
    """
    try:
        from transformers import AutoTokenizer

        backend = getattr(AutoTokenizer.from_pretrained(str(model_dir)), "backend_tokenizer", None)
        if backend is not None:
            return json.loads(backend.to_str())
    except Exception:  # no transformers, or a tokenizer it cannot load: fall back to the file
        pass
    path = model_dir / "tokenizer.json"
    return read_json(path) if path.is_file() else None


def read_tokenizer(model_dir: Path, model_config: dict) -> TokenizerMeta:
    """GGUF tokenizer metadata for the HF-layout model in `model_dir`."""
    tok_config_path = model_dir / "tokenizer_config.json"
    config = read_json(tok_config_path) if tok_config_path.is_file() else {}
    tok_json = _loaded_tokenizer_json(model_dir)
    if tok_json is not None and tok_json.get("model", {}).get("type") == "BPE" and \
            _pre_regexes(tok_json.get("pre_tokenizer")) is not None:
        meta = _bpe_meta(model_dir, tok_json, config)
    elif (model_dir / "tokenizer.model").is_file():
        meta = _sentencepiece_meta(model_dir, config)
    elif tok_json is not None:
        meta = _bpe_meta(model_dir, tok_json, config)      # raises a precise error
    else:
        raise MlxlabError("no tokenizer.json or tokenizer.model in the model directory", path=model_dir,
                          hint="copy the tokenizer files of the base model next to config.json")
    index = {t: i for i, t in enumerate(meta.tokens)}
    for key, name in (("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")):
        text = token_text(config.get(name))
        if text is not None and text in index:
            meta.special[key] = index[text]
    for key, name in (("bos", "bos_token_id"), ("eos", "eos_token_id")):
        value = model_config.get(name)
        if isinstance(value, list):      # llama 3 lists several end tokens; the first is the EOS
            value = value[0] if value else None
        if key not in meta.special and isinstance(value, int) and 0 <= value < len(meta.tokens):
            meta.special[key] = value
    if "bos" not in meta.special:
        meta.add_bos = False
    meta.chat_template = chat_template(model_dir, config)
    return meta


def pad_vocab(meta: TokenizerMeta, n_vocab: int) -> None:
    """Pad the token list to the embedding's row count (llama.cpp requires them equal)."""
    if len(meta.tokens) > n_vocab:
        raise MlxlabError(f"the tokenizer has {len(meta.tokens)} tokens but the embedding only {n_vocab} rows",
                          hint="the tokenizer files do not belong to this model")
    for idx in range(len(meta.tokens), n_vocab):
        meta.tokens.append(f"[PAD{idx}]")
        meta.types.append(UNUSED)
        if meta.scores is not None:
            meta.scores.append(-1000.0)


def write_tokenizer(writer, meta: TokenizerMeta) -> None:
    """Add `tokenizer.ggml.*` and the chat template to a GGUFWriter."""
    import numpy as np

    writer.add_tokenizer_model(meta.model)
    if meta.pre:
        writer.add_tokenizer_pre(meta.pre)
    writer.add_token_list(meta.tokens)
    # llama.cpp refuses uint32 token types (mlx-lm's bug): write int32 explicitly
    writer.add_token_types(np.asarray(meta.types, dtype=np.int32).tolist())
    if meta.scores is not None:
        writer.add_token_scores(meta.scores)
    if meta.merges:
        writer.add_token_merges(meta.merges)
    if meta.add_space_prefix is not None:
        writer.add_add_space_prefix(meta.add_space_prefix)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
              "unknown": writer.add_unk_token_id, "padding": writer.add_pad_token_id}
    for key, idx in meta.special.items():
        adders[key](idx)
    writer.add_add_bos_token(meta.add_bos)
    writer.add_add_eos_token(meta.add_eos)
    if meta.chat_template:
        writer.add_chat_template(meta.chat_template)
