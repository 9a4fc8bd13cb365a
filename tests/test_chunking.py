"""Passages and section questions from knowledge documents: every paragraph in exactly one passage, headings kept
as written (acronyms and names survive), empty headings handled."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxlab.sdg.chunking import chunk_text, passages, section_pairs

LONG = " ".join(f"word{i}" for i in range(110)) + "."                      # 110 words: a passage of its own
SHORT = "This closing sentence has exactly fifteen words and used to vanish from every passage made."


def write(tmp_path: Path, text: str, name: str = "doc.md") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_short_paragraph_after_a_full_passage_is_kept(tmp_path):
    doc = write(tmp_path, f"# Guide\n\n## Ports\n\n{LONG}\n\n{SHORT}\n\n## Next\n\n{LONG}\n")
    found = passages([doc])
    assert [p["heading"] for p in found] == ["Ports", "Next"]
    assert found[0]["text"] == f"{LONG}\n\n{SHORT}"                # joined to its neighbour under the same heading


def test_a_short_first_paragraph_joins_the_next_and_a_short_section_stands_alone(tmp_path):
    doc = write(tmp_path, f"Intro line.\n\n# Guide\n\n{SHORT}\n\n{LONG}\n\n## Tiny\n\nOnly a few words here.\n")
    found = passages([doc])
    assert [(p["heading"], p["text"]) for p in found] == [
        ("", "Intro line."), ("Guide", f"{SHORT}\n\n{LONG}"), ("Tiny", "Only a few words here.")]
    assert found[0]["source"] == "doc.md" and found[2]["source"] == "doc.md: Tiny"


# --- every word of a document, in order, in exactly one passage (a property) -------------------------------------

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
LINES = st.lists(WORDS, min_size=1, max_size=12).map(" ".join)


@st.composite
def elements(draw) -> tuple[str, list[str]]:
    """One piece of Markdown and the words it contributes to the document's text (a heading: none)."""
    kind = draw(st.sampled_from(["heading", "paragraph", "paragraph", "lead-in", "list", "code"]))
    if kind == "heading":
        title = draw(st.sampled_from(["", "Ports", "REST APIs", "C#", "Input Ports"]))
        closing = draw(st.sampled_from(["", " #", " ##"]))
        return "#" * draw(st.integers(1, 6)) + (" " + title if title else "") + closing, []
    if kind == "code":            # a '#' line inside a code block is code, not a heading
        lines = ["```", "# not a heading", *draw(st.lists(LINES, min_size=0, max_size=3)), "```"]
    elif kind == "list":
        lines = [f"- {line}" for line in draw(st.lists(LINES, min_size=1, max_size=4))]
    else:
        lines = draw(st.lists(LINES, min_size=1, max_size=6))
        if kind == "lead-in":
            lines[-1] += ":"
    return "\n".join(lines), " ".join(lines).split()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(elements(), min_size=1, max_size=25), max_words=st.integers(5, 60),
       min_words=st.integers(1, 30))
def test_passages_cover_every_word_once_in_order(tmp_path, parts, max_words, min_words):
    doc = write(tmp_path, "\n\n".join(text for text, _ in parts) + "\n")
    found = passages([doc], max_words=max_words, min_words=min_words)
    assert [w for p in found for w in p["text"].split()] == [w for _, words in parts for w in words]
    assert all(p["text"].strip() for p in found)


# --- headings ----------------------------------------------------------------------------------------------------

GUIDE = """\
# Jolie services {#jolie}

## REST APIs

A Jolie service can publish REST APIs over the http protocol; each operation becomes a resource.

## Interfaces

Interfaces list the operations a service offers, and the interfaces of a port say what it accepts.

## StringUtils

StringUtils is the service of the standard library for strings: length, split, replace and more.

## Input Ports

An input port says where a service listens, which protocol it speaks and which interfaces it offers.

## Running Jolie programs

You start a program with the `jolie` command, which loads the file and runs its main service.
""".replace(".\n", ". The reference manual shows how, with examples.\n")     # 20+ words: each makes a question


def test_section_questions_keep_headings_as_written(tmp_path):
    questions = {p["source"]: p["question"] for p in section_pairs([write(tmp_path, GUIDE)])}
    topics = {"REST APIs": "REST APIs", "Interfaces": "interfaces", "StringUtils": "StringUtils",
              "Input Ports": "Input Ports", "Running Jolie programs": "running Jolie programs"}
    for heading, topic in topics.items():
        question = questions[f"doc.md: {heading}"]
        # an ordinary word starting a sentence-case heading reads in lowercase; acronyms, names, Title Case stay
        assert topic in question and "Jolie services" in question and "{#" not in question, question


def test_empty_headings_are_sections_without_a_title(tmp_path):
    body = "Some text that is long enough to be asked about, with more than twenty words in it, " * 2
    text = f"# Guide\n\n## ##\n\n{body}\n\n## C# #\n\n{body}\n\n#\n\n{body}\n\n##  \n\n### Ports\n\n{body}\n"
    doc = write(tmp_path, text)
    pairs = section_pairs([doc])
    # no question from an empty heading, nor below one with no title above; a '#' that is part of a name stays
    assert [(p["source"], p["question"]) for p in pairs] == [("doc.md: C#", "Can you describe C#, as in Guide?")]
    assert [p["heading"] for p in passages([doc])] == ["", "C#", "", "Ports"]
    assert "#" not in "".join(p["text"] for p in passages([doc]))
    chunks = chunk_text(text, lambda t: len(t.split()), chunk_tokens=40, overlap_tokens=0)
    lines = [line for c in chunks for line in c.text.splitlines()]
    assert chunks and all(line.strip("# ") for line in lines if line.startswith("#"))     # no empty heading line
    assert chunks[-1].text.startswith("### Ports\n\nSome text")
