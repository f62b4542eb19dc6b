"""The house: layers run one way, there are no import cycles, and no module is too long.

Every import of every module of `pipeline/`, `flows/` and `rr/` is read from the source (top-level
and inside functions alike: a lazy import is still an arrow), so a new upward import fails here.
"""

import ast
from pathlib import Path

import pytest

from tests.conftest import HEAVIEST_FIRST, ROOT

PACKAGES = ("pipeline", "flows", "rr")

# Bottom to top; a module may import its own layer and the layers below it, never one above.
LAYERS = [
    ("files and config", ("pipeline", "pipeline.errors", "pipeline.config", "pipeline.files", "pipeline.textdata",
                          "pipeline.batches", "pipeline.row_attention", "pipeline.progress", "pipeline.model_paths", "pipeline.datasource", "pipeline.plotting",
                          "pipeline.processes", "pipeline.interrupts")),
    ("models", ("pipeline.models",)),
    ("stages' packages", ("pipeline.reveal", "pipeline.sampling", "pipeline.scoring", "pipeline.release",
                          "pipeline.evaluation", "pipeline.planting")),
    ("the run", ("pipeline.run",)),
    ("benchmarks and export", ("pipeline.bench", "pipeline.export")),
    ("Prefect flows", ("flows",)),
    ("command line", ("rr",)),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def layer(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if module in prefixes or any(module.startswith(p + ".") for p in prefixes if p != "pipeline"):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def imports(module: str) -> set[str]:
    """The project modules `module` imports, anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pipeline.run import loop` imports the module pipeline.run.loop.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found - {module}


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer(module)


def test_no_module_imports_a_layer_above_it():
    upward = [
        f"{module} ({LAYERS[layer(module)][0]}) imports {target} ({LAYERS[layer(target)][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert upward == []


def test_there_are_no_import_cycles():
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize("package", ["pipeline"])
def test_the_library_imports_neither_prefect_nor_the_flows_nor_the_command_line(package):
    offenders = []
    for module, path in MODULES.items():
        if not module.startswith(package):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{module}: {n}" for n in names if n.split(".")[0] in ("prefect", "flows", "rr")]
    assert offenders == []


def test_no_module_is_over_400_lines():
    long = {module: n for module, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_the_files_the_suite_hands_out_first_exist():  # a renamed one would drop out of the order
    assert [name for name in HEAVIEST_FIRST if not (ROOT / "tests" / name).is_file()] == []
