"""DevLoad (docs/DEVICE.md §3): occupancy N counted at the ports, level = smartquant.params.dev_load_level(N).

The top is driven in the Amaranth simulator with no AXI memory at all: unmapped reads (NXM) and unmapped
writes take the same queues as buffer hits and dropped writes (front-end FIFO, serve FIFO, DRS register; the
write path's held register and NDR), so the device can be filled without a backend. The bench keeps its own
N from the port handshakes and checks every DRS and NDR:
  - exactly: DevLoad == dev_load_level(N) with N the count of the cycle the message entered its output
    register (the cycle before it first shows valid);
  - by range: dev_load_level(min N) <= DevLoad <= dev_load_level(max N) over the cycles from the request's
    acceptance to the response's handshake (what a checker without cycle knowledge can require);
  - and the RTL counter (`SmartQuantController.occupancy`) equals the port count every cycle (it never wraps).
"""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from smartquant.hdl.cxl.messages import req_layout, rwd_layout, ndr_layout, drs_layout, pack, unpack
from smartquant.hdl.top import SmartQuantController
from smartquant.params import (
    ControllerParams, DevLoad, ReqOpcode, RwdOpcode, dev_load_level, dev_load_thresholds,
)

P8 = ControllerParams(data_width=128, b_max=16, n_regions=2, request_depth=8, dram_addr_bits=16)
P4 = ControllerParams(data_width=64, b_max=8, n_regions=1, request_depth=4, dram_addr_bits=14)

# CXL 3.1 Req opcodes by response (DEVICE.md §4): a DRS for MemRd, MemRdData, MemRdTEE, MemRdDataTEE; none for
# MemRdFwd, MemWrFwd, MemSpecRd, MemSpecRdTEE; an NDR for every other value
READ_REQ = (0b0001, 0b0010, 0b0101, 0b0110)
SILENT_REQ = (0b0011, 0b0100, 0b1000, 0b1100)


@pytest.mark.parametrize("params,capacity,table", [
    # C = 2 * request_depth + b_max + 6; Optimal from ceil(C/4), Moderate from ceil(C/2), Severe from ceil(3C/4)
    (P8, 38, {0: 0, 1: 0, 9: 0, 10: 1, 18: 1, 19: 2, 28: 2, 29: 3, 38: 3, 200: 3}),
    (P4, 22, {0: 0, 5: 0, 6: 1, 10: 1, 11: 2, 16: 2, 17: 3, 22: 3}),
    (ControllerParams(), 54, {0: 0, 13: 0, 14: 1, 26: 1, 27: 2, 40: 2, 41: 3, 54: 3}),
    (ControllerParams(request_depth=4), 30, {7: 0, 8: 1, 14: 1, 15: 2, 22: 2, 23: 3}),
])
def test_dev_load_level_against_a_hand_worked_table(params, capacity, table):
    assert params.load_capacity == capacity
    for n, level in table.items():
        assert dev_load_level(params, n) == level, n
    levels = [dev_load_level(params, n) for n in range(3 * capacity)]
    assert levels == sorted(levels) and set(levels) == set(DevLoad)
    assert dev_load_level(params, capacity - 1) == DevLoad.SEVERE_OVERLOAD
    assert list(dev_load_thresholds(params)) == [levels.index(level) for level in (1, 2, 3)]
    with pytest.raises(ValueError):
        dev_load_level(params, -1)


UNMAPPED = 1 << 40   # a high address bit: no region, answered MemData-NXM (reads) / dropped Cmp (writes)


class PortBench:
    """Drives the top's CXL ports per a script; tracks N from the handshakes and checks DevLoad."""

    def __init__(self, params, seed=0):
        self.params, self.rng = params, random.Random(seed)
        self.samples = []        # (N at load, DevLoad) of every DRS / NDR, in the order they became valid
        self.violations = []
        self.max_n = 0
        self.full_n = None       # N when Req back-pressure was first seen with reads offered
        self.cycles = 0

    def run(self, want_req, want_rwd, drs_ready, ndr_ready, done, max_cycles=6000):
        """want_req(cycle) / want_rwd(cycle) -> fields of a message to offer or None; drs_ready(cycle),
        ndr_ready(cycle) -> bool; done(bench) ends the run."""
        p = self.params
        dut = SmartQuantController(p)
        layouts = {"req": req_layout(p), "rwd": rwd_layout(p), "drs": drs_layout(p), "ndr": ndr_layout(p)}
        bench = self
        self.dut = dut

        async def testbench(ctx):
            n = 0                     # the port count: accepted messages owing a response, as of this cycle
            history = []              # n per cycle
            accepted = {}             # (channel, tag) -> acceptance cycle
            was_valid = {"drs": False, "ndr": False}
            tag = 0
            cycle = 0
            offers = {}
            bench.idle = False
            bench.cycles_seen = 0   # cycles since Req back-pressure was first seen
            while not done(bench):
                bench.cycles_seen += bench.full_n is not None
                assert cycle < max_cycles, f"stuck at N = {n}"
                assert ctx.get(dut.occupancy) == n, f"cycle {cycle}: RTL occupancy {ctx.get(dut.occupancy)} != {n}"
                history.append(n)
                bench.max_n = max(bench.max_n, n)
                for channel, port, want in (("req", dut.m2s_req, want_req), ("rwd", dut.m2s_rwd, want_rwd)):
                    if channel not in offers:   # an offer stays up, unchanged, until its handshake
                        fields = want(cycle)
                        if fields is not None:
                            offers[channel] = dict(fields, tag=tag, ld_id=tag & 0xF)
                            tag += 1
                    ctx.set(port.valid, channel in offers)
                    if channel in offers:
                        ctx.set(port.payload.as_value(), pack(layouts[channel], **offers[channel]))
                ctx.set(dut.s2m_drs.ready, drs_ready(cycle))
                ctx.set(dut.s2m_ndr.ready, ndr_ready(cycle))
                delta = 0
                for channel, port in (("req", dut.m2s_req), ("rwd", dut.m2s_rwd)):
                    if channel in offers and ctx.get(port.ready):
                        fields = offers.pop(channel)
                        if channel == "rwd" or fields["opcode"] not in SILENT_REQ:
                            accepted[("drs" if channel == "req" and fields["opcode"] in READ_REQ
                                      else "ndr", fields["tag"])] = cycle
                            delta += 1
                    elif channel in offers and channel == "req" and bench.full_n is None:
                        bench.full_n = n
                for channel, port in (("drs", dut.s2m_drs), ("ndr", dut.s2m_ndr)):
                    valid = ctx.get(port.valid)
                    if not valid:
                        was_valid[channel] = False
                        continue
                    got = unpack(layouts[channel], ctx.get(port.payload.as_value()))
                    if not was_valid[channel]:
                        # entered the output register last cycle: DevLoad is the level of that cycle's N
                        bench.samples.append((history[-2], got["dev_load"]))
                        if got["dev_load"] != dev_load_level(p, history[-2]):
                            bench.violations.append(f"{channel} tag {got['tag']}: DevLoad {got['dev_load']}, "
                                                    f"N = {history[-2]} at load")
                    if ctx.get(port.ready):
                        start = accepted.pop((channel, got["tag"]))
                        window = history[start + 1:] or [n]
                        low, high = dev_load_level(p, min(window)), dev_load_level(p, max(window))
                        if not low <= got["dev_load"] <= high:
                            bench.violations.append(f"{channel} tag {got['tag']}: DevLoad {got['dev_load']} "
                                                    f"outside [{low}, {high}]")
                        delta -= 1
                        was_valid[channel] = False   # the next message, if any, is a new load
                    else:
                        was_valid[channel] = True
                n += delta
                assert n >= 0
                bench.idle = n == 0 and not offers
                await ctx.tick()
                cycle += 1
            bench.cycles = cycle
            bench.pending = accepted

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(testbench)
        sim.run()
        return self


@pytest.mark.parametrize("params", [P8, P4], ids=["W128_rd8", "W64_rd4"])
def test_dev_load_rises_through_every_level_as_reads_fill_the_device(params):
    """Two reads offered and one DRS released every 8 cycles: N climbs by one per period until Req
    back-pressure, then stays at capacity. Every released DRS is loaded at the N of its
    cycle, so the DevLoad sequence climbs Light -> Optimal -> Moderate -> Severe and stays Severe at full load."""
    capacity = params.load_capacity
    bench = PortBench(params)
    bench.run(want_req=lambda c: dict(opcode=ReqOpcode.MEM_RD, address=UNMAPPED) if c % 8 < 2 else None,
              want_rwd=lambda c: None,
              drs_ready=lambda c: c % 8 == 7, ndr_ready=lambda c: True,
              done=lambda b: len(b.samples) >= capacity + 16, max_cycles=20 * capacity + 400)
    levels = [level for _, level in bench.samples]
    assert levels[-16:] == [3] * 16, levels                 # full load is Severe
    assert levels == sorted(levels), levels                 # monotonic while filling, never wrapping back
    assert set(levels) == {0, 1, 2, 3}
    assert not bench.violations, bench.violations[:5]
    assert bench.max_n == capacity                           # never more than load_capacity reads held
    print(f"capacity {capacity}, thresholds {dev_load_thresholds(params)}: DevLoad by N "
          f"{sorted(set(bench.samples))}")


@pytest.mark.parametrize("params", [P8, P4], ids=["W128_rd8", "W64_rd4"])
def test_load_capacity_is_where_req_back_pressure_starts(params):
    """DRS held off for good, a read offered every cycle: Req.ready first drops at N = load_capacity."""
    bench = PortBench(params)
    bench.run(want_req=lambda c: dict(opcode=ReqOpcode.MEM_RD, address=UNMAPPED), want_rwd=lambda c: None,
              drs_ready=lambda c: False, ndr_ready=lambda c: True,
              done=lambda b: b.full_n is not None and b.cycles_seen > 20, max_cycles=10 * params.load_capacity)
    assert bench.full_n == bench.max_n == params.load_capacity
    assert not bench.violations, bench.violations[:5]


def test_occupancy_counts_every_opcode_and_never_wraps_under_random_traffic():
    """Random Req opcodes (reads with and without TEE intent, MemInv/InvNT/ClnEvct, MemSpecRd(TEE), MemRdFwd and
    MemWrFwd which get no response and are not counted, TEUpdate and reserved opcodes which get an NDR) and unmapped RwD writes (MemWr, MemWrPtl, a reserved opcode), with long
    stretches of DRS / NDR back-pressure: the RTL counter follows the port count every cycle (checked in the
    bench), every DevLoad is exact and within its range, and the device drains back to N = 0."""
    params = P8
    rng = random.Random(4)
    # half reads: the Cmp FIFO fills long before the read queues do, so fewer reads would stall Req before N
    # could pass the read capacity
    opcodes = [*READ_REQ, *READ_REQ, *range(16)]
    left = {"req": 600, "rwd": 200}

    def offer(channel, make):
        def want(cycle):
            if left[channel] == 0 or rng.random() < 0.2:
                return None
            left[channel] -= 1
            return make()
        return want

    def stretches(period):   # ready mostly low for two of every three periods, so that the queues fill
        return lambda c: rng.random() < (0.9 if (c // period) % 3 == 2 else 0.05)

    bench = PortBench(params, seed=4)
    bench.run(want_req=offer("req", lambda: dict(opcode=rng.choice(opcodes), address=UNMAPPED)),
              want_rwd=offer("rwd", lambda: dict(opcode=rng.choice([RwdOpcode.MEM_WR, RwdOpcode.MEM_WR_PTL, 0b0111]),
                                                 address=UNMAPPED, byte_enable=(1 << params.line_bytes) - 1,
                                                 poison=0, data=rng.getrandbits(params.data_width))),
              drs_ready=stretches(80), ndr_ready=stretches(50),
              done=lambda b: not any(left.values()) and b.idle, max_cycles=8000)
    assert not bench.violations, bench.violations[:5]
    assert not bench.pending
    levels = {level for _, level in bench.samples}
    assert levels == {0, 1, 2, 3}, levels
    assert bench.max_n > params.load_capacity   # reads, Cmp and writes queued together
    print(f"max N {bench.max_n} (capacity {params.load_capacity}), {len(bench.samples)} responses, "
          f"{bench.cycles} cycles")
