"""SmartQuantController (hdl/top.py) against an AXI memory the test steers: write visibility and reset.

The memory (`HeldMemory`) is a Python AXI4 subordinate whose channels the test can hold back one by one (AR, R,
AW, W with an optional beat budget, B), and which is *not* reset with the controller: its lines, the bursts
it accepted, the W beats it holds and the B responses it owes survive the controller's `rst` (a CXL link reset
need not reset the DRAM controller behind AXI), unless the test resets it too (`axi_rst`).

`Bench` drives everything from one testbench, cycle by cycle (no ordering questions between testbenches): a
script, written as a generator, queues CSR accesses and CXL messages, steers the memory and the reset, and
yields to let a cycle pass. Expected data comes from golden/device.py DeviceModel fed the same writes.

- DEVICE.md §4: after a write's NDR Cmp every read sees it, even when a read of the same block ran
  concurrently with the write and filled the block buffer with the old planes.
- DEVICE.md "Reset": AXI transactions in flight at a controller reset are drained (late R beats and B
  responses absorbed, owed W beats sent with WSTRB = 0), so later traffic gets its own data and completions.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from smartquant.golden.device import DeviceModel, region_csr_writes
from smartquant.hdl.cxl.messages import req_layout, rwd_layout, ndr_layout, drs_layout, pack, unpack
from smartquant.hdl.top import SmartQuantController
from smartquant.params import (
    ControllerParams, Format, ReqOpcode, RwdOpcode, Rounding, View, CSR_STATUS, WRITE_GATHER_IDLE_CYCLES,
)

PARAMS = ControllerParams(data_width=128, b_max=16, n_regions=2, request_depth=8, dram_addr_bits=16)
LINE_BYTES = PARAMS.line_bytes
ALL_BYTES = (1 << LINE_BYTES) - 1
STATUS_BUSY = 1 << 1


class HeldMemory:
    """AXI4 subordinate with per-channel holds; its state survives the controller's reset."""

    def __init__(self, latency=2):
        self.lines = {}                 # line -> int
        self.latency = latency
        self.hold = dict(ar=False, r=False, aw=False, w=False, b=False)
        self.w_budget = None            # W beats still accepted before W is held (None: no limit)
        self.ar = deque()               # [line, beats left, first cycle R may be valid]
        self.aw = deque()               # [line, beats left, awid, burst index]
        self.w = deque()                # (data, strobe, last) beats accepted before their AW
        self.b = deque()                # (bid, burst index)
        self.aw_log = []                # (line, beats, awid) of every AW accepted
        self.b_cycles = {}              # burst index -> cycle of its B handshake
        self.r_beats = 0

    def reset(self):
        """The AXI interface reset: every transaction in flight is forgotten (the lines are kept)."""
        self.ar.clear(), self.aw.clear(), self.w.clear(), self.b.clear()

    def _pair(self):
        while self.aw and self.w:
            burst = self.aw[0]
            data, strobe, last = self.w.popleft()
            mask = sum(0xFF << (8 * i) for i in range(LINE_BYTES) if strobe >> i & 1)
            self.lines[burst[0]] = (self.lines.get(burst[0], 0) & ~mask) | (data & mask)
            assert last == (burst[1] == 1), f"WLAST {last} with {burst[1]} beats left in the burst"
            burst[0] += 1
            burst[1] -= 1
            if burst[1] == 0:
                self.aw.popleft()
                self.b.append((burst[2], burst[3]))

    def drive(self, ctx, axi, cycle):
        ctx.set(axi.arready, not self.hold["ar"])
        ctx.set(axi.awready, not self.hold["aw"])
        ctx.set(axi.wready, not self.hold["w"] and self.w_budget != 0)
        r_valid = bool(self.ar) and self.ar[0][2] <= cycle and not self.hold["r"]
        ctx.set(axi.rvalid, r_valid)
        if r_valid:
            ctx.set(axi.rdata, self.lines.get(self.ar[0][0], 0))
            ctx.set(axi.rlast, self.ar[0][1] == 1)
            ctx.set(axi.rid, 0)
            ctx.set(axi.rresp, 0)
        b_valid = bool(self.b) and not self.hold["b"]
        ctx.set(axi.bvalid, b_valid)
        if b_valid:
            ctx.set(axi.bid, self.b[0][0])
            ctx.set(axi.bresp, 0)
        return r_valid, b_valid

    def sample(self, ctx, axi, cycle, r_valid, b_valid):
        offset = PARAMS.line_offset_bits
        if ctx.get(axi.arvalid) and ctx.get(axi.arready):
            self.ar.append([ctx.get(axi.araddr) >> offset, ctx.get(axi.arlen) + 1, cycle + 1 + self.latency])
        if r_valid and ctx.get(axi.rready):
            self.r_beats += 1
            self.ar[0][0] += 1
            self.ar[0][1] -= 1
            if self.ar[0][1] == 0:
                self.ar.popleft()
        if b_valid and ctx.get(axi.bready):
            self.b_cycles[self.b.popleft()[1]] = cycle
        if ctx.get(axi.awvalid) and ctx.get(axi.awready):
            line, beats, awid = ctx.get(axi.awaddr) >> offset, ctx.get(axi.awlen) + 1, ctx.get(axi.awid)
            self.aw.append([line, beats, awid, len(self.aw_log)])
            self.aw_log.append((line, beats, awid))
        if ctx.get(axi.wvalid) and ctx.get(axi.wready):
            self.w.append((ctx.get(axi.wdata), ctx.get(axi.wstrb), ctx.get(axi.wlast)))
            if self.w_budget is not None:
                self.w_budget -= 1
        self._pair()


class Bench:
    """One testbench for the whole controller: CSR master, Req/RwD sources, NDR/DRS sinks (always ready),
    the HeldMemory, and the controller's reset (`rst`) / the memory's (`axi_rst`)."""

    def __init__(self, params=PARAMS):
        self.params = params
        self.dut = SmartQuantController(params)
        self.memory = HeldMemory()
        self.model = DeviceModel(params)
        self.req, self.rwd, self.csr = deque(), deque(), deque()
        self.drs, self.ndr = {}, {}          # tag -> (payload, cycle of the handshake)
        self.csr_reads = []
        self.rst = self.axi_rst = False
        self.cycle = 0

    # ---- script helpers (generators: `yield from`) ----
    def wait(self, condition, limit=2000):
        start = self.cycle
        while not condition():
            assert self.cycle - start < limit, "wait timed out"
            yield

    def idle(self, cycles):
        for _ in range(cycles):
            yield

    def csr_write(self, addr, value):
        self.csr.append(("w", addr, value))
        yield from self.wait(lambda: not self.csr)

    def csr_read(self, addr):
        self.csr.append(("r", addr, 0))
        yield from self.wait(lambda: not self.csr)
        return self.csr_reads[-1]

    def program(self, *args, **kwargs):
        """Program a region over CSR (the model is programmed only once: a reset keeps the model's view)."""
        writes = region_csr_writes(self.params, *args, **kwargs)
        for addr, value in writes:
            yield from self.csr_write(addr, value)
        return writes

    def read(self, tag, view, line, k=0):
        self.req.append(dict(opcode=ReqOpcode.MEM_RD, address=self.model.address(view, line, k), tag=tag, ld_id=0))

    def write(self, tag, view, line, data):
        self.rwd.append(dict(opcode=RwdOpcode.MEM_WR, address=self.model.address(view, line), tag=tag, ld_id=0,
                             poison=0, byte_enable=ALL_BYTES, data=data))

    def reset(self, cycles=4, memory_too=False):
        self.rst, self.axi_rst = True, memory_too
        if memory_too:
            self.memory.reset()
        yield from self.idle(cycles)
        self.rst = self.axi_rst = False
        self.req.clear(), self.rwd.clear()

    # ---- the simulation ----
    def run(self, script, max_cycles=20_000):
        top = Module()
        top.domains.sync = cd = ClockDomain()
        top.submodules.dut = dut = self.dut
        layouts = {"req": req_layout(self.params), "rwd": rwd_layout(self.params)}
        sinks = ((self.drs, dut.s2m_drs, drs_layout(self.params)), (self.ndr, dut.s2m_ndr, ndr_layout(self.params)))
        steps = script(self)
        csr_state = {}

        async def bench(ctx):
            done = False
            while not done:
                assert self.cycle < max_cycles, "simulation ran too long"
                try:
                    next(steps)
                except StopIteration:
                    done = True
                ctx.set(cd.rst, self.rst)
                ctx.set(dut.axi_rst, self.axi_rst)
                for queue, port, name in ((self.req, dut.m2s_req, "req"), (self.rwd, dut.m2s_rwd, "rwd")):
                    offer = bool(queue) and not self.rst
                    ctx.set(port.valid, offer)
                    if offer:
                        ctx.set(port.payload.as_value(), pack(layouts[name], **queue[0]))
                op = self.csr[0] if self.csr and not self.rst else None
                if op is not None and not csr_state:
                    csr_state.update(aw=op[0] == "w", w=op[0] == "w", ar=op[0] == "r")
                ctx.set(dut.csr.awvalid, csr_state.get("aw", False))
                ctx.set(dut.csr.wvalid, csr_state.get("w", False))
                ctx.set(dut.csr.arvalid, csr_state.get("ar", False))
                if op is not None:
                    ctx.set(dut.csr.awaddr, op[1])
                    ctx.set(dut.csr.araddr, op[1])
                    ctx.set(dut.csr.wdata, op[2])
                    ctx.set(dut.csr.wstrb, 0xF)
                ctx.set(dut.csr.bready, 1)
                ctx.set(dut.csr.rready, 1)
                ctx.set(dut.s2m_drs.ready, 1)
                ctx.set(dut.s2m_ndr.ready, 1)
                r_valid, b_valid = self.memory.drive(ctx, dut.axi, self.cycle)

                # handshakes of this cycle
                for queue, port in ((self.req, dut.m2s_req), (self.rwd, dut.m2s_rwd)):
                    if queue and not self.rst and ctx.get(port.ready):
                        queue.popleft()
                if op is not None:
                    for channel in ("aw", "w", "ar"):
                        if csr_state[channel] and ctx.get(getattr(dut.csr, channel + "ready")):
                            csr_state[channel] = False
                    if op[0] == "w" and ctx.get(dut.csr.bvalid) or op[0] == "r" and ctx.get(dut.csr.rvalid):
                        if op[0] == "r":
                            self.csr_reads.append(ctx.get(dut.csr.rdata))
                        self.csr.popleft()
                        csr_state.clear()
                for received, port, lay in sinks:
                    if ctx.get(port.valid) and not self.rst:
                        payload = unpack(lay, ctx.get(port.payload.as_value()))
                        assert payload["tag"] not in received, f"tag {payload['tag']} answered twice"
                        received[payload["tag"]] = (payload, self.cycle)
                self.memory.sample(ctx, dut.axi, self.cycle, r_valid, b_valid)
                await ctx.tick()
                self.cycle += 1

        sim = Simulator(top)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()


def block_lines(seed, B):
    rng = np.random.default_rng(seed)
    return [int.from_bytes(rng.integers(0, 256, LINE_BYTES, dtype=np.uint8).tobytes(), "little") for _ in range(B)]


def program_and_write_block(b, config, old):
    """Bench script steps, the RTL side of model_block_written_then_read: program `config`, write block 0 whole
    through the weight-major view with `old` (tags 0..B-1) and wait for the Cmps."""
    yield from b.program(*config)
    for j, line in enumerate(old):
        b.write(j, View.WEIGHT_MAJOR, config[1] + j, line)
    yield from b.wait(lambda: len(b.ndr) == len(old))


def model_block_written_then_read(model, config, old, before_tag):
    """The golden model's side of the read-after-write tests: `config` programmed, block 0 written whole through
    the weight-major view with `old` (tags 0..B-1), then a packed read of its line 0 (`before_tag`). Returns the
    packed address and that read's answer."""
    _, base, _, _, B, _, k, _ = config
    model.program(region_csr_writes(PARAMS, *config))
    for j in range(B):
        model.rwd(RwdOpcode.MEM_WR, model.address(View.WEIGHT_MAJOR, base + j), j, old[j], ALL_BYTES, 0)
    packed = model.address(View.PACKED_K, base, k)
    (before,) = model.req(ReqOpcode.MEM_RD, packed, before_tag)
    return packed, before


# ---- DEVICE.md §4: after a write's Cmp every read sees it ---------------------------------------------------
# each view and each held channel once in the default run, all four with -m slow
@pytest.mark.parametrize("view, held", [(View.WEIGHT_MAJOR, "aw"), (View.RAW, "w"),
                                        pytest.param(View.WEIGHT_MAJOR, "w", marks=pytest.mark.slow),
                                        pytest.param(View.RAW, "aw", marks=pytest.mark.slow)])
def test_read_after_write_completion_sees_the_write(view, held):
    """INT8, R = 1. A write to block 0 whose AXI write the memory holds back (AW or W not accepted); meanwhile a
    packed k = 3 read of block 0: after a raw write it misses and fetches the old planes into the block buffer;
    after a weight-major (gathered) write it waits until the write has landed. After the write's NDR Cmp an
    identical read must return the new data (it may not hit a slot filled before the write landed)."""
    B, R, base, k = 8, 1, 0x80, 3
    bench = Bench()
    model = bench.model
    config = (0, base, 4, Format.INT, B, R, k, Rounding.FLOOR)
    old, new = block_lines(1, B), block_lines(2, B)
    packed, before = model_block_written_then_read(model, config, old, 100)   # packed line 0: weights 0..42
    # the new write: weight-major line 0 of block 0, or raw plane line 1 of block 0 (plane 1 of every weight)
    new_line = base if view == View.WEIGHT_MAJOR else base + 1
    model.rwd(RwdOpcode.MEM_WR, model.address(view, new_line), 200, new[0], ALL_BYTES, 0)
    (after,) = model.req(ReqOpcode.MEM_RD, packed, 101)
    assert before.data != after.data, "the write must change the packed line"

    def script(b):
        yield from program_and_write_block(b, config, old)
        b.memory.hold[held] = True
        b.write(200, view, new_line, new[0])
        yield from b.wait(lambda: not b.rwd)
        yield from b.idle(4)                   # the write is accepted (and has invalidated the buffer)
        b.read(100, View.PACKED_K, base, k)
        if view == View.WEIGHT_MAJOR:
            # the line is gathered: the read waits at the write path's read gate until the block's flush lands
            yield from b.idle(100)
            assert 100 not in b.drs and 200 not in b.ndr
            b.memory.hold[held] = False
            yield from b.wait(lambda: 100 in b.drs and 200 in b.ndr)
        else:
            yield from b.wait(lambda: 100 in b.drs)
            assert 200 not in b.ndr
            b.memory.hold[held] = False
            yield from b.wait(lambda: 200 in b.ndr)
        b.read(101, View.PACKED_K, base, k)
        yield from b.wait(lambda: 101 in b.drs)

    bench.run(script)
    # a raw write is not gathered: the concurrent read may see old or new data, and this one saw the old (the
    # memory held the write back); a gathered weight-major write is never missed (DEVICE.md §4)
    assert bench.drs[100][0]["data"] == (after.data if view == View.WEIGHT_MAJOR else before.data)
    assert bench.drs[101][0]["data"] == after.data, "a read after the write's Cmp returned the pre-write data"


@pytest.mark.parametrize("lag", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_read_arriving_while_its_block_is_gathered_waits_and_sees_the_write(lag):
    """INT8, R = 1, block 0 written whole before. A weight-major write of line 0 of block 0 and a packed k = 3
    read of that line offered `lag` cycles after it, so the read is still in the request pipeline (front end,
    stages A and B) while the write joins the gather buffer: it waits at dispatch, asks for the flush (the
    flush's AW comes before the idle boundary could have caused it) and, after the flush's B response, returns
    the new data (what the golden model answers for a read of a gathered block). With the read gate in front
    of the read engine (before), a read that passed it before the write joined returned the old data."""
    B, R, base, k = 8, 1, 0x80, 3
    bench = Bench()
    model = bench.model
    config = (0, base, 4, Format.INT, B, R, k, Rounding.FLOOR)
    old, new = block_lines(3, B), block_lines(4, B)
    packed, before = model_block_written_then_read(model, config, old, 99)
    model.rwd(RwdOpcode.MEM_WR, model.address(View.WEIGHT_MAJOR, base), 200, new[0], ALL_BYTES, 0)
    (after,) = model.req(ReqOpcode.MEM_RD, packed, 100)
    assert model.gather_flushes["read"] == 1
    assert before.data != after.data, "the write must change the packed line"
    offered = {}

    def script(b):
        yield from program_and_write_block(b, config, old)
        yield from b.idle(WRITE_GATHER_IDLE_CYCLES + 4)
        offered["burst"] = len(b.memory.aw_log)     # the index of the flush's burst
        b.write(200, View.WEIGHT_MAJOR, base, new[0])
        offered["write"] = b.cycle
        yield from b.idle(lag)
        b.read(100, View.PACKED_K, base, k)
        while not (100 in b.drs and 200 in b.ndr):
            if len(b.memory.aw_log) > offered["burst"]:
                offered.setdefault("aw", b.cycle)
            yield

    bench.run(script)
    assert bench.drs[100][0]["data"] == after.data, "a read of the gathered block returned the pre-write data"
    assert offered["aw"] - offered["write"] < WRITE_GATHER_IDLE_CYCLES, "flushed by the idle boundary"
    assert bench.drs[100][1] > bench.memory.b_cycles[offered["burst"]], "the read left before the flush landed"


def test_illegal_k_read_of_a_gathered_block_flushes_nothing():
    """A packed read at k = 9 > B = 8 of a gathered block touches no DRAM: it is answered at once (as the golden
    model answers it) and does not flush the block, which goes out at its idle boundary."""
    B, R, base, k = 8, 1, 0x80, 3
    bench = Bench()
    model = bench.model
    config = (0, base, 4, Format.INT, B, R, k, Rounding.FLOOR)
    model.program(region_csr_writes(PARAMS, *config))
    new = block_lines(5, B)
    model.rwd(RwdOpcode.MEM_WR, model.address(View.WEIGHT_MAJOR, base), 200, new[0], ALL_BYTES, 0)
    (illegal,) = model.req(ReqOpcode.MEM_RD, model.address(View.PACKED_K, base, 9), 100)
    assert not model.gather_flushes, "the model flushes nothing for an illegal-k read"
    offered = {}

    def script(b):
        yield from b.program(*config)
        b.write(200, View.WEIGHT_MAJOR, base, new[0])
        offered["write"] = b.cycle
        yield from b.idle(2)
        b.read(100, View.PACKED_K, base, 9)
        yield from b.wait(lambda: 100 in b.drs and 200 in b.ndr)

    bench.run(script)
    drs = bench.drs[100][0]
    assert (drs["opcode"], drs["data"], drs["poison"]) == (illegal.opcode, illegal.data, illegal.poison)
    assert bench.drs[100][1] < bench.ndr[200][1], "the illegal-k read waited for the gathered block"
    assert bench.ndr[200][1] - offered["write"] >= WRITE_GATHER_IDLE_CYCLES, "the illegal-k read flushed the block"


# ---- DEVICE.md "Reset": AXI transactions in flight at a controller reset --------------------------------------
B8, BASE, K = 8, 0x80, 3
CONFIG = (0, BASE, 4, Format.INT, B8, 1, K, Rounding.FLOOR)      # INT8, R = 1: block b = lines BASE + 8b ..


def line_of(model, line):
    return int.from_bytes(model.memory[line].tobytes(), "little")


def reset_bench(lines):
    """A Bench whose model holds `lines` written raw from BASE (the script writes them the same way)."""
    bench = Bench()
    bench.model.program(region_csr_writes(PARAMS, *CONFIG))
    for i, value in enumerate(lines):
        bench.model.rwd(RwdOpcode.MEM_WR, bench.model.address(View.RAW, BASE + i), 1000 + i, value, ALL_BYTES, 0)
    return bench


def fill(b, lines):
    yield from b.program(*CONFIG)
    for i, value in enumerate(lines):
        b.write(1000 + i, View.RAW, BASE + i, value)
    yield from b.wait(lambda: all(1000 + i in b.ndr for i in range(len(lines))))


def expect_reads(bench, reads):
    """reads: tag -> (view, line, k); the DRS data against the model."""
    for tag, (view, line, k) in reads.items():
        (want,) = bench.model.req(ReqOpcode.MEM_RD, bench.model.address(view, line, k), tag)
        assert bench.drs[tag][0]["data"] == want.data, f"tag {tag}: {View(view).name} line {line:#x} wrong data"


def test_reset_with_a_read_burst_in_flight():
    """A packed k = 3 read's 3-beat R burst is held in the memory across the controller's reset; the memory
    sends it after the reset. Later reads must get their own data, not the old burst's beats."""
    lines = block_lines(3, 2 * B8)
    bench = reset_bench(lines)
    reads = {200: (View.RAW, BASE + 9, 0), 201: (View.RAW, BASE + 8, 0), 202: (View.PACKED_K, BASE + 8, K),
             203: (View.RAW, BASE + 1, 0), 204: (View.PACKED_K, BASE, K)}

    def script(b):
        yield from fill(b, lines)
        b.memory.hold["r"] = True
        b.read(100, View.PACKED_K, BASE, K)
        yield from b.wait(lambda: b.memory.ar)
        yield from b.reset()
        b.memory.hold["r"] = False
        yield from b.program(*CONFIG)
        for tag, (view, line, k) in reads.items():
            b.read(tag, view, line, k)
        yield from b.wait(lambda: all(tag in b.drs for tag in reads))
        yield from b.idle(4)
        status = yield from b.csr_read(CSR_STATUS)
        assert not status & STATUS_BUSY, "STATUS.busy stuck after the drain"

    bench.run(script)
    assert 100 not in bench.drs
    expect_reads(bench, reads)
    assert bench.memory.r_beats == 3 + 1 + 1 + 3 + 1 + 3


def test_reset_with_a_b_response_outstanding():
    """A write's B response is held across the controller's reset and sent after it, while the next write's
    data waits in the memory: the next write's Cmp must come only after its own B response."""
    lines = block_lines(4, B8)
    bench = reset_bench(lines)

    def script(b):
        yield from fill(b, lines)
        b.memory.hold["b"] = True
        b.write(1, View.RAW, BASE + 2, lines[0])
        yield from b.wait(lambda: b.memory.b)
        yield from b.reset()
        yield from b.program(*CONFIG)
        b.memory.hold["w"] = True
        b.write(2, View.RAW, BASE + 3, lines[1])
        yield from b.idle(3)
        b.memory.hold["b"] = False       # the stale B arrives while the new write's data is not accepted
        yield from b.idle(20)
        b.memory.hold["w"] = False
        yield from b.wait(lambda: 2 in b.ndr)
        yield from b.idle(4)
        yield from b.csr_read(CSR_STATUS)

    bench.run(script)
    # every Cmp accounted for: the fill's writes and write 2; none for write 1, which the reset cut while its B
    # was held (a Cmp for it would have left before its B, or the stale B completed it)
    assert sorted(bench.ndr) == sorted([1000 + i for i in range(len(lines))] + [2])
    burst = len(bench.memory.aw_log) - 1
    assert bench.memory.aw_log[burst][0] == BASE + 3
    assert bench.ndr[2][1] > bench.memory.b_cycles[burst], "the Cmp left before the write's own B response"
    assert bench.memory.lines[BASE + 3] == lines[1]
    assert not bench.csr_reads[-1] & STATUS_BUSY, "STATUS.busy stuck after the drain"


@pytest.mark.parametrize("view, beats_in", [(View.RAW, 0), (View.WEIGHT_MAJOR, 3)])
def test_reset_between_aw_and_w(view, beats_in):
    """The memory accepted a write's AW and `beats_in` of its W beats when the controller was reset: the
    controller completes the burst with WSTRB = 0 (memory beyond those beats unchanged, correct WLAST), and the
    next write lands at its own address."""
    old, new = block_lines(5, 2 * B8), block_lines(6, 2)
    bench = reset_bench(old)
    model = bench.model
    before = [line_of(model, BASE + i) for i in range(2 * B8)]
    model.rwd(RwdOpcode.MEM_WR, model.address(view, BASE), 50, new[0], ALL_BYTES, 0)
    model.flush_writes("idle")     # a gathered weight-major line goes out at the idle boundary
    interrupted = [line_of(model, BASE + i) for i in range(B8)]   # all of the interrupted write landed
    expected = {BASE + i: interrupted[i] if i < beats_in else before[i] for i in range(B8)}
    expected[BASE + 8] = new[1]

    def script(b):
        yield from fill(b, old)
        b.memory.w_budget = beats_in
        b.write(50, view, BASE, new[0])
        yield from b.wait(lambda: b.memory.aw and b.memory.w_budget == 0)
        yield from b.idle(3)
        yield from b.reset()
        b.memory.w_budget = None
        yield from b.program(*CONFIG)
        b.write(51, View.RAW, BASE + 8, new[1])
        yield from b.wait(lambda: 51 in b.ndr)
        yield from b.idle(4)

    bench.run(script)
    # every Cmp accounted for: the fill's writes and write 51; none for write 50, cut by the reset
    assert sorted(bench.ndr) == sorted([1000 + i for i in range(len(old))] + [51])
    got = {line: bench.memory.lines.get(line, 0) for line in expected}
    wrong = [hex(line) for line in expected if got[line] != expected[line]]
    assert not wrong, f"DRAM lines {wrong} differ (strobed beats after the reset, or data at the old address)"
    assert not bench.memory.aw and not bench.memory.w and not bench.memory.b


def test_reset_with_w_beats_ahead_of_their_aw():
    """The memory took a write's W beat but not yet its AW when the controller was reset (AXI lets W lead
    AW). The controller sends that AW again after the reset (the interrupted write lands at its own address)
    so the next write's AW is not paired with the old beat."""
    old, new = block_lines(7, B8), block_lines(8, 2)
    bench = reset_bench(old)

    def script(b):
        yield from fill(b, old)
        b.memory.hold["aw"] = True
        b.write(60, View.RAW, BASE + 4, new[0])
        yield from b.wait(lambda: b.memory.w)
        yield from b.idle(3)
        yield from b.reset()
        b.memory.hold["aw"] = False
        yield from b.program(*CONFIG)
        b.write(61, View.RAW, BASE + 5, new[1])
        yield from b.wait(lambda: 61 in b.ndr)
        yield from b.idle(4)

    bench.run(script)
    assert bench.memory.lines[BASE + 5] == new[1], "the next write's AW took the old W beat"
    assert bench.memory.lines[BASE + 4] in (old[4], new[0])
    assert not bench.memory.aw and not bench.memory.w and not bench.memory.b


def test_reset_of_controller_and_memory_together():
    """When the memory is reset with the controller (`axi_rst`), nothing is owed: the controller does not
    wait for the responses the memory dropped."""
    lines = block_lines(9, B8)
    bench = reset_bench(lines)
    reads = {300: (View.RAW, BASE + 1, 0), 301: (View.PACKED_K, BASE, K)}

    def script(b):
        yield from fill(b, lines)
        b.memory.hold["r"] = b.memory.hold["b"] = True
        b.read(100, View.PACKED_K, BASE, K)
        b.write(101, View.RAW, BASE + 2, lines[2])
        yield from b.wait(lambda: b.memory.ar and b.memory.b)
        yield from b.reset(memory_too=True)
        b.memory.hold["r"] = b.memory.hold["b"] = False
        yield from b.program(*CONFIG)
        for tag, (view, line, k) in reads.items():
            b.read(tag, view, line, k)
        b.write(302, View.RAW, BASE + 3, lines[3])
        yield from b.wait(lambda: all(tag in b.drs for tag in reads) and 302 in b.ndr)

    bench.run(script)
    expect_reads(bench, reads)
