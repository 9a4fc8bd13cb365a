"""Knowledge documents: resolve a qna.yaml `document: {repo, commit, patterns}` to local files.

`repo` is a git URL (cloned once into the cache), a local git repository (exported at `commit`),
or a local folder (read from its working tree; at `commit` when it lies in a git work tree where
`commit` exists). Problems come back as `Note`s so the caller can point at the right YAML node.
"""

from __future__ import annotations

import contextlib
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

from mlxlab.files import cache_dir, replace_dir

DOCUMENT_SUFFIXES = (".md", ".txt", ".pdf")
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


def _match(root: Path, patterns: list[str]) -> tuple[list[Path], list[Note]]:
    """Glob each pattern inside `root`; keep .md/.txt/.pdf files that stay inside it."""
    files: set[Path] = set()
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
        files.update(found)
    return sorted(files), notes


def resolve_documents(repo: str, commit: str, patterns: list[str], *, base_dir: Path,
                      memo: dict | None = None) -> Documents:
    """Resolve a knowledge leaf's documents; `base_dir` anchors a relative local `repo` (the qna.yaml folder)."""
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
    notes = [*notes, *match_notes]
    if not files and patterns:
        notes.append(Note(("patterns",), "error",
                          f"document.patterns match no .md/.txt/.pdf file in {repo} at {commit}"))
    return Documents(root, tuple(files), tuple(notes))
