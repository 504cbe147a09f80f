"""Poison table: the blocks written with poison = 1 (docs/DEVICE.md §3, §4).

A mapped write with poison = 1 enters its (region, block) here; a read of a block in the table returns poison = 1.
The table holds `poison_entries` distinct blocks: inserting a block already present uses no entry; inserting a new
block into a full table loses that poison, but never silently: it sets the sticky `overflow` flag
(STATUS.poison_overflow) and pulses `lost` (for tests and debug). The listed blocks stay poisoned and no other read
is (an overflow used to poison every read of the device: a storm of memory failures on a host). `clear`
(CONTROL.clear_poison or a REGION_CONFIG write, pulsed by the CSR block) empties the table and drops the flag.
Writes never remove entries.

Ports:
    insert         In  {valid, region, block}: one insertion per cycle, from the write path
    query_region   In  region index of a read
    query_block    In  block index (in the region) of a read
    query_poisoned Out combinational: the queried block is in the table
    overflow       Out sticky overflow flag (STATUS.poison_overflow): a poison was lost since the last clear
    lost           Out one-cycle pulse: an insertion found the table full (for tests and debug; no counter, as
                       how many offers a full table refuses depends on the order they arrive in, DEVICE.md §4)
    clear          In  one-cycle pulse; wins over an insertion in the same cycle (clears are host actions
                       between tensors, the host does not race them against its own poisoned writes)
    count          Out entries in use (for tests and debug)
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams
from smartquant.hdl.engine.address_map import line_bits, region_index_bits


def block_event_layout(params: ControllerParams) -> data.StructLayout:
    """A one-cycle event naming one block of one region (poison insert, block-buffer invalidate)."""
    return data.StructLayout({
        "valid": 1,
        "region": region_index_bits(params),
        "block": line_bits(params),
    })


class PoisonTable(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        if params.poison_entries < 1:
            raise ValueError(f"poison_entries must be >= 1, got {params.poison_entries}")
        super().__init__({
            "insert": In(block_event_layout(params)),
            "query_region": In(region_index_bits(params)),
            "query_block": In(line_bits(params)),
            "query_poisoned": Out(1),
            "overflow": Out(1),
            "lost": Out(1),
            "clear": In(1),
            "count": Out(range(params.poison_entries + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.poison_entries

        used = [Signal(name=f"entry{i}_used") for i in range(n)]
        regions = [Signal(region_index_bits(p), name=f"entry{i}_region") for i in range(n)]
        blocks = [Signal(line_bits(p), name=f"entry{i}_block") for i in range(n)]
        count = Signal(range(n + 1))
        overflow = Signal()
        m.d.comb += [self.count.eq(count), self.overflow.eq(overflow)]

        def holds(region, block):
            return Cat(*(used[i] & (regions[i] == region) & (blocks[i] == block) for i in range(n))).any()

        m.d.comb += self.query_poisoned.eq(holds(self.query_region, self.query_block))

        already_present = Signal()
        m.d.comb += already_present.eq(holds(self.insert.region, self.insert.block))

        with m.If(self.clear):
            m.d.sync += [count.eq(0), overflow.eq(0)]
            m.d.sync += [u.eq(0) for u in used]
        with m.Elif(self.insert.valid & ~already_present):
            # Entries fill in order and are only ever emptied all together, so `count` is the next free one.
            with m.If(count == n):
                m.d.sync += overflow.eq(1)
                m.d.comb += self.lost.eq(1)
            with m.Else():
                m.d.sync += count.eq(count + 1)
                with m.Switch(count):
                    for i in range(n):
                        with m.Case(i):
                            m.d.sync += [used[i].eq(1), regions[i].eq(self.insert.region),
                                         blocks[i].eq(self.insert.block)]
        return m
