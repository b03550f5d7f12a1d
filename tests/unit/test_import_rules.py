"""The package's import rules, read from the source with ``ast`` (nothing is imported).

Every ``import`` / ``from ... import`` of an ``acestep_api`` module counts, wherever it is
written: at the top, inside a function, or under ``if TYPE_CHECKING:``. A lazy import still
ties the two modules together, so it still closes a circle.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path


PACKAGE = "acestep_api"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=1)
def module_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


@lru_cache(maxsize=None)
def parsed(module: str) -> ast.Module:
    path = module_files()[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a ``from`` import names, relative levels resolved against ``module``."""
    if not node.level:
        return node.module or ""
    is_package = module_files()[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, tree: ast.AST | None = None) -> set[str]:
    """The ``acestep_api`` modules that ``module`` (or ``tree``, read as ``module``) imports
    anywhere in its source.

    ``from acestep_api.x import y`` counts as ``acestep_api.x.y`` when that is a module,
    else as ``acestep_api.x``.
    """
    known = module_files()
    found: set[str] = set()
    for node in ast.walk(tree if tree is not None else parsed(module)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known and name != module)
    return found


@lru_cache(maxsize=1)
def import_graph() -> dict[str, frozenset[str]]:
    return {module: frozenset(imported_modules(module)) for module in module_files()}


def find_cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def _listing(lines: list[str]) -> str:
    return "\n  " + "\n  ".join(lines)


# --------------------------------------------------------------------------- #
#  The graph reader itself                                                     #
# --------------------------------------------------------------------------- #


def test_the_graph_sees_lazy_relative_and_type_checking_imports():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from acestep_api.engine.request import GenerationRequest\n"
        "def f():\n    from acestep_api.engine import audio\n    import acestep_api.settings\n"
        "from . import seeds\n"
        "import json\n"
    )
    assert imported_modules("acestep_api.engine.tasks", tree) == {
        "acestep_api.engine.request",  # a name inside the module: the module itself
        "acestep_api.engine.audio",  # a module named in a from-import
        "acestep_api.settings",
        "acestep_api.engine.seeds",
    }


def test_the_cycle_finder_reports_each_circle_once():
    graph = {"a": frozenset({"b"}), "b": frozenset({"a", "c"}), "c": frozenset(), "d": frozenset({"d"})}
    assert find_cycles(graph) == [["a", "b"]]


def test_the_graph_covers_the_whole_package():
    graph = import_graph()
    assert "acestep_api.engine.engine" in graph and "acestep_api.cli" in graph
    assert "acestep_api.engine.request" in graph["acestep_api.engine.engine"]


# --------------------------------------------------------------------------- #
#  The rules                                                                   #
# --------------------------------------------------------------------------- #


def test_no_import_cycle_inside_the_package():
    cycles = find_cycles(import_graph())
    assert not cycles, "modules that import each other, directly or in a circle:" + _listing(
        [" <-> ".join(group) for group in cycles]
    )


DEMO_WRITERS = {f"{PACKAGE}.engine.tiny", f"{PACKAGE}.engine.tiny_lm"}


def reachable(graph: dict[str, frozenset[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_production_engine_reaches_no_demo_writer():
    graph = import_graph()
    production = [
        module for module in graph
        if module == f"{PACKAGE}.engine.engine"
        or module.startswith((f"{PACKAGE}.engine.loading", f"{PACKAGE}.engine.lm"))
    ]
    offenders = [
        f"{module} reaches {', '.join(sorted(reachable(graph, module) & DEMO_WRITERS))}"
        for module in sorted(production) if reachable(graph, module) & DEMO_WRITERS
    ]
    assert production and not offenders, "the engine must load real weights without the demo writers:" + _listing(
        offenders
    )


ROUTES = f"{PACKAGE}.server.routes."


def test_no_route_module_imports_another_route_module():
    offenders = [
        f"{module} imports {target}"
        for module, targets in sorted(import_graph().items()) if module.startswith(ROUTES)
        for target in sorted(targets) if target.startswith(ROUTES)
    ]
    assert not offenders, "route modules share code through a module outside routes/:" + _listing(offenders)


def test_the_serverless_worker_does_not_import_the_http_server():
    offenders = [
        f"{module} imports {target}"
        for module, targets in sorted(import_graph().items())
        if module == f"{PACKAGE}.serverless" or module.startswith(f"{PACKAGE}.serverless.")
        for target in sorted(targets)
        if target == f"{PACKAGE}.server" or target.startswith(f"{PACKAGE}.server.")
    ]
    assert not offenders, "the serverless worker must run without the HTTP server's modules:" + _listing(offenders)


# What counts as client-facing markdown in a string: bold, a heading line, a bold list item,
# or the official "not available" placeholder that answers show.
MARKDOWN = re.compile(r"\*\*|^\s*#{1,6}\s|^\s*- \*\*", re.MULTILINE)
PLACEHOLDER = "N/A"
# Engine modules allowed such strings, each with its reason.
MARKDOWN_ALLOWED: dict[str, str] = {
    f"{PACKAGE}.engine.demo_tokenizer": "demo writer: the tiny tokenizers learn from text shaped like real prompts",
    f"{PACKAGE}.engine.conditioning": "model input: the official text-encoder prompt has '# ' section headings",
    f"{PACKAGE}.engine.lm.prompts": "model input: the official 5 Hz LM prompts have '# ' section headings",
    f"{PACKAGE}.engine.lm.planner": "parsing: reads the LM's own 'N/A' for an unknown value",
    f"{PACKAGE}.engine.request": "parsing: a request's 'N/A' means the value is not given",
}


def _docstring_nodes(tree: ast.Module) -> set[int]:
    """ids of the docstring constants: documentation, never sent to a client."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def markdown_strings(module: str) -> list[str]:
    tree = parsed(module)
    docstrings = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if MARKDOWN.search(node.value) or PLACEHOLDER in node.value:
                found.append(f"{module}:{node.lineno}: {node.value[:60]!r}")
    return found


def test_every_allowed_module_exists_and_needs_its_place_on_the_list():
    stale = [name for name in MARKDOWN_ALLOWED if name not in module_files() or not markdown_strings(name)]
    assert not stale, "allow-list entries to remove (no such module, or nothing left to allow):" + _listing(stale)


def test_the_engine_builds_no_client_facing_markdown():
    offenders = [
        line
        for module in sorted(module_files())
        if module.startswith(f"{PACKAGE}.engine.") and module not in MARKDOWN_ALLOWED
        for line in markdown_strings(module)
    ]
    assert not offenders, (
        "the engine returns data; answers are worded by the server (markdown, 'N/A'):" + _listing(offenders)
    )
