"""teacher: the `Teacher` front and its engines (MLX, llama.cpp batched, an OpenAI-compatible fleet).

Public names load on first use (see mlxlab.lazy), so importing the package imports no MLX.
"""

from mlxlab.lazy import exports as _exports

_LAZY = {
    "Teacher": "mlxlab.teacher.teacher",
    "make_teacher": "mlxlab.teacher.teacher",
    "choose_backend": "mlxlab.teacher.teacher",
    "default_batch_size": "mlxlab.teacher.teacher",
    "GenerationStats": "mlxlab.teacher.completions",
    "Completion": "mlxlab.teacher.completions",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = _exports(__name__, _LAZY)
