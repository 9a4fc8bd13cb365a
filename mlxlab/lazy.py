"""Lazy public names for mlxlab's packages (PEP 562): importing a package stays cheap until a name is used.

The CLI and notebooks import `mlxlab.<stage>` freely; mlx, mlx_lm and llama_cpp load only when a name that
needs them is first looked up.
"""

from __future__ import annotations

import importlib
import sys


def exports(package: str, modules: dict[str, str]):
    """(`__getattr__`, `__dir__`, the public names) for `package`; `modules` maps each submodule (relative to
    `package`) to the space-separated public names it defines."""
    table = {name: f"{package}.{module}" for module, names in modules.items() for name in names.split()}

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__, list(table)
