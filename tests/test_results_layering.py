"""plot, convert and compare read result files only: they never import engines, models, the sweep harness or a GUI."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_SIDE = [
    *sorted((ROOT / "plots").glob("*.py")),
    *(ROOT / "sweepbench" / "results" / f"{name}.py"
      for name in ("__init__", "convert", "llama_bench", "parsers", "records", "runs", "summary")),
    *(ROOT / "sweepbench" / f"{name}.py" for name in ("compare", "compare_report", "stats", "errors")),
    *(ROOT / "sweepbench" / "commands" / f"{name}.py" for name in ("plot", "convert", "compare")),
]
# What those files may import from this repository: each other, the error types, the package's version.
ALLOWED = ("sweepbench.results", "sweepbench.compare", "sweepbench.compare_report", "sweepbench.stats",
           "sweepbench.errors", "sweepbench.commands", "plots")
FORBIDDEN_MODULES = ("sweepbench.engines", "sweepbench.models", "sweepbench.bench", "sweepbench.gguf_model",
                     "sweepbench.ik_ctypes", "sweepbench.quants", "sweepbench.ref_ops", "numba", "gguf",
                     "matplotlib.pyplot")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # includes imports inside functions
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_result_side_imports_only_result_side_code():
    for path in RESULT_SIDE:
        ours = {m for m in imported_modules(path) if m.split(".")[0] in ("sweepbench", "plots")}
        bad = {m for m in ours if m not in ("sweepbench", "sweepbench.__version__")
               and not m.startswith(ALLOWED)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_commands_load_without_engines_or_gui():
    code = ("import sys; import sweepbench.commands.plot, sweepbench.commands.convert, sweepbench.commands.compare; "
            f"print([m for m in sys.modules if m.startswith({FORBIDDEN_MODULES!r})])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
