"""Poison list: poisoned DRAM lines, as records of up to 16 lines (docs/DEVICE.md §4 "Poison").

A record (first line F, log2 stride s, 16-bit mask) holds the lines F + (q << s) for every set bit q of the
mask (line numbers modulo the line-address space). A poisoned raw write or a CSR inject makes a one-line record
(X, 0, 1); a poisoned weight-major write or a failed write burst of a block one record of the block's B plane
lines (plane-0 line, log2 R, B ones): one record however many lines a write poisons, one insert per cycle.

- `query`: a set of lines {first + (p << log2_stride) : p < count} (a raw read: its line; a block read: its k
  plane lines); `query_hit` (combinational) says whether a record holds any of them.
- `clear`: drop such a set of lines from every record (a write that covers a line whole, a CSR clear); a record
  left with an empty mask is free.
- `insert`: a record; merged (mask OR) into a record with the same (F, s), else written into the lowest free
  record; a full list does not take it: sticky `overflow` (STATUS.poison_overflow) and a `lost` pulse. Only
  listed lines stay poisoned (never a device-wide poison storm). A clear and an insert in the same cycle act in
  that order (a flush's clear of its block comes before the next block's poisoned line, as in RwD order).
- `clear_all` (CONTROL.clear_poison) empties the list and drops the flag; it wins over both.
- `read_index` / `read_record`: record i for the CSR block (POISON_LIST_*), `count` records in use.

The set test compares each record bit q's line with the set: t = (F + (q << s) - first) mod 2^lines must be
p << log2_stride with p < count. A set spans less than 1024 lines (count <= 16, stride <= 64), so only the
low 11 bits of first - F take part in the adds; its high bits must be all 0 or all 1 (see `_held_bits`).
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux, signed
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams
from smartquant.hdl.engine.address_map import line_bits, region_index_bits

MASK_BITS = 16          # lines a record names (b_max <= 16)
STRIDE_BITS = 3         # log2 stride 0..6 (plane runs R up to 64)
COUNT_BITS = 5          # lines in a set, 1..16
WINDOW_BITS = 11        # a set and a record each span less than 2**10 lines


def block_event_layout(params: ControllerParams) -> data.StructLayout:
    """A one-cycle event naming one block of one region (block-buffer invalidate)."""
    return data.StructLayout({
        "valid": 1,
        "region": region_index_bits(params),
        "block": line_bits(params),
    })


def poison_record_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"first": line_bits(params), "log2_stride": STRIDE_BITS, "mask": MASK_BITS})


def poison_insert_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"valid": 1, "record": poison_record_layout(params)})


def line_set_layout(params: ControllerParams) -> data.StructLayout:
    """The lines first + (p << log2_stride), p < count."""
    return data.StructLayout({"first": line_bits(params), "log2_stride": STRIDE_BITS, "count": COUNT_BITS})


def line_set_event_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"valid": 1, "lines": line_set_layout(params)})


class PoisonList(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        if params.poison_entries < 1:
            raise ValueError(f"poison_entries must be >= 1, got {params.poison_entries}")
        n = params.poison_entries
        super().__init__({
            "insert": In(poison_insert_layout(params)),
            "clear": In(line_set_event_layout(params)),
            "clear_all": In(1),
            "query": In(line_set_layout(params)),
            "query_hit": Out(1),
            "read_index": In(range(max(2, n))),
            "read_valid": Out(1),
            "read_record": Out(poison_record_layout(params)),
            "overflow": Out(1),
            "lost": Out(1),
            "count": Out(range(n + 1)),
        })

    def _held_bits(self, m, record, lines, name: str) -> Signal:
        """Bit q set when record bit q is set and its line is in the set `lines`."""
        lb = line_bits(self.params)
        held = Signal(MASK_BITS, name=name)
        offset = Signal(lb, name=f"{name}_offset")        # first - F (mod 2^lb)
        m.d.comb += offset.eq(lines.first - record.first)
        low_bits = min(WINDOW_BITS, lb)
        low = offset[:low_bits]
        if lb > WINDOW_BITS:
            high = offset[WINDOW_BITS:]
            high_zero, high_ones = high == 0, high.all()
        else:
            high_zero = high_ones = None
        limit = Signal(WINDOW_BITS + 1, name=f"{name}_limit")   # count << log2_stride
        align = Signal(WINDOW_BITS, name=f"{name}_align")       # (1 << log2_stride) - 1
        m.d.comb += [limit.eq(lines.count << lines.log2_stride),
                     align.eq((Const(1, WINDOW_BITS) << lines.log2_stride) - 1)]
        for q in range(MASK_BITS):
            # t = (q << s) - (first - F): the line's distance above `first`
            difference = Signal(signed(WINDOW_BITS + 2), name=f"{name}_t{q}")
            m.d.comb += difference.eq((Const(q, 4) << record.log2_stride) - low)
            distance = difference[:WINDOW_BITS] if lb > WINDOW_BITS else difference[:lb]
            if lb > WINDOW_BITS:
                # t mod 2^lb is below 2^11 only when the high bits of first - F absorb the borrow of the low add
                in_window = Mux(difference < 0, high_ones, high_zero)
            else:
                in_window = 1
            m.d.comb += held[q].eq(record.mask[q] & in_window & (distance < limit)
                                   & ((distance & align[:len(distance)]) == 0))
        return held

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.poison_entries
        layout = poison_record_layout(p)
        records = [Signal(layout, name=f"record{i}") for i in range(n)]
        used = [Signal(name=f"record{i}_used") for i in range(n)]
        overflow = Signal()
        for i in range(n):
            m.d.comb += used[i].eq(records[i].mask != 0)
        m.d.comb += [self.overflow.eq(overflow), self.count.eq(sum(used))]

        # query: any record line in the set
        query_held = [self._held_bits(m, records[i], self.query, f"query{i}") for i in range(n)]
        m.d.comb += self.query_hit.eq(Cat(*(held.any() for held in query_held)).any())

        # clear, then insert, on the masks as the clear leaves them
        after_clear = [Signal(MASK_BITS, name=f"record{i}_after_clear") for i in range(n)]
        for i in range(n):
            cleared = self._held_bits(m, records[i], self.clear.lines, f"clear{i}")
            m.d.comb += after_clear[i].eq(Mux(self.clear.valid, records[i].mask & ~cleared, records[i].mask))
        new = self.insert.record
        same = [Signal(name=f"record{i}_same") for i in range(n)]
        for i in range(n):
            m.d.comb += same[i].eq((after_clear[i] != 0) & (records[i].first == new.first)
                                   & (records[i].log2_stride == new.log2_stride))
        merge = Cat(*same).any()
        free = [Signal(name=f"record{i}_free_now") for i in range(n)]
        for i in range(n):
            m.d.comb += free[i].eq(after_clear[i] == 0)
        any_free = Cat(*free).any()
        taken = Signal(range(max(2, n)))    # the lowest free record
        for i in reversed(range(n)):
            with m.If(free[i]):
                m.d.comb += taken.eq(i)

        with m.If(self.clear_all):
            m.d.sync += overflow.eq(0)
            m.d.sync += [record.mask.eq(0) for record in records]
        with m.Else():
            for i in range(n):
                m.d.sync += records[i].mask.eq(after_clear[i])
            with m.If(self.insert.valid):
                with m.If(merge):
                    for i in range(n):
                        with m.If(same[i]):
                            m.d.sync += records[i].mask.eq(after_clear[i] | new.mask)
                with m.Elif(any_free):
                    for i in range(n):
                        with m.If(taken == i):
                            m.d.sync += records[i].eq(new)
                with m.Else():
                    m.d.sync += overflow.eq(1)
                    m.d.comb += self.lost.eq(1)

        # CSR read port
        with m.Switch(self.read_index):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += [self.read_record.eq(records[i]), self.read_valid.eq(used[i])]
        return m
