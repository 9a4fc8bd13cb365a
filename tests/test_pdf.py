"""PDF knowledge documents: read through pypdf, chunked like Markdown (headings kept), never silently dropped by
SDG. The PDF is written by the test itself: three pages, headings, paragraphs and a table-like block."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxlab.errors import MlxlabError

PAGES = [
    ["Jolie Services",
     "A Jolie program is made of services that talk to each other through ports and operations,",
     "and each service declares what it offers in an interface."],
    ["Input Ports",
     "An input port says where a service listens, which protocol it speaks and which interfaces it offers.",
     "Name      Location                 Protocol",
     "Calc      socket://localhost:8000  http",
     "Store     socket://localhost:9000  sodep"],
    ["Execution Modality",
     "With execution concurrent, every request is served by its own session, in parallel with the others."],
]


def write_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A minimal, valid PDF with one text line per entry (Helvetica 11 pt), one page per list."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        body = "BT /F1 11 Tf 14 TL 50 760 Td " + " ".join(
            "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*" for line in lines
        ) + " ET"
        objects.append(f"<< /Length {len(body)} >>\nstream\n{body}\nendstream")
        content = len(objects)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def test_a_pdf_reads_and_chunks_like_markdown(tmp_path):
    from mlxlab.chunking import chunk_documents, read_document

    pdf = write_pdf(tmp_path / "jolie.pdf", PAGES)
    text = read_document(pdf)
    for lines in PAGES:                                   # every page, every line
        for line in lines:
            assert " ".join(line.split()) in " ".join(text.split())
    assert "## Input Ports" in text and "## Execution Modality" in text
    chunks = chunk_documents([pdf], lambda t: len(t.split()), chunk_tokens=40, overlap_tokens=0)
    ports = [c for c in chunks if "listens" in c.text]
    assert ports and "Input Ports" in ports[0].text.splitlines()[0]        # a chunk carries its heading
    assert any("socket://localhost:9000" in c.text for c in chunks)       # the table-like block survives


def test_a_broken_pdf_is_a_clear_error(tmp_path):
    from mlxlab.chunking import read_document

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(MlxlabError, match="PDF"):
        read_document(broken)


def test_sdg_reads_pdf_documents_instead_of_dropping_them(tmp_path):
    from types import SimpleNamespace

    from mlxlab.config import GenerateConfig
    from mlxlab.sdg import LeafStats, _knowledge_chunks

    pdf = write_pdf(tmp_path / "jolie.pdf", PAGES)
    leaf = SimpleNamespace(name="knowledge/jolie", kind="knowledge", documents=(pdf,))
    stats = LeafStats("knowledge/jolie", "knowledge")
    teacher = SimpleNamespace(count_tokens=lambda t: len(t.split()))
    chunks = _knowledge_chunks(leaf, teacher, GenerateConfig(chunk_tokens=60, chunk_overlap=0), stats)
    assert chunks and not any("skipped" in note for note in stats.notes)
    assert any("session" in c.text for c in chunks)
