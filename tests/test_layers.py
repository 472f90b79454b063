"""The import rules of docs/design.md, read from the code: layers import downward only.

Every `import` and `from ... import` of every module is read (those inside functions
too), so a lazy import cannot hide a dependency that points the wrong way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wxgate"

# What each part may import of wxgate, besides itself.
ALLOWED: dict[str, set[str]] = {
    "clock": set(),
    "observability": set(),
    "tokenbucket": set(),
    "config": {"wechat.kinds"},
    "wechat": {"clock", "config", "observability"},
    "backends": {"clock", "config", "observability", "tokenbucket", "wechat"},
    "delivery": {"backends", "clock", "config", "observability", "tokenbucket", "wechat"},
    "sandbox": {"clock", "observability", "wechat"},
}
NEVER_IMPORTED = {"cli"}  # the command line sits on top; nothing in the package imports it


def _part(module: str) -> str:
    """`wxgate.wechat.token` -> `wechat`; `wxgate.clock` -> `clock`."""
    return module.split(".")[1] if module.count(".") else module


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "wxgate":  # `from wxgate import cli` imports wxgate.cli
                found |= {f"wxgate.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("wxgate.")}


def _modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        modules.append((".".join(("wxgate", *relative.parts)), path))
    return modules


def _allowed(importer: str, imported: str) -> bool:
    part, target = _part(importer), imported.removeprefix("wxgate.")
    if part not in ALLOWED or target.split(".")[0] == part:
        return True
    return any(target == rule or target.startswith(rule + ".") for rule in ALLOWED[part])


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda value: str(value))
def test_each_module_imports_only_the_layers_below_it(module: str, path: Path) -> None:
    wrong = sorted(name for name in _imports(path) if not _allowed(module, name))
    assert wrong == [], f"{module} imports {wrong}, against the layer rules"


def test_nothing_in_the_package_imports_the_command_line() -> None:
    importers = [
        module
        for module, path in _modules()
        if any(_part(name) in NEVER_IMPORTED for name in _imports(path))
        and _part(module) not in NEVER_IMPORTED
        and not module.endswith("__main__")
    ]
    assert importers == []


def test_the_rules_see_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from wxgate.api.app import create_app\n")
    assert _imports(bad) == {"wxgate.api.app"}
    assert not _allowed("wxgate.backends.sqlite", "wxgate.api.app")
    assert not _allowed("wxgate.wechat.client", "wxgate.backends.base")
    assert _allowed("wxgate.delivery.worker", "wxgate.backends.base")
