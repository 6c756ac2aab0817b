"""The layering of DESIGN.md, checked on the import graph: every arrow points down."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("retailctl.extract", "retailctl.load", "retailctl.gold", "retailctl.verify")
BOTTOM = (
    "retailctl.config",
    "retailctl.errors",
    "retailctl.store",
    "retailctl.bronze_files",
    "retailctl.bronze_store",
    "retailctl.bronze_s3",
    "retailctl.prefetch",
    "retailctl.resources",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def graph(package: str) -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in (ROOT / package).rglob("*.py")}


def within(name: str, prefixes: tuple[str, ...]) -> str | None:
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


def test_only_the_cli_imports_typer_rich_and_the_mock() -> None:
    offenders = {
        module: sorted(i for i in imported if within(i, ("typer", "rich", "mock_api")))
        for module, imported in graph("retailctl").items()
        if not within(module, ("retailctl.cli",))
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_steps_never_import_each_other() -> None:
    crossings = {}
    for module, imported in graph("retailctl").items():
        own = within(module, STEPS)
        if own:
            other = sorted(i for i in imported if (step := within(i, STEPS)) and step != own)
            if other:
                crossings[module] = other
    assert crossings == {}


def test_the_bottom_layers_import_no_step_pipeline_or_cli() -> None:
    upward = {}
    above = (*STEPS, "retailctl.pipeline", "retailctl.cli", "retailctl.status")
    for module, imported in graph("retailctl").items():
        if within(module, BOTTOM):
            found = sorted(i for i in imported if within(i, above))
            if found:
                upward[module] = found
    assert upward == {}


def test_the_mock_api_imports_nothing_from_retailctl() -> None:
    leaks = {
        m: sorted(i for i in imported if within(i, ("retailctl",)))
        for m, imported in graph("mock_api").items()
    }
    assert {m: i for m, i in leaks.items() if i} == {}
