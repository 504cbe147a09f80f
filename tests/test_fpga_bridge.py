"""FPGA host bridge in the Amaranth simulator: UART, framing, errors and resynchronisation.

Expectations come from outside the RTL: the CRC-8/SMBUS check value of the catalogue, a Python UART bit-level
encoder/decoder, the protocol module's encoder/decoder (shared with the host tool), the CSR values of
docs/DEVICE.md §6, and the golden device model for end-to-end reads and writes.
"""
import dataclasses
import os
import random
import re
import select
import threading

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from smartquant.errors import SmartquantError
from smartquant.fpga import protocol
from smartquant.scripts import board_host
from smartquant.fpga.protocol import FrameType, ErrorCode, FrameDecoder
from smartquant.fpga.bridge import HostBridge
from smartquant.fpga.uart import UartRx, UartTx
from smartquant.fpga.axi_ram import AxiRam
from smartquant.fpga.system import BridgedSystem, board_params
from smartquant.golden import layout
from smartquant.golden.device import DeviceModel, PREDICTED_COUNTERS, region_csr_writes, superblocks_for
from smartquant.hdl.csr.csr_block import CsrBlock
from smartquant.hdl.cxl.messages import req_layout, rwd_layout, ndr_layout, drs_layout, pack, unpack
from smartquant.params import (ControllerParams, ReqOpcode, RwdOpcode, DrsOpcode, NdrOpcode, View, Format,
                               Rounding, hpa, CSR_ID, CSR_VERSION, CSR_PARAMS, CSR_REGION_BASE, CSR_COUNTER_BASE,
                               ID_VALUE, VERSION_VALUE, META_FIELD_NO_OP, TIMING_COUNTERS)

SMALL = ControllerParams(data_width=64, b_max=8, n_regions=2, dram_addr_bits=12)
TIMEOUT = 40


# --- pure protocol ------------------------------------------------------------------------------------------
def test_crc8_catalogue_check_value():
    # CRC-8/SMBUS check value from the CRC catalogue: crc("123456789") = 0xF4
    assert protocol.crc8(b"123456789") == 0xF4


def test_response_frames_round_trip_through_the_decoder():
    line_bytes = 8
    responses = [protocol.Info(1, 8, 8, 12), protocol.Drs(1, 0xBEEF, 3, 1, 2, bytes(range(8))),
                 protocol.Ndr(0, 7, 0, 3), protocol.CsrReadData(0, 0x12345678), protocol.CsrWriteResp(2),
                 protocol.Error(ErrorCode.BAD_CRC, 0x03)]
    stream = b"\x00\x13" + b"".join(protocol.encode_response(r) for r in responses)
    decoder = FrameDecoder(line_bytes)
    got = []
    for i in range(0, len(stream), 5):                 # arbitrary chunking, as a serial port delivers
        got += decoder.feed(stream[i:i + 5])
    assert got == responses and decoder.skipped == 2


# --- UART ---------------------------------------------------------------------------------------------------
def test_uart_bit_timing_against_a_python_uart():
    divisor = 5
    dut = Module()
    dut.submodules.tx = tx = UartTx(divisor)
    dut.submodules.rx = rx = UartRx(divisor)
    message = bytes([0x55, 0x00, 0xFF, 0xA5, 0x3C])
    received_by_rtl, sent_by_rtl = [], []

    async def drive_rx_line(ctx):       # Python UART -> RTL receiver
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(7)
        for byte in message:
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
            for bit in bits:
                ctx.set(rx.rx, bit)
                await ctx.tick().repeat(divisor)
        await ctx.tick().repeat(3 * divisor)

    async def collect_rx(ctx):
        async for _, _, valid, payload in ctx.tick().sample(rx.data.valid, rx.data.payload):
            if valid:
                received_by_rtl.append(payload)

    async def drive_tx(ctx):            # RTL transmitter -> Python UART sampling mid-bit
        for byte in message:
            ctx.set(tx.data.payload, byte)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
            ctx.set(tx.data.valid, 0)
            # after the accepting edge the start bit is on the line for `divisor` cycles
            bits = []
            await ctx.tick().repeat(divisor // 2)
            for _ in range(10):
                bits.append(ctx.get(tx.tx))
                await ctx.tick().repeat(divisor)
            assert bits[0] == 0 and bits[9] == 1, bits
            sent_by_rtl.append(sum(b << i for i, b in enumerate(bits[1:9])))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(collect_rx)
    sim.add_testbench(drive_rx_line)
    sim.add_testbench(drive_tx)
    sim.run()
    assert bytes(received_by_rtl) == message
    assert bytes(sent_by_rtl) == message


# --- bridge with a stand-in controller ----------------------------------------------------------------------
class BridgeBench:
    """Bridge + the real CsrBlock on its CSR bus; the CXL channels end in a Python stand-in controller that
    records every message and answers from a scripted queue (so the bridge alone is under test)."""

    def __init__(self, params=SMALL, seed=1, request_ready=0.7):
        self.request_ready = request_ready
        self.params = params
        self.top = Module()
        self.top.submodules.bridge = self.bridge = HostBridge(params, timeout_cycles=TIMEOUT)
        self.top.submodules.csr = self.csr = CsrBlock(params)
        wiring.connect(self.top, self.bridge.csr, self.csr.bus)
        self.requests, self.writes = [], []
        self.drs_queue, self.ndr_queue = [], []
        self.received = bytearray()
        self.rng = random.Random(seed)

    async def send(self, ctx, data: bytes, gap: int = 0):
        for byte in data:
            ctx.set(self.bridge.rx.payload, byte)
            ctx.set(self.bridge.rx.valid, 1)
            await ctx.tick()
            ctx.set(self.bridge.rx.valid, 0)
            if gap:
                await ctx.tick().repeat(gap)

    async def responses(self, ctx, count: int, limit: int = 20000):
        decoder = FrameDecoder(self.params.line_bytes)
        out = []
        for _ in range(limit):
            await ctx.tick()
            out += decoder.feed(bytes(self.take_received()))
            if len(out) >= count:
                return out
        raise AssertionError(f"only {len(out)} of {count} responses arrived: {out}")

    def take_received(self):
        data, self.received = self.received, bytearray()
        return data

    async def tx_sink(self, ctx):
        bridge = self.bridge
        async for _, _, valid, ready, payload in ctx.tick().sample(bridge.tx.valid, bridge.tx.ready,
                                                                   bridge.tx.payload):
            if valid and ready:
                self.received.append(payload)
            ctx.set(bridge.tx.ready, self.rng.random() < 0.6)     # a UART-like slow, bursty sink

    async def stand_in_controller(self, ctx):
        bridge = self.bridge
        p = self.params
        drs_l, ndr_l = drs_layout(p), ndr_layout(p)
        async for _, _, req_v, req_r, req_p, rwd_v, rwd_r, rwd_p, drs_v, drs_r, ndr_v, ndr_r in ctx.tick().sample(
                bridge.m2s_req.valid, bridge.m2s_req.ready, bridge.m2s_req.payload.as_value(),
                bridge.m2s_rwd.valid, bridge.m2s_rwd.ready, bridge.m2s_rwd.payload.as_value(),
                bridge.s2m_drs.valid, bridge.s2m_drs.ready, bridge.s2m_ndr.valid, bridge.s2m_ndr.ready):
            if req_v and req_r:
                self.requests.append(unpack(req_layout(p), req_p))
            if rwd_v and rwd_r:
                self.writes.append(unpack(rwd_layout(p), rwd_p))
            if drs_v and drs_r:
                self.drs_queue.pop(0)
            if ndr_v and ndr_r:
                self.ndr_queue.pop(0)
            # the controller back-pressures now and then
            ctx.set(bridge.m2s_req.ready, self.rng.random() < self.request_ready)
            ctx.set(bridge.m2s_rwd.ready, self.rng.random() < self.request_ready)
            ctx.set(bridge.s2m_drs.valid, bool(self.drs_queue))
            if self.drs_queue:
                ctx.set(bridge.s2m_drs.payload.as_value(), pack(drs_l, **self.drs_queue[0]))
            ctx.set(bridge.s2m_ndr.valid, bool(self.ndr_queue))
            if self.ndr_queue:
                ctx.set(bridge.s2m_ndr.payload.as_value(), pack(ndr_l, **self.ndr_queue[0]))

    def run(self, testbench):
        sim = Simulator(self.top)
        sim.add_clock(1e-6)
        sim.add_process(self.tx_sink)
        sim.add_process(self.stand_in_controller)
        sim.add_testbench(testbench)
        sim.run()


def test_bridge_carries_requests_writes_and_responses_unchanged():
    bench = BridgeBench()
    p = bench.params
    rng = random.Random(7)
    read_address = hpa(p, View.PACKED_K, 0x5C0, k=3)
    line = bytes(rng.randrange(256) for _ in range(p.line_bytes))
    write_address = hpa(p, View.WEIGHT_MAJOR, 0x240)
    drs = dict(opcode=DrsOpcode.MEM_DATA_NXM, tag=0x1234, ld_id=5, meta_field=META_FIELD_NO_OP, dev_load=2,
               poison=1, data=int.from_bytes(line, "little"))
    ndr = dict(opcode=NdrOpcode.CMP, tag=0xABCD, ld_id=9, meta_field=META_FIELD_NO_OP, dev_load=1)

    async def testbench(ctx):
        await bench.send(ctx, protocol.encode_ping())
        await bench.send(ctx, protocol.encode_req(ReqOpcode.MEM_RD, 0x1234, read_address, ld_id=5))
        await bench.send(ctx, protocol.encode_rwd(RwdOpcode.MEM_WR_PTL, 0xABCD, write_address, line,
                                                  byte_enable=0xF0, poison=True, ld_id=9))
        got = await bench.responses(ctx, 1)
        assert got == [protocol.Info(protocol.PROTOCOL_VERSION, p.line_bytes, p.b_max, p.dram_addr_bits)]
        bench.drs_queue.append(drs)
        bench.ndr_queue.append(ndr)
        got = await bench.responses(ctx, 2)
        assert got == [protocol.Ndr(NdrOpcode.CMP, 0xABCD, 9, 1),            # NDR has priority over DRS
                       protocol.Drs(DrsOpcode.MEM_DATA_NXM, 0x1234, 5, 1, 2, line)]

    bench.run(testbench)
    line_shift = p.line_offset_bits
    assert bench.requests == [dict(opcode=ReqOpcode.MEM_RD, address=read_address >> line_shift, tag=0x1234,
                                   ld_id=5, meta_field=META_FIELD_NO_OP, meta_value=0, snp_type=0)]
    assert bench.writes == [dict(opcode=RwdOpcode.MEM_WR_PTL, address=write_address >> line_shift, tag=0xABCD,
                                 ld_id=9, meta_field=META_FIELD_NO_OP, meta_value=0, snp_type=0, poison=1,
                                 byte_enable=0xF0, data=int.from_bytes(line, "little"))]


def test_bridge_csr_access_reaches_the_csr_block():
    bench = BridgeBench()
    base_0 = CSR_REGION_BASE

    async def testbench(ctx):
        await bench.send(ctx, protocol.encode_csr_read(CSR_ID))
        # back to back: the first access is over (a few cycles) before the second 5-byte frame has arrived
        await bench.send(ctx, protocol.encode_csr_read(CSR_VERSION))
        got = await bench.responses(ctx, 2)
        assert got == [protocol.CsrReadData(0, ID_VALUE), protocol.CsrReadData(0, VERSION_VALUE)]
        await bench.send(ctx, protocol.encode_csr_write(base_0, 0x2A))
        assert await bench.responses(ctx, 1) == [protocol.CsrWriteResp(0)]
        await bench.send(ctx, protocol.encode_csr_read(base_0))
        assert await bench.responses(ctx, 1) == [protocol.CsrReadData(0, 0x2A)]
        # beyond the controller's 12-bit CSR space: SLVERR, no aliasing onto ID at 0x000
        await bench.send(ctx, protocol.encode_csr_read(0x1000))
        assert await bench.responses(ctx, 1) == [protocol.CsrReadData(2, 0)]

    bench.run(testbench)


def test_malformed_frames_get_error_frames_and_the_bridge_resynchronises():
    bench = BridgeBench()
    p = bench.params
    good_read = protocol.encode_req(ReqOpcode.MEM_RD, 0x0042, hpa(p, View.RAW, 0x80))
    bad_crc = bytearray(good_read)
    bad_crc[-1] ^= 0x01
    bad_length = protocol.frame(FrameType.REQ, bytes(10))                  # REQ needs 11 payload bytes
    unknown_type = protocol.frame(0x37, bytes(4))
    truncated = protocol.encode_csr_write(CSR_REGION_BASE, 7)[:-3]
    high_hpa = protocol.frame(FrameType.REQ, bytes([1, 0, 0, 0]) + (1 << 53).to_bytes(7, "little"))

    async def testbench(ctx):
        for bad, expected in [(bytes(bad_crc), protocol.Error(ErrorCode.BAD_CRC, FrameType.REQ)),
                              (bad_length, protocol.Error(ErrorCode.BAD_LENGTH, FrameType.REQ)),
                              (unknown_type, protocol.Error(ErrorCode.BAD_TYPE, 0x37)),
                              (truncated, protocol.Error(ErrorCode.TIMEOUT, FrameType.CSR_WRITE)),
                              (high_hpa, protocol.Error(ErrorCode.BAD_FIELD, FrameType.REQ))]:
            await bench.send(ctx, b"\x00\x11" + bad)        # line noise before the frame is ignored
            assert await bench.responses(ctx, 1) == [expected], bad.hex()
            await ctx.tick().repeat(TIMEOUT + 2)          # the line goes quiet: the bridge hunts again
            await bench.send(ctx, protocol.encode_ping())
            assert await bench.responses(ctx, 1) == [protocol.Info(protocol.PROTOCOL_VERSION, p.line_bytes,
                                                                   p.b_max, p.dram_addr_bits)]
        # a frame sent slowly (gaps shorter than the timeout) is still one frame
        await bench.send(ctx, good_read, gap=TIMEOUT // 2)
        for _ in range(50):
            await ctx.tick()

    bench.run(testbench)
    # none of the malformed frames reached the controller; the good one did, exactly once
    assert [r["tag"] for r in bench.requests] == [0x0042]
    assert bench.writes == []


def test_requests_faster_than_the_controller_takes_them_get_busy_not_lost():
    bench = BridgeBench(request_ready=0.0)          # a controller that takes no request at all
    p = bench.params

    async def testbench(ctx):
        await bench.send(ctx, protocol.encode_req(ReqOpcode.MEM_RD, 1, hpa(p, View.RAW, 0)))
        await bench.send(ctx, protocol.encode_req(ReqOpcode.MEM_RD, 2, hpa(p, View.RAW, 64)))
        assert await bench.responses(ctx, 1) == [protocol.Error(ErrorCode.BUSY, FrameType.REQ)]
        assert ctx.get(bench.bridge.m2s_req.valid)   # the first request is still offered, not dropped
        assert ctx.get(bench.bridge.m2s_req.p.tag) == 1

    bench.run(testbench)


# --- the board system: bridge + real controller + block RAM, against the golden model -----------------------
def _as_frame_response(response):
    """golden.device.Response -> protocol record (DevLoad is timing dependent: compared separately)."""
    line_bytes = SYSTEM_PARAMS.line_bytes
    if response.channel == "drs":
        return protocol.Drs(response.opcode, response.tag, response.ld_id, response.poison, 0,
                            response.data.to_bytes(line_bytes, "little"))
    return protocol.Ndr(response.opcode, response.tag, response.ld_id, 0)


def _without_dev_load(record):
    if isinstance(record, (protocol.Drs, protocol.Ndr)):
        assert 0 <= record.dev_load <= 3
        return dataclasses.replace(record, dev_load=0)
    return record


SYSTEM_PARAMS = board_params(data_width=64, b_max=8, ram_bytes=4096, n_regions=2)


class SystemBench:
    """BridgedSystem without the UART (byte streams) in the Amaranth simulator; a host that keeps a golden
    DeviceModel in step and checks every response frame against it."""

    def __init__(self, params=SYSTEM_PARAMS):
        self.params = params
        self.system = BridgedSystem(params, baud_divisor=4, timeout_cycles=TIMEOUT, serial=False)
        self.model = DeviceModel(params)
        self.decoder = FrameDecoder(params.line_bytes)
        self.pending = []
        self.tag = 0

    async def tx_sink(self, ctx):
        tx = self.system.tx
        ctx.set(tx.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(tx.valid, tx.payload):
            if valid:
                self.pending += self.decoder.feed(bytes([payload]))

    async def send(self, ctx, data: bytes):
        for byte in data:
            ctx.set(self.system.rx.payload, byte)
            ctx.set(self.system.rx.valid, 1)
            await ctx.tick()
        ctx.set(self.system.rx.valid, 0)

    async def collect(self, ctx, count, limit=20000):
        for _ in range(limit):
            if len(self.pending) >= count:
                got, self.pending = self.pending[:count], self.pending[count:]
                return [_without_dev_load(r) for r in got]
            await ctx.tick()
        raise AssertionError(f"timed out waiting for {count} responses, have {self.pending}")

    async def csr_write(self, ctx, address, value):
        self.model.csr_write(address, value)
        await self.send(ctx, protocol.encode_csr_write(address, value))
        assert await self.collect(ctx, 1) == [protocol.CsrWriteResp(0)]

    async def csr_read(self, ctx, address):
        await self.send(ctx, protocol.encode_csr_read(address))
        assert await self.collect(ctx, 1) == [protocol.CsrReadData(0, self.model.csr_read(address))], hex(address)

    def next_tag(self):
        self.tag = (self.tag + 1) & 0xFFFF
        return self.tag

    async def request(self, ctx, opcode, view, line, k=0):
        tag = self.next_tag()
        address = hpa(self.params, view, line * self.params.line_bytes, k)
        expected = [_as_frame_response(r) for r in
                    self.model.req(opcode, address >> self.params.line_offset_bits, tag)]
        await self.send(ctx, protocol.encode_req(opcode, tag, address))
        assert await self.collect(ctx, len(expected)) == expected, (view, line, k)

    async def write(self, ctx, view, line, data: bytes, byte_enable=None, poison=False, opcode=RwdOpcode.MEM_WR):
        tag = self.next_tag()
        address = hpa(self.params, view, line * self.params.line_bytes)
        enables = (1 << len(data)) - 1 if byte_enable is None else byte_enable
        expected = [_as_frame_response(r) for r in
                    self.model.rwd(opcode, address >> self.params.line_offset_bits, tag,
                                   int.from_bytes(data, "little"), enables, int(poison))]
        await self.send(ctx, protocol.encode_rwd(opcode, tag, address, data, enables, poison))
        assert await self.collect(ctx, len(expected)) == expected, (view, line)
        # the host waits for each Cmp, so the device passed an idle boundary: a gathered line has been written
        self.model.flush_writes("idle")

    def run(self, testbench):
        sim = Simulator(self.system)
        sim.add_clock(1e-6)
        sim.add_process(self.tx_sink)
        sim.add_testbench(testbench)
        sim.run()


def test_board_system_serves_a_tensor_at_precision_k_like_the_golden_model():
    bench = SystemBench()
    p = bench.params
    W, B, R, k_default = p.data_width, 8, 2, 3
    rng = np.random.default_rng(5)
    weights = rng.integers(-128, 128, size=3 * W)            # 3 blocks -> 2 superblocks of R = 2 (padded)
    raw = layout.encode(weights, B, Format.INT, R=R, W=W)
    base_line = 8
    n_superblocks = superblocks_for(weights.size, B, R, W)

    async def testbench(ctx):
        await bench.send(ctx, protocol.encode_ping())
        assert await bench.collect(ctx, 1) == [protocol.Info(protocol.PROTOCOL_VERSION, p.line_bytes, p.b_max,
                                                              p.dram_addr_bits)]
        for address in (CSR_ID, CSR_VERSION, CSR_PARAMS):
            await bench.csr_read(ctx, address)
        for address, value in region_csr_writes(p, 0, base_line, n_superblocks, Format.INT, B, R, k_default,
                                                Rounding.MIDPOINT):
            await bench.csr_write(ctx, address, value)
        for i, line in enumerate(raw):                                # load through the raw view
            await bench.write(ctx, View.RAW, base_line + i, line.tobytes())
        # a partial weight-major write with poison into block 2 (the padding block is the host's to use)
        await bench.write(ctx, View.WEIGHT_MAJOR, base_line + 2 * R * B - B + 1, bytes(range(1, 9)),
                          byte_enable=0b1111_0011, poison=True, opcode=RwdOpcode.MEM_WR_PTL)
        for block in range(3):
            superblock, slot = divmod(block, R)
            first = base_line + superblock * R * B + slot   # views 1..5 address block b at lines b*B ..
            view_line = base_line + block * B
            for j in range(k_default):
                await bench.request(ctx, ReqOpcode.MEM_RD, View.PACKED_K, view_line + j, k=k_default)
            await bench.request(ctx, ReqOpcode.MEM_RD, View.EXPANDED_K, view_line + 5, k=5)
            await bench.request(ctx, ReqOpcode.MEM_RD_DATA, View.PACKED_DEFAULT, view_line + 1)
            await bench.request(ctx, ReqOpcode.MEM_RD, View.WEIGHT_MAJOR, view_line + 7)
            await bench.request(ctx, ReqOpcode.MEM_RD, View.RAW, first + R)
        await bench.request(ctx, ReqOpcode.MEM_RD, View.PACKED_K, base_line + 5, k=3)      # j >= k: a hole
        await bench.request(ctx, ReqOpcode.MEM_RD, View.PACKED_K, base_line, k=9)          # k > B: a hole
        await bench.request(ctx, ReqOpcode.MEM_RD, View.RAW, 2)                            # no region: decode
        await bench.request(ctx, ReqOpcode.MEM_INV, View.RAW, 2)                           # NDR Cmp
        for counter in PREDICTED_COUNTERS:
            await bench.csr_read(ctx, CSR_COUNTER_BASE + 4 * counter)

    bench.run(testbench)


def test_uart_pins_to_controller_and_back():
    """The full serial path: Python UART bits into uart_rx, the CSR ID back out of uart_tx."""
    divisor = 4
    p = SYSTEM_PARAMS
    system = BridgedSystem(p, baud_divisor=divisor, timeout_cycles=20 * divisor * 10)
    received = FrameDecoder(p.line_bytes)
    responses = []

    async def host(ctx):
        ctx.set(system.uart_rx, 1)
        await ctx.tick().repeat(5)
        for byte in protocol.encode_ping() + protocol.encode_csr_read(CSR_ID):
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(system.uart_rx, bit)
                await ctx.tick().repeat(divisor)
        for _ in range(4000):
            if len(responses) == 2:
                break
            await ctx.tick()
        assert responses == [protocol.Info(protocol.PROTOCOL_VERSION, p.line_bytes, p.b_max, p.dram_addr_bits),
                             protocol.CsrReadData(0, ID_VALUE)]

    async def line_monitor(ctx):       # a Python UART receiver on uart_tx, sampling mid-bit
        countdown, bits = None, []
        async for _, _, line in ctx.tick().sample(system.uart_tx):
            if countdown is None:
                if line == 0:                       # start bit: first data bit centre is 1.5 bits away
                    countdown, bits = divisor + divisor // 2 - 1, []
                continue
            if countdown:
                countdown -= 1
                continue
            bits.append(line)
            countdown = divisor - 1
            if len(bits) == 9:
                assert bits[8] == 1, "stop bit"
                responses.extend(received.feed(bytes([sum(b << i for i, b in enumerate(bits[:8]))])))
                countdown = None

    sim = Simulator(system)
    sim.add_clock(1e-6)
    sim.add_process(line_monitor)
    sim.add_testbench(host)
    sim.run()


# --- host tool against a Python device (the protocol's device side on top of DeviceModel) ------------------
class ModelDevice:
    """Byte transport for scripts/board_host.Board: parses host frames, answers from a golden DeviceModel."""

    def __init__(self, params, seed=3):
        self.params = params
        self.model = DeviceModel(params)
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.rng = random.Random(seed)

    def write(self, data: bytes):
        self.inbox += data
        while len(self.inbox) >= 4:
            assert self.inbox[0] == protocol.SYNC_HOST
            length = self.inbox[2]
            if len(self.inbox) < 4 + length:
                return
            body, crc = bytes(self.inbox[1:3 + length]), self.inbox[3 + length]
            del self.inbox[:4 + length]
            assert protocol.crc8(body) == crc
            self.outbox += b"".join(protocol.encode_response(r) for r in self.answer(body[0], body[2:]))

    def answer(self, frame_type, payload):
        p, lob = self.params, self.params.line_offset_bits
        if frame_type == FrameType.PING:
            return [protocol.Info(protocol.PROTOCOL_VERSION, p.line_bytes, p.b_max, p.dram_addr_bits)]
        if frame_type == FrameType.CSR_READ:
            address = int.from_bytes(payload[:2], "little")
            if address in [CSR_COUNTER_BASE + 4 * n for n in TIMING_COUNTERS]:
                return [protocol.CsrReadData(0, 0)]     # timing counters: the model has no clock
            return [protocol.CsrReadData(0, self.model.csr_read(address))]
        if frame_type == FrameType.CSR_WRITE:
            self.model.csr_write(int.from_bytes(payload[:2], "little"), int.from_bytes(payload[2:6], "little"))
            return [protocol.CsrWriteResp(0)]
        opcode, tag, flags = payload[0], int.from_bytes(payload[1:3], "little"), payload[3]
        address = int.from_bytes(payload[4:11], "little") >> lob
        if frame_type == FrameType.REQ:
            responses = self.model.req(opcode, address, tag)
        else:
            enables = int.from_bytes(payload[11:11 + p.line_bytes // 8], "little")
            data = int.from_bytes(payload[11 + p.line_bytes // 8:], "little")
            responses = self.model.rwd(opcode, address, tag, data, enables, flags >> 4 & 1)
        return [_as_frame_response(r) for r in responses]

    def read(self, limit=4096):
        n = min(len(self.outbox), self.rng.randrange(1, 40))     # a serial port returns arbitrary chunks
        data, self.outbox = bytes(self.outbox[:n]), self.outbox[n:]
        return data


@pytest.mark.parametrize("view", ["raw", "weight-major"])
def test_host_tool_loads_and_streams_a_tensor_at_k(view):
    device = ModelDevice(SYSTEM_PARAMS)
    board = board_host.Board(device)
    params = board_host.device_params(board)
    assert params.data_width == SYSTEM_PARAMS.data_width and params.dram_addr_bits == SYSTEM_PARAMS.dram_addr_bits
    values = np.random.default_rng(2).integers(-8, 8, size=5 * params.data_width)
    B, R = 4, 2
    board_host.load_tensor(board, params, values, B, Format.INT, R, region=1, base_line=16, default_k=B,
                           rounding=Rounding.FLOOR, view=view, window=3)
    # the model's DRAM now holds exactly the golden encoding at the region's lines
    raw = layout.encode(values, B, Format.INT, R=R, W=params.data_width)
    assert np.array_equal(device.model.memory[16:16 + len(raw)], raw)
    for k, mode in [(1, "packed"), (3, "packed"), (2, "expanded"), (4, "expanded")]:
        summary = board_host.read_tensor(board, params, values, B, Format.INT, R, 16, k, mode, Rounding.FLOOR,
                                         window=3)
        assert summary["mismatched_lines"] == 0 and summary["poison_or_nxm"] == 0
    counters = board_host.read_counters(board)
    assert counters["reads_at_k3"] == 3 * len(layout.to_blocks(values, params.data_width, R))


def test_host_tool_reports_a_device_error_clearly():
    class Refusing(ModelDevice):
        def answer(self, frame_type, payload):
            return [protocol.Error(ErrorCode.BUSY, frame_type)]

    board = board_host.Board(Refusing(SYSTEM_PARAMS), line_bytes=SYSTEM_PARAMS.line_bytes)
    with pytest.raises(SmartquantError, match="BUSY"):
        board.csr_read(CSR_ID)


# --- the board's block RAM behind the AXI4 port --------------------------------------------------------------
def test_axi_ram_bursts_ids_strobes_and_backpressure_against_a_python_memory():
    line_bytes, depth = 8, 64
    ram = AxiRam(data_width=64, addr_width=12, id_width=4, size_bytes=line_bytes * depth)
    axi = ram.axi
    rng = random.Random(11)
    memory = [0] * depth                    # the independent model: a list of line integers
    reads_seen = []

    def masked(old, new, strobe):
        mask = sum(0xFF << (8 * i) for i in range(line_bytes) if strobe >> i & 1)
        return (old & ~mask) | (new & mask)

    async def manager(ctx):
        for _ in range(12):
            # write burst: AW, then beats with random gaps, then B with a late bready
            first, beats, wid = rng.randrange(depth - 8), rng.randrange(1, 9), rng.randrange(16)
            ctx.set(axi.awaddr, first * line_bytes)
            ctx.set(axi.awlen, beats - 1)
            ctx.set(axi.awid, wid)
            ctx.set(axi.awvalid, 1)
            await ctx.tick().until(axi.awready)
            ctx.set(axi.awvalid, 0)
            for beat in range(beats):
                data, strobe = rng.getrandbits(64), rng.getrandbits(8)
                ctx.set(axi.wdata, data)
                ctx.set(axi.wstrb, strobe)
                ctx.set(axi.wlast, beat == beats - 1)
                ctx.set(axi.wvalid, 1)
                await ctx.tick().until(axi.wready)
                ctx.set(axi.wvalid, 0)
                memory[first + beat] = masked(memory[first + beat], data, strobe)
                await ctx.tick().repeat(1 + rng.randrange(2))
            await ctx.tick().repeat(1 + rng.randrange(3))
            ctx.set(axi.bready, 1)
            (bid,) = await ctx.tick().sample(axi.bid).until(axi.bvalid)
            ctx.set(axi.bready, 0)
            assert bid == wid
            # read burst of a random range (covering the written lines now and then)
            first, beats, rid = rng.randrange(depth - 16), rng.randrange(1, 17), rng.randrange(16)
            ctx.set(axi.araddr, first * line_bytes)
            ctx.set(axi.arlen, beats - 1)
            ctx.set(axi.arid, rid)
            ctx.set(axi.arvalid, 1)
            await ctx.tick().until(axi.arready)
            ctx.set(axi.arvalid, 0)
            for beat in range(beats):
                while True:
                    ready = rng.random() < 0.5          # R backpressure
                    ctx.set(axi.rready, ready)
                    _, _, valid, data, last, got_id = await ctx.tick().sample(axi.rvalid, axi.rdata, axi.rlast,
                                                                            axi.rid)
                    if valid and ready:
                        break
                ctx.set(axi.rready, 0)
                reads_seen.append((data, memory[first + beat]))
                assert got_id == rid and last == (beat == beats - 1)

    sim = Simulator(ram)
    sim.add_clock(1e-6)
    sim.add_testbench(manager)
    sim.run()
    assert len(reads_seen) > 12
    assert all(got == expected for got, expected in reads_seen)


def test_host_tool_over_a_pseudo_terminal(capsys):
    """The termios path of board_host: a pty stands in for the FTDI tty, the fake device serves the far end."""
    device = ModelDevice(SYSTEM_PARAMS)
    controller_fd, tty_fd = os.openpty()
    stop = threading.Event()

    def far_end():
        while not stop.is_set():
            ready, _, _ = select.select([controller_fd], [], [], 0.05)
            if ready:
                device.write(os.read(controller_fd, 4096))
            while device.outbox:
                os.write(controller_fd, device.read())

    thread = threading.Thread(target=far_end, daemon=True)
    thread.start()
    try:
        args = board_host.build_parser().parse_args(["--port", os.ttyname(tty_fd), "counters"])
        port = board_host.SerialPort(os.ttyname(tty_fd), 115200)
        try:
            assert board_host.run(args, port=port) == 0
        finally:
            port.close()
    finally:
        stop.set()
        thread.join()
        os.close(controller_fd)
        os.close(tty_fd)
    out = capsys.readouterr().out
    assert re.search(r"^req_mem_rd\s+0$", out, re.MULTILINE) and "reads_at_k16" in out


def test_message_payloads_load_on_the_streams_busy_flag_alone():
    """The M2S payload flip-flops (~180 at W=128) follow the frame buffer while their stream is free: their clock
    enable is one LUT from the stream's VALID / READY, not the CRC compare of the incoming byte (the 75 MHz
    build's critical path on 0ffdb38; 3 levels from the frame type there). scripts/logic_depth.py, ~5 s."""
    from smartquant.scripts.logic_depth import analyse
    enables = {e.register: e for e in analyse(HostBridge(board_params(128, 8, 64 * 1024))) if e.pin == "CE"}
    for payload in ("m2s_req__payload", "m2s_rwd__payload"):
        assert enables[payload].levels <= 1, enables[payload]
        assert enables[payload].start in ("m2s_req__valid", "m2s_rwd__valid", "m2s_req__ready", "m2s_rwd__ready")


def test_received_byte_is_registered_before_the_frame_logic():
    """Timing round 21c: the bridge registers the UART's byte and valid before its frame FSM, so the receiver's
    data (placed by its pin) reaches one flip-flop of the bridge each. In b4e86ee's 75 MHz build (58.74 MHz) the
    worst path ran from the receiver's data through the FSM's compares into the error registers' enable (17.0 ns,
    a 4 ns net across the chip); before this cut `rx.payload` reached rx_buf, rx_crc, err_type, ... directly."""
    from smartquant.scripts.logic_depth import levels_from_port, synthesised_netlist
    netlist = synthesised_netlist(HostBridge(board_params(128, 8, 64 * 1024)))
    assert levels_from_port(netlist, "rx__payload") == {"rx_byte": 0}
    assert levels_from_port(netlist, "rx__valid") == {"rx_valid": 0}
