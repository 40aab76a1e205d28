"""Open GGUF files (single or split) memory-mapped, with one-line errors for anything malformed.

Shape conventions
-----------------
ggml lists dimensions innermost first (``ne``); NumPy lists them outermost first. A weight with
``ne = [K, N]`` holds N rows of K values and computes ``y[N] = W[N, K] @ x[K]``; here its ``shape`` is
``(N, K)``. An expert tensor ``ne = [K, N, E]`` has ``shape (E, N, K)``.

Nothing is copied at load: ``GGUFTensor.raw`` is a view into the memory-mapped file, one row of bytes per
weight row, and dequantization happens on demand (``sweepbench.quants``).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.constants import GGML_QUANT_SIZES

from sweepbench.errors import SweepbenchError

GGUF_MAGIC = b"GGUF"
_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<idx>\d{5})-of-(?P<n>\d{5})\.gguf$")


def qtype_name(qtype: int) -> str:
    try:
        return GGMLQuantizationType(qtype).name
    except ValueError:
        return f"type#{int(qtype)}"


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file. ``raw`` is uint8 ``[n_rows, row_bytes]``, a view into the mapped file."""

    name: str
    qtype: GGMLQuantizationType
    ne: tuple[int, ...]  # ggml order, innermost first
    raw: np.ndarray  # uint8 [n_rows, row_bytes]
    file: str

    @property
    def shape(self) -> tuple[int, ...]:
        """NumPy order (outermost first)."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.ne, dtype=np.int64))

    @property
    def n_bytes(self) -> int:
        return int(self.raw.nbytes)

    @property
    def row_len(self) -> int:
        return int(self.ne[0])

    def dequantize(self) -> np.ndarray:
        """float32 array of ``self.shape``."""
        from sweepbench.quants import dequantize

        return dequantize(self.raw, self.qtype, self.row_len).reshape(self.shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Raw bytes of flattened rows [start, stop) (for expert slices: expert e = rows e*N .. (e+1)*N)."""
        return self.raw[start:stop]


@dataclass
class GGUFModel:
    """A (possibly split) GGUF model: merged metadata and tensors, memory-mapped."""

    path: Path
    files: list[Path]
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    header_bytes: list[bytes] = field(repr=False, default_factory=list)

    @property
    def arch(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise SweepbenchError(f"{self.path}: metadata key general.architecture is missing")
        return arch

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    @cached_property
    def header_sha256(self) -> str:
        """Hash of the header, metadata and tensor infos of every split (cheap; identifies the model)."""
        h = hashlib.sha256()
        for b in self.header_bytes:
            h.update(b)
        return h.hexdigest()

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def tensor(self, name: str) -> GGUFTensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise SweepbenchError(f"{self.path}: tensor {name} is missing") from None

    def type_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for t in self.tensors.values():
            hist[t.qtype.name] = hist.get(t.qtype.name, 0) + 1
        return dict(sorted(hist.items()))

    def type_bytes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors.values():
            out[t.qtype.name] = out.get(t.qtype.name, 0) + t.n_bytes
        return dict(sorted(out.items()))


def split_paths(path: Path) -> list[Path]:
    """All parts of a split model given any part (``name-00001-of-00003.gguf``), else ``[path]``."""
    m = _SPLIT_RE.match(path.name)
    if not m:
        return [path]
    n = int(m.group("n"))
    if n < 1 or n > 9999:
        raise SweepbenchError(f"{path}: split count {n} in the file name is not valid")
    parts = [path.with_name(f"{m.group('stem')}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise SweepbenchError(f"{path}: split part {missing[0]} is missing ({len(missing)} of {n} parts missing)")
    return parts


def _field_value(fld) -> Any:
    """Python value of a GGUF metadata field (arrays of numbers stay NumPy arrays)."""
    vtype = fld.types[0]
    if vtype == GGUFValueType.ARRAY:
        sub = fld.types[1] if len(fld.types) > 1 else None
        if sub == GGUFValueType.STRING:
            return [bytes(fld.parts[i]).decode("utf-8", errors="replace") for i in fld.data]
        if not fld.data:
            return np.zeros(0)
        return np.concatenate([np.asarray(fld.parts[i]).reshape(-1) for i in fld.data])
    if vtype == GGUFValueType.STRING:
        return bytes(fld.parts[fld.data[0]]).decode("utf-8", errors="replace")
    val = fld.parts[fld.data[0]][0]
    if vtype == GGUFValueType.BOOL:
        return bool(val)
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(val)
    return int(val)


def _read_one(path: Path) -> tuple[dict[str, Any], dict[str, GGUFTensor], bytes]:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SweepbenchError(f"{path}: cannot open: {e.strerror}") from None
    if path.is_dir():
        raise SweepbenchError(f"{path}: is a directory, not a GGUF file")
    if size == 0:
        raise SweepbenchError(f"{path}: empty file, not a GGUF model")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise SweepbenchError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        reader = GGUFReader(path, "r")
    except SweepbenchError:
        raise
    except Exception as e:  # the reader raises many kinds on a corrupt header or a tensor past the end of the file
        why = f"{size:,} bytes; {type(e).__name__}: {e}"
        raise SweepbenchError(f"{path}: corrupt or truncated GGUF file ({why})") from None

    metadata: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            metadata[key] = _field_value(fld)
        except Exception as e:
            raise SweepbenchError(f"{path}: metadata key {key} cannot be read ({e})") from None

    tensors: dict[str, GGUFTensor] = {}
    for t in reader.tensors:
        ne = tuple(int(x) for x in t.shape)
        try:
            qtype = GGMLQuantizationType(int(t.tensor_type))
        except ValueError:
            qtype = None
        if qtype is None or qtype not in GGML_QUANT_SIZES:
            raise SweepbenchError(f"{path}: tensor {t.name} has unknown ggml type id {int(t.tensor_type)}")
        block, type_size = GGML_QUANT_SIZES[qtype]
        if any(d <= 0 for d in ne) or ne[0] % block:
            raise SweepbenchError(f"{path}: tensor {t.name} has invalid shape {list(ne)} for {qtype.name}")
        n_rows = int(np.prod(ne[1:], dtype=np.int64)) if len(ne) > 1 else 1
        row_bytes = ne[0] // block * type_size
        end = int(t.data_offset) + n_rows * row_bytes
        if end > size:
            raise SweepbenchError(
                f"{path}: truncated: tensor {t.name} ends at byte {end} but the file has {size} bytes"
            )
        raw = reader.data[int(t.data_offset) : end].view(np.uint8).reshape(n_rows, row_bytes)
        tensors[t.name] = GGUFTensor(t.name, qtype, ne, raw, str(path))
    header = bytes(reader.data[: int(reader.data_offset)])
    return metadata, tensors, header


def load_gguf(path: str | os.PathLike) -> GGUFModel:
    """Open a GGUF model (any part of a split model opens all parts). No weights are copied."""
    path = Path(path)
    files = split_paths(path)
    metadata: dict[str, Any] = {}
    tensors: dict[str, GGUFTensor] = {}
    headers: list[bytes] = []
    for i, f in enumerate(files):
        md, ts, header = _read_one(f)
        headers.append(header)
        if i == 0:
            metadata.update(md)
        for name, t in ts.items():
            if name in tensors:
                raise SweepbenchError(f"{f}: tensor {name} appears in more than one split part")
            tensors[name] = t
    if len(files) > 1:
        declared = metadata.get("split.tensors.count")
        if declared is not None and int(declared) != len(tensors):
            raise SweepbenchError(
                f"{path}: split metadata declares {declared} tensors but the parts hold {len(tensors)}"
            )
    return GGUFModel(path=path, files=files, metadata=metadata, tensors=tensors, header_bytes=headers)
