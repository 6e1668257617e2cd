"""The layout's promises, checked: layers hold, no import circles, no sys.path tricks, thin
scripts, and nothing imports from scripts/."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mmsent"
SCRIPT_MAX_LINES = 100


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "grpc_stubs" not in p.parts]


def _imports(path: Path) -> set[str]:
    """Every mmsent module ``path`` imports, at any depth (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmsent"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mmsent"))
    return found


def test_import_linter_contracts_hold() -> None:
    """serving/ imports only config + errors; clients never touch the model; layers hold."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a pinned requirement"
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_no_import_circles_in_the_package() -> None:
    modules = {_module_name(p): p for p in _package_files()}
    graph = {name: {m for m in _imports(path) if m in modules and m != name}
             for name, path in modules.items()}  # fmt: skip
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_sys_path_edits_and_nothing_imports_scripts() -> None:
    offenders = []
    for path in [*_package_files(), *ROOT.glob("scripts/*.py"), *ROOT.glob("loadtest/*.py"),
                 *ROOT.glob("tests/**/*.py"), *ROOT.glob("handlers/*.py")]:  # fmt: skip
        if path == Path(__file__).resolve():
            continue  # this file names the calls it looks for
        text = path.read_text()
        if "sys.path.insert" in text or "sys.path.append" in text:
            offenders.append(f"{path.relative_to(ROOT)}: edits sys.path")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scripts"):
                offenders.append(f"{path.relative_to(ROOT)}: imports {node.module}")
    assert offenders == []


def test_scripts_are_thin_entry_points() -> None:
    long = {p.name: n for p in ROOT.glob("scripts/*.py")
            if (n := len(p.read_text().splitlines())) > SCRIPT_MAX_LINES}  # fmt: skip
    assert long == {}, f"scripts over {SCRIPT_MAX_LINES} lines: move their logic into mmsent/"
