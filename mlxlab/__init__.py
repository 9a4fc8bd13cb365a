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

# submodule -> the public names it defines. A function named like its module (train, fuse, serve, chat,
# evaluate) is not listed: importing the submodule would rebind `mlxlab.<name>` to the module.
# Use `from mlxlab.train import train` for those.
__getattr__, __dir__, _public = _exports(__name__, {
    "taxonomy.taxonomy": "Taxonomy validate diff", "models": "resolve_model import_gguf load_model",
    "device": "device_info bind_blas", "config": "load_config", "teacher.teacher": "Teacher make_teacher",
    "sdg.sdg": "generate_data", "train.loop": "train_phases", "gguf.gguf_export": "export_gguf",
    "evaluate.attention": "attention_maps plot_attention", "evaluate.evaluation": "sweep", "pipeline": "run"})
__all__ = ["MlxlabError", "__version__", *_public]
