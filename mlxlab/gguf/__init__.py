"""gguf: architecture and tokenizer tables, export to GGUF, import from GGUF, tokenizer files.

The names below load on first use (mlxlab.lazy).
"""

from mlxlab.lazy import exports as _exports

__getattr__, __dir__, __all__ = _exports(__name__, {
    "gguf_export": "export_gguf ExportResult verify_gguf", "gguf_import": "convert read_gguf",
    "tables": "ARCHITECTURES IMPORTABLE"})
