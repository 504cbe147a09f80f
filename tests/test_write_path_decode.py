"""WritePath's own decode shortcuts against address_map (timing round 11c):

- held_block_of (held's block: L >> log2 B per region, the raw view's low log2 R bits taken from L, selected by
  the match) equals address_map.match_block, the full decode per region, for every view;
- first_plane_line (plane line 0 of a weight-major block from the block and its region entry) equals
  address_map.plane_line of the decode (base, superblock, plane 0, slot_r).

Random region tables (enabled or not, any base and end, log2 B 1..4, log2 R 0..6) and addresses, most of them
inside a region, on the board's W=128 b8 parameters.
"""
from __future__ import annotations

import random

from amaranth.hdl import Module, Signal, Const
from amaranth.lib import data
from amaranth.sim import Simulator

from smartquant.fpga.system import board_params
from smartquant.hdl.csr.layouts import region_entry_layout
from smartquant.hdl.engine.address_map import (
    decode_in_region, match_block, match_region, plane_line, region_locals, split_address,
)
from smartquant.hdl.engine.write_path import first_plane_line, held_block_of
from smartquant.params import View

PARAMS = board_params(128, 8, 64 * 1024)


def test_held_block_and_first_plane_line_match_the_decode():
    p = PARAMS
    lb = p.line_bits
    m = Module()
    regions = Signal(data.ArrayLayout(region_entry_layout(p), p.n_regions))
    address = Signal(p.message_address_bits)
    line, view, _, _ = split_address(p, address)
    locals_ = region_locals(m, p, line, regions)
    onehot, region, entry, local = match_region(m, p, line, regions, locals_)
    decoded = decode_in_region(m, p, address, onehot.any(), region, entry, local)
    reference_block = Signal(lb)
    reference_first = Signal(lb)
    m.d.comb += [
        reference_block.eq(match_block(m, p, address, onehot, regions, locals_)),
        reference_first.eq(plane_line(decoded.base_line, decoded.superblock, Const(0, 4), decoded.slot_r,
                                      decoded.log2_b, decoded.log2_r, lb)),
    ]
    block = held_block_of(m, p, locals_, onehot, view == View.RAW, regions)
    first = first_plane_line(m, lb, entry.base_line, block, entry.log2_b, entry.log2_r)
    rng = random.Random(11)
    seen = {"hits": 0, "raw": 0, "weight_major": 0}

    async def bench(ctx):
        for case in range(1500):
            spans = []
            for i in range(p.n_regions):
                base = rng.randrange(1 << lb)
                end = min((1 << lb) - 1, base + rng.randrange(1, 1 << lb))
                spans.append((base, end))
                for name, value in (("enable", rng.random() < 0.8), ("base_line", base), ("end_line", end),
                                    ("log2_b", rng.randrange(1, 5)), ("log2_r", rng.randrange(0, 7))):
                    ctx.set(getattr(regions[i], name), value)
            v = rng.choice([View.RAW, View.RAW, View.WEIGHT_MAJOR, View.WEIGHT_MAJOR, 2, 3, 5])
            base, end = rng.choice(spans)
            in_region = rng.randrange(base, end) if end > base and rng.random() < 0.9 else rng.randrange(1 << lb)
            ctx.set(address, (rng.randrange(1 << p.k_bits) << (lb + p.view_bits)) | (int(v) << lb) | in_region)
            hit = ctx.get(onehot) != 0
            assert ctx.get(block) == ctx.get(reference_block), (case, v, hit)
            if hit:
                seen["hits"] += 1
                seen["raw" if v == View.RAW else "weight_major"] += 1
                if v != View.RAW:    # plane line 0 is the weight-major views' (the write path's join)
                    assert ctx.get(first) == ctx.get(reference_first), (case, v)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen["hits"] > 1000 and seen["raw"] > 300 and seen["weight_major"] > 300, seen
