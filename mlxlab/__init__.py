"""mlxlab: teach an open model something new on one Apple Silicon laptop, on MLX.

`import mlxlab` is cheap: the public functions are imported on first use, so the CLI and
notebooks do not pay for mlx, mlx_lm or llama_cpp until a stage needs them.
"""

from __future__ import annotations

from mlxlab.device import bind_blas as _bind_blas
from mlxlab.errors import MlxlabError
from mlxlab.lazy import exports as _exports

# MLX binds its BLAS symbols when mlx.core is first imported; load OpenBLAS before that can happen
# (Linux CPU backend only; a no-op elsewhere). See device.bind_blas.
_bind_blas()

__version__ = "0.1.0"

# public name -> module that defines it. A function named like its module (train, fuse, serve, chat,
# evaluate) is not listed: importing the submodule would rebind `mlxlab.<name>` to the module.
# Use `from mlxlab.train import train` for those.
_LAZY = {
    "Taxonomy": "mlxlab.taxonomy.taxonomy",
    "validate": "mlxlab.taxonomy.taxonomy",
    "diff": "mlxlab.taxonomy.taxonomy",
    "resolve_model": "mlxlab.models",
    "import_gguf": "mlxlab.models",
    "load_model": "mlxlab.models",
    "device_info": "mlxlab.device",
    "bind_blas": "mlxlab.device",
    "load_config": "mlxlab.config",
    "Teacher": "mlxlab.teacher.teacher",
    "make_teacher": "mlxlab.teacher.teacher",
    "generate_data": "mlxlab.sdg.sdg",
    "train_phases": "mlxlab.train.loop",
    "export_gguf": "mlxlab.gguf.gguf_export",
    "attention_maps": "mlxlab.evaluate.attention",
    "plot_attention": "mlxlab.evaluate.attention",
    "sweep": "mlxlab.evaluate.evaluation",
    "run": "mlxlab.pipeline",
}

__all__ = ["MlxlabError", "__version__", *_LAZY]


__getattr__, __dir__ = _exports(__name__, _LAZY)
