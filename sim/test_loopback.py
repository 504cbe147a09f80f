"""cocotb tests of the stream agents and the runner on the register-slice stand-in (sim/loopback.py).

SQ_INJECT_ERROR=1 corrupts one expected payload on purpose, so the runner's failure path (results file,
rerun with waves) can be tested from pytest.
"""
import itertools
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from smartquant.hdl.cxl.messages import pack, req_layout, unpack
from smartquant.params import ControllerParams
from smartquant.sim.cxl_agents import HandshakeMonitor, StreamSink, StreamSource


def _params() -> ControllerParams:
    import json
    return ControllerParams(**json.loads(os.environ["SQ_PARAMS"]))


def _random_pauses(rng: random.Random, probability: float):
    while True:
        yield int(rng.random() < probability)


@cocotb.parametrize(pauses=[False, True])
async def test_loopback_stream(dut, pauses):
    """Every payload arrives once, in order, with and without idle cycles and backpressure."""
    params = _params()
    seed = int(os.environ.get("SQ_SEED", "1"))
    count = int(os.environ.get("SQ_TRANSACTIONS", "200"))
    rng = random.Random(seed)
    layout = req_layout(params)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    received, accepted = [], []
    source = StreamSource(dut, "m2s_req", dut.clk, _random_pauses(rng, 0.3) if pauses else None)
    StreamSink(dut, "s2m_req", dut.clk, received.append, _random_pauses(rng, 0.4) if pauses else None)
    HandshakeMonitor(dut, "m2s_req", dut.clk, accepted.append, reset=dut.rst)

    sent = [pack(layout, opcode=rng.randrange(16), address=rng.getrandbits(46), tag=i & 0xFFFF,
                 ld_id=rng.randrange(16)) for i in range(count)]
    for payload in sent:
        source.send_nowait(payload)
    await source.wait_idle()
    for _ in range(100):
        if len(received) == count:
            break
        await RisingEdge(dut.clk)
    expected = list(sent)
    if os.environ.get("SQ_INJECT_ERROR") == "1":
        expected[count // 2] ^= 1
    assert accepted == sent, "the accepted-handshake monitor disagrees with the stimulus"
    assert len(received) == count, f"{len(received)} of {count} payloads arrived"
    for index, (got, want) in enumerate(zip(received, expected)):
        assert got == want, f"payload {index} mismatch: got {unpack(layout, got)}, expected {unpack(layout, want)}"
    if not pauses:
        # Full throughput: one transfer per cycle once the pipe is full.
        assert source.sent == count
