"""Knowledge documents: resolve a qna.yaml `document: {repo, commit, patterns}` to local files.

`repo` is a git URL (cloned once into the cache), a local git repository (exported at `commit`),
or a local folder (read from its working tree; at `commit` when it lies in a git work tree where
`commit` exists). Problems come back as `Note`s so the caller can point at the right YAML node.

Every matched file is also read here (`read_document`; a PDF through pypdf), so a document SDG could
not read (encrypted, damaged, not UTF-8) is a validation error on its leaf, before any model loads.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlxlab.errors import MlxlabError
from mlxlab.files import cache_dir, replace_dir

DOCUMENT_SUFFIXES = (".md", ".txt", ".pdf")      # what document.patterns match
TEXT_SUFFIXES = (".md", ".markdown", ".txt")
READABLE_SUFFIXES = (*TEXT_SUFFIXES, ".pdf")     # what read_document reads (PDFs through pypdf)
GIT_TIMEOUT_S = 600
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[\w.-]+@[\w.-]+:")
_SHA = re.compile(r"[0-9a-fA-F]{7,40}")


@dataclass(frozen=True)
class Note:
    """A problem found while resolving documents; `field` is a path below `document` (e.g. ("patterns", 1))."""
    field: tuple
    severity: str  # "error" | "warning"
    message: str


@dataclass(frozen=True)
class Documents:
    """The resolved documents of one knowledge leaf."""
    root: Path | None          # the folder the patterns were matched in
    files: tuple[Path, ...]    # matched .md/.txt/.pdf files, sorted
    notes: tuple[Note, ...]


# --- reading one document ----------------------------------------------------------------------------

def read_document(path: str | Path) -> str:
    """The text of a .md/.txt document, or of a PDF as Markdown-like text (see `read_pdf`)."""
    path = Path(path)
    if path.suffix.lower() == ".pdf":
        return read_pdf(path)
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise MlxlabError(f"cannot read {path.suffix or 'this'} documents; mlxlab reads .md, .txt and .pdf",
                          path=path, hint="convert the document to Markdown, or remove it from document.patterns")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MlxlabError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path,
                          hint="save the document as UTF-8") from None
    except OSError as exc:
        raise MlxlabError(f"cannot read document: {exc.strerror}", path=path) from None


def _looks_like_heading(line: str, following: str) -> bool:
    """A PDF line that is most likely a heading: short, capitalised, unpunctuated, followed by more text."""
    words = line.split()
    return (0 < len(words) <= 8 and len(line) <= 70 and line[0].isupper() and line[-1] not in ".,;:!?)\"'"
            and not any(ch.isdigit() for ch in line[:3]) and len(following.split()) > len(words))


def read_pdf(path: str | Path) -> str:
    """A PDF's text through pypdf, page by page, with lines that look like headings made `## Markdown` headings,
    so it is chunked like a Markdown document (a chunk carries the heading it sits under).

    Any failure to read it is an MlxlabError naming the file and what to do. The text is cached per file
    version (path, mtime, size): validation, then SDG, read each PDF several times in one run.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise MlxlabError(f"cannot read document: {exc.strerror}", path=path) from None
    return _pdf_text(path, stat.st_mtime_ns, stat.st_size)


_EXPORT = "or export it as Markdown and point document.patterns at that"


@functools.lru_cache(maxsize=64)
def _pdf_text(path: Path, mtime_ns: int, size: int) -> str:
    """`read_pdf`'s work; `mtime_ns` and `size` only key the cache, so an edited file is read again."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError
    except ImportError:
        raise MlxlabError("reading PDF documents needs pypdf", path=path, hint="pip install pypdf") from None
    try:
        pages = [page.extract_text() or "" for page in PdfReader(str(path)).pages]
    except DependencyError as exc:          # AES encryption, without the package that decrypts it
        raise MlxlabError(f"pypdf needs another package to read this PDF ({exc})", path=path,
                          hint="pip install cryptography (pypdf uses it for AES-encrypted PDFs); or decrypt the PDF "
                               f"(qpdf --decrypt in.pdf out.pdf), {_EXPORT}") from None
    except FileNotDecryptedError:
        raise MlxlabError("this PDF is encrypted with a password", path=path,
                          hint="decrypt it (qpdf --password=PASSWORD --decrypt in.pdf out.pdf), " + _EXPORT) from None
    except LimitReachedError as exc:
        raise MlxlabError(f"this PDF goes past pypdf's safety limits ({exc})", path=path,
                          hint="it is damaged or oversized; check that it opens in a PDF viewer, " + _EXPORT) from None
    except OSError as exc:
        raise MlxlabError(f"cannot read document: {exc.strerror or exc}", path=path) from None
    except Exception as exc:  # noqa: BLE001  a damaged file makes pypdf raise its own errors and KeyError, TypeError...
        raise MlxlabError(f"cannot read this PDF ({type(exc).__name__}: {exc})", path=path,
                          hint="check that it opens in a PDF viewer, " + _EXPORT) from None
    out: list[str] = []
    for page in pages:
        lines = [line.strip() for line in page.splitlines()]
        for i, line in enumerate(lines):
            following = next((n for n in lines[i + 1:] if n), "")
            if line and _looks_like_heading(line, following):
                out += ["", f"## {line}", ""]
            else:
                out.append(line)
        out.append("")                         # a page break ends a paragraph
    text = "\n".join(out).strip()
    if not text:
        raise MlxlabError("this PDF has no extractable text (a scan?)", path=path,
                          hint="run OCR on it, " + _EXPORT)
    return text + "\n"


def run_git(cwd: str | Path | None, *args: str, check: bool = True) -> str:
    """Run git quietly and return stdout; raises CalledProcessError (or OSError) when git fails."""
    # GIT_TERMINAL_PROMPT=0: a private URL must fail, not wait for a password nobody will type.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env,
                         timeout=GIT_TIMEOUT_S, check=check)
    return out.stdout


def try_git(cwd: str | Path | None, *args: str) -> str | None:
    """Run git and return its stripped stdout, or None when git fails or is missing."""
    try:
        return run_git(cwd, *args).strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _export(git_cwd: Path, sha: str, prefix: str, dest: Path) -> bool:
    """Write the tree of `sha` (below `prefix`) into `dest` atomically; False if it has no such folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        args = ["git", "archive", "--format=tar", sha] + ([prefix] if prefix else [])
        with subprocess.Popen(args, cwd=git_cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
            # a stalled archive is ended after GIT_TIMEOUT_S (the read then fails: no documents, not a hang)
            timer = threading.Timer(GIT_TIMEOUT_S, proc.kill)
            timer.start()
            with contextlib.ExitStack() as stack:
                stack.callback(timer.cancel)
                tar = stack.enter_context(tarfile.open(fileobj=proc.stdout, mode="r|"))
                # the "data" filter refuses links and paths that leave `tmp` (Python >= 3.10.12)
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, **kwargs)
        if proc.returncode != 0:
            return False
        replace_dir(tmp, dest)
        return True
    except (OSError, tarfile.TarError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _from_url(url: str, commit: str) -> tuple[Path | None, list[Note]]:
    """Clone `url` once into the cache and export `commit`; a SHA's export is reused later."""
    dest = cache_dir() / "documents" / _key(url, commit)
    if (dest / ".mlxlab-complete").exists() and _SHA.fullmatch(commit):
        return dest, []
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clone-", dir=dest.parent) as bare:
        try:
            run_git(None, "clone", "--quiet", "--bare", "--", url, bare)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            return None, [Note(("repo",), "error", f"cannot clone {url}: {detail.strip()[:300]}")]
        sha = try_git(Path(bare), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
        if not sha:
            return None, [Note(("commit",), "error", f"commit {commit} not found in {url}")]
        if not _export(Path(bare), sha, "", dest):
            return None, [Note(("repo",), "error", f"cannot export commit {commit} of {url}")]
    (dest / ".mlxlab-complete").touch()
    return dest, []


def _from_folder(folder: Path, commit: str, shown: str) -> tuple[Path | None, list[Note]]:
    """A local folder: at `commit` when git knows it, else its working tree (see module docstring)."""
    top = try_git(folder, "rev-parse", "--show-toplevel")
    if top is None:
        if try_git(folder, "rev-parse", "--is-bare-repository") == "true":
            return _from_url(str(folder), commit)  # a bare repository is cloned like a URL
        return folder, []
    is_top = Path(top).resolve() == folder.resolve()
    sha = try_git(folder, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if sha:
        prefix = try_git(folder, "rev-parse", "--show-prefix") or ""
        dest = cache_dir() / "documents" / _key(str(Path(top).resolve()), sha, prefix)
        if (dest / ".mlxlab-complete").exists() or _export(Path(top), sha, prefix, dest):
            (dest / ".mlxlab-complete").touch()
            return dest / prefix, []
        if is_top:
            return None, [Note(("commit",), "error", f"cannot export commit {commit} of {shown}")]
        return folder, [Note(("commit",), "warning",
                             f"{shown} does not exist at commit {commit}; using the working tree")]
    if is_top:
        return None, [Note(("commit",), "error", f"commit {commit} not found in {shown}")]
    return folder, [Note(("commit",), "warning", f"commit {commit} not found in {shown}; using the working tree")]


def _match(root: Path, patterns: list[str]) -> tuple[dict[Path, int], list[Note]]:
    """Glob each pattern inside `root`; keep .md/.txt/.pdf files that stay inside it, each with the index of the
    first pattern that matched it."""
    files: dict[Path, int] = {}
    notes: list[Note] = []
    real_root = root.resolve()
    for i, pattern in enumerate(patterns):
        pure = PurePosixPath(pattern)
        if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:|^~", pattern):
            notes.append(Note(("patterns", i), "error",
                              f"pattern '{pattern}' points outside the document repo; use a path inside it"))
            continue
        found, skipped = [], []
        try:
            names = sorted(glob.glob(pattern, root_dir=root, recursive=True))
        except (OSError, ValueError):
            names = []
        for name in names:
            path = root / name
            if not path.is_file() or not path.resolve().is_relative_to(real_root):
                continue
            (found if path.suffix.lower() in DOCUMENT_SUFFIXES else skipped).append(path)
        if skipped:
            notes.append(Note(("patterns", i), "warning",
                              f"pattern '{pattern}' matches {skipped[0].name}, which is not .md/.txt/.pdf; "
                              "such files are ignored"))
        if not found:
            notes.append(Note(("patterns", i), "warning", f"pattern '{pattern}' matches no .md/.txt/.pdf file"))
        for path in found:
            files.setdefault(path, i)
    return dict(sorted(files.items())), notes


def resolve_documents(repo: str, commit: str, patterns: list[str], *, base_dir: Path,
                      memo: dict | None = None) -> Documents:
    """Resolve a knowledge leaf's documents and read each one; `base_dir` anchors a relative local `repo` (the
    qna.yaml folder)."""
    if commit.startswith("-"):  # would read as a git option
        return Documents(None, (), (Note(("commit",), "error", f"commit '{commit}' is not a git revision"),))
    folder = None
    if not _URL.match(repo):
        try:
            folder = (base_dir / Path(repo).expanduser()).resolve()
        except (OSError, ValueError, RuntimeError):  # NUL bytes, unknown ~user, symlink loops
            folder = base_dir / "\0"
        if "\0" in str(folder) or not folder.is_dir():
            return Documents(None, (), (Note(("repo",), "error",
                                              f"document.repo '{repo}' is neither a git URL nor a folder "
                                              f"(looked for {folder})"),))
    memo = {} if memo is None else memo
    key = (str(folder or repo), commit)
    if key not in memo:  # leaves often share one repo and commit: fetch it once per run
        memo[key] = _from_url(repo, commit) if folder is None else _from_folder(folder, commit, repo)
    root, notes = memo[key]
    if root is None:
        return Documents(None, (), tuple(notes))
    files, match_notes = _match(root, patterns)
    notes = [*notes, *match_notes, *_unreadable(files)]
    if not files and patterns:
        notes.append(Note(("patterns",), "error",
                          f"document.patterns match no .md/.txt/.pdf file in {repo} at {commit}"))
    return Documents(root, tuple(files), tuple(notes))


def _unreadable(files: dict[Path, int]) -> list[Note]:
    """An error on the matching pattern for each document that `read_document` cannot read."""
    notes = []
    for path, pattern in files.items():
        try:
            read_document(path)
        except MlxlabError as exc:
            hint = f"; {exc.hint}" if exc.hint else ""
            notes.append(Note(("patterns", pattern), "error", f"cannot read document {path}: {exc.message}{hint}"))
    return notes
