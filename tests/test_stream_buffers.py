"""OutputBuffer and InputSkid (hdl/stream_buffers.py) in the Amaranth simulator: a random producer (valid at
random, the payload random junk while not valid, held while valid and not taken) and a random consumer
(ready at random); every message comes out once, in order, with its payload. The skid's payload follows the
input while the skid is empty (timing round 8): this checks that it holds the message taken while the
consumer stalled (a skid loading every cycle loses it to the next message the producer presents).
"""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from smartquant.hdl.stream_buffers import InputSkid, OutputBuffer


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
