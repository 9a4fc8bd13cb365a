"""taxonomy: qna.yaml parsing, InstructLab-compatible validation and diff, knowledge documents.

Public names load on first use (see mlxlab.lazy), so importing the package imports no MLX.
"""

from mlxlab.lazy import exports as _exports

_LAZY = {
    "Taxonomy": "mlxlab.taxonomy.taxonomy",
    "Leaf": "mlxlab.taxonomy.taxonomy",
    "LeafReport": "mlxlab.taxonomy.taxonomy",
    "Problem": "mlxlab.taxonomy.taxonomy",
    "validate": "mlxlab.taxonomy.taxonomy",
    "diff": "mlxlab.taxonomy.taxonomy",
    "changed_files": "mlxlab.taxonomy.taxonomy",
    "format_report": "mlxlab.taxonomy.taxonomy",
    "Documents": "mlxlab.taxonomy.documents",
    "resolve_documents": "mlxlab.taxonomy.documents",
    "read_document": "mlxlab.taxonomy.documents",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = _exports(__name__, _LAZY)
