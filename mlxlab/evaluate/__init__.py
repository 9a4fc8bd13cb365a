"""evaluate: prompt sets, answering and grading, iteration sweeps, plots, attention maps.

Public names load on first use (see mlxlab.lazy), so importing the package imports no MLX.
"""

from mlxlab.lazy import exports as _exports

_LAZY = {
    "evaluate": "mlxlab.evaluate.evaluation",
    "grade": "mlxlab.evaluate.evaluation",
    "sweep": "mlxlab.evaluate.evaluation",
    "EvalResult": "mlxlab.evaluate.evaluation",
    "GradeResult": "mlxlab.evaluate.evaluation",
    "SweepResult": "mlxlab.evaluate.evaluation",
    "PromptSet": "mlxlab.evaluate.prompt_sets",
    "EvalPrompt": "mlxlab.evaluate.prompt_sets",
    "load_prompts": "mlxlab.evaluate.prompt_sets",
    "read_prompt_set": "mlxlab.evaluate.prompt_sets",
    "sweep_plots": "mlxlab.evaluate.plots",
    "sweep_table": "mlxlab.evaluate.plots",
    "attention_maps": "mlxlab.evaluate.attention",
    "plot_attention": "mlxlab.evaluate.attention",
    "AttentionResult": "mlxlab.evaluate.attention",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = _exports(__name__, _LAZY)
