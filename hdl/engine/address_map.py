"""Host address decode (docs/DEVICE.md §2): message address -> region, view, precision k, block, line.

`decode_address` is a combinational helper shared by the read engine and the write path: it adds logic to the
caller's module and returns a `data.View` of `DecodeLayout`. `plane_line` computes the absolute DRAM line of
(region base, superblock, plane, slot) = base + s*R*B + p*R + r with shifts only (B and R are powers of two).

Decoded fields (all views):
- region_hit: an enabled region holds the line and no address bit above the map is set (the view is not
  checked: the write path counts a view 6/7 write into a region as `wr_dropped`, not `nxm_writes`).
- mapped: region_hit, view 0..5, and for packed views (2, 4) line j < k (lines j >= k of a packed slot are
  unmapped). When k is illegal the j < k test is skipped: such reads answer as illegal k either way.
- k: effective precision (views 2, 3: address; 4, 5: region default; 0, 1: B); k_legal: 1 <= k <= B.
- block: block index in the region (views 1..5: L // B; raw view: s*R + r of the raw line's (s, p, r), the
  block whose poison a raw read reports). line_in_slot: j = L % B (views 1..5).
- raw_line: absolute DRAM line base_line + L (what a raw read or write touches).
- superblock / slot_r: s = block // R, r = block % R. plane: p of a raw line (raw view only).
- region fields copied out: log2_b, log2_r, bf16, midpoint, base_line.
A read is answered from DRAM only when mapped & k_legal; anything else is the NXM/poison response.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Cat, Const, Mux
from amaranth.lib import data

from smartquant.params import ControllerParams, View

VIEW_FIELD_BITS = 3
K_FIELD_BITS = 5


def line_bits(params: ControllerParams) -> int:
    """Width of a DRAM line index (device capacity in lines)."""
    return params.dram_addr_bits - params.line_offset_bits


def region_index_bits(params: ControllerParams) -> int:
    return max(1, (params.n_regions - 1).bit_length())


class DecodeLayout(data.StructLayout):
    def __init__(self, params: ControllerParams):
        lb = line_bits(params)
        super().__init__({
            "region_hit": 1,
            "mapped": 1,
            "region": region_index_bits(params),
            "view": VIEW_FIELD_BITS,
            "k": K_FIELD_BITS,
            "k_legal": 1,
            "block": lb,
            "line_in_slot": 4,
            "raw_line": lb,
            "superblock": lb,
            "slot_r": 6,
            "plane": 4,
            "log2_b": 3,
            "log2_r": 3,
            "bf16": 1,
            "midpoint": 1,
            "base_line": lb,
        })


def is_packed_view(view) -> "Value":
    return (view == View.PACKED_K) | (view == View.PACKED_DEFAULT)


def is_block_view(view) -> "Value":
    """Views 1..5: served from the block buffer (or written through the transpose)."""
    return (view >= View.WEIGHT_MAJOR) & (view <= View.EXPANDED_DEFAULT)


def plane_line(base_line, superblock, plane, slot_r, log2_b, log2_r, width: int):
    """Absolute DRAM line of plane p of block (s, r): base + s*R*B + p*R + r (r < R, so p*R + r is an OR)."""
    run_offset = (plane << log2_r) | slot_r
    return (base_line + (superblock << (log2_r + log2_b)) + run_offset)[:width]


def decode_address(m, params: ControllerParams, address, regions) -> data.View:
    """Decode a message address (HPA[51:line_offset_bits]) against the region table.

    `regions` is a View of ArrayLayout(region_entry_layout(params), n_regions). Returns a View of
    DecodeLayout(params) driven combinationally in `m.d.comb`.
    """
    lb = line_bits(params)
    address = address.as_value() if hasattr(address, "as_value") else address
    assert len(address) == params.message_address_bits
    line = address[:lb]
    view = address[lb:lb + VIEW_FIELD_BITS]
    k_field = address[lb + VIEW_FIELD_BITS:lb + VIEW_FIELD_BITS + K_FIELD_BITS]
    high = address[lb + VIEW_FIELD_BITS + K_FIELD_BITS:]

    out = Signal(DecodeLayout(params))
    # span = n_superblocks << (log2_r + log2_b) can exceed the line width: compare with headroom.
    hits = []
    for i in range(params.n_regions):
        entry = regions[i]
        span = entry.n_superblocks << (entry.log2_r + entry.log2_b)
        hit = Signal(name=f"region{i}_hit")
        m.d.comb += hit.eq(entry.enable & (line >= entry.base_line) & ((line - entry.base_line)[:lb + 1] < span))
        hits.append(hit)

    # Lowest-numbered region wins on overlap: scan from the highest so the lowest assignment lands last.
    region = Signal(region_index_bits(params))
    for i in reversed(range(params.n_regions)):
        with m.If(hits[i]):
            m.d.comb += region.eq(i)
    any_hit = Signal()
    m.d.comb += any_hit.eq(Cat(*hits).any())
    entry = regions[region]

    log2_b = entry.log2_b
    log2_r = entry.log2_r
    local = Signal(lb)   # L: line relative to the region base
    m.d.comb += local.eq(line - entry.base_line)

    b_value = Signal(5)
    m.d.comb += b_value.eq(Const(1, 5) << log2_b)
    k = Signal(K_FIELD_BITS)
    with m.Switch(view):
        with m.Case(View.PACKED_K, View.EXPANDED_K):
            m.d.comb += k.eq(k_field)
        with m.Case(View.PACKED_DEFAULT, View.EXPANDED_DEFAULT):
            m.d.comb += k.eq(entry.default_k)
        with m.Default():
            m.d.comb += k.eq(b_value)
    k_legal = Signal()
    m.d.comb += k_legal.eq((k != 0) & (k <= b_value))

    slot_block = Signal(lb)   # L // B (views 1..5)
    line_in_slot = Signal(4)  # L % B
    m.d.comb += [
        slot_block.eq(local >> log2_b),
        line_in_slot.eq((local & ((Const(1, lb) << log2_b) - 1))[:4]),
    ]
    # raw view: L = s*R*B + p*R + r
    raw_superblock = Signal(lb)
    raw_plane = Signal(4)
    raw_slot = Signal(6)
    m.d.comb += [
        raw_superblock.eq(local >> (log2_r + log2_b)),
        raw_plane.eq(((local >> log2_r) & ((Const(1, lb) << log2_b) - 1))[:4]),
        raw_slot.eq((local & ((Const(1, lb) << log2_r) - 1))[:6]),
    ]

    is_raw = view == View.RAW
    region_hit = any_hit & (high == 0)
    view_legal = view <= View.EXPANDED_DEFAULT
    packed_line_ok = ~is_packed_view(view) | ~k_legal | (line_in_slot < k)

    m.d.comb += [
        out.region_hit.eq(region_hit),
        out.mapped.eq(region_hit & view_legal & packed_line_ok),
        out.region.eq(region),
        out.view.eq(view),
        out.k.eq(k),
        out.k_legal.eq(k_legal),
        out.raw_line.eq(line),
        out.log2_b.eq(log2_b),
        out.log2_r.eq(log2_r),
        out.bf16.eq(entry.bf16),
        out.midpoint.eq(entry.midpoint),
        out.base_line.eq(entry.base_line),
    ]
    with m.If(is_raw):
        m.d.comb += [
            out.block.eq((raw_superblock << log2_r) | raw_slot),
            out.superblock.eq(raw_superblock),
            out.slot_r.eq(raw_slot),
            out.plane.eq(raw_plane),
            out.line_in_slot.eq(0),
        ]
    with m.Else():
        m.d.comb += [
            out.block.eq(slot_block),
            out.superblock.eq(slot_block >> log2_r),
            out.slot_r.eq((slot_block & ((Const(1, lb) << log2_r) - 1))[:6]),
            out.plane.eq(0),
            out.line_in_slot.eq(line_in_slot),
        ]
    return out
