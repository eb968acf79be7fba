"""The package's import graph, read statically (every import statement, also inside functions):
no two modules import each other, directly or through others, and the lowest rooms (models/,
data/) import nothing of the package above them (weights/, the loops, the run-time modules)."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wrna_jax")
LOWEST = ("wrna_jax.models", "wrna_jax.data")  # they may import each other (a class count, a shape)
# What the lowest rooms may import besides: leaves that import nothing of ours (the console:
# data/tensorflow_cpu.py imports TensorFlow with its start-up lines kept off it).
FOUNDATION = ("wrna_jax.errors", "wrna_jax.registry", "wrna_jax.console")


def modules() -> dict[str, str]:
    """Module name -> file, for every module of wrna_jax (packages by their __init__.py)."""
    found = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a package's own __init__ and its children
    excepted, as Python imports those anyway)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in mods.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = resolve(name) if name.startswith("wrna_jax") else None
                if target and target != module and not module.startswith(target + ".") \
                        and not (path.endswith("__init__.py") and target.startswith(module + ".")):
                    targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and "wrna_jax.feeds" in graph["wrna_jax.train"]
    assert cycles(graph) == []


def test_models_and_data_import_nothing_above_them():
    for module, targets in import_graph().items():
        for room in LOWEST:
            if module == room or module.startswith(room + "."):
                above = {t for t in targets if not t.startswith(LOWEST) and t not in FOUNDATION}
                assert not above, f"{module} imports {sorted(above)}"
