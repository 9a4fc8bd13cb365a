"""Where MLX runs (Metal, CUDA or CPU), in which dtype, and with which BLAS.

Three facts drive this module (measured, see REFERENCE.md):
- the stock `mlx-cpu` wheel links a reference BLAS; binding OpenBLAS into the global symbol scope
  before `mlx.core` is first imported makes float32 matmul ~24x faster, with the same results;
- on the CPU backend float32 is the fast path: 16-bit kernels and 4-bit matmuls with 16-bit scales
  are 10-40x slower, so weights and quantization scales become float32 there (lossless for scales);
- on Metal and CUDA, 16-bit is the fast path.

Nothing here imports mlx at module import time: `bind_blas()` must be able to run first.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from mlxlab.errors import MlxlabError

BLAS_ENV = "MLXLAB_BLAS"           # path to a libopenblas, or "off"
DEVICE_ENV = "MLXLAB_DEVICE"       # "cpu" | "gpu" | "auto"
DTYPE_ENV = "MLXLAB_DTYPE"         # "float32" | "float16" | "bfloat16" | "auto"

# Where Linux distributions put a pthread OpenBLAS (Debian/Ubuntu libopenblas0-pthread first).
_OPENBLAS_CANDIDATES = (
    "/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/{arch}-linux-gnu/libopenblas.so.0",
    "/usr/lib/{arch}-linux-gnu/openblas-openmp/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
)

_blas_state: dict = {"bound": None, "reason": "not tried", "warned": False}


def find_openblas() -> Path | None:
    """The OpenBLAS library to bind: `$MLXLAB_BLAS`, else the distribution's, else None."""
    env = os.environ.get(BLAS_ENV, "").strip()
    if env.lower() in {"off", "0", "none", "false", "stock"}:
        return None
    if env:
        return Path(env)
    arch = platform.machine()
    for pattern in _OPENBLAS_CANDIDATES:
        for candidate in glob.glob(pattern.format(arch=arch)):
            if os.path.exists(candidate):
                return Path(candidate)
    return None


def bind_blas() -> str | None:
    """Load OpenBLAS into the global symbol scope so MLX's CPU BLAS/LAPACK calls bind to it.

    Only on Linux (macOS has Accelerate inside MLX). Must run before `mlx.core` is imported; if mlx
    was imported first, warn once with the fix. Returns the bound library path, or None.
    """
    if _blas_state["bound"] is not None or _blas_state["reason"] != "not tried":
        return _blas_state["bound"]
    if sys.platform != "linux":
        _blas_state["reason"] = "not needed on this platform (MLX uses its own BLAS)"
        return None
    if os.environ.get(BLAS_ENV, "").strip().lower() in {"off", "0", "none", "false", "stock"}:
        _blas_state["reason"] = f"disabled by {BLAS_ENV}=off"
        return None
    path = find_openblas()
    if path is None:
        _blas_state["reason"] = ("OpenBLAS not found (Debian/Ubuntu: apt-get install libopenblas0-pthread; "
                                 f"or set {BLAS_ENV}=/path/to/libopenblas.so.0)")
        return None
    if "mlx.core" in sys.modules:
        _blas_state["reason"] = "mlx was imported before mlxlab could bind OpenBLAS"
        if not _blas_state["warned"]:
            _blas_state["warned"] = True
            warnings.warn(
                "mlx.core was imported before mlxlab, so MLX's CPU backend keeps its slow reference BLAS. "
                "Fix: `import mlxlab` before `import mlx.core` (or run through the `mlxlab` CLI).",
                RuntimeWarning, stacklevel=2)
        return None
    from mlxlab.distributed import local_ranks

    if local_ranks() > 1 and "OPENBLAS_NUM_THREADS" not in os.environ:
        # several ranks on one machine (mlx.launch -n N): share the cores instead of N x all of them (busy-waits)
        os.environ["OPENBLAS_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // local_ranks()))
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        # Runs at `import mlxlab`: never fail the import, say what happened and keep the stock BLAS.
        _blas_state["reason"] = f"could not load {path}: {exc}"
        if os.environ.get(BLAS_ENV):
            warnings.warn(f"{BLAS_ENV}={path} could not be loaded ({exc}); MLX keeps its reference BLAS. "
                          f"Fix: point {BLAS_ENV} at a libopenblas.so.0, or set {BLAS_ENV}=off.",
                          RuntimeWarning, stacklevel=2)
        return None
    _blas_state["bound"] = str(path)
    _blas_state["reason"] = "bound"
    return str(path)


def blas_status() -> tuple[str | None, str]:
    """(bound library path or None, reason) for `mlxlab info` and benchmarks."""
    return _blas_state["bound"], _blas_state["reason"]


def import_mlx():
    """`mlx.core`, imported after binding OpenBLAS (use this instead of a bare import)."""
    bind_blas()
    import mlx.core as mx

    _say_once_without_openblas(mx)
    return mx


def _say_once_without_openblas(mx) -> None:
    """On a Linux CPU without OpenBLAS, say once (on stderr) what it costs and the command that fixes it."""
    if _blas_state["warned"] or sys.platform != "linux" or _blas_state["bound"] is not None:
        return
    if not _blas_state["reason"].startswith("OpenBLAS not found"):
        return
    _blas_state["warned"] = True
    try:
        on_cpu = mx.default_device() == mx.cpu
    except Exception:  # a device query that fails says nothing about BLAS
        on_cpu = True
    if on_cpu:
        print("mlxlab: OpenBLAS is not installed, so MLX's CPU matmuls use its reference BLAS: ~24x slower "
              "(`mlxlab run` ~10x). Fix: sudo apt-get install libopenblas0-pthread   "
              f"(or set {BLAS_ENV}=/path/to/libopenblas.so.0)", file=sys.stderr)


def gpu_available() -> bool:
    """True when MLX has a GPU here (Metal on Apple Silicon, or CUDA with mlx[cuda12|13])."""
    mx = import_mlx()
    try:
        if hasattr(mx, "cuda") and mx.cuda.is_available():
            return True
    except Exception:  # older mlx without the cuda module
        pass
    try:
        return bool(mx.metal.is_available())
    except Exception:
        return False


def backend() -> str:
    """'metal', 'cuda' or 'cpu': what MLX would run on by default here."""
    mx = import_mlx()
    try:
        if hasattr(mx, "cuda") and mx.cuda.is_available():
            return "cuda"
    except Exception:
        pass
    try:
        if mx.metal.is_available():
            return "metal"
    except Exception:
        pass
    return "cpu"


def select_device(device: str | None = None) -> str:
    """Make `device` ('auto' | 'gpu' | 'cpu'; default `$MLXLAB_DEVICE` or auto) MLX's default; return it."""
    mx = import_mlx()
    choice = (device or os.environ.get(DEVICE_ENV) or "auto").lower()
    if choice not in {"auto", "gpu", "cpu"}:
        raise MlxlabError(f"unknown device {choice!r}", hint="use one of: auto, gpu, cpu")
    if choice == "gpu" and not gpu_available():
        raise MlxlabError("--device gpu was asked for, but MLX has no GPU here",
                          hint="on NVIDIA install mlxlab[cuda12] or mlxlab[cuda13]; else use --device cpu")
    if choice == "auto":
        choice = "gpu" if gpu_available() else "cpu"
    mx.set_default_device(mx.gpu if choice == "gpu" else mx.cpu)
    return choice


def apply_device_config(cfg) -> dict[str, str | None]:
    """Apply a `DeviceConfig` (the `device:` section) to this process; returns the environment it replaced.

    The device becomes MLX's default; the dtype and dequantize policies go into the environment, where every
    model load (also in stages that run later) reads them.
    """
    select_device(cfg.device)
    dtype_name(cfg.dtype)               # validates the value early
    replaced: dict[str, str | None] = {}
    for env, value in ((DEVICE_ENV, cfg.device), (DTYPE_ENV, cfg.dtype), (DEQUANTIZE_ENV, cfg.dequantize_on_load)):
        if value != "auto":
            replaced[env] = os.environ.get(env)
            os.environ[env] = value
    return replaced


def policy_from_env() -> dict[str, str]:
    """The device settings already in this process's environment (CLI flags put them there): they outrank a
    config file's `device:` section."""
    names = {"device": DEVICE_ENV, "dtype": DTYPE_ENV, "dequantize_on_load": DEQUANTIZE_ENV}
    return {key: os.environ[env] for key, env in names.items() if os.environ.get(env)}


@contextlib.contextmanager
def device_policy(cfg):
    """`apply_device_config` for the length of a `with` block (the Python API leaves the process as it was)."""
    replaced = apply_device_config(cfg)
    try:
        yield
    finally:
        for env, value in replaced.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value


def current_device() -> str:
    """'gpu' or 'cpu': MLX's default device right now."""
    mx = import_mlx()
    return "gpu" if mx.default_device() == mx.gpu else "cpu"


_DTYPES = {"float32": "float32", "fp32": "float32", "f32": "float32",
           "float16": "float16", "fp16": "float16", "f16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def dtype_name(dtype: str | None = None) -> str:
    """The float dtype models compute in: `dtype`, else `$MLXLAB_DTYPE`, else the device's policy.

    Policy: float32 on the CPU (its fast path), float16 on Metal and CUDA.
    """
    choice = (dtype or os.environ.get(DTYPE_ENV) or "auto").lower()
    if choice == "auto":
        return "float32" if current_device() == "cpu" else "float16"
    if choice not in _DTYPES:
        raise MlxlabError(f"unknown dtype {choice!r}", hint="use one of: auto, float32, float16, bfloat16")
    return _DTYPES[choice]


def model_dtype(dtype: str | None = None):
    """The `mx.Dtype` for weights and quantization scales under the policy of `dtype_name`."""
    mx = import_mlx()
    return getattr(mx, dtype_name(dtype))


DEQUANTIZE_ENV = "MLXLAB_DEQUANTIZE_ON_LOAD"  # "auto" | "always" | "never"

# MLX's CPU quantized matmul is slow: measured on 2 cores, SmolLM2-135M batched decode ran 2.1 tok/s
# 4-bit (float32 scales) vs 26 tok/s dequantized to float32. On the CPU, a quantized model whose
# float32 copy is small next to memory is therefore dequantized at load (the same function: the
# 4-bit values are expanded exactly). Larger ones stay 4-bit; on Metal/CUDA they always stay 4-bit.
_DEQUANTIZE_MAX_FRACTION = 0.25
_DEQUANTIZE_MAX_BYTES = 8 * 2**30


def _float32_bytes(model) -> int:
    """Bytes `model` would take with every weight as float32 (packed 4-bit weights expanded)."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    import_mlx()
    total = sum(v.size for _, v in tree_flatten(model.parameters())) * 4
    for _, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            packed = module.weight.size
            # replace the packed words, scales and biases by the expanded float weights
            total += packed * (32 // module.bits) * 4 - (packed + module.scales.size * 2) * 4
    return total


def is_quantized(model) -> bool:
    """True when any layer of `model` holds quantized (packed integer) weights."""
    import mlx.nn as nn

    import_mlx()
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def should_dequantize(model, dequantize_on_load: str | None = None) -> bool:
    """Whether to expand a quantized `model` to floats: `dequantize_on_load` ('auto' | 'always' | 'never')."""
    choice = (dequantize_on_load or os.environ.get(DEQUANTIZE_ENV) or "auto").lower()
    if choice not in {"auto", "always", "never"}:
        raise MlxlabError(f"unknown dequantize_on_load setting {choice!r}", hint="use one of: auto, always, never")
    if choice == "never" or not is_quantized(model):
        return False
    if choice == "always":
        return True
    if current_device() != "cpu":
        return False
    limit = min(_DEQUANTIZE_MAX_BYTES, _DEQUANTIZE_MAX_FRACTION * _memory_gb() * 2**30)
    return _float32_bytes(model) <= limit


# mlx-lm model types whose activations leave float16's range (Gemma's residual at BOS: ~67,000 in gemma-3-270m, which
# cost position 0 its top-1 in float16): where the policy says float16, these compute in bfloat16, as Google ships them
_BFLOAT16_MODEL_TYPES = {"gemma2", "gemma3", "gemma3_text"}


def apply_dtype(model, dtype: str | None = None, *, dequantize_on_load: str | None = None):
    """Put `model` in the device's compute precision, in place; returns it.

    Float weights and quantization scales/biases are cast to the policy dtype (lossless upward; a Gemma gets
    bfloat16 where the policy says float16); quantized weights stay packed unless `should_dequantize` says the
    float copy is faster here.
    """
    mx = import_mlx()
    from mlx.utils import tree_flatten, tree_unflatten

    if should_dequantize(model, dequantize_on_load):
        from mlx_lm.utils import dequantize_model

        dequantize_model(model)
    target = model_dtype(dtype)
    auto = (dtype or os.environ.get(DTYPE_ENV) or "auto").lower() == "auto"
    if auto and target == mx.float16 and getattr(model, "model_type", None) in _BFLOAT16_MODEL_TYPES:
        target = mx.bfloat16
    params = tree_flatten(model.parameters())
    cast = [(k, v.astype(target)) for k, v in params
            if mx.issubdtype(v.dtype, mx.floating) and v.dtype != target]
    if cast:
        model.update(tree_unflatten(cast))
    return model


@dataclass(frozen=True)
class DeviceInfo:
    """What `mlxlab info` reports."""
    system: str
    machine: str
    cpu: str
    cpu_count: int
    memory_gb: float
    python: str
    mlx_version: str
    backend: str
    default_device: str
    dtype: str
    blas: str
    matmul_gflops: float | None
    llama_cpp: str
    wired_limit_note: str | None


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # macOS lacks SC_PHYS_PAGES on some Pythons
        import subprocess
        try:
            out = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5)
            return int(out.stdout.strip()) / 2**30
        except Exception:
            return 0.0


def _cpu_name() -> str:
    if sys.platform == "darwin":
        import subprocess
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.stdout.strip():
                return out.stdout.strip()
        except Exception:
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(n: int = 512, repeats: int = 5) -> float:
    """Measured float32 n x n matmul throughput on MLX's default device, in GFLOP/s (best of `repeats`)."""
    import time

    mx = import_mlx()
    a = mx.random.normal((n, n), dtype=mx.float32)
    b = mx.random.normal((n, n), dtype=mx.float32)
    mx.eval(a @ b)  # warm-up (kernel selection, thread pool start)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def llama_cpp_status() -> str:
    """llama-cpp-python's version when importable (found without importing it), else why not."""
    from importlib import metadata
    try:
        return f"llama-cpp-python {metadata.version('llama_cpp_python')}"
    except metadata.PackageNotFoundError:
        return "not installed (pip install llama-cpp-python; on Linux it builds from source)"


def wired_limit_note(memory_gb: float) -> str | None:
    """On macOS: the GPU wired-memory limit now, and a recommendation for this memory size."""
    if sys.platform != "darwin":
        return None
    import subprocess
    try:
        out = subprocess.run(["sysctl", "-n", "iogpu.wired_limit_mb"], capture_output=True, text=True, timeout=5)
        current = int(out.stdout.strip() or 0)
    except Exception:
        current = 0
    # macOS lets the GPU wire ~2/3 (<=36 GB) or ~3/4 of RAM by default; leave ~4-8 GB to the system.
    reserve = 4 if memory_gb <= 16 else 8
    recommended = int(max(memory_gb - reserve, memory_gb * 0.6) * 1024)
    now = f"{current} MB" if current else "the macOS default (about 2/3-3/4 of RAM)"
    return (f"GPU wired limit: {now}; for {memory_gb:.0f} GB, `sudo sysctl iogpu.wired_limit_mb={recommended}` "
            "lets larger models stay in GPU memory (resets on reboot)")


def device_info(*, measure: bool = True) -> DeviceInfo:
    """Facts about this machine and MLX for `mlxlab info` (measures a float32 matmul unless told not to)."""
    from importlib import metadata

    mx = import_mlx()
    bound, reason = blas_status()
    if sys.platform == "darwin":
        blas = "Accelerate (inside MLX)"
    else:
        blas = f"OpenBLAS ({bound})" if bound else f"MLX's bundled reference BLAS - {reason}"
    memory = _memory_gb()
    try:
        mlx_version = metadata.version("mlx")
    except metadata.PackageNotFoundError:
        mlx_version = getattr(mx, "__version__", "unknown")
    return DeviceInfo(
        system=f"{platform.system()} {platform.release()}",
        machine=platform.machine(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count() or 1,
        memory_gb=round(memory, 1),
        python=platform.python_version(),
        mlx_version=mlx_version,
        backend=backend(),
        default_device=current_device(),
        dtype=dtype_name(),
        blas=blas,
        matmul_gflops=round(matmul_gflops(), 1) if measure else None,
        llama_cpp=llama_cpp_status(),
        wired_limit_note=wired_limit_note(memory),
    )


def llama_threads(*, batched: bool = False) -> int:
    """Threads for llama.cpp: physical cores, but 1 on a 2-vCPU machine where 2 threads swing wildly.

    `batched`: work that decodes many sequences per call (the batched teacher) keeps both threads of a
    2-vCPU machine busy with large matmuls: 1.8x the prefill rate of one thread, measured on SmolLM2.
    """
    from mlxlab.distributed import local_ranks

    # several ranks on one machine (mlx.launch -n N) share its cores: llama.cpp's threads busy-wait, and two
    # ranks of 2 threads each on 2 cores ran SDG 15x slower than one rank
    count = max(1, (os.cpu_count() or 1) // local_ranks())
    if count <= 2:
        return count if batched else 1
    # Hyper-threads share a core's vector units; llama.cpp decodes fastest on physical cores.
    return max(1, count // 2) if platform.machine() in {"x86_64", "AMD64"} else count
