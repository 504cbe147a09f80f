"""End-to-end smoke test of SmartQuantController (hdl/top.py) in the Amaranth simulator.

Programs a region over the CSR AXI-Lite port, writes two blocks through the weight-major view, reads them back
packed / expanded / weight-major / raw, and checks the data against golden/layout.py (packed_lines etc.),
every response against golden/device.py DeviceModel, and the counters read back over CSR.
"""
from __future__ import annotations

import random
from collections import deque

import numpy as np
from amaranth.sim import Simulator

from smartquant.golden import layout
from smartquant.golden.device import DeviceModel, PREDICTED_COUNTERS, region_csr_writes
from smartquant.hdl.cxl.messages import req_layout, rwd_layout, ndr_layout, drs_layout, pack, unpack
from smartquant.hdl.top import SmartQuantController
from smartquant.params import (
    ControllerParams, Counter, Format, NdrOpcode, ReqOpcode, RwdOpcode, Rounding, View, CSR_ID, CSR_COUNTER_BASE, ID_VALUE,
    CSR_CONTROL, CONTROL_NXM_AS_POISON, CONTROL_CLEAR_COUNTERS, counter_name, CSR_POISON_LINE, CSR_POISON_COMMAND,
    POISON_COMMAND_INJECT, POISON_COMMAND_CLEAR,
)

PARAMS = ControllerParams(data_width=128, b_max=16, n_regions=2, request_depth=8, dram_addr_bits=16)
W = PARAMS.data_width


class TopHarness:
    """Cycle-by-cycle driver of the top: CSR AXI-Lite master, CXL Req/RwD sources, NDR/DRS sinks, AXI memory."""

    def __init__(self, seed=0, stall=0.25, memory_latency=3, read_error_lines=(), write_error_lines=()):
        self.rng = random.Random(seed)
        # DRAM lines whose R beats answer RRESP = SLVERR / whose write bursts answer BRESP = SLVERR
        self.read_error_lines, self.write_error_lines = set(read_error_lines), set(write_error_lines)
        self.stall = stall
        self.memory_latency = memory_latency
        self.memory = np.zeros(((1 << PARAMS.dram_addr_bits) // PARAMS.line_bytes, PARAMS.line_bytes), np.uint8)
        self.steps = []   # ("csr_write", addr, value) / ("csr_read", addr) / ("req", fields) / ("rwd", fields) / ("drain",)
        self.csr_reads = []
        self.responses = {"ndr": [], "drs": []}
        self.first_read_latency = None

    def run(self, max_cycles=20000):
        dut = SmartQuantController(PARAMS)
        h = self
        rng = self.rng
        layouts = {"req": req_layout(PARAMS), "rwd": rwd_layout(PARAMS)}
        ndr_l, drs_l = ndr_layout(PARAMS), drs_layout(PARAMS)
        axi = dut.axi

        async def bench(ctx):
            steps = deque(self.steps)
            outstanding = 0          # CXL requests sent and not yet answered (MemSpecRd excluded by the caller)
            csr_op = None            # current CSR operation state
            ar_bursts, aw_bursts, b_queue = deque(), deque(), deque()
            cycle = 0
            while steps or csr_op or outstanding or ar_bursts or aw_bursts or b_queue:
                assert cycle < max_cycles, f"stuck: {len(steps)} steps left, {outstanding} responses missing"
                # ---- stimulus for this cycle ----
                step = steps[0] if steps else None
                send = None
                if csr_op is None and step is not None and step[0] in ("csr_write", "csr_read") and outstanding == 0:
                    csr_op = {"kind": step[0], "addr": step[1], "value": step[2] if len(step) > 2 else 0,
                              "aw": step[0] == "csr_write", "w": step[0] == "csr_write", "ar": step[0] == "csr_read"}
                    steps.popleft()
                elif step is not None and step[0] in ("req", "rwd") and csr_op is None and rng.random() > h.stall:
                    send = step
                elif step is not None and step[0] == "drain" and outstanding == 0 and csr_op is None:
                    steps.popleft()
                for channel in ("req", "rwd"):
                    port = dut.m2s_req if channel == "req" else dut.m2s_rwd
                    active = send is not None and send[0] == channel
                    ctx.set(port.valid, active)
                    if active:
                        ctx.set(port.payload.as_value(), pack(layouts[channel], **send[1]))
                ctx.set(dut.csr.awvalid, bool(csr_op and csr_op["aw"]))
                ctx.set(dut.csr.wvalid, bool(csr_op and csr_op["w"]))
                ctx.set(dut.csr.arvalid, bool(csr_op and csr_op["ar"]))
                if csr_op:
                    ctx.set(dut.csr.awaddr, csr_op["addr"])
                    ctx.set(dut.csr.araddr, csr_op["addr"])
                    ctx.set(dut.csr.wdata, csr_op["value"])
                    ctx.set(dut.csr.wstrb, 0xF)
                ctx.set(dut.csr.bready, 1)
                ctx.set(dut.csr.rready, 1)
                ctx.set(dut.s2m_ndr.ready, rng.random() > h.stall)
                ctx.set(dut.s2m_drs.ready, rng.random() > h.stall)
                # AXI memory: AR/AW ready at random, R beats after a latency, B after the last W beat
                ctx.set(axi.arready, rng.random() > h.stall)
                ctx.set(axi.awready, rng.random() > h.stall)
                ctx.set(axi.wready, bool(aw_bursts) and rng.random() > h.stall)
                r_valid = bool(ar_bursts) and ar_bursts[0][2] <= cycle and rng.random() > h.stall
                if r_valid:
                    first, beats_left, _, arid = ar_bursts[0]
                    ctx.set(axi.rdata, int.from_bytes(h.memory[first].tobytes(), "little"))
                    ctx.set(axi.rlast, beats_left == 1)
                    ctx.set(axi.rid, arid)
                    ctx.set(axi.rresp, 2 if first in h.read_error_lines else 0)
                ctx.set(axi.rvalid, r_valid)
                b_valid = bool(b_queue) and b_queue[0][1] <= cycle
                if b_valid:
                    ctx.set(axi.bid, b_queue[0][0])
                    ctx.set(axi.bresp, 2 if b_queue[0][2] else 0)
                ctx.set(axi.bvalid, b_valid)

                # ---- handshakes ----
                if send is not None:
                    port = dut.m2s_req if send[0] == "req" else dut.m2s_rwd
                    if ctx.get(port.ready):
                        steps.popleft()
                        if not (send[0] == "req" and send[1]["opcode"] == ReqOpcode.MEM_SPEC_RD):
                            outstanding += 1
                        if send[0] == "req" and h.first_read_latency is None and send[1]["opcode"] == ReqOpcode.MEM_RD:
                            h.first_read_latency = [cycle, None, None]
                if csr_op:
                    if csr_op["aw"] and ctx.get(dut.csr.awready):
                        csr_op["aw"] = False
                    if csr_op["w"] and ctx.get(dut.csr.wready):
                        csr_op["w"] = False
                    if csr_op["ar"] and ctx.get(dut.csr.arready):
                        csr_op["ar"] = False
                    if csr_op["kind"] == "csr_write" and ctx.get(dut.csr.bvalid):
                        csr_op = None
                    elif csr_op["kind"] == "csr_read" and ctx.get(dut.csr.rvalid):
                        h.csr_reads.append((csr_op["addr"], ctx.get(dut.csr.rdata)))
                        csr_op = None
                for name, port, lay in (("ndr", dut.s2m_ndr, ndr_l), ("drs", dut.s2m_drs, drs_l)):
                    if ctx.get(port.valid) and ctx.get(port.ready):
                        h.responses[name].append(unpack(lay, ctx.get(port.payload.as_value())))
                        outstanding -= 1
                        if name == "drs" and h.first_read_latency and h.first_read_latency[2] is None:
                            h.first_read_latency[2] = cycle
                if ctx.get(axi.arvalid) and ctx.get(axi.arready):
                    if h.first_read_latency and h.first_read_latency[1] is None:
                        h.first_read_latency[1] = cycle
                    ar_bursts.append([ctx.get(axi.araddr) >> PARAMS.line_offset_bits, ctx.get(axi.arlen) + 1,
                                      cycle + h.memory_latency, ctx.get(axi.arid)])
                if r_valid and ctx.get(axi.rready):
                    ar_bursts[0][0] += 1
                    ar_bursts[0][1] -= 1
                    if ar_bursts[0][1] == 0:
                        ar_bursts.popleft()
                if ctx.get(axi.awvalid) and ctx.get(axi.awready):
                    aw_bursts.append([ctx.get(axi.awaddr) >> PARAMS.line_offset_bits, ctx.get(axi.awlen) + 1,
                                      ctx.get(axi.awid), False])
                if ctx.get(axi.wvalid) and ctx.get(axi.wready):
                    line, beats_left, awid, failed = aw_bursts[0]
                    aw_bursts[0][3] = failed = failed or line in h.write_error_lines
                    assert ctx.get(axi.wlast) == (beats_left == 1)
                    data = ctx.get(axi.wdata).to_bytes(PARAMS.line_bytes, "little")
                    strobe = ctx.get(axi.wstrb)
                    for byte in range(PARAMS.line_bytes):
                        if strobe >> byte & 1:
                            h.memory[line, byte] = data[byte]
                    aw_bursts[0][0] += 1
                    aw_bursts[0][1] -= 1
                    if aw_bursts[0][1] == 0:
                        aw_bursts.popleft()
                        b_queue.append((awid, cycle + 1, failed))
                if b_valid and ctx.get(axi.bready):
                    b_queue.popleft()
                await ctx.tick()
                cycle += 1
            h.cycles = cycle

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()


def test_program_write_and_read_back_end_to_end():
    rng = np.random.default_rng(11)
    B, R, base, k_packed, k_expanded = 8, 2, 0x80, 3, 5
    n_blocks = 2 * R
    weights = rng.integers(-128, 128, size=n_blocks * W)
    blocks = layout.to_blocks(layout.fields_from_ints(weights, B), W, R)
    weight_major = layout.weight_major_lines(blocks, B)          # (blocks, B, W/8): what the host writes
    h = TopHarness(seed=3)
    model = DeviceModel(PARAMS)
    expected = {}   # tag -> response from the model

    def csr_write(addr, value):
        h.steps.append(("csr_write", addr, value))
        model.csr_write(addr, value)

    def req(opcode, address, tag):
        h.steps.append(("req", dict(opcode=opcode, address=address, tag=tag, ld_id=tag & 0xF)))
        for response in model.req(opcode, address, tag, tag & 0xF):
            expected[(response.channel, tag)] = response

    def rwd(address, tag, data, opcode=RwdOpcode.MEM_WR, poison=0):
        h.steps.append(("rwd", dict(opcode=opcode, address=address, tag=tag, ld_id=tag & 0xF, poison=poison,
                                    byte_enable=(1 << PARAMS.line_bytes) - 1, data=data)))
        for response in model.rwd(opcode, address, tag, data, (1 << PARAMS.line_bytes) - 1, poison, tag & 0xF):
            expected[(response.channel, tag)] = response

    h.steps.append(("csr_read", CSR_ID))
    for addr, value in region_csr_writes(PARAMS, 0, base, n_blocks // R, Format.INT, B, R, k_packed, Rounding.MIDPOINT):
        csr_write(addr, value)
    tag = 0
    for block in range(n_blocks):
        for j in range(B):
            rwd(model.address(View.WEIGHT_MAJOR, base + block * B + j), tag,
                int.from_bytes(weight_major[block, j].tobytes(), "little"), poison=int(block == 3 and j == 0))
            tag += 1
    h.steps.append(("drain",))
    reads = []
    for block in range(n_blocks):
        reads += [(View.PACKED_K, block, j, k_packed) for j in range(k_packed)]
    reads += [(View.EXPANDED_K, 1, j, k_expanded) for j in range(B)]
    reads += [(View.WEIGHT_MAJOR, 2, j, 0) for j in (0, 7)]
    reads += [(View.PACKED_DEFAULT, 0, 1, 0), (View.RAW, 0, 5, 0), (View.PACKED_K, 0, k_packed, k_packed)]
    read_tags = {}
    for view, block, j, k in reads:
        req(ReqOpcode.MEM_RD, model.address(view, base + block * B + j, k), tag)
        read_tags[tag] = (view, block, j, k)
        tag += 1
    req(ReqOpcode.MEM_INV, model.address(View.RAW, base), tag)
    tag += 1
    req(ReqOpcode.MEM_SPEC_RD, model.address(View.RAW, base), tag)
    tag += 1
    req(ReqOpcode.MEM_RD, model.address(View.RAW, 0x10), tag)   # no region: NXM
    tag += 1
    h.steps.append(("drain",))
    csr_write(CSR_CONTROL, CONTROL_NXM_AS_POISON)
    req(ReqOpcode.MEM_RD_DATA, model.address(6, base), tag)      # reserved view: a hole (poison stays 0)
    tag += 1
    req(ReqOpcode.MEM_RD_DATA, model.address(View.RAW, 0x10), tag)   # decode error, now answered with poison
    tag += 1
    h.steps.append(("drain",))
    for n in PREDICTED_COUNTERS + (Counter.BUSY_CYCLES, Counter.STALL_CYCLES):
        h.steps.append(("csr_read", CSR_COUNTER_BASE + 4 * n))

    h.run()

    assert h.csr_reads[0] == (CSR_ID, ID_VALUE)
    # data against golden/layout.py directly
    packed = layout.packed_lines(blocks, B, k_packed)
    expanded = layout.expanded_lines(blocks, B, k_expanded, Rounding.MIDPOINT)
    drs = {r["tag"]: r for r in h.responses["drs"]}
    for t, (view, block, j, k) in read_tags.items():
        if view == View.PACKED_K and j < k:
            want = packed[block, j]
        elif view == View.EXPANDED_K:
            want = expanded[block, j]
        elif view == View.WEIGHT_MAJOR:
            want = weight_major[block, j]
        else:
            continue
        assert drs[t]["data"] == int.from_bytes(want.tobytes(), "little"), f"{View(view).name} block {block} line {j}"
        assert drs[t]["poison"] == int(block == 3)
    # every response against the device model (completions may come in any order: match by channel and tag)
    got = {("drs", r["tag"]): r for r in h.responses["drs"]} | {("ndr", r["tag"]): r for r in h.responses["ndr"]}
    assert set(got) == set(expected)
    for key, want in expected.items():
        r = got[key]
        assert (r["opcode"], r["ld_id"], r["meta_field"], r["meta_value"]) == \
               (want.opcode, want.ld_id, want.meta_field, want.meta_value), key
        if key[0] == "drs":
            assert (r["poison"], r["data"]) == (want.poison, want.data), key
    # counters over CSR
    counters = {addr: value for addr, value in h.csr_reads[1:]}
    for n in PREDICTED_COUNTERS:
        assert counters[CSR_COUNTER_BASE + 4 * n] == model.counts[n], counter_name(n)
    busy, stall = (counters[CSR_COUNTER_BASE + 4 * n] for n in (Counter.BUSY_CYCLES, Counter.STALL_CYCLES))
    assert model.timing_counter_violations(busy, stall, h.cycles) == []
    assert stall > 0   # the harness stalls every channel a quarter of the time
    print("first MemRd: accept -> AR handshake", h.first_read_latency[1] - h.first_read_latency[0],
          "cycles, -> first DRS", h.first_read_latency[2] - h.first_read_latency[0], "cycles")


def test_ndr_arbiter_delivers_every_message_once_in_source_order():
    from smartquant.hdl.cxl.frontend import NdrArbiter
    dut = NdrArbiter(PARAMS)
    rng = random.Random(1)
    cmp_tags, write_tags = deque(range(100, 140)), deque(range(40))
    got = []

    async def bench(ctx):
        cmp_offer = write_offer = False
        stalled = None
        for _ in range(600):
            # a source keeps valid (and its payload) until the handshake
            cmp_offer = cmp_offer or (bool(cmp_tags) and rng.random() < 0.5)
            write_offer = write_offer or (bool(write_tags) and rng.random() < 0.5)
            ctx.set(dut.cmp.valid, cmp_offer)
            ctx.set(dut.write_ndr.valid, write_offer)
            if cmp_offer:
                ctx.set(dut.cmp.p.tag, cmp_tags[0])
            if write_offer:
                ctx.set(dut.write_ndr.p.tag, write_tags[0])
            ctx.set(dut.dev_load, rng.randrange(4))
            ctx.set(dut.ndr.ready, rng.random() < 0.6)
            if cmp_offer and ctx.get(dut.cmp.ready):
                cmp_tags.popleft()
                cmp_offer = False
            if write_offer and ctx.get(dut.write_ndr.ready):
                write_tags.popleft()
                write_offer = False
            if stalled is not None:   # a message not taken stays offered, unchanged (dev_load included)
                assert ctx.get(dut.ndr.valid) and ctx.get(dut.ndr.p.as_value()) == stalled
            stalled = None
            if ctx.get(dut.ndr.valid):
                held = ctx.get(dut.ndr.p.as_value())
                if ctx.get(dut.ndr.ready):
                    got.append(unpack(ndr_layout(PARAMS), held))
                else:
                    stalled = held
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    tags = [r["tag"] for r in got]
    assert sorted(tags) == list(range(40)) + list(range(100, 140))
    assert [t for t in tags if t < 100] == list(range(40)) and [t for t in tags if t >= 100] == list(range(100, 140))
    assert all(r["meta_field"] == 0b11 and r["meta_value"] == 0 and r["opcode"] == 0 for r in got)


def test_req_front_end_sorts_opcodes_and_counts_them():
    from smartquant.hdl.cxl.frontend import ReqFrontEnd
    dut = ReqFrontEnd(PARAMS)
    rng = random.Random(2)
    opcodes = [rng.randrange(16) for _ in range(120)]    # every 4-bit Req opcode (CXL 3.1 table, DEVICE.md §4)
    to_send = deque(enumerate(opcodes))
    reads, cmps = [], []
    events = [0] * 64

    async def bench(ctx):
        for _ in range(400):
            offer = bool(to_send)
            ctx.set(dut.req.valid, offer)
            if offer:
                tag, opcode = to_send[0]
                ctx.set(dut.req.p.opcode, opcode)
                ctx.set(dut.req.p.tag, tag)
                ctx.set(dut.req.p.address, tag * 3)
            ctx.set(dut.read.ready, rng.random() < 0.5)
            ctx.set(dut.cmp.ready, rng.random() < 0.5)
            if offer and ctx.get(dut.req.ready):
                to_send.popleft()
            if ctx.get(dut.read.valid) and ctx.get(dut.read.ready):
                reads.append((ctx.get(dut.read.p.tag), ctx.get(dut.read.p.address)))
            if ctx.get(dut.cmp.valid) and ctx.get(dut.cmp.ready):
                cmps.append(ctx.get(dut.cmp.p.tag))
            value = ctx.get(dut.events.as_value())
            for n in range(len(events)):
                events[n] += (value >> (8 * n)) & 0xFF
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not to_send
    # reads: MemRd, MemRdData, MemRdTEE, MemRdDataTEE; no response: MemRdFwd, MemWrFwd, MemSpecRd, MemSpecRdTEE
    reads_codes, silent_codes = (0b0001, 0b0010, 0b0101, 0b0110), (0b0011, 0b0100, 0b1000, 0b1100)
    assert reads == [(t, t * 3) for t, op in enumerate(opcodes) if op in reads_codes]
    assert cmps == [t for t, op in enumerate(opcodes) if op not in reads_codes + silent_codes]
    for counter, codes in ((Counter.REQ_MEM_INV, [0]), (Counter.REQ_MEM_RD, [1, 5]),
                           (Counter.REQ_MEM_RD_DATA, [2, 6]), (Counter.REQ_MEM_SPEC_RD, [8, 12]),
                           (Counter.REQ_MEM_INV_NT, [9]), (Counter.REQ_MEM_CLN_EVCT, [10]),
                           (Counter.REQ_BAD_OPCODE, [3, 4, 7, 11, 13, 14, 15])):
        assert events[counter] == sum(op in codes for op in opcodes), counter.name


def test_verilog_command_writes_the_top_with_contract_port_names(tmp_path, capsys):
    from smartquant.cli import main
    out = tmp_path / "top.v"
    assert main(["verilog", "-o", str(out), "--data-width", "128", "--b-max", "8", "--n-regions", "2"]) == 0
    text = out.read_text()
    assert "module smartquant_top" in text
    for port in ("m2s_req__payload", "m2s_rwd__ready", "s2m_ndr__valid", "s2m_drs__payload", "csr__awaddr",
                 "csr__rdata", "axi__arlen", "axi__wstrb", "axi__rdata", "clk", "rst"):
        assert port in text, port
    summary = capsys.readouterr().out
    assert "data_width       128" in summary and "n_regions        2" in summary and "m2s_req__payload" in summary
    # bad parameters: one-line error, exit status 2, no file
    bad = tmp_path / "bad.v"
    assert main(["verilog", "-o", str(bad), "--data-width", "100"]) == 2
    assert "data_width" in capsys.readouterr().err and not bad.exists()
    assert main(["verilog", "-o", str(bad), "--buffer-slots", "0"]) == 2
    assert "buffer_slots" in capsys.readouterr().err and not bad.exists()


def test_verilog_command_writes_the_axi_host_top(tmp_path, capsys):
    """--host-port axi: the AXI4 subordinate host__* (ID width from --host-axi-id-bits, 52-bit address, WUSER /
    RUSER) replaces the CXL.mem message ports; a bad host port or ID width is a one-line error."""
    import re
    from smartquant.cli import main
    out = tmp_path / "axi.v"
    assert main(["verilog", "-o", str(out), "--data-width", "128", "--b-max", "8", "--n-regions", "2",
                 "--host-port", "axi", "--host-axi-id-bits", "12"]) == 0
    text = out.read_text()
    assert "m2s_req" not in text.split(");")[0] and "s2m_drs" not in text.split(");")[0]
    for port, width in (("host__arid", 12), ("host__bid", 12), ("host__araddr", 52), ("host__rdata", 128),
                        ("host__wstrb", 16), ("host__wuser", 1), ("host__ruser", 1), ("csr__awaddr", 12),
                        ("axi__rdata", 128)):
        match = re.search(rf"(input|output)\s+(\[(\d+):0\]\s+)?{port};", text)
        assert match, port
        assert (int(match.group(3)) + 1 if match.group(3) else 1) == width, port
    assert "host_port        axi" in capsys.readouterr().out
    bad = tmp_path / "bad.v"
    assert main(["verilog", "-o", str(bad), "--host-port", "axi", "--host-axi-id-bits", "17"]) == 2
    assert "host_axi_id_bits" in capsys.readouterr().err and not bad.exists()
    assert main(["verilog", "-o", str(bad), "--host-port", "pcie"]) == 2
    assert "host_port must be one of 'cxl', 'axi'" in capsys.readouterr().err and not bad.exists()


class Host:
    """Steps for a TopHarness plus the DeviceModel's expected response of every tag (fed the same steps)."""

    def __init__(self, harness):
        self.h, self.model, self.expected, self.tag = harness, DeviceModel(PARAMS), {}, 0
        for line in harness.read_error_lines:
            self.model.inject_read_error(line)
        for line in harness.write_error_lines:
            self.model.inject_write_error(line)

    def csr_write(self, addr, value):
        self.h.steps.append(("csr_write", addr, value))
        self.model.csr_write(addr, value)

    def _next_tag(self):
        self.tag += 1
        return self.tag - 1

    def read(self, view, line, k=0):
        tag = self._next_tag()
        address = self.model.address(view, line, k)
        self.h.steps.append(("req", dict(opcode=ReqOpcode.MEM_RD, address=address, tag=tag, ld_id=tag & 0xF)))
        (self.expected[("drs", tag)],) = self.model.req(ReqOpcode.MEM_RD, address, tag, tag & 0xF)
        return tag

    def write(self, view, line, data: bytes, poison=0):
        tag = self._next_tag()
        address, value, enables = self.model.address(view, line), int.from_bytes(data, "little"), (1 << PARAMS.line_bytes) - 1
        self.h.steps.append(("rwd", dict(opcode=RwdOpcode.MEM_WR, address=address, tag=tag, ld_id=tag & 0xF,
                                         poison=poison, byte_enable=enables, data=value)))
        (self.expected[("ndr", tag)],) = self.model.rwd(RwdOpcode.MEM_WR, address, tag, value, enables, poison,
                                                        tag & 0xF)
        return tag

    def read_counters(self):
        self.h.steps.append(("drain",))
        for n in PREDICTED_COUNTERS:
            self.h.steps.append(("csr_read", CSR_COUNTER_BASE + 4 * n))

    def check(self):
        """Every response and every predicted counter (read over CSR) against the model."""
        h = self.h
        got = {("drs", r["tag"]): r for r in h.responses["drs"]} | {("ndr", r["tag"]): r for r in h.responses["ndr"]}
        assert set(got) == set(self.expected)
        for key, want in self.expected.items():
            r = got[key]
            assert (r["opcode"], r["ld_id"]) == (want.opcode, want.ld_id), key
            if key[0] == "drs":
                assert (r["poison"], r["data"]) == (want.poison, want.data), key
        counters = dict(h.csr_reads)
        for n in PREDICTED_COUNTERS:
            assert counters[CSR_COUNTER_BASE + 4 * n] == self.model.counts[n], counter_name(n)
        return got


def test_toward_zero_expanded_reads_end_to_end():
    """REGION_CONFIG rounding 2 over CSR: INT8 (R = 1) and BF16 (R = 2) regions written weight-major, read
    expanded at several k: data against golden/layout.py, DRAM lines read still k per block."""
    rng = np.random.default_rng(21)
    h = TopHarness(seed=5)
    host = Host(h)
    int8 = dict(base=0x80, B=8, R=1, n_blocks=2, fmt=Format.INT)
    bf16 = dict(base=0x200, B=16, R=2, n_blocks=2, fmt=Format.BF16)
    int8["weights"] = rng.integers(-128, 128, size=2 * W)
    bf16["weights"] = rng.standard_normal(2 * W).astype(np.float32)
    reads = {}
    for index, region in enumerate((int8, bf16)):
        B, R = region["B"], region["R"]
        for addr, value in region_csr_writes(PARAMS, index, region["base"], region["n_blocks"] // R, region["fmt"],
                                             B, R, B // 2, Rounding.TOWARD_ZERO):
            host.csr_write(addr, value)
        blocks = layout.to_blocks(layout.fields_of(region["weights"], B, region["fmt"]), W, R)
        weight_major = layout.weight_major_lines(blocks, B)
        for block in range(region["n_blocks"]):
            for j in range(B):
                host.write(View.WEIGHT_MAJOR, region["base"] + block * B + j, weight_major[block, j].tobytes())
        h.steps.append(("drain",))
        for k in (1, B // 2 - 1, B - 1):
            expanded = layout.expanded_lines(blocks, B, k, Rounding.TOWARD_ZERO, region["fmt"])
            for block in range(region["n_blocks"]):
                for j in range(B):
                    reads[host.read(View.EXPANDED_K, region["base"] + block * B + j, k)] = expanded[block, j]
    host.csr_write(CSR_CONTROL, CONTROL_CLEAR_COUNTERS)
    for k in (3, 5):   # DRAM traffic of one INT8 block read expanded at k
        for j in range(int8["B"]):
            host.read(View.EXPANDED_K, int8["base"] + int8["B"] + j, k)
    host.read_counters()
    h.run()
    got = host.check()
    for tag, want in reads.items():
        assert got[("drs", tag)]["data"] == int.from_bytes(want.tobytes(), "little"), f"tag {tag}"
    counters = dict(h.csr_reads)
    assert counters[CSR_COUNTER_BASE + 4 * Counter.DRAM_LINES_READ] == 3 + 5


def test_backend_errors_end_to_end():
    """RRESP / BRESP errors through the whole controller: poisoned DRS, poison-list record of a failed write,
    axi_errors over CSR, all predicted by the DeviceModel's error hooks."""
    B, R, base = 4, 2, 0x100
    read_errors = {base + 0 * 8 + 1 * 2 + 1}      # plane 1 of block 1
    write_errors = {base + 1 * 8 + 2 * 2 + 0}     # plane 2 of block 2
    h = TopHarness(seed=8, read_error_lines=read_errors, write_error_lines=write_errors)
    host = Host(h)
    for addr, value in region_csr_writes(PARAMS, 0, base, 2, Format.INT, B, R, 2, Rounding.FLOOR):
        host.csr_write(addr, value)
    data = np.random.default_rng(4).integers(0, 256, size=(4 * B, PARAMS.line_bytes), dtype=np.uint8)
    for block in range(4):
        for j in range(B):
            host.write(View.WEIGHT_MAJOR, base + block * B + j, data[block * B + j].tobytes())
    h.steps.append(("drain",))
    poisoned = {}
    for block in range(4):
        for view, k in ((View.PACKED_K, 1), (View.PACKED_K, 2), (View.EXPANDED_K, 3)):
            for j in range(k if view == View.PACKED_K else B):
                poisoned[host.read(view, base + block * B + j, k)] = (block == 2) or (block == 1 and k >= 2)
    for line in sorted(read_errors | write_errors):
        poisoned[host.read(View.RAW, line)] = True
    host.read_counters()
    h.run()
    got = host.check()
    for tag, want in poisoned.items():
        assert got[("drs", tag)]["poison"] == int(want), f"tag {tag}"
    counters = dict(h.csr_reads)
    assert counters[CSR_COUNTER_BASE + 4 * Counter.AXI_ERRORS] == host.model.counts[Counter.AXI_ERRORS] > 0


def test_poison_per_line_end_to_end():
    """Per-line poison through the whole controller (DEVICE.md §4), by hand and against the model. Regressions
    of the per-block table: a raw write's poison reached reads of the other planes of its block, writes never
    cleared poison, and there was no CSR inject or clear."""
    B, R, base = 4, 2, 0x100            # plane p of block b = 2s + r: line base + 8s + 2p + r
    h = TopHarness(seed=9)
    host = Host(h)
    for addr, value in region_csr_writes(PARAMS, 0, base, 2, Format.INT, B, R, 2, Rounding.FLOOR):
        host.csr_write(addr, value)
    expect = {}
    host.write(View.RAW, base + 5, bytes(range(16)), poison=1)         # block 1 (s 0, r 1), plane 2
    h.steps.append(("drain",))
    expect[host.read(View.PACKED_K, base + 1 * B, 2)] = 0               # planes 0, 1
    expect[host.read(View.PACKED_K, base + 1 * B + 2, 3)] = 1           # planes 0..2
    expect[host.read(View.RAW, base + 1)] = 0                           # plane 0 of block 1
    host.csr_write(CSR_POISON_LINE, base + 8 + 2)                       # block 2 (s 1, r 0), plane 1
    host.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_INJECT)
    expect[host.read(View.PACKED_K, base + 2 * B, 1)] = 0
    expect[host.read(View.PACKED_K, base + 2 * B + 1, 2)] = 1
    expect[host.read(View.PACKED_DEFAULT, base + 2 * B)] = 1            # default k = 2
    expect[host.read(View.EXPANDED_K, base + 2 * B + 3, 4)] = 1
    host.write(View.RAW, base + 5, bytes(16))                           # a MemWr covers the line: cleared
    h.steps.append(("drain",))
    expect[host.read(View.PACKED_K, base + 1 * B + 2, 3)] = 0
    host.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_CLEAR)
    expect[host.read(View.PACKED_K, base + 2 * B + 1, 2)] = 0
    host.read_counters()
    h.run()
    got = host.check()
    assert [got[("drs", tag)]["poison"] for tag in expect] == list(expect.values())


def test_generated_verilog_has_no_constant_never_running_blocks(tmp_path):
    """Every entry of every unit's counter-event array is driven: Verilator -Wall finds no ALWNEVER (a constant
    `always @*` that never runs, random under +verilator+rand+reset) and no UNDRIVEN bits in the Verilog."""
    import subprocess
    from amaranth.back import verilog
    from smartquant.sim.runner import verilator_environment
    root = verilator_environment()
    source = tmp_path / "top.v"
    params = ControllerParams(data_width=64, b_max=8, n_regions=2, request_depth=4, dram_addr_bits=16)
    source.write_text(verilog.convert(SmartQuantController(params), name="smartquant_top", emit_src=False))
    result = subprocess.run([f"{root}/bin/verilator", "--lint-only", "-Wall", "--top-module", "smartquant_top",
                             str(source)], capture_output=True, text=True)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("%Warning-")]
    assert warnings, "verilator -Wall printed no warnings at all: is the lint running?"
    assert not [w for w in warnings if "ALWNEVER" in w or "UNDRIVEN" in w], warnings


def test_write_path_sends_mem_rd_fill_to_the_read_side():
    """RwD split (DEVICE.md §4): MemRdFill / MemRdFillTEE (0101, 1101) leave the write path on `fill` with their
    address, tag and LD-ID in arrival order; every other opcode (here to unmapped addresses: no region is
    programmed) is answered by an NDR in arrival order (Cmp; BI-ConflictAck for BIConflict 0100); each fill
    counts rwd_mem_rd_fill."""
    from smartquant.hdl.engine.write_path import WritePath
    dut = WritePath(PARAMS)
    rng = random.Random(7)
    opcodes = [rng.randrange(16) for _ in range(150)]
    to_send = deque(enumerate(opcodes))
    fills, cmps = [], []
    events = [0] * 64

    async def bench(ctx):
        for _ in range(1500):
            offer = bool(to_send)
            ctx.set(dut.rwd.valid, offer)
            if offer:
                tag, opcode = to_send[0]
                ctx.set(dut.rwd.p.opcode, opcode)
                ctx.set(dut.rwd.p.tag, tag)
                ctx.set(dut.rwd.p.ld_id, tag & 0xF)
                ctx.set(dut.rwd.p.address, tag * 5)
                ctx.set(dut.rwd.p.data, tag * 7)
            ctx.set(dut.fill.ready, rng.random() < 0.5)
            ctx.set(dut.ndr.ready, rng.random() < 0.5)
            if offer and ctx.get(dut.rwd.ready):
                to_send.popleft()
            if ctx.get(dut.fill.valid) and ctx.get(dut.fill.ready):
                fills.append((ctx.get(dut.fill.p.tag), ctx.get(dut.fill.p.address), ctx.get(dut.fill.p.ld_id)))
            if ctx.get(dut.ndr.valid) and ctx.get(dut.ndr.ready):
                cmps.append((ctx.get(dut.ndr.p.tag), ctx.get(dut.ndr.p.opcode)))
            value = ctx.get(dut.events.as_value())
            events[Counter.RWD_MEM_RD_FILL] += (value >> (8 * Counter.RWD_MEM_RD_FILL)) & 0xFF
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not to_send
    fill_codes = (0b0101, 0b1101)
    assert fills == [(t, t * 5, t & 0xF) for t, op in enumerate(opcodes) if op in fill_codes]
    assert cmps == [(t, NdrOpcode.BI_CONFLICT_ACK if op == RwdOpcode.BI_CONFLICT else NdrOpcode.CMP)
                    for t, op in enumerate(opcodes) if op not in fill_codes]
    assert RwdOpcode.BI_CONFLICT in opcodes and events[Counter.RWD_MEM_RD_FILL] == len(fills) > 0


def test_req_front_end_merges_fills_ahead_of_req_reads():
    """ReqFrontEnd.fill (MemRdFill from RwD) reaches `read` with its fields; Req reads keep their order."""
    from smartquant.hdl.cxl.frontend import ReqFrontEnd
    dut = ReqFrontEnd(PARAMS)
    rng = random.Random(3)
    reqs = deque((t, ReqOpcode.MEM_RD) for t in range(60))
    fills = deque(range(1000, 1030))
    out = []

    async def bench(ctx):
        for _ in range(600):
            ctx.set(dut.req.valid, bool(reqs))
            if reqs:
                ctx.set(dut.req.p.opcode, reqs[0][1])
                ctx.set(dut.req.p.tag, reqs[0][0])
                ctx.set(dut.req.p.address, reqs[0][0] * 3)
            offer_fill = bool(fills) and rng.random() < 0.3
            ctx.set(dut.fill.valid, offer_fill)
            if offer_fill:
                ctx.set(dut.fill.p.tag, fills[0])
                ctx.set(dut.fill.p.address, fills[0] * 3)
            ctx.set(dut.read.ready, rng.random() < 0.6)
            ctx.set(dut.cmp.ready, 1)
            if reqs and ctx.get(dut.req.ready):
                reqs.popleft()
            if offer_fill and ctx.get(dut.fill.ready):
                fills.popleft()
            if ctx.get(dut.read.valid) and ctx.get(dut.read.ready):
                out.append((ctx.get(dut.read.p.tag), ctx.get(dut.read.p.address)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not reqs and not fills
    assert [entry for entry in out if entry[0] < 1000] == [(t, t * 3) for t in range(60)]
    assert [entry for entry in out if entry[0] >= 1000] == [(t, t * 3) for t in range(1000, 1030)]
