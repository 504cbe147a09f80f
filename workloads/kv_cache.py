"""SmolLM2-135M's KV cache stored in a bit-plane region and read back at precision k (issue 13, items 2 and 3).

What is modelled. Every decoder layer's K (after RoPE) and V are written into a KV region as they are produced
and attention reads them back at a precision k of their B stored bits; the weights stay at reference precision
(the dequantized GGUF in float32). The hook is smollm2's `attention` argument: `KVCacheAttention` stores the
layer's K and V through golden/layout's codec (the device's bit-plane layout: blocks of W values, plane runs R),
reads them back through the expanded-k view with the region's fill rule (what the device returns) and attends
over what it read.

Storage formats (`KV_FORMATS`):
- bf16: B = 16, the bfloat16 pattern of each float32 value (round to nearest even, golden/layout.bf16_fields).
  Storing FP32 K/V as BF16 is itself a rounding (relative error <= 2^-8), so k = 16 is the BF16 cache, not the
  float32 forward.
- int8: B = 8, symmetric codes round(x / s) in -127..127 with one scale s = max|x| / 127 per (sequence, token,
  KV head): the 64 values one token writes for one head. The host computes s when the token's K/V are produced
  and keeps it (one float per 64 values); the device stores the codes only.

Fill rules: the device's floor / midpoint / toward-zero (docs/DEVICE.md section 3). For BF16 toward-zero is the
floor fill (sign-magnitude truncation); midpoint puts the dropped bits at the middle of the truncated interval,
an unbiased estimate, and is the best fill at low k for both formats on both Lee texts (README, "KV cache"):
BF16 k = 10 38.8 against 45.0 (floor), INT8 k = 4 42.8 against 93.0 (toward-zero) and 66.2 (floor) on lee.cor.

Stream layout. A stream is the K (or V) of one (layer, sequence, KV head): token-major, head_dim = 64 values a
token, so a block of W = 512 values holds 8 consecutive tokens. Block b of a stream holds tokens 8b..8b+7.
All streams live in one region of the format (the device has 4 region-table entries, not 720): stream s
occupies blocks [s * blocks_per_stream, (s + 1) * blocks_per_stream), blocks_per_stream = ceil(context / 8)
rounded up to whole superblocks of R.

Traffic (`kv_traffic`), for autoregressive decoding of each sequence, one token per step, every layer:
- writes go through the coalescing weight-major write path of issue 13 item 1: the host sends each token's
  values as weight-major lines (head_dim * B / W lines per token and stream: BF16 2, INT8 1), the device gathers
  them and writes a block as B whole plane lines (one burst with R = 1) when its 8th token arrives; the last,
  partial block of a sequence is flushed (B lines) at its end.
- step t attends over tokens 0..t: it reads every block of the stream touched so far at the precision the
  policy gives that block at that step, through the packed-k view (k lines a block; the host applies the
  region's fill to the packed fields, which gives the expanded-k values, tested). A full block costs k DRAM
  lines in one burst; the partial block still being gathered (the newest, when (t+1) % 8 != 0) is served from
  the coalescing buffer: k DRS lines, no DRAM line. (Were the gather buffer to spill it, DRAM reads would grow
  by at most one block per stream and step.)
- activates: golden/dram.py's open-page row model over the burst stream in the decode order (step, layer,
  sequence, head, K then V). With R = 1 a block's k lines are one burst inside one DRAM row, so activates do
  not depend on k (each burst is replayed as its first line plus k - 1 row hits).
Energy: golden/energy.energy_report on those counters (DRAM read / write / activate, link on DRS and RwD data,
controller per message and line).

Policies (`KVPolicy`): a base precision per (layer, K or V) and an optional recent window: the newest
`recent_blocks` blocks of every stream (the block being filled counts as the first) and the first `sink_blocks`
blocks (the attention sink at the start of a sequence) are read at `recent_k` (default B), the other blocks at
the base precision. Static k is the policy with one precision everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import math
from pathlib import Path
import sys
import time
from typing import Sequence

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.outputs import output_file
from smartquant.golden import energy, layout
from smartquant.golden.dram import count_activates
from smartquant.params import Counter, Format, Rounding, View, counter_name
from smartquant.workloads import smollm2

FILLS = {"floor": Rounding.FLOOR, "midpoint": Rounding.MIDPOINT, "toward-zero": Rounding.TOWARD_ZERO}
KINDS = ("key", "value")
INT8_MAX_CODE = 127          # symmetric: -127..127, so -x reads back as the negation of x
DEFAULT_OUT = Path("docs") / "results" / "kv_sweep.json"


@dataclass(frozen=True)
class KVFormat:
    name: str
    bits: int
    device_format: Format

    def describe(self) -> str:
        if self.device_format == Format.BF16:
            return "BF16 (B = 16, round to nearest even)"
        return f"INT{self.bits} symmetric, one host-kept scale per (token, KV head)"


KV_FORMATS = {"bf16": KVFormat("bf16", 16, Format.BF16), "int8": KVFormat("int8", 8, Format.INT)}


def kv_format(name: str) -> KVFormat:
    if name not in KV_FORMATS:
        raise SmartquantError(f"KV format must be one of {', '.join(KV_FORMATS)}, got {name!r}")
    return KV_FORMATS[name]


def check_fill(rule: str) -> Rounding:
    if rule not in FILLS:
        raise SmartquantError(f"fill rule must be one of {', '.join(FILLS)}, got {rule!r}")
    return FILLS[rule]


# --- host side: values <-> stored codes ---------------------------------------------------------------------
def quantize(x: np.ndarray, fmt: KVFormat) -> tuple[np.ndarray, np.ndarray | None]:
    """What the host writes for K or V (n, T, H, d): float32 values (BF16: the codec rounds them) or int8 codes,
    and the host-kept scales (n, T, H, 1) float32 for INT (None for BF16)."""
    x = np.asarray(x, dtype=np.float32)
    if fmt.device_format == Format.BF16:
        return x, None
    absmax = np.abs(x).max(axis=-1, keepdims=True)
    # an all-zero token head gets scale 1 so its codes are 0, not 0/0
    scales = np.where(absmax > 0, absmax / np.float32(INT8_MAX_CODE), np.float32(1.0)).astype(np.float32)
    codes = np.clip(np.rint(x / scales), -INT8_MAX_CODE, INT8_MAX_CODE).astype(np.int8)
    return codes, scales


def dequantize(fields: np.ndarray, scales: np.ndarray | None, fmt: KVFormat) -> np.ndarray:
    """float32 values of B-bit fields as read (BF16 patterns, or two's complement codes times their scales)."""
    if fmt.device_format == Format.BF16:
        return layout.floats_from_bf16(fields)
    return (layout.ints_from_fields(fields, fmt.bits).astype(np.float32) * scales).astype(np.float32)


# --- the region: streams of blocks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamGeometry:
    """How a (n, T, H, d) K or V tensor maps onto blocks: one stream per (sequence, head), 8 tokens a block."""
    n: int
    T: int
    heads: int
    head_dim: int
    W: int = layout.DEFAULT_W
    R: int = 1

    def __post_init__(self):
        layout.check_w(self.W)
        layout.check_r(self.R)
        if self.W % self.head_dim:
            raise SmartquantError(f"a block of W = {self.W} values must hold whole tokens of head_dim "
                                  f"{self.head_dim}")

    @property
    def tokens_per_block(self) -> int:
        return self.W // self.head_dim

    @property
    def blocks_per_stream(self) -> int:
        """Blocks one stream occupies (whole superblocks of R, so streams never share a superblock)."""
        return layout.n_blocks_for(self.T * self.head_dim, self.W, self.R)

    @property
    def padded_tokens(self) -> int:
        return self.blocks_per_stream * self.tokens_per_block

    def to_streams(self, x: np.ndarray) -> np.ndarray:
        """(n, T, H, d) -> flat values, stream-major ((sequence, head), token, dim), tokens zero padded."""
        streams = np.zeros((self.n, self.heads, self.padded_tokens, self.head_dim), dtype=x.dtype)
        streams[:, :, : self.T] = x.transpose(0, 2, 1, 3)
        return streams.reshape(-1)

    def from_streams(self, flat: np.ndarray) -> np.ndarray:
        """Inverse of to_streams (padding dropped)."""
        streams = flat.reshape(self.n, self.heads, self.padded_tokens, self.head_dim)[:, :, : self.T]
        return np.ascontiguousarray(streams.transpose(0, 2, 1, 3))


def store(x: np.ndarray, fmt: KVFormat, R: int = 1, W: int = layout.DEFAULT_W):
    """Host quantization and the device's region contents: (raw lines, scales, geometry) of K or V (n, T, H, d)."""
    geometry = StreamGeometry(*x.shape, W=W, R=R)
    values, scales = quantize(x, fmt)
    raw = layout.encode(geometry.to_streams(values), fmt.bits, fmt.device_format, R, W)
    return raw, scales, geometry


def read_fields(raw: np.ndarray, fmt: KVFormat, geometry: StreamGeometry, k: int, rule: str) -> np.ndarray:
    """Fields (n, T, H, d) the device's expanded-k view returns for the whole region at precision k."""
    rounding = check_fill(rule)
    lines = layout.view_lines(raw, fmt.bits, geometry.R, View.EXPANDED_K, k, 0, raw.shape[0],
                              fmt.device_format, rounding)
    fields = layout.weight_major_to_blocks(lines.reshape(-1, fmt.bits, lines.shape[1]), fmt.bits)
    return geometry.from_streams(fields.reshape(-1))


def read_values(raw, scales, fmt: KVFormat, geometry: StreamGeometry, k: int, rule: str) -> np.ndarray:
    return dequantize(read_fields(raw, fmt, geometry, k, rule), scales, fmt)


# --- policies -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KVPolicy:
    """Precision of each block read: `recent_k` (None = B) for the newest `recent_blocks` blocks of each stream
    and its first `sink_blocks` blocks, `key_k` / `value_k` (one int, or one per layer) for the others."""
    name: str
    key_k: int | tuple = 16
    value_k: int | tuple = 16
    recent_blocks: int = 0
    recent_k: int | None = None
    sink_blocks: int = 0

    def base_k(self, layer: int, kind: str) -> int:
        value = self.key_k if kind == "key" else self.value_k
        return int(value if isinstance(value, (int, np.integer)) else value[layer])

    def check(self, fmt: KVFormat, n_layers: int) -> None:
        for kind in KINDS:
            value = self.key_k if kind == "key" else self.value_k
            values = [value] if isinstance(value, (int, np.integer)) else list(value)
            if not isinstance(value, (int, np.integer)) and len(values) != n_layers:
                raise SmartquantError(f"policy {self.name}: {kind} precisions need one per layer ({n_layers}), "
                                      f"got {len(values)}")
            for k in values + ([self.recent_k] if self.recent_k is not None else []):
                layout.check_k(int(k), fmt.bits)
        if self.recent_blocks < 0 or self.sink_blocks < 0:
            raise SmartquantError(f"policy {self.name}: recent_blocks and sink_blocks must be >= 0")

    def block_precision(self, layer: int, kind: str, fmt: KVFormat, steps: int, tokens_per_block: int) -> np.ndarray:
        """(steps, n_blocks) int: the precision block b is read at by the query of step t (b <= t // tpb)."""
        n_blocks = -(-steps // tokens_per_block)
        age = (np.arange(steps) // tokens_per_block)[:, None] - np.arange(n_blocks)[None, :]
        recent = self.recent_k if self.recent_k is not None else fmt.bits
        high = ((age >= 0) & (age < self.recent_blocks)) | (np.arange(n_blocks)[None, :] < self.sink_blocks)
        return np.where(high, recent, self.base_k(layer, kind)).astype(np.int64)

    def uniform(self, layer: int, kind: str, fmt: KVFormat) -> bool:
        recent = self.recent_k if self.recent_k is not None else fmt.bits
        return (self.recent_blocks == 0 and self.sink_blocks == 0) or recent == self.base_k(layer, kind)


def static_policy(k: int) -> KVPolicy:
    return KVPolicy(f"static k={k}", k, k)


# --- attention over what the cache returns --------------------------------------------------------------------
def mixed_precision_gqa_attention(q: np.ndarray, keys: dict, values: dict, key_map: np.ndarray,
                                  value_map: np.ndarray) -> np.ndarray:
    """Causal GQA attention where query t sees key / value s as read at precision key_map[t, s] / value_map[t, s].

    keys / values: precision -> (n, T, Hkv, d) tensor read at it. Same arithmetic as smollm2.causal_gqa_attention
    otherwise (scores scaled by 1/sqrt(d), softmax over s <= t)."""
    n, T, Hq, d = q.shape
    Hkv = next(iter(keys.values())).shape[2]
    group = Hq // Hkv
    qg = q.reshape(n, T, Hkv, group, d).transpose(0, 2, 3, 1, 4)          # (n, Hkv, group, T, d)
    scores = np.zeros((n, Hkv, group, T, T), dtype=np.float32)
    for k, tensor in keys.items():
        kg = tensor.transpose(0, 2, 1, 3)[:, :, None]
        np.copyto(scores, qg @ kg.swapaxes(-1, -2), where=key_map == k)
    scores *= np.float32(1.0 / np.sqrt(d))
    scores = np.where(np.tri(T, dtype=bool), scores, np.float32(-np.inf))
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    out = np.zeros((n, Hkv, group, T, d), dtype=np.float32)
    for k, tensor in values.items():
        vg = tensor.transpose(0, 2, 1, 3)[:, :, None]
        out += np.where(value_map == k, weights, np.float32(0)) @ vg
    return out.transpose(0, 3, 1, 2, 4).reshape(n, T, Hq, d).astype(np.float32, copy=False)


@dataclass
class KVCacheAttention:
    """smollm2 `attention` hook: stores K and V in the format's region, attends over them read at the policy's k."""
    fmt: KVFormat
    rule: str
    policy: KVPolicy
    R: int = 1
    W: int = layout.DEFAULT_W
    layers_seen: list = field(default_factory=list)

    def __post_init__(self):
        check_fill(self.rule)

    def read(self, layer: int, kind: str, x: np.ndarray) -> tuple[dict, np.ndarray | None]:
        """(precision -> values read, (T, T) precision map or None when one precision serves every read)."""
        raw, scales, geometry = store(x, self.fmt, self.R, self.W)
        if self.policy.uniform(layer, kind, self.fmt):
            k = self.policy.base_k(layer, kind)
            return {k: read_values(raw, scales, self.fmt, geometry, k, self.rule)}, None
        T = x.shape[1]
        blocks = self.policy.block_precision(layer, kind, self.fmt, T, geometry.tokens_per_block)
        token_map = blocks[:, np.arange(T) // geometry.tokens_per_block]
        reads = {int(k): read_values(raw, scales, self.fmt, geometry, int(k), self.rule)
                 for k in np.unique(token_map[np.tri(T, dtype=bool)])}
        return reads, token_map

    def __call__(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        self.layers_seen.append(layer)
        keys, key_map = self.read(layer, "key", k)
        values, value_map = self.read(layer, "value", v)
        if key_map is None and value_map is None:
            return smollm2.causal_gqa_attention(q, next(iter(keys.values())), next(iter(values.values())))
        T = q.shape[1]
        if key_map is None:
            key_map = np.full((T, T), next(iter(keys)))
        if value_map is None:
            value_map = np.full((T, T), next(iter(values)))
        return mixed_precision_gqa_attention(q, keys, values, key_map, value_map)


# --- traffic, activates and energy of decoding with the cache (module docstring) -------------------------------
@dataclass(frozen=True)
class CacheShape:
    """What the traffic depends on: the model's layers, KV heads and head size, the sequences and their length."""
    n_layers: int
    n_kv_heads: int
    head_dim: int
    sequences: int
    tokens: int
    W: int = layout.DEFAULT_W

    @classmethod
    def of(cls, config, sequences: int, tokens: int, W: int = layout.DEFAULT_W) -> "CacheShape":
        return cls(config.n_layers, config.n_kv_heads, config.head_dim, sequences, tokens, W)

    @property
    def tokens_per_block(self) -> int:
        return self.W // self.head_dim

    @property
    def blocks_per_stream(self) -> int:
        return -(-self.tokens // self.tokens_per_block)

    @property
    def streams_per_layer(self) -> int:
        """(sequence, head, K or V) streams of one layer."""
        return self.sequences * self.n_kv_heads * len(KINDS)

    @property
    def streams(self) -> int:
        return self.n_layers * self.streams_per_layer

    def host_lines_per_token(self, fmt: KVFormat) -> int:
        """Weight-major lines one token's values of one stream take (head_dim values of B bits)."""
        bits = self.head_dim * fmt.bits
        if bits % self.W:
            raise SmartquantError(f"a token's {self.head_dim} values of {fmt.bits} bits are not whole lines of "
                                  f"{self.W} bits")
        return bits // self.W


def read_schedule(shape: CacheShape, policy: KVPolicy, fmt: KVFormat, layer: int, kind: str) -> dict:
    """Lines read by one stream of (layer, kind) over the decode steps: full blocks (from DRAM) and the partial
    block being gathered (from the coalescing buffer), as sums of k and block counts, and lines per k."""
    tpb = shape.tokens_per_block
    precision = policy.block_precision(layer, kind, fmt, shape.tokens, tpb)    # (steps, blocks)
    steps = np.arange(shape.tokens)[:, None]
    block = np.arange(precision.shape[1])[None, :]
    full = block < (steps + 1) // tpb                         # blocks whose 8 tokens are all written by step t
    tail = (block == steps // tpb) & ((steps + 1) % tpb != 0)  # the newest block, still being gathered
    reads = precision[full | tail]
    lines_at_k = np.bincount(reads, weights=reads, minlength=fmt.bits + 1).astype(np.int64)   # k lines a block
    return {"full_lines": int(precision[full].sum()), "full_blocks": int(full.sum()),
            "tail_lines": int(precision[tail].sum()), "lines_at_k": lines_at_k}


def kv_counters(shape: CacheShape, policy: KVPolicy, fmt: KVFormat) -> dict:
    """The device counters (params.counter_name keys) of decoding every sequence token by token with the cache,
    plus `gather_buffer_lines` (DRS lines of partial blocks served by the coalescing buffer, no DRAM line)."""
    policy.check(fmt, shape.n_layers)
    per_stream = shape.sequences * shape.n_kv_heads           # streams sharing one (layer, kind) schedule
    counts = {counter_name(int(c)): 0 for c in Counter}
    counts.update({counter_name(int(Counter.READS_AT_K1) + k): 0 for k in range(16)})
    gather = 0
    for layer in range(shape.n_layers):
        for kind in KINDS:
            s = read_schedule(shape, policy, fmt, layer, kind)
            lines = (s["full_lines"] + s["tail_lines"]) * per_stream
            counts["req_mem_rd"] += lines                      # packed-k view: one MemRd per line
            counts["drs_sent"] += lines
            counts["dram_lines_read"] += s["full_lines"] * per_stream
            counts["read_bursts"] += s["full_blocks"] * per_stream      # R = 1: one burst of k lines per block
            counts["buffer_misses"] += s["full_blocks"] * per_stream
            counts["buffer_hits"] += (s["full_lines"] - s["full_blocks"]) * per_stream
            gather += s["tail_lines"] * per_stream
            for k in range(1, fmt.bits + 1):
                counts[f"reads_at_k{k}"] += int(s["lines_at_k"][k]) * per_stream
    written_blocks = shape.blocks_per_stream * shape.streams   # the partial last block is flushed at the end
    counts["rwd_mem_wr"] = shape.host_lines_per_token(fmt) * shape.tokens * shape.streams
    counts["ndr_sent"] = counts["rwd_mem_wr"]
    counts["dram_lines_written"] = written_blocks * fmt.bits
    counts["write_bursts"] = written_blocks                    # coalesced, R = 1: one burst of B plane lines
    counts["bytes_strobed"] = counts["dram_lines_written"] * shape.W // 8
    counts["gather_buffer_lines"] = gather
    return counts


def burst_stream(shape: CacheShape, fmt: KVFormat) -> np.ndarray:
    """First DRAM line of every burst (block writes and full-block reads) in decode order: step, layer, then
    (sequence, head, K/V) stream, block writes of the step before its reads. Independent of k for R = 1."""
    B, tpb = fmt.bits, shape.tokens_per_block
    span = shape.blocks_per_stream * B                         # lines of one stream
    base = (np.arange(shape.streams) * span).reshape(shape.n_layers, shape.streams_per_layer, 1)
    parts = []
    for t in range(shape.tokens):
        n_full = (t + 1) // tpb
        reads = base + (np.arange(n_full) * B)[None, None, :]
        if (t + 1) % tpb == 0:                                 # block t // tpb is complete: written first
            writes = base + (t // tpb) * B
            parts.append(np.concatenate([writes, reads], axis=2).reshape(-1))
        else:
            parts.append(reads.reshape(-1))
    if shape.tokens % tpb:                                     # the final flush of the partial blocks
        parts.append((base + (shape.tokens // tpb) * B).reshape(-1))
    return np.concatenate(parts)


def kv_energy(counters: dict, activates: int, shape: CacheShape) -> dict:
    """golden/energy.energy_report of the cache's counters, with per-token figures (tokens of all sequences)."""
    report = energy.energy_report(counters, activates, line_bits=shape.W)
    tokens = shape.sequences * shape.tokens
    report["tokens"] = tokens
    report["nj_per_token"] = report["total_pj"] / tokens / 1e3
    report["dram_nj_per_token"] = report["dram_pj"] / tokens / 1e3
    return report


# --- the sweep: perplexity vs KV precision, traffic and energy per token -------------------------------------
# Static points: every k of each format under each device fill (identical reads evaluated once: k = B, and the
# BF16 toward-zero fill, which is its floor fill).
DEFAULT_KS = {"bf16": tuple(range(16, 8, -1)), "int8": tuple(range(8, 2, -1))}
DEFAULT_FILLS = {"bf16": ("midpoint", "floor"), "int8": ("midpoint", "toward-zero", "floor")}
# Policies, chosen on the calibration text lee_background.cor (README, "KV cache"): the midpoint fill is the best
# INT8 and BF16 fill at low k; keys need more planes than values; the newest tokens more than the old ones.
# recent_blocks = 2 is the newest 9..16 tokens of a stream, 4 the newest 25..32.
# The 30 of 60 (layer, K/V) streams least hurt by INT8 k = 3 (`smartquant golden kv-sweep --calibrate
# docs/results/kv_calibration.json --windows 2`, 512 tokens of lee_background.cor; per_layer_policy of it):
CALIBRATED_LOW_KEYS = (4, 5, 6, 17, 20)
CALIBRATED_LOW_VALUES = (0, 2, 3, 4, 7, 8, 9, 10, 11, 12, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29)


def calibrated_policy(n_layers: int = 30, recent_blocks: int = 2, k_high: int = 5, k_low: int = 3) -> KVPolicy:
    """Older blocks of the calibrated streams at k_low, of the others at k_high (3 and 5: 4 bits on average)."""
    def ks(low):
        return tuple(k_low if layer in low else k_high for layer in range(n_layers))
    return KVPolicy(f"recent {recent_blocks} blocks at 8, older calibrated {k_low}/{k_high} per layer",
                    ks(CALIBRATED_LOW_KEYS), ks(CALIBRATED_LOW_VALUES), recent_blocks=recent_blocks)


DEFAULT_POLICIES = {
    "int8": (("midpoint", KVPolicy("K5 V4", 5, 4)),
             ("midpoint", KVPolicy("recent 2 blocks at 8, older k=4", 4, 4, recent_blocks=2)),
             ("midpoint", calibrated_policy()),
             ("midpoint", KVPolicy("recent 2 blocks at 8, older K5 V4", 5, 4, recent_blocks=2)),
             ("midpoint", KVPolicy("recent 4 blocks at 8, older k=4", 4, 4, recent_blocks=4)),
             ("midpoint", KVPolicy("recent 2 blocks at 8, older k=5", 5, 5, recent_blocks=2))),
    "bf16": (("midpoint", KVPolicy("K11 V10", 11, 10)),
             ("midpoint", KVPolicy("recent 4 blocks at 16, older K10 V9", 10, 9, recent_blocks=4))),
}


@dataclass
class KVSetup:
    model: smollm2.SmolLM2
    batch: np.ndarray
    source: str

    @property
    def shape(self) -> CacheShape:
        # the windows are independent sequences of batch.shape[1] - 1 decode steps (the last id is only a target)
        return CacheShape.of(self.model.config, self.batch.shape[0], self.batch.shape[1] - 1)


def prepare(n_windows: int = 4, window: int = 256, part: str = "test", model=None) -> KVSetup:
    """The llm sweep's evaluation: n_windows x window predicted tokens of a Lee corpus part (workloads/corpus)."""
    from smartquant.workloads.corpus import PARTS, lee_text
    model = smollm2.load_smollm2() if model is None else model
    batch = smollm2.windows(model.encode(lee_text(part)), n_windows, window)
    return KVSetup(model, batch, f"Lee corpus {PARTS[part]} (gensim test data)")


def evaluate(setup: KVSetup, fmt: KVFormat | None, rule: str | None, policy: KVPolicy | None) -> float:
    """Perplexity of the setup's windows (the last token of each window is only a target, so the cache holds
    window tokens); fmt None = the float32 reference forward."""
    from threadpoolctl import threadpool_limits
    attention = None if fmt is None else KVCacheAttention(fmt, rule, policy)
    with threadpool_limits(limits=1):
        nll = setup.model.token_nll(setup.batch, attention=attention)
    return float(np.exp(nll.mean()))


def traffic_row(shape: CacheShape, fmt: KVFormat, policy: KVPolicy, activates: int) -> dict:
    counters = kv_counters(shape, policy, fmt)
    report = kv_energy(counters, activates, shape)
    tokens = report["tokens"]
    line_bytes = shape.W // 8
    return {
        "dram_lines_read_per_token": counters["dram_lines_read"] / tokens,
        "dram_lines_written_per_token": counters["dram_lines_written"] / tokens,
        "link_lines_per_token": (counters["drs_sent"] + counters["rwd_mem_wr"]) / tokens,
        "kb_read_per_token": counters["dram_lines_read"] * line_bytes / tokens / 1e3,
        "activates_per_token": activates / tokens,
        "nj_per_token": report["nj_per_token"],
        "dram_nj_per_token": report["dram_nj_per_token"],
        "counters": {name: value for name, value in counters.items() if value},
    }


def _interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """y at x on the polyline (xs increasing); None outside it."""
    if len(xs) < 2 or not xs[0] <= x <= xs[-1]:
        return None
    return float(np.interp(x, xs, ys))


def compare_with_static(rows: list) -> None:
    """Adds to each policy row the perplexity of static k at its DRAM read traffic and the static traffic at its
    perplexity. The static curve is the best fill at each k of the format (the envelope, so a policy is never
    compared with a weak fill); log perplexity is interpolated linearly between neighbouring k. None where the
    policy lies outside the curve."""
    for row in rows:
        if row["kind"] != "policy":
            continue
        best = {}
        for r in rows:
            if r["kind"] == "static" and r["format"] == row["format"]:
                if r["k"] not in best or r["perplexity"] < best[r["k"]]["perplexity"]:
                    best[r["k"]] = r
        static = sorted(best.values(), key=lambda r: r["dram_lines_read_per_token"])
        traffic = [r["dram_lines_read_per_token"] for r in static]
        log_ppl = [math.log(r["perplexity"]) for r in static]
        at_traffic = _interpolate(row["dram_lines_read_per_token"], traffic, log_ppl)
        row["static_perplexity_at_equal_traffic"] = None if at_traffic is None else math.exp(at_traffic)
        # traffic for the policy's perplexity: along the static curve while perplexity falls with traffic
        monotone = [0]
        for i in range(1, len(static)):
            if log_ppl[i] < log_ppl[monotone[-1]]:
                monotone.append(i)
        falling = [-log_ppl[i] for i in monotone]
        row["static_traffic_at_equal_perplexity"] = _interpolate(
            -math.log(row["perplexity"]), falling, [traffic[i] for i in monotone])


def run_kv_sweep(setup: KVSetup, formats=("bf16", "int8"), ks: dict | None = None, fills: dict | None = None,
                 policies: dict | None = None, log=None) -> dict:
    """Perplexity, traffic and energy per token for every static point and policy; JSON-ready."""
    log = log or (lambda line: None)
    start = time.perf_counter()
    shape = setup.shape
    reference = evaluate(setup, None, None, None)
    log(f"reference (float32 K/V, no cache): perplexity {reference:.3f}")
    rows = []
    for name in formats:
        fmt = kv_format(name)
        activates = count_activates(burst_stream(shape, fmt)).activates     # the same for every k (R = 1)
        chosen_ks = list((ks or DEFAULT_KS).get(name, DEFAULT_KS[name]))
        chosen_fills = list((fills or DEFAULT_FILLS).get(name, DEFAULT_FILLS[name]))
        for rule in chosen_fills:
            check_fill(rule)
        points = [("static", rule, static_policy(k), k) for k in chosen_ks for rule in chosen_fills
                  if not (k == fmt.bits and rule != chosen_fills[0])
                  and not (fmt.device_format == Format.BF16 and rule == "toward-zero" and "floor" in chosen_fills)]
        points += [("policy", rule, policy, None) for rule, policy in (policies if policies is not None
                                                                          else DEFAULT_POLICIES).get(name, ())]
        for kind, rule, policy, k in points:
            began = time.perf_counter()
            policy.check(fmt, shape.n_layers)
            row = {"kind": kind, "format": name, "fill": rule, "policy": policy.name, "k": k,
                   "perplexity": evaluate(setup, fmt, rule, policy)}
            row.update(traffic_row(shape, fmt, policy, activates))
            rows.append(row)
            log(f"[{len(rows)}] {name} {rule:11s} {policy.name:36s} perplexity {row['perplexity']:10.3f}  "
                f"{row['dram_lines_read_per_token']:8.0f} lines/token  ({time.perf_counter() - began:.1f} s)")
    compare_with_static(rows)
    return {"text": setup.source, "windows": int(setup.batch.shape[0]), "window": int(setup.batch.shape[1] - 1),
            "tokens": int(setup.batch.shape[0] * (setup.batch.shape[1] - 1)), "reference_perplexity": reference,
            "storage": {name: kv_format(name).describe() for name in formats}, "W": shape.W, "R": 1,
            "rows": rows, "seconds": time.perf_counter() - start}


def format_table(result: dict) -> str:
    from smartquant.tables import text_table
    full = {r["format"]: r["dram_lines_read_per_token"] for r in result["rows"]
            if r["k"] == KV_FORMATS[r["format"]].bits}

    def opt(value, spec):
        return "-" if value is None else format(value, spec)
    body = []
    for r in result["rows"]:
        reads = r["dram_lines_read_per_token"]
        ppl = opt(r["perplexity"], ".4g" if r["perplexity"] >= 1e4 else ".2f")
        body.append([r["format"], r["fill"], r["policy"], ppl,
                     f"{reads:.0f}", opt(reads / full[r["format"]] if r["format"] in full else None, ".3f"),
                     f"{r['dram_lines_written_per_token']:.0f}", f"{r['link_lines_per_token']:.0f}",
                     f"{r['nj_per_token'] / 1e3:.1f}",
                     opt(r.get("static_perplexity_at_equal_traffic"), ".2f"),
                     opt(r.get("static_traffic_at_equal_perplexity"), ".0f")])
    headers = ["format", "fill", "KV precision", "perplexity", "DRAM rd/token", "of k=B", "DRAM wr/token",
               "link/token", "uJ/token", "static ppl @ =traffic", "static rd @ =ppl"]
    return text_table(headers, body, left={0, 1, 2})


def output_path(out: str | None) -> Path:
    return output_file(out, DEFAULT_OUT)


def write_json(result: dict, path: Path) -> None:
    path.write_text(json.dumps(result, indent=1) + "\n")


# --- command line (smartquant golden kv-sweep) -----------------------------------------------------------------
def add_cli_arguments(parser) -> None:
    parser.add_argument("--format", default="bf16,int8", metavar="LIST", help="comma list of bf16, int8 (default both)")
    parser.add_argument("--k", metavar="LIST", help="comma list of static precisions (default BF16 16..9, "
                                                    "INT8 8..3; values above a format's B are skipped)")
    parser.add_argument("--fill", metavar="LIST", help="comma list of floor, midpoint, toward-zero (default BF16 "
                                                       "midpoint,floor; INT8 midpoint,toward-zero,floor)")
    parser.add_argument("--no-policies", action="store_true", help="static k only")
    parser.add_argument("--text", choices=("test", "background"), default="test",
                        help="Lee corpus part: test = lee.cor, the evaluation text (default); background = "
                             "lee_background.cor, the calibration text the policies were chosen on")
    parser.add_argument("--windows", type=int, default=4, help="evaluation windows (default 4)")
    parser.add_argument("--window", type=int, default=256, help="predicted tokens per window (default 256)")
    parser.add_argument("--out", metavar="FILE", help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--calibrate", metavar="FILE",
                        help="instead of the sweep: measure each layer's K and V sensitivity (INT8 midpoint read "
                             "at k = 3, one stream at a time) on lee_background.cor over --windows x --window "
                             "tokens, write it to FILE and print the ranking the per-layer policy uses")


def _list(text: str | None, choices, option: str, cast=str):
    if text is None:
        return None
    try:
        values = [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SmartquantError(f"{option} takes a comma list, got {text!r}") from None
    bad = [v for v in values if choices is not None and v not in choices]
    if bad or not values:
        raise SmartquantError(f"{option} must list some of {', '.join(map(str, choices))}, got {text!r}")
    return values


def run_cli(args) -> dict:
    formats = _list(args.format, tuple(KV_FORMATS), "--format")
    fills = _list(args.fill, tuple(FILLS), "--fill")
    ks = _list(args.k, None, "--k", int)
    chosen_ks = None
    if ks is not None:
        chosen_ks = {name: [k for k in ks if 1 <= k <= KV_FORMATS[name].bits] for name in formats}
        if any(k < 1 for k in ks) or not all(chosen_ks.values()):
            raise SmartquantError(f"--k must list precisions in 1..B for every format chosen, got {ks}")
    if args.windows < 1 or args.window < 1:
        raise SmartquantError("--windows and --window must be positive")
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.no_progress else None
    if args.calibrate:
        return run_calibration(args, output_path(args.calibrate), log)
    path = output_path(args.out)
    setup = prepare(args.windows, args.window, args.text)
    result = run_kv_sweep(setup, formats, chosen_ks, {name: fills for name in formats} if fills else None,
                          {} if args.no_policies else None, log)
    print(f"SmolLM2-135M-Instruct with its KV cache in a bit-plane region, weights at reference precision; "
          f"perplexity on {result['text']}, {result['tokens']} predicted tokens ({result['windows']} windows of "
          f"{result['window']}); float32 K/V (no cache) {result['reference_perplexity']:.3f}.")
    print("Storage: " + "; ".join(f"{n} = {d}" for n, d in result["storage"].items())
          + f". W = {result['W']}, R = 1, 8 tokens of one KV head a block.")
    print("Per token (decoding each window token by token, every layer): DRAM lines read (full blocks, packed-k) "
          "and written (whole blocks through the coalescing path), link lines (DRS + RwD data), energy "
          "(golden/energy.py, with activates); the last two columns compare a policy with static k of its format "
          "(the best fill at each k): static perplexity at the policy's DRAM reads, static reads at its perplexity.")
    print(format_table(result))
    write_json(result, path)
    print(f"wrote {path} ({len(result['rows'])} rows, {result['seconds']:.0f} s)")
    return result


# --- calibration of a per-layer policy (on lee_background.cor) ---------------------------------------------------
CALIBRATION_K_LOW = 3
CALIBRATION_FILL = "midpoint"       # the best INT8 fill at k <= 5 on lee_background.cor (README)


def calibrate_layers(setup: KVSetup, fmt: KVFormat, rule: str, k_low: int, log=None) -> dict:
    """Sensitivity of each (layer, K or V): the rise in mean NLL when only that stream is read at k_low (every
    other at B). Returns {"reference_nll": ..., "delta_nll": {"key": [per layer], "value": [per layer]}}."""
    from threadpoolctl import threadpool_limits
    log = log or (lambda line: None)
    n_layers = setup.model.config.n_layers

    def mean_nll(policy):
        with threadpool_limits(limits=1):
            return float(setup.model.token_nll(setup.batch, attention=KVCacheAttention(fmt, rule, policy)).mean())
    base = mean_nll(static_policy(fmt.bits))
    delta = {}
    for kind in KINDS:
        delta[kind] = []
        for layer in range(n_layers):
            lowered = tuple(k_low if i == layer else fmt.bits for i in range(n_layers))
            policy = KVPolicy("one stream low", lowered if kind == "key" else fmt.bits,
                              lowered if kind == "value" else fmt.bits)
            delta[kind].append(mean_nll(policy) - base)
            log(f"calibration {kind} layer {layer:2d} at k={k_low}: delta NLL {delta[kind][-1]:+.4f}")
    return {"format": fmt.name, "fill": rule, "k_low": k_low, "reference_nll": base, "delta_nll": delta}


def per_layer_policy(name: str, delta: dict, n_low: int, k_high: int, k_low: int, recent_blocks: int = 0) -> KVPolicy:
    """The n_low least sensitive (layer, K or V) streams (calibrate_layers) at k_low, the others at k_high."""
    n_layers = len(delta["key"])
    ranked = sorted((delta[kind][layer], kind, layer) for kind in KINDS for layer in range(n_layers))
    low = {(kind, layer) for _, kind, layer in ranked[:n_low]}
    ks = {kind: tuple(k_low if (kind, layer) in low else k_high for layer in range(n_layers)) for kind in KINDS}
    return KVPolicy(name, ks["key"], ks["value"], recent_blocks=recent_blocks)


def run_calibration(args, path: Path, log) -> dict:
    start = time.perf_counter()
    setup = prepare(args.windows, args.window, "background")
    fmt, rule, k_low = KV_FORMATS["int8"], CALIBRATION_FILL, CALIBRATION_K_LOW
    result = calibrate_layers(setup, fmt, rule, k_low, log)
    result.update(text=setup.source, tokens=int(setup.batch.shape[0] * (setup.batch.shape[1] - 1)),
                  seconds=time.perf_counter() - start)
    ranked = sorted((result["delta_nll"][kind][layer], kind, layer) for kind in KINDS
                    for layer in range(len(result["delta_nll"]["key"])))
    print(f"Rise in mean NLL when one layer's K or V is read at INT8 k = {k_low} ({rule}), the rest at k = 8; "
          f"{result['tokens']} tokens of {result['text']}; least sensitive first:")
    print(", ".join(f"{kind[0].upper()}{layer} {delta:+.4f}" for delta, kind, layer in ranked))
    write_json(result, path)
    print(f"wrote {path} ({result['seconds']:.0f} s)")
    return result
