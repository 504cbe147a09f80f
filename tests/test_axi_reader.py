"""AxiReader (hdl/backend/axi_reader.py) in the Amaranth simulator.

Random fetches (raw lines, one-burst blocks at R = 1, strided blocks at R > 1) go into the unit while a Python
AXI memory with random ARREADY / RVALID stalls and random RRESP errors answers it and the consumer takes beats
with random stalls. Expected, worked out independently from each fetch: the AR bursts (address, length, INCR,
full-width size, ARID 0) in order, and every beat (data of the right line, error flag, plane number, last,
the fetch's k, raw flag and route payload) in order. A directed test checks the AR register's bypass: a fetch
offered to an idle unit is on AR in the next cycle.
"""
from __future__ import annotations

import random
from collections import deque

import pytest
from amaranth.sim import Simulator

from smartquant.hdl.backend.axi import AXI_BURST_INCR, AXI_RESP_OKAY, AXI_RESP_SLVERR
from smartquant.hdl.backend.axi_reader import AxiReader
from smartquant.params import ControllerParams

ROUTE_BITS = 6


def expected_bursts(fetch):
    """(first line, beats) of each AR burst of a fetch (docs/DEVICE.md §5)."""
    raw, line, k, log2_r, _ = fetch
    if raw:
        return [(line, 1)]
    if log2_r == 0:
        return [(line, k)]
    return [(line + (i << log2_r), 1) for i in range(k)]


def run_reader(params, fetches, seed, ar_stall=0.0, r_stall=0.0, beat_stall=0.0, error_rate=0.0,
               max_cycles=20000):
    dut = AxiReader(params, ROUTE_BITS, fetch_depth=3, route_depth=4)
    rng = random.Random(seed)
    line_mask = (1 << params.line_bits) - 1
    memory = {}   # line -> data (made up on first read), and the lines that answer SLVERR

    def line_data(line):
        return memory.setdefault(line, rng.getrandbits(params.data_width))

    error_lines = {rng.randrange(256) for _ in range(int(error_rate * 256))}
    bursts_seen, beats_seen = [], []
    expected_beats_total = sum(sum(n for _, n in expected_bursts(f)) for f in fetches)

    async def producer(ctx):
        for fetch in fetches:
            raw, line, k, log2_r, route = fetch
            ctx.set(dut.fetch.p.raw, raw)
            ctx.set(dut.fetch.p.line, line)
            ctx.set(dut.fetch.p.k, k)
            ctx.set(dut.fetch.p.log2_r, log2_r)
            ctx.set(dut.fetch.p.route, route)
            ctx.set(dut.fetch.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.fetch.ready)
                if ready:
                    break
            ctx.set(dut.fetch.valid, 0)
            for _ in range(rng.choice([0, 0, 0, 1, 3])):
                await ctx.tick()

    async def memory_and_consumer(ctx):
        pending = deque()   # (line, beats left) of accepted bursts, answered in order
        r_beat = None       # the beat on R: (line, last)
        cycle = 0
        while len(beats_seen) < expected_beats_total and cycle < max_cycles:
            ctx.set(dut.axi.arready, rng.random() >= ar_stall)
            if r_beat is None and pending and rng.random() >= r_stall:
                line, left = pending[0]
                r_beat = (line, left == 1)
                pending[0] = (line + 1, left - 1)
                if left == 1:
                    pending.popleft()
            if r_beat is not None:
                ctx.set(dut.axi.rdata, line_data(r_beat[0]))
                ctx.set(dut.axi.rresp, AXI_RESP_SLVERR if r_beat[0] in error_lines else AXI_RESP_OKAY)
                ctx.set(dut.axi.rlast, r_beat[1])
            ctx.set(dut.axi.rvalid, r_beat is not None)
            ctx.set(dut.beat.ready, rng.random() >= beat_stall)
            (_, _, arvalid, arready, araddr, arlen, arsize, arburst, arid, rready,
             bvalid, bready, payload) = await ctx.tick().sample(
                dut.axi.arvalid, dut.axi.arready, dut.axi.araddr, dut.axi.arlen, dut.axi.arsize,
                dut.axi.arburst, dut.axi.arid, dut.axi.rready, dut.beat.valid, dut.beat.ready, dut.beat.p)
            if arvalid and arready:
                assert (arsize, arburst, arid) == (params.line_offset_bits, AXI_BURST_INCR, 0)
                first = araddr >> params.line_offset_bits
                bursts_seen.append((first, arlen + 1))
                pending.append((first, arlen + 1))
            if r_beat is not None and rready:
                r_beat = None
            if bvalid and bready:
                beats_seen.append({name: int(getattr(payload, name)) for name in
                                   ("data", "error", "raw", "k", "plane", "last", "route")})
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(memory_and_consumer)
    sim.run()

    want_bursts = [b for f in fetches for b in expected_bursts(f)]
    assert bursts_seen == want_bursts
    want_beats = []
    for fetch in fetches:
        raw, _, k, _, route = fetch
        lines = [line + i for line, n in expected_bursts(fetch) for i in range(n)]
        for plane, line in enumerate(lines):
            want_beats.append({"data": line_data(line & line_mask), "error": int(line in error_lines),
                               "raw": raw, "k": k, "plane": plane, "last": int(plane == len(lines) - 1),
                               "route": route})
    assert len(beats_seen) == len(want_beats), f"{len(beats_seen)} of {len(want_beats)} beats"
    for i, (got, want) in enumerate(zip(beats_seen, want_beats)):
        assert got == want, f"beat {i}: got {got}, want {want}"


def random_fetches(rng, count):
    fetches = []
    for _ in range(count):
        raw = rng.random() < 0.3
        log2_r = 0 if raw else rng.choice([0, 0, 1, 2])
        k = 1 if raw else rng.randint(1, 16)
        fetches.append((int(raw), rng.randrange(200), k, log2_r, rng.randrange(1 << ROUTE_BITS)))
    return fetches


@pytest.mark.parametrize("seed, ar_stall, r_stall, beat_stall, error_rate", [
    (1, 0.0, 0.0, 0.0, 0.0),      # always-ready memory and consumer
    (2, 0.4, 0.3, 0.0, 0.1),
    (3, 0.0, 0.0, 0.6, 0.0),      # consumer back-pressure through the R skid
    (4, 0.5, 0.5, 0.5, 0.2),
])
def test_random_fetches_bursts_and_beats(seed, ar_stall, r_stall, beat_stall, error_rate):
    params = ControllerParams(data_width=128, b_max=16, dram_addr_bits=16)
    rng = random.Random(seed)
    run_reader(params, random_fetches(rng, 60), seed, ar_stall, r_stall, beat_stall, error_rate)


def test_fetch_reaches_ar_in_the_next_cycle():
    """The bypass: an idle reader presents an offered fetch on AR one cycle later (Req -> AR budget)."""
    params = ControllerParams(data_width=128, b_max=8, dram_addr_bits=16)
    dut = AxiReader(params, ROUTE_BITS, fetch_depth=3, route_depth=4)
    seen = []

    async def bench(ctx):
        ctx.set(dut.axi.arready, 0)
        await ctx.tick().repeat(2)
        assert not ctx.get(dut.axi.arvalid)
        ctx.set(dut.fetch.p.line, 40)
        ctx.set(dut.fetch.p.k, 3)
        ctx.set(dut.fetch.valid, 1)
        await ctx.tick()
        ctx.set(dut.fetch.valid, 0)
        seen.append((ctx.get(dut.axi.arvalid), ctx.get(dut.axi.araddr) >> params.line_offset_bits,
                     ctx.get(dut.axi.arlen)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(1, 40, 2)]


def test_route_fifo_holds_route_depth_fetches():
    """The route FIFO (a registered head since timing round 12a) still takes exactly route_depth fetches: with AR
    always ready and no R beat, fetch.ready falls after route_depth fetches (the fetch FIFO drains into AR)."""
    params = ControllerParams(data_width=128, b_max=8, dram_addr_bits=16)
    dut = AxiReader(params, ROUTE_BITS, fetch_depth=3, route_depth=4)
    accepted = []

    async def bench(ctx):
        ctx.set(dut.axi.arready, 1)
        ctx.set(dut.fetch.p.k, 1)
        ctx.set(dut.fetch.valid, 1)
        for cycle in range(12):
            ctx.set(dut.fetch.p.line, cycle)
            if ctx.get(dut.fetch.ready):
                accepted.append(cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert accepted == [0, 1, 2, 3]


def test_first_r_beat_is_routed_in_its_arrival_cycle():
    """A fetch offered in cycle t is on AR in t + 1 (handshake), and an R beat presented at the earliest legal
    cycle, t + 2, leaves on `beat` in that cycle: the registered route FIFO head is ready in time."""
    params = ControllerParams(data_width=128, b_max=8, dram_addr_bits=16)
    dut = AxiReader(params, ROUTE_BITS, fetch_depth=3, route_depth=4)
    seen = []

    async def bench(ctx):
        ctx.set(dut.axi.arready, 1)
        ctx.set(dut.beat.ready, 1)
        await ctx.tick().repeat(2)
        ctx.set(dut.fetch.p.line, 40)
        ctx.set(dut.fetch.p.k, 2)
        ctx.set(dut.fetch.p.route, 5)
        ctx.set(dut.fetch.valid, 1)
        await ctx.tick()                      # t: the fetch is taken
        ctx.set(dut.fetch.valid, 0)
        seen.append(ctx.get(dut.axi.arvalid))  # t + 1: AR, handshake
        await ctx.tick()
        ctx.set(dut.axi.rvalid, 1)            # t + 2: the first beat
        ctx.set(dut.axi.rdata, 0x1234)
        ctx.set(dut.axi.rresp, AXI_RESP_OKAY)
        seen.append((ctx.get(dut.beat.valid), ctx.get(dut.beat.p.plane), ctx.get(dut.beat.p.last),
                     ctx.get(dut.beat.p.route), ctx.get(dut.beat.p.data)))
        await ctx.tick()
        seen.append((ctx.get(dut.beat.valid), ctx.get(dut.beat.p.plane), ctx.get(dut.beat.p.last)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [1, (1, 0, 0, 5, 0x1234), (1, 1, 1)]
