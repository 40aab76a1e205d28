"""The tensors each architecture needs: names and ggml shapes (``ne``, innermost first), as ik_llama.cpp loads them.

``validate_model`` checks a loaded GGUF against this list (present, right shape, supported type) and returns
the config with optional-tensor flags resolved.
"""
from __future__ import annotations

from dataclasses import replace

from sweepbench.config import ModelConfig, config_from_metadata
from sweepbench.errors import SweepbenchError
from sweepbench.gguf_model import GGUFModel, load_gguf


def tensor_specs(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Required tensors -> expected ``ne``. Optional ones (``exp_probs_b``, tied ``output``) are not listed."""
    E, D, V = cfg.n_embd, cfg.head_dim, cfg.n_vocab
    specs: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (E, V),
        "output_norm.weight": (E,),
    }
    if cfg.arch == "bailingmoe2":
        specs["output.weight"] = (E, V)  # required, untied
    for il in range(cfg.n_layer):
        p = f"blk.{il}."
        specs[p + "attn_norm.weight"] = (E,)
        if cfg.arch == "bailingmoe2":
            specs[p + "attn_qkv.weight"] = (E, cfg.n_embd_q + 2 * cfg.n_embd_kv)
        else:
            specs[p + "attn_q.weight"] = (E, cfg.n_embd_q)
            specs[p + "attn_k.weight"] = (E, cfg.n_embd_kv)
            specs[p + "attn_v.weight"] = (E, cfg.n_embd_kv)
        specs[p + "attn_q_norm.weight"] = (D,)
        specs[p + "attn_k_norm.weight"] = (D,)
        specs[p + "attn_output.weight"] = (cfg.n_embd_q, E)
        specs[p + "ffn_norm.weight"] = (E,)
        if not cfg.is_moe_layer(il):
            specs[p + "ffn_gate.weight"] = (E, cfg.n_ff)
            specs[p + "ffn_up.weight"] = (E, cfg.n_ff)
            specs[p + "ffn_down.weight"] = (cfg.n_ff, E)
            continue
        specs[p + "ffn_gate_inp.weight"] = (E, cfg.n_expert)
        specs[p + "ffn_gate_exps.weight"] = (E, cfg.n_ff_exp, cfg.n_expert)
        specs[p + "ffn_up_exps.weight"] = (E, cfg.n_ff_exp, cfg.n_expert)
        specs[p + "ffn_down_exps.weight"] = (cfg.n_ff_exp, E, cfg.n_expert)
        if cfg.n_ff_shexp:
            specs[p + "ffn_gate_shexp.weight"] = (E, cfg.n_ff_shexp)
            specs[p + "ffn_up_shexp.weight"] = (E, cfg.n_ff_shexp)
            specs[p + "ffn_down_shexp.weight"] = (cfg.n_ff_shexp, E)
    return specs


def optional_specs(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    specs: dict[str, tuple[int, ...]] = {}
    if cfg.arch == "qwen3moe":
        specs["output.weight"] = (cfg.n_embd, cfg.n_vocab)  # absent -> tied to token_embd
    if cfg.arch == "bailingmoe2":
        for il in range(cfg.n_dense_lead, cfg.n_layer):
            specs[f"blk.{il}.exp_probs_b.bias"] = (cfg.n_expert,)
    return specs


def validate_model(model: GGUFModel) -> ModelConfig:
    """Check every tensor the architecture needs; one line naming file and tensor on the first problem."""
    from sweepbench.quants import check_supported

    cfg = config_from_metadata(model.metadata, where=str(model.path))
    required = tensor_specs(cfg)
    optional = optional_specs(cfg)
    for name, ne in list(required.items()) + list(optional.items()):
        t = model.tensors.get(name)
        if t is None:
            if name in required:
                raise SweepbenchError(f"{model.path}: tensor {name} is missing (needed by {cfg.arch})")
            continue
        if tuple(t.ne) != tuple(ne):
            raise SweepbenchError(f"{model.path}: tensor {name} has shape {list(t.ne)}, expected {list(ne)}")
        check_supported(t.qtype, f"{t.file}: tensor {name}")
    if cfg.arch == "bailingmoe2":
        biases = [f"blk.{il}.exp_probs_b.bias" in model.tensors for il in range(cfg.n_dense_lead, cfg.n_layer)]
        if any(biases) and not all(biases):
            raise SweepbenchError(f"{model.path}: exp_probs_b.bias is present in some MoE layers but not all")
        cfg = replace(cfg, has_exp_probs_b=bool(biases) and all(biases))
    return cfg


def open_model(path) -> tuple[GGUFModel, ModelConfig]:
    """Load (memory-mapped) and validate a model file: the one entry point engines and commands use."""
    model = load_gguf(path)
    return model, validate_model(model)
