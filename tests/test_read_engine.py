"""ReadEngine (hdl/engine/read_engine.py) in the Amaranth simulator against the golden DeviceModel.

A small Python AXI memory (numpy lines, configurable latency and random stalls) backs the engine; every DRS
payload, every AXI read burst and every read-side counter is compared with golden/device.py DeviceModel fed
the same reads in the same order. Small W (128, 64) keeps the simulation fast.
"""
from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartquant.golden.device import DeviceModel, PoisonRecord, line_set, region_csr_writes
from smartquant.golden import layout
from smartquant.hdl.backend.axi import AXI_RESP_OKAY, AXI_RESP_SLVERR
from smartquant.hdl.csr.layouts import region_end_line
from smartquant.hdl.cxl.messages import drs_layout, unpack
from smartquant.hdl.engine.block_buffer import WRITE_TO_SERVE_CYCLES
from smartquant.hdl.engine.drs_server import DRS_OUTPUT_CYCLES
from smartquant.hdl.engine.read_engine import ReadEngine
from smartquant.hdl.engine.packer import START_TO_LINE_CYCLES
from smartquant.params import (
    CONTROL_MODE_BITS, CSR_CONTROL, ControllerParams, Counter, Format, ReqOpcode, Rounding, View, N_COUNTERS,
)

READ_SIDE_COUNTERS = [Counter.DRS_SENT, Counter.DRAM_LINES_READ, Counter.READ_BURSTS, Counter.BUFFER_HITS,
                      Counter.BUFFER_MISSES, Counter.NXM_READS, Counter.HOLE_READS, Counter.POISON_READS, Counter.RAW_READS,
                      Counter.AXI_ERRORS] + \
                     [Counter.READS_AT_K1 + k - 1 for k in range(1, 17)]


class Region:
    def __init__(self, base_line, n_superblocks, B, R, default_k, rounding=Rounding.FLOOR, fmt=Format.INT):
        self.base_line, self.n_superblocks, self.B, self.R = base_line, n_superblocks, B, R
        self.default_k, self.rounding, self.fmt = default_k, rounding, fmt

    @property
    def span(self):
        return self.n_superblocks * self.R * self.B

    def entry(self, params):
        """region_entry_layout fields, as the CSR block decodes them."""
        return {"enable": 1, "bf16": int(self.fmt == Format.BF16), "log2_b": self.B.bit_length() - 1,
                "log2_r": self.R.bit_length() - 1, "default_k": self.default_k,
                "midpoint": int(self.rounding == Rounding.MIDPOINT), "base_line": self.base_line,
                "n_superblocks": self.n_superblocks,
                "end_line": region_end_line(params, self.base_line, self.n_superblocks,
                                            self.B.bit_length() - 1, self.R.bit_length() - 1)}


class ReadHarness:
    """Drives a ReadEngine cycle by cycle from one testbench; the golden model predicts every response."""

    def __init__(self, params, regions, seed=0, memory_latency=2, r_stall=0.0, ar_stall=0.0, drs_stall=0.0,
                 req_gap=0.0, control_mode=0, poisoned_lines=(), error_lines=(), invalidate=None,
                 drs_hold_cycles=0):
        self.params = params
        self.drs_hold_cycles = drs_hold_cycles   # DRS ready held low for the first cycles of the run
        # (region, block, n): after the first n reads are answered, hold a write's invalidation of that block
        # on the port for the rest of the run (the block is not read again)
        self.invalidate = invalidate
        self.regions = regions
        self.rng = random.Random(seed)
        self.memory_latency = memory_latency
        self.r_stall, self.ar_stall, self.drs_stall, self.req_gap = r_stall, ar_stall, drs_stall, req_gap
        self.control_mode = control_mode   # CONTROL's mode bits: decode-error poison and opcode, hole poison
        self.model = DeviceModel(params)
        for i, region in enumerate(regions):
            self.model.program(region_csr_writes(params, i, region.base_line, region.n_superblocks, region.fmt,
                                                 region.B, region.R, region.default_k, region.rounding))
        self.model.csr_write(CSR_CONTROL, control_mode)
        # the poison list answers by DRAM line: one-line records in the model, a set here for the query port
        self.poisoned = set(poisoned_lines)
        for line in self.poisoned:
            self.model._poison_insert(PoisonRecord(line, 0, 1), "inject")
        # random raw contents for every region window (any bit pattern is a valid plane line)
        data_rng = np.random.default_rng(seed)
        for region in regions:
            lines = data_rng.integers(0, 256, size=(region.span, params.line_bytes), dtype=np.uint8)
            self.model.load_raw(region.base_line, lines)
        self.memory = self.model.memory.copy()   # the AXI model's own copy: the model never sees the DUT's reads
        # DRAM lines whose R beats answer SLVERR; the golden model is told the same lines
        self.error_lines = set(error_lines)
        for line in self.error_lines:
            self.model.inject_read_error(line)
        self.model.clear_trace()
        self.model.counts = [0] * N_COUNTERS
        self.events = [0] * N_COUNTERS
        self.ar_log = []
        self.drs_log = []
        self.accept_cycles = []
        self.arvalid_cycles = []
        self.drs_cycles = []

    def address(self, view, line, k=0):
        return self.model.address(view, line, k)

    def run(self, addresses, max_cycles=20000):
        params = self.params
        dut = ReadEngine(params)
        layout = drs_layout(params)
        requests = deque((address, tag, tag & 0xF) for tag, address in enumerate(addresses))
        expected = deque()
        bursts = deque()   # [first_line, beats_left, ready_cycle]
        harness = self

        def count_events(ctx):
            events = ctx.get(dut.events.as_value())
            for n in range(N_COUNTERS):
                harness.events[n] += (events >> (8 * n)) & 0xFF

        async def bench(ctx):
            for i, region in enumerate(harness.regions):
                for name, value in region.entry(params).items():
                    ctx.set(getattr(dut.regions[i], name), value)
            ctx.set(dut.nxm_as_poison, harness.model.nxm_as_poison)
            ctx.set(dut.mem_data_nxm, harness.model.mem_data_nxm)
            ctx.set(dut.hole_poison, harness.model.hole_poison)
            ctx.set(dut.toward_zero, sum(1 << i for i, region in enumerate(harness.regions)
                                         if region.rounding == Rounding.TOWARD_ZERO))
            cycle = 0
            stalled_drs = stalled_ar = None
            accepted = 0
            invalidating = False
            poison_answer = False     # the poison list's answer to the previous cycle's query
            while requests or expected or bursts:
                assert cycle < max_cycles, f"no progress: {len(requests)} reads unsent, {len(expected)} DRS missing"
                rng = harness.rng
                offer = bool(requests) and rng.random() >= harness.req_gap
                if harness.invalidate is not None and not invalidating and accepted == harness.invalidate[2]:
                    offer = False
                    if not expected and not bursts:   # quiescent: the write is accepted now, in model order too
                        invalidating = True
                        region, block = harness.invalidate[:2]
                        harness.model.slots = [None if slot is not None and slot[0][:2] == (region, block)
                                               else slot for slot in harness.model.slots]
                        ctx.set(dut.invalidate.valid, 1)
                        ctx.set(dut.invalidate.region, region)
                        ctx.set(dut.invalidate.block, block)
                if offer:
                    address, tag, ld_id = requests[0]
                    ctx.set(dut.read.p.address, address)
                    ctx.set(dut.read.p.tag, tag)
                    ctx.set(dut.read.p.ld_id, ld_id)
                ctx.set(dut.read.valid, offer)
                first, stride, count = (ctx.get(dut.poison_query.first), ctx.get(dut.poison_query.log2_stride),
                                        ctx.get(dut.poison_query.count))
                query = line_set(first, stride, count, harness.model.line_mask)
                # the query's end line (stage B's register): the line after the set, or first + 1 for a read of
                # the raw view that is not readable (its count and stride then do not matter)
                assert ctx.get(dut.poison_query.end) in {(first + (count << stride)) & harness.model.line_mask,
                                                          (first + 1) & harness.model.line_mask}
                # the list answers a query a cycle later (its per-record registers, hdl/engine/poison.py)
                ctx.set(dut.poison_hit_late, poison_answer)
                poison_answer = not query.isdisjoint(harness.poisoned)
                ctx.set(dut.axi.arready, rng.random() >= harness.ar_stall)
                beat_ready = bool(bursts) and bursts[0][2] <= cycle and rng.random() >= harness.r_stall
                if beat_ready:
                    line = bursts[0][0]
                    ctx.set(dut.axi.rdata, int.from_bytes(harness.memory[line].tobytes(), "little"))
                    ctx.set(dut.axi.rlast, bursts[0][1] == 1)
                    ctx.set(dut.axi.rresp, AXI_RESP_SLVERR if line in harness.error_lines else AXI_RESP_OKAY)
                ctx.set(dut.axi.rvalid, beat_ready)
                ctx.set(dut.drs.ready, cycle >= harness.drs_hold_cycles and rng.random() >= harness.drs_stall)
                ctx.set(dut.dev_load, rng.randrange(4))   # changes every cycle: a held DRS must not follow it

                if offer and ctx.get(dut.read.ready):
                    requests.popleft()
                    accepted += 1
                    harness.accept_cycles.append(cycle)
                    expected.extend(harness.model.req(ReqOpcode.MEM_RD, address, tag, ld_id))
                if ctx.get(dut.axi.arvalid):
                    harness.arvalid_cycles.append(cycle)
                    if ctx.get(dut.axi.arready):
                        assert ctx.get(dut.axi.arburst) == 1 and ctx.get(dut.axi.arsize) == params.line_offset_bits
                        first = ctx.get(dut.axi.araddr) >> params.line_offset_bits
                        beats = ctx.get(dut.axi.arlen) + 1
                        harness.ar_log.append((first, beats))
                        bursts.append([first, beats, cycle + harness.memory_latency])
                if beat_ready and ctx.get(dut.axi.rready):
                    bursts[0][0] += 1
                    bursts[0][1] -= 1
                    if bursts[0][1] == 0:
                        bursts.popleft()
                if stalled_drs is not None:   # a DRS not taken stays offered with the same payload
                    assert ctx.get(dut.drs.valid) and ctx.get(dut.drs.p.as_value()) == stalled_drs
                stalled_drs = ctx.get(dut.drs.p.as_value()) if ctx.get(dut.drs.valid) and not ctx.get(dut.drs.ready) else None
                if stalled_ar is not None:
                    assert ctx.get(dut.axi.arvalid) and (ctx.get(dut.axi.araddr), ctx.get(dut.axi.arlen)) == stalled_ar
                stalled_ar = ((ctx.get(dut.axi.araddr), ctx.get(dut.axi.arlen))
                              if ctx.get(dut.axi.arvalid) and not ctx.get(dut.axi.arready) else None)
                if ctx.get(dut.drs.valid) and ctx.get(dut.drs.ready):
                    got = unpack(layout, ctx.get(dut.drs.p.as_value()))
                    assert expected, f"unexpected DRS {got}"
                    want = expected.popleft()
                    harness.drs_log.append(got)
                    harness.drs_cycles.append(cycle)
                    assert (got["opcode"], got["tag"], got["ld_id"], got["poison"], got["meta_field"],
                            got["meta_value"]) == (want.opcode, want.tag, want.ld_id, want.poison, want.meta_field,
                                                   want.meta_value), f"DRS header {got} != {want}"
                    assert got["data"] == want.data, f"DRS data of tag {want.tag}: {got['data']:#x} != {want.data:#x}"
                    assert got["dev_load"] <= 3
                count_events(ctx)
                await ctx.tick()
                cycle += 1
            harness.cycles = cycle
            # the unit registers its counts (one cycle late): the last handshake's shows in the cycle after it
            count_events(ctx)

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        assert self.ar_log == [(b.line, b.beats) for b in self.model.axi_reads]
        for counter in READ_SIDE_COUNTERS:
            assert self.events[counter] == self.model.counts[counter], \
                f"counter {Counter(counter).name if counter < 32 else counter}: {self.events[counter]} != {self.model.counts[counter]}"
        return self


P128 = ControllerParams(data_width=128, b_max=16, n_regions=3, request_depth=8, buffer_slots=2, dram_addr_bits=16)
REGIONS = [
    Region(base_line=0x040, n_superblocks=4, B=8, R=1, default_k=3, rounding=Rounding.MIDPOINT),
    Region(base_line=0x200, n_superblocks=2, B=16, R=4, default_k=5, fmt=Format.BF16),
    Region(base_line=0x400, n_superblocks=2, B=4, R=2, default_k=0),   # default k 0: views 4/5 illegal
]


def every_view_addresses(h, rng, n):
    addresses = []
    for _ in range(n):
        index = rng.randrange(len(h.regions))
        region = h.regions[index]
        # a few hot blocks so that reads also hit the buffer; raw reads anywhere in the window
        line = region.base_line + rng.randrange(3) * region.B + rng.randrange(region.B)
        if rng.random() < 0.3:
            line = region.base_line + rng.randrange(region.span)
        view = rng.choice([View.RAW, View.WEIGHT_MAJOR, View.PACKED_K, View.EXPANDED_K, View.PACKED_DEFAULT,
                           View.EXPANDED_DEFAULT, View.PACKED_K, View.EXPANDED_K, 6])
        k = rng.choice([2, 3, rng.randrange(0, region.B + 2)])   # mostly two precisions, so reads also hit
        addresses.append(h.address(view, line, k))
    return addresses


def test_directed_reads_of_every_view():
    h = ReadHarness(P128, REGIONS, seed=1)
    r0, r1, r2 = REGIONS
    a = h.address
    addresses = [
        a(View.RAW, r0.base_line + 5),                     # raw line
        a(View.PACKED_K, r0.base_line + 8 + 0, k=3),       # block 1 packed k=3 lines 0..2 (miss, hit, hit)
        a(View.PACKED_K, r0.base_line + 8 + 1, k=3),
        a(View.PACKED_K, r0.base_line + 8 + 2, k=3),
        a(View.PACKED_K, r0.base_line + 8 + 3, k=3),       # j >= k: unmapped
        a(View.EXPANDED_K, r0.base_line + 8 + 6, k=3),     # expanded midpoint fill
        a(View.WEIGHT_MAJOR, r0.base_line + 16 + 7),       # expanded at k = B
        a(View.PACKED_DEFAULT, r0.base_line + 1),          # default k = 3
        a(View.EXPANDED_DEFAULT, r0.base_line + 2),
        a(View.PACKED_K, r1.base_line + 16 * 5 + 4, k=5),  # BF16, R = 4: strided planes
        a(View.EXPANDED_K, r1.base_line + 16 * 6 + 15, k=9),
        a(View.RAW, r1.base_line + 77),
        a(View.PACKED_K, r2.base_line + 4 * 3 + 1, k=2),   # B = 4, R = 2
        a(View.PACKED_DEFAULT, r2.base_line + 1),          # illegal default k
        a(View.PACKED_K, r2.base_line, k=0),               # illegal k
        a(View.EXPANDED_K, r2.base_line, k=5),             # k > B
        a(6, r0.base_line),                                # reserved view
        a(View.RAW, 0x3F),                                 # no region
        a(View.RAW, r0.base_line) | (1 << (P128.hpa_bits - P128.line_offset_bits)),   # high bit
    ]
    h.run(addresses)
    assert len(h.drs_log) == len(addresses)
    assert h.events[Counter.NXM_READS] == 2 and h.events[Counter.HOLE_READS] == 5


@pytest.mark.parametrize("seed", [2, 3])
def test_random_reads_with_backpressure_and_poison(seed):
    rng = random.Random(seed)
    r0, r1, _ = REGIONS
    def plane_line(region, block, plane):
        superblock, slot = divmod(block, region.R)
        return region.base_line + superblock * region.R * region.B + plane * region.R + slot

    # plane lines of a few blocks: reads at k above the plane are poisoned, at k up to it are not
    poisoned = {plane_line(r0, 1, 2), plane_line(r1, 6, 0), plane_line(r0, 3, r0.B - 1)}
    h = ReadHarness(P128, REGIONS, seed=seed, memory_latency=rng.randrange(1, 6), r_stall=0.3, ar_stall=0.3,
                    drs_stall=0.3, req_gap=0.2, control_mode=(0, CONTROL_MODE_BITS)[seed % 2],
                    poisoned_lines=poisoned)
    h.run(every_view_addresses(h, rng, 90))
    assert h.events[Counter.POISON_READS] > 0 and h.events[Counter.BUFFER_HITS] > 0


def test_small_width_and_more_slots():
    params = ControllerParams(data_width=64, b_max=8, n_regions=1, request_depth=4, buffer_slots=3, dram_addr_bits=14)
    regions = [Region(base_line=0x10, n_superblocks=3, B=8, R=2, default_k=4, rounding=Rounding.MIDPOINT)]
    rng = random.Random(5)
    h = ReadHarness(params, regions, seed=5, memory_latency=3, r_stall=0.2, drs_stall=0.2)
    h.run(every_view_addresses(h, rng, 80))


# default request depth (16) and buffer slots (2): the look-ahead of the serve queue covers the fetch latency
P_STREAM = ControllerParams(data_width=128, b_max=8, n_regions=1, dram_addr_bits=16)


def sequential_packed_stream(h, region, k, n_blocks, view=View.PACKED_K):
    lines_per_block = k if view == View.PACKED_K else region.B
    return [h.address(view, region.base_line + block * region.B + j, k)
            for block in range(n_blocks) for j in range(lines_per_block)]


@pytest.mark.parametrize("view,k", [(View.PACKED_K, k) for k in range(1, 9)]
                         + [(View.EXPANDED_K, k) for k in (1, 3, 6)])
def test_packed_streaming_throughput_and_latency(view, k):
    """Sequential packed-k (expanded-k) reads, memory answering 1 line per cycle: DRS lines per cycle and added
    latency at every k, power of two or not (the packer's full-rate gearbox). Small k needs many blocks in
    flight (one fetch per line): the slot generations must cover the latency."""
    regions = [Region(base_line=0x100, n_superblocks=64, B=8, R=1, default_k=k)]
    h = ReadHarness(P_STREAM, regions, seed=7, memory_latency=4)
    lines_per_block = k if view == View.PACKED_K else regions[0].B
    n_blocks = max(12, 48 // lines_per_block)
    h.run(sequential_packed_stream(h, regions[0], k, n_blocks, view))
    assert h.events[Counter.BUFFER_MISSES] == n_blocks
    first_accept = h.accept_cycles[0]
    ar_latency = h.arvalid_cycles[0] - first_accept
    # first DRS after the first line of the block came back from memory (accept -> AR, memory latency, k beats)
    first_drs = h.drs_cycles[0] - first_accept
    steady = h.drs_cycles[lines_per_block:]   # after the first block: overlap should keep one line per cycle
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    print(f"{View(view).name} k={k}: accept->AR valid {ar_latency} cycles, accept->first DRS {first_drs} cycles "
          f"(memory latency {h.memory_latency}), steady DRS rate {rate:.3f} lines/cycle")
    assert ar_latency <= 3
    assert rate >= 0.95


@pytest.mark.parametrize("view,k", [(View.RAW, 0), (View.PACKED_K, 1), (View.PACKED_K, 4), (View.EXPANDED_K, 8)])
def test_added_latency_of_a_single_read(view, k):
    """Idle engine, memory latency L from AR handshake to the first R beat: cycles the engine adds."""
    latency = 4
    regions = [Region(base_line=0x100, n_superblocks=4, B=8, R=1, default_k=3)]
    h = ReadHarness(P_STREAM, regions, seed=7, memory_latency=latency)
    h.run([h.address(view, 0x100, k)])
    accept, ar_valid, drs = h.accept_cycles[0], h.arvalid_cycles[0], h.drs_cycles[0]
    last_beat = ar_valid + latency + max(k, 1) - 1
    print(f"{View(view).name} k={k}: accept->AR valid {ar_valid - accept}, last R beat->DRS valid {drs - last_beat}")
    # stage A (region select), stage B (decode, lookups), then the AR register: the budget is 3 cycles
    assert ar_valid - accept <= 3
    # raw: the line goes straight to the DRS register; packed/expanded: packer start after the last load (1),
    # the packer's pipeline, the line's write into the block buffer; then the DRS register and the DRS output
    # buffer (DRS_OUTPUT_CYCLES)
    packed_cycles = 1 + START_TO_LINE_CYCLES + WRITE_TO_SERVE_CYCLES
    assert drs - last_beat <= (0 if view == View.RAW else packed_cycles) + DRS_OUTPUT_CYCLES


def test_write_invalidation_in_the_reallocation_cycle_keeps_the_new_block():
    """Regression (cocotb random seed 7): a write invalidating the block a slot holds, in the very cycle that
    slot is reallocated to another block, must not drop the new block (the next read of it is a hit)."""
    regions = [Region(base_line=0x100, n_superblocks=8, B=8, R=1, default_k=3)]
    h = ReadHarness(P_STREAM, regions, seed=3, memory_latency=3, invalidate=(0, 0, 2))
    blocks = [0, 1, 2, 2, 2]   # block 0 -> slot 0, block 1 -> slot 1, block 2 -> slot 0 (while 0 is invalidated)
    h.run([h.address(View.PACKED_K, 0x100 + block * 8 + j, 3) for j, block in enumerate(blocks[:2])]
          + [h.address(View.PACKED_K, 0x100 + 2 * 8 + j, 3) for j in range(3)])
    assert h.model.counts[Counter.BUFFER_MISSES] == 3 and h.model.counts[Counter.BUFFER_HITS] == 2


@pytest.mark.parametrize("slots", [1, 3])
def test_block_reuse_across_slot_generations(slots):
    """A few blocks at mixed precisions, more blocks than slots: slots are reallocated while earlier reads of
    them still wait behind DRS backpressure (the generation bookkeeping), data and hit/miss must stay exact."""
    params = ControllerParams(data_width=128, b_max=16, n_regions=3, request_depth=16, buffer_slots=slots,
                              dram_addr_bits=16)
    rng = random.Random(20 + slots)
    h = ReadHarness(params, REGIONS, seed=slots, memory_latency=5, r_stall=0.3, ar_stall=0.1, drs_stall=0.6)
    r0 = REGIONS[0]
    addresses = []
    for _ in range(100):
        block = rng.randrange(slots + 1)
        view, k = rng.choice([(View.PACKED_K, 3), (View.EXPANDED_K, 2), (View.PACKED_K, 8)])
        j = rng.randrange(k if view == View.PACKED_K else r0.B)
        addresses.append(h.address(view, r0.base_line + block * r0.B + j, k))
    h.run(addresses)
    assert h.events[Counter.BUFFER_HITS] > 10


def test_backend_read_errors_poison_the_fetch_and_its_hits():
    """Error RRESP on some plane lines and raw lines: every DRS from a failed fetch (hits included, until the
    slot is refilled) and every raw read of a failed line carries poison; axi_errors counts the failed beats."""
    rng = random.Random(31)
    r0, r1, r2 = REGIONS
    error_lines = {
        r0.base_line + 1 * 8 + 2,            # R = 1, B = 8: plane 2 of block 1
        r1.base_line + 0 * 64 + 0 * 4 + 1,   # R = 4, B = 16: plane 0 of block 1
        r1.base_line + 1 * 64 + 5 * 4 + 2,   # plane 5 of block 6
        r2.base_line + 0 * 8 + 1 * 2 + 0,    # R = 2, B = 4: plane 1 of block 0
    }
    h = ReadHarness(P128, REGIONS, seed=31, memory_latency=3, r_stall=0.3, ar_stall=0.2, drs_stall=0.3,
                    req_gap=0.1, error_lines=error_lines)
    a = h.address
    addresses = [a(View.PACKED_K, r0.base_line + 8 + j, k=3) for j in range(3)]        # block 1 at k = 3: poisoned
    addresses += [a(View.PACKED_K, r0.base_line + 8 + j, k=2) for j in range(2)]       # k = 2 skips plane 2
    addresses += [a(View.EXPANDED_K, r1.base_line + 16 + j, k=1) for j in (0, 15)]     # plane 0 of block 1
    addresses += [a(View.RAW, line) for line in sorted(error_lines)]
    addresses += every_view_addresses(h, rng, 70)
    h.run(addresses)
    poisoned = [d["poison"] for d in h.drs_log]
    assert poisoned[:7] == [1, 1, 1, 0, 0, 1, 1] and poisoned[7:11] == [1, 1, 1, 1]
    assert h.events[Counter.AXI_ERRORS] >= 6 and h.events[Counter.POISON_READS] > 11


TOWARD_ZERO_REGIONS = [
    Region(base_line=0x040, n_superblocks=2, B=8, R=1, default_k=3, rounding=Rounding.TOWARD_ZERO),
    Region(base_line=0x100, n_superblocks=2, B=16, R=2, default_k=7, rounding=Rounding.TOWARD_ZERO),
    Region(base_line=0x200, n_superblocks=1, B=16, R=1, default_k=9, rounding=Rounding.TOWARD_ZERO, fmt=Format.BF16),
]
P_TZ = ControllerParams(data_width=128, b_max=16, n_regions=3, request_depth=8, buffer_slots=2, dram_addr_bits=16)


@pytest.mark.parametrize("B,R,ks", [(2, 1, [1, 2]), (4, 2, [1, 2, 3, 4]), (8, 1, [1, 3, 5, 7, 8]),
                                    (16, 2, [1, 4, 9, 15, 16])])
def test_toward_zero_expanded_reads_every_k(B, R, ks):
    """Expanded toward-zero reads of an INT region (plus a BF16 region, whose fill is 0) at several k, every
    line checked against golden/layout.py directly and everything else against the DeviceModel."""
    regions = [Region(base_line=0x040, n_superblocks=2, B=B, R=R, default_k=ks[0], rounding=Rounding.TOWARD_ZERO),
               TOWARD_ZERO_REGIONS[2]]
    h = ReadHarness(P_TZ, regions, seed=B, memory_latency=3, r_stall=0.2, drs_stall=0.3)
    blocks = 2 * R
    expected = {}
    addresses = []
    for index, region in enumerate(regions):
        raw = h.memory[region.base_line:region.base_line + region.span]
        fields = layout.planes_to_blocks(layout.raw_to_planes(raw, region.B, region.R), region.B)
        for k in (ks if index == 0 else [1, 9, 16]):
            lines = layout.expanded_lines(fields, region.B, k, Rounding.TOWARD_ZERO, region.fmt)
            for block in range(min(blocks, region.n_superblocks * region.R)):
                for j in range(region.B):
                    expected[len(addresses)] = lines[block, j]
                    addresses.append(h.address(View.EXPANDED_K, region.base_line + block * region.B + j, k))
    h.run(addresses)
    for tag, want in expected.items():
        assert h.drs_log[tag]["data"] == int.from_bytes(want.tobytes(), "little"), f"read {tag}"
    # DRAM traffic stays k lines per fetched block, whatever the fill
    assert h.events[Counter.DRAM_LINES_READ] == sum(k * blocks for k in ks) + (1 + 9 + 16) * 1   # BF16: 1 block


def test_toward_zero_expanded_streaming_keeps_one_line_per_cycle():
    """The sign-plane loads fill the packer's B cycles per block: sequential expanded reads stay ~1 DRS/cycle."""
    k = 3
    regions = [Region(base_line=0x100, n_superblocks=16, B=8, R=1, default_k=k, rounding=Rounding.TOWARD_ZERO)]
    h = ReadHarness(P_STREAM, regions, seed=9, memory_latency=4)
    n_blocks = 12
    h.run([h.address(View.EXPANDED_DEFAULT, 0x100 + line) for line in range(n_blocks * 8)])
    steady = h.drs_cycles[8:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    print(f"toward-zero expanded k={k}: steady DRS rate {rate:.3f} lines/cycle")
    assert h.events[Counter.DRAM_LINES_READ] == n_blocks * k and rate >= 0.95


@pytest.mark.parametrize("request_depth,hits", [(4, 8), (4, 9), (8, 16), (8, 17), (4, 30)])
def test_many_queued_hits_on_one_slot_generation(request_depth, hits):
    """Regression (outside review): one (slot, generation) can have up to the serve FIFO depth
    (request_depth + b_max) reads queued. With DRS held off, one miss plus `hits` hits on block 0, then misses on
    blocks 1 and 2 (block 2 reuses slot 0): the per-generation waiting counter was sized for request_depth + 2 and
    wrapped, so the engine hung (count wrapped to a value never reached again) or let block 2's fill overwrite
    block 0's lines still owed (a DRS carrying another block's data). Every DRS is checked against the model.
    30 hits at request_depth 4: the serve FIFO (20 entries) full of one generation's reads."""
    params = ControllerParams(data_width=128, b_max=16, n_regions=1, request_depth=request_depth, buffer_slots=2,
                              dram_addr_bits=16)
    k = 8
    regions = [Region(base_line=0x100, n_superblocks=4, B=16, R=1, default_k=k)]
    h = ReadHarness(params, regions, seed=request_depth + hits, memory_latency=3, drs_hold_cycles=400)
    a = h.address
    addresses = [a(View.PACKED_K, 0x100 + j % k, k) for j in range(1 + hits)]        # miss + hits on block 0
    addresses += [a(View.PACKED_K, 0x100 + block * 16 + 1, k) for block in (1, 2)]  # block 2 -> slot 0 again
    h.run(addresses, max_cycles=2000)
    assert h.model.counts[Counter.BUFFER_HITS] == hits and h.model.counts[Counter.BUFFER_MISSES] == 3
    assert len(h.drs_log) == len(addresses) and h.drs_cycles[0] >= 400


def test_poison_of_hits_served_the_cycle_after_dispatch():
    """The poison list's answer joins the serve entry a cycle after dispatch; a hit dispatched into an empty serve
    queue is served in that very cycle and takes its poison from the register instead of the column. Sparse hits
    (gaps between requests, no stalls) on a block with a poisoned plane line and on a clean block, so the queue
    runs empty between them: every DRS's poison against the model."""
    r0 = REGIONS[0]
    poisoned_plane_line = r0.base_line + 1 * r0.B + 2            # R = 1: plane 2 of block 1
    h = ReadHarness(P128, REGIONS, seed=11, memory_latency=2, req_gap=0.6, poisoned_lines={poisoned_plane_line})
    rng = random.Random(11)
    addresses = [h.address(View.EXPANDED_K, r0.base_line + block * r0.B + rng.randrange(r0.B), k=3)
                 for block in [rng.choice((0, 1)) for _ in range(60)]]
    h.run(addresses)
    poison = [d["poison"] for d in h.drs_log]
    assert 10 < sum(poison) < 50
