"""What the `Teacher` front and its engines share: the `Engine` interface, the `Completion` record, generation
counters, per-completion seeds, shared-prefix planning and stop strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from mlxlab.errors import MlxlabError

MIN_SHARED_PREFIX = 16          # shorter shared prefixes are not worth a separate prefill

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


class Engine:
    """One teacher backend behind the interface `Teacher` calls: generate from chat prompts, complete raw
    texts, score (log-likelihoods), choose among short answers, count tokens, close. What a backend cannot do
    is a clear error (or None, for the optional `choose`) here, not a test of the backend in each method."""

    backend = "engine"
    model = tokenizer = None        # the in-process MLX model and its tokenizer (mlx engine only)

    def __init__(self, stats: GenerationStats, *, batch_size: int, prefix_cache: bool, concurrency: int):
        self.stats = stats          # the Teacher's counters, shared
        self.batch_size = batch_size
        self.prefix_cache = prefix_cache
        self.concurrency = concurrency

    def generate(self, prompts: list[Messages], jobs: list[tuple[int, int, int]], temperature: float, top_p: float,
                 max_tokens: int, progress: Progress | None) -> list[Completion]:
        """One completion per job (prompt index, sample index, seed), in job order."""
        raise NotImplementedError

    def complete(self, texts: list[str], keys: list[int], stop: tuple[str, ...], temperature: float, top_p: float,
                 max_tokens: int, progress: Progress | None) -> list[Completion]:
        """One continuation of each raw text (seeded by `keys`), cut before the first of the `stop` strings."""
        raise NotImplementedError

    def choose(self, prompts: list[Messages], choices: list[str], prefix: str,
               progress: Progress | None) -> list[str] | None:
        """The most likely of `choices` after each prompt's reply starts with `prefix`; None where it cannot."""
        return None

    def can_score(self) -> bool:
        """True when `score` works (an in-process model that is still open)."""
        return False

    def tokens(self, text: str) -> list[int]:
        """`text` in the model's own tokenizer, as raw text (no chat template): what `score` takes."""
        raise self.not_scoring()

    def score(self, encoded: list[tuple[list[int], int]], batch_size: int,
              progress: Progress | None) -> list[tuple[float, int]]:
        """(sum of log p, tokens) of each token sequence from its `boundary` on, for (tokens, boundary) pairs."""
        raise self.not_scoring()

    def not_scoring(self) -> MlxlabError:
        """The error for a scoring call this engine cannot answer."""
        return MlxlabError(f"log-likelihood scoring needs an in-process teacher (mlx or llama-cpp), not "
                           f"{self.backend}", hint="use --scorer judge (or auto) with this teacher")

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` (about 4 characters a token where the tokenizer is not at hand)."""
        return max(1, len(text) // 4)

    def num_parameters(self) -> int | None:
        """Parameters of an in-process model, else None (unknown)."""
        return None

    def servers(self) -> list[dict] | None:
        """Per server of a fleet, its URL, the requests it answered and whether it is down; else None."""
        return None

    def weights_changed(self) -> None:
        """The model's weights changed in place: drop what was computed with the old ones."""

    def close(self) -> None:
        """Free the model; closing twice does nothing."""
