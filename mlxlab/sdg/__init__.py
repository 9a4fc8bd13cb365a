"""sdg: synthetic data from a taxonomy: the unit runner and journal, LAB and few-shot pipelines, gates,
chunking, datasets.

The names below load on first use (mlxlab.lazy).
"""

from mlxlab.lazy import exports as _exports

__getattr__, __dir__, __all__ = _exports(__name__, {
    "sdg": "generate_data DataResult LeafStats print_report choose_methods make_sdg_teacher",
    "gates": "GATES GateSettings LeafProfile leaf_profile check_sample check_all rouge_l",
    "chunking": "Chunk chunk_documents", "datasets": "write_datasets split_seeds",
    "sdg_units": "Journal journal_path JOURNAL_VERSION"})
