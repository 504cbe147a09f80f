"""SmolLM2-135M's KV cache stored in a bit-plane region and read back at precision k (issue 13, items 2 and 3).

What is modelled. Every decoder layer's K (after RoPE) and V are written into a KV region as they are produced
and attention reads them back at a precision k of their B stored bits; the weights stay at reference precision
(the dequantized GGUF in float32) or, with `weights` = 'policy:BUDGET', are llm-policy's per-matrix allocation
(`weight_matrices`). The hook is smollm2's `attention` argument: `KVCacheAttention` stores the
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
WEIGHTS_REFERENCE = "reference"       # the linear matrices beside the cache: the dequantized GGUF (weight_matrices)


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


def precision_map(policy: KVPolicy, layer: int, kind: str, fmt: KVFormat, T: int, tokens_per_block: int) -> np.ndarray:
    """(T, T) int: the precision query t reads token s at (its block's, at step t)."""
    blocks = policy.block_precision(layer, kind, fmt, T, tokens_per_block)
    return blocks[:, np.arange(T) // tokens_per_block]


def map_precisions(token_map: np.ndarray) -> list:
    """The precisions a (T, T) map uses for the causal pairs s <= t."""
    return [int(k) for k in np.unique(token_map[np.tri(token_map.shape[0], dtype=bool)])]


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
        token_map = precision_map(self.policy, layer, kind, self.fmt, x.shape[1], geometry.tokens_per_block)
        reads = {k: read_values(raw, scales, self.fmt, geometry, k, self.rule) for k in map_precisions(token_map)}
        return reads, token_map

    def __call__(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        self.layers_seen.append(layer)
        keys, key_map = self.read(layer, "key", k)
        values, value_map = self.read(layer, "value", v)
        return attend(q, keys, key_map, values, value_map)


def attend(q: np.ndarray, keys: dict, key_map: np.ndarray | None, values: dict,
           value_map: np.ndarray | None) -> np.ndarray:
    """Attention over K and V as read (precision -> tensor, with the (T, T) precision map, None when one precision
    serves every read): the model's own attention when both are uniform, else the mixed-precision one."""
    if key_map is None and value_map is None:
        return smollm2.causal_gqa_attention(q, next(iter(keys.values())), next(iter(values.values())))
    T = q.shape[1]
    if key_map is None:
        key_map = np.full((T, T), next(iter(keys)))
    if value_map is None:
        value_map = np.full((T, T), next(iter(values)))
    return mixed_precision_gqa_attention(q, keys, values, key_map, value_map)


# --- one layer's cache through the device (sim/stream_demo.py test_stream_kv) --------------------------------
class KVNeeded(Exception):
    """The forward reached the device layer before its K and V were written to the device and read back."""

    def __init__(self, layer: int, keys: np.ndarray, values: np.ndarray):
        super().__init__(f"the K and V of layer {layer}")
        self.layer = layer
        self.kv = {"key": keys, "value": values}


def layer_policy(policy: KVPolicy, layer: int) -> KVPolicy:
    """The policy's precisions of one layer, as a one-layer policy (for kv_counters of that layer alone)."""
    return KVPolicy(f"{policy.name} (layer {layer})", policy.base_k(layer, "key"), policy.base_k(layer, "value"),
                    policy.recent_blocks, policy.recent_k, policy.sink_blocks)


class KVDeviceLayer:
    """One decoder layer's K and V in a device region: where each stream lies, the weight-major lines the host
    writes for each token, the packed reads of each decode step and the host's decoding of what they return.

    Region: one entry of the region table (`index`), R = 1, lines from `first_line`: the (sequence, head) streams
    of K, then those of V, each `blocks_per_stream` blocks (StreamGeometry: 8 tokens of head_dim 64 a block of
    W = 512). Decode order, step t = 0..T-1: the host writes token t of every stream through the weight-major view
    (line j of a block holds W / B values, so a token is head_dim * B / W lines: INT8 1, BF16 2; without issue 13's
    coalescing write path each costs B strobed DRAM beats, one slice of every plane), then reads every block of
    tokens 0..t of every stream through the packed-k view at the precision the policy gives it at step t (k lines a
    block, the newest partial block from DRAM). The host widens the top k bits with the region's fill
    (layout.truncate) and dequantizes with its own scales (INT8). `collect` keeps, per (K/V, k), the fields of every
    token some step read at k, and records any token whose value differs between two reads at the same k.
    `reads(kind)` gives what attention uses: the same structure KVCacheAttention.read computes from the golden
    store, built only from what the device returned (positions never read at a k are 0 and never used: the
    precision map never selects them, `missing` checks it)."""

    def __init__(self, fmt: KVFormat, rule: str, policy: KVPolicy, layer: int, n: int, T: int, heads: int,
                 head_dim: int, W: int = layout.DEFAULT_W, index: int = 0, first_line: int = 0):
        from smartquant.workloads.streaming import LayerRegion, MatrixPlacement
        self.fmt, self.rule, self.policy, self.layer = fmt, rule, policy, int(layer)
        self.rounding = check_fill(rule)
        per_layer = [len(v) for v in (policy.key_k, policy.value_k) if not isinstance(v, (int, np.integer))]
        policy.check(fmt, per_layer[0] if per_layer else self.layer + 1)
        if self.layer < 0 or (per_layer and self.layer >= per_layer[0]):
            raise SmartquantError(f"policy {policy.name} has no layer {self.layer}")
        self.geometry = StreamGeometry(n, T, heads, head_dim, W=W, R=1)
        self.lines_per_token = head_dim * fmt.bits // W
        if self.lines_per_token * W != head_dim * fmt.bits:
            raise SmartquantError(f"a token's {head_dim} values of {fmt.bits} bits are not whole lines of {W} bits")
        bps = self.geometry.blocks_per_stream
        self.streams_per_kind = n * heads
        self.placements = tuple(MatrixPlacement(f"{kind} sequence {i // heads} head {i % heads}", self.layer,
                                                (self.geometry.padded_tokens, head_dim), (s * self.streams_per_kind + i)
                                                * bps, bps)
                                for s, kind in enumerate(KINDS) for i in range(self.streams_per_kind))
        self.region = LayerRegion(self.layer, index, first_line, len(self.placements) * bps, fmt.bits, 1,
                                  fmt.device_format, self.placements)
        self.end_line = first_line + self.region.span
        tpb = self.geometry.tokens_per_block
        self.block_k = {kind: policy.block_precision(self.layer, kind, fmt, T, tpb) for kind in KINDS}
        self.token_map = {kind: None if policy.uniform(self.layer, kind, fmt) else
                          precision_map(policy, self.layer, kind, fmt, T, tpb) for kind in KINDS}
        self.stored: dict | None = None

    def store(self, kv: dict) -> None:
        """The host's side of writing K and V (n, T, H, d): quantization, scales kept, weight-major lines, and the
        golden store of the same tensors (kv_cache.store: the expectation of every read)."""
        self.stored = {}
        self.fields = {}
        self.inconsistent = []
        for kind in KINDS:
            x = np.asarray(kv[kind], dtype=np.float32)
            shape = (self.geometry.n, self.geometry.T, self.geometry.heads, self.geometry.head_dim)
            if x.shape != shape:
                raise SmartquantError(f"{kind}: expected shape {shape}, got {x.shape}")
            values, scales = quantize(x, self.fmt)
            fields = layout.fields_of(self.geometry.to_streams(values), self.fmt.bits, self.fmt.device_format)
            lines = layout.weight_major_lines(layout.to_blocks(fields, self.geometry.W, 1), self.fmt.bits)
            self.stored[kind] = {"x": x, "scales": scales, "lines": lines,
                                 "golden": store(x, self.fmt, 1, self.geometry.W)}
            for k in np.unique(self.block_k[kind]).tolist():
                self.fields[(kind, k)] = (np.zeros(x.shape, dtype=np.uint32), np.zeros(x.shape[:3], dtype=bool))

    def _stream(self, kind: str, i: int):
        return self.placements[KINDS.index(kind) * self.streams_per_kind + i]

    def token_writes(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(absolute lines, line bytes (n, W/8)): the weight-major MemWr of token t of every stream."""
        tpb, lpt, bps = self.geometry.tokens_per_block, self.lines_per_token, self.geometry.blocks_per_stream
        block, slot = divmod(t, tpb)
        js = slot * lpt + np.arange(lpt)
        lines, data = [], []
        for kind in KINDS:
            for i in range(self.streams_per_kind):
                lines.append(self.region.line(self._stream(kind, i), block, js))
                data.append(self.stored[kind]["lines"][i * bps + block, js])
        return np.concatenate(lines), np.concatenate(data)

    def step_reads(self, t: int) -> list:
        """(kind, stream, block, k, absolute lines) of every block read at step t: blocks 0..t // tpb of every
        stream, each at its precision for step t, lines 0..k-1 of the block in the packed-k view."""
        reads = []
        for kind in KINDS:
            for i in range(self.streams_per_kind):
                for block in range(t // self.geometry.tokens_per_block + 1):
                    k = int(self.block_k[kind][t, block])
                    reads.append((kind, i, block, k, self.region.line(self._stream(kind, i), block, np.arange(k))))
        return reads

    def collect(self, t: int, kind: str, i: int, block: int, k: int, rows: np.ndarray) -> None:
        """Decode the k packed lines (k, W/8) of a block read at step t: its tokens up to t, filled."""
        B, tpb, d = self.fmt.bits, self.geometry.tokens_per_block, self.geometry.head_dim
        top = layout.unpack_fields(np.asarray(rows, dtype=np.uint8).reshape(1, -1), k, self.geometry.W)[0]
        fields = layout.truncate(top << np.uint32(B - k), B, k, self.rounding, self.fmt.device_format)
        sequence, head = divmod(i, self.geometry.heads)
        target, seen = self.fields[(kind, k)]
        for slot in range(tpb):
            token = block * tpb + slot
            if token > t or token >= self.geometry.T:
                break                                  # not written yet (or padding): never attended to
            value = fields[slot * d:(slot + 1) * d]
            if seen[sequence, token, head] and not np.array_equal(target[sequence, token, head], value):
                self.inconsistent.append(f"{kind} sequence {sequence} head {head} token {token} k={k} step {t}")
            target[sequence, token, head] = value
            seen[sequence, token, head] = True

    def reads(self, kind: str) -> tuple[dict, np.ndarray | None]:
        """(precision -> values as read, precision map or None): what attention uses, from the device's reads."""
        scales = self.stored[kind]["scales"]
        if self.token_map[kind] is None:
            k = self.policy.base_k(self.layer, kind)
            return {k: dequantize(self.fields[(kind, k)][0], scales, self.fmt)}, None
        return ({k: dequantize(self.fields[(kind, k)][0], scales, self.fmt)
                 for k in map_precisions(self.token_map[kind])}, self.token_map[kind])

    def missing(self) -> list:
        """(kind, k, tokens) the attention selects that no read returned (empty after a complete decode)."""
        gaps = []
        for kind in KINDS:
            T = self.geometry.T
            token_map = self.token_map[kind]
            if token_map is None:
                token_map = np.full((T, T), self.policy.base_k(self.layer, kind))
            causal = np.tri(T, dtype=bool)
            for k in map_precisions(token_map):
                needed = ((token_map == k) & causal).any(axis=0)          # (T,) tokens some query reads at k
                seen = self.fields[(kind, k)][1]                           # (n, T, H)
                short = needed[None, :, None] & ~seen
                if short.any():
                    gaps.append((kind, k, int(short.sum())))
        return gaps

    def wrong_fields(self) -> list:
        """(kind, k) whose device reads differ from the golden store's expanded-k read at any token read."""
        wrong = []
        for (kind, k), (fields, seen) in self.fields.items():
            raw, _, geometry = self.stored[kind]["golden"]
            expected = read_fields(raw, self.fmt, geometry, k, self.rule)
            if not np.array_equal(fields[seen], expected[seen]):
                wrong.append(f"{kind} k={k}")
        return wrong

    def check_kv(self, kv: dict) -> None:
        """The forward that attends over the device's reads must produce the K and V that were written."""
        for kind in KINDS:
            if not np.array_equal(np.asarray(kv[kind], dtype=np.float32), self.stored[kind]["x"]):
                raise AssertionError(f"layer {self.layer}: the forward's {kind}s differ from those written")


class DeviceLayerAttention:
    """smollm2 attention hook of an RTL run: `device.layer` attends over what the device returned (KVNeeded until
    its K and V have been through the device), every other layer over the golden cache of the same format, fill
    and policy (KVCacheAttention), so the perplexity is the whole model's with this layer's cache from the RTL."""

    def __init__(self, device: KVDeviceLayer):
        self.device = device
        self.golden = KVCacheAttention(device.fmt, device.rule, device.policy)

    def __call__(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        if layer != self.device.layer:
            return self.golden(layer, q, k, v)
        if self.device.stored is None:
            raise KVNeeded(layer, k, v)
        self.device.check_kv({"key": k, "value": v})
        keys, key_map = self.device.reads("key")
        values, value_map = self.device.reads("value")
        return attend(q, keys, key_map, values, value_map)


def device_regions(formats, n: int, T: int, heads: int, head_dim: int, W: int = layout.DEFAULT_W) -> tuple[dict, int]:
    """({format name: (region-table entry, first line)}, end line): one region per format of an RTL run, back to
    back from line 0, each holding one layer's K and V streams (KVDeviceLayer)."""
    places, line = {}, 0
    for name in dict.fromkeys(formats):
        fmt = kv_format(name)
        places[name] = (len(places), line)
        line += len(KINDS) * n * heads * StreamGeometry(n, T, heads, head_dim, W=W).blocks_per_stream * fmt.bits
    return places, line


def policy_to_json(policy: KVPolicy) -> dict:
    from dataclasses import asdict
    return asdict(policy)


def policy_from_json(data: dict) -> KVPolicy:
    return KVPolicy(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


def default_policy(fmt_name: str, name: str) -> KVPolicy:
    return next(policy for _, policy in DEFAULT_POLICIES[fmt_name] if policy.name == name)


def token_nll(setup: "KVSetup", attention) -> np.ndarray:
    """The setup's per-token NLL with its weights and an attention hook (None: float32 K/V), one BLAS thread."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        return setup.model.token_nll(setup.batch, setup.matrices, attention=attention)


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


# The RTL run of `smartquant demo --kv` (format, fill, policy): each format read whole, BF16 at the k its sweep
# found lossless (12), INT8 at k = 5 and under the policy chosen in README ("KV cache": recent 2 blocks at 8, older
# K5 V4), all with the midpoint fill chosen there.
DEVICE_RUNS = (("bf16", "midpoint", static_policy(16)), ("bf16", "midpoint", static_policy(12)),
               ("int8", "midpoint", static_policy(8)), ("int8", "midpoint", static_policy(5)),
               ("int8", "midpoint", default_policy("int8", "recent 2 blocks at 8, older K5 V4")))


@dataclass
class KVSetup:
    model: smollm2.SmolLM2
    batch: np.ndarray
    source: str
    weights: str = "reference"              # what the linear matrices are: `weight_matrices` spec
    matrices: dict | None = None            # their substituted values (None: the reference float32 weights)

    @property
    def shape(self) -> CacheShape:
        # the windows are independent sequences of batch.shape[1] - 1 decode steps (the last id is only a target)
        return CacheShape.of(self.model.config, self.batch.shape[0], self.batch.shape[1] - 1)


def prepare(n_windows: int = 4, window: int = 256, part: str = "test", model=None,
            weights: str = WEIGHTS_REFERENCE) -> KVSetup:
    """The llm sweep's evaluation: n_windows x window predicted tokens of a Lee corpus part (workloads/corpus),
    with the linear matrices as `weights` says (weight_matrices)."""
    from smartquant.workloads.corpus import PARTS, lee_text
    model = smollm2.load_smollm2() if model is None else model
    batch = smollm2.windows(model.encode(lee_text(part)), n_windows, window)
    return KVSetup(model, batch, f"Lee corpus {PARTS[part]} (gensim test data)", weights,
                   weight_matrices(model, weights))


# --- the weights beside the cache -----------------------------------------------------------------------------


def weight_matrices(model, spec: str) -> dict | None:
    """The linear matrices the forward uses beside the cache: 'reference' (None: the dequantized GGUF in float32)
    or 'policy:BUDGET[:FILE]', the per-matrix policy (a) of `smartquant golden llm-policy` allocated at BUDGET
    bits/weight from its result FILE (stream_workloads.policy_precisions, default docs/results/llm_policy.json):
    every matrix stored INT8 per channel and read at its k with the read configuration that run chose for that k
    (its "configs": floor + correction at k <= 5, toward-zero + correction at 6, 7), so the weights are the ones
    behind llm-policy's own perplexity at that budget."""
    spec = spec.strip()
    if spec == WEIGHTS_REFERENCE:
        return None
    if not spec.startswith("policy:"):
        raise SmartquantError(f"weights must be 'reference' or 'policy:BUDGET[:FILE]', got {spec!r}")
    from smartquant.workloads import llm_policy, llm_sweep, quant
    from smartquant.workloads.stream_workloads import policy_precisions
    names = model.linear_weight_names()
    allocation = policy_precisions(spec, {name: model.weights[name].size for name in names}, llm_policy.B)
    parts = spec.split(":", 2)
    path = Path(parts[2]) if len(parts) == 3 else llm_policy.DEFAULT_OUT
    configs = {int(k): llm_policy.parse_config_label(label)
               for k, label in json.loads(path.read_text())["configs"].items()}
    fmt = llm_sweep.llm_format(llm_policy.FORMAT)
    reader = llm_policy.Reader({name: quant.StoredMatrix(model.weights[name], fmt) for name in names}, configs)
    return {name: reader(name, k) for name, k in allocation.items()}


def evaluate(setup: KVSetup, fmt: KVFormat | None, rule: str | None, policy: KVPolicy | None) -> float:
    """Perplexity of the setup's windows (the last token of each window is only a target, so the cache holds
    window tokens); fmt None = the float32 reference forward."""
    attention = None if fmt is None else KVCacheAttention(fmt, rule, policy)
    return float(np.exp(token_nll(setup, attention).mean()))


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
    perplexity. The static curve is the best fill at each k of the format with the same weights (the envelope, so
    a policy is never
    compared with a weak fill); log perplexity is interpolated linearly between neighbouring k. None where the
    policy lies outside the curve."""
    for row in rows:
        if row["kind"] != "policy":
            continue
        best = {}
        for r in rows:
            if r["kind"] == "static" and r["format"] == row["format"] and r.get("weights") == row.get("weights"):
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
    log(f"weights {setup.weights}, float32 K/V (no cache): perplexity {reference:.3f}")
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
            row = {"kind": kind, "weights": setup.weights, "format": name, "fill": rule, "policy": policy.name,
                   "k": k, "perplexity": evaluate(setup, fmt, rule, policy)}
            row.update(traffic_row(shape, fmt, policy, activates))
            rows.append(row)
            log(f"[{len(rows)}] {setup.weights} {name} {rule:11s} {policy.name:36s} perplexity {row['perplexity']:10.3f}  "
                f"{row['dram_lines_read_per_token']:8.0f} lines/token  ({time.perf_counter() - began:.1f} s)")
    compare_with_static(rows)
    return {"text": setup.source, "windows": int(setup.batch.shape[0]), "window": int(setup.batch.shape[1] - 1),
            "tokens": int(setup.batch.shape[0] * (setup.batch.shape[1] - 1)), "weights": [setup.weights],
            "reference_perplexity": reference, "reference_perplexity_by_weights": {setup.weights: reference},
            "storage": {name: kv_format(name).describe() for name in formats}, "W": shape.W, "R": 1,
            "rows": rows, "seconds": time.perf_counter() - start}


def merge_results(results: list) -> dict:
    """One result of sweeps over the same text with different weights: rows in order, references per weights."""
    merged = dict(results[0])
    merged["rows"] = [row for result in results for row in result["rows"]]
    merged["weights"] = [w for result in results for w in result["weights"]]
    merged["reference_perplexity_by_weights"] = {w: p for result in results
                                                 for w, p in result["reference_perplexity_by_weights"].items()}
    merged["seconds"] = sum(result["seconds"] for result in results)
    return merged


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
        body.append([r.get("weights", WEIGHTS_REFERENCE), r["format"], r["fill"], r["policy"], ppl,
                     f"{reads:.0f}", opt(reads / full[r["format"]] if r["format"] in full else None, ".3f"),
                     f"{r['dram_lines_written_per_token']:.0f}", f"{r['link_lines_per_token']:.0f}",
                     f"{r['nj_per_token'] / 1e3:.1f}",
                     opt(r.get("static_perplexity_at_equal_traffic"), ".2f"),
                     opt(r.get("static_traffic_at_equal_perplexity"), ".0f")])
    headers = ["weights", "format", "fill", "KV precision", "perplexity", "DRAM rd/token", "of k=B", "DRAM wr/token",
               "link/token", "uJ/token", "static ppl @ =traffic", "static rd @ =ppl"]
    return text_table(headers, body, left={0, 1, 2, 3})


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
    parser.add_argument("--weights", default=WEIGHTS_REFERENCE, metavar="LIST",
                        help="comma list of the weights beside the cache, each swept in turn: reference (the "
                             "dequantized GGUF in float32, default) or policy:BUDGET[:FILE] (llm-policy's per-matrix "
                             "policy (a) at BUDGET bits/weight, INT8 read with that run's configuration per k; FILE "
                             "default docs/results/llm_policy.json), e.g. reference,policy:5.5")
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
    weights = [spec.strip() for spec in args.weights.split(",") if spec.strip()]
    if not weights or len(set(weights)) != len(weights):
        raise SmartquantError(f"--weights must list distinct weight settings, got {args.weights!r}")
    model = smollm2.load_smollm2()
    setups = [prepare(args.windows, args.window, args.text, model, spec) for spec in weights]   # bad specs fail now
    result = merge_results([run_kv_sweep(setup, formats, chosen_ks,
                                         {name: fills for name in formats} if fills else None,
                                         {} if args.no_policies else None, log) for setup in setups])
    references = "; ".join(f"weights {w}: {p:.3f}" for w, p in result["reference_perplexity_by_weights"].items())
    print(f"SmolLM2-135M-Instruct with its KV cache in a bit-plane region; perplexity on {result['text']}, "
          f"{result['tokens']} predicted tokens ({result['windows']} windows of {result['window']}); float32 K/V "
          f"(no cache): {references}.")
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
