"""The layout shows the architecture: what the web and worker processes run holds none of the lab (evaluation,
calibration, the public sets, training) or the benchmarks, and ``__init__.py`` files only re-export."""
import ast
from pathlib import Path

from config.settings import PROJECT_ROOT

OURS = ("bot", "config", "nlu", "lab", "benchmarks", "tests")
OFFLINE = ("lab", "benchmarks", "tests")
#: What the Procfile's processes start from; RQ imports the jobs by name.
ENTRY_POINTS = ("bot.app", "bot.worker", "bot.jobs", "config.gunicorn_logging")


def module_file(name: str) -> Path | None:
    path = PROJECT_ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_by(name: str, path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, at the top or inside a function (lazy imports count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = set()
    for each in found:
        parts = each.split(".")
        for end in range(1, len(parts) + 1):  # a package's __init__ runs too
            if parts[0] in OURS and module_file(".".join(parts[:end])):
                modules.add(".".join(parts[:end]))
    return modules


def closure(starts) -> set[str]:
    seen, todo = set(), list(starts)
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        todo.extend(imported_by(name, module_file(name)))
    return seen


def test_the_web_and_worker_processes_import_nothing_from_the_lab_or_the_benchmarks():
    running = closure(ENTRY_POINTS)
    assert {"bot.webhook", "bot.console.dashboard", "nlu.engine", "nlu.rerank"} <= running  # lazy imports too
    assert sorted(m for m in running if m.split(".")[0] in OFFLINE) == []


def test_init_files_only_re_export():
    for path in PROJECT_ROOT.glob("*/**/__init__.py"):
        if ".venv" in path.parts or "node_modules" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        body = tree.body[1:] if tree.body and isinstance(tree.body[0], ast.Expr) else tree.body  # the docstring
        for node in body:
            allowed = isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"])
            assert allowed, f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}: wiring belongs in a module of its own"
