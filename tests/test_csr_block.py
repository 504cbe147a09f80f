"""CsrBlock in the Amaranth simulator, driven by a small AXI4-Lite manager written as async testbench helpers.

Expectations come from docs/DEVICE.md §6 and smartquant.params (addresses, ID, VERSION, PARAMS fields, config
legality), not from the RTL.
"""
import random

import pytest
from amaranth.sim import Simulator

from smartquant.params import (
    ControllerParams, Counter, N_COUNTERS, CSR_ID, CSR_VERSION, CSR_PARAMS, CSR_CONTROL, CSR_STATUS,
    CSR_REGION_BASE, CSR_REGION_STRIDE, CSR_COUNTER_BASE, ID_VALUE, VERSION_VALUE, CONTROL_NXM_AS_POISON,
    CONTROL_MEM_DATA_NXM, CONTROL_HOLE_POISON, CONTROL_CLEAR_COUNTERS, CONTROL_CLEAR_POISON, Format, SUPPORTED_B, MAX_PLANE_RUN,
    region_config_word, CSR_POISON_LINE, CSR_POISON_COMMAND, CSR_POISON_LIST_INDEX, CSR_POISON_LIST_LINE,
    CSR_POISON_LIST_ENTRY, CSR_POISON_COUNT, POISON_COMMAND_INJECT, POISON_COMMAND_CLEAR, POISON_ENTRY_VALID,
)
from smartquant.hdl.backend.axi import AXI_RESP_OKAY
from smartquant.hdl.csr.csr_block import CsrBlock


# --- AXI4-Lite manager helpers -----------------------------------------------------------------------------
async def axil_write(ctx, bus, address, value, strobe=0xF, w_first=False):
    """One write; AW and W are presented one after the other (either order) to exercise the independence."""
    async def put_aw():
        ctx.set(bus.awaddr, address)
        ctx.set(bus.awvalid, 1)
        await ctx.tick().until(bus.awready)
        ctx.set(bus.awvalid, 0)

    async def put_w():
        ctx.set(bus.wdata, value)
        ctx.set(bus.wstrb, strobe)
        ctx.set(bus.wvalid, 1)
        await ctx.tick().until(bus.wready)
        ctx.set(bus.wvalid, 0)

    for put in ((put_w, put_aw) if w_first else (put_aw, put_w)):
        await put()
    ctx.set(bus.bready, 1)
    (resp,) = await ctx.tick().sample(bus.bresp).until(bus.bvalid)
    ctx.set(bus.bready, 0)
    assert resp == AXI_RESP_OKAY


async def axil_read(ctx, bus, address):
    ctx.set(bus.araddr, address)
    ctx.set(bus.arvalid, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    ctx.set(bus.rready, 1)
    data, resp = await ctx.tick().sample(bus.rdata, bus.rresp).until(bus.rvalid)
    ctx.set(bus.rready, 0)
    assert resp == AXI_RESP_OKAY
    return data


def run(dut, *testbenches, processes=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    for proc in processes:
        sim.add_process(proc)
    sim.run()


def region_addr(i, offset):
    return CSR_REGION_BASE + CSR_REGION_STRIDE * i + offset


def spec_config_legal(fmt, B, R, rounding, b_max):
    """DEVICE.md §6: BF16 needs B = 16, B <= b_max, rounding 0/1/2; R is a plane run of 1..64."""
    return not ((fmt == Format.BF16 and B != 16) or B > b_max or rounding > 2 or R > MAX_PLANE_RUN)


# --- tests ---------------------------------------------------------------------------------------------------
def test_identity_params_and_holes():
    params = ControllerParams()
    dut = CsrBlock(params)

    async def tb(ctx):
        assert await axil_read(ctx, dut.bus, CSR_ID) == ID_VALUE
        assert await axil_read(ctx, dut.bus, CSR_VERSION) == VERSION_VALUE
        word = await axil_read(ctx, dut.bus, CSR_PARAMS)
        assert word & 0xFF == params.data_width // 8
        assert (word >> 8) & 0x1F == params.b_max
        assert (word >> 13) & 0x1F == params.n_regions
        assert (word >> 18) & 0xF == params.buffer_slots
        assert (word >> 22) & 0x3F == params.dram_addr_bits
        # Holes read 0 and swallow writes (documented choice: OKAY, not SLVERR).
        for hole in (0x02C, 0x0FC, region_addr(params.n_regions, 0), 0x300, CSR_COUNTER_BASE + 4 * 31, 0xFFC):
            await axil_write(ctx, dut.bus, hole, 0xFFFF_FFFF)
            assert await axil_read(ctx, dut.bus, hole) == 0
        # ID is read-only.
        await axil_write(ctx, dut.bus, CSR_ID, 0)
        assert await axil_read(ctx, dut.bus, CSR_ID) == ID_VALUE

    run(dut, tb)


# (format, B, log2 R, rounding) corners of the legality rule, then random configurations
CONFIG_CORNERS = [
    (Format.INT, 8, 0, 0), (Format.INT, 2, 6, 1), (Format.INT, 16, 3, 0), (Format.BF16, 16, 0, 1),
    (Format.BF16, 8, 0, 0), (Format.INT, 4, 7, 0), (Format.INT, 4, 2, 2), (Format.INT, 4, 2, 3),
    (Format.BF16, 16, 1, 2),
]


@pytest.mark.parametrize("b_max", [8, 16])
def test_region_table_readback_and_legality(b_max):
    params = ControllerParams(b_max=b_max, n_regions=3)
    dut = CsrBlock(params)
    rng = random.Random(b_max)
    line_bits = params.dram_addr_bits - params.line_offset_bits
    configs = CONFIG_CORNERS + [(rng.choice(list(Format)), rng.choice(SUPPORTED_B), rng.randrange(8),
                                 rng.randrange(4)) for _ in range(12)]

    async def tb(ctx):
        for trial, (fmt, B, log2_r, rounding) in enumerate(configs):
            i = rng.randrange(params.n_regions)
            base = rng.getrandbits(line_bits)
            superblocks = rng.getrandbits(line_bits)
            default_k = rng.randrange(32)
            # region_config_word refuses illegal R and rounding, so assemble those fields by hand.
            word = region_config_word(enable=True, fmt=fmt, B=B, R=1, default_k=default_k, rounding=0)
            word |= (log2_r << 4) | (rounding << 12)
            await axil_write(ctx, dut.bus, region_addr(i, 0), base, w_first=bool(trial & 1))
            await axil_write(ctx, dut.bus, region_addr(i, 4), superblocks)
            await axil_write(ctx, dut.bus, region_addr(i, 8), word)
            legal = spec_config_legal(fmt, B, 1 << log2_r, rounding, params.b_max)
            assert await axil_read(ctx, dut.bus, region_addr(i, 0)) == base
            assert await axil_read(ctx, dut.bus, region_addr(i, 4)) == superblocks
            assert await axil_read(ctx, dut.bus, region_addr(i, 8)) == (word if legal else word & ~1), \
                f"config {word:#x} legal={legal}"
            entry = dut.regions[i]
            # active only with a base aligned to B lines (no R = 1 burst may cross a 4 KiB boundary)
            assert ctx.get(entry.enable) == (legal and base % B == 0), f"base {base:#x} B={B}"
            await axil_write(ctx, dut.bus, region_addr(i, 0), base & ~(B - 1))
            assert ctx.get(entry.enable) == legal
            base &= ~(B - 1)
            assert ctx.get(entry.bf16) == int(fmt)
            assert (1 << ctx.get(entry.log2_b)) == B
            assert ctx.get(entry.log2_r) == log2_r
            assert ctx.get(entry.default_k) == default_k
            assert ctx.get(entry.midpoint) == (rounding & 1)
            assert (ctx.get(dut.toward_zero) >> i) & 1 == int(rounding == 2)
            assert ctx.get(entry.base_line) == base
            assert ctx.get(entry.n_superblocks) == superblocks
            # Disabling works whatever the other fields say.
            await axil_write(ctx, dut.bus, region_addr(i, 8), word & ~1)
            assert ctx.get(entry.enable) == 0

    run(dut, tb)


def test_region_end_line_has_settled_when_the_write_response_is_valid():
    """end_line (base + n_superblocks * R * B, saturated at the device end) is registered after the region
    registers: the B response of each write must not be valid before it shows the new value, since a host may
    send a request in the very cycle it sees B."""
    params = ControllerParams(n_regions=2, b_max=8, dram_addr_bits=20)
    line_bits = params.dram_addr_bits - params.line_offset_bits
    dut = CsrBlock(params)
    B, R = 8, 4
    config = 1 | ((B.bit_length() - 2) << 2) | ((R.bit_length() - 1) << 4) | (3 << 7)
    # (register, value, expected end_line once written); CONFIG 0 reads as B = 2, R = 1; the last write runs
    # past the device end
    steps = [(region_addr(1, 0), 0x100, 0x100), (region_addr(1, 4), 5, 0x100 + 5 * 2 * 1),
             (region_addr(1, 8), config, 0x100 + 5 * R * B), (region_addr(1, 4), (1 << line_bits) - 1, 1 << line_bits)]

    async def tb(ctx):
        bus = dut.bus
        for address, value, expected in steps:
            ctx.set(bus.awaddr, address)
            ctx.set(bus.wdata, value)
            ctx.set(bus.wstrb, 0xF)
            ctx.set(bus.awvalid, 1)
            ctx.set(bus.wvalid, 1)
            ctx.set(bus.bready, 1)
            for _ in range(10):
                await ctx.tick()
                if ctx.get(bus.awready) == 0:
                    ctx.set(bus.awvalid, 0)
                    ctx.set(bus.wvalid, 0)
                if ctx.get(bus.bvalid):
                    break
            assert ctx.get(bus.bvalid)
            assert ctx.get(dut.regions[1].end_line) == expected, (hex(address), value)
            await ctx.tick()

    run(dut, tb)


@pytest.mark.parametrize("dram_addr_bits", [16, 20])
def test_region_end_line_saturates_at_the_device_end(dram_addr_bits):
    """end_line = min(base + n_superblocks * R * B, 2^lines) at the edges of the saturation: a sum one short of,
    equal to and just past the device end, a base near the end with a small region (the sum carries past the
    line space though the size alone does not), and a size alone at or past 2^lines (DEVICE.md §6; the golden
    model's region_end_line)."""
    params = ControllerParams(n_regions=2, b_max=8, dram_addr_bits=dram_addr_bits)
    line_bits = params.dram_addr_bits - params.line_offset_bits
    end = 1 << line_bits
    dut = CsrBlock(params)
    cases = []      # (base, n_superblocks, log2_b, log2_r)
    for log2_b, log2_r in ((1, 0), (3, 2), (2, 6)):
        size = 1 << (log2_b + log2_r)
        for base in (0, end - size, end - 2 * size, end - 8 * size):
            for n in (1, 2, 3, (end - base) // size, (end - base) // size + 1, end // size, end // size + 1,
                      (1 << min(32, line_bits)) - 1):
                if 0 <= base < end and 0 <= n < 1 << min(32, line_bits):
                    cases.append((base, n, log2_b, log2_r))

    async def tb(ctx):
        for base, n, log2_b, log2_r in cases:
            await axil_write(ctx, dut.bus, region_addr(1, 0), base)
            await axil_write(ctx, dut.bus, region_addr(1, 4), n)
            await axil_write(ctx, dut.bus, region_addr(1, 8), region_config_word(
                enable=True, fmt=Format.INT, B=1 << log2_b, R=1 << log2_r, default_k=1, rounding=0))
            expected = min(base + (n << (log2_b + log2_r)), end)
            assert ctx.get(dut.regions[1].end_line) == expected, (hex(base), n, log2_b, log2_r)

    run(dut, tb)


def test_byte_strobes_merge():
    dut = CsrBlock(ControllerParams())

    async def tb(ctx):
        await axil_write(ctx, dut.bus, region_addr(1, 0), 0x0123_4567)
        await axil_write(ctx, dut.bus, region_addr(1, 0), 0x03AB_CDEF, strobe=0b1010)
        value = await axil_read(ctx, dut.bus, region_addr(1, 0))
        # bytes 1 and 3 from the new word, bytes 0 and 2 kept (base is 26 bits: 32-bit DPA, 64-byte lines)
        assert value == 0x0323_CD67 & ((1 << 26) - 1)

    run(dut, tb)


def test_control_status_and_pulses():
    dut = CsrBlock(ControllerParams())
    pulses = {"clear_poison": [], "regions_written": []}

    async def monitor(ctx):
        cycle = 0
        async for _, _, clear_poison, regions_written in ctx.tick().sample(dut.clear_poison, dut.regions_written):
            if clear_poison:
                pulses["clear_poison"].append(cycle)
            if regions_written:
                pulses["regions_written"].append(cycle)
            cycle += 1

    async def tb(ctx):
        await axil_write(ctx, dut.bus, CSR_CONTROL, CONTROL_NXM_AS_POISON)
        assert ctx.get(dut.nxm_as_poison) == 1
        assert await axil_read(ctx, dut.bus, CSR_CONTROL) == CONTROL_NXM_AS_POISON
        assert (ctx.get(dut.mem_data_nxm), ctx.get(dut.hole_poison)) == (0, 0)
        # the decode-error opcode and hole-poison mode bits (DEVICE.md §6), each on its own
        for mode in (CONTROL_MEM_DATA_NXM, CONTROL_HOLE_POISON, CONTROL_NXM_AS_POISON):
            await axil_write(ctx, dut.bus, CSR_CONTROL, mode)
            assert await axil_read(ctx, dut.bus, CSR_CONTROL) == mode
            assert (ctx.get(dut.nxm_as_poison), ctx.get(dut.mem_data_nxm), ctx.get(dut.hole_poison)) == (
                mode == CONTROL_NXM_AS_POISON, mode == CONTROL_MEM_DATA_NXM, mode == CONTROL_HOLE_POISON)
        assert pulses == {"clear_poison": [], "regions_written": []}
        # Action bits read back 0 and leave nxm_as_poison as written alongside them.
        await axil_write(ctx, dut.bus, CSR_CONTROL, CONTROL_CLEAR_POISON | CONTROL_CLEAR_COUNTERS)
        assert await axil_read(ctx, dut.bus, CSR_CONTROL) == 0
        assert len(pulses["clear_poison"]) == 1 and pulses["regions_written"] == []
        await axil_write(ctx, dut.bus, region_addr(0, 0), 5)   # base: invalidates, keeps poison
        assert len(pulses["clear_poison"]) == 1 and len(pulses["regions_written"]) == 1
        await axil_write(ctx, dut.bus, region_addr(2, 8), 0)   # config: invalidates, keeps poison (of DRAM lines)
        assert len(pulses["clear_poison"]) == 1 and len(pulses["regions_written"]) == 2
        # STATUS follows its inputs.
        for overflow, busy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            ctx.set(dut.poison_overflow, overflow)
            ctx.set(dut.busy, busy)
            assert await axil_read(ctx, dut.bus, CSR_STATUS) == overflow | (busy << 1)
        # Each pulse lasts one cycle.
        for name in pulses:
            assert all(b - a > 1 for a, b in zip(pulses[name], pulses[name][1:]))

    run(dut, tb, processes=[monitor])


def test_poison_list_registers():
    """POISON_LINE (RW), POISON_COMMAND (1 inject, 2 clear: one pulse with the line; anything else, or byte 0 not
    strobed, nothing), POISON_LIST_INDEX (RW, drives the list's read port), POISON_LIST_LINE / ENTRY / COUNT
    from the list (a free record reads 0), DEVICE.md §6."""
    params = ControllerParams(poison_entries=5)
    dut = CsrBlock(params)
    commands = []

    async def monitor(ctx):
        async for _, _, valid, clear, line in ctx.tick().sample(dut.poison_command.valid, dut.poison_command.clear,
                                                                 dut.poison_command.line):
            if valid:
                commands.append((clear, line))

    async def tb(ctx):
        await axil_write(ctx, dut.bus, CSR_POISON_LINE, 0xFFFF_FFFF)
        assert await axil_read(ctx, dut.bus, CSR_POISON_LINE) == (1 << 26) - 1     # 32-bit DPA: 26 line bits
        await axil_write(ctx, dut.bus, CSR_POISON_LINE, 0x1234)
        await axil_write(ctx, dut.bus, CSR_POISON_COMMAND, POISON_COMMAND_INJECT)
        await axil_write(ctx, dut.bus, CSR_POISON_COMMAND, 3)                       # not a command
        await axil_write(ctx, dut.bus, CSR_POISON_COMMAND, POISON_COMMAND_CLEAR, strobe=0b0010)
        await axil_write(ctx, dut.bus, CSR_POISON_LINE, 0x77)
        await axil_write(ctx, dut.bus, CSR_POISON_COMMAND, POISON_COMMAND_CLEAR)
        assert await axil_read(ctx, dut.bus, CSR_POISON_COMMAND) == 0
        assert commands == [(0, 0x1234), (1, 0x77)]
        await axil_write(ctx, dut.bus, CSR_POISON_LIST_INDEX, 0xFFFF_FFFF)
        assert await axil_read(ctx, dut.bus, CSR_POISON_LIST_INDEX) == 7            # poison_index_limit - 1
        await axil_write(ctx, dut.bus, CSR_POISON_LIST_INDEX, 3)
        assert ctx.get(dut.poison_list_index) == 3
        ctx.set(dut.poison_record.first, 0x3_0000)
        ctx.set(dut.poison_record.log2_stride, 6)
        ctx.set(dut.poison_record.mask, 0x8001)
        ctx.set(dut.poison_count, 4)
        for valid in (1, 0):
            ctx.set(dut.poison_record_valid, valid)
            assert await axil_read(ctx, dut.bus, CSR_POISON_LIST_LINE) == valid * 0x3_0000
            assert await axil_read(ctx, dut.bus, CSR_POISON_LIST_ENTRY) == valid * (
                0x8001 | 6 << 16 | POISON_ENTRY_VALID)
        assert await axil_read(ctx, dut.bus, CSR_POISON_COUNT) == 4

    run(dut, tb, processes=[monitor])


def test_counter_bank_counts_and_clears():
    dut = CsrBlock(ControllerParams())
    rng = random.Random(11)
    n_cycles = 40
    increments = [[rng.randrange(256) for _ in range(N_COUNTERS)] for _ in range(n_cycles)]
    expected = [sum(cycle[n] for cycle in increments) & 0xFFFF_FFFF for n in range(N_COUNTERS)]
    reserved = set(range(Counter.RWD_MEM_RD_FILL + 1, Counter.READS_AT_K1))   # 31 (DEVICE.md §6)

    async def tb(ctx):
        await ctx.tick()
        for cycle in increments:
            for n, inc in enumerate(cycle):
                ctx.set(dut.counter_inc[n], inc)
            await ctx.tick()
        for n in range(N_COUNTERS):
            ctx.set(dut.counter_inc[n], 0)
        await ctx.tick()   # increments are registered: a counter shows an event one cycle later
        for n in range(N_COUNTERS):
            value = await axil_read(ctx, dut.bus, CSR_COUNTER_BASE + 4 * n)
            assert value == (0 if n in reserved else expected[n]), f"counter {n}"
        await axil_write(ctx, dut.bus, CSR_CONTROL, CONTROL_CLEAR_COUNTERS)
        for n in (0, 13, 27, 47):
            assert await axil_read(ctx, dut.bus, CSR_COUNTER_BASE + 4 * n) == 0
        # Counting resumes after the clear.
        ctx.set(dut.counter_inc[Counter.NDR_SENT], 3)
        await ctx.tick().repeat(5)
        ctx.set(dut.counter_inc[Counter.NDR_SENT], 0)
        await ctx.tick()
        assert await axil_read(ctx, dut.bus, CSR_COUNTER_BASE + 4 * Counter.NDR_SENT) == 15

    run(dut, tb)


def test_response_backpressure_keeps_order_and_values():
    """B and R held back by the manager: a second write waits behind the unanswered first one (nothing lost),
    and RDATA stays stable while RREADY is low."""
    dut = CsrBlock(ControllerParams())
    bus = dut.bus

    async def tb(ctx):
        ctx.set(bus.awaddr, region_addr(0, 0))
        ctx.set(bus.wdata, 111)
        ctx.set(bus.wstrb, 0xF)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)               # AW and W in the same cycle
        await ctx.tick().until(bus.awready & bus.wready)
        ctx.set(bus.awaddr, region_addr(0, 0))
        ctx.set(bus.wdata, 222)
        await ctx.tick().until(bus.awready & bus.wready)   # second write taken into the holding registers
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        await ctx.tick().repeat(5)           # first B still unanswered: the second write must not act yet
        assert ctx.get(bus.bvalid) == 1
        assert ctx.get(dut.regions[0].base_line) == 111
        ctx.set(bus.bready, 1)
        await ctx.tick()                     # first B taken
        await ctx.tick().until(bus.bvalid)   # second write acts and answers
        ctx.set(bus.bready, 0)
        assert ctx.get(dut.regions[0].base_line) == 222
        ctx.set(bus.bready, 1)
        await ctx.tick()
        ctx.set(bus.bready, 0)
        assert ctx.get(bus.bvalid) == 0

        ctx.set(bus.araddr, CSR_ID)
        ctx.set(bus.arvalid, 1)
        await ctx.tick().until(bus.arready)
        ctx.set(bus.araddr, CSR_VERSION)     # next read offered while the first response is held
        for _ in range(4):
            await ctx.tick()
            assert ctx.get(bus.rvalid) == 1 and ctx.get(bus.rdata) == ID_VALUE and ctx.get(bus.arready) == 0
        ctx.set(bus.rready, 1)
        await ctx.tick()                     # ID taken; VERSION accepted on a later edge
        await ctx.tick().until(bus.arready)
        ctx.set(bus.arvalid, 0)
        data = (await ctx.tick().sample(bus.rdata).until(bus.rvalid))[0]
        assert data == VERSION_VALUE

    run(dut, tb)


def test_random_accesses_match_device_model():
    """Random strobed writes and reads over the whole map (holes, unaligned addresses, regions past
    n_regions included) against golden/device.py's CSR model, which reads DEVICE.md §6 independently."""
    from smartquant.golden.device import DeviceModel, decode_region_config
    from smartquant.params import TIMING_COUNTERS
    params = ControllerParams(n_regions=2, b_max=8, dram_addr_bits=20)
    dut = CsrBlock(params)
    model = DeviceModel(params, memory_bytes=params.line_bytes)
    rng = random.Random(2026)
    registers = [CSR_ID, CSR_VERSION, CSR_PARAMS, CSR_CONTROL, CSR_STATUS, 0x014, 0x200, 0xFFC]
    registers += [region_addr(i, offset) for i in range(params.n_regions + 1) for offset in (0, 4, 8, 12)]
    registers += [CSR_COUNTER_BASE + 4 * n for n in (0, 13, 26, 28, 29, 47, 48)]

    def random_config():
        word = rng.getrandbits(32)
        if rng.random() < 0.5:   # mostly plausible configurations, so that legal ones occur often
            word = region_config_word(enable=True, fmt=Format.INT, B=rng.choice([2, 4, 8]), R=1 << rng.randrange(7),
                                      default_k=rng.randrange(1, 9), rounding=rng.randrange(3))
        return word

    async def tb(ctx):
        for _ in range(160):
            address = rng.choice(registers) | rng.choice([0, 0, 0, 1, 2, 3])
            if rng.random() < 0.5:
                value = random_config() if (address & ~3) - CSR_REGION_BASE in (8, 0x18) else rng.getrandbits(32)
                strobe = rng.choice([0xF, 0xF, rng.randrange(16)])
                await axil_write(ctx, dut.bus, address, value, strobe=strobe, w_first=rng.random() < 0.5)
                model.csr_write(address, value, strobe)
            else:
                n = ((address & ~3) - CSR_COUNTER_BASE) // 4
                value = await axil_read(ctx, dut.bus, address)
                expected = 0 if n in TIMING_COUNTERS else model.csr_read(address)
                assert value == expected, f"read {address:#x}: {value:#x} != {expected:#x}"
            assert (ctx.get(dut.nxm_as_poison), ctx.get(dut.mem_data_nxm), ctx.get(dut.hole_poison)) == (
                model.nxm_as_poison, model.mem_data_nxm, model.hole_poison)
            for i in range(params.n_regions):
                config = decode_region_config(params, model.region_config[i])
                entry = dut.regions[i]
                assert ctx.get(entry.enable) == model.region_active(i)
                if config.enable:
                    assert (1 << ctx.get(entry.log2_b), 1 << ctx.get(entry.log2_r)) == (config.B, config.R)
                    rounding = ctx.get(entry.midpoint) | ((ctx.get(dut.toward_zero) >> i & 1) << 1)
                    assert (ctx.get(entry.default_k), rounding) == (config.default_k, config.rounding)
                    assert ctx.get(entry.bf16) == config.fmt
                    # the precomputed end of the region, settled by the time the host sees B (or R)
                    span = model.region_superblocks[i] * config.R * config.B
                    line_bits = params.dram_addr_bits - params.line_offset_bits
                    assert ctx.get(entry.end_line) == min(model.region_base[i] + span, 1 << line_bits)
                assert ctx.get(entry.base_line) == model.region_base[i]
                assert ctx.get(entry.n_superblocks) == model.region_superblocks[i]

    run(dut, tb)


def test_rejects_csr_space_too_small_for_counters():
    with pytest.raises(ValueError, match="cannot reach COUNTER"):
        CsrBlock(ControllerParams(csr_addr_bits=10))



def test_read_samples_at_the_ar_handshake_and_answers_two_cycles_later():
    """DEVICE.md §6: a read's value is the register's in the cycle AR is accepted, R is valid two cycles later
    (no earlier), and ARREADY is low from the handshake until R is taken. A counter that counts every cycle
    from cycle s on holds t - s - 1 in cycle t (the increment is registered once, then added), so R's value
    names the cycle it was sampled in."""
    dut = CsrBlock(ControllerParams())
    counter = int(Counter.REQ_MEM_RD)
    address = CSR_COUNTER_BASE + 4 * counter

    async def tb(ctx):
        bus = dut.bus
        start = 3
        await ctx.tick().repeat(start)
        ctx.set(dut.counter_inc[counter], 1)      # counting from cycle `start`
        cycle = start
        for handshake in (start + 6, start + 13):
            await ctx.tick().repeat(handshake - cycle)
            cycle = handshake
            ctx.set(bus.araddr, address)
            ctx.set(bus.arvalid, 1)
            assert ctx.get(bus.arready) == 1          # the handshake is in this cycle
            await ctx.tick()
            cycle += 1
            ctx.set(bus.arvalid, 0)
            ctx.set(bus.rready, 1)
            waited = 0
            while not ctx.get(bus.rvalid):
                assert ctx.get(bus.arready) == 0 and waited < 4
                await ctx.tick()
                cycle += 1
                waited += 1
            assert cycle - handshake == 2, f"R valid {cycle - handshake} cycles after the AR handshake"
            assert ctx.get(bus.arready) == 0
            assert ctx.get(bus.rdata) == handshake - start - 1, (ctx.get(bus.rdata), handshake)
            await ctx.tick()                          # R taken
            cycle += 1
            ctx.set(bus.rready, 0)
            assert ctx.get(bus.rvalid) == 0 and ctx.get(bus.arready) == 1

    run(dut, tb)
