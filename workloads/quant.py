"""Weight quantizers and what a weight reads back as at precision k of its B stored bits.

Storage formats (what the host writes into a region):
- INT-B symmetric, per channel (one scale per output row) or per group (one scale per `group_size` consecutive
  input weights of a row): q = clip(round(w / scale), -qmax, qmax), qmax = 2**(B-1) - 1, scale = max|w| / qmax.
  The most negative code -2**(B-1) is never written, so the grid is symmetric around 0.
- BF16: the weight's bfloat16 bit pattern (golden/layout.py bf16_fields, round-to-nearest-even).

Reading at precision k (docs/DEVICE.md section 3): the device keeps the top k bits of each B-bit field and fills
the B-k dropped bits by the region's rounding rule. The scale is unchanged (the host keeps it). Four read rules:
- "floor":    dropped bits 0..0 (the device's FLOOR fill; for two's complement this is rounding toward -inf).
- "midpoint": dropped bits 10..0 (the device's MIDPOINT fill; the middle of the dropped interval).
- "toward-zero": dropped bits = copies of the sign bit (0..0 for positive, 1..1 for negative codes): the
  device's TOWARD_ZERO fill (docs/DEVICE.md; first measured here as a candidate), about truncation toward zero
  (a negative code lands one B-bit LSB below its truncation: -77 at k = 3 of 8 reads -65). As cheap as floor
  (plane 0 is the sign and is always fetched). For BF16 (sign-magnitude) floor already truncates toward zero,
  so this rule equals floor.
- "nearest":  for comparison only (the device cannot do it without the dropped bits): the stored value rounded
  to the nearest point of the same k-bit grid, ties to even. INT: same scale, clipped to the k-bit range.
  BF16: the nearer in value of the two k-bit patterns around the weight (never infinity).
Weight matrices follow the PyTorch Linear convention: shape (out_features, in_features), rows are channels.

Per-row bias correction (data-free, after Nagel et al., "Data-Free Quantization Through Weight Equalization and
Bias Correction", ICCV 2019). Reading at k < B adds an error E_k = W_k - W_B to the stored weights W_B (the
weights the B stored bits encode, not the float original). Write E_k = E_c + e 1^T with e the row mean of E_k
(one value per output row) and E_c the row-centred rest. The output error E_k x = E_c x + e * sum_j x_j: the
second term shifts the whole row's output, and the fill rules make it large (floor moves every code of a row
down by about half a step). The correction removes it: c_k = -e = mean_j (W_B - W_k)[row, j] per row and per
k, computed at load time from the stored codes and scales only (no activations, no data), and applied on the
host as y = W_k x + c_k * sum_j x_j (one extra sum per input vector, one multiply-add per output). Numerically
that is y = (W_k + c_k 1^T) x, which is how `StoredMatrix.read(k, rule, corrected=True)` returns it.
Nagel's own form subtracts E_k E[x] with E[x] from BatchNorm statistics; a decoder has no BatchNorm, and
estimating E[x] from calibration text would no longer be data-free, so the row-mean form is used here.
After correction every row's mean error is 0; at k = B the correction is 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.params import Format, Rounding

READ_RULES = ("floor", "midpoint", "toward-zero", "nearest")
_DEVICE_FILL = {"floor": Rounding.FLOOR, "midpoint": Rounding.MIDPOINT}
INT_BITS = (2, 4, 8, 16)


def check_rule(rule: str) -> None:
    if rule not in READ_RULES:
        raise SmartquantError(f"read rule must be one of {', '.join(READ_RULES)}, got {rule!r}")


def _check_matrix(weights) -> np.ndarray:
    weights = np.asarray(weights)
    if weights.dtype.kind != "f":
        raise SmartquantError(f"float weights expected, got dtype {weights.dtype}")
    if weights.ndim != 2 or weights.size == 0:
        raise SmartquantError(f"a non-empty 2-D weight matrix (out, in) expected, got shape {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise SmartquantError("weights contain NaN or infinity; they cannot be quantized")
    return weights.astype(np.float32, copy=False)


@dataclass(frozen=True)
class QuantizedMatrix:
    """INT-B symmetric quantization of a (out, in) matrix: ints (int32) and scales (out, in // group_size)."""
    ints: np.ndarray
    scales: np.ndarray
    bits: int
    group_size: int  # = in_features for per-channel quantization

    @property
    def shape(self) -> tuple[int, int]:
        return self.ints.shape

    def scale_per_weight(self) -> np.ndarray:
        return np.repeat(self.scales, self.group_size, axis=1)

    def dequantize(self, precision_k: int | None = None, rule: str = "floor") -> np.ndarray:
        """float32 weights as read at precision k (None = all B bits) under a read rule."""
        ints = self.ints if precision_k is None else read_ints_at_k(self.ints, self.bits, precision_k, rule)
        return dequantize(ints, self.scales, self.group_size)

    def row_correction(self, precision_k: int, rule: str = "floor", read_ints: np.ndarray | None = None) -> np.ndarray:
        """(out,) float32 per-row bias correction c_k = mean_j (W_B - W_k)[row, j], from codes and scales only.

        read_ints: the codes as read at k (read_ints_at_k), if the caller already has them."""
        if read_ints is None:
            read_ints = read_ints_at_k(self.ints, self.bits, precision_k, rule)
        error = dequantize(self.ints - read_ints, self.scales, self.group_size)   # W_B - W_k, exactly
        return error.mean(axis=1, dtype=np.float64).astype(np.float32)


def quantize_symmetric(weights, bits: int, group_size: int | None = None) -> QuantizedMatrix:
    """Symmetric INT-`bits` quantization, per channel (group_size None) or per group of `group_size` inputs."""
    weights = _check_matrix(weights)
    if bits not in INT_BITS:
        raise SmartquantError(f"integer storage needs B in {INT_BITS}, got {bits}")
    n_out, n_in = weights.shape
    group_size = n_in if group_size is None else group_size
    if not isinstance(group_size, (int, np.integer)) or group_size < 1 or n_in % group_size:
        raise SmartquantError(f"group size must be a positive divisor of the {n_in} input features, got {group_size}")
    qmax = (1 << (bits - 1)) - 1
    grouped = weights.reshape(n_out, n_in // group_size, group_size)
    peak = np.abs(grouped).max(axis=2)
    # an all-zero group keeps scale 1: its codes are 0 either way and nothing divides by zero
    scales = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
    ints = np.clip(np.rint(grouped / scales[..., None]), -qmax, qmax).astype(np.int32)
    return QuantizedMatrix(ints.reshape(n_out, n_in), scales, bits, int(group_size))


def dequantize(ints, scales, group_size: int) -> np.ndarray:
    """float32 weights from integer codes and their per-group scales."""
    ints = np.asarray(ints)
    scales = np.asarray(scales, dtype=np.float32)
    n_out, n_in = ints.shape
    if scales.shape != (n_out, n_in // group_size) or n_in % group_size:
        raise SmartquantError(f"scales of shape {scales.shape} do not fit ints {ints.shape} in groups of {group_size}")
    grouped = ints.reshape(n_out, n_in // group_size, group_size).astype(np.float32)
    return (grouped * scales[..., None]).reshape(n_out, n_in)


def read_ints_at_k(ints, B: int, precision_k: int, rule: str = "floor") -> np.ndarray:
    """INT-B codes as read at precision k, on the B-bit scale: (q >> (B-k)) << (B-k) plus the rule's fill.

    Arithmetic shifts of the signed code are exactly layout.truncate on its two's complement field (tested
    against it); the fill comes from layout.fill_pattern. Shifting int32 avoids the field round trip (5x faster).
    """
    check_rule(rule)
    layout.check_k(precision_k, B)
    ints = np.asarray(ints)
    if ints.dtype.kind not in "iu":
        raise SmartquantError(f"integer codes expected for INT{B}, got dtype {ints.dtype}")
    lo, hi = -(1 << (B - 1)), (1 << (B - 1)) - 1
    if ints.size and (ints.min() < lo or ints.max() > hi):
        raise SmartquantError(f"codes outside the INT{B} range {lo}..{hi} (min {ints.min()}, max {ints.max()})")
    ints = ints.astype(np.int32, copy=False)
    dropped = B - precision_k
    if rule == "nearest":
        step = 1 << dropped
        # ties to even, the unbiased IEEE rule; clipped to the k-bit two's complement range
        nearest = np.rint(ints / step)
        return (np.clip(nearest, lo >> dropped, hi >> dropped).astype(np.int32) << dropped)
    floor = (ints >> dropped) << dropped
    if rule == "toward-zero":
        return np.where(ints < 0, floor | np.int32((1 << dropped) - 1), floor)
    return floor | np.int32(layout.fill_pattern(B, precision_k, _DEVICE_FILL[rule]))


def to_bf16(weights) -> np.ndarray:
    """bfloat16 bit patterns (uint32 holding 16 bits) of float weights."""
    return layout.bf16_fields(weights)


def read_bf16_at_k(fields, precision_k: int, rule: str = "floor") -> np.ndarray:
    """float32 values of bfloat16 patterns read at precision k of 16."""
    check_rule(rule)
    layout.check_k(precision_k, 16)
    fields = np.asarray(fields, dtype=np.uint32)
    if rule in _DEVICE_FILL or rule == "toward-zero":   # sign-magnitude: floor fill already truncates toward 0
        return layout.floats_from_bf16(layout.truncate(fields, 16, precision_k, _DEVICE_FILL.get(rule, Rounding.FLOOR)))
    if precision_k == 16:
        return layout.floats_from_bf16(fields)
    dropped = 16 - precision_k
    sign = fields & 0x8000
    keep = 0x7FFF & ~((1 << dropped) - 1)
    # the two grid neighbours of the magnitude; the upper one never rounds into infinity
    below = fields & keep
    above = np.minimum(below + (1 << dropped), 0x7F7F & keep)
    magnitude = np.abs(layout.floats_from_bf16(fields & 0x7FFF))
    distance_below = magnitude - layout.floats_from_bf16(below)
    distance_above = layout.floats_from_bf16(above) - magnitude
    # nearest in value (not in bit pattern: dropped exponent bits are logarithmic); ties to an even kept LSB
    take_above = (distance_above < distance_below) | (
        (distance_above == distance_below) & ((below >> dropped) & 1 == 1) & (above != below))
    return layout.floats_from_bf16(sign | np.where(take_above, above, below))


# --- one weight matrix in a storage format ---------------------------------------------------------------
@dataclass(frozen=True)
class StorageFormat:
    """How a sweep stores a matrix: name, bits B, device format, INT group size (None = per channel)."""
    name: str
    bits: int
    device_format: Format
    group_size: int | None = None

    def describe(self) -> str:
        if self.device_format == Format.BF16:
            return "BF16 (B=16)"
        grouping = "per-channel" if self.group_size is None else f"per-group {self.group_size}"
        return f"INT{self.bits} symmetric {grouping}"


STORAGE_FORMATS = {
    "int8": StorageFormat("int8", 8, Format.INT, None),
    # per-channel INT4 loses too much on 384/1536-wide rows; groups of 128 are the usual INT4 choice
    "int4": StorageFormat("int4", 4, Format.INT, 128),
    "bf16": StorageFormat("bf16", 16, Format.BF16),
}


def storage_format(name: str) -> StorageFormat:
    if name not in STORAGE_FORMATS:
        raise SmartquantError(f"storage format must be one of {', '.join(STORAGE_FORMATS)}, got {name!r}")
    return STORAGE_FORMATS[name]


class StoredMatrix:
    """A float matrix stored in one format; `read(k, rule)` gives the float32 weights a host sees at k."""

    def __init__(self, weights, fmt: StorageFormat):
        self.fmt = fmt
        weights = _check_matrix(weights)
        self.shape = weights.shape
        if fmt.device_format == Format.BF16:
            self.fields = to_bf16(weights)
            self.quantized = None
        else:
            self.quantized = quantize_symmetric(weights, fmt.bits, fmt.group_size)
            self.fields = None

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.shape))

    def read(self, precision_k: int | None = None, rule: str = "floor", corrected: bool = False) -> np.ndarray:
        """float32 weights read at k under a rule; corrected: plus the per-row bias correction (module docstring)."""
        if corrected:
            weights, correction = self.read_with_correction(precision_k, rule)
            weights += correction[:, None]
            return weights
        k = self.fmt.bits if precision_k is None else precision_k
        if self.quantized is None:
            return read_bf16_at_k(self.fields, k, rule)
        return self.quantized.dequantize(k, rule)

    def read_with_correction(self, precision_k: int | None = None, rule: str = "floor") -> tuple:
        """(weights read at k (float32, a new array), per-row correction c_k (out,) float32) in one read."""
        k = self.fmt.bits if precision_k is None else precision_k
        if self.quantized is None:
            weights = read_bf16_at_k(self.fields, k, rule)
            full = layout.floats_from_bf16(self.fields)
            correction = (full - weights).mean(axis=1, dtype=np.float64).astype(np.float32)
            return weights, correction
        q = self.quantized
        ints = read_ints_at_k(q.ints, q.bits, k, rule)
        return dequantize(ints, q.scales, q.group_size), q.row_correction(k, rule, ints)

    def row_correction(self, precision_k: int, rule: str = "floor") -> np.ndarray:
        """(out,) per-row bias correction at k: mean_j (W_B - W_k)[row, j] (see the module docstring)."""
        return self.read_with_correction(precision_k, rule)[1]


def snr_db(reference, approximation, signal_power: float | None = None) -> float:
    """10 log10(signal power / error power) of an approximation of a reference (inf when exact).

    signal_power, if given, is sum(reference**2) computed once by the caller (sweeps reuse it).
    """
    reference = np.asarray(reference, dtype=np.float32).reshape(-1)
    error = reference - np.asarray(approximation, dtype=np.float32).reshape(-1)
    error_power = float(np.dot(error.astype(np.float64), error))
    if signal_power is None:
        signal_power = float(np.dot(reference.astype(np.float64), reference))
    if error_power == 0.0:
        return float("inf")
    if signal_power == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal_power / error_power)
