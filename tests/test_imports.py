"""Imports follow the data flow: a module imports from its own floor or the floors below, never above,
and no modules import each other in a circle. The floors are docs/architecture.md's layout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rlhf_lab

PACKAGE = Path(rlhf_lab.__file__).parent
FLOORS = [  # lowest first; a name covers a module and everything inside it
    ["tensors", "seeds", "errors", "repro"],  # the ground floor: tensors, seeds, errors, arithmetic pins
    ["config", "runinfo", "artifacts"],  # settings, run records, the artifact cache
    ["world"],  # the tiny offline world
    ["data"],  # sources, row formats, tokenization rules, DataModules
    ["label"],  # the labeling page and the files of human labels
    ["models", "optim", "faults", "tracking", "plots"],  # loading and exporting models, infrastructure
    ["losses", "rollout", "scorers", "labelers", "budget", "evaluation"],  # maths, sampling, scoring, budgets
    ["policy", "comparisons"],  # what the stages that sample share: prompt stream, reference, pairs
    ["stages"],  # every stage (no stage imports another: test_no_stage_imports_another_stage)
    ["pipeline"],  # stage chaining and the cache
    ["cli", "api", "report", "protocol"],  # entry points, reports, the comparison protocol
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
    raise AssertionError(f"{module} is on no floor: add it to FLOORS (and to docs/architecture.md's layout)")


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
    assert upward_imports(edges) == ["rlhf_lab.losses (floor 6) imports rlhf_lab.pipeline (floor 9)"]
    edges = graph() | {"rlhf_lab.tensors": {"rlhf_lab.seeds"}, "rlhf_lab.seeds": {"rlhf_lab.tensors"}}
    (cycle,) = cycles(edges)  # found from whichever of the two the search reaches first
    assert cycle[0] == cycle[-1] and sorted(cycle[1:]) == ["rlhf_lab.seeds", "rlhf_lab.tensors"]


# --------------------------------------------------------------------------------- the stages
STAGES_PACKAGE = "rlhf_lab.stages"
SHARED = {"common", "contract", "lm"}  # what several stages use: owned by none of them


def stage_of(module: str) -> str | None:
    """The stage a module belongs to (`rlhf_lab.stages.rl.module` -> `rl`); None outside the stages or
    for their shared modules."""
    if not module.startswith(STAGES_PACKAGE + "."):
        return None
    name = module.split(".")[2]
    return None if name in SHARED else name


def cross_stage_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} imports {target}"
        for source, targets in edges.items()
        for target in targets
        if stage_of(source) and stage_of(target) and stage_of(source) != stage_of(target)
    )


def test_no_stage_imports_another_stage():
    assert cross_stage_imports(graph()) == []


def test_the_check_catches_a_stage_importing_another():
    edges = graph()
    edges["rlhf_lab.stages.dpo.sources"] = edges["rlhf_lab.stages.dpo.sources"] | {"rlhf_lab.stages.collect"}
    assert cross_stage_imports(edges) == ["rlhf_lab.stages.dpo.sources imports rlhf_lab.stages.collect"]


def test_every_stage_keeps_the_typed_contract():
    import inspect

    from rlhf_lab.pipeline import STAGES
    from rlhf_lab.stages.contract import Stage

    for name, stage in STAGES.items():
        assert isinstance(stage, Stage) and stage.name == name
        for field in ("upstream", "key_config", "check"):
            assert list(inspect.signature(getattr(stage, field)).parameters) == ["cfg"], (name, field)
        assert list(inspect.signature(stage.build).parameters) == ["ctx", "out"], name
    with pytest.raises(TypeError, match="resumeable"):  # a misspelt capability fails where it is written
        Stage("x", 1, upstream=list, key_config=dict, build=dict, resumeable=True)
    with pytest.raises(TypeError, match="version"):
        Stage("x", 0, upstream=list, key_config=dict, build=dict)
