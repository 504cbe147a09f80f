"""cocotb tests of the SmartQuantController against the golden DeviceModel (run through sim/runner.py).

Environment (set by the runner): SQ_PARAMS (ControllerParams JSON), SQ_SEED, SQ_TRANSACTIONS, SQ_SUMMARY.
Every test ends with `tb.finish()`: all tags answered, every DRS/NDR bit-exact, CSRs and every counter equal
to the model's. Directed tests additionally compare some DRS data with the layout functions applied to the
original tensor, so the model itself is not the only expectation.
"""
from __future__ import annotations

import collections
import json
import os
import random
import time

import cocotb
import numpy as np

from smartquant.golden import layout
from smartquant.golden.device import superblocks_for
from smartquant.params import (
    CONTROL_CLEAR_POISON, CONTROL_HOLE_POISON, CONTROL_MEM_DATA_NXM, CONTROL_NXM_AS_POISON, CSR_CONTROL,
    CSR_STATUS, CSR_POISON_LINE, CSR_POISON_COMMAND, CSR_POISON_COUNT, POISON_COMMAND_INJECT, POISON_COMMAND_CLEAR,
    ControllerParams, Counter, DrsOpcode,
    Format, ReqOpcode, Rounding, RwdOpcode, RWD_READS, View, counter_name,
)
from smartquant.sim.tb import TB, RegionSetup
from smartquant.sim.traffic import RandomTraffic


def settings() -> tuple[ControllerParams, int, int]:
    params = ControllerParams(**json.loads(os.environ.get("SQ_PARAMS", "{}")))
    return params, int(os.environ.get("SQ_SEED", "1")), int(os.environ.get("SQ_TRANSACTIONS", "1000"))


def make_tb(dut, params: ControllerParams, seed: int, **knobs) -> TB:
    """The testbench of the host port the parameters select (CXL.mem messages, or AXI4: sim/axi_host_tb.py)."""
    if params.host_port == "axi":
        from smartquant.sim.axi_host_tb import AxiHostTB
        return AxiHostTB(dut, params, seed, **knobs)
    return TB(dut, params, seed, **knobs)


async def start(dut, stress: bool, seed_offset: int = 0) -> TB:
    params, seed, _ = settings()
    knobs = dict(idle=0.3, backpressure=0.3, axi_pause=0.3) if stress else {}
    tb = make_tb(dut, params, seed + seed_offset, **knobs)
    await tb.reset()
    return tb


def tensor(rng: np.random.Generator, n_weights: int, B: int, fmt: int) -> np.ndarray:
    if fmt == Format.BF16:
        return rng.standard_normal(n_weights).astype(np.float32) * 3
    return rng.integers(-(1 << (B - 1)), 1 << (B - 1), size=n_weights)


async def load_tensor(tb: TB, region: RegionSetup, values) -> np.ndarray:
    """Encode a tensor into the region (backdoor) and program the region; returns its (n_blocks, W) fields."""
    W = tb.params.data_width
    raw = layout.encode(values, region.B, region.fmt, region.R, W)
    assert raw.shape[0] == region.span, (raw.shape, region.span)
    tb.load_raw(region.base_line, raw)
    await tb.program_region(region)
    return layout.to_blocks(layout.fields_of(values, region.B, region.fmt), W, region.R)


def drs_line(tb: TB, tag: int) -> bytes:
    got = tb.scoreboard.responses[tag]
    assert got["channel"] == "drs", got
    return int(got["data"]).to_bytes(tb.params.line_bytes, "little")


# --- directed tests -----------------------------------------------------------------------------------------
@cocotb.test()
async def test_csr_identity_and_reset_state(dut):
    """ID, VERSION, PARAMS, zero counters after reset, an illegal REGION_CONFIG reads back disabled."""
    tb = await start(dut, stress=False)
    await tb.check_csrs()
    counters = await tb.read_counters()
    assert all(value == 0 for value in counters), {counter_name(n): v for n, v in enumerate(counters) if v}
    # BF16 with B = 8 is illegal: the region must stay disabled (and a read there is unmapped)
    await tb.program_region(RegionSetup(1, base_line=0, n_superblocks=1, B=8, fmt=Format.BF16))
    tb.read(View.RAW, 0)
    await tb.finish()


@cocotb.parametrize(stress=[False, True])
async def test_every_view_format_and_k(dut, stress):
    """INT2/4/8/16 and BF16, R = 1 and R > 1, floor and midpoint, partial last block: every view and every k."""
    tb = await start(dut, stress)
    tb.scoreboard.record = True
    W = tb.params.data_width
    rng = np.random.default_rng(tb.seed)
    cases = [(2, Format.INT, 1, Rounding.FLOOR), (4, Format.INT, 2, Rounding.MIDPOINT),
             (8, Format.INT, 1, Rounding.MIDPOINT), (16, Format.INT, 4, Rounding.FLOOR),
             (16, Format.BF16, 1, Rounding.MIDPOINT), (8, Format.INT, 2, Rounding.TOWARD_ZERO),
             (16, Format.BF16, 1, Rounding.TOWARD_ZERO)]
    base = 3
    for number, (B, fmt, R, rounding) in enumerate(cases):
        n_weights = W * R + W // 3                       # a whole superblock and a partial last block
        base = -(-base // B) * B                         # a region base is B-line aligned (DEVICE.md §2)
        region = RegionSetup(number % tb.params.n_regions, base, superblocks_for(n_weights, B, R, W), B, R,
                             default_k=max(1, B // 2), fmt=fmt, rounding=rounding)
        fields = await load_tensor(tb, region, tensor(rng, n_weights, B, fmt))
        block = R                                        # first block of the last (partial) superblock
        by_hand = []
        for j in range(B):
            line = region.view_line(block, j)
            for k in range(1, B + 1):
                if j < k:
                    tag = tb.read(View.PACKED_K, line, k)
                    by_hand.append((tag, layout.packed_lines(fields[block:block + 1], B, k)[0, j]))
                tag = tb.read(View.EXPANDED_K, line, k, opcode=ReqOpcode.MEM_RD_DATA)
                by_hand.append((tag, layout.expanded_lines(fields[block:block + 1], B, k, rounding, fmt)[0, j]))
            tag = tb.read(View.WEIGHT_MAJOR, line)
            by_hand.append((tag, layout.weight_major_lines(fields[block:block + 1], B)[0, j]))
            tb.read(View.PACKED_DEFAULT, line)
            tb.read(View.EXPANDED_DEFAULT, line)
            tb.read(View.PACKED_K, region.base_line + j, 1)          # block 0, j >= 1 is unmapped
        for L in range(region.span):
            tb.read(View.RAW, region.base_line + L)
        await tb.quiesce()
        for tag, expected in by_hand:
            assert drs_line(tb, tag) == expected.tobytes(), f"B={B} fmt={fmt} R={R}: tag {tag:#x} differs from layout"
        await tb.disable_region(region.index)
        base += region.span + 5
    await tb.finish()


@cocotb.parametrize(control_mode=[0, CONTROL_NXM_AS_POISON | CONTROL_MEM_DATA_NXM | CONTROL_HOLE_POISON,
                                   CONTROL_MEM_DATA_NXM])
async def test_region_edges_and_unmapped(dut, control_mode):
    """First/last line of adjacent regions, one past the end, overlap (lowest index wins), high bits, views 6/7:
    decode errors answer all 1s as CONTROL says, holes of a region (views 6/7) MemData 0 (DEVICE.md §3)."""
    tb = await start(dut, stress=True, seed_offset=1)
    tb.scoreboard.record = True
    await tb.set_control_mode(control_mode)
    rng = np.random.default_rng(tb.seed)
    first = RegionSetup(0, base_line=16, n_superblocks=2, B=4, R=2)
    second = RegionSetup(1, base_line=16 + first.span, n_superblocks=1, B=8, R=1)
    overlap = RegionSetup(2, base_line=16 + 4, n_superblocks=1, B=2, R=1)        # inside `first`
    for region in (first, second, overlap):
        raw = rng.integers(0, 256, size=(region.span, tb.params.line_bytes), dtype=np.uint8)
        tb.load_raw(region.base_line, raw)
        await tb.program_region(region)
    end = second.base_line + second.span
    for line in (15, 16, first.base_line + first.span - 1, second.base_line, end - 1, end, end + 100):
        for view in (View.RAW, View.WEIGHT_MAJOR, View.PACKED_K, View.EXPANDED_DEFAULT, 6, 7):
            tb.read(view, line, 1)
    unmapped = [tb.read(View.RAW, 15), tb.read(View.RAW, end)]
    high_bits = tb.address(View.RAW, 16) | (1 << (tb.params.hpa_bits - tb.params.line_offset_bits))
    unmapped.append(tb.req(ReqOpcode.MEM_RD, high_bits))
    if tb.params.host_port == "cxl":      # the AXI port makes MemRd only (DEVICE.md §10)
        unmapped.append(tb.req(ReqOpcode.MEM_RD_TEE, tb.address(View.RAW, 16) | (1 << 45)))
    holes = [tb.read(6, 16), tb.read(7, end - 1)]
    for line in range(overlap.base_line, overlap.base_line + overlap.span):
        tb.read(View.PACKED_K, line, 1)     # decoded in region 0 (B = 4): lines j < 1 mapped
    await tb.quiesce()
    nxm_opcode = DrsOpcode.MEM_DATA_NXM if control_mode & CONTROL_MEM_DATA_NXM else DrsOpcode.MEM_DATA
    for tag in unmapped:
        got = tb.scoreboard.responses[tag]
        assert (got["opcode"], got["poison"], got["data"]) == (
            nxm_opcode, int(bool(control_mode & CONTROL_NXM_AS_POISON)), (1 << tb.params.data_width) - 1), got
    for tag in holes:
        got = tb.scoreboard.responses[tag]
        assert (got["opcode"], got["poison"], got["data"]) == (
            DrsOpcode.MEM_DATA, int(bool(control_mode & CONTROL_HOLE_POISON)), 0), got
    await tb.finish()


@cocotb.test()
async def test_illegal_k_and_packed_lines_past_k(dut):
    """k = 0, k > B, k = 31 on views 2/3; default k outside 1..B on views 4/5; packed j >= k."""
    tb = await start(dut, stress=False)
    rng = np.random.default_rng(tb.seed)
    for index, (B, default_k) in enumerate([(4, 0), (8, 9), (2, 2)]):
        region = RegionSetup(index, base_line=64 * index, n_superblocks=1, B=B, default_k=default_k)
        tb.load_raw(region.base_line, rng.integers(0, 256, size=(region.span, tb.params.line_bytes), dtype=np.uint8))
        await tb.program_region(region)
        for j in range(B):
            line = region.base_line + j
            for k in (0, B + 1, 31, 1, B):
                tb.read(View.PACKED_K, line, k)
                tb.read(View.EXPANDED_K, line, k)
            tb.read(View.PACKED_DEFAULT, line)
            tb.read(View.EXPANDED_DEFAULT, line)
    await tb.finish()


@cocotb.parametrize(stress=[False, True])
async def test_writes_raw_weight_major_partial_and_dropped(dut, stress):
    """MemWr/MemWrPtl on raw and weight-major views (R = 1 and R > 1), then every view reads them back."""
    tb = await start(dut, stress, seed_offset=2)
    rng = random.Random(tb.seed)
    p = tb.params
    regions = [RegionSetup(0, 0, 2, 8, 1, default_k=3), RegionSetup(1, 200, 1, 4, 4, default_k=2,
                                                                  rounding=Rounding.MIDPOINT),
               RegionSetup(2, 304, 1, 16, 2, fmt=Format.BF16, default_k=9)]
    for region in regions:
        await tb.program_region(region)
    for region in regions:
        for block in range(min(region.n_blocks, 3)):
            for j in range(region.B):
                line = region.view_line(block, j)
                enables = None if j % 3 else rng.getrandbits(p.line_bytes)    # MemWrPtl, partial groups
                tb.write(View.WEIGHT_MAJOR, line, rng.getrandbits(p.data_width), byte_enable=enables)
            tb.write(View.RAW, region.block_lines(block)[0], rng.getrandbits(p.data_width),
                     byte_enable=rng.getrandbits(p.line_bytes))
            for view in (View.PACKED_K, View.EXPANDED_K, View.PACKED_DEFAULT, View.EXPANDED_DEFAULT, 6, 7):
                tb.write(view, region.view_line(block), rng.getrandbits(p.data_width))
        await tb.quiesce()     # the host waits for its writes before reading the blocks back
        for block in range(min(region.n_blocks, 3)):
            for j in range(region.B):
                line = region.view_line(block, j)
                tb.read(View.WEIGHT_MAJOR, line)
                tb.read(View.PACKED_K, line, rng.randint(1, region.B))
                tb.read(View.EXPANDED_DEFAULT, line)
            for line in region.block_lines(block):
                tb.read(View.RAW, line)
    tb.write(View.RAW, 5000, 123)             # unmapped write: dropped, completed
    tb.rwd(RwdOpcode.MEM_WR, tb.address(View.RAW, 0) | (1 << 44), 7)
    await tb.finish()


@cocotb.test()
async def test_poison_list_lines_inject_clear_and_overflow(dut):
    """Poison per DRAM line (DEVICE.md §4): a poisoned raw write poisons its line and the block reads whose k
    planes include it, nothing else of the block; a CSR inject poisons a line for the packed view at a k that
    covers it; a CSR clear and a raw MemWr of the line clear it; a record the full list cannot take is flagged
    (STATUS.poison_overflow) but poisons nothing else, until CONTROL.clear_poison; a REGION_CONFIG write keeps
    poison."""
    tb = await start(dut, stress=False)
    tb.scoreboard.record = True
    p = tb.params
    region = RegionSetup(0, 0, p.poison_entries + 6, 4, 1)      # R = 1: block b is lines 4b..4b+3

    async def poison_of(*tags):
        await tb.quiesce()
        return [tb.scoreboard.responses[t]["poison"] for t in tags]

    await tb.program_region(region)
    tb.write(View.RAW, region.block_lines(1)[2], 0x1234, poison=1)          # plane 2 of block 1
    tb.write(View.WEIGHT_MAJOR, 4 * 2, 0x5678, poison=1)                     # block 2: its 4 plane lines
    await tb.quiesce()
    assert await poison_of(tb.read(View.RAW, region.block_lines(1)[0]), tb.read(View.PACKED_K, 4 * 1, 2),
                           tb.read(View.PACKED_K, 4 * 1 + 2, 3), tb.read(View.PACKED_K, 4 * 2, 1),
                           tb.read(View.EXPANDED_K, 4 * 0 + 1, 4)) == [0, 0, 1, 1, 0]
    await tb.csr_write(CSR_POISON_LINE, region.block_lines(3)[1])            # inject plane 1 of block 3
    await tb.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_INJECT)
    assert await poison_of(tb.read(View.PACKED_K, 4 * 3, 1), tb.read(View.PACKED_K, 4 * 3 + 1, 2),
                           tb.read(View.RAW, region.block_lines(3)[1])) == [0, 1, 1]
    assert await tb.csr_read(CSR_POISON_COUNT) == 3
    await tb.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_CLEAR)
    tb.write(View.RAW, region.block_lines(1)[2], 0x4321)                     # a MemWr covers the line: cleared
    await tb.quiesce()
    assert await poison_of(tb.read(View.PACKED_K, 4 * 3 + 1, 2), tb.read(View.PACKED_K, 4 * 1 + 2, 3)) == [0, 0]
    assert await tb.csr_read(CSR_POISON_COUNT) == 1                           # block 2's record
    last = 4 + p.poison_entries
    for block in range(4, last + 1):                     # one-line records: two more than the list has free
        tb.write(View.RAW, region.block_lines(block)[0], block, poison=1)
    await tb.quiesce()
    assert await tb.csr_read(CSR_STATUS) & 1 == 1, "poison overflow flag not set"
    # no storm: the two lost lines and a clean one read clean, the listed ones stay poisoned
    assert await poison_of(*(tb.read(View.RAW, region.block_lines(block)[0])
                             for block in (0, last, last - 1, last - 2, 4))) == [0, 0, 0, 1, 1]
    await tb.check_csrs()                                # the list, record by record, as the model has it
    await tb.csr_write(CSR_CONTROL, CONTROL_CLEAR_POISON)
    assert await poison_of(tb.read(View.RAW, region.block_lines(4)[0])) == [0]
    assert await tb.csr_read(CSR_STATUS) & 1 == 0 and await tb.csr_read(CSR_POISON_COUNT) == 0
    tb.write(View.RAW, region.block_lines(4)[0], 1, poison=1)
    await tb.quiesce()
    await tb.program_region(region)                      # a region CONFIG write keeps poison (of DRAM lines)
    assert await poison_of(tb.read(View.RAW, region.block_lines(4)[0])) == [1]
    await tb.finish()


@cocotb.test()
async def test_poison_commands_act_before_their_b_response(dut):
    """DEVICE.md §6: a POISON_COMMAND inject or clear, or a CONTROL.clear_poison, is seen by a CSR read and by a
    MemRd the host sends as soon as it sees the write's B response (here in the next cycle, the earliest this
    manager can: the read is queued behind the write, and the MemRd is queued in the cycle the driver samples
    B). POISON_COUNT, POISON_LIST_ENTRY of record 0 and the MemRd's poison bit must all show the command."""
    from cocotb.triggers import Event
    from smartquant.params import CSR_POISON_LIST_ENTRY, POISON_ENTRY_VALID
    tb = await start(dut, stress=False)
    tb.scoreboard.record = True
    region = RegionSetup(0, 0, 4, 4, 1)
    await tb.program_region(region)
    line = region.block_lines(1)[2]
    await tb.csr_write(CSR_POISON_LINE, line)
    csr = tb.csr
    steps = [(CSR_POISON_COMMAND, POISON_COMMAND_INJECT, CSR_POISON_COUNT, 1, 1),
             (CSR_POISON_COMMAND, POISON_COMMAND_CLEAR, CSR_POISON_COUNT, 0, 0),
             (CSR_POISON_COMMAND, POISON_COMMAND_INJECT, CSR_POISON_LIST_ENTRY, 1 | POISON_ENTRY_VALID, 1),
             (CSR_CONTROL, CONTROL_CLEAR_POISON, CSR_POISON_COUNT, 0, 0)]
    for address, value, read_address, read_value, poison in steps:
        await tb.quiesce()
        write = {"kind": "write", "address": address, "value": value, "done": Event()}
        read = {"kind": "read", "address": read_address, "done": Event()}
        csr.ops.extend([write, read])
        tags = []

        def on_b(write=write, address=address, value=value, tags=tags):
            if "resp" in write and not tags:       # the driver has just sampled B: the MemRd goes out next cycle
                tb.model.csr_write(address, value)
                tags.append(tb.read(View.RAW, line))
        tb.driver.end_of_cycle.append(on_b)
        await read["done"].wait()
        tb.driver.end_of_cycle.remove(on_b)
        assert read["data"] == read_value, (address, value, read_address, read["data"])
        await tb.quiesce()
        assert tb.scoreboard.responses[tags[0]]["poison"] == poison, (address, value)
    await tb.finish()


@cocotb.test()
async def test_opcodes_spec_read_invalidate_and_reserved(dut):
    """Every CXL 3.1 Req and RwD opcode value (DEVICE.md §4), checked by the scoreboard against the model:
    MemSpecRd(TEE) / MemRdFwd / MemWrFwd get no response, the reads (TEE included, and MemRdFill on RwD) a DRS,
    the others an NDR."""
    tb = await start(dut, stress=True, seed_offset=3)
    region = RegionSetup(0, 0, 1, 8, 1)
    await tb.program_region(region)
    for opcode in range(16):
        tb.req(opcode, tb.address(View.PACKED_K, 1, 4))
        tb.req(opcode, tb.address(View.RAW, 9000))
    # the reads of block 0 complete before the writes into it start, and the writes before it is read again: the
    # model assumes no read and write of one block outstanding together (DEVICE.md §4; with them concurrent the
    # block buffer's hit/miss sequence depends on timing, which failed this test at seeds 2, 3 and 4)
    await tb.quiesce()
    for opcode in range(16):
        if opcode not in RWD_READS:
            tb.rwd(opcode, tb.address(View.RAW, 2), 0xFFFF)
    await tb.quiesce()
    tb.read(View.RAW, 2)
    for opcode in sorted(RWD_READS):     # reads on RwD, each alone (DEVICE.md §4): raw, packed, no region
        for address in (tb.address(View.RAW, 2), tb.address(View.PACKED_K, 1, 4), tb.address(View.RAW, 9000)):
            await tb.quiesce()
            tb.rwd(opcode, address, 0xFFFF, poison=1)
    await tb.finish()


@cocotb.test()
async def test_streaming_hits_the_block_buffer(dut):
    """Sequential packed and expanded streaming: k DRAM lines per block, the other lines hit the buffer."""
    tb = await start(dut, stress=False)
    rng = np.random.default_rng(tb.seed)
    total_blocks = 0
    for index, R in enumerate((1, 8)):
        region = RegionSetup(index, 1024 * index, 2, 8, R, default_k=5)
        await load_tensor(tb, region, tensor(rng, region.n_blocks * tb.params.data_width, 8, Format.INT))
        total_blocks += region.n_blocks
        for block in range(region.n_blocks):
            for j in range(5):
                tb.read(View.PACKED_DEFAULT, region.view_line(block, j))
            for j in range(8):
                tb.read(View.EXPANDED_K, region.view_line(block, j), 3)
    counters = await tb.finish()
    assert counters[Counter.BUFFER_MISSES] == 2 * total_blocks      # one per (block, mode)
    assert counters[Counter.DRAM_LINES_READ] == total_blocks * (5 + 3)


# --- constrained-random stress ------------------------------------------------------------------------------
@cocotb.test()
async def test_random(dut):
    """Constrained-random traffic (SQ_TRANSACTIONS, SQ_SEED); writes a summary for `smartquant sim`."""
    params, seed, transactions = settings()
    tb = make_tb(dut, params, seed)
    dut._log.info("random traffic: seed %d, %d transactions", seed, transactions)
    await tb.reset()
    traffic = RandomTraffic(tb, random.Random(seed ^ 0x5EED))
    wall_start, cpu_start, cycle_start = time.monotonic(), time.process_time(), tb.cycles
    counters, error = [], None
    try:
        await traffic.run(transactions)
        counters = await tb.finish()
    except AssertionError as failure:
        error = failure
    wall, cpu = time.monotonic() - wall_start, time.process_time() - cpu_start
    cycles = tb.cycles - cycle_start
    board = tb.scoreboard
    failed = board.stats.mismatches + len(board.missing())
    summary = {
        "seed": seed, "transactions": traffic.issued, "accepted": board.stats.requests,
        "dropped_by_reset": tb.dropped_by_reset, "failed": failed,
        "passed": max(0, traffic.issued - tb.dropped_by_reset - failed) if error is None else
        max(0, board.stats.responses - board.stats.mismatches),
        "mismatches": board.stats.mismatches, "drs_checked": board.stats.checked_drs,
        "ndr_checked": board.stats.checked_ndr, "cycles": cycles, "wall_seconds": wall,
        "cycles_per_second": cycles / wall if wall else 0.0,
        "transactions_per_second": traffic.issued / wall if wall else 0.0,
        # CPU time of the simulator process (Verilator and Python): the speed on a machine shared with other jobs
        "cpu_seconds": cpu, "cycles_per_cpu_second": cycles / cpu if cpu else 0.0,
        "dev_load": dict(board.stats.dev_load), "phases": collections.Counter(getattr(traffic, "phases_run", [])),
        "tag_reuses": board.stats.tag_reuses, "poison_either_accepted": board.stats.poison_either_accepted,
        "bursts_checked": board.bursts_checked,
        "coverage": tb.coverage.to_json(), "coverage_missed": tb.coverage.missed(),
        "coverage_line": tb.coverage.summary_line(),
        "counters": {counter_name(n): v for n, v in enumerate(counters)},
        "error": None if error is None else str(error)[:2000],
    }
    if os.environ.get("SQ_SUMMARY"):
        with open(os.environ["SQ_SUMMARY"], "w") as handle:
            json.dump(summary, handle, indent=1)
    if error is not None:
        raise error


@cocotb.test()
async def test_dropped_and_unmapped_writes_keep_the_block_buffer(dut):
    """A write the device drops (read-only view, reserved view) does not touch DRAM, so it must not cost the
    buffered block a refetch: the model keeps the slot (DEVICE.md §4 invalidates on writes of the block)."""
    tb = await start(dut, stress=False)
    region = RegionSetup(0, 0, 2, 8, 2, default_k=4)
    await tb.program_region(region)
    for view in (View.PACKED_K, View.EXPANDED_K, View.PACKED_DEFAULT, View.EXPANDED_DEFAULT, 6, 7):
        tb.read(View.PACKED_K, 8 * 1 + 0, 6)
        await tb.quiesce()
        tb.write(view, 8 * 1 + 2, 0xABCD)
        await tb.quiesce()
        tb.read(View.PACKED_K, 8 * 1 + 1, 6)
    counters = await tb.finish()
    assert counters[Counter.BUFFER_MISSES] == 1, counters[Counter.BUFFER_MISSES]


@cocotb.test()
async def test_raw_write_invalidates_and_poisons_its_own_block_with_plane_runs(dut):
    """With R > 1 a raw line L = s*R*B + p*R + r belongs to block s*R + r, not L // B (DEVICE.md §3, §4)."""
    tb = await start(dut, stress=False)
    tb.scoreboard.record = True
    region = RegionSetup(0, 0, 1, 4, 4, default_k=4)          # B = 4, R = 4: raw line 6 is plane 1 of block 2
    await tb.program_region(region)
    for block in (1, 2):
        tb.read(View.PACKED_K, block * 4, 4)                      # both blocks into the buffer (2 slots)
    await tb.quiesce()
    tb.write(View.RAW, 6, (1 << tb.params.data_width) - 1, poison=1)
    await tb.quiesce()
    tags = {block: tb.read(View.PACKED_K, block * 4 + 1, 4) for block in (1, 2)}
    counters = await tb.finish()
    assert [tb.scoreboard.responses[tags[b]]["poison"] for b in (1, 2)] == [0, 1]
    assert counters[Counter.BUFFER_HITS] == 1 and counters[Counter.BUFFER_MISSES] == 3


@cocotb.test()
async def test_buffer_key_is_mode_and_k_not_view(dut):
    """The buffer key is (region, block, packed|expanded, k, rounding) (DEVICE.md §5): a block assembled for
    expanded-k at the default k serves expanded-default, weight-major serves expanded-k at k = B, etc."""
    tb = await start(dut, stress=False)
    region = RegionSetup(0, 0, 1, 16, 4, default_k=6, rounding=Rounding.MIDPOINT)
    await tb.program_region(region)
    pairs = [((View.EXPANDED_K, 6), (View.EXPANDED_DEFAULT, 0)), ((View.WEIGHT_MAJOR, 0), (View.EXPANDED_K, 16)),
             ((View.PACKED_K, 6), (View.PACKED_DEFAULT, 0)), ((View.EXPANDED_DEFAULT, 0), (View.EXPANDED_K, 6))]
    for block, (first, second) in enumerate(pairs):
        tb.read(first[0], block * 16, first[1])
        await tb.quiesce()
        tb.read(second[0], block * 16 + 1, second[1])
        await tb.quiesce()
    counters = await tb.finish()
    assert counters[Counter.BUFFER_MISSES] == len(pairs) and counters[Counter.BUFFER_HITS] == len(pairs)


@cocotb.parametrize(stress=[False, True])
async def test_streaming_with_plane_runs_and_backpressure(dut, stress):
    """Expanded-default streams of whole B = 16 blocks with R = 4 (k = 12 single-line bursts per miss), with
    and without backpressure: each block misses once, whatever the timing (DEVICE.md §5)."""
    tb = await start(dut, stress, seed_offset=4)
    rng = np.random.default_rng(tb.seed)
    region = RegionSetup(1, 32, 1, 16, 4, default_k=12)
    await load_tensor(tb, region, tensor(rng, 4 * tb.params.data_width, 16, Format.INT))
    for block in (0, 3, 1, 3, 2):
        for j in range(16):
            tb.read(View.EXPANDED_DEFAULT, region.view_line(block, j))
    counters = await tb.finish()
    assert counters[Counter.BUFFER_MISSES] == 4, counters[Counter.BUFFER_MISSES]


@cocotb.test()
async def test_raw_write_in_second_superblock_keeps_other_blocks_buffered(dut):
    """Found by random seed 20261126: a raw write to line 150 (region base 32, B = 16, R = 4: L = 118 is
    superblock 1, plane 13, slot 2, so block 6) must leave block 3 in the buffer."""
    tb = await start(dut, stress=False)
    region = RegionSetup(1, 32, 2, 16, 4, default_k=12)
    await tb.program_region(region)
    tb.read(View.EXPANDED_DEFAULT, region.base_line + 3 * 16)
    await tb.quiesce()
    tb.write(View.RAW, 150, 0x5A5A)
    await tb.quiesce()
    tb.read(View.EXPANDED_DEFAULT, region.base_line + 3 * 16 + 5)
    await tb.quiesce()
    # the same while block 3 is being streamed: the write of another block races the buffered reads
    for write_after in range(16):
        for j in range(16):
            tb.read(View.EXPANDED_DEFAULT, region.base_line + 3 * 16 + j)
            if j == write_after:
                tb.write(View.RAW, 150, 0xA5A5 + j)
        await tb.quiesce()
    counters = await tb.finish()
    assert counters[Counter.BUFFER_MISSES] == 1 and counters[Counter.BUFFER_HITS] == 1 + 16 * 16, counters[17:19]


@cocotb.test(skip=settings()[0].host_port != "axi")
async def test_axi_host_bursts_ids_and_b_after_landing(dut):
    """AXI host port only (DEVICE.md §10): INCR write bursts of 1..16 lines with IDs reused while earlier bursts
    are outstanding, under host backpressure; every B arrives only once its lines are in DRAM (checked at the B,
    against the data written); read bursts of the same lines return the data written, by hand and through the
    scoreboard; a weight-major burst is transposed like single writes."""
    params, seed, _ = settings()
    tb = await start(dut, stress=True)
    tb.scoreboard.record = True
    tb.burst_limits = [16]
    lb = tb.params.line_bytes
    rng = random.Random(seed)
    region = RegionSetup(0, base_line=0, n_superblocks=4, B=8, R=1, default_k=4)
    await tb.program_region(region)
    written: dict[int, int] = {}          # tag of a line write -> DRAM line
    landed_early = []

    def at_b(tag, note):
        line = written.pop(tag, None)
        if line is not None:
            dram = tb.ram.read(line * lb, lb)
            if dram != bytes(tb.model.memory[line]):
                landed_early.append((tag, line))
    tb.completion_listeners.append(at_b)
    expected, all_written = {}, set()
    for burst in range(12):
        first, beats = rng.randrange(0, region.span - 16), rng.choice([1, 2, 5, 16])
        if any(line in expected for line in range(first, first + beats)):
            continue                       # one write per line in flight: the check at B looks at its lines
        for line in range(first, first + beats):
            data = rng.getrandbits(tb.params.data_width)
            written[tb.write(View.RAW, line, data)] = line
            expected[line] = data
            all_written.add(line)
        if burst % 4 == 3:
            await tb.quiesce()
            expected.clear()
    await tb.quiesce()
    assert not written and not landed_early, f"B before the write landed: {landed_early}"
    tags = {line: tb.read(View.RAW, line) for line in sorted(all_written)}
    await tb.quiesce()
    for line, tag in tags.items():
        assert drs_line(tb, tag) == bytes(tb.ram.read(line * lb, lb)), f"raw read of line {line} differs from DRAM"
    # weight-major burst: B lines of one block in one AW; read back expanded at k = B
    block = 3
    values = [rng.getrandbits(tb.params.data_width) for _ in range(region.B)]
    for j, value in enumerate(values):
        tb.write(View.WEIGHT_MAJOR, block * region.B + j, value)
    await tb.quiesce()
    back = [tb.read(View.WEIGHT_MAJOR, block * region.B + j) for j in range(region.B)]
    await tb.quiesce()
    assert [int.from_bytes(drs_line(tb, tag), "little") for tag in back] == values
    write_bursts = [beats for (kind, beats), n in tb.monitor.bursts.items() if kind == "write" and beats > 1]
    assert write_bursts and tb.coverage.bins()["host id reuse"]["write"] > 0, tb.monitor.bursts
    await tb.finish()

