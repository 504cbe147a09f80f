"""GatherBuffer: the write path's gather buffer (weight-major lines of one block in, its plane lines out),
docs/DEVICE.md §4.

  join (one weight-major line: data, byte enables, j = line in block, B, R, the block) --> [B plane lines,
  their WSTRB, the lines' tags / LD-IDs] --> gathered (read by the write path's flush decision and AxiWriter)
  flush --> empties the buffer (a line joining in the same cycle starts the next block)

- Weight-major line j of a block (B-bit little-endian weights [j*W/B, (j+1)*W/B) of the block): plane p's slice
  is bit B-1-p of each of those weights. The transpose is fixed wiring per B in {2, 4, 8, 16} <= b_max, muxed by
  `join.log2_b`. Plane p's slice replicated B times is what line j adds to plane line p where the strobe picks
  copy j (bytes [j*W/8/B, (j+1)*W/8/B) of the plane line), so no shifter is needed.
- Byte enables: one plane byte holds 8 weights = one aligned B-byte group of the weight-major line; a group is
  written only when all its B enables are set. A partly enabled group is skipped (never half a weight, no
  read-modify-write); `partial_groups` counts those of the line on `join` (the wr_partial_groups event).
- A joining line is merged into the B plane lines under its byte mask (the mask bits are the plane bytes'
  clock enables); the block's WSTRB is the union of the lines' strobes, `poisoned` the OR of their poison
  bits; `count` lines have joined (their tags and LD-IDs in slots 0..count-1) and `full` is set when the B-th
  joins (a flag, so no compare of the count sits on the flush decision). The first line of a block (the buffer
  empty, or flushed in this cycle) sets its region, block, first plane line, B and R.
The write path decides which line joins and when the buffer is flushed (docs in hdl/engine/write_path.py).
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams, SUPPORTED_B
from smartquant.hdl.bits import popcount


def join_layout(params: ControllerParams) -> data.StructLayout:
    """One weight-major line joining (valid): its data and byte enables, `line_in_block` j, the block's B and R
    (log2), its first plane line, (region, block), and the write's tag, LD-ID and poison bit."""
    return data.StructLayout({
        "valid": 1, "data": params.data_width, "byte_enable": params.line_bytes, "line_in_block": 4,
        "log2_b": params.log2_b_bits, "log2_r": params.log2_r_bits, "first_line": params.line_bits,
        "region": params.region_index_bits, "block": params.line_bits,
        "tag": 16, "ld_id": 4, "poison": 1,
    })


def gathered_layout(params: ControllerParams) -> data.StructLayout:
    """The buffer's block: `count` lines joined (`full`: B of them), its B plane lines and their WSTRB."""
    G = params.b_max
    return data.StructLayout({
        "valid": 1, "full": 1, "count": range(G + 1), "poisoned": 1,
        "region": params.region_index_bits, "block": params.line_bits, "first_line": params.line_bits,
        "log2_b": params.log2_b_bits, "log2_r": params.log2_r_bits, "strobe": params.line_bytes,
        "planes": data.ArrayLayout(params.data_width, G),
        "tags": data.ArrayLayout(16, G), "ld_ids": data.ArrayLayout(4, G),
    })


class GatherBuffer(wiring.Component):
    """`join` (a line joins when valid), `flush` (the block leaves: empty from the next cycle unless a line
    joins), `gathered` (the registers), `partial_groups` (of the line on `join`, whether or not it joins),
    `starts_block` (the joining line starts a block)."""

    def __init__(self, params: ControllerParams):
        self.params = params
        super().__init__({
            "join": In(join_layout(params)),
            "flush": In(1),
            "gathered": Out(gathered_layout(params)),
            "partial_groups": Out(range(params.line_bytes + 1)),
            # the line on `join` starts a block (joins an empty buffer, or one flushed in this cycle): the
            # block's region and block take the line's
            "starts_block": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        W = p.data_width
        G = p.b_max
        line = self.join
        block = self.gathered

        # Weight-major transpose and strobes, fixed wiring per B, muxed by the line's B: plane p's slice,
        # replicated across a line (`plane_copies[p]`), is what line j adds to plane line p where WSTRB picks
        # copy j, so lines merge with byte masks only (no shifter).
        plane_copies = [Signal(W, name=f"plane{plane}_copies") for plane in range(G)]
        slice_strobe = Signal(p.line_bytes)
        with m.Switch(line.log2_b):
            for B in (B for B in SUPPORTED_B if B <= G):
                with m.Case(B.bit_length() - 1):
                    per_slice = W // B           # weights per weight-major line = bits per plane slice
                    n_groups = per_slice // 8    # plane bytes per slice = B-byte groups per line
                    for plane in range(B):
                        plane_slice = Cat(*(line.data[weight * B + B - 1 - plane] for weight in range(per_slice)))
                        m.d.comb += plane_copies[plane].eq(plane_slice.replicate(B))
                    groups = [line.byte_enable[g * B:(g + 1) * B] for g in range(n_groups)]
                    group_full = Cat(*(group.all() for group in groups))
                    group_partial = Cat(*(group.any() & ~group.all() for group in groups))
                    m.d.comb += [
                        slice_strobe.eq(Cat(*(group_full & (line.line_in_block == j).replicate(n_groups)
                                              for j in range(B)))),
                        self.partial_groups.eq(popcount(group_partial)),
                    ]

        # a joining line starts a new block when the buffer is empty (or leaves in this cycle)
        # The count, `full` and the slot a line takes are chosen between two values made from registers alone
        # (the line starts a block: 1, B = 1, slot 0; or it adds to the block: count + 1, `almost_full`, slot
        # `count`), so the flush decision (`empty_now`) is one select before them, not an add and a compare.
        empty_now = ~block.valid | self.flush
        m.d.comb += self.starts_block.eq(line.valid & empty_now)
        almost_full = Signal()   # the next line of the block makes it whole (count + 1 == B)
        m.d.comb += almost_full.eq(block.count + 1 == (Const(1, 5) << block.log2_b))
        with m.If(line.valid):
            m.d.sync += [
                block.valid.eq(1),
                block.count.eq(Mux(empty_now, 1, block.count + 1)),
                block.full.eq(Mux(empty_now, line.log2_b == 0, almost_full)),
                block.strobe.eq(Mux(empty_now, 0, block.strobe) | slice_strobe),
                block.poisoned.eq(Mux(empty_now, 0, block.poisoned) | line.poison),
            ]
            # a plane byte's strobe bit is its flip-flops' clock enable: no merge mux on the b_max x W bits
            # (a masked merge `(old & ~strobe) | (new & strobe)` cost a LUT4 per bit)
            for byte in range(p.line_bytes):
                with m.If(slice_strobe[byte]):
                    m.d.sync += [block.planes[plane].word_select(byte, 8).eq(
                        plane_copies[plane].word_select(byte, 8)) for plane in range(G)]
            for i in range(G):
                with m.If(Mux(empty_now, i == 0, block.count == i)):
                    m.d.sync += [block.tags[i].eq(line.tag), block.ld_ids[i].eq(line.ld_id)]
            with m.If(empty_now):
                m.d.sync += [block.region.eq(line.region), block.block.eq(line.block),
                             block.first_line.eq(line.first_line), block.log2_b.eq(line.log2_b),
                             block.log2_r.eq(line.log2_r)]
        with m.Elif(self.flush):
            m.d.sync += [block.valid.eq(0), block.full.eq(0)]
        return m
