"""The device A/B's verdict (benchmarks/ab_verdict.py): a variant only with passing tests and a faster step than
base on every preset, in every round; among several such, the fastest."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("ab_verdict", Path(__file__).parents[1] / "benchmarks/ab_verdict.py")
ab_verdict = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ab_verdict)


def _write(d: Path, tests: str, decode: dict[str, list[float]]) -> Path:
    (d / "tests.log").write_text(tests)
    for key, values in decode.items():
        for i, ms in enumerate(values, 1):
            (d / f"prof-{key}-{i}.txt").write_text(f"nodes ...\n\ngraph decode: median {ms:.3f} ms per token (x t/s)\n")
    return d / "tests.log"


PASS = "....s.\n53 passed, 1 skipped in 101.2s\n"
FAIL = "..F.\nFAILED tests/test_cuda_engine.py::test_x - AssertionError: error\n1 failed, 52 passed in 99.0s\n"
FASTER = {"q-base": [1.10, 1.25], "q-on": [1.00, 1.02], "l-base": [1.00, 1.01], "l-on": [0.95, 0.97]}


@pytest.mark.parametrize(
    ("tests", "decode", "answer"),
    [
        (PASS, FASTER, "on"),
        (FAIL, FASTER, "off"),
        ("", FASTER, "off"),  # killed by its timeout: no summary
        ("..F\nwarning: RuntimeError raised in a passed callback\n", FASTER, "off"),  # killed after a failure
        ("==== 52 passed, 1 error in 90.1s ====\n", FASTER, "off"),
        ("== 53 passed, 1 skipped in 101.2s ==\n", FASTER, "on"),  # the framed form (without -q)
        (PASS, {**FASTER, "l-on": [1.02, 1.03]}, "off"),  # slower on one preset
        # the 15:05 UTC H100 run: faster in the median of two rounds only through a slow first profile
        (PASS, {"q-base": [1.290, 1.190], "q-on": [1.209, 1.226]}, "off"),
        (PASS, {k: v for k, v in FASTER.items() if k != "l-on"}, "off"),  # one side missing
        (PASS, {}, "off"),
    ],
)
def test_verdict_needs_passing_tests_and_a_faster_step_on_every_preset(tmp_path, tests, decode, answer):
    log = _write(tmp_path, tests, decode)
    evidence, got = ab_verdict.verdict(log, tmp_path)
    assert got == answer, evidence


THREE = {"q-base": [1.20, 1.19], "q-order": [1.05, 1.06], "q-exit": [1.10, 1.12],
         "l-base": [1.10, 1.08], "l-order": [0.98, 0.99], "l-exit": [1.00, 1.01]}


@pytest.mark.parametrize(
    ("decode", "answer"),
    [
        (THREE, "order"),  # both win everywhere: the lower total
        ({**THREE, "l-order": [0.98, 1.09]}, "exit"),  # order loses a round on one preset
        ({**THREE, "l-order": [0.98, 1.09], "q-exit": [1.10, 1.20]}, "off"),
        ({**THREE, "l-exit": [1.00]}, "order"),  # exit lacks a round's figure: it cannot win
    ],
)
def test_verdict_picks_the_fastest_variant_that_wins_everywhere(tmp_path, decode, answer):
    log = _write(tmp_path, PASS, decode)
    evidence, got = ab_verdict.verdict(log, tmp_path)
    assert got == answer, evidence
    if answer != "off":
        assert any(f"{answer} " in line and "x)" in line for line in evidence)


def test_pdl_verdict_reads_the_back_to_back_lines():
    lines = ("pdl off round 1: 1.000 ms per step back to back on the GPU, decode median 1.2 ms per token (off)\n"
             "pdl order round 1: 0.900 ms per step back to back on the GPU, decode median 1.1 ms per token (order)\n"
             "pdl exit round 1: 0.950 ms per step back to back on the GPU, decode median 1.1 ms per token (exit)\n")
    second = lines.replace("round 1", "round 2")
    assert ab_verdict.pdl_verdict(lines + second)[1] == "order"
    assert ab_verdict.pdl_verdict(lines + second.replace("0.900 ms", "1.010 ms"))[1] == "exit"
    assert ab_verdict.pdl_verdict(lines.replace("0.900", "1.100").replace("0.950", "1.000"))[1] == "off"  # a tie
    assert ab_verdict.pdl_verdict("")[1] == "off"
    # settings with a suffix (gpu_profile's order-out, order-pf) are variants like any other
    pf = "pdl order-pf round {}: 0.850 ms per step back to back on the GPU, decode median 1.0 ms per token (order)\n"
    assert ab_verdict.pdl_verdict(lines + pf.format(1) + second + pf.format(2))[1] == "order-pf"
