"""teacher: the `Teacher` front and its engines (MLX, llama.cpp batched, an OpenAI-compatible fleet).

The names below load on first use (mlxlab.lazy).
"""

from mlxlab.lazy import exports as _exports

__getattr__, __dir__, __all__ = _exports(__name__, {
    "teacher": "Teacher make_teacher choose_backend default_batch_size", "completions": "Completion GenerationStats"})
