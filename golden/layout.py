"""Bit-plane storage layout and host views: the one place the bit orders of docs/DEVICE.md live.

Terms: W = weights per block = bits per line (512 by default), B = stored bits per weight, k = precision read,
R = plane run (blocks per superblock). A *field array* is an unsigned integer array holding each weight's
B-bit pattern (two's complement masked to B bits, or the bfloat16 bit pattern).

Two implementations of the plane transpose live here:
- the default path (`encode`, `decode`, `block_planes`, `planes_to_blocks`, `pack_fields`, ...) works on
  cache-sized chunks of superblocks with whole-array numpy operations: one broadcast AND builds every plane's
  bytes of a chunk and one `np.packbits` call packs them (decode: one `np.unpackbits`, a multiply and an OR
  reduction); k-bit field packing works on 8 fields at a time as two uint64 words;
- the `_reference_*` functions are the plain per-bit unpackbits/packbits formulation of the same rules, kept
  as the independent expectation the tests compare the default path with.
Neither loops in Python per weight or per line (only per chunk, per plane or per field position 0..7).

Why packbits: CPU time per 32768 INT8 weights on the project's 2-core Xeon, measured side by side: AND +
packbits 19 us; uint64 8x8 bit-matrix transpose (three delta swaps) 25 us before the byte reorder into plane
lines and 36 us with it; per-byte 256-entry lookup tables OR-ed over 8 strided views 239 us (numpy converts
every index to intp). packbits still moves 8 bytes per stored byte, which caps encode near 0.15-0.2 of
memcpy speed; `smartquant bench codec` reports what it reaches.
"""
from __future__ import annotations

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.params import SUPPORTED_B, MAX_PLANE_RUN, Format, Rounding, View

DEFAULT_W = 512
# Weights per chunk of the default path: the chunk's B plane-byte rows (B x chunk bytes) stay in the 2 MB L2.
CHUNK_WEIGHTS = 1 << 16


# --- argument checks (shared by every entry point) ---------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_format(fmt) -> Format:
    try:
        return Format(fmt)
    except ValueError:
        raise SmartquantError(f"storage format must be one of {[f.name for f in Format]} (0..{len(Format) - 1}), "
                              f"got {fmt!r}") from None


def check_rounding(rounding) -> Rounding:
    try:
        return Rounding(rounding)
    except ValueError:
        raise SmartquantError(f"rounding must be one of {[r.name for r in Rounding]} (0..{len(Rounding) - 1}), "
                              f"got {rounding!r}") from None


def check_b(B: int, fmt: Format | int = Format.INT) -> None:
    if not _is_int(B) or B not in SUPPORTED_B:
        raise SmartquantError(f"B must be one of {SUPPORTED_B}, got {B!r}")
    if check_format(fmt) == Format.BF16 and B != 16:
        raise SmartquantError(f"BF16 storage needs B = 16, got B = {B}")


def check_k(k: int, B: int) -> None:
    if not _is_int(k) or not 1 <= k <= B:
        raise SmartquantError(f"precision k must be an integer in 1..{B} (B = {B}), got {k!r}")


def check_r(R: int) -> None:
    if not _is_int(R) or R < 1 or R > MAX_PLANE_RUN or R & (R - 1):
        raise SmartquantError(f"plane run R must be a power of two in 1..{MAX_PLANE_RUN}, got {R!r}")


def check_w(W: int) -> None:
    if not _is_int(W) or W < 64 or W & (W - 1):
        raise SmartquantError(f"line width W must be a power of two >= 64 bits, got {W!r}")


def _check_raw(raw, B: int, R: int) -> np.ndarray:
    """Raw region lines as a (n_lines, W/8) uint8 array holding whole superblocks."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 2:
        raise SmartquantError(f"raw region lines must be a 2-D uint8 array (lines, W/8), got {raw.dtype} "
                              f"with shape {raw.shape}")
    check_w(raw.shape[1] * 8)
    if raw.shape[0] % (R * B):
        raise SmartquantError(f"{raw.shape[0]} raw lines is not a whole number of superblocks ({R} x {B} lines)")
    return raw


# --- values <-> B-bit fields -------------------------------------------------------------------------------
def _int_range(B: int) -> tuple[int, int]:
    return -(1 << (B - 1)), (1 << (B - 1)) - 1


def _in_int_range(values: np.ndarray, B: int) -> bool:
    """True when every value fits the signed B-bit range (no scan when the dtype cannot exceed it)."""
    lo, hi = _int_range(B)
    info = np.iinfo(values.dtype)
    if values.size == 0 or (info.min >= lo and info.max <= hi):
        return True
    return lo <= int(values.min()) and int(values.max()) <= hi


def _check_int_dtype(values: np.ndarray, B: int) -> None:
    if values.dtype.kind not in "iu":
        raise SmartquantError(f"integer weights expected for INT{B} storage, got dtype {values.dtype}")


def _check_int_weights(values: np.ndarray, B: int) -> None:
    """Rejects non-integer dtypes and values outside the signed B-bit range."""
    _check_int_dtype(values, B)
    if not _in_int_range(values, B):
        lo, hi = _int_range(B)
        raise SmartquantError(f"weights outside the INT{B} range {lo}..{hi} "
                              f"(min {int(values.min())}, max {int(values.max())})")


def fields_from_ints(values, B: int) -> np.ndarray:
    """Two's complement B-bit patterns (uint32) of signed integers; rejects values that do not fit."""
    check_b(B)
    values = np.asarray(values)
    _check_int_weights(values, B)
    return (values.astype(np.int64) & ((1 << B) - 1)).astype(np.uint32)


def ints_from_fields(fields, B: int) -> np.ndarray:
    """Signed integers (int32) from B-bit two's complement patterns."""
    f = np.asarray(fields).astype(np.int64) & ((1 << B) - 1)
    return np.where(f >= (1 << (B - 1)), f - (1 << B), f).astype(np.int32)


def _check_float_weights(values: np.ndarray) -> None:
    if values.dtype.kind != "f":
        raise SmartquantError(f"float weights expected for BF16 storage, got dtype {values.dtype}")


def bf16_fields(values) -> np.ndarray:
    """bfloat16 bit patterns (uint32 holding 16 bits) of float values, round-to-nearest-even (NaN kept NaN)."""
    values = np.asarray(values)
    _check_float_weights(values)
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


def _check_weights(values: np.ndarray, B: int, fmt: Format | int) -> None:
    """The dtype checks fields_of makes; the INT range is checked chunk by chunk (_chunk_words), in cache."""
    check_b(B, fmt)
    if Format(fmt) == Format.BF16:
        _check_float_weights(values)
    else:
        _check_int_dtype(values, B)


def _chunk_words(values: np.ndarray, B: int, fmt: Format | int, whole: np.ndarray) -> np.ndarray:
    """Flat uint8 (B <= 8) or uint16 (B = 16) array whose low B bits are each weight's field.

    values: a chunk of the tensor `whole` (dtype already checked); INT values outside the B-bit range raise.
    The same bit patterns as fields_of without its uint32/int64 detours; bits above B may hold the sign
    extension (only bits 0..B-1 are ever read). Called per chunk so the temporaries stay in cache."""
    if Format(fmt) == Format.BF16:
        f32 = values if values.dtype == np.float32 else values.astype(np.float32)
        bits = f32.view(np.uint32)
        # round to nearest even on the upper half (cannot overflow uint32 for any non-NaN pattern);
        # in place on one temporary, as each new chunk-sized temporary costs about one more pass
        rounded = np.right_shift(bits, 16)
        rounded &= 1
        rounded += bits
        rounded += 0x7FFF
        rounded >>= 16
        words = rounded.astype(np.uint16)
        nan = np.isnan(f32)
        if nan.any():
            words[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)    # keep NaN a (quiet) NaN
        return words
    if not _in_int_range(values, B):
        _check_int_weights(whole, B)        # raises, quoting the range of the whole tensor
    signed = np.int8 if B <= 8 else np.int16
    if values.dtype.itemsize != np.dtype(signed).itemsize:
        values = values.astype(signed)      # in range: the cast keeps every value
    return values.view(np.uint8 if B <= 8 else np.uint16)


# --- blocks ------------------------------------------------------------------------------------------------
def n_blocks_for(n_weights: int, W: int = DEFAULT_W, R: int = 1) -> int:
    """Blocks a tensor of n_weights occupies: at least one, rounded up to whole superblocks of R blocks."""
    n_blocks = max(1, -(-n_weights // W))
    return -(-n_blocks // R) * R


def to_blocks(fields, W: int = DEFAULT_W, R: int = 1) -> np.ndarray:
    """(n_blocks, W) field array, the last block (and last superblock of R blocks) padded with zeros."""
    check_w(W)
    check_r(R)
    flat = np.asarray(fields, dtype=np.uint32).reshape(-1)
    out = np.zeros(n_blocks_for(flat.size, W, R) * W, dtype=np.uint32)
    out[: flat.size] = flat
    return out.reshape(-1, W)


def pack_fields(fields: np.ndarray, F: int) -> np.ndarray:
    """Little-endian bitstream bytes of F-bit fields: field w at bits [w*F, w*F+F), field bit i = value bit i.

    fields has shape (..., n); the result has shape (..., n*F/8) uint8. Bits of a field above F are ignored.
    Eight fields fill exactly F bytes, so each group of 8 is assembled in two uint64 words (F <= 16).
    """
    f = np.asarray(fields)
    if not 1 <= F <= 16 or f.shape[-1] % 8:
        return _reference_pack_fields(f, F)
    groups = (f.reshape(*f.shape[:-1], f.shape[-1] // 8, 8).astype(np.uint64)) & np.uint64((1 << F) - 1)
    words = np.zeros((*groups.shape[:-1], 2), dtype=np.uint64)
    low, high = words[..., 0], words[..., 1]
    for position in range(8):
        offset = position * F
        field = groups[..., position]
        if offset < 64:
            low |= field << np.uint64(offset)
            if offset + F > 64:                                   # field straddles the two words
                high |= field >> np.uint64(64 - offset)
        else:
            high |= field << np.uint64(offset - 64)
    stream = words.view(np.uint8)[..., :F]                        # little-endian: the F stream bytes first
    return stream.reshape(*f.shape[:-1], f.shape[-1] * F // 8)


def unpack_fields(data: np.ndarray, F: int, n: int) -> np.ndarray:
    """Inverse of pack_fields: (..., bytes) -> (..., n) uint32 fields of F bits."""
    data = np.asarray(data, dtype=np.uint8)
    if not 1 <= F <= 16 or n % 8 or data.shape[-1] < n * F // 8:
        return _reference_unpack_fields(data, F, n)
    groups = data[..., : n * F // 8].reshape(*data.shape[:-1], n // 8, F)
    padded = np.zeros((*groups.shape[:-1], 16), dtype=np.uint8)
    padded[..., :F] = groups
    words = padded.view(np.uint64)
    low, high = words[..., 0], words[..., 1]
    out = np.empty((*groups.shape[:-1], 8), dtype=np.uint64)
    for position in range(8):
        offset = position * F
        if offset < 64:
            field = low >> np.uint64(offset)
            if offset + F > 64:
                field = field | (high << np.uint64(64 - offset))
        else:
            field = high >> np.uint64(offset - 64)
        out[..., position] = field
    out &= np.uint64((1 << F) - 1)
    return out.reshape(*data.shape[:-1], n).astype(np.uint32)


# --- the plane transpose (default path) --------------------------------------------------------------------
def _plane_rows(words: np.ndarray, B: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """(B, m/8) plane bytes of m weights (m a multiple of 8): row p holds bit B-1-p, weight i at bit i.

    packbits keeps a byte's bit when the byte is non-zero, so each plane is the weights ANDed with that
    plane's bit; one broadcast AND makes all B rows and one packbits call packs them.
    """
    m = words.size
    select = _PLANE_SELECT[min(B, 8)]
    if scratch is None or scratch.size < B * m:
        scratch = np.empty(B * m, dtype=np.uint8)
    masked = scratch[: B * m].reshape(B, m)
    if B <= 8:
        np.bitwise_and(words[None, :], select, out=masked)
    else:
        np.bitwise_and((words >> 8).astype(np.uint8)[None, :], select, out=masked[:8])   # planes 0..7: bits 15..8
        np.bitwise_and(words.astype(np.uint8)[None, :], select, out=masked[8:])         # planes 8..15: bits 7..0
    return np.packbits(masked.reshape(-1), bitorder="little").reshape(B, m // 8)


# bit of each plane of a byte, as (planes, 1) columns to broadcast: plane p of an n-bit byte holds bit n-1-p
_PLANE_SELECT = {n: (1 << np.arange(n - 1, -1, -1)).astype(np.uint8)[:, None] for n in (2, 4, 8)}


def _words_from_plane_rows(rows: np.ndarray, B: int, signed: bool = False) -> np.ndarray:
    """Inverse of _plane_rows for the top k = rows.shape[0] planes: uint8 / uint16 fields, dropped bits 0.

    signed: B < 8 fields come back sign-extended to 8 bits (the int8 bit pattern of the two's complement value).
    """
    k, row_bytes = rows.shape
    bits = np.unpackbits(rows.reshape(-1), bitorder="little").reshape(k, row_bytes * 8)
    # bits are 0/1, so multiplying by a plane's byte value places them (numpy vectorises uint8 multiply, not
    # uint8 shift); the signed table gives the sign plane the value 1..10..0 of a sign-extended byte
    np.multiply(bits, (_PLANE_VALUE_SIGNED if signed else _PLANE_VALUE)[B][:k], out=bits)
    if B <= 8:
        return np.bitwise_or.reduce(bits, axis=0)
    high = np.bitwise_or.reduce(bits[:8], axis=0).astype(np.uint16)
    if k > 8:
        return (high << 8) | np.bitwise_or.reduce(bits[8:], axis=0)
    return high << 8


# value of a set bit of plane p within its byte, as (planes, 1) columns: bit B-1-p, modulo 8 for B = 16
_PLANE_VALUE = {B: (1 << (np.arange(B - 1, -1, -1) % 8)).astype(np.uint8)[:, None] for B in SUPPORTED_B}
_PLANE_VALUE_SIGNED = {B: np.vstack([[[(0xFF << (B - 1)) & 0xFF]], values[1:]]).astype(np.uint8) if B < 8
                       else values for B, values in _PLANE_VALUE.items()}


def _superblock_chunks(n_superblocks: int, R: int, W: int):
    """(first, end) superblock ranges of about CHUNK_WEIGHTS weights each (at least one superblock)."""
    step = max(1, CHUNK_WEIGHTS // (R * W))
    for first in range(0, n_superblocks, step):
        yield first, min(n_superblocks, first + step)


def _encode_values(values: np.ndarray, B: int, fmt: Format | int, R: int, W: int) -> np.ndarray:
    """Raw lines (n_lines, W/8) of a flat array of checked weights, zero padded to whole superblocks."""
    LB = W // 8
    n_superblocks = n_blocks_for(values.size, W, R) // R
    superblock_weights = R * W
    raw = np.empty((n_superblocks, B, R, LB), dtype=np.uint8)
    full = values.size // superblock_weights                    # superblocks read straight from the input
    chunk_weights = max(1, CHUNK_WEIGHTS // superblock_weights) * superblock_weights
    scratch = np.empty(B * chunk_weights, dtype=np.uint8) if full else None     # reused by every chunk
    for first, end in _superblock_chunks(full, R, W):
        words = _chunk_words(values[first * superblock_weights: end * superblock_weights], B, fmt, values)
        rows = _plane_rows(words, B, scratch)
        raw[first:end] = rows.reshape(B, end - first, R, LB).transpose(1, 0, 2, 3)
    if full < n_superblocks:                                    # the partial last superblock, zero padded
        words = _chunk_words(values[full * superblock_weights:], B, fmt, values)
        tail = np.zeros(superblock_weights, dtype=words.dtype)
        tail[: words.size] = words
        raw[full] = _plane_rows(tail, B).reshape(B, R, LB)
    return raw.reshape(-1, LB)


def _decode_values(raw: np.ndarray, B: int, fmt: Format | int, R: int, k: int, n_weights: int) -> np.ndarray:
    """The first n_weights weights (int32 or float32) of raw lines, read at precision k (dropped bits 0)."""
    LB = raw.shape[1]
    superblocks = raw.reshape(-1, B, R, LB)
    bf16 = Format(fmt) == Format.BF16
    out = np.empty(n_weights, dtype=np.float32 if bf16 else np.int32)
    superblock_weights = R * LB * 8
    for first, end in _superblock_chunks(-(-n_weights // superblock_weights), R, LB * 8):
        # plane-major copy of the chunk: row p = plane p of every block of the chunk, in block order
        rows = np.ascontiguousarray(superblocks[first:end, :k].transpose(1, 0, 2, 3)).reshape(k, -1)
        start = first * superblock_weights
        stop = min(n_weights, end * superblock_weights)
        words = _words_from_plane_rows(rows, B, signed=not bf16)[: stop - start]
        # the assignment itself widens the words (int8/int16 -> int32, uint16 -> uint32): one pass, no temporary
        if bf16:
            bits = out[start:stop].view(np.uint32)
            bits[:] = words
            bits <<= 16                             # bfloat16 = upper half of a float32
        else:
            out[start:stop] = words.view(np.int8 if B <= 8 else np.int16)
    return out


# --- planes and the raw view -------------------------------------------------------------------------------
def block_planes(blocks: np.ndarray, B: int) -> np.ndarray:
    """(n_blocks, B, W/8) plane lines: plane p holds bit B-1-p of every weight, weight i at bit i."""
    check_b(B)
    blocks = np.asarray(blocks)
    n_blocks, W = blocks.shape
    words = blocks.astype(np.uint8 if B <= 8 else np.uint16).reshape(-1)
    if words.size % 8:
        return _reference_block_planes(blocks, B)
    return _plane_rows(words, B).reshape(B, n_blocks, W // 8).transpose(1, 0, 2).copy()


def planes_to_blocks(planes: np.ndarray, B: int, k: int | None = None) -> np.ndarray:
    """Fields (n_blocks, W) uint32 rebuilt from planes 0..k-1 (k = B: exact); dropped low bits are 0."""
    check_b(B)
    k = B if k is None else k
    check_k(k, B)
    planes = np.asarray(planes, dtype=np.uint8)
    if planes.ndim != 3 or planes.shape[1] < k:
        raise SmartquantError(f"planes must be (n_blocks, >= {k} planes, W/8) for k = {k}, got shape {planes.shape}")
    n_blocks, _, LB = planes.shape
    rows = np.ascontiguousarray(planes[:, :k].transpose(1, 0, 2)).reshape(k, -1)
    return _words_from_plane_rows(rows, B).astype(np.uint32).reshape(n_blocks, LB * 8)


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
    """Raw view bytes (n_lines, W/8) of a weight tensor stored as B-bit planes with plane run R.

    values: integers (INT, any integer dtype whose values fit B bits) or floats (BF16, rounded to nearest
    even). The tensor is flattened in C order; the last block and superblock are padded with zero weights.
    """
    check_w(W)
    check_r(R)
    values = np.asarray(values).reshape(-1)
    _check_weights(values, B, fmt)
    return _encode_values(values, B, fmt, R, W)


def decode(raw, B: int, n_weights: int, fmt: Format | int = Format.INT, R: int = 1, k: int | None = None):
    """Weights back from raw lines (k < B: the top k bits, dropped bits 0 = floor).

    Returns int32 for INT storage, float32 for BF16 (flat, n_weights long)."""
    check_b(B, fmt)
    check_r(R)
    k = B if k is None else k
    check_k(k, B)
    raw = _check_raw(raw, B, R)
    capacity = raw.shape[0] // B * raw.shape[1] * 8
    if not _is_int(n_weights) or not 0 <= n_weights <= capacity:
        raise SmartquantError(f"n_weights must be 0..{capacity} for {raw.shape[0]} raw lines, got {n_weights!r}")
    return _decode_values(raw, B, fmt, R, k, n_weights)


# --- host views of blocks ----------------------------------------------------------------------------------
def fill_pattern(B: int, k: int, rounding: Rounding | int) -> int:
    """Value of the B-k dropped low bits in the expanded view, for the rules whose fill is one constant.

    TOWARD_ZERO's fill depends on each weight's sign (and format): use `truncate`, which applies every rule."""
    rounding = check_rounding(rounding)
    if rounding == Rounding.TOWARD_ZERO:
        raise SmartquantError("the toward-zero fill copies each weight's sign bit: use layout.truncate")
    if k >= B or rounding == Rounding.FLOOR:
        return 0
    return 1 << (B - k - 1)


def truncate(fields: np.ndarray, B: int, k: int, rounding: Rounding | int = Rounding.FLOOR,
             fmt: Format | int = Format.INT) -> np.ndarray:
    """Fields with the B-k low bits replaced by the rounding fill (what expanded-k returns).

    FLOOR 0..0, MIDPOINT 10..0; TOWARD_ZERO: INT fields get B-k copies of their sign bit (plane 0: 1..1 for
    negative, 0..0 for non-negative codes, workloads/quant.py's "toward-zero" rule), BF16 fields 0..0 (sign-magnitude
    truncation is already toward zero)."""
    check_k(k, B)
    rounding = check_rounding(rounding)
    fields = np.asarray(fields, dtype=np.uint32)
    dropped_mask = (1 << (B - k)) - 1
    kept = fields & (((1 << B) - 1) ^ dropped_mask)
    if rounding != Rounding.TOWARD_ZERO:
        return kept | fill_pattern(B, k, rounding)
    if check_format(fmt) == Format.BF16:
        return kept
    sign = (fields >> (B - 1)) & 1
    return kept | (sign * np.uint32(dropped_mask)).astype(np.uint32)


def packed_lines(blocks: np.ndarray, B: int, k: int) -> np.ndarray:
    """(n_blocks, k, W/8): packed-k view, weight w's top k bits at bits [w*k, w*k+k) of the block stream."""
    check_k(k, B)
    n_blocks, W = blocks.shape
    top = np.asarray(blocks, dtype=np.uint32) >> (B - k)
    return pack_fields(top, k).reshape(n_blocks, k, W // 8)


def weight_major_lines(blocks: np.ndarray, B: int) -> np.ndarray:
    """(n_blocks, B, W/8): weights as numpy stores them (B-bit fields, little-endian, low nibble first)."""
    return packed_lines(blocks, B, B)


def expanded_lines(blocks: np.ndarray, B: int, k: int, rounding: Rounding | int = Rounding.FLOOR,
                   fmt: Format | int = Format.INT) -> np.ndarray:
    """(n_blocks, B, W/8): weight-major lines of the top k bits, dropped bits filled by the rounding rule."""
    return weight_major_lines(truncate(blocks, B, k, rounding, fmt), B)


def weight_major_to_blocks(lines: np.ndarray, B: int) -> np.ndarray:
    """Inverse of weight_major_lines: (n_blocks, B, W/8) -> (n_blocks, W) fields."""
    lines = np.asarray(lines, dtype=np.uint8)
    n_blocks, _, LB = lines.shape
    return unpack_fields(lines.reshape(n_blocks, B * LB), B, LB * 8)


# --- host views of a region's line range (docs/DEVICE.md sections 2 and 3) ---------------------------------
def _check_view(view) -> int:
    if not _is_int(view) or not 0 <= view <= 7:
        raise SmartquantError(f"view must be an integer 0..7 (the 3-bit HPA view field), got {view!r}")
    return int(view)


def _view_precision(view: int, B: int, k: int) -> int | None:
    """k a view reads at, or None when the whole view answers as unmapped (reserved view, illegal k)."""
    if not _is_int(k) or not 0 <= k <= 31:
        raise SmartquantError(f"k must fit the 5-bit HPA k field (0..31), got {k!r}")
    if view in (View.RAW, View.WEIGHT_MAJOR):
        return B                                      # these views ignore the k field
    if view > View.EXPANDED_DEFAULT or not 1 <= k <= B:
        return None
    return k


def view_line_mapped(B: int, view: View | int, k: int, first_line: int, n_lines: int) -> np.ndarray:
    """(n_lines,) bool: which lines L = first_line .. of a region's view window the device serves.

    False marks a hole the device answers with MemData, data 0 (docs/DEVICE.md §3): reserved views 6 and 7, an
    illegal k (0 or > B) in views 2..5, and packed lines j = L % B >= k in views 2 and 4.
    For views 4 and 5 pass the region's default k as k.
    """
    check_b(B)
    view = _check_view(view)
    if not _is_int(first_line) or not _is_int(n_lines) or first_line < 0 or n_lines < 0:
        raise SmartquantError(f"line range must be non-negative integers, got first_line {first_line!r}, "
                              f"n_lines {n_lines!r}")
    lines = np.arange(first_line, first_line + n_lines)
    precision = _view_precision(view, B, k)
    if precision is None:
        return np.zeros(n_lines, dtype=bool)
    if view in (View.PACKED_K, View.PACKED_DEFAULT):
        return lines % B < precision
    return np.ones(n_lines, dtype=bool)


def view_lines(raw_region, B: int, R: int, view: View | int, k: int, first_line: int, n_lines: int,
               fmt: Format | int = Format.INT, rounding: Rounding | int = Rounding.FLOOR) -> np.ndarray:
    """(n_lines, W/8) uint8: the bytes a host reads from lines L = first_line .. first_line+n_lines-1 of view.

    raw_region: the region's raw lines (n_superblocks * R * B, W/8), e.g. from encode(). k is the address's
    precision for views 2/3 and the region's default k for views 4/5 (views 0/1 ignore it). Views 1..5
    address block b = L // B, line j = L % B. Holes (see view_line_mapped) come back as zeros, the hole fill
    the device answers them with; ask view_line_mapped which ones they are.
    Lines outside the region window are a caller error (no region matches there).
    """
    check_b(B, fmt)
    check_r(R)
    rounding = check_rounding(rounding)
    view = _check_view(view)
    raw = _check_raw(raw_region, B, R)
    span, LB = raw.shape
    if not _is_int(first_line) or not _is_int(n_lines) or n_lines < 0 or first_line < 0 \
            or first_line + n_lines > span:
        raise SmartquantError(f"lines {first_line}..{first_line}+{n_lines} are outside the region window "
                              f"of {span} lines")
    out = np.zeros((n_lines, LB), dtype=np.uint8)
    mapped = view_line_mapped(B, view, k, first_line, n_lines)
    if n_lines == 0 or not mapped.any():
        return out
    lines = np.arange(first_line, first_line + n_lines)
    if view == View.RAW:
        return raw[lines].copy()
    precision = _view_precision(view, B, k)
    block, line_in_slot = lines // B, lines % B
    first_block = int(block[0])
    blocks = np.arange(first_block, int(block[-1]) + 1)
    # planes 0..precision-1 of each block touched, gathered from their raw lines (s*R*B + p*R + r)
    plane_lines = raw_line_index(blocks[:, None] // R, np.arange(precision)[None, :], blocks[:, None] % R, B, R)
    fields = planes_to_blocks(raw[plane_lines], B, precision)
    if view in (View.PACKED_K, View.PACKED_DEFAULT):
        block_lines = packed_lines(fields, B, precision)
    else:
        block_lines = expanded_lines(fields, B, precision, rounding, fmt)
    out[mapped] = block_lines[block[mapped] - first_block, line_in_slot[mapped]]
    return out


# --- reference implementation (plain per-bit unpackbits/packbits; the tests' independent expectation) ------
def _reference_pack_fields(fields: np.ndarray, F: int) -> np.ndarray:
    f = np.asarray(fields, dtype=np.uint32)
    bits = ((f[..., None] >> np.arange(F, dtype=np.uint32)) & 1).astype(np.uint8)
    bits = bits.reshape(*f.shape[:-1], f.shape[-1] * F)
    return np.packbits(bits, axis=-1, bitorder="little")


def _reference_unpack_fields(data: np.ndarray, F: int, n: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8), axis=-1, bitorder="little")
    bits = bits[..., : n * F].reshape(*bits.shape[:-1], n, F).astype(np.uint32)
    return (bits << np.arange(F, dtype=np.uint32)).sum(axis=-1, dtype=np.uint32)


def _reference_block_planes(blocks: np.ndarray, B: int) -> np.ndarray:
    blocks = np.asarray(blocks, dtype=np.uint32)
    shifts = np.arange(B - 1, -1, -1, dtype=np.uint32)            # plane p -> bit B-1-p
    bits = ((blocks[:, None, :] >> shifts[None, :, None]) & 1).astype(np.uint8)
    return np.packbits(bits, axis=-1, bitorder="little")


def _reference_planes_to_blocks(planes: np.ndarray, B: int, k: int | None = None) -> np.ndarray:
    k = B if k is None else k
    bits = np.unpackbits(np.asarray(planes[:, :k], dtype=np.uint8), axis=-1, bitorder="little").astype(np.uint32)
    shifts = np.arange(B - 1, B - 1 - k, -1, dtype=np.uint32)
    return (bits << shifts[None, :, None]).sum(axis=1, dtype=np.uint32)


def _reference_encode(values, B: int, fmt: Format | int = Format.INT, R: int = 1, W: int = DEFAULT_W) -> np.ndarray:
    return planes_to_raw(_reference_block_planes(to_blocks(fields_of(values, B, fmt), W, R), B), R)


def _reference_decode(raw, B: int, n_weights: int, fmt: Format | int = Format.INT, R: int = 1,
                      k: int | None = None):
    check_b(B, fmt)
    fields = _reference_planes_to_blocks(raw_to_planes(raw, B, R), B, k).reshape(-1)[:n_weights]
    return floats_from_bf16(fields) if Format(fmt) == Format.BF16 else ints_from_fields(fields, B)


def _reference_packed_lines(blocks: np.ndarray, B: int, k: int) -> np.ndarray:
    check_k(k, B)
    n_blocks, W = blocks.shape
    return _reference_pack_fields(np.asarray(blocks, dtype=np.uint32) >> (B - k), k).reshape(n_blocks, k, W // 8)


def _reference_expanded_lines(blocks: np.ndarray, B: int, k: int,
                              rounding: Rounding | int = Rounding.FLOOR, fmt: Format | int = Format.INT) -> np.ndarray:
    n_blocks, W = blocks.shape
    return _reference_pack_fields(truncate(blocks, B, k, rounding, fmt), B).reshape(n_blocks, B, W // 8)
