"""AxiWriter (hdl/backend/axi_writer.py) in the Amaranth simulator.

Random writes (one-beat raw lines, blocks of 2..16 plane lines at R = 1 and at R > 1, random strobes and
AWIDs) go into the unit while a Python AXI subordinate with random AWREADY / WREADY stalls takes them and
answers B responses (random BID / BRESP, also while writes are issued). Expected, worked out independently
from each write: the AW bursts (address, length, AWID, INCR, full-width size) and the W beats (data of beat p,
the write's strobe, WLAST at each burst's end) in order, and every B response handed on unchanged (id,
error = BRESP != OKAY) in the cycle it arrives. A directed test checks the throughput: back-to-back blocks
with an always-ready subordinate fill every W cycle.
"""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from smartquant.hdl.backend.axi import AXI_BURST_INCR, AXI_RESP_OKAY, AXI_RESP_SLVERR
from smartquant.hdl.backend.axi_writer import AxiWriter
from smartquant.params import ControllerParams

PARAMS = ControllerParams(data_width=128, b_max=16, dram_addr_bits=20)


def expected_bursts(write):
    """(first line, beats) of each AW burst of a write: one INCR burst when R = 1, else one beat per burst at
    stride R (docs/DEVICE.md §4)."""
    _, line, log2_r, log2_beats, _, _ = write
    beats = 1 << log2_beats
    if log2_r == 0:
        return [(line, beats)]
    return [(line + (i << log2_r), 1) for i in range(beats)]


def random_write(rng, params, max_beats):
    log2_beats = rng.choice([b for b in range(max_beats.bit_length()) if (1 << b) <= max_beats])
    log2_r = rng.choice([0, 0, 1, 2, 3])
    line = rng.randrange(1 << (params.line_bits - 8))
    beats = [rng.getrandbits(params.data_width) for _ in range(1 << log2_beats)]
    strobe = rng.choice([(1 << params.line_bytes) - 1, rng.getrandbits(params.line_bytes)])
    return (rng.randrange(1 << params.axi_id_bits), line, log2_r, log2_beats, beats, strobe)


def run_writer(params, max_beats, writes, b_responses, seed, aw_stall=0.0, w_stall=0.0, gap=True,
               max_cycles=20000):
    """Runs the writes and presents `b_responses` ((bid, bresp), one every few cycles); returns the AW bursts,
    the W beats and the B responses seen, and the cycle of every W beat."""
    dut = AxiWriter(params, max_beats)
    rng = random.Random(seed)
    aw_seen, w_seen, b_seen, w_cycles = [], [], [], []
    total_beats = sum(1 << w[3] for w in writes)
    total_bursts = sum(len(expected_bursts(w)) for w in writes)

    async def producer(ctx):
        for write in writes:
            awid, line, log2_r, log2_beats, beats, strobe = write
            packed = sum(beat << (i * params.data_width) for i, beat in enumerate(beats))
            ctx.set(dut.write.p, {"id": awid, "line": line, "log2_r": log2_r, "log2_beats": log2_beats,
                                  "data": packed, "strobe": strobe})
            ctx.set(dut.write.valid, 1)
            await ctx.tick().until(dut.write.ready)   # the edge that takes the write
            ctx.set(dut.write.valid, 0)
            if gap:
                for _ in range(rng.choice([0, 0, 0, 1, 4])):
                    await ctx.tick()

    async def subordinate(ctx):
        ctx.set(dut.b.ready, 1)
        pending_b = list(b_responses)
        b_before = None      # the B response presented in the previous cycle: handed on in this one
        cycle = 0
        while ((len(w_seen) < total_beats or len(aw_seen) < total_bursts or pending_b or b_before is not None)
               and cycle < max_cycles):
            ctx.set(dut.axi.awready, rng.random() >= aw_stall)
            ctx.set(dut.axi.wready, rng.random() >= w_stall)
            b_now = pending_b.pop(0) if pending_b and rng.random() < 0.3 else None
            ctx.set(dut.axi.bvalid, b_now is not None)
            if b_now is not None:
                ctx.set(dut.axi.bid, b_now[0])
                ctx.set(dut.axi.bresp, b_now[1])
            (_, _, awvalid, awready, awid, awaddr, awlen, awsize, awburst, wvalid, wready, wdata, wstrb, wlast,
             bready, b_valid, b_id, b_error) = await ctx.tick().sample(
                dut.axi.awvalid, dut.axi.awready, dut.axi.awid, dut.axi.awaddr, dut.axi.awlen, dut.axi.awsize,
                dut.axi.awburst, dut.axi.wvalid, dut.axi.wready, dut.axi.wdata, dut.axi.wstrb, dut.axi.wlast,
                dut.axi.bready, dut.b.valid, dut.b.p.id, dut.b.p.error)
            if awvalid and awready:
                assert (awsize, awburst) == (params.line_offset_bits, AXI_BURST_INCR)
                aw_seen.append((awid, awaddr >> params.line_offset_bits, awlen + 1))
                assert awaddr % params.line_bytes == 0
            if wvalid and wready:
                w_seen.append((wdata, wstrb, wlast))
                w_cycles.append(cycle)
            assert b_valid == (b_before is not None)   # handed on one cycle later, from a register
            if b_now is not None:
                assert bready == 1
            if b_valid:
                b_seen.append((b_id, b_error))
                assert (b_id, b_error) == (b_before[0], int(b_before[1] != AXI_RESP_OKAY))
            b_before = b_now
            cycle += 1
        assert cycle < max_cycles, "the writer stalled"
        for _ in range(4):   # both buffers drained: the unit is idle
            await ctx.tick()
        assert ctx.get(dut.busy) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(subordinate)
    sim.run()
    return aw_seen, w_seen, b_seen, w_cycles


def expected_channels(writes):
    aw, w = [], []
    for awid, line, log2_r, log2_beats, beats, strobe in writes:
        bursts = expected_bursts((awid, line, log2_r, log2_beats, beats, strobe))
        aw += [(awid, first, n) for first, n in bursts]
        beat = 0
        for _, n in bursts:
            for i in range(n):
                w.append((beats[beat], strobe, int(i == n - 1)))
                beat += 1
    return aw, w


@pytest.mark.parametrize("seed,aw_stall,w_stall", [(1, 0.0, 0.0), (2, 0.5, 0.2), (3, 0.1, 0.6), (4, 0.8, 0.8)])
def test_random_writes_bursts_beats_and_b(seed, aw_stall, w_stall):
    rng = random.Random(seed)
    writes = [random_write(rng, PARAMS, 16) for _ in range(60)]
    b_responses = [(rng.randrange(1 << PARAMS.axi_id_bits), rng.choice([AXI_RESP_OKAY, AXI_RESP_OKAY, AXI_RESP_SLVERR]))
                   for _ in range(40)]
    aw_seen, w_seen, b_seen, _ = run_writer(PARAMS, 16, writes, b_responses, seed, aw_stall, w_stall)
    want_aw, want_w = expected_channels(writes)
    assert aw_seen == want_aw
    assert len(w_seen) == len(want_w)
    for i, (got, want) in enumerate(zip(w_seen, want_w)):
        assert got == want, f"W beat {i}: got {got}, want {want}"
    assert b_seen == [(bid, int(resp != AXI_RESP_OKAY)) for bid, resp in b_responses]


def test_hand_worked_bursts():
    """A raw line, a 4-plane block at R = 1 and a 2-plane block at R = 4, worked out by hand: AW (id, line,
    beats) = (3, 0x40, 1); (5, 0x100, 4); (6, 0x200, 1), (6, 0x204, 1); WLAST on every beat of the strided
    block and on the last of the R = 1 block."""
    writes = [(3, 0x40, 0, 0, [0xAA], 0x00F0),
              (5, 0x100, 0, 2, [10, 11, 12, 13], 0xFFFF),
              (6, 0x200, 2, 1, [20, 21], 0x0F0F)]
    aw_seen, w_seen, _, _ = run_writer(PARAMS, 4, writes, [], seed=0)
    assert aw_seen == [(3, 0x40, 1), (5, 0x100, 4), (6, 0x200, 1), (6, 0x204, 1)]
    assert w_seen == [(0xAA, 0x00F0, 1), (10, 0xFFFF, 0), (11, 0xFFFF, 0), (12, 0xFFFF, 0), (13, 0xFFFF, 1),
                      (20, 0x0F0F, 1), (21, 0x0F0F, 1)]


@pytest.mark.parametrize("log2_beats, n_writes", [(3, 6), (0, 24), (1, 12)])
def test_back_to_back_blocks_fill_every_w_cycle(log2_beats, n_writes):
    """With an always-ready subordinate, writes offered back to back leave one W beat per cycle: the stage
    takes the next write in the cycle it queues the last beat of the current one (one-beat raw writes
    included: a stage free only a cycle after its last beat would halve their rate)."""
    rng = random.Random(9)
    beats = 1 << log2_beats
    writes = [(i % 4, 64 * i, i % 2, log2_beats, [rng.getrandbits(PARAMS.data_width) for _ in range(beats)],
               0xFFFF) for i in range(n_writes)]
    _, w_seen, _, w_cycles = run_writer(PARAMS, 8, writes, [], seed=9, gap=False)
    assert len(w_seen) == beats * n_writes
    assert w_cycles == list(range(w_cycles[0], w_cycles[0] + beats * n_writes))


def test_refuses_a_beat_count_it_cannot_hold():
    with pytest.raises(ValueError, match="power of two"):
        AxiWriter(PARAMS, 3)
