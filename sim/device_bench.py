"""cocotb benchmarks of the SmartQuantController (run by smartquant.scripts.bench_device; one test per figure).

Settings: SQ_PARAMS, SQ_SEED, SQ_BENCH_CONFIG (JSON, keys below with their defaults) and SQ_BENCH_DIR (each test
writes <dir>/<test name>.json). Every test runs through the TB, so every DRS/NDR is still checked bit-exact
against the golden DeviceModel and every counter read over CSR against the model's (`tb.finish`).

test_traffic     sequential packed-k streaming of `blocks` blocks at every k of B in `traffic_b` (8, 16):
                 DRAM lines read (hardware counter) / (blocks x B); then `random_reads` packed reads of random
                 (block, line j < k): DRAM lines per delivered line.
test_rows        packed-k streaming of `row_superblocks` superblocks for R in `row_runs` (1, 64), B = 8, at every k;
                 the AXI AR address stream (monitor) through golden/dram.py RowModel -> activates per k.
test_throughput  always-ready backend and sinks: for B in `throughput_b` (8: INT, 16: BF16), each view in
                 `throughput_views` (packed, expanded) and every k = 1..B, a stream of whole blocks of at least
                 `throughput_lines` output lines: lines per cycle from the first Req accepted to the last DRS
                 (pipeline fill included) and between the first and the last DRS (steady state), R beats per
                 cycle, and cycles AR waited for the AXI memory's arready (a backend limit, not the controller's).
test_latency     idle device, one read at a time: cycles from Req accepted to AR valid, first R beat to DRS
                 valid, and Req accepted to DRS valid, for raw and packed reads at several k.
test_writes      weight-major writes for (B, R) in `write_layouts`: `write_blocks` whole blocks back to back, one
                 line of each block, and `write_serial_lines` lines each sent after the previous Cmp: DRAM beats
                 per line written (hardware counters), lines per cycle accepted and to the last Cmp.
test_simspeed    sim/traffic.py RandomTraffic (the `smartquant sim` mix) for `simspeed_transactions`: cycles/s
                 and transactions/s of the whole testbench (golden model and scoreboard included).
"""
from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from smartquant.golden import layout
from smartquant.golden.device import superblocks_for
from smartquant.golden.dram import RowModel
from smartquant.params import CONTROL_CLEAR_COUNTERS, CSR_CONTROL, ControllerParams, Counter, Format, View
from smartquant.sim.stream_demo import AddressMonitor
from smartquant.sim.tb import TB, RegionSetup

DEFAULTS = {"traffic_b": [8, 16], "blocks": 32, "random_reads": 64, "row_runs": [1, 64], "row_superblocks": 2,
            "throughput_b": [8, 16], "throughput_lines": 640,
            "throughput_views": ["packed", "expanded"], "latency_k": [1, 3, 4, 8],
            "simspeed_transactions": 20000,   # long enough that phase changes (CSR traffic) do not dominate
            "write_layouts": [[8, 1], [16, 1], [8, 4]], "write_blocks": 16, "write_serial_lines": 16}


def settings() -> tuple[ControllerParams, int, dict]:
    params = ControllerParams(**json.loads(os.environ.get("SQ_PARAMS", "{}")))
    config = dict(DEFAULTS, **json.loads(os.environ.get("SQ_BENCH_CONFIG", "{}")))
    return params, int(os.environ.get("SQ_SEED", "1")), config


def write_result(name: str, result: dict) -> None:
    directory = os.environ.get("SQ_BENCH_DIR")
    if directory:
        with open(os.path.join(directory, f"{name}.json"), "w") as handle:
            json.dump(result, handle, indent=1)


async def start(dut) -> tuple[TB, ControllerParams, dict]:
    params, seed, config = settings()
    tb = TB(dut, params, seed)          # no idle cycles, no backpressure, no AXI pauses: an always-ready system
    await tb.reset()
    return tb, params, config


async def load_region(tb: TB, region: RegionSetup, rng: np.random.Generator) -> None:
    """Random weights of the region's format, backdoor-loaded (benchmarks measure reads, not the load)."""
    n_weights = region.n_blocks * tb.params.data_width
    if region.fmt == Format.BF16:
        values = rng.standard_normal(n_weights).astype(np.float32)
    else:
        values = rng.integers(-(1 << (region.B - 1)), 1 << (region.B - 1), size=n_weights)
    tb.load_raw(region.base_line, layout.encode(values, region.B, region.fmt, region.R, tb.params.data_width))
    await tb.program_region(region)


def region_for(tb: TB, index: int, B: int, R: int, n_blocks: int, base_line: int = 0) -> RegionSetup:
    fmt = Format.BF16 if B == 16 else Format.INT
    return RegionSetup(index, base_line, superblocks_for(n_blocks * tb.params.data_width, B, R, tb.params.data_width),
                       B, R, fmt=fmt)


async def clear_counters(tb: TB) -> None:
    await tb.csr_write(CSR_CONTROL, CONTROL_CLEAR_COUNTERS | tb.control_mode)


def stream_packed(tb: TB, region: RegionSetup, precision_k: int, blocks, view: View = View.PACKED_K) -> int:
    """Queue reads of every line of each block in order (packed-k: lines j < k; expanded-k: all B lines);
    returns the number of reads."""
    lines_per_block = precision_k if view == View.PACKED_K else region.B
    reads = 0
    for block in blocks:
        for j in range(lines_per_block):
            tb.read(view, region.view_line(block, j), precision_k)
            reads += 1
    return reads


async def wait(tb: TB) -> None:
    queued = len(tb.outstanding) + len(tb.req_source.queue)
    await tb.quiesce(timeout_cycles=100 * queued + 20_000)


@cocotb.test()
async def test_traffic(dut):
    """DRAM lines read per k from the hardware counters: sequential packed streaming and random single lines."""
    tb, params, config = await start(dut)
    rng = np.random.default_rng(tb.seed)
    picker = random.Random(tb.seed)
    rows = []
    for index, B in enumerate(config["traffic_b"]):
        region = region_for(tb, index, B, 1, config["blocks"], base_line=index * config["blocks"] * 16)
        await load_region(tb, region, rng)
        for k in range(1, B + 1):
            await clear_counters(tb)
            reads = stream_packed(tb, region, k, range(region.n_blocks))
            await wait(tb)
            sequential = await tb.check_counters()
            await clear_counters(tb)
            for _ in range(config["random_reads"]):
                block, j = picker.randrange(region.n_blocks), picker.randrange(k)
                tb.read(View.PACKED_K, region.view_line(block, j), k)
            await wait(tb)
            scattered = await tb.check_counters()
            rows.append({"B": B, "k": k, "blocks": region.n_blocks, "reads": reads,
                         "dram_lines_read": sequential[Counter.DRAM_LINES_READ],
                         "full_lines": region.n_blocks * B, "drs_sent": sequential[Counter.DRS_SENT],
                         "traffic_ratio": sequential[Counter.DRAM_LINES_READ] / (region.n_blocks * B),
                         "ideal_ratio": k / B,
                         "random_reads": config["random_reads"],
                         "random_dram_lines_read": scattered[Counter.DRAM_LINES_READ],
                         "random_lines_per_read": scattered[Counter.DRAM_LINES_READ] / config["random_reads"],
                         "random_buffer_hits": scattered[Counter.BUFFER_HITS]})
        await tb.disable_region(index)
    await tb.finish()
    write_result("test_traffic", {"rows": rows})


@cocotb.test()
async def test_rows(dut):
    """Row activates of the RTL's AR address stream vs k, for plane runs R = 1 and row-aligned R."""
    tb, params, config = await start(dut)
    rng = np.random.default_rng(tb.seed)
    ar = AddressMonitor(tb, "ar")
    rows, B = [], 8
    n_blocks = config["row_superblocks"] * max(config["row_runs"])
    for index, R in enumerate(config["row_runs"]):
        region = region_for(tb, index % params.n_regions, B, R, n_blocks)
        await load_region(tb, region, rng)
        for k in range(1, B + 1):
            ar.clear()
            await clear_counters(tb)
            stream_packed(tb, region, k, range(region.n_blocks))
            await wait(tb)
            counters = await tb.check_counters()
            stats = RowModel().replay(ar.lines())
            rows.append({"R": R, "B": B, "k": k, "blocks": region.n_blocks, "bursts": len(ar.bursts),
                         "dram_lines_read": counters[Counter.DRAM_LINES_READ], "activates": stats.activates,
                         "row_hits": stats.row_hits})
        await tb.disable_region(index % params.n_regions)
    await tb.finish()
    write_result("test_rows", {"rows": rows, "row_bytes": 8192, "line_bytes": params.line_bytes})


class BeatMonitor:
    """Counts handshakes of a valid/ready pair and remembers the first and last cycle of one."""

    def __init__(self, dut, valid: str, ready: str, cycles):
        self.valid, self.ready, self.clk, self.cycles = getattr(dut, valid), getattr(dut, ready), dut.clk, cycles
        self.clear()
        cocotb.start_soon(self._run())

    def clear(self) -> None:
        self.count, self.first, self.last, self.first_valid, self.stalls = 0, None, None, None, 0

    async def _run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            if self.valid.value:
                if self.first_valid is None:
                    self.first_valid = self.cycles()
                if self.ready.value:
                    self.count += 1
                    self.last = self.cycles()
                    if self.first is None:
                        self.first = self.cycles()
                else:
                    self.stalls += 1


THROUGHPUT_VIEWS = {"packed": View.PACKED_K, "expanded": View.EXPANDED_K}


@cocotb.test()
async def test_throughput(dut):
    """Output lines per cycle of packed-k and expanded-k streaming with an always-ready backend and sinks."""
    tb, params, config = await start(dut)
    rng = np.random.default_rng(tb.seed)
    cycles = lambda: tb.cycles  # noqa: E731
    req = BeatMonitor(dut, "m2s_req__valid", "m2s_req__ready", cycles)
    drs = BeatMonitor(dut, "s2m_drs__valid", "s2m_drs__ready", cycles)
    beats = BeatMonitor(dut, "axi__rvalid", "axi__rready", cycles)
    ar = BeatMonitor(dut, "axi__arvalid", "axi__arready", cycles)
    lines_wanted = config["throughput_lines"]
    rows, base_line = [], 0
    for index, B in enumerate(config["throughput_b"]):
        # packed k = 1 needs the most blocks: one line each
        region = region_for(tb, index, B, 1, lines_wanted, base_line=base_line)
        device_lines = (1 << params.dram_addr_bits) // params.line_bytes
        if region.base_line + region.span > device_lines:
            raise ValueError(f"throughput_lines {lines_wanted}: the B = {B} region does not fit the "
                             f"{device_lines}-line device")
        base_line += region.span
        await load_region(tb, region, rng)
        for view_name in config["throughput_views"]:
            view = THROUGHPUT_VIEWS[view_name]
            for k in range(1, B + 1):
                lines_per_block = k if view == View.PACKED_K else B
                for monitor in (req, drs, beats, ar):
                    monitor.clear()
                wall = time.monotonic()
                reads = stream_packed(tb, region, k, range(-(-lines_wanted // lines_per_block)), view)
                await wait(tb)
                wall = time.monotonic() - wall
                span = drs.last - req.first + 1
                rows.append({"B": B, "format": region.fmt.name, "view": view_name, "k": k, "reads": reads,
                             "cycles": span, "lines_per_cycle": drs.count / span,
                             "fill_cycles": drs.first - req.first,
                             "steady_lines_per_cycle": (drs.count - 1) / max(drs.last - drs.first, 1),
                             "r_beats": beats.count, "r_beats_per_cycle": beats.count / span,
                             "ar_bursts": ar.count, "ar_wait_cycles": ar.stalls, "r_wait_cycles": beats.stalls,
                             "power_of_two": k & (k - 1) == 0, "wall_seconds": wall})
        await tb.disable_region(index)
    await tb.finish()
    write_result("test_throughput", {"rows": rows, "lines_wanted": lines_wanted})


@cocotb.test()
async def test_latency(dut):
    """Cycles Req accepted -> AR valid, last R beat -> DRS valid and Req -> DRS on an idle device."""
    tb, params, config = await start(dut)
    rng = np.random.default_rng(tb.seed)
    cycles = lambda: tb.cycles  # noqa: E731
    req = BeatMonitor(dut, "m2s_req__valid", "m2s_req__ready", cycles)
    ar = BeatMonitor(dut, "axi__arvalid", "axi__arready", cycles)
    beats = BeatMonitor(dut, "axi__rvalid", "axi__rready", cycles)
    drs = BeatMonitor(dut, "s2m_drs__valid", "s2m_drs__ready", cycles)
    region = region_for(tb, 0, 8, 1, 8)
    await load_region(tb, region, rng)
    cases = ([("raw", View.RAW, 0)] + [(f"packed k={k}", View.PACKED_K, k) for k in config["latency_k"]]
             + [(f"expanded k={k}", View.EXPANDED_K, k) for k in config["latency_k"]])
    rows = []
    for number, (label, view, k) in enumerate(cases):
        for monitor in (req, ar, beats, drs):
            monitor.clear()
        block = number % region.n_blocks          # a block not in the buffer: every read misses
        tb.read(view, region.view_line(block), k)
        await wait(tb)
        rows.append({"read": label, "k": k, "beats": beats.count, "req_to_ar": ar.first_valid - req.first,
                     "ar_to_first_r": beats.first - ar.first, "last_r_to_drs": drs.first_valid - beats.last,
                     "req_to_drs": drs.first_valid - req.first,
                     "added": (ar.first_valid - req.first) + (drs.first_valid - beats.last)})
    await tb.finish()
    write_result("test_latency", {"rows": rows})


@cocotb.test()
async def test_writes(dut):
    """Weight-major writes: DRAM beats per host line written (hardware counters) and lines per cycle, for whole
    blocks streamed back to back, one line per block (each flushed alone), and a host that waits for every Cmp."""
    tb, params, config = await start(dut)
    rng = random.Random(tb.seed)
    cycles = lambda: tb.cycles  # noqa: E731
    rwd = BeatMonitor(dut, "m2s_rwd__valid", "m2s_rwd__ready", cycles)
    ndr = BeatMonitor(dut, "s2m_ndr__valid", "s2m_ndr__ready", cycles)
    w_beats = BeatMonitor(dut, "axi__wvalid", "axi__wready", cycles)
    rows = []
    for index, (B, R) in enumerate(config["write_layouts"]):
        n_blocks = config["write_blocks"]
        region = region_for(tb, index % params.n_regions, B, R, n_blocks, base_line=index * n_blocks * 16)
        await tb.program_region(region)
        for pattern in ("whole blocks", "one line per block", "Cmp before next line"):
            lines = [region.view_line(block, j) for block in range(n_blocks)
                     for j in (range(B) if pattern == "whole blocks" else [rng.randrange(B)])]
            if pattern == "Cmp before next line":
                lines = lines[:config["write_serial_lines"]]
            for monitor in (rwd, ndr, w_beats):
                monitor.clear()
            await clear_counters(tb)
            for line in lines:
                tb.write(View.WEIGHT_MAJOR, line, rng.getrandbits(params.data_width))
                if pattern == "Cmp before next line":
                    await wait(tb)
            await wait(tb)
            counters = await tb.check_counters()
            span = ndr.last - rwd.first + 1
            rows.append({"B": B, "R": R, "pattern": pattern, "lines": len(lines),
                         "dram_lines_written": counters[Counter.DRAM_LINES_WRITTEN],
                         "write_bursts": counters[Counter.WRITE_BURSTS],
                         "beats_per_line": counters[Counter.DRAM_LINES_WRITTEN] / len(lines),
                         "accept_cycles": rwd.last - rwd.first + 1,
                         "lines_per_cycle_accepted": len(lines) / (rwd.last - rwd.first + 1),
                         "cycles_to_last_cmp": span, "lines_per_cycle": len(lines) / span,
                         "w_beats": w_beats.count})
        await tb.disable_region(index % params.n_regions)
    await tb.finish()
    write_result("test_writes", {"rows": rows})


@cocotb.test()
async def test_simspeed(dut):
    """Cycles and transactions per second of wall time under the `smartquant sim` random mix."""
    from smartquant.sim.traffic import RandomTraffic
    tb, params, config = await start(dut)
    traffic = RandomTraffic(tb, random.Random(tb.seed ^ 0x5EED))
    wall, cpu, start_cycle = time.monotonic(), time.process_time(), tb.cycles
    error = None
    try:
        await traffic.run(config["simspeed_transactions"])
        await tb.finish()
    except AssertionError as failure:     # the speed is still measured; the failure is reported after it
        error = failure
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    cycles = tb.cycles - start_cycle
    write_result("test_simspeed", {"transactions": traffic.issued, "cycles": cycles, "wall_seconds": wall,
                                   "cycles_per_second": cycles / wall if wall else 0.0,
                                   # the simulator process's CPU time: the speed on a shared machine
                                   "cpu_seconds": cpu, "cycles_per_cpu_second": cycles / cpu if cpu else 0.0,
                                   "transactions_per_second": traffic.issued / wall if wall else 0.0,
                                   "error": None if error is None else str(error)[:500]})
    if error is not None:
        raise error
