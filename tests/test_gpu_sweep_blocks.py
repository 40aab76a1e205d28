"""benchmarks/gpu_sweep.py --notes: a run on the anchors' card (an H200) owns the main table block; a run on any
other card writes a block of its own and never replaces the H200 table."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # gpu_sweep imports bench_io as a sibling script
SPEC = importlib.util.spec_from_file_location("gpu_sweep", BENCH / "gpu_sweep.py")
gpu_sweep = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_sweep)


def test_each_card_writes_its_own_block(tmp_path, monkeypatch):
    notes = tmp_path / "NOTES.md"
    notes.write_text("# notes\n\n### What bounds each figure now\n\nprose\n")
    monkeypatch.setattr(gpu_sweep, "NOTES", notes)
    gpu_sweep.write_notes("H200 TABLE v1", "NVIDIA H200")
    gpu_sweep.write_notes("H100 TABLE v1", "NVIDIA H100 80GB HBM3")
    gpu_sweep.write_notes("H100 TABLE v2", "NVIDIA H100 80GB HBM3")
    text = notes.read_text()
    assert "H200 TABLE v1" in text and "H100 TABLE v2" in text and "H100 TABLE v1" not in text
    assert text.count(gpu_sweep.BEGIN) == 1 and text.count("gpu-sweep-h100-80gb-hbm3:begin") == 1
    gpu_sweep.write_notes("H200 TABLE v2", "NVIDIA H200")
    text = notes.read_text()
    assert "H200 TABLE v1" not in text and "H200 TABLE v2" in text and "H100 TABLE v2" in text


def test_the_card_note_says_when_ik_ran_on_another_card():
    assert gpu_sweep.card_note("NVIDIA H200", 4027) == "same H200 class, not measured in this run"
    other = gpu_sweep.card_note("NVIDIA H100 80GB HBM3", 2718)
    assert "not the issue's H200 comparison" in other and "2718 GB/s" in other
