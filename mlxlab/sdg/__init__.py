"""sdg: synthetic data from a taxonomy: the unit runner and journal, LAB and few-shot pipelines, gates,
chunking, datasets.

Public names load on first use (see mlxlab.lazy), so importing the package imports no MLX.
"""

from mlxlab.lazy import exports as _exports

_LAZY = {
    "generate_data": "mlxlab.sdg.sdg",
    "DataResult": "mlxlab.sdg.sdg",
    "LeafStats": "mlxlab.sdg.sdg",
    "print_report": "mlxlab.sdg.sdg",
    "choose_methods": "mlxlab.sdg.sdg",
    "make_sdg_teacher": "mlxlab.sdg.sdg",
    "GATES": "mlxlab.sdg.gates",
    "GateSettings": "mlxlab.sdg.gates",
    "LeafProfile": "mlxlab.sdg.gates",
    "leaf_profile": "mlxlab.sdg.gates",
    "check_sample": "mlxlab.sdg.gates",
    "check_all": "mlxlab.sdg.gates",
    "rouge_l": "mlxlab.sdg.gates",
    "Chunk": "mlxlab.sdg.chunking",
    "chunk_documents": "mlxlab.sdg.chunking",
    "write_datasets": "mlxlab.sdg.datasets",
    "split_seeds": "mlxlab.sdg.datasets",
    "Journal": "mlxlab.sdg.sdg_units",
    "journal_path": "mlxlab.sdg.sdg_units",
    "JOURNAL_VERSION": "mlxlab.sdg.sdg_units",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = _exports(__name__, _LAZY)
