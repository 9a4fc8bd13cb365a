"""PDF knowledge documents: read through pypdf, chunked like Markdown (headings kept), never silently dropped by
SDG; one that cannot be read (encrypted, damaged) is a clear error naming the file, found by validation. The PDFs
are written by the tests themselves: three pages, headings, paragraphs and a table-like block."""

from __future__ import annotations

import re
import subprocess
import sys
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
    from mlxlab.sdg.chunking import chunk_documents, read_document

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


def test_an_edited_pdf_is_read_again(tmp_path):
    from mlxlab.sdg.chunking import read_document

    pdf = write_pdf(tmp_path / "jolie.pdf", PAGES)
    assert "Execution Modality" in read_document(pdf) and read_document(pdf) == read_document(pdf)   # cached
    write_pdf(pdf, PAGES[:2])
    assert "Execution Modality" not in read_document(pdf)


def test_a_broken_pdf_is_a_clear_error(tmp_path):
    from mlxlab.sdg.chunking import read_document

    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(MlxlabError, match="PDF"):
        read_document(broken)


def test_sdg_reads_pdf_documents_instead_of_dropping_them(tmp_path):
    from types import SimpleNamespace

    from mlxlab.config import GenerateConfig
    from mlxlab.sdg.sdg import LeafStats, _knowledge_chunks

    pdf = write_pdf(tmp_path / "jolie.pdf", PAGES)
    leaf = SimpleNamespace(name="knowledge/jolie", kind="knowledge", documents=(pdf,))
    stats = LeafStats("knowledge/jolie", "knowledge")
    teacher = SimpleNamespace(count_tokens=lambda t: len(t.split()))
    chunks = _knowledge_chunks(leaf, teacher, GenerateConfig(chunk_tokens=60, chunk_overlap=0), stats)
    assert chunks and not any("skipped" in note for note in stats.notes)
    assert any("session" in c.text for c in chunks)


# --- PDFs that cannot be read: a clear, file-named error, found by validation before any model loads ------------

KNOWLEDGE = (Path(__file__).parent / "data/good_qna/knowledge/jolie_v3/qna.yaml").read_text()


def encrypted_pdf(path: Path, algorithm: str, user_password: str = "") -> Path:
    """PAGES encrypted by pypdf's writer (an empty user password opens without one, as "no copying" PDFs do)."""
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=str(write_pdf(path.with_name("plain-" + path.name), PAGES)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm=algorithm)
    writer.write(str(path))
    return path


def damaged_pdfs(folder: Path) -> dict[str, Path]:
    """A truncated PDF, and one whose xref table declares more entries than the file can hold (pypdf's
    LimitReachedError, which is not a PdfReadError)."""
    good = write_pdf(folder / "good.pdf", PAGES).read_bytes()
    (folder / "truncated.pdf").write_bytes(good[:len(good) // 2])
    (folder / "xref-bomb.pdf").write_bytes(re.sub(rb"xref\n0 \d+", b"xref\n0 999999", good))
    return {name: folder / f"{name}.pdf" for name in ("truncated", "xref-bomb")}


def knowledge_taxonomy(tmp_path: Path, documents: dict[str, bytes]) -> tuple[Path, Path]:
    """A taxonomy whose knowledge leaf reads docs/*.md and docs/*.pdf: (root, its qna.yaml)."""
    docs = tmp_path / "tax/docs"
    docs.mkdir(parents=True)
    (docs / "guide.md").write_text("# Guide\n\n## Ports\n\nA port is where a service listens.\n")
    for name, data in documents.items():
        (docs / name).write_bytes(data)
    qna = tmp_path / "tax/knowledge/k/qna.yaml"
    qna.parent.mkdir(parents=True)
    qna.write_text(KNOWLEDGE.replace('    - "*.md"\n', '    - "*.md"\n    - "*.pdf"\n'))
    return tmp_path / "tax", qna


def test_a_password_protected_pdf_says_to_decrypt_it(tmp_path):
    from mlxlab.sdg.chunking import read_document

    locked = encrypted_pdf(tmp_path / "locked.pdf", "RC4-128", user_password="secret")   # RC4: pure pypdf
    with pytest.raises(MlxlabError, match="encrypted with a password") as caught:
        read_document(locked)
    assert caught.value.path == locked and "qpdf" in caught.value.hint and "Markdown" in caught.value.hint
    assert "Input Ports" in read_document(encrypted_pdf(tmp_path / "open.pdf", "RC4-128"))  # no user password


@pytest.mark.parametrize("damage", ["truncated", "xref-bomb", "pypdf-bug"])
def test_a_damaged_pdf_is_a_clear_error(tmp_path, monkeypatch, damage):
    import pypdf

    from mlxlab.sdg.chunking import read_document

    if damage == "pypdf-bug":   # pypdf on a malformed file can raise KeyError, TypeError...: injected here
        def broken_reader(*args, **kwargs):
            raise KeyError("/Root")
        monkeypatch.setattr(pypdf, "PdfReader", broken_reader)
        path = write_pdf(tmp_path / "pypdf-bug.pdf", PAGES)
    else:
        path = damaged_pdfs(tmp_path)[damage]
    with pytest.raises(MlxlabError) as caught:
        read_document(path)
    assert caught.value.path == path and "PDF" in caught.value.message and "Markdown" in caught.value.hint


def test_validation_reports_an_unreadable_document_on_its_leaf(tmp_path):
    from mlxlab.taxonomy.taxonomy import Taxonomy, validate

    locked = encrypted_pdf(tmp_path / "locked.pdf", "RC4-128", user_password="secret").read_bytes()
    damaged = damaged_pdfs(tmp_path)
    root, qna = knowledge_taxonomy(tmp_path, {"locked.pdf": locked, "ok.pdf": write_pdf(tmp_path / "ok.pdf", PAGES)
                                              .read_bytes(), "torn.pdf": damaged["truncated"].read_bytes()})
    [report] = validate([root])
    pattern_line = qna.read_text().splitlines().index('    - "*.pdf"') + 1
    errors = [p for p in report.problems if p.severity == "error"]
    assert not report.valid and [(p.line, p.column) for p in errors] == [(pattern_line, 7)] * 2
    assert str(root / "docs/locked.pdf") in errors[0].message and "decrypt" in errors[0].message
    assert str(root / "docs/torn.pdf") in errors[1].message and "Markdown" in errors[1].message
    assert not Taxonomy.load(root).leaves                       # so SDG stops before its teacher loads
    assert validate([root], fetch_documents=False)[0].valid     # documents not fetched: not read either


def test_an_aes_pdf_without_cryptography_is_a_validation_error(tmp_path):
    pytest.importorskip("cryptography", reason="pypdf writes AES-encrypted PDFs only with `cryptography`")
    from mlxlab.sdg.chunking import read_document

    aes = encrypted_pdf(tmp_path / "aes.pdf", "AES-256")
    assert "Input Ports" in read_document(aes)                  # with cryptography it reads
    root, _ = knowledge_taxonomy(tmp_path, {"aes.pdf": aes.read_bytes()})
    # without it (the usual case: pypdf does not require it), `mlxlab taxonomy validate` names the file and the fix
    hide = ("import sys; sys.modules['cryptography'] = None; from mlxlab.cli import main; "
            "sys.exit(main(['taxonomy', 'validate', sys.argv[1]]))")
    out = subprocess.run([sys.executable, "-c", hide, str(root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert str(root / "docs/aes.pdf") in out.stdout and "pip install cryptography" in out.stdout
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr
