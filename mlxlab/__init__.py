"""mlxlab: teach an open model something new on one Apple Silicon laptop, on MLX.

`import mlxlab` is cheap: the public functions are imported on first use, so the CLI and
notebooks do not pay for mlx, mlx_lm or llama_cpp until a stage needs them.
"""

from __future__ import annotations

import importlib

from mlxlab.device import bind_blas as _bind_blas
from mlxlab.errors import MlxlabError

# MLX binds its BLAS symbols when mlx.core is first imported; load OpenBLAS before that can happen
# (Linux CPU backend only; a no-op elsewhere). See device.bind_blas.
_bind_blas()

__version__ = "0.1.0"

# public name -> module that defines it. A function named like its module (train, fuse, serve, chat,
# evaluate) is not listed: importing the submodule would rebind `mlxlab.<name>` to the module.
# Use `from mlxlab.train import train` for those.
_LAZY = {
    "Taxonomy": "mlxlab.taxonomy",
    "validate": "mlxlab.taxonomy",
    "diff": "mlxlab.taxonomy",
    "resolve_model": "mlxlab.models",
    "import_gguf": "mlxlab.models",
    "load_model": "mlxlab.models",
    "device_info": "mlxlab.device",
    "bind_blas": "mlxlab.device",
    "load_config": "mlxlab.config",
    "Teacher": "mlxlab.teacher",
    "make_teacher": "mlxlab.teacher",
    "generate_data": "mlxlab.sdg",
    "train_phases": "mlxlab.train",
    "export_gguf": "mlxlab.gguf_export",
    "attention_maps": "mlxlab.attention",
    "plot_attention": "mlxlab.attention",
    "sweep": "mlxlab.evaluate",
    "run": "mlxlab.pipeline",
}

__all__ = ["MlxlabError", "__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlxlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
