"""Chat JSONL datasets for training: read with file:line errors, tokenize with prompt masking, batch by length.

A dataset is a folder with `train.jsonl` (and optionally `valid.jsonl`), or one `.jsonl` file, holding one
`{"messages": [{"role": ..., "content": ...}, ...]}` object per line, or a `{"text": ...}` object (plain text such
as a document chunk, trained on every token). A record's `metadata.mask_prompt` (true/false) overrides the
training's `mask_prompt` for that record: SDG writes `false` where the prompt is worth learning too. Tokenization goes through mlx-lm's
`ChatDataset` (the model's chat template, prompt masking); batching is ours because mlx-lm's sorts the whole
set by length and keeps no position we could resume from.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from mlxlab.errors import MlxlabError

ROLES = ("system", "user", "assistant")
PAD_MULTIPLE = 16      # pad batch widths to a multiple of this: fewer distinct shapes for mx.compile to trace
BUCKET_BATCHES = 8     # a length bucket holds this many batches: sorted inside, shuffled as whole batches


@dataclass(frozen=True)
class Tokenized:
    """Token ids of one split, with the offset where the loss starts (prompt masking) and what was cut."""
    samples: list[tuple[list[int], int]]   # (tokens, first trained position)
    truncated: int                         # samples longer than max_seq_length, cut to it
    untrained: int                         # samples left out: no trained token left after the cut
    path: Path


def read_jsonl(path: str | Path) -> list[dict]:
    """The chat records in one JSONL file; a bad line is an MlxlabError naming file:line."""
    path = Path(path)
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MlxlabError(f"cannot read dataset: {exc}", path=path) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MlxlabError(f"not valid JSON: {exc.msg}", path=path, line=number, column=exc.colno,
                              hint='each line must be one {"messages": [...]} object') from None
        if isinstance(record, dict) and "messages" not in record and "text" in record:
            if not isinstance(record["text"], str) or not record["text"].strip():
                raise MlxlabError('"text" must be a non-empty string', path=path, line=number)
            records.append(record)
            continue
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages:
            raise MlxlabError('expected an object with a non-empty "messages" list (or a "text" string)',
                              path=path, line=number)
        for i, msg in enumerate(messages):
            if not (isinstance(msg, dict) and isinstance(msg.get("role"), str)
                    and isinstance(msg.get("content"), str)):
                raise MlxlabError(f'messages[{i}] needs string "role" and "content"', path=path, line=number)
            if msg["role"] not in ROLES:
                raise MlxlabError(f"messages[{i}] has role {msg['role']!r}", path=path, line=number,
                                  hint="roles are " + ", ".join(ROLES))
        if not any(m["role"] == "assistant" for m in messages):
            raise MlxlabError("the record has no assistant message to train on", path=path, line=number)
        records.append(record)
    return records


def dataset_files(data: str | Path) -> tuple[Path, Path | None]:
    """(train file, valid file or None) for a folder with train.jsonl/valid.jsonl or a single .jsonl."""
    data = Path(data)
    if data.is_file():
        return data, None
    if data.is_dir():
        train = data / "train.jsonl"
        if not train.is_file():
            raise MlxlabError("no train.jsonl in the data folder", path=data,
                              hint="put the training examples in train.jsonl (and optionally valid.jsonl)")
        valid = data / "valid.jsonl"
        return train, valid if valid.is_file() else None
    raise MlxlabError("dataset not found", path=data, hint="pass a folder with train.jsonl or a .jsonl file")


def data_hash(*paths: Path | None) -> str:
    """A short content hash of the dataset files, recorded in checkpoints."""
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def tokenize(records: list[dict], tokenizer, *, path: Path, max_seq_length: int,
             mask_prompt: bool = True) -> Tokenized:
    """Token ids for each record through the model's chat template; longer samples cut and counted.

    `{"text"}` records are plain text with an end-of-sequence token, trained on every token; a record's
    `metadata.mask_prompt` overrides `mask_prompt`.
    """
    from mlx_lm.tuner.datasets import ChatDataset

    chats = [r for r in records if "messages" in r]
    if chats and not getattr(tokenizer, "chat_template", None):
        raise MlxlabError("the model's tokenizer has no chat template, so chat data cannot be formatted",
                          hint="use an instruction-tuned model, or add a chat_template to its tokenizer_config.json")
    masked = ChatDataset([], tokenizer, mask_prompt=True)
    whole = ChatDataset([], tokenizer, mask_prompt=False)
    eos = getattr(tokenizer, "eos_token_id", None)
    samples, truncated, untrained = [], 0, 0
    for record in records:
        if "messages" not in record:
            tokens, offset = list(tokenizer.encode(record["text"])) + ([eos] if eos is not None else []), 0
        else:
            own = (record.get("metadata") or {}).get("mask_prompt")
            chat = masked if (mask_prompt if not isinstance(own, bool) else own) else whole
            tokens, offset = chat.process(record)
        tokens = list(tokens)
        if len(tokens) > max_seq_length:
            tokens = tokens[:max_seq_length]
            truncated += 1
        if offset >= len(tokens):
            untrained += 1      # the cut removed every trained token: such a sample would only add padding
            continue
        samples.append((tokens, offset))
    return Tokenized(samples, truncated, untrained, path)


def batch_order(lengths: list[int], batch_size: int, *, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches of sample indices: shuffle, bucket, sort each bucket by length, shuffle the batches.

    Deterministic in (seed, epoch), so a resumed run sees exactly the batches it would have seen.
    """
    import numpy as np

    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    bucket = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start:start + bucket], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def batches_per_epoch(count: int, batch_size: int) -> int:
    """Batches in one epoch (the last may be smaller: no sample is dropped)."""
    return math.ceil(count / batch_size)


def make_batch(samples: list[tuple[list[int], int]], indices: list[int]):
    """(tokens [B, T], [[offset, length]] per row, real tokens, padded slots) as MLX arrays for mlx-lm's loss."""
    import mlx.core as mx
    import numpy as np

    rows = [samples[i] for i in indices]
    longest = max(len(tokens) for tokens, _ in rows)
    # the model sees width - 1 positions (inputs are shifted by one): keep that a multiple, as mlx-lm does
    width = 1 + PAD_MULTIPLE * math.ceil((longest - 1) / PAD_MULTIPLE)
    array = np.zeros((len(rows), width), np.int32)
    for r, (tokens, _) in enumerate(rows):
        array[r, :len(tokens)] = tokens
    real = sum(len(tokens) for tokens, _ in rows)
    # mlx-lm's default_loss trains targets t with offset <= t <= length; its own batcher passes len(tokens),
    # which also trains one padding target per row, so pass the index of the last real token instead.
    lengths = mx.array([[offset, len(tokens) - 1] for tokens, offset in rows])
    return mx.array(array), lengths, real, array.size


def read_sets(data: str | Path, tokenizer, cfg, w=None):
    """(train, valid or None, general or None, data hash) tokenized for training under `cfg` (a TrainConfig).

    Rank 0 reads the files and sends the records to the other ranks (`distributed.from_main`): the data need not
    exist on every machine, and a bad file is the same clear error on every rank.
    """
    from mlxlab.distributed import from_main

    def read() -> dict:
        train_file, valid_file = dataset_files(data)
        records = read_jsonl(train_file)
        if not records:
            raise MlxlabError("the training set is empty", path=train_file,
                              hint='add one {"messages": [...]} object per line')
        sets = {"train": [str(train_file), records],
                "valid": [str(valid_file), read_jsonl(valid_file)] if valid_file is not None else None,
                "general": [cfg.general_valid, read_jsonl(cfg.general_valid)] if cfg.general_valid else None}
        return {**sets, "hash": data_hash(train_file, valid_file)}

    got = from_main(read, "reading the training data", w)
    train_path, records = got["train"]
    train_set = tokenize(records, tokenizer, path=Path(train_path), max_seq_length=cfg.max_seq_length,
                         mask_prompt=cfg.mask_prompt)
    if not train_set.samples:
        raise MlxlabError(f"no sample has an assistant token left within max_seq_length={cfg.max_seq_length}",
                          path=train_path, hint="raise --max-seq-length or shorten the prompts")
    valid_set = general_set = None
    if got["valid"] and got["valid"][1]:
        valid_set = tokenize(got["valid"][1], tokenizer, path=Path(got["valid"][0]),
                             max_seq_length=cfg.max_seq_length, mask_prompt=cfg.mask_prompt)
        valid_set = valid_set if valid_set.samples else None
    if got["general"]:
        general_set = tokenize(got["general"][1], tokenizer, path=Path(got["general"][0]),
                               max_seq_length=cfg.max_seq_length, mask_prompt=True)
        if not general_set.samples:
            raise MlxlabError("the general_valid set has no usable sample", path=got["general"][0],
                              hint='give chat records {"messages": [user, assistant]}')
    return train_set, valid_set, general_set, got["hash"]
