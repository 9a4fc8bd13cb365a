"""taxonomy: qna.yaml parsing, InstructLab-compatible validation and diff, knowledge documents.

The names below load on first use (mlxlab.lazy).
"""

from mlxlab.lazy import exports as _exports

__getattr__, __dir__, __all__ = _exports(__name__, {
    "taxonomy": "Taxonomy Leaf LeafReport Problem validate diff changed_files format_report",
    "documents": "Documents resolve_documents read_document"})
