"""Write synthetic GGUF MoE models: real tensor names, shapes, metadata and quant types, random weights.

Weights are generated chunk by chunk right before they are written, each chunk from its own generator
``default_rng([seed, tensor_index, chunk_index])``: the bytes depend only on (preset, types, seed), never on the
thread count, and peak memory stays bounded by the chunks in flight. Chunks are generated in a thread pool
(NumPy releases the GIL in bulk ops) and written in order. The file is written to ``PATH.partial`` and renamed
only when complete, so an error or Ctrl-C never leaves a half-written model behind.

Weight statistics follow anchors.md: every weight matrix dequantizes to std ~0.03 and mean ~0, norm weights are
1.0, the router (``ffn_gate_inp``) is F32 normal(0, 0.03) and the expert selection bias F32 normal(0, 0.01).
"""
from __future__ import annotations

import os
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType, GGUFWriter, LlamaFileType, TokenType
from gguf.constants import GGML_QUANT_SIZES

from sweepbench.config import config_from_metadata
from sweepbench.errors import SweepbenchError, UsageError
from sweepbench.models.tensors import optional_specs, tensor_specs
from sweepbench.presets import SynthShape, resolve_preset
from sweepbench.quants import SUPPORTED, random_rows

WEIGHT_STD = 0.03
ROUTER_STD = 0.03
EXPERT_BIAS_STD = 0.01
CHUNK_ELEMENTS = 1 << 20  # values generated per task: bounds memory per thread, independent of thread count
ALIGNMENT = 32  # GGUF default data alignment
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


@dataclass(frozen=True)
class TensorRecipe:
    """One tensor to write: ``ne`` in ggml order (innermost first), its type and how to fill it."""

    name: str
    ne: tuple[int, ...]
    qtype: Q
    fill: str  # "random" | "ones" (F32 norm weights) | "zeros" (all-zero blocks, any type)
    std: float = WEIGHT_STD

    @property
    def row_len(self) -> int:
        return self.ne[0]

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.ne[1:], dtype=np.int64))

    @property
    def row_bytes(self) -> int:
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        return self.row_len // block * type_size

    @property
    def n_bytes(self) -> int:
        return self.n_rows * self.row_bytes

    @property
    def chunk_rows(self) -> int:
        return max(1, CHUNK_ELEMENTS // self.row_len)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_rows // self.chunk_rows)


@dataclass(frozen=True)
class SynthResult:
    path: Path
    n_bytes: int
    seconds: float
    n_tensors: int


def parse_qtype(name: str, flag: str) -> Q:
    """A quant type name from the command line (case-insensitive), restricted to what sweepbench runs."""
    try:
        qtype = Q[name.upper()]
    except KeyError:
        qtype = None
    if qtype not in SUPPORTED:
        raise UsageError(f"{flag} {name}: not a supported type (choose from: {', '.join(q.name for q in SUPPORTED)})")
    return qtype


# ---------------------------------------------------------------------------------------------- metadata


def _tokenizer(n_vocab: int) -> dict[str, Any]:
    """Smallest SentencePiece ("llama") vocabulary ik_llama.cpp loads: specials, the 256 byte tokens, fillers."""
    tokens = list(SPECIAL_TOKENS) + [f"<0x{b:02X}>" for b in range(256)]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    n_fill = n_vocab - len(tokens)
    if n_fill < 0:
        raise SweepbenchError(f"vocabulary of {n_vocab} tokens is too small for {len(tokens)} special and byte tokens")
    tokens += [f"\u2581t{i}" for i in range(n_fill)]
    types += [TokenType.NORMAL] * n_fill
    scores = np.zeros(n_vocab, np.float32)
    scores[len(SPECIAL_TOKENS) + 256 :] = -np.arange(n_fill, dtype=np.float32)  # earlier fillers merge first
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": np.array([int(t) for t in types], np.int32),
        "tokenizer.ggml.bos_token_id": BOS_ID,
        "tokenizer.ggml.eos_token_id": EOS_ID,
        "tokenizer.ggml.unknown_token_id": UNK_ID,
        "tokenizer.ggml.add_bos_token": True,
    }


def _file_type(expert_type: Q) -> LlamaFileType:
    """general.file_type as llama-quantize would name a model whose experts (the bulk of it) are ``expert_type``."""
    if expert_type == Q.F32:
        return LlamaFileType.ALL_F32
    for name in (f"MOSTLY_{expert_type.name}", f"MOSTLY_{expert_type.name}_M", f"MOSTLY_{expert_type.name}_MOE"):
        if name in LlamaFileType.__members__:
            return LlamaFileType[name]
    return LlamaFileType.GUESSED


def synth_metadata(shape: SynthShape, preset: str, expert_type: Q, dense_type: Q, seed: int) -> dict[str, Any]:
    """GGUF key/values for ``shape``, as convert_hf_to_gguf.py writes them for the real model."""
    a = shape.arch
    md: dict[str, Any] = {
        "general.architecture": a,
        "general.name": f"sweepbench synthetic {preset} ({a})",
        "general.file_type": int(_file_type(expert_type)),
        "general.quantization_version": 2,
        "sweepbench.synth.preset": preset,
        "sweepbench.synth.seed": seed,
        "sweepbench.synth.types": f"experts {expert_type.name}, dense {dense_type.name}",
        f"{a}.context_length": shape.n_ctx_train,
        f"{a}.embedding_length": shape.n_embd,
        f"{a}.block_count": shape.n_layer,
        f"{a}.attention.head_count": shape.n_head,
        f"{a}.attention.head_count_kv": shape.n_head_kv,
        f"{a}.attention.key_length": shape.head_dim,
        f"{a}.attention.value_length": shape.head_dim,
        f"{a}.attention.layer_norm_rms_epsilon": shape.rms_eps,
        f"{a}.rope.freq_base": shape.rope_base,
        f"{a}.expert_count": shape.n_expert,
        f"{a}.expert_used_count": shape.n_expert_used,
        f"{a}.expert_feed_forward_length": shape.n_ff_exp,
        f"{a}.vocab_size": shape.n_vocab,
    }
    if a == "qwen3moe":
        md[f"{a}.feed_forward_length"] = shape.n_ff_exp * shape.n_expert_used  # what the converter writes
    else:
        md.update({
            f"{a}.rope.dimension_count": shape.n_rot or shape.head_dim,
            f"{a}.feed_forward_length": shape.n_ff_dense,
            f"{a}.leading_dense_block_count": shape.n_dense_lead,
            f"{a}.expert_shared_count": shape.n_expert_shared,
            f"{a}.expert_shared_feed_forward_length": shape.n_ff_shexp,
            f"{a}.expert_group_count": shape.n_expert_groups,
            f"{a}.expert_group_used_count": shape.n_group_used,
            f"{a}.expert_weights_scale": shape.w_scale,
            f"{a}.expert_weights_norm": True,
            f"{a}.expert_gating_func": 2,  # sigmoid
            f"{a}.nextn_predict_layers": 0,
        })
    md.update(_tokenizer(shape.n_vocab))
    return md


def _gguf_type(value: Any) -> tuple[GGUFValueType, GGUFValueType | None, Any]:
    """(value type, array item type, value to write) for a Python/NumPy metadata value."""
    if isinstance(value, bool):
        return GGUFValueType.BOOL, None, value
    if isinstance(value, np.uint16):
        return GGUFValueType.UINT16, None, int(value)
    if isinstance(value, np.int32):
        return GGUFValueType.INT32, None, int(value)
    if isinstance(value, int):
        return (GGUFValueType.UINT32 if 0 <= value < 2**32 else GGUFValueType.INT64), None, value
    if isinstance(value, float):
        return GGUFValueType.FLOAT32, None, value
    if isinstance(value, str):
        return GGUFValueType.STRING, None, value
    if isinstance(value, list):
        return GGUFValueType.ARRAY, GGUFValueType.STRING, value
    item = {np.dtype(np.float32): GGUFValueType.FLOAT32, np.dtype(np.int32): GGUFValueType.INT32}[value.dtype]
    return GGUFValueType.ARRAY, item, value.tolist()


# ---------------------------------------------------------------------------------------------- tensors


def _layer_of(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def _file_order(name: str) -> tuple[int, str]:
    """token_embd first, then blocks in order, then output_norm/output (the order the converter writes)."""
    layer = _layer_of(name)
    if layer < 0 and name != "token_embd.weight":
        layer = 1 << 30
    return layer, name


def _recipe(name: str, ne: tuple[int, ...], expert_type: Q, dense_type: Q) -> TensorRecipe:
    if name.endswith("norm.weight"):
        return TensorRecipe(name, ne, Q.F32, "ones")
    if name.endswith("ffn_gate_inp.weight"):
        return TensorRecipe(name, ne, Q.F32, "random", ROUTER_STD)
    if name.endswith("exp_probs_b.bias"):
        return TensorRecipe(name, ne, Q.F32, "random", EXPERT_BIAS_STD)
    qtype = expert_type if "_exps." in name else dense_type
    return TensorRecipe(name, ne, qtype, "random")


def tensor_recipes(md: dict[str, Any], expert_type: Q, dense_type: Q) -> list[TensorRecipe]:
    """Every tensor of the model in file order. Names and shapes come from the loader's own table
    (``models.tensors``), so a synthetic file always has exactly what sweepbench and ik_llama.cpp load."""
    cfg = config_from_metadata(md, where="synth")
    specs = {**tensor_specs(cfg), **optional_specs(cfg)}  # untied output and expert biases included
    recipes = [_recipe(n, tuple(ne), expert_type, dense_type) for n, ne in sorted(specs.items(), key=lambda kv: _file_order(kv[0]))]
    for r in recipes:
        block = GGML_QUANT_SIZES[r.qtype][0]
        if r.row_len % block:
            flag = "--expert-type" if "_exps." in r.name else "--dense-type"
            raise UsageError(
                f"{flag} {r.qtype.name} needs rows of a multiple of {block} values, but {r.name} has rows of {r.row_len}"
            )
    return recipes


def _chunk(r: TensorRecipe, tensor_index: int, chunk_index: int, seed: int) -> np.ndarray:
    """uint8 [rows, row_bytes] of chunk ``chunk_index`` of tensor ``r``."""
    start = chunk_index * r.chunk_rows
    n = min(r.chunk_rows, r.n_rows - start)
    if r.fill == "ones":
        return np.ones((n, r.row_len), np.float32).view(np.uint8)
    if r.fill == "zeros":
        return np.zeros((n, r.row_bytes), np.uint8)
    rng = np.random.default_rng([seed, tensor_index, chunk_index])
    return random_rows(r.qtype, n, r.row_len, rng, std=r.std)


def _chunks_in_order(recipes: list[TensorRecipe], seed: int, threads: int,
                     first_index: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(tensor index, chunk bytes) in file order, generated ahead by ``threads`` workers (bounded look-ahead).
    ``first_index`` is the model-wide index of ``recipes[0]`` (a split part), so bytes never depend on splitting."""
    jobs = ((ti, ci) for ti, r in enumerate(recipes) for ci in range(r.n_chunks))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="synth") as pool:
        pending: deque = deque()
        try:
            for ti, ci in jobs:
                pending.append((ti, pool.submit(_chunk, recipes[ti], first_index + ti, ci, seed)))
                if len(pending) >= 2 * threads:
                    ti0, fut = pending.popleft()
                    yield ti0, fut.result()
            while pending:
                ti0, fut = pending.popleft()
                yield ti0, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


# ---------------------------------------------------------------------------------------------- writer


def _check_disk(path: Path, n_bytes: int) -> None:
    free = shutil.disk_usage(path.parent).free
    if free < n_bytes:
        raise SweepbenchError(f"{path}: needs {n_bytes / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free there")


def _pad(f, n: int) -> None:
    f.write(b"\0" * (-n % ALIGNMENT))


def write_gguf(path: Path, md: dict[str, Any], recipes: list[TensorRecipe], seed: int = 0, threads: int = 1,
               progress: Callable[[int], None] | None = None, first_index: int = 0) -> None:
    """Write metadata ``md`` and the tensors of ``recipes`` (in order) to ``path``. No checks: tests use it to
    write deliberately broken files."""
    writer = GGUFWriter(path, md["general.architecture"])
    try:
        for key, value in md.items():
            if key == "general.architecture":
                continue  # GGUFWriter writes it itself
            vtype, sub, v = _gguf_type(value)
            writer.add_key_value(key, v, vtype, sub)
        for r in recipes:
            writer.add_tensor_info(r.name, tuple(reversed(r.ne)), np.dtype(np.float32), r.n_bytes, raw_dtype=r.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        f = writer.fout[0]  # tensor data is streamed here chunk by chunk (the writer only takes whole tensors)
        _pad(f, f.tell())
        written = [0] * len(recipes)
        for ti, data in _chunks_in_order(recipes, seed, threads, first_index):
            f.write(memoryview(np.ascontiguousarray(data)).cast("B"))
            written[ti] += data.nbytes
            if written[ti] == recipes[ti].n_bytes:
                _pad(f, recipes[ti].n_bytes)
            if progress is not None:
                progress(data.nbytes)
    finally:
        writer.close()


def write_synthetic_model(
    path: str | os.PathLike,
    preset: str = "tiny",
    arch: str | None = None,
    expert_type: str | Q | None = None,
    dense_type: str | Q | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    n_splits: int = 1,
) -> SynthResult:
    """Write preset ``preset`` (for ``arch``) to ``path``. ``on_start(total_bytes)`` and ``progress(n_bytes)``
    let a caller show progress. ``n_splits`` > 1 writes ``STEM-0000i-of-0000N.gguf`` parts the way
    llama-gguf-split does (the same tensors and bytes as one file). Returns the first part, size and time."""
    path = Path(path)
    shape = resolve_preset(preset, arch)
    etype = parse_qtype(expert_type, "--expert-type") if isinstance(expert_type, str) else expert_type or shape.expert_type
    dtype = parse_qtype(dense_type, "--dense-type") if isinstance(dense_type, str) else dense_type or shape.dense_type
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed}: must be in [0, 2^63)")
    if threads is None:
        threads = os.cpu_count() or 1
    if threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    if path.is_dir():
        raise UsageError(f"-o {path}: is a directory")
    if n_splits < 1:
        raise UsageError(f"--split {n_splits}: must be at least 1")
    if not path.parent.is_dir():
        raise UsageError(f"-o {path}: directory {path.parent} does not exist")

    md = synth_metadata(shape, preset, etype, dtype, seed)
    recipes = tensor_recipes(md, etype, dtype)
    if n_splits > len(recipes):
        raise UsageError(f"--split {n_splits}: the model has only {len(recipes)} tensors")
    total = sum(r.n_bytes for r in recipes)
    _check_disk(path, total)
    if on_start is not None:
        on_start(total)

    parts = split_plan(path, md, recipes, n_splits)
    t0 = time.perf_counter()
    done: list[Path] = []
    try:
        for part_path, part_md, part_recipes, first_index in parts:
            tmp = part_path.with_name(part_path.name + ".partial")
            write_gguf(tmp, part_md, part_recipes, seed, threads, progress, first_index)
            os.replace(tmp, part_path)
            done.append(part_path)
    except BaseException as e:  # Ctrl-C included: never leave a partial model behind
        for p in done + [tmp]:
            p.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise SweepbenchError(f"{path}: cannot write: {e.strerror or e}") from None
        raise
    size = sum(p.stat().st_size for p in done)
    return SynthResult(done[0], size, time.perf_counter() - t0, len(recipes))


def split_plan(path: Path, md: dict[str, Any], recipes: list[TensorRecipe], n_splits: int):
    """[(part path, metadata, recipes, index of its first tensor)]: llama-gguf-split's layout. The first part
    carries all metadata, every part the split.* keys; tensors are cut into runs of about equal bytes."""
    if n_splits == 1:
        return [(path, md, recipes, 0)]
    total = sum(r.n_bytes for r in recipes)
    bounds, acc = [0], 0
    for i, r in enumerate(recipes):
        acc += r.n_bytes
        if len(bounds) < n_splits and acc >= total * len(bounds) / n_splits and i + 1 < len(recipes):
            bounds.append(i + 1)
    while len(bounds) < n_splits:  # tiny models: a few very large tensors; cut the tail evenly
        bounds.append(bounds[-1] + 1)
    bounds.append(len(recipes))
    stem = path.name[:-5] if path.name.endswith(".gguf") else path.name
    out = []
    for i in range(n_splits):
        split_keys = {"split.no": np.uint16(i), "split.count": np.uint16(n_splits),
                      "split.tensors.count": np.int32(len(recipes))}
        part_md = {**(md if i == 0 else {"general.architecture": md["general.architecture"]}), **split_keys}
        part = path.with_name(f"{stem}-{i + 1:05d}-of-{n_splits:05d}.gguf")
        out.append((part, part_md, recipes[bounds[i] : bounds[i + 1]], bounds[i]))
    return out
