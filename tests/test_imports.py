"""Imports follow the data flow: a module imports from its own floor or the floors below, never above,
and no modules import each other in a circle. The floors are the README's layout."""

from __future__ import annotations

import ast
from pathlib import Path

import rlhf_lab

PACKAGE = Path(rlhf_lab.__file__).parent
FLOORS = [  # lowest first; a name covers a module and everything inside it
    ["tensors", "seeds", "errors"],  # the ground floor: tensor helpers, derived seeds, error types
    ["config", "runinfo", "artifacts"],  # settings, run records, the artifact cache
    ["world"],  # the tiny offline world
    ["data", "label"],  # sources, row formats, tokenization rules, DataModules; the labeling page
    ["models", "optim", "faults", "tracking"],  # loading and exporting models, training infrastructure
    # maths, sampling
    ["losses", "fits", "rollout", "scorers", "labelers", "evaluation"],
    ["stages", "rl", "dpo"],  # the stages
    ["pipeline"],  # stage chaining and the cache
    ["cli", "api", "report", "report_fits", "report_rm", "report_frontier", "report_rl"],  # entry points
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every rlhf_lab module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlhf_lab"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("rlhf_lab")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for level, names in enumerate(FLOORS):
        if top in names:
            return level
    raise AssertionError(f"{module} is on no floor: add it to FLOORS (and to the README's layout)")


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} (floor {floor(source)}) imports {target} (floor {floor(target)})"
        for source, targets in edges.items()
        if source != "rlhf_lab"
        for target in targets
        if target != "rlhf_lab" and floor(target) > floor(source)
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (a package's __init__ importing its own submodules aside)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if target.startswith(node + "."):
                continue
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_every_module_sits_on_a_floor():
    for module in graph():
        if module != "rlhf_lab":
            floor(module)


def test_no_module_imports_from_a_floor_above():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    edges = graph()
    edges["rlhf_lab.losses"] = edges["rlhf_lab.losses"] | {"rlhf_lab.pipeline"}
    assert upward_imports(edges) == ["rlhf_lab.losses (floor 5) imports rlhf_lab.pipeline (floor 7)"]
    edges = graph() | {"rlhf_lab.tensors": {"rlhf_lab.seeds"}, "rlhf_lab.seeds": {"rlhf_lab.tensors"}}
    assert cycles(edges) == [["rlhf_lab.tensors", "rlhf_lab.seeds", "rlhf_lab.tensors"]]
