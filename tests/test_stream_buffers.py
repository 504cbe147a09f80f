"""OutputBuffer, InputSkid and HeadRegisterFifo (hdl/stream_buffers.py) in the Amaranth simulator. The two
buffers: a random producer (valid at random, the payload random junk while not valid, held while valid and not
taken) and a random consumer (ready at random); every message comes out once, in order, with its payload. The
skid's payload follows the input while the skid is empty (timing round 8): this checks that it holds the message
taken while the consumer stalled (a skid loading every cycle loses it to the next message the producer
presents). The FIFO: against amaranth's SyncFIFO in lockstep.
"""
from __future__ import annotations

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib.fifo import SyncFIFO
from amaranth.sim import Simulator

from smartquant.hdl.stream_buffers import HeadRegisterFifo, InputSkid, OutputBuffer


@pytest.mark.parametrize("buffer_class", [OutputBuffer, InputSkid])
@pytest.mark.parametrize("seed", [1, 2])
def test_stream_buffer_passes_every_message_once_in_order(buffer_class, seed):
    rng = random.Random(seed)
    messages = [rng.getrandbits(16) for _ in range(300)]
    dut = buffer_class(16)
    received = []
    ready_next_mismatches = []   # OutputBuffer.ready_next must be the next cycle's i.ready

    async def bench(ctx):
        index = 0
        valid = 0
        predicted_ready = 1      # i.ready after reset
        for cycle in range(2000):
            if not valid:
                valid = int(index < len(messages) and rng.random() < 0.7)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, messages[index] if valid else rng.getrandbits(16))
            ctx.set(dut.o.ready, int(rng.random() < 0.5))
            # sample the handshakes of this cycle after the inputs settle
            i_ready, o_valid, o_ready, o_payload = (ctx.get(dut.i.ready), ctx.get(dut.o.valid),
                                                     ctx.get(dut.o.ready), ctx.get(dut.o.payload))
            if buffer_class is OutputBuffer:
                if i_ready != predicted_ready:
                    ready_next_mismatches.append(cycle)
                predicted_ready = ctx.get(dut.ready_next)
            if o_valid and o_ready:
                received.append(o_payload)
            if valid and i_ready:
                index += 1
                valid = 0
            await ctx.tick()
            if index == len(messages) and len(received) == len(messages):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert received == messages
    assert not ready_next_mismatches, f"ready_next wrong before cycles {ready_next_mismatches[:10]}"


class FifoPair(Elaboratable):
    """HeadRegisterFifo and amaranth's SyncFIFO of the same depth, driven by the same write and read signals."""

    def __init__(self, depth: int):
        self.dut = HeadRegisterFifo(width=16, depth=depth)
        self.reference = SyncFIFO(width=16, depth=depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.submodules.reference = self.reference
        m.d.comb += [self.reference.w_data.eq(self.dut.w_data), self.reference.w_en.eq(self.dut.w_en),
                     self.reference.r_en.eq(self.dut.r_en)]
        return m


@pytest.mark.parametrize("depth", [1, 2, 3, 15])
@pytest.mark.parametrize("seed", [1, 2])
def test_head_register_fifo_behaves_as_sync_fifo_each_cycle(depth, seed):
    """Timing round 21: the front end's read FIFO keeps its head in a register. Against amaranth's SyncFIFO in
    lockstep (random writes and reads, bursts that fill and drain it): w_rdy, r_rdy, level and (while r_rdy)
    r_data agree in every cycle, so the change moves no cycle at the front end's ports."""
    rng = random.Random(seed)
    pair = FifoPair(depth)
    dut, reference = pair.dut, pair.reference
    differences = []
    reads = []

    async def bench(ctx):
        for cycle in range(3000):
            phase = (cycle // 200) % 3      # write-heavy, read-heavy, balanced
            ctx.set(dut.w_en, int(rng.random() < (0.8, 0.3, 0.5)[phase]))
            ctx.set(dut.w_data, rng.getrandbits(16))
            ctx.set(dut.r_en, int(rng.random() < (0.3, 0.8, 0.5)[phase]))
            observed = [(ctx.get(getattr(dut, name)), ctx.get(getattr(reference, name)))
                        for name in ("w_rdy", "r_rdy", "level")]
            if ctx.get(reference.r_rdy):
                observed.append((ctx.get(dut.r_data), ctx.get(reference.r_data)))
                if ctx.get(reference.r_en):
                    reads.append(ctx.get(reference.r_data))
            if any(a != b for a, b in observed):
                differences.append((cycle, observed))
            await ctx.tick()

    sim = Simulator(pair)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not differences, differences[:5]
    assert len(reads) > 500        # the comparison saw traffic, not an idle queue (depth 1: every other cycle)
