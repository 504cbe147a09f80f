"""Poison list: poisoned DRAM lines, as records of up to 16 lines (docs/DEVICE.md §4 "Poison").

A record (first line F, log2 stride s, 16-bit mask) holds the lines F + (q << s) for every set bit q of the
mask (line numbers modulo the line-address space). A poisoned raw write or a CSR inject makes a one-line record
(X, 0, 1); a poisoned weight-major write or a failed write burst of a block one record of the block's B plane
lines (plane-0 line, log2 R, B ones): one record however many lines a write poisons, one insert per cycle.

- `query`: a set of lines {first + (p << log2_stride) : p < count} (a raw read: its line; a block read: its k
  plane lines) and its `end` line first + (count << log2_stride), which the read engine registers in stage B;
  `query_hit` (combinational) says whether a record holds any of them; `query_hit_late` is the same answer a
  cycle later (the query and the list of the previous cycle), made from flip-flops: every record's held bits (its
  set test per mask bit) and the pending insert's, ORed after them: the device's user (the DRS server's poison
  column) reads the answer a cycle after dispatch, and the register split the set tests' cone in two (a query's
  subtracts and decodes before it, the ORs over the bits and the records after it; timing rounds 19a, 20b).
- `clear`: drop such a set of lines from every record (a write that covers a line whole, a CSR clear); a record
  left with an empty mask is free.
- `insert`: a record; merged (mask OR) into a record with the same (F, s), else written into the lowest free
  record; a full list does not take it: sticky `overflow` (STATUS.poison_overflow) and a `lost` pulse. Only
  listed lines stay poisoned (never a device-wide poison storm). A clear and an insert in the same cycle act in
  that order (a flush's clear of its block comes before the next block's poisoned line, as in RwD order).
  Inside, an insert waits one cycle in a register and is applied on the registered masks, which then already
  hold its cycle's clear, so the record choice reads flip-flops only; `query_hit` includes the pending insert,
  so from the next cycle on a query answers as for an immediate insert. `lost` pulses a cycle after the insert
  (no user in the device); the read port, `count` and `overflow` show an insert two cycles after it arrives
  (below).
- `clear_all` (CONTROL.clear_poison) empties the list and drops the flag; it wins over both.
- `read_index` / `read_record`: record i for the CSR block (POISON_LIST_*), `count` records in use, and
  `overflow`: the registered list, one read mux of the records and nothing behind it (a timing cut: the CSR
  read data once ran through the pending insert's record choice). They show the list between the previous
  cycle's clear and its insert (a point of the contract's order: a clear acts before the insert of its cycle),
  so an insert appears there two cycles after it arrives, a clear one cycle after; the CSR block holds a
  POISON_COMMAND write's B response until then (DEVICE.md §6).

The set test asks, for each record bit q, whether t = (F + (q << s) - first) mod 2^lines is p << log2_stride
with p < count. A set and a record each span less than 1024 lines (count <= 16, strides <= 64), so first - F
matters only in [-1024, 1024), and there the conditions on q are an interval and an alignment (`_held_bits`:
two subtracts per record and set instead of one subtract and compare per record bit, about a third of the logic).
Each record keeps F - (2^s - 1) beside F, so the interval's bounds are one subtract each, in parallel, from the
set's first and end lines (the query's end line comes from the read engine's stage B, the clear's from the write
path's clear register); past the subtracts the bounds and the alignment are decoded from bits, without compares.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux, Array, Value, signed
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams

MASK_BITS = 16          # lines a record names (b_max <= 16)
STRIDE_BITS = 3         # log2 stride 0..6 (plane runs R up to 64)
COUNT_BITS = 5          # lines in a set, 1..16
WINDOW_BITS = 11        # a set and a record each span less than 2**10 lines


def leading_lines_mask(log2_count) -> Value:
    """The record mask of a run's first 2 ** log2_count lines (all MASK_BITS from log2_count 4 up), a table of
    constants indexed by the 3-bit log2. Written as `(1 << (1 << log2_count)) - 1` it was the same function, but
    Amaranth sized the shifts to 4,112 bits, and its netlist's combinational-cycle check walked every bit pair:
    most of the time of converting the controller to Verilog (README "Set up", the test run)."""
    return Array(Const((1 << min(1 << code, MASK_BITS)) - 1, MASK_BITS)
                 for code in range(1 << len(log2_count)))[log2_count]


def block_event_layout(params: ControllerParams) -> data.StructLayout:
    """A one-cycle event naming one block of one region (block-buffer invalidate)."""
    return data.StructLayout({
        "valid": 1,
        "region": params.region_index_bits,
        "block": params.line_bits,
    })


def poison_record_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"first": params.line_bits, "log2_stride": STRIDE_BITS, "mask": MASK_BITS})


def poison_insert_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"valid": 1, "record": poison_record_layout(params)})


def line_set_layout(params: ControllerParams) -> data.StructLayout:
    """The lines first + (p << log2_stride), p < count."""
    return data.StructLayout({"first": params.line_bits, "log2_stride": STRIDE_BITS, "count": COUNT_BITS})


def line_query_layout(params: ControllerParams) -> data.StructLayout:
    """A line set and its end line first + (count << log2_stride) (mod 2^lines), which the querier computes a
    stage ahead (from its own registers) so that the query's set test bounds the set with one subtract."""
    return data.StructLayout({**dict(line_set_layout(params).members), "end": params.line_bits})


def line_set_event_layout(params: ControllerParams) -> data.StructLayout:
    """A clear: its line set and end line (as a query's), the end registered by the sender beside the set so
    that the records' clear test starts at one subtract (no add of the end in front of it)."""
    return data.StructLayout({"valid": 1, "lines": line_query_layout(params)})


def _at_least(value, bound: int):
    """value >= bound for a small unsigned value and a constant bound, as an OR of equality decodes: LUTs, where
    a compare becomes a carry chain (in series after the set test's subtract)."""
    values = 1 << len(value)
    return Cat(*(value == x for x in range(max(bound, 0), values))).any() if bound < values else Const(0)


class PoisonList(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        n = params.poison_entries
        super().__init__({
            "insert": In(poison_insert_layout(params)),
            "clear": In(line_set_event_layout(params)),
            "clear_all": In(1),
            "query": In(line_query_layout(params)),
            "query_hit": Out(1),
            "query_hit_late": Out(1),
            "read_index": In(range(max(2, n))),
            "read_valid": Out(1),
            "read_record": Out(poison_record_layout(params)),
            "overflow": Out(1),
            "lost": Out(1),
            "count": Out(range(n + 1)),
        })

    def _held_bits(self, m, record, round_base, lines, end, name: str) -> Signal:
        """Bit q set when record bit q is set and its line F + (q << s) is in the set `lines`; `round_base` is
        the record's F - (2^s - 1) (mod 2^lines), kept beside it so that no add rounds the offset up here, and
        `end` the set's end line first + (count << log2_stride) (None: added here, for 2^11-line spaces), so
        that both bounds are one subtract each, in parallel."""
        if self.params.line_bits < WINDOW_BITS:
            return self._held_bits_wrapping(m, record, lines, name)
        held = Signal(MASK_BITS, name=name)
        # With o = first - F, t_q = (q << s) - o is record line q's distance above `first`, and t_q in the set is
        # an interval and an alignment of q:
        #   0 <= t_q             <=>  q >= ceil(o / 2^s)                    = q_first
        #   t_q < count << a     <=>  q <  ceil((o + (count << a)) / 2^s)   = q_end
        #   t_q = 0 (mod 2^a)    <=>  o = 0 (mod 2^min(a, s))  and, when a > s, q = o >> s = q_first
        #                             (mod 2^(a - s)), i.e. the low min(a - s, 4) bits of q equal q_first's
        #                             and its bits 4 .. a - s - 1 are 0
        # so two subtracts and a few small decodes per record replace a subtract and a compare per record bit.
        # The subtracts give o_up = o + 2^s - 1 = first - round_base and o_up + (count << a) = end - round_base
        # (ceil(x / 2^s) = (x + 2^s - 1) >> s), and the alignment o = 0 (mod 2^j), j <= s, is o_up = -1 (mod 2^j).
        # A record line in the set means o = (q << s) - (p << a) in [-960, 960] (q, p < 16, strides <= 64), so
        # o_up in [-960, 1023]: an o_up (mod 2^lines) outside [-2^10, 2^10) puts no line in the set, and inside
        # it the arithmetic below is exact (a held bit is then a real common line, modulo 2^lines).
        # Past the subtracts everything is decoded from bits (no compare: yosys makes a carry chain of each,
        # in series after the subtract's).
        offset_up = Signal(self.params.line_bits, name=f"{name}_offset_up")     # first - round_base
        m.d.comb += offset_up.eq(lines.first - round_base)
        in_window = offset_up[WINDOW_BITS - 1:] == 0
        in_window |= offset_up[WINDOW_BITS - 1:].all()
        o_up = Signal(signed(WINDOW_BITS), name=f"{name}_o_up")
        m.d.comb += o_up.eq(offset_up[:WINDOW_BITS])
        s, a = record.log2_stride, lines.log2_stride
        # end - round_base = o_up + (count << a), in [-1023, 2047] when o_up is in the window: 12 bits, signed
        end_up = Signal(signed(WINDOW_BITS + 1), name=f"{name}_end_up")
        if end is not None:
            m.d.comb += end_up.eq(end[:WINDOW_BITS + 1] - round_base[:WINDOW_BITS + 1])
        else:
            m.d.comb += end_up.eq(o_up + (lines.count << a))
        q_first = Signal(signed(WINDOW_BITS), name=f"{name}_q_first")
        q_end = Signal(signed(WINDOW_BITS + 1), name=f"{name}_q_end")
        m.d.comb += [q_first.eq(o_up >> s), q_end.eq(end_up >> s)]
        # q >= q_first and q < q_end for each record bit q, from the bounds' sign bits, their bits 4 and up
        # (a bound past the mask) and their low four bits
        first_negative, end_negative = q_first[-1], q_end[-1]
        first_past = ~first_negative & q_first[4:].any()
        end_past = ~end_negative & q_end[4:].any()
        # a_exceeds_s[b]: a - s > b (the low min(a - s, 4) bits of q must equal q_first's, bits 4 .. a - s - 1 be 0)
        a_exceeds_s = Cat(*(Cat(*((s == x) & _at_least(a, x + b + 1) for x in range(8))).any() for b in range(7)))
        offset_aligned = Cat(*(o_up[j] | ~(_at_least(a, j + 1) & _at_least(s, j + 1)) for j in range(6))).all()
        high_zero = Cat(*(~a_exceeds_s[bit] | ~q_first[bit] for bit in range(4, 7))).all()
        aligned_anywhere = Signal(name=f"{name}_aligned_anywhere")
        m.d.comb += aligned_anywhere.eq(in_window & offset_aligned & high_zero)
        for q in range(MASK_BITS):
            at_or_above_first = first_negative | (~first_past & ~_at_least(q_first[:4], q + 1))
            below_end = ~end_negative & (end_past | _at_least(q_end[:4], q + 1))
            same_low_bits = ((q ^ q_first[:4]) & a_exceeds_s[:4]) == 0
            m.d.comb += held[q].eq(record.mask[q] & aligned_anywhere & at_or_above_first & below_end
                                   & same_low_bits)
        return held

    def _held_bits_wrapping(self, m, record, lines, name: str) -> Signal:
        """`_held_bits` for a line-address space under 2^11 lines, where a set can wrap onto itself: each
        record bit's distance above `first` (`offset` = first - F, modulo the space) is tested on its own."""
        lb = self.params.line_bits
        held = Signal(MASK_BITS, name=name)
        offset = Signal(lb, name=f"{name}_offset")
        m.d.comb += offset.eq(lines.first - record.first)
        limit = Signal(WINDOW_BITS + 1, name=f"{name}_limit")   # count << log2_stride
        align = Signal(WINDOW_BITS, name=f"{name}_align")       # (1 << log2_stride) - 1
        m.d.comb += [limit.eq(lines.count << lines.log2_stride),
                     align.eq((Const(1, WINDOW_BITS) << lines.log2_stride) - 1)]
        for q in range(MASK_BITS):
            # t = (q << s) - (first - F) mod 2^lb: the line's distance above `first`
            distance = Signal(lb, name=f"{name}_t{q}")
            m.d.comb += distance.eq((Const(q, 4) << record.log2_stride) - offset)
            m.d.comb += held[q].eq(record.mask[q] & (distance < limit) & ((distance & align[:lb]) == 0))
        return held

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n = p.poison_entries
        layout = poison_record_layout(p)
        records = [Signal(layout, name=f"record{i}") for i in range(n)]
        round_bases = [Signal(p.line_bits, name=f"record{i}_round_base") for i in range(n)]   # F - (2^s - 1)
        used = [Signal(name=f"record{i}_used") for i in range(n)]
        overflow = Signal()
        for i in range(n):
            m.d.comb += used[i].eq(records[i].mask != 0)

        # The insert is applied one cycle late, on the registered masks: the masks already hold the previous
        # cycle's clear, which in the contract acts before that insert (a clear and an insert of one cycle act in
        # that order), so the record it merges into or takes is the one it would have found then; this cycle's
        # clear, newer than the pending insert, then acts on the result. The insert's record choice (`same`,
        # `lowest_free`, the clock enables of every record) thus reads flip-flops only, never a clear's set test.
        # The query shows the list with the pending insert applied, so it answers every cycle as an immediate
        # insert would; `lost` pulses a cycle later, and the CSR read port shows the registered list (below).
        pending = Signal(layout, name="pending_insert")
        pending_valid = Signal()
        pending_round_base = Signal(p.line_bits)
        m.d.sync += [pending_valid.eq(self.insert.valid & ~self.clear_all), pending.eq(self.insert.record),
                     pending_round_base.eq(self.insert.record.first
                                           - ((Const(1, 8) << self.insert.record.log2_stride) - 1))]
        # `same` (the pending insert's (F, s) is record i's, a used record) from a register: the (F, s) compare is
        # made when the insert arrives, against the records' (F, s) as they are after this cycle's landing (a
        # record's F and s change only when an insert lands in it), so the record choice below starts at flip-flops
        # (the record masks' `used`), not at a 12-bit compare of the pending insert with every record
        pending_same_fs = [Signal(name=f"record{i}_pending_same_fs") for i in range(n)]
        same = [Signal(name=f"record{i}_same") for i in range(n)]
        for i in range(n):
            m.d.comb += same[i].eq(used[i] & pending_same_fs[i])
        merge = Cat(*same).any()
        any_free = ~Cat(*used).all()
        # the lowest free record, one-hot: record i is free and every record below it used (an AND of flags, not
        # a priority encode to an index and a compare of that index per record: two levels fewer before the
        # landing record's clock enables and mask)
        lowest_free = [Signal(name=f"record{i}_lowest_free") for i in range(n)]
        for i in range(n):
            m.d.comb += lowest_free[i].eq(~used[i] & Cat(*used[:i], Const(1, 1)).all())
        lands_new = Signal()                # the pending insert takes the lowest free record
        lost_now = Signal()
        m.d.comb += [lands_new.eq(pending_valid & ~merge & any_free),
                     lost_now.eq(pending_valid & ~merge & ~any_free)]

        # query: any record line in the set, the pending insert's (unless it is lost) included
        # the sets' end lines (the query's from the read engine's stage B, the clear's from the write path's
        # registered clear);
        # a 2^11-line space adds it per record to the offset, where it is exact
        windowed_end = p.line_bits > WINDOW_BITS
        query_end = self.query.end if windowed_end else None
        clear_end = self.clear.lines.end if windowed_end else None
        query_held = [self._held_bits(m, records[i], round_bases[i], self.query, query_end, f"query{i}")
                      for i in range(n)]
        pending_query_held = self._held_bits(m, pending, pending_round_base, self.query, query_end, "query_pending")
        pending_counts = Signal()    # the pending insert's lines are in the list (it is not lost)
        m.d.comb += [pending_counts.eq(pending_valid & ~lost_now),
                     self.query_hit.eq(Cat(*query_held, pending_query_held & pending_counts.replicate(MASK_BITS))
                                       .any())]
        # The late answer registers every held bit (a record's set test before its OR over the mask: timing
        # round 20b; with one bit per record, round 19a, that OR was the last two of the query's 10 levels) and
        # whether the pending insert counts; the ORs follow the registers.
        query_held_late = Signal((n + 1) * MASK_BITS, name="query_held_late")
        pending_counts_late = Signal(name="query_pending_counts_late")
        m.d.sync += [query_held_late.eq(Cat(*query_held, pending_query_held)),
                     pending_counts_late.eq(pending_counts)]
        m.d.comb += self.query_hit_late.eq(query_held_late[:n * MASK_BITS].any()
                                           | (pending_counts_late & query_held_late[n * MASK_BITS:].any()))

        # this cycle's clear, on every record and on the pending insert's lines (a merge ORs both)
        after_clear = [Signal(MASK_BITS, name=f"record{i}_after_clear") for i in range(n)]
        for i in range(n):
            cleared = self._held_bits(m, records[i], round_bases[i], self.clear.lines, clear_end, f"clear{i}")
            m.d.comb += after_clear[i].eq(Mux(self.clear.valid, records[i].mask & ~cleared, records[i].mask))
        pending_after_clear = Signal(MASK_BITS)
        pending_cleared = self._held_bits(m, pending, pending_round_base, self.clear.lines, clear_end,
                                         "clear_pending")
        m.d.comb += pending_after_clear.eq(Mux(self.clear.valid, pending.mask & ~pending_cleared, pending.mask))

        # the records' next state: this cycle's clear on every mask, and the pending insert ORed into the record
        # it merges into or takes (a record it takes is free: its mask and `after_clear` are 0)
        merge_into = [Signal(name=f"record{i}_merge_into") for i in range(n)]
        land_in = [Signal(name=f"record{i}_land_in") for i in range(n)]
        for i in range(n):
            m.d.comb += [merge_into[i].eq(pending_valid & same[i]), land_in[i].eq(pending_valid & ~merge & lowest_free[i])]
        # the next cycle's pending insert against the records' next (F, s): the landing record takes the pending
        # insert's (F, s) (unless a clear-all drops the landing: then it keeps its own, as in the Else below)
        insert_same_as_pending = Signal()
        m.d.comb += insert_same_as_pending.eq((self.insert.record.first == pending.first)
                                              & (self.insert.record.log2_stride == pending.log2_stride))
        for i in range(n):
            same_as_record = ((self.insert.record.first == records[i].first)
                              & (self.insert.record.log2_stride == records[i].log2_stride))
            m.d.sync += pending_same_fs[i].eq(Mux(land_in[i] & ~self.clear_all, insert_same_as_pending,
                                                  same_as_record))
        with m.If(self.clear_all):
            m.d.sync += overflow.eq(0)
            m.d.sync += [record.mask.eq(0) for record in records]
        with m.Else():
            for i in range(n):
                m.d.sync += records[i].mask.eq(after_clear[i]
                                               | (pending_after_clear & (merge_into[i] | land_in[i]).replicate(MASK_BITS)))
                with m.If(land_in[i]):
                    m.d.sync += [records[i].first.eq(pending.first), round_bases[i].eq(pending_round_base),
                                 records[i].log2_stride.eq(pending.log2_stride)]
            with m.If(lost_now):
                m.d.sync += overflow.eq(1)
                m.d.comb += self.lost.eq(1)

        # CSR read port: the registered records, one read mux (no override behind it). The pending insert is not
        # shown until it lands (the next cycle), so the port shows the list between the last cycle's clear and
        # its insert, a point of the contract's order; `count` and `overflow` are of that same list (the flag
        # includes an insert lost a cycle ago). The CSR block's read data thus starts at the records' masks and
        # this one mux, not at the insert's record choice (the free record, the merge) behind them.
        with m.Switch(self.read_index):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += [self.read_record.eq(records[i]), self.read_valid.eq(used[i])]
        m.d.comb += [self.overflow.eq(overflow), self.count.eq(sum(used))]
        return m
