"""examples/ci/perf_gate.sh and the workflow that calls it.

The script's logic (exit codes, baseline refresh, summary, plots) runs against a stub ``sweepbench sweep-bench``
that copies a prepared result file, so the verdicts are exact; one run uses the real sweep on a tiny model, to prove
the script's command line is the one sweep-bench accepts.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_compare import sweep_file

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / "examples" / "ci" / "perf_gate.sh"
WORKFLOW = ROOT / "examples" / "ci" / "perf-regression.yml"
# `sweepbench` on the PATH: sweep-bench answered from $STUB_RESULT when set, every other command the real CLI.
STUB = """#!{python}
import os, shutil, sys
args = sys.argv[1:]
if args[:1] == ["sweep-bench"] and os.environ.get("STUB_RESULT"):
    with open(os.environ["STUB_ARGV"], "a") as f:
        f.write(" ".join(args[1:]) + "\\n")
    if os.environ.get("STUB_FAIL"):
        sys.exit(1)
    shutil.copy(os.environ["STUB_RESULT"], args[args.index("-o") + 1])
    print("| stub table |")
    sys.exit(0)
from sweepbench.cli import main
sys.argv = ["sweepbench", *args]
main()
"""


@pytest.fixture
def gate(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "sweepbench"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    baseline = tmp_path / "baseline.jsonl"

    def run(*args: str, result: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        environ = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
                   "PERF_BASELINE": str(baseline), "STUB_ARGV": str(tmp_path / "argv.txt"), **env}
        environ.pop("GITHUB_STEP_SUMMARY", None) if "GITHUB_STEP_SUMMARY" not in env else None
        if result is not None:
            environ["STUB_RESULT"] = str(result)
        return subprocess.run(["bash", str(GATE), *args], env=environ, capture_output=True, text=True, timeout=300)

    return run, baseline


def test_no_baseline_refresh_then_pass_regress_and_not_comparable(tmp_path, gate):
    run, baseline = gate
    out = tmp_path / "out"
    first = sweep_file(tmp_path / "first.jsonl", seed=1)
    missing = run(str(out), result=first)
    assert missing.returncode == 2 and "--refresh" in missing.stderr and (out / "candidate.jsonl").exists()

    refresh = run("--refresh", str(out), result=first)
    assert refresh.returncode == 0 and baseline.read_bytes() == first.read_bytes()

    same = run(str(out), result=sweep_file(tmp_path / "same.jsonl", seed=2))
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert same.returncode == 0 and "no regression" in summary and "| candidate | 0 |" in summary
    assert (out / "performance_comparison_pp.png").exists() and (out / "performance_comparison_tg.png").exists()
    assert (out / "candidate.md").read_text() == "| stub table |\n"

    step_summary = tmp_path / "step-summary.md"
    slow = run(str(out), result=sweep_file(tmp_path / "slow.jsonl", seed=3, tg_scale=0.9),
               GITHUB_STEP_SUMMARY=str(step_summary))
    assert slow.returncode == 1 and "performance regression" in step_summary.read_text(encoding="utf-8")

    other = sweep_file(tmp_path / "other.jsonl", seed=3, model="another-model")
    assert run(str(out), result=other).returncode == 3
    assert run(str(out), result=other, PERF_FORCE="1").returncode == 0


def test_a_failed_sweep_is_not_a_regression(tmp_path, gate):
    run, _ = gate
    failed = run(str(tmp_path / "out"), result=sweep_file(tmp_path / "r.jsonl", seed=1), STUB_FAIL="1")
    assert failed.returncode == 4 and "the sweep failed" in failed.stderr


def test_sweep_command_line_uses_issue_3_flags(tmp_path, gate):
    run, _ = gate
    run("--refresh", str(tmp_path / "out"), result=sweep_file(tmp_path / "r.jsonl", seed=1), PERF_MODEL="m.gguf")
    argv = (tmp_path / "argv.txt").read_text().split()
    for flag in ("-m", "--engine", "-c", "-ub", "-n", "-r", "--output-format", "-o"):
        assert flag in argv, flag
    assert argv[argv.index("-m") + 1] == "m.gguf" and argv[argv.index("--output-format") + 1] == "md"


def test_real_sweep_on_a_tiny_model(tmp_path, gate, tiny_model):
    run, baseline = gate
    refresh = run("--refresh", str(tmp_path / "out"), PERF_MODEL=str(tiny_model()))
    assert refresh.returncode == 0, refresh.stderr[-2000:]
    assert "|    PP |     TG |   N_KV |" in refresh.stdout
    again = run(str(tmp_path / "out"), PERF_MODEL=str(tiny_model()))
    assert again.returncode in (0, 1), again.stderr[-2000:]  # timing on a shared machine decides which
    assert "sweepbench compare" in (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")


def test_workflow_runs_the_gate_and_publishes_it():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    commands = "\n".join(step.get("run", "") for step in job["steps"])
    assert "examples/ci/perf_gate.sh perf-out" in commands and "--refresh" in commands
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
