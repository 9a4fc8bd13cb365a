"""gguf: architecture and tokenizer tables, export to GGUF, import from GGUF, tokenizer files.

Public names load on first use (see mlxlab.lazy), so importing the package imports no MLX.
"""

from mlxlab.lazy import exports as _exports

_LAZY = {
    "export_gguf": "mlxlab.gguf.gguf_export",
    "ExportResult": "mlxlab.gguf.gguf_export",
    "verify_gguf": "mlxlab.gguf.gguf_export",
    "convert": "mlxlab.gguf.gguf_import",
    "read_gguf": "mlxlab.gguf.gguf_import",
    "ARCHITECTURES": "mlxlab.gguf.tables",
}

__all__ = list(_LAZY)
__getattr__, __dir__ = _exports(__name__, _LAZY)
