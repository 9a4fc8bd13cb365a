"""The package's layout holds: no import circles, no folder importing back into a folder that imports it, no
private name imported across modules, no function over 80 lines in train/ and sdg/, and the CLI's help loads no
MLX.

The import graph is drawn from the source with `ast`: imports at module level and inside functions both count,
relative and `mlxlab.x.y` names resolve to modules, and `from mlxlab.<stage> import name` resolves through the
package's lazy table (its `exports(__name__, {...})` call) to the module that defines `name`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mlxlab"
# The one import from a shared top-level module into a stage folder: a model reference may be a .gguf file,
# which `models.resolve_model` converts through the GGUF importer (the exporter in turn loads models).
SHARED_INTO_STAGE = {("mlxlab.models", "mlxlab.gguf")}
# Modules that sit above the stages (they call them); every other top-level module is shared, below them.
ABOVE_STAGES = {"mlxlab", "mlxlab.__main__", "mlxlab.cli", "mlxlab.commands", "mlxlab.pipeline", "mlxlab.serve",
                "mlxlab.chat", "mlxlab.crash"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _lazy_table(package: str, tree: ast.Module) -> dict[str, str]:
    """A package's public names -> the modules that define them, from its `exports(__name__, {module: names})`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("exports", "_exports"):
            modules = ast.literal_eval(node.args[1])
            return {name: f"{package}.{module}" for module, names in modules.items() for name in names.split()}
    return {}


def import_graph() -> dict[tuple[str, str], set[str]]:
    """(importer, imported module) -> the names imported, for every import inside mlxlab."""
    modules = _modules()
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, (path, _) in modules.items()}
    lazy = {name: _lazy_table(name, trees[name]) for name, (_, package) in modules.items() if package}
    edges: dict[tuple[str, str], set[str]] = {}
    for name, (_, package) in modules.items():
        here = name if package else name.rpartition(".")[0]
        for node in ast.walk(trees[name]):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges.setdefault((name, alias.name), set())
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source not in modules:
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    target = submodule if submodule in modules else lazy.get(source, {}).get(alias.name, source)
                    edges.setdefault((name, target), set()).add(alias.name)
    return {edge: names for edge, names in edges.items() if edge[0] != edge[1]}


def _cycles(edges) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _folder(module: str) -> str:
    """The stage folder a module lives in (`mlxlab.sdg`), or the module itself at the top level."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module


def _stages() -> set[str]:
    return {f"mlxlab.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file() and p.name != "prompts"}


def test_the_graph_sees_the_imports_it_must():
    edges = import_graph()
    assert ("mlxlab.sdg.sdg", "mlxlab.sdg.lab") in edges            # `from mlxlab.sdg import lab`, in a function
    assert ("mlxlab.commands", "mlxlab.train.loop") in edges
    assert edges[("mlxlab.gguf.gguf_import", "mlxlab.gguf.tables")] >= {"ARCHITECTURES"}


def test_no_import_circle_between_modules():
    assert _cycles(import_graph()) == []


def test_no_folder_imports_back_into_a_folder_that_imports_it():
    folders = {(_folder(a), _folder(b)) for a, b in import_graph() if _folder(a) != _folder(b)}
    assert _cycles(folders - SHARED_INTO_STAGE) == []


def test_shared_modules_import_no_stage_and_nothing_above_them():
    stages = _stages()
    upward = sorted((a, b) for a, b in {(_folder(a), _folder(b)) for a, b in import_graph()}
                    if a not in stages and a not in ABOVE_STAGES and (b in stages or b in ABOVE_STAGES))
    assert set(upward) == SHARED_INTO_STAGE
    assert not [(a, b) for a, b in {(_folder(a), _folder(b)) for a, b in import_graph()}
                if a in stages and b in ABOVE_STAGES]


def test_no_private_name_is_imported_across_modules():
    crossing = {edge: sorted(n for n in names if n.startswith("_") and not n.endswith("__"))
                for edge, names in import_graph().items()}
    assert {edge: names for edge, names in crossing.items() if names} == {}


def test_every_stage_names_its_public_functions_lazily():
    for stage in _stages():
        path = PACKAGE / stage.split(".")[1] / "__init__.py"
        table = _lazy_table(stage, ast.parse(path.read_text(encoding="utf-8")))
        assert table, f"{path} names no public function"
        modules = _modules()
        for name, module in table.items():
            assert module in modules and module.startswith(stage + "."), (stage, name, module)
            assert name != module.rpartition(".")[2], f"{stage}.{name} would be shadowed by its submodule"


def test_no_function_in_the_training_loop_or_sdg_passes_80_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for folder in ("train", "sdg") for path in sorted((PACKAGE / folder).glob("*.py"))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert long == []


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"]])
def test_help_and_the_stage_packages_load_no_mlx(argv):
    code = ("import runpy, sys\n"
            f"sys.argv = ['mlxlab', *{argv!r}]\n"
            "try:\n    runpy.run_module('mlxlab', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import mlxlab.taxonomy, mlxlab.sdg, mlxlab.teacher, mlxlab.train, mlxlab.gguf, mlxlab.evaluate\n"
            "print([m for m in ('mlx', 'mlx.core', 'mlx_lm', 'llama_cpp') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
