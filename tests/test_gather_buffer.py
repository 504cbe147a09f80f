"""GatherBuffer (hdl/engine/gather_buffer.py) in the Amaranth simulator.

Blocks of random B-bit weights (B = 2, 4, 8, 16) are cut into weight-major lines by the golden model
(golden.layout.weight_major_lines), which join the buffer in random order with random byte enables. Expected
plane lines from the golden model's transpose (golden.layout.block_planes) of the block the enabled groups
write: every plane byte under the gathered WSTRB must equal it; the WSTRB is the union of the lines' fully
enabled B-byte groups (plane byte j*W/8/B + g for group g of line j), `partial_groups` counts the partly
enabled groups, tags / LD-IDs sit in join order, `full` is set with the B-th line and a line joining in the
cycle of a flush starts the next block.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartquant.golden.layout import block_planes, weight_major_lines
from smartquant.hdl.engine.gather_buffer import GatherBuffer
from smartquant.params import ControllerParams

PARAMS = ControllerParams(data_width=128, b_max=16, dram_addr_bits=20)
W = PARAMS.data_width
LINE_BYTES = PARAMS.line_bytes


def line_int(row) -> int:
    return int.from_bytes(bytes(np.asarray(row, dtype=np.uint8)), "little")


def random_enables(rng, B):
    """Whole-line, or per B-byte group: all, none or a part of its bytes."""
    if rng.random() < 0.4:
        return (1 << LINE_BYTES) - 1
    enables = 0
    for g in range(LINE_BYTES // B):
        kind = rng.choice(["all", "none", "part"])
        bits = (1 << B) - 1 if kind == "all" else 0 if kind == "none" else rng.randrange(1, (1 << B) - 1)
        enables |= bits << (g * B)
    return enables


def expected_block(B, block, joins):
    """(plane lines as ints, WSTRB, partial-group counts) of the lines `joins` ((j, enables), in order) of
    `block` (W B-bit weights), and the mask of plane bytes that hold written weights."""
    groups_per_line = LINE_BYTES // B
    strobe = 0
    partial = []
    for j, enables in joins:
        n_partial = 0
        for g in range(groups_per_line):
            group = (enables >> (g * B)) & ((1 << B) - 1)
            if group == (1 << B) - 1:
                strobe |= 1 << (j * groups_per_line + g)
            elif group:
                n_partial += 1
        partial.append(n_partial)
    planes = [line_int(row) for row in block_planes(block[np.newaxis, :], B)[0]]
    return planes, strobe, partial


@pytest.mark.parametrize("B", [2, 4, 8, 16])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_lines_merge_into_the_golden_planes(B, seed):
    rng = random.Random(seed * 100 + B)
    np_rng = np.random.default_rng(seed * 100 + B)
    dut = GatherBuffer(PARAMS)
    cases = []
    for n in range(6):
        block = np_rng.integers(0, 1 << B, size=W, dtype=np.uint32)
        lines = weight_major_lines(block[np.newaxis, :], B)[0]
        order = rng.sample(range(B), rng.randint(1, B))
        joins = [(j, random_enables(rng, B)) for j in order]
        cases.append((n, block, lines, joins))

    async def bench(ctx):
        for n, block, lines, joins in cases:
            want_planes, want_strobe, want_partial = expected_block(B, block, joins)
            for slot, (j, enables) in enumerate(joins):
                ctx.set(dut.join, {"valid": 1, "data": line_int(lines[j]), "byte_enable": enables,
                                   "line_in_block": j, "log2_b": B.bit_length() - 1, "log2_r": n % 3,
                                   "first_line": 40 * n, "region": n % 4, "block": n, "tag": 100 * n + slot,
                                   "ld_id": slot % 16, "poison": int(n == 2 and slot == 0)})
                # the first line of every block after the first joins as the previous block flushes
                ctx.set(dut.flush, int(slot == 0 and n > 0))
                assert ctx.get(dut.partial_groups) == want_partial[slot]
                await ctx.tick()
            ctx.set(dut.join.valid, 0)
            ctx.set(dut.flush, 0)
            got = ctx.get(dut.gathered)
            assert (got.valid, got.count, got.full) == (1, len(joins), int(len(joins) == B))
            assert (got.region, got.block, got.first_line, got.log2_b, got.log2_r) == (
                n % 4, n, 40 * n, B.bit_length() - 1, n % 3)
            assert got.poisoned == int(n == 2)
            assert got.strobe == want_strobe
            byte_mask = sum(0xFF << (8 * i) for i in range(LINE_BYTES) if want_strobe >> i & 1)
            for plane in range(B):
                assert got.planes[plane] & byte_mask == want_planes[plane] & byte_mask, f"plane {plane}"
            assert [got.tags[i] for i in range(len(joins))] == [100 * n + slot for slot in range(len(joins))]
            assert [got.ld_ids[i] for i in range(len(joins))] == [slot % 16 for slot in range(len(joins))]
        ctx.set(dut.flush, 1)
        await ctx.tick()
        assert ctx.get(dut.gathered.valid) == 0 and ctx.get(dut.gathered.full) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_a_later_line_overwrites_the_bytes_it_enables():
    """Line 0 of a B = 8 block written twice: the second (only group 0 enabled) replaces plane byte 0 of every
    plane and leaves the other plane bytes of line 0 as the first wrote them."""
    B = 8
    dut = GatherBuffer(PARAMS)
    first = np.arange(W, dtype=np.uint32) % 256
    second = (255 - np.arange(W, dtype=np.uint32)) % 256
    first_lines = weight_major_lines(first[np.newaxis, :], B)[0]
    second_lines = weight_major_lines(second[np.newaxis, :], B)[0]
    # plane byte 0 (weights 0..7) from the second write, plane byte 1 (weights 8..15) from the first
    merged = first.copy()
    merged[:8] = second[:8]
    want = [line_int(row) for row in block_planes(merged[np.newaxis, :], B)[0]]

    async def bench(ctx):
        for data, enables in ((first_lines[0], (1 << LINE_BYTES) - 1), (second_lines[0], 0xFF)):
            ctx.set(dut.join, {"valid": 1, "data": line_int(data), "byte_enable": enables, "line_in_block": 0,
                               "log2_b": 3, "log2_r": 0, "first_line": 0, "region": 0, "block": 0, "tag": 1,
                               "ld_id": 0, "poison": 0})
            await ctx.tick()
        got = ctx.get(dut.gathered)
        assert got.strobe == 0b11 and got.count == 2 and got.full == 0
        for plane in range(B):
            assert got.planes[plane] & 0xFFFF == want[plane] & 0xFFFF, f"plane {plane}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
