"""Knowledge documents as chunks of about `chunk_tokens` teacher tokens, with overlap, headings kept.

A chunk never starts in the middle of a paragraph when it can avoid it, and carries the Markdown
headings it sits under, so a chunk taken alone still says what it is about. A paragraph longer than a
chunk is split by lines, then by words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlxlab.taxonomy.documents import read_document
from mlxlab.errors import MlxlabError

_HEADING = re.compile(r"^(#{1,6})(?:[ \t].*)?$")      # a Markdown heading, possibly empty ("#", "## ##")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: its text (headings first), where it came from, its size in tokens."""
    text: str
    source: str
    index: int
    tokens: int


def _blocks(text: str) -> list[tuple[tuple[str, ...], str]]:
    """(heading trail, paragraph) pairs; headings update the trail and are not paragraphs themselves."""
    trail: list[tuple[int, str]] = []
    blocks, lines = [], []

    def flush():
        if any(line.strip() for line in lines):
            blocks.append((tuple(h for _, h in trail), "\n".join(lines).strip()))
        lines.clear()

    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        heading = None if in_code else _HEADING.match(line)
        if heading:
            flush()
            level = len(heading.group(1))
            trail = [(lv, h) for lv, h in trail if lv < level] + [(level, line.strip())]
        elif not line.strip() and not in_code:
            flush()
        else:
            lines.append(line)
    flush()
    return blocks


def _split_long(paragraph: str, limit: int, count: Callable[[str], int]) -> list[str]:
    """Pieces of a paragraph, each within `limit` tokens: whole lines where they fit, else runs of words."""
    units = []
    for line in paragraph.splitlines():
        units.extend([line] if count(line) <= limit else [w for w in line.split(" ") if w] or [line])
    pieces, current = [], ""
    for unit in units:
        sep = "\n" if unit in paragraph.splitlines() else " "
        candidate = f"{current}{sep}{unit}" if current else unit
        if current and count(candidate) > limit:
            pieces.append(current)
            candidate = unit
        current = candidate
    if current:
        pieces.append(current)
    return pieces


def _header(trail: tuple[str, ...]) -> str:
    """The heading lines a chunk starts with: its trail, less the empty headings."""
    return "\n".join(line for line in trail if _heading_text(line))


def chunk_text(text: str, count_tokens: Callable[[str], int], *, chunk_tokens: int = 500,
               overlap_tokens: int = 50, source: str = "") -> list[Chunk]:
    """Chunks of ~`chunk_tokens` tokens (by `count_tokens`), overlapping by ~`overlap_tokens` of paragraphs."""
    if chunk_tokens < 16:
        raise MlxlabError(f"chunk_tokens must be at least 16, found {chunk_tokens}")
    blocks = []
    for trail, paragraph in _blocks(text):
        budget = max(8, chunk_tokens - count_tokens(_header(trail)) - 2)
        for piece in (_split_long(paragraph, budget, count_tokens) if count_tokens(paragraph) > budget
                      else [paragraph]):
            blocks.append((trail, piece, count_tokens(piece)))
    chunks: list[Chunk] = []
    i = 0
    while i < len(blocks):
        trail = blocks[i][0]
        header = _header(trail)
        used = count_tokens(header) if header else 0
        j = i
        while j < len(blocks) and (j == i or used + blocks[j][2] + 1 <= chunk_tokens):
            used += blocks[j][2] + 1
            j += 1
        body = "\n\n".join(b[1] for b in blocks[i:j])
        chunk = f"{header}\n\n{body}" if header and not body.startswith(header) else body
        chunks.append(Chunk(chunk, source, len(chunks), count_tokens(chunk)))
        if j >= len(blocks):
            break
        # step back over whole paragraphs worth up to `overlap_tokens`, but always move forward
        back, k = 0, j
        while k - 1 > i and back + blocks[k - 1][2] <= overlap_tokens:
            k -= 1
            back += blocks[k][2]
        i = k
    return chunks


def chunk_documents(paths, count_tokens: Callable[[str], int], *, chunk_tokens: int = 500,
                    overlap_tokens: int = 50) -> list[Chunk]:
    """Chunks of every .md/.txt/.pdf document in `paths`, in order; other files are an MlxlabError."""
    chunks: list[Chunk] = []
    for path in paths:
        for chunk in chunk_text(read_document(path), count_tokens, chunk_tokens=chunk_tokens,
                                overlap_tokens=overlap_tokens, source=str(path)):
            chunks.append(Chunk(chunk.text, chunk.source, len(chunks), chunk.tokens))
    return chunks


# questions made from a section heading: several phrasings, so the model learns the content, not one template
_ASK = ("Explain {topic} ({title}).", "What should I know about {topic}? ({title})",
        "Can you describe {topic}, as in {title}?", "Tell me about {topic} in the context of {title}.")


def _unwrap(paragraph: str) -> str:
    """A prose paragraph's hard-wrapped lines joined (code, lists and tables keep their lines)."""
    lines = paragraph.splitlines()
    if "```" in paragraph or any(re.match(r"\s*([-*+|>]|\d+\.)\s", line) for line in lines):
        return paragraph
    return " ".join(line.strip() for line in lines)


def _heading_text(line: str) -> str:
    """A heading line's text as written, without its `#` marks (and closing ones) and a trailing attribute block
    (`{#id}`, as Pandoc and kramdown write it): '' for an empty heading."""
    text = re.sub(r"^#+", "", line.strip())
    text = re.sub(r"(?:^|\s)#+$", "", text.rstrip())      # "# C#" keeps its '#': a closing run follows a space
    return re.sub(r"\s*\{[#.][^{}]*\}$", "", text.strip()).strip()


_PUNCT = ".,;:!?()[]{}\"'*_`"


def _names(paragraphs: list[str]) -> set[str]:
    """Capitalised words that a document's prose (code left out) writes so mid-sentence and never in lowercase:
    its names ("Jolie", "Mars"), as opposed to ordinary words that a heading capitalises ("Interfaces")."""
    text = re.sub(r"```.*?(?:```|$)|`[^`]*`", " ", "\n".join(paragraphs), flags=re.S)
    capitalised, lower = set(), set()
    for line in text.splitlines():
        previous = ""                       # a line starts a sentence (wrapped prose, list items, table rows)
        for token in line.split():
            word = token.strip(_PUNCT)
            if word.isalpha() and word.islower():
                lower.add(word)
            elif word.isalpha() and word[0].isupper() and previous and not previous.endswith((".", "!", "?", ":")):
                capitalised.add(word)
            previous = token
    return {w for w in capitalised if w.lower() not in lower}


def _in_sentence(topic: str, names: set[str]) -> str:
    """A heading as it reads inside a question: as written, except that a sentence-case heading's first word is
    lowercased when it is an ordinary word ("Interfaces" -> "interfaces"); "REST APIs", "Jolie services",
    "StringUtils" and a Title Case "Input Ports" keep their case."""
    words = [w.strip(_PUNCT) for w in topic.split()]
    common = [w.isalpha() and w[0].isupper() and w[1:] == w[1:].lower() and w not in names for w in words]
    if common and common[0] and not any(common[1:]):
        return topic[0].lower() + topic[1:]
    return topic


def section_pairs(paths, *, max_words: int = 120) -> list[dict]:
    """One {question, answer, source} per document section: a question made from the section's heading (and the
    document's title), answered with the section's opening paragraphs — whole ones, about `max_words` words.
    Headings keep their case ("REST APIs", "Jolie"; see `_in_sentence`); a section under an empty heading (or with
    no titled heading above it) gets no question.

    Knowledge that cannot be junk in the shape users ask for it: the answer is the documents' own text, in an
    assistant turn after a question. A small teacher's Q&A about the same text is mostly invented.
    """
    out = []
    for path in paths:
        sections: dict[tuple[str, ...], list[str]] = {}
        blocks = _blocks(read_document(path))
        names = _names([paragraph for _, paragraph in blocks])
        for trail, paragraph in blocks:
            if len(trail) >= 2:                     # under a section of the document, not its introduction
                sections.setdefault(trail, []).append(paragraph)
        for trail, paragraphs in sections.items():
            answer, words = [], 0
            for paragraph in paragraphs:
                count = len(paragraph.split())
                if answer and words + count > max_words:
                    break
                answer.append(paragraph)
                words += count
            topic = _heading_text(trail[-1])
            title = next((t for t in map(_heading_text, trail[:-1]) if t), "")
            if words < 20 or not topic or not title:
                continue
            ask = _ASK[sum(map(ord, topic)) % len(_ASK)]
            out.append({"question": ask.format(topic=_in_sentence(topic, names), title=title),
                        "answer": "\n\n".join(map(_unwrap, answer)), "source": f"{Path(path).name}: {topic}"})
    return out


def _sections(blocks: list[tuple[tuple[str, ...], str]]) -> list[tuple[tuple[str, ...], list[str]]]:
    """Runs of consecutive paragraphs under the same heading trail."""
    runs: list[tuple[tuple[str, ...], list[str]]] = []
    for trail, paragraph in blocks:
        if runs and runs[-1][0] == trail:
            runs[-1][1].append(paragraph)
        else:
            runs.append((trail, [paragraph]))
    return runs


def _group(paragraphs: list[str], max_words: int, min_words: int) -> list[list[str]]:
    """One section's paragraphs, in order, as groups of about `max_words` words; every paragraph in one group."""
    groups: list[list[str]] = []
    sizes: list[int] = []
    for paragraph in paragraphs:
        count = len(paragraph.split())
        # a paragraph that ends in ':' introduces the next one (a list, a code block): they stay together
        if groups and (sizes[-1] + count <= max_words or groups[-1][-1].rstrip().endswith(":")):
            groups[-1].append(paragraph)
            sizes[-1] += count
        else:
            groups.append([paragraph])
            sizes.append(count)
    merged: list[list[str]] = []
    merged_sizes: list[int] = []
    for group, size in zip(groups, sizes):
        # a short group (a closing sentence, a caption) joins its neighbour: too little to ask about alone
        if merged and (size < min_words or merged_sizes[-1] < min_words):
            merged[-1] += group
            merged_sizes[-1] += size
        else:
            merged.append(group)
            merged_sizes.append(size)
    return merged


def passages(paths, *, max_words: int = 120, min_words: int = 20) -> list[dict]:
    """Every document's text as passages of whole paragraphs under one heading, about `max_words` words each:
    [{"text", "heading", "source"}], in document order; every paragraph is in exactly one passage. A paragraph
    longer than `max_words` is a passage alone, one that ends in ':' stays with the next (the list or code it
    introduces), and a passage under `min_words` joins its neighbour under the same heading (so a passage can
    reach `max_words + min_words`); a section with only short text is a short passage.

    These are the answers of back-translated knowledge Q&A (the teacher writes only the question), so every
    part of the documents, not just each section's opening, can be asked about and answered faithfully.
    """
    out = []
    for path in paths:
        name = Path(path).name
        for trail, paragraphs in _sections(_blocks(read_document(path))):
            heading = _heading_text(trail[-1]) if trail else ""
            for group in _group(paragraphs, max_words, min_words):
                out.append({"text": "\n\n".join(map(_unwrap, group)), "heading": heading,
                            "source": f"{name}: {heading}" if heading else name})
    return out
