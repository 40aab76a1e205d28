"""Raw ctypes declarations of the part of ik_llama.cpp's C API (the ``ik-llama-cpp-python`` wheel's llama.h)
that sweepbench uses. Nothing here has behaviour: ``sweepbench.engines.ik`` drives these calls.

The three structs must match the wheel's header field for field: they are passed and returned BY VALUE, so a
missing or mis-typed field silently shifts every later one. ``tests/test_ik_engine.py`` checks every offset and
size against the wheel's own bindings; the offsets were also checked once against ``offsetof`` from a C program
compiled with the header. If the wheel is upgraded, re-check the structs against its llama.h.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
from ctypes import POINTER, c_bool, c_char_p, c_float, c_int, c_int8, c_int32, c_size_t, c_uint32, c_uint64, c_void_p
from functools import lru_cache
from pathlib import Path

from sweepbench.errors import SweepbenchError

WHEEL = "ik-llama-cpp-python"
PACKAGE = "ik_llama_cpp"
INSTALL_HINT = "install with pip install 'sweepbench[peer]'"

# enum ggml_type (ggml.h): the KV-cache types sweepbench offers, and the types of captured intermediates
GGML_TYPE_IDS = {"f32": 0, "f16": 1, "q8_0": 8, "i32": 26}

# enum ggml_log_level (ggml.h)
GGML_LOG_LEVEL_ERROR = 4

llama_token = c_int32
llama_pos = c_int32
llama_seq_id = c_int32

# typedef void (*ggml_log_callback)(enum ggml_log_level level, const char * text, void * user_data);
ggml_log_callback = ctypes.CFUNCTYPE(None, c_int, c_char_p, c_void_p)
# typedef bool (*ggml_backend_sched_eval_callback)(struct ggml_tensor * t, bool ask, void * user_data);
ggml_backend_sched_eval_callback = ctypes.CFUNCTYPE(c_bool, c_void_p, c_bool, c_void_p)
# typedef bool (*llama_progress_callback)(float progress, void * user_data);
llama_progress_callback = ctypes.CFUNCTYPE(c_bool, c_float, c_void_p)
# typedef bool (*ggml_abort_callback)(void * data);
ggml_abort_callback = ctypes.CFUNCTYPE(c_bool, c_void_p)


class llama_model_params(ctypes.Structure):
    _fields_ = [
        ("devices", c_char_p),
        ("n_gpu_layers", c_int32),
        ("mla", c_int32),
        ("split_mode", c_int),  # enum llama_split_mode
        ("main_gpu", c_int32),
        ("max_gpu", c_int32),
        ("ncmoe", c_int32),
        ("type_k", c_int),  # enum ggml_type
        ("type_v", c_int),
        ("max_ctx_size", c_uint32),
        ("n_seq_max", c_int32),
        ("n_ubatch", c_int32),
        ("amb", c_int32),
        ("fit_margin", c_int32),
        ("fit", c_bool),
        ("worst_graph_tokens", c_int32),
        ("type_k_first", c_int),
        ("type_k_last", c_int),
        ("type_v_first", c_int),
        ("type_v_last", c_int),
        ("n_k_first", c_int32),
        ("n_k_last", c_int32),
        ("n_v_first", c_int32),
        ("n_v_last", c_int32),
        ("tensor_split", POINTER(c_float)),
        ("rpc_servers", c_char_p),
        ("progress_callback", llama_progress_callback),
        ("progress_callback_user_data", c_void_p),
        ("kv_overrides", c_void_p),  # const struct llama_model_kv_override *
        ("tensor_buft_overrides", c_void_p),
        ("vocab_only", c_bool),
        ("use_mmap", c_bool),
        ("use_mlock", c_bool),
        ("check_tensors", c_bool),
        ("repack_tensors", c_bool),  # -rtr
        ("use_thp", c_bool),
        ("validate_quants", c_bool),
        ("merge_qkv", c_bool),
        ("merge_up_gate_exps", c_bool),
        ("mtp", c_bool),
        ("dry_run", c_bool),
        ("flash_attn", c_bool),
    ]


class llama_context_params(ctypes.Structure):
    _fields_ = [
        ("seed", c_uint32),
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("n_ubatch", c_uint32),
        ("n_seq_max", c_uint32),
        ("n_threads", c_uint32),
        ("n_threads_batch", c_uint32),
        ("max_extra_alloc", c_int32),
        ("worst_case_tokens", c_int32),
        ("rope_scaling_type", c_int),
        ("pooling_type", c_int),
        ("attention_type", c_int),
        ("rope_freq_base", c_float),
        ("rope_freq_scale", c_float),
        ("yarn_ext_factor", c_float),
        ("yarn_attn_factor", c_float),
        ("yarn_beta_fast", c_float),
        ("yarn_beta_slow", c_float),
        ("yarn_orig_ctx", c_uint32),
        ("defrag_thold", c_float),
        ("cb_eval", ggml_backend_sched_eval_callback),
        ("cb_eval_user_data", c_void_p),
        ("type_k", c_int),  # enum ggml_type
        ("type_v", c_int),
        ("type_reduce", c_int),
        ("type_k_first", c_int),
        ("type_k_last", c_int),
        ("type_v_first", c_int),
        ("type_v_last", c_int),
        ("n_k_first", c_int32),
        ("n_k_last", c_int32),
        ("n_v_first", c_int32),
        ("n_v_last", c_int32),
        ("logits_all", c_bool),
        ("embeddings", c_bool),
        ("offload_kqv", c_bool),
        ("flash_attn", c_bool),  # -fa
        ("mla_attn", c_int),
        ("attn_max_batch", c_int),
        ("fused_moe_up_gate", c_bool),  # -fmoe
        ("grouped_expert_routing", c_bool),  # -ger
        ("fused_up_gate", c_bool),
        ("fused_mmad", c_bool),
        ("rope_cache", c_bool),
        ("graph_reuse", c_bool),
        ("min_experts", c_int),
        ("thresh_experts", c_float),
        ("only_active_experts", c_bool),
        ("k_cache_hadamard", c_bool),
        ("v_cache_hadamard", c_bool),
        ("split_mode_graph_scheduling", c_bool),
        ("scheduler_async", c_bool),
        ("mtp", c_bool),
        ("mtp_op_type", c_int),  # enum llama_mtp_op_type
        ("abort_callback", ggml_abort_callback),
        ("abort_callback_data", c_void_p),
        ("offload_policy", c_void_p),
        ("cuda_params", c_void_p),
    ]


class llama_batch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", c_int32),
        ("token", POINTER(llama_token)),
        ("embd", POINTER(c_float)),
        ("pos", POINTER(llama_pos)),
        ("n_seq_id", POINTER(c_int32)),
        ("seq_id", POINTER(POINTER(llama_seq_id))),
        ("logits", POINTER(c_int8)),  # "output" flags
        ("all_pos_0", llama_pos),
        ("all_pos_1", llama_pos),
        ("all_seq_id", llama_seq_id),
    ]



GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME = 4, 10, 64, 64


class ggml_tensor(ctypes.Structure):
    """What a ``cb_eval`` callback receives: read to capture ik's intermediate results (``IkEngine(capture=...)``)."""

    _fields_ = [
        ("type", c_int),  # enum ggml_type
        ("backend", c_int),  # enum ggml_backend_type __backend
        ("buffer", c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),  # elements per dim, innermost first
        ("nb", c_size_t * GGML_MAX_DIMS),  # strides in bytes
        ("op", c_int),  # enum ggml_op
        ("op_params", c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", c_int32),
        ("grad", c_void_p),
        ("src", c_void_p * GGML_MAX_SRC),
        ("view_src", c_void_p),
        ("view_offs", c_size_t),
        ("data", c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", c_void_p),
    ]

# name -> (restype, argtypes); opaque pointers (llama_model *, llama_context *, llama_vocab *) are c_void_p
_FUNCTIONS = {
    "llama_backend_init": (None, []),
    "llama_log_set": (None, [ggml_log_callback, c_void_p]),
    "llama_print_system_info": (c_char_p, []),
    "llama_model_default_params": (llama_model_params, []),
    "llama_context_default_params": (llama_context_params, []),
    "llama_model_load_from_file": (c_void_p, [c_char_p, llama_model_params]),
    "llama_free_model": (None, [c_void_p]),
    "llama_init_from_model": (c_void_p, [c_void_p, llama_context_params]),
    "llama_free": (None, [c_void_p]),
    "llama_n_ctx": (c_uint32, [c_void_p]),
    "llama_n_vocab": (c_int32, [c_void_p]),
    "llama_token_bos": (llama_token, [c_void_p]),
    "llama_model_desc": (c_int32, [c_void_p, c_char_p, c_size_t]),
    "llama_model_size": (c_uint64, [c_void_p]),
    "llama_model_n_params": (c_uint64, [c_void_p]),
    "llama_kv_cache_clear": (None, [c_void_p]),
    "llama_kv_cache_seq_rm": (c_bool, [c_void_p, llama_seq_id, llama_pos, llama_pos]),
    "llama_decode": (c_int32, [c_void_p, llama_batch]),
    "llama_synchronize": (None, [c_void_p]),
    "llama_get_logits": (POINTER(c_float), [c_void_p]),
}


def library_path() -> Path:
    """``libllama.so`` of the installed wheel, found without importing the package (which would load it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SweepbenchError(f"engine 'ik' needs the {WHEEL} wheel, which is not installed ({INSTALL_HINT})")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    path = package_dir / "lib" / "libllama.so"
    if not path.is_file():
        raise SweepbenchError(f"{path}: missing from the {WHEEL} wheel; reinstall it ({INSTALL_HINT})")
    return path


def wheel_version() -> str:
    try:
        return importlib.metadata.version(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """The wheel's libllama with restype/argtypes declared for every function in ``_FUNCTIONS`` (loaded once)."""
    path = library_path()
    try:
        lib = ctypes.CDLL(str(path))  # its RPATH finds the bundled libggml
    except OSError as e:
        raise SweepbenchError(f"{path}: cannot load: {e}") from None
    for name, (restype, argtypes) in _FUNCTIONS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise SweepbenchError(f"{path}: has no function {name}; this {WHEEL} version is not supported") from None
        fn.restype = restype
        fn.argtypes = argtypes
    return lib
