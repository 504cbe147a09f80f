"""The block query between the read engine and the write path (docs/DEVICE.md §4), answered from flip-flops.

The read in the read engine's dispatch stage (its stage B) names a (region, block); the write path answers
`block_busy` while that block is gathered or landing, and a line of that block waits in `held`. Those answers
need equality compares of the query with the gathered block, the held write and every WriteTable entry. Made
from stage B's registers, the compares sat between stage B and dispatch (through `block_busy`) and between stage
B and the write path's join (the two worst paths of the 75 MHz build of 27ea368, fpga/README.md round 14).

So the read engine presents what stage B *loads* (`block_query_layout`: `load` is stage B's load enable, the
rest its D input), and each answering unit keeps:
- its own copy of the query (`TrackedQuery`: registers loaded beside stage B's, so they equal the query of the
  read in dispatch in every cycle), and
- per block it compares with, a flip-flop (or, for `held_named`, a 2:1 mux of two flip-flops) equal to "this
  block is the query's block" in every cycle
  (`TrackedQuery.names`), loaded from the compares of the values both sides hold next cycle: the query loaded
  or kept, and the block loaded or kept. The load enables only select among the compares (last, one mux), so
  the compares run in parallel with the dispatch and join decisions. No cycle changes.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Mux
from amaranth.lib import data

from smartquant.params import ControllerParams


def block_query_layout(params: ControllerParams) -> data.StructLayout:
    """What the read engine's stage B loads this cycle: `load` (it loads), `valid` (the read it loads is served
    from DRAM, so it asks), its region and block. The query of the read in dispatch is the last one loaded."""
    return data.StructLayout({
        "load": 1, "valid": 1, "region": params.region_index_bits, "block": params.line_bits,
    })


class TrackedQuery:
    """The query of the read in dispatch, as registers of the answering unit (`valid`, `region`, `block`), and
    the match flip-flops of `names`. Every register here and every (region, block) it tracks starts at 0, so
    every match flip-flop starts at 1 (equal)."""

    def __init__(self, m, params: ControllerParams, query, name: str):
        self.m = m
        self.query = query      # a block_query_layout view: what the read engine's stage B loads
        self.name = name
        self.valid = Signal(name=f"{name}_valid")
        self.region = Signal(params.region_index_bits, name=f"{name}_region")
        self.block = Signal(params.line_bits, name=f"{name}_block")
        with m.If(query.load):
            m.d.sync += [self.valid.eq(query.valid), self.region.eq(query.region), self.block.eq(query.block)]

    def loading_names(self, region, block):
        """(region, block) is the block of the query stage B loads this cycle (combinational)."""
        return (self.query.region == region) & (self.query.block == block)

    def current_names(self, region, block):
        """(region, block) is the block of the query held now (combinational, from this copy's registers)."""
        return (self.region == region) & (self.block == block)

    def names(self, name: str, region, block, loads, new_region, new_block, new_is_current=None,
              select_after: bool = False):
        """A flip-flop (with `select_after`, a 2:1 mux of flip-flops) equal, in every cycle, to (region, block)
        == the query's (region, block), where (region, block) are registers that take (new_region, new_block) in
        a cycle where `loads` is 1.
        `new_is_current`: (new_region, new_block) == the query held now, when the caller has it already (a
        match of `names`; it is then used in place of a compare).
        `select_after`: for a late `loads` (a pipeline's advance decision) whose user is not on a critical path
        itself: the answers for both outcomes (loaded, kept) are flip-flops beside a flip-flop of `loads`, and
        the result is their 2:1 mux after them. `loads` then reaches one flip-flop, not the compares' mux (the
        write path's `held_named`, the endpoint of the 75 MHz builds of timing round 20: its D mux sat by the
        read engine's query, far from the join that decides `loads`)."""
        if new_is_current is None:
            new_is_current = self.current_names(new_region, new_block)
        load = self.query.load
        if not select_after:
            matches = Signal(name=name, init=1)
            self.m.d.sync += matches.eq(Mux(loads, Mux(load, self.loading_names(new_region, new_block),
                                                       new_is_current),
                                            Mux(load, self.loading_names(region, block), matches)))
            return matches
        if_loaded = Signal(name=f"{name}_if_loaded", init=1)
        if_kept = Signal(name=f"{name}_if_kept", init=1)
        loaded = Signal(name=f"{name}_loaded")
        matches = Signal(name=name)
        self.m.d.comb += matches.eq(Mux(loaded, if_loaded, if_kept))
        self.m.d.sync += [
            if_loaded.eq(Mux(load, self.loading_names(new_region, new_block), new_is_current)),
            if_kept.eq(Mux(load, self.loading_names(region, block), matches)),
            loaded.eq(loads),
        ]
        return matches
