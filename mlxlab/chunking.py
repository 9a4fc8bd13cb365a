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

from mlxlab.documents import READABLE_SUFFIXES, read_document  # noqa: F401  (re-exported: SDG reads both here)
from mlxlab.errors import MlxlabError

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


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


def chunk_text(text: str, count_tokens: Callable[[str], int], *, chunk_tokens: int = 500,
               overlap_tokens: int = 50, source: str = "") -> list[Chunk]:
    """Chunks of ~`chunk_tokens` tokens (by `count_tokens`), overlapping by ~`overlap_tokens` of paragraphs."""
    if chunk_tokens < 16:
        raise MlxlabError(f"chunk_tokens must be at least 16, found {chunk_tokens}")
    blocks = []
    for trail, paragraph in _blocks(text):
        budget = max(8, chunk_tokens - count_tokens("\n".join(trail)) - 2)
        for piece in (_split_long(paragraph, budget, count_tokens) if count_tokens(paragraph) > budget
                      else [paragraph]):
            blocks.append((trail, piece, count_tokens(piece)))
    chunks: list[Chunk] = []
    i = 0
    while i < len(blocks):
        trail = blocks[i][0]
        header = "\n".join(trail)
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
    return re.sub(r"^#+\s*|\s*#*\s*$", "", line).strip()


def section_pairs(paths, *, max_words: int = 120) -> list[dict]:
    """One {question, answer, source} per document section: a question made from the section's heading (and the
    document's title), answered with the section's opening paragraphs — whole ones, about `max_words` words.

    Knowledge that cannot be junk in the shape users ask for it: the answer is the documents' own text, in an
    assistant turn after a question. A small teacher's Q&A about the same text is mostly invented.
    """
    out = []
    for path in paths:
        sections: dict[tuple[str, ...], list[str]] = {}
        for trail, paragraph in _blocks(read_document(path)):
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
            if words < 20:
                continue
            topic, title = _heading_text(trail[-1]), _heading_text(trail[0])
            ask = _ASK[sum(map(ord, topic)) % len(_ASK)]
            out.append({"question": ask.format(topic=topic[0].lower() + topic[1:], title=title),
                        "answer": "\n\n".join(map(_unwrap, answer)), "source": f"{Path(path).name}: {topic}"})
    return out


def passages(paths, *, max_words: int = 120, min_words: int = 20) -> list[dict]:
    """Every document's text as passages of whole paragraphs under one heading, about `max_words` words each:
    [{"text", "heading", "source"}], in document order. A paragraph longer than `max_words` is a passage alone;
    a passage under `min_words` (a lone caption or link) is left out.

    These are the answers of back-translated knowledge Q&A (the teacher writes only the question), so every
    part of the documents, not just each section's opening, can be asked about and answered faithfully.
    """
    out = []
    for path in paths:
        current: list[str] = []
        words, trail = 0, ()

        def flush():
            if words >= min_words:
                heading = _heading_text(trail[-1]) if trail else ""
                out.append({"text": "\n\n".join(map(_unwrap, current)), "heading": heading,
                            "source": f"{Path(path).name}: {heading}" if heading else Path(path).name})

        for block_trail, paragraph in _blocks(read_document(path)):
            count = len(paragraph.split())
            # a paragraph that ends in ':' introduces the next one (a list, a code block): they stay together
            lead_in = bool(current) and current[-1].rstrip().endswith(":")
            if current and (block_trail != trail or (words + count > max_words and not lead_in)):
                flush()
                current, words = [], 0
            current.append(paragraph)
            words += count
            trail = block_trail
        flush()
    return out
