"""The layout's rules, checked on the installed source (see docs/architecture.md).

1. ``temflow.io``, ``temflow.drift``, ``temflow.analysis`` and ``temflow.synthetic`` never import
   torch, and importing ``temflow`` imports neither torch nor ``distributed``: each module is
   imported in a fresh interpreter and ``sys.modules`` is read afterwards.
2. Only ``temflow.cluster`` makes a ``distributed.Client`` (or a ``LocalCluster``).
3. No import circles between temflow's modules: every ``import`` of a temflow module, also the
   ones inside functions and under ``TYPE_CHECKING``, is an edge, and the graph has no cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import temflow

SRC = Path(temflow.__file__).resolve().parent
TORCH_FREE = ("temflow.io", "temflow.drift", "temflow.analysis", "temflow.synthetic")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imported_after(module: str) -> dict[str, bool]:
    code = (
        "import sys, json, importlib; importlib.import_module(%r); "
        "print(json.dumps({k: k in sys.modules for k in ('torch', 'distributed')}))" % module
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_temflow_imports_neither_torch_nor_distributed():
    assert _imported_after("temflow") == {"torch": False, "distributed": False}


def test_io_drift_analysis_synthetic_never_import_torch():
    torch_free = [m for m in MODULES if m.startswith(TORCH_FREE)]
    assert len(torch_free) > 20
    # one interpreter for all of them: torch must still be absent after importing every one
    code = (
        "import sys, importlib\n"
        f"for m in {torch_free!r}:\n"
        "    importlib.import_module(m)\n"
        "    assert 'torch' not in sys.modules, m\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def _calls_named(tree: ast.AST, names: set[str]) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in names:
                lines.append(node.lineno)
    return lines


def test_only_cluster_makes_a_client():
    offenders = {}
    for module, path in MODULES.items():
        if module == "temflow.cluster":
            continue
        found = _calls_named(ast.parse(path.read_text()), {"Client", "LocalCluster"})
        if found:
            offenders[module] = found
    assert offenders == {}, f"only temflow.cluster may create a Client or LocalCluster; found in {offenders}"
    assert _calls_named(ast.parse(MODULES["temflow.cluster"].read_text()), {"Client", "LocalCluster"})


def _imports(module: str, path: Path) -> set[str]:
    """The temflow modules ``module`` imports (anywhere in the file), as module names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` is an edge to the submodule; `from mod import name` to mod
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
            rest = [alias for alias in node.names if f"{base}.{alias.name}" not in MODULES]
            targets = subs + ([base] if rest else [])
        else:
            continue
        found |= {t for t in targets if t in MODULES}
    found.discard(module)
    # every module imports the top-level package implicitly; that edge says nothing about layering
    found.discard("temflow")
    return found


def test_no_import_circles():
    graph = {module: _imports(module, path) for module, path in MODULES.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("stage", ["io", "synthetic", "drift", "segmentation", "analysis", "pipeline"])
def test_every_stage_documents_and_lists_its_public_names(stage):
    package = __import__(f"temflow.{stage}", fromlist=["__all__"])
    assert package.__doc__ and len(package.__doc__.split()) > 30
    assert package.__all__, f"temflow.{stage} lists no public names"
    for name in package.__all__:
        assert getattr(package, name) is not None
