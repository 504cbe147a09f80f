"""GGUF files read through PyPI `gguf` (its pure-Python GGUFReader), with our own numpy dequantization.

GGUF stores a tensor's dimensions innermost first (ne0, ne1, ...); a weight matrix of a linear map y = W x with
ne0 = in_features, ne1 = out_features is returned here as numpy (out, in), the PyTorch Linear convention the
rest of the package uses.

Block formats dequantized (ggml-common.h; 32 weights per block, little-endian):
- Q4_0: d (f16), 16 bytes of 4-bit codes q;       w = d * (q - 8)
- Q4_1: d (f16), m (f16), 16 bytes of 4-bit codes; w = d * q + m
- Q8_0: d (f16), 32 int8 codes q;                  w = d * q
In Q4_x byte j of a block holds weight j in its low nibble and weight j + 16 in its high nibble.
F32 and F16 tensors are returned as float32. `dequantize` is checked against gguf.quants.dequantize in the tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from smartquant.errors import SmartquantError

BLOCK = 32
# format -> bytes per block of 32 weights
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
PLAIN = {"F32": np.float32, "F16": np.float16}
PIP_GGUF = "pip install gguf"


def _f16(column: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 little-endian half floats -> (n, 1) float32."""
    return np.ascontiguousarray(column).view("<f2").astype(np.float32)


def dequantize(raw: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 array of `shape` (numpy order, outermost first) from a tensor's stored bytes or values."""
    count = int(np.prod(shape))
    if kind in PLAIN:
        values = np.asarray(raw).view(PLAIN[kind]) if np.asarray(raw).dtype == np.uint8 else np.asarray(raw)
        if values.size != count:
            raise SmartquantError(f"{kind} tensor has {values.size} values, shape {shape} needs {count}")
        return values.astype(np.float32).reshape(shape)
    if kind not in BLOCK_BYTES:
        raise SmartquantError(f"GGUF tensor type {kind} is not supported (only {', '.join([*PLAIN, *BLOCK_BYTES])})")
    if count % BLOCK:
        raise SmartquantError(f"{kind} tensor of shape {shape} is not a whole number of {BLOCK}-weight blocks")
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if blocks.size != count // BLOCK * BLOCK_BYTES[kind]:
        raise SmartquantError(f"{kind} tensor has {blocks.size} bytes, shape {shape} needs "
                              f"{count // BLOCK * BLOCK_BYTES[kind]}")
    blocks = blocks.reshape(-1, BLOCK_BYTES[kind])
    scale = _f16(blocks[:, 0:2])
    if kind == "Q8_0":
        values = scale * blocks[:, 2:].view(np.int8).astype(np.float32)
    else:
        packed = blocks[:, 4:] if kind == "Q4_1" else blocks[:, 2:]
        codes = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)
        values = scale * codes + _f16(blocks[:, 2:4]) if kind == "Q4_1" else scale * (codes - 8.0)
    return values.reshape(shape)


class GGUFFile:
    """Metadata and tensors of a GGUF file (memory-mapped by gguf.GGUFReader; tensors dequantized on demand)."""

    def __init__(self, path: Path | str):
        try:
            from gguf import GGUFReader
        except ImportError:
            raise SmartquantError(f"the gguf package is not installed; run: {PIP_GGUF}") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise SmartquantError(f"GGUF file {self.path} does not exist")
        self.reader = GGUFReader(str(self.path))
        self.tensors = {tensor.name: tensor for tensor in self.reader.tensors}

    # --- metadata --------------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.reader.fields

    def value(self, key: str):
        """A metadata value: a str, a number, or a list of them (arrays). Uses only the fields' parts/data,
        the reader API that every gguf version has."""
        if key not in self.reader.fields:
            raise SmartquantError(f"{self.path.name}: metadata key {key!r} is missing")
        field = self.reader.fields[key]
        from gguf import GGUFValueType

        def one(index: int, kind):
            part = field.parts[index]
            if kind == GGUFValueType.STRING:
                return bytes(part).decode("utf-8")
            return part.tolist()[0]

        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            return [one(i, field.types[-1]) for i in field.data]
        return one(field.data[0], kind)

    # --- tensors ---------------------------------------------------------------------------------------
    def kind(self, name: str) -> str:
        return self._tensor(name).tensor_type.name

    def shape(self, name: str) -> tuple[int, ...]:
        """numpy order (outermost first): (out, in) for a weight matrix."""
        return tuple(int(n) for n in reversed(self._tensor(name).shape.tolist()))

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes (block formats) or values (F32/F16) as gguf maps them."""
        return self._tensor(name).data

    def tensor(self, name: str) -> np.ndarray:
        """float32 values, shape `shape(name)`."""
        return dequantize(self.raw(name), self.kind(name), self.shape(name))

    def _tensor(self, name: str):
        if name not in self.tensors:
            raise SmartquantError(f"{self.path.name}: no tensor named {name!r}")
        return self.tensors[name]
