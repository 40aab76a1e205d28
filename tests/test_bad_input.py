"""Every bad input gives one line on stderr and a non-zero exit through the CLI, never a traceback."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q
from typer.testing import CliRunner

from sweepbench import synth
from sweepbench.cli import app
from sweepbench.presets import resolve_preset


def _variant(path: Path, arch: str = "qwen3moe", metadata: dict | None = None, drop: str | None = None,
             reshape: dict | None = None, retype: dict | None = None) -> Path:
    """A tiny model with one deliberate defect: changed or removed (None) metadata, a dropped, reshaped or
    retyped (all-zero blocks) tensor."""
    shape = resolve_preset("tiny", arch)
    md = synth.synth_metadata(shape, "tiny", Q.Q8_0, Q.Q8_0, 0)
    recipes = synth.tensor_recipes(md, Q.Q8_0, Q.Q8_0)
    for key, value in (metadata or {}).items():  # None removes the key
        md.pop(key) if value is None else md.__setitem__(key, value)
    recipes = [r for r in recipes if r.name != drop]
    recipes = [replace(r, ne=(reshape or {}).get(r.name, r.ne)) for r in recipes]
    recipes = [replace(r, qtype=(retype or {})[r.name], fill="zeros") if r.name in (retype or {}) else r
               for r in recipes]
    synth.write_gguf(path, md, recipes)
    return path


def _truncated(tiny_model, path: Path, keep: float) -> Path:
    data = tiny_model().read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


BAD_MODELS = {
    "empty file": (lambda tm, p: (p.write_bytes(b""), p)[1], "empty file"),
    "truncated data": (lambda tm, p: _truncated(tm, p, 0.5), "truncated"),
    "truncated header": (lambda tm, p: _truncated(tm, p, 0.001), "corrupt or truncated"),
    "wrong magic": (lambda tm, p: (p.write_bytes(b"GGML" + tm().read_bytes()[4:]), p)[1], "not a GGUF file"),
    "text file": (lambda tm, p: (p.write_text("hello\n"), p)[1], "not a GGUF file"),
    "unknown arch": (lambda tm, p: _variant(p, metadata={"general.architecture": "llama"}), "'llama' is not supported"),
    "missing tensor": (lambda tm, p: _variant(p, drop="blk.1.ffn_up_exps.weight"), "blk.1.ffn_up_exps.weight is missing"),
    "wrong shape": (lambda tm, p: _variant(p, reshape={"blk.0.attn_k.weight": (256, 64)}), "blk.0.attn_k.weight has shape"),
    "unsupported type": (lambda tm, p: _variant(p, retype={"blk.0.attn_q.weight": Q.Q5_0}), "Q5_0"),
    "absurd expert count": (lambda tm, p: _variant(p, metadata={"qwen3moe.expert_count": 2**31}), "expert_count"),
    "expert count mismatch": (lambda tm, p: _variant(p, metadata={"qwen3moe.expert_count": 16}), "ffn_gate_inp"),
    "missing key": (lambda tm, p: _variant(
        p, "bailingmoe2", metadata={"bailingmoe2.expert_gating_func": None}), "expert_gating_func is missing"),
    "key of the wrong type": (lambda tm, p: _variant(
        p, "bailingmoe2", metadata={"bailingmoe2.expert_gating_func": "sigmoid"}), "expert_gating_func"),
    "directory": (lambda tm, p: (p.mkdir(), p)[1], "directory"),
    "missing path": (lambda tm, p: p, "cannot open"),
}


def _assert_one_line_error(result, *needles: str, code: int | None = None) -> None:
    assert result.exit_code != 0, result.stdout
    if code is not None:
        assert result.exit_code == code
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case", BAD_MODELS)
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_info_on_bad_model(tiny_model, tmp_path, case, json_flag):
    make, needle = BAD_MODELS[case]
    path = make(tiny_model, tmp_path / "bad.gguf")
    result = CliRunner().invoke(app, ["info", str(path), *json_flag])
    _assert_one_line_error(result, needle, str(path), code=1)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["huge"], "unknown preset"),
        (["qwen3-30b-a3b", "--arch", "bailingmoe2"], "no 'bailingmoe2' variant"),
        (["tiny", "--arch", "llama"], "no 'llama' variant"),
        (["tiny", "--expert-type", "Q5_0"], "--expert-type Q5_0"),
        (["tiny", "--dense-type", "fp8"], "--dense-type fp8"),
        (["tiny", "--seed", "-1"], "--seed"),
        (["tiny", "--threads", "0"], "--threads"),
    ],
)
def test_synth_bad_flags(tmp_path, args, needle):
    out = tmp_path / "m.gguf"
    result = CliRunner().invoke(app, ["synth", *args, "-o", str(out)])
    _assert_one_line_error(result, needle, code=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target,needle", [("missing/m.gguf", "does not exist"), (".", "is a directory")])
def test_synth_bad_output_path(tmp_path, target, needle):
    result = CliRunner().invoke(app, ["synth", "tiny", "-o", str(tmp_path / target)])
    _assert_one_line_error(result, needle, code=2)


@pytest.mark.parametrize("argv, needle", [
    (["sweep-bench", "--bogus"], "No such option: --bogus"),
    (["nope"], "No such command 'nope'"),
    (["info"], "Missing argument"),
    (["logits", "-m"], "requires an argument"),
])
def test_click_usage_errors_are_one_line_through_the_console_entry(capsys, argv, needle):
    """Unknown options and commands come from Click, not from us: main() still turns them into one line."""
    from sweepbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and err.startswith("sweepbench: error:")


def test_bare_command_prints_help_and_exits_0(capsys):
    from sweepbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 0 and "sweep-bench" in capsys.readouterr().out
