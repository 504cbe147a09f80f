"""Host address decode (docs/DEVICE.md §2): message address -> region, view, precision k, block, line.

`decode_address` is a combinational helper shared by the read engine and the write path: it adds logic to the
caller's module and returns a `data.View` of `DecodeLayout`. `plane_line` computes the absolute DRAM line of
(region base, block s*R + r, plane) = base + s*R*B + p*R + r with shifts only (B and R are powers of two).

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

The region match compares the line with each region's base_line and end_line (the first line past the region,
computed by the CSR block when the region's registers are written), so no shift or subtract sits before it.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Const, Mux, Value
from amaranth.lib import data

from smartquant.params import ControllerParams, View
from smartquant.hdl.bits import or_all

class DecodeLayout(data.StructLayout):
    def __init__(self, params: ControllerParams):
        lb = params.line_bits
        super().__init__({
            "region_hit": 1,
            "mapped": 1,
            "region": params.region_index_bits,
            "view": params.view_bits,
            "k": params.k_bits,
            "k_legal": 1,
            "block": lb,
            "line_in_slot": 4,
            "raw_line": lb,
            "superblock": lb,
            "slot_r": 6,
            "plane": 4,
            "log2_b": params.log2_b_bits,
            "log2_r": params.log2_r_bits,
            "bf16": 1,
            "midpoint": 1,
            "base_line": lb,
        })


def is_packed_view(view) -> Value:
    return (view == View.PACKED_K) | (view == View.PACKED_DEFAULT)


def is_block_view(view) -> Value:
    """Views 1..5: served from the block buffer (or written through the transpose)."""
    return (view >= View.WEIGHT_MAJOR) & (view <= View.EXPANDED_DEFAULT)


def plane_line(base_line, block, plane, log2_b, log2_r, width: int):
    """Absolute DRAM line of plane p of block b = s*R + r: base + s*R*B + p*R + r. The block's bits above R move up
    by log2 B (s*R*B) and its bits below R stay (r < R, so p*R + r is an OR): one shift by log2 B, not a shift of
    s = b >> log2 R by log2 R + log2 B."""
    r_mask = ((Const(1, width) << log2_r) - 1)[:width]
    return (base_line + ((block & ~r_mask) << log2_b) + ((plane << log2_r) | (block & r_mask)))[:width]


def split_address(params: ControllerParams, address):
    """(line, view, k field, high bits) of a message address (HPA[51:line_offset_bits])."""
    lb = params.line_bits
    address = address.as_value() if hasattr(address, "as_value") else address
    assert len(address) == params.message_address_bits
    return (address[:lb], address[lb:lb + params.view_bits],
            address[lb + params.view_bits:lb + params.view_bits + params.k_bits],
            address[lb + params.view_bits + params.k_bits:])


def region_hits(m, params: ControllerParams, line, regions) -> Signal:
    """One-hot region select: bit i is set when region i is enabled, holds `line` (base_line <= line <
    end_line, the end precomputed by the CSR block) and no lower-numbered region does (lowest wins)."""
    n = params.n_regions
    hits = Signal(n)
    for i in range(n):
        entry = regions[i]
        m.d.comb += hits[i].eq(entry.enable & (line >= entry.base_line) & (line < entry.end_line))
    onehot = Signal(n)
    m.d.comb += onehot.eq(hits & ~(hits - 1))   # the lowest set bit
    return onehot


def select_region(m, params: ControllerParams, onehot, regions):
    """(region index, the region's entry) of a one-hot select, as an AND-OR of the entries (no priority chain)."""
    entry = Signal(regions.shape().elem_shape)
    index = Signal(params.region_index_bits)
    entry_bits = len(entry.as_value())
    m.d.comb += [
        entry.eq(or_all([regions[i].as_value() & onehot[i].replicate(entry_bits) for i in range(params.n_regions)])),
        index.eq(or_all([Const(i, len(index)) & onehot[i].replicate(len(index)) for i in range(params.n_regions)])),
    ]
    return index, entry


def match_region(m, params: ControllerParams, line, regions, locals_=None):
    """(one-hot region match, region index, the region's entry, L = line - base_line) of a line, selected by the
    one-hot match: what a pipeline registers before decode_in_region (the compares, the per-region subtracts
    and the AND-OR selects run side by side, with no priority chain). `locals_` are region_locals of the same
    line when the caller needs them too (match_block), so the subtracts are built once."""
    lb = params.line_bits
    if locals_ is None:
        locals_ = region_locals(m, params, line, regions)
    onehot = region_hits(m, params, line, regions)
    region, entry = select_region(m, params, onehot, regions)
    local = Signal(lb)
    m.d.comb += local.eq(or_all([region_local & onehot[i].replicate(lb) for i, region_local in enumerate(locals_)]))
    return onehot, region, entry, local


def region_locals(m, params: ControllerParams, line, regions) -> list[Signal]:
    """L = line - base_line under every region, side by side (the one-hot match selects one of them)."""
    lb = params.line_bits
    locals_ = []
    for i in range(params.n_regions):
        local = Signal(lb, name=f"region{i}_local")
        m.d.comb += local.eq((line - regions[i].base_line)[:lb])
        locals_.append(local)
    return locals_


def match_block(m, params: ControllerParams, address, onehot, regions, locals_):
    """DecodeLayout.block of a message address under the region its one-hot match selects, computed under every
    region side by side (beside the region compares) and selected by the match, so a register can take the block
    together with the match (the write path's `held`: its join / flush decision then compares registers only).
    `locals_`: region_locals of the address's line, shared with match_region. Per region one shift: L >> log2 B
    (views 1..5), and for the raw view its low log2 R bits replaced by L's (raw_block)."""
    lb = params.line_bits
    raw = split_address(params, address)[1] == View.RAW
    blocks = []
    for i, local in enumerate(locals_):
        block = Signal(lb, name=f"region{i}_block")
        m.d.comb += block.eq(Mux(raw, raw_block(local, regions[i].log2_b, regions[i].log2_r),
                                 local >> regions[i].log2_b))
        blocks.append(block & onehot[i].replicate(lb))
    return or_all(blocks)


def view_k_from_field(view) -> Value:
    """Views 2 and 3 take k from the address's k field."""
    return (view == View.PACKED_K) | (view == View.EXPANDED_K)


def view_k_from_default(view) -> Value:
    """Views 4 and 5 take the region's default k."""
    return (view == View.PACKED_DEFAULT) | (view == View.EXPANDED_DEFAULT)


def effective_k(view, k_field, default_k, log2_b, k_bits: int):
    """Precision k of a read (DecodeLayout.k): the address's k field (views 2, 3), the region default (4, 5),
    else B."""
    return Mux(view_k_from_field(view), k_field,
               Mux(view_k_from_default(view), default_k, (Const(1, 5) << log2_b)[:k_bits]))


def early_decode_layout(params: ControllerParams) -> data.StructLayout:
    """What match_early_decode computes beside the region match (DecodeLayout's fields of the same names)."""
    return data.StructLayout({"block": params.line_bits, "k": params.k_bits, "k_legal": 1, "line_in_slot": 4})


def match_early_decode(m, params: ControllerParams, address, onehot, regions, locals_) -> data.View:
    """DecodeLayout.block, k, k_legal and line_in_slot of a message address under the region its one-hot match
    selects, each computed under every region side by side (beside the region compares) and selected by the
    match, so a pipeline register can take them with the match and decode_in_region (given them as `early`)
    starts its block-key, k and packed-line tests at registers. All 0 when no region holds the line (such a
    read is never answered from DRAM). `locals_`: region_locals of the address's line."""
    _, view, k_field, _ = split_address(params, address)
    k, k_legal, line_in_slot = [], [], []
    for i, local in enumerate(locals_):
        entry = regions[i]
        region_k = Signal(params.k_bits, name=f"region{i}_k")
        m.d.comb += region_k.eq(effective_k(view, k_field, entry.default_k, entry.log2_b, params.k_bits))
        k.append(region_k & onehot[i].replicate(params.k_bits))
        # legality per source of k (the address's field, the region's default, B: always legal), then chosen
        # by the view, rather than a test of the chosen k: the default's test starts at the CSR registers
        region_k_legal = Mux(view_k_from_field(view), k_is_legal(k_field, entry.log2_b),
                             Mux(view_k_from_default(view), k_is_legal(entry.default_k, entry.log2_b), 1))
        k_legal.append(region_k_legal & onehot[i])
        line_in_slot.append(line_of_slot(local, entry.log2_b) & onehot[i].replicate(4))
    early = Signal(early_decode_layout(params))
    m.d.comb += [
        early.block.eq(match_block(m, params, address, onehot, regions, locals_)),
        early.k.eq(or_all(k)),
        early.k_legal.eq(or_all(k_legal)),
        early.line_in_slot.eq(or_all(line_in_slot)),
    ]
    return early


def k_is_legal(k, log2_b) -> Value:
    """DecodeLayout.k_legal: 1 <= k <= B."""
    return (k != 0) & (k <= (Const(1, 5) << log2_b))


def line_of_slot(local, log2_b) -> Value:
    """DecodeLayout.line_in_slot of views 1..5: j = L % B."""
    return (local & ((Const(1, len(local)) << log2_b) - 1))[:4]


def raw_block(local, log2_b, log2_r):
    """The block s*R + r a raw line L = s*R*B + p*R + r belongs to: L >> log2 B is s*R plus a value below R (p*R + r
    < R*B), so its low log2 R bits, replaced by L's (r), give s*R + r: one shift by log2 B and a mask, not a shift
    by log2 R + log2 B and a shift back."""
    width = len(local)
    r_mask = ((Const(1, width) << log2_r) - 1)[:width]
    return ((local >> log2_b) & ~r_mask) | (local & r_mask)


def decode_in_region(m, params: ControllerParams, address, any_hit, region, entry, local,
                     early=None) -> data.View:
    """The decode of DecodeLayout once the region is known: `any_hit` (a region holds the line), its index
    `region`, its `entry` and `local` = L, the line relative to the region's base. `early`, when given, is
    match_early_decode's View (block, k, k_legal, line_in_slot computed beside the match and registered)."""
    lb = params.line_bits
    line, view, k_field, high = split_address(params, address)
    out = Signal(DecodeLayout(params))
    log2_b = entry.log2_b
    log2_r = entry.log2_r

    k = Signal(params.k_bits)
    k_legal = Signal()
    if early is None:
        m.d.comb += [
            k.eq(effective_k(view, k_field, entry.default_k, log2_b, params.k_bits)),
            k_legal.eq(k_is_legal(k, log2_b)),
        ]
    else:
        m.d.comb += [k.eq(early.k), k_legal.eq(early.k_legal)]

    slot_block = Signal(lb)   # L // B (views 1..5)
    line_in_slot = Signal(4)  # L % B
    m.d.comb += [
        slot_block.eq(local >> log2_b),
        line_in_slot.eq(line_of_slot(local, log2_b) if early is None else early.line_in_slot),
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
    if early is not None:
        m.d.comb += out.block.eq(early.block)
    with m.If(is_raw):
        if early is None:
            m.d.comb += out.block.eq(raw_block(local, log2_b, log2_r))
        m.d.comb += [
            out.superblock.eq(raw_superblock),
            out.slot_r.eq(raw_slot),
            out.plane.eq(raw_plane),
            out.line_in_slot.eq(0),
        ]
    with m.Else():
        if early is None:
            m.d.comb += out.block.eq(slot_block)
        m.d.comb += [
            out.superblock.eq(slot_block >> log2_r),
            out.slot_r.eq((slot_block & ((Const(1, lb) << log2_r) - 1))[:6]),
            out.plane.eq(0),
            out.line_in_slot.eq(line_in_slot),
        ]
    return out


def decode_address(m, params: ControllerParams, address, regions) -> data.View:
    """Decode a message address (HPA[51:line_offset_bits]) against the region table, in one cycle.

    `regions` is a View of ArrayLayout(region_entry_layout(params), n_regions). Returns a View of
    DecodeLayout(params) driven combinationally in `m.d.comb`. (The read engine splits the same steps over
    pipeline stages: region_hits, then select_region and decode_in_region.)
    """
    lb = params.line_bits
    line = split_address(params, address)[0]
    onehot = region_hits(m, params, line, regions)
    region, entry = select_region(m, params, onehot, regions)
    local = Signal(lb)   # L: line relative to the region base
    m.d.comb += local.eq(line - entry.base_line)
    return decode_in_region(m, params, address, onehot.any(), region, entry, local)
