"""Synthetic models: valid for our loader and for ik_llama.cpp, right types and statistics, deterministic, sized
like the real models, never left half-written."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from typer.testing import CliRunner

from sweepbench import synth
from sweepbench.cli import app
from sweepbench.errors import SweepbenchError, UsageError
from sweepbench.models.tensors import open_model
from sweepbench.presets import PRESETS, resolve_preset

MIXES = [
    ("qwen3moe", "Q8_0", "Q8_0"),
    ("qwen3moe", "Q4_K", "Q6_K"),
    ("qwen3moe", "F16", "F16"),
    ("bailingmoe2", "Q8_0", "Q8_0"),
    ("bailingmoe2", "IQ4_XS", "Q4_0"),
    ("bailingmoe2", "Q5_K", "BF16"),
]


def _kind(name: str) -> str:
    if name.endswith("norm.weight"):
        return "norm"
    if "ffn_gate_inp" in name:
        return "router"
    if "exp_probs_b" in name:
        return "bias"
    return "expert" if "_exps." in name else "dense"


@pytest.mark.parametrize("arch,expert_type,dense_type", MIXES)
def test_tiny_model_opens_with_the_recipe_types(tiny_model, arch, expert_type, dense_type):
    model, cfg = open_model(tiny_model(arch, expert_type, dense_type))
    shape = resolve_preset("tiny", arch)
    assert (cfg.arch, cfg.n_layer, cfg.n_embd, cfg.n_expert, cfg.n_expert_used, cfg.n_vocab) == (
        arch, shape.n_layer, shape.n_embd, shape.n_expert, shape.n_expert_used, shape.n_vocab)
    want = {"norm": Q.F32, "router": Q.F32, "bias": Q.F32, "expert": Q[expert_type], "dense": Q[dense_type]}
    for name, t in model.tensors.items():
        assert t.qtype == want[_kind(name)], name
    assert model.get("tokenizer.ggml.model") == "llama"
    assert len(model.get("tokenizer.ggml.tokens")) == cfg.n_vocab


def test_f16_everywhere_leaves_only_norms_router_and_bias_in_f32(tiny_model):
    model, _ = open_model(tiny_model("bailingmoe2", "F16", "F16"))
    f32 = {_kind(n) for n, t in model.tensors.items() if t.qtype == Q.F32}
    assert f32 == {"norm", "router", "bias"}
    assert {t.qtype for t in model.tensors.values()} == {Q.F16, Q.F32}


def test_bailingmoe2_tiny_has_dense_lead_shared_expert_groups_and_bias(tiny_model):
    model, cfg = open_model(tiny_model("bailingmoe2"))
    assert (cfg.n_dense_lead, cfg.n_expert_shared, cfg.n_expert_groups, cfg.n_group_used) == (1, 1, 4, 2)
    assert cfg.n_rot == cfg.head_dim // 2 and cfg.gating == "sigmoid" and cfg.has_exp_probs_b
    assert "blk.0.ffn_gate.weight" in model.tensors and "blk.0.ffn_gate_exps.weight" not in model.tensors
    assert "blk.1.ffn_up_shexp.weight" in model.tensors


@pytest.mark.parametrize("arch,expert_type,dense_type", [MIXES[1], MIXES[4]])
def test_weight_statistics_match_the_recipe(tiny_model, arch, expert_type, dense_type):
    """Dequantized weights: std 0.03 and mean 0 (every quant type), norms 1, router std 0.03, bias std 0.01."""
    model, _ = open_model(tiny_model(arch, expert_type, dense_type))
    values: dict[str, list[np.ndarray]] = {}
    for name, t in model.tensors.items():
        values.setdefault(_kind(name), []).append(t.dequantize().ravel())
    assert np.all(np.concatenate(values.pop("norm")) == 1.0)
    want_std = {"expert": 0.03, "dense": 0.03, "router": 0.03, "bias": 0.01}
    for kind, parts in values.items():
        w = np.concatenate(parts)
        # 4 standard errors of the sample std and mean (the bias has only 8 values per layer), plus slack for
        # the quant formats: scales calibrated to 10%, grids not quite symmetric (IQ4_XS: -127..113)
        assert abs(w.std() / want_std[kind] - 1) < max(0.1, 4 / np.sqrt(2 * w.size)), (kind, w.std())
        assert abs(w.mean()) < want_std[kind] * (0.02 + 4 / np.sqrt(w.size)), (kind, w.mean())


def test_same_seed_same_bytes_whatever_the_thread_count(tmp_path):
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    synth.write_synthetic_model(a, "tiny", "bailingmoe2", "Q4_K", seed=3, threads=1)
    synth.write_synthetic_model(b, "tiny", "bailingmoe2", "Q4_K", seed=3, threads=4)
    synth.write_synthetic_model(c, "tiny", "bailingmoe2", "Q4_K", seed=4, threads=1)
    assert a.read_bytes() == b.read_bytes()
    (ma, _), (mc, _) = open_model(a), open_model(c)
    for name in ("blk.1.ffn_down_exps.weight", "blk.0.attn_qkv.weight", "blk.2.ffn_gate_inp.weight"):
        assert not np.array_equal(ma.tensors[name].raw, mc.tensors[name].raw), name


def test_any_seed_is_recorded_in_the_metadata(tmp_path):
    model, _ = open_model(synth.write_synthetic_model(tmp_path / "m.gguf", "tiny", seed=2**40 + 1).path)
    assert model.get("sweepbench.synth.seed") == 2**40 + 1
    assert model.get("sweepbench.synth.preset") == "tiny"


def test_chunks_of_one_tensor_differ(monkeypatch, tmp_path):
    """Each chunk has its own generator: a tensor spanning several chunks must not repeat itself."""
    monkeypatch.setattr(synth, "CHUNK_ELEMENTS", 256 * 16)  # 16 rows per chunk
    model, _ = open_model(synth.write_synthetic_model(tmp_path / "m.gguf", "tiny", threads=2).path)
    raw = model.tensors["blk.0.ffn_up_exps.weight"].raw  # [8 * 256 rows, row_bytes]
    assert not np.array_equal(raw[:16], raw[16:32])


@pytest.mark.parametrize(
    "preset,arch,expert_type,gigabytes",
    [  # published sizes of the reference files (anchors.md)
        ("qwen3-30b-a3b", "qwen3moe", None, 17.99),
        ("ling-mini-2.0", "bailingmoe2", None, 9.65),
        ("small", "qwen3moe", None, 2.31),
        ("small", "qwen3moe", "Q4_K", 1.41),
        ("small", "bailingmoe2", None, 1.53),
    ],
)
def test_full_presets_have_the_size_of_the_reference_files(preset, arch, expert_type, gigabytes):
    shape = resolve_preset(preset, arch)
    etype = Q[expert_type] if expert_type else shape.expert_type
    md = synth.synth_metadata(shape, preset, etype, shape.dense_type, 0)
    n_bytes = sum(r.n_bytes for r in synth.tensor_recipes(md, etype, shape.dense_type))
    assert n_bytes / 1e9 == pytest.approx(gigabytes, rel=0.01)


def test_every_preset_resolves_and_rejects_a_foreign_arch():
    for name, variants in PRESETS.items():
        for arch in variants:
            assert resolve_preset(name, arch).arch == arch
    with pytest.raises(UsageError, match="no 'bailingmoe2' variant"):
        resolve_preset("qwen3-30b-a3b", "bailingmoe2")
    with pytest.raises(UsageError, match="unknown preset"):
        resolve_preset("huge")


def test_quant_type_that_does_not_fit_the_rows_is_a_usage_error():
    shape = replace(resolve_preset("tiny"), n_ff_exp=96)  # 96-wide expert rows: Q8_0 fits, Q4_K does not
    md = synth.synth_metadata(shape, "tiny", Q.Q4_K, Q.Q8_0, 0)
    assert synth.tensor_recipes(md, Q.Q8_0, Q.Q8_0)
    with pytest.raises(UsageError, match="--expert-type Q4_K needs rows of a multiple of 256.*ffn_down_exps"):
        synth.tensor_recipes(md, Q.Q4_K, Q.Q8_0)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError, SweepbenchError])
def test_no_partial_file_is_left_behind(monkeypatch, tmp_path, error):
    calls = []

    def failing_random_rows(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise error("boom")
        return real(*args, **kwargs)

    real = synth.random_rows
    monkeypatch.setattr(synth, "random_rows", failing_random_rows)
    out = tmp_path / "m.gguf"
    with pytest.raises(error):
        synth.write_synthetic_model(out, "tiny", threads=2)
    assert list(tmp_path.iterdir()) == []


# ik_llama.cpp aborts the process on a model it cannot handle, so it runs in a subprocess.
IK_DECODE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ik_llama_cpp import _ctypes_api as C

    C.llama_backend_init()
    model = C.llama_model_load_from_file(sys.argv[1].encode(), C.llama_model_default_params())
    if not model:
        print(json.dumps({"loaded": False})); sys.exit()
    n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(model))
    cp = C.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = 64
    cp.n_threads = cp.n_threads_batch = 1
    ctx = C.llama_init_from_model(model, cp)
    n = 24
    batch = C.llama_batch_init(n, 0, 1)
    for i, tok in enumerate(np.random.default_rng(0).integers(0, n_vocab, n)):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = int(tok), i, 1, 1
        batch.seq_id[i][0] = 0
    batch.n_tokens = n
    rc = C.llama_decode(ctx, batch)
    logits = np.array([np.ctypeslib.as_array(C.llama_get_logits_ith(ctx, i), shape=(n_vocab,)) for i in range(n)])
    print(json.dumps({"loaded": True, "n_vocab": n_vocab, "rc": rc, "finite": bool(np.isfinite(logits).all()),
                      "std": float(logits.std()), "n_argmax": len(set(logits.argmax(1).tolist()))}))
    C.llama_batch_free(batch); C.llama_free(ctx); C.llama_free_model(model)
""")


@pytest.mark.parametrize("arch,expert_type,dense_type", [MIXES[0], MIXES[1], MIXES[3], MIXES[4], ("bailingmoe2", "F16", "F16")])
def test_ik_llama_cpp_loads_and_decodes_to_finite_logits(tiny_model, arch, expert_type, dense_type):
    path = tiny_model(arch, expert_type, dense_type)
    proc = subprocess.run([sys.executable, "-c", IK_DECODE, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] and out["rc"] == 0 and out["n_vocab"] == 512
    assert out["finite"]
    assert 0.05 < out["std"] < 20  # activations neither vanished nor blew up through the layers
    assert out["n_argmax"] > 1  # different tokens give different predictions


def test_synth_command_writes_a_model_that_opens(tmp_path):
    out = tmp_path / "m.gguf"
    args = ["synth", "tiny", "--arch", "bailingmoe2", "--expert-type", "q4_k", "--seed", "7", "-o", str(out), "-t", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert str(out) in result.stdout and "MB/s" in result.stdout
    model, cfg = open_model(out)
    assert cfg.arch == "bailingmoe2" and model.tensors["blk.1.ffn_up_exps.weight"].qtype == Q.Q4_K
    assert model.get("sweepbench.synth.seed") == 7
    assert list(tmp_path.iterdir()) == [out]


def test_split_model_holds_the_same_tensors_and_runs_in_both_engines(tmp_path, tiny_model):
    """--split 3 writes parts as llama-gguf-split does; any part opens the whole model, byte-identical tensors,
    and both our engine and ik_llama.cpp (given the first part) compute the same logits as from one file."""
    import numpy as np

    from sweepbench.engines import create_engine
    from sweepbench.engines.base import EngineOptions
    from sweepbench.gguf_model import load_gguf

    result = CliRunner().invoke(app, ["synth", "tiny", "--arch", "bailingmoe2", "--split", "3", "-t", "2",
                                      "-o", str(tmp_path / "m.gguf")])
    assert result.exit_code == 0, result.output
    parts = sorted(tmp_path.glob("m-0000?-of-00003.gguf"))
    assert len(parts) == 3 and not list(tmp_path.glob("*.partial"))
    whole = load_gguf(tiny_model("bailingmoe2"))
    split = load_gguf(parts[1])
    assert split.files == parts and split.metadata["split.count"] == 3
    assert set(split.tensors) == set(whole.tensors)
    assert all(np.array_equal(split.tensors[n].raw, t.raw) for n, t in whole.tensors.items())
    tokens = np.array([1, 5, 77, 300, 2])
    for engine_name in ("reference", "ik"):
        logits = []
        for path in (parts[0], tiny_model("bailingmoe2")):
            engine = create_engine(engine_name)
            engine.load(str(path), EngineOptions(n_ctx=16, n_threads=2))
            logits.append(engine.prefill(tokens, 0, all_logits=True))
            engine.close()
        np.testing.assert_array_equal(logits[0], logits[1])


def test_missing_split_part_is_one_line(tmp_path):
    CliRunner().invoke(app, ["synth", "tiny", "--split", "2", "-t", "2", "-o", str(tmp_path / "m.gguf")])
    (tmp_path / "m-00002-of-00002.gguf").unlink()
    result = CliRunner().invoke(app, ["info", str(tmp_path / "m-00001-of-00002.gguf")])
    assert result.exit_code == 1 and "m-00002-of-00002.gguf is missing" in result.output
    assert result.output.count("\n") == 1
