"""evaluate: prompt sets, answering and grading, iteration sweeps, plots, attention maps.

The names below load on first use (mlxlab.lazy).
"""

from mlxlab.lazy import exports as _exports

__getattr__, __dir__, __all__ = _exports(__name__, {
    "evaluation": "evaluate grade sweep EvalResult GradeResult SweepResult",
    "grading": "agreement read_grades", "grading_page": "GradingPage",
    "prompt_sets": "PromptSet EvalPrompt load_prompts read_prompt_set", "plots": "sweep_plots sweep_table",
    "report": "write_report",
    "attention": "attention_maps plot_attention AttentionResult"})
