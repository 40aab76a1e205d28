"""Source rules every kernel must follow, checked without a GPU (tests/test_grid_dep_wait.py and
benchmarks/gpu_compile_check.py).

Rule 1, the grid-dependency wait: a kernel's first statement (after its docstring) is ``grid_dep_wait()``, or
comes after L2 prefetches of weights only (calls of ``prefetch_*`` functions, possibly under an ``if``).
A decode graph with programmatic edges (``graph.programmatic_edges``) launches a kernel while its predecessor
still runs; anything before the wait could read the predecessor's output early or overwrite what it still reads.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path


def _called(stmt: ast.stmt) -> str | None:
    """The name a statement of the form ``name(...)`` calls, else None."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name):
        return stmt.value.func.id
    return None


def _is_prefetch(stmt: ast.stmt) -> bool:
    """A call of a ``prefetch_*`` function, or an ``if`` whose body is only such calls: a prefetch changes no value
    any thread sees (it only warms L2), so it cannot race the predecessor and may come before the wait."""
    if isinstance(stmt, ast.If):
        return not stmt.orelse and all(_is_prefetch(s) for s in stmt.body)
    return (_called(stmt) or "").startswith("prefetch_")


def _waits(fn_def: ast.FunctionDef) -> bool:
    body = fn_def.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    while body and _is_prefetch(body[0]):
        body = body[1:]
    return bool(body) and _called(body[0]) == "grid_dep_wait"


def waits_first(fn) -> bool:
    """Whether the Python function ``fn`` (a kernel's py_func) starts with the wait."""
    return _waits(ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0])


def _jit_targets(tree: ast.Module) -> set[str]:
    """Names of the functions a module compiles as kernels: ``@jit`` decorated, or passed by name to ``jit(...)``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(isinstance(d, ast.Name) and d.id == "jit"
                                                     for d in node.decorator_list):
            names.add(node.name)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "jit"
                and node.args and isinstance(node.args[0], ast.Name)):
            names.add(node.args[0].id)
    return names


def kernels_without_wait(package: Path) -> list[str]:
    """'module:function' for every kernel definition in the package's modules that does not start with the wait
    (kernels built by a factory and passed as ``jit(make())`` are covered by the compile check's dry run)."""
    bad = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        targets = _jit_targets(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in targets and not _waits(node):
                bad.append(f"{path.stem}:{node.name}")
    return bad
