"""Bit-plane storage layout and host views: the one place the bit orders of docs/DEVICE.md live.

Terms: W = weights per block = bits per line (512 by default), B = stored bits per weight, k = precision read,
R = plane run (blocks per superblock). A *field array* is an unsigned integer array holding each weight's
B-bit pattern (two's complement masked to B bits, or the bfloat16 bit pattern).

All functions are vectorised over blocks and weights; none loops in Python per weight or per line.
"""
from __future__ import annotations

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.params import SUPPORTED_B, MAX_PLANE_RUN, Format, Rounding

DEFAULT_W = 512


# --- argument checks (shared by every entry point) ---------------------------------------------------------
def check_b(B: int, fmt: Format | int = Format.INT) -> None:
    if B not in SUPPORTED_B:
        raise SmartquantError(f"B must be one of {SUPPORTED_B}, got {B}")
    if Format(fmt) == Format.BF16 and B != 16:
        raise SmartquantError(f"BF16 storage needs B = 16, got B = {B}")


def check_k(k: int, B: int) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= B:
        raise SmartquantError(f"precision k must be an integer in 1..{B} (B = {B}), got {k!r}")


def check_r(R: int) -> None:
    if R < 1 or R > MAX_PLANE_RUN or R & (R - 1):
        raise SmartquantError(f"plane run R must be a power of two in 1..{MAX_PLANE_RUN}, got {R}")


def check_w(W: int) -> None:
    if W < 64 or W & (W - 1):
        raise SmartquantError(f"line width W must be a power of two >= 64 bits, got {W}")


# --- values <-> B-bit fields -------------------------------------------------------------------------------
def fields_from_ints(values, B: int) -> np.ndarray:
    """Two's complement B-bit patterns (uint32) of signed integers; rejects values that do not fit."""
    check_b(B)
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise SmartquantError(f"integer weights expected for INT{B} storage, got dtype {values.dtype}")
    v = values.astype(np.int64)
    lo, hi = -(1 << (B - 1)), (1 << (B - 1)) - 1
    if v.size and (v.min() < lo or v.max() > hi):
        raise SmartquantError(f"weights outside the INT{B} range {lo}..{hi} (min {v.min()}, max {v.max()})")
    return (v & ((1 << B) - 1)).astype(np.uint32)


def ints_from_fields(fields, B: int) -> np.ndarray:
    """Signed integers (int32) from B-bit two's complement patterns."""
    f = np.asarray(fields).astype(np.int64) & ((1 << B) - 1)
    return np.where(f >= (1 << (B - 1)), f - (1 << B), f).astype(np.int32)


def bf16_fields(values) -> np.ndarray:
    """bfloat16 bit patterns (uint32 holding 16 bits) of float values, round-to-nearest-even (NaN kept NaN)."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        raise SmartquantError(f"float weights expected for BF16 storage, got dtype {values.dtype}")
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(values.astype(np.float32))
    rounded = np.where(nan, (bits >> 16) | 0x40, rounded)
    return (rounded & 0xFFFF).astype(np.uint32)


def floats_from_bf16(fields) -> np.ndarray:
    """float32 values of bfloat16 bit patterns."""
    return (np.asarray(fields).astype(np.uint32) << 16).view(np.float32)


def fields_of(values, B: int, fmt: Format | int) -> np.ndarray:
    """B-bit fields of weights in a storage format (ints for INT, floats for BF16)."""
    check_b(B, fmt)
    return bf16_fields(values) if Format(fmt) == Format.BF16 else fields_from_ints(values, B)


# --- blocks ------------------------------------------------------------------------------------------------
def to_blocks(fields, W: int = DEFAULT_W, R: int = 1) -> np.ndarray:
    """(n_blocks, W) field array, the last block (and last superblock of R blocks) padded with zeros."""
    check_w(W)
    check_r(R)
    flat = np.asarray(fields, dtype=np.uint32).reshape(-1)
    n_blocks = max(1, -(-flat.size // W))
    n_blocks = -(-n_blocks // R) * R
    out = np.zeros(n_blocks * W, dtype=np.uint32)
    out[: flat.size] = flat
    return out.reshape(n_blocks, W)


def pack_fields(fields: np.ndarray, F: int) -> np.ndarray:
    """Little-endian bitstream bytes of F-bit fields: field w at bits [w*F, w*F+F), field bit i = value bit i.

    fields has shape (..., n); the result has shape (..., n*F/8) uint8.
    """
    f = np.asarray(fields, dtype=np.uint32)
    bits = ((f[..., None] >> np.arange(F, dtype=np.uint32)) & 1).astype(np.uint8)
    bits = bits.reshape(*f.shape[:-1], f.shape[-1] * F)
    return np.packbits(bits, axis=-1, bitorder="little")


def unpack_fields(data: np.ndarray, F: int, n: int) -> np.ndarray:
    """Inverse of pack_fields: (..., bytes) -> (..., n) uint32 fields of F bits."""
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8), axis=-1, bitorder="little")
    bits = bits[..., : n * F].reshape(*bits.shape[:-1], n, F).astype(np.uint32)
    return (bits << np.arange(F, dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)


# --- planes and the raw view -------------------------------------------------------------------------------
def block_planes(blocks: np.ndarray, B: int) -> np.ndarray:
    """(n_blocks, B, W/8) plane lines: plane p holds bit B-1-p of every weight, weight i at bit i."""
    blocks = np.asarray(blocks, dtype=np.uint32)
    shifts = np.arange(B - 1, -1, -1, dtype=np.uint32)            # plane p -> bit B-1-p
    bits = ((blocks[:, None, :] >> shifts[None, :, None]) & 1).astype(np.uint8)
    return np.packbits(bits, axis=-1, bitorder="little")


def planes_to_blocks(planes: np.ndarray, B: int, k: int | None = None) -> np.ndarray:
    """Fields rebuilt from planes 0..k-1 (k = B: exact); dropped low bits are 0."""
    k = B if k is None else k
    bits = np.unpackbits(np.asarray(planes[:, :k], dtype=np.uint8), axis=-1, bitorder="little").astype(np.uint32)
    shifts = np.arange(B - 1, B - 1 - k, -1, dtype=np.uint32)
    return (bits << shifts[None, :, None]).sum(axis=1, dtype=np.uint32)


def raw_line_index(superblock: int, plane: int, slot: int, B: int, R: int) -> int:
    """Line of (superblock s, plane p, block r in s) relative to the region base: s*R*B + p*R + r."""
    return superblock * R * B + plane * R + slot


def planes_to_raw(planes: np.ndarray, R: int) -> np.ndarray:
    """Raw region lines (n_lines, W/8) from (n_blocks, B, W/8) planes, superblocks of R blocks (plane runs)."""
    n_blocks, B, LB = planes.shape
    if n_blocks % R:
        raise SmartquantError(f"{n_blocks} blocks is not a whole number of superblocks of R = {R}")
    return planes.reshape(n_blocks // R, R, B, LB).transpose(0, 2, 1, 3).reshape(-1, LB)


def raw_to_planes(raw: np.ndarray, B: int, R: int) -> np.ndarray:
    """Inverse of planes_to_raw."""
    raw = np.asarray(raw, dtype=np.uint8)
    n_lines, LB = raw.shape
    if n_lines % (R * B):
        raise SmartquantError(f"{n_lines} raw lines is not a whole number of superblocks ({R} x {B} lines)")
    return raw.reshape(n_lines // (R * B), B, R, LB).transpose(0, 2, 1, 3).reshape(-1, B, LB)


def encode(values, B: int, fmt: Format | int = Format.INT, R: int = 1, W: int = DEFAULT_W) -> np.ndarray:
    """Raw view bytes (n_lines, W/8) of a weight tensor stored as B-bit planes with plane run R."""
    return planes_to_raw(block_planes(to_blocks(fields_of(values, B, fmt), W, R), B), R)


def decode(raw, B: int, n_weights: int, fmt: Format | int = Format.INT, R: int = 1, k: int | None = None):
    """Weights back from raw lines (k < B: the top k bits, dropped bits 0 = floor)."""
    check_b(B, fmt)
    fields = planes_to_blocks(raw_to_planes(raw, B, R), B, k).reshape(-1)[:n_weights]
    return floats_from_bf16(fields) if Format(fmt) == Format.BF16 else ints_from_fields(fields, B)


# --- host views of blocks ----------------------------------------------------------------------------------
def fill_pattern(B: int, k: int, rounding: Rounding | int) -> int:
    """Value of the B-k dropped low bits in the expanded view."""
    if k >= B or Rounding(rounding) == Rounding.FLOOR:
        return 0
    return 1 << (B - k - 1)


def truncate(fields: np.ndarray, B: int, k: int, rounding: Rounding | int = Rounding.FLOOR) -> np.ndarray:
    """Fields with the B-k low bits replaced by the rounding fill (what expanded-k returns)."""
    check_k(k, B)
    keep = ((1 << B) - 1) ^ ((1 << (B - k)) - 1)
    return (np.asarray(fields, dtype=np.uint32) & keep) | fill_pattern(B, k, rounding)


def packed_lines(blocks: np.ndarray, B: int, k: int) -> np.ndarray:
    """(n_blocks, k, W/8): packed-k view, weight w's top k bits at bits [w*k, w*k+k) of the block stream."""
    check_k(k, B)
    n_blocks, W = blocks.shape
    top = np.asarray(blocks, dtype=np.uint32) >> (B - k)
    return pack_fields(top, k).reshape(n_blocks, k, W // 8)


def weight_major_lines(blocks: np.ndarray, B: int) -> np.ndarray:
    """(n_blocks, B, W/8): weights as numpy stores them (B-bit fields, little-endian, low nibble first)."""
    return packed_lines(blocks, B, B)


def expanded_lines(blocks: np.ndarray, B: int, k: int, rounding: Rounding | int = Rounding.FLOOR) -> np.ndarray:
    """(n_blocks, B, W/8): weight-major lines of the top k bits, dropped bits filled by the rounding rule."""
    return weight_major_lines(truncate(blocks, B, k, rounding), B)


def weight_major_to_blocks(lines: np.ndarray, B: int) -> np.ndarray:
    """Inverse of weight_major_lines: (n_blocks, B, W/8) -> (n_blocks, W) fields."""
    lines = np.asarray(lines, dtype=np.uint8)
    n_blocks, _, LB = lines.shape
    return unpack_fields(lines.reshape(n_blocks, B * LB), B, LB * 8)
