"""Files that a crash cannot leave half-written, and mlxlab's cache folder: one implementation for every stage.

A file is written under a temporary name next to it, flushed to disk (fsync), then renamed over the old one:
readers see the old file or the new one, never a part. A folder (a checkpoint, a fused model, an imported
model) is built under a staging name and swapped in with `replace_dir`, which keeps the old one under a known
name until the new one is in place, so `recover_dir` can put it back after a crash between the two renames.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "MLXLAB_CACHE"


def cache_dir() -> Path:
    """mlxlab's cache: `$MLXLAB_CACHE` (`~` expanded), else ~/.cache/mlxlab; created on first use."""
    env = os.environ.get(CACHE_ENV, "").strip()
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "mlxlab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write `path` through; on success it is fsynced and renamed over `path`.

    `suffix` is appended to the temporary name for writers that insist on an extension (safetensors, png).
    On an error the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return path


def replace_dir(staging: Path, final: Path) -> None:
    """Move the finished folder `staging` to `final`; an older `final` is kept as `<final>.old` until then."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    os.rename(staging, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """After a crash inside `replace_dir`: put the old folder back where the new one never arrived."""
    old = final.with_name(final.name + ".old")
    if old.is_dir() and not final.exists():
        os.rename(old, final)
