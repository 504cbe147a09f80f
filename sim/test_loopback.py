"""cocotb tests of the port driver and the runner on the register-slice stand-in (sim/loopback.py).

SQ_INJECT_ERROR=1 corrupts one expected payload on purpose, so the runner's failure path (results file,
rerun with waves) can be tested from pytest.
"""
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from smartquant.hdl.cxl.messages import pack, req_layout, unpack
from smartquant.params import ControllerParams
from smartquant.sim.harness import LOOPBACK_STATUS
from smartquant.sim.port_driver import PortDriver, Sink, Source, vector_reader


def _params() -> ControllerParams:
    import json
    return ControllerParams(**json.loads(os.environ["SQ_PARAMS"]))


@cocotb.parametrize(pauses=[False, True])
async def test_loopback_stream(dut, pauses):
    """Every payload arrives once, in order, with and without idle cycles and backpressure."""
    params = _params()
    seed = int(os.environ.get("SQ_SEED", "1"))
    count = int(os.environ.get("SQ_TRANSACTIONS", "200"))
    rng = random.Random(seed)
    layout = req_layout(params)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    received, accepted = [], []
    driver = PortDriver(dut, dut.clk, rng, LOOPBACK_STATUS)
    source = driver.add(Source(driver, "m2s_req", accepted.append))
    sink = driver.add(Sink(driver, "s2m_req", received.append))
    # the payload (wider than 32 bits) goes through Verilator's vpi_put_value as words, not GPI's binary string,
    # and the sink reads it back through vpi_get_value as words (int_reader): every payload is compared below
    assert source.payload.write_vector is not None, "the wide-port vector write is not available"
    assert vector_reader(dut.s2m_req__payload) is not None, "the wide-port vector read is not available"
    if pauses:
        source.pauses.set(0.3, 0.02)
        sink.pauses.set(0.4, 0.02)
    driver.start()

    sent = [pack(layout, opcode=rng.randrange(16), address=rng.getrandbits(46), tag=i & 0xFFFF,
                 ld_id=rng.randrange(16)) for i in range(count)]
    for payload in sent:
        source.send_nowait(payload)
    start = driver.cycle
    for _ in range(50 * count):
        if len(received) == count:
            break
        await driver.next_cycle()
    expected = list(sent)
    if os.environ.get("SQ_INJECT_ERROR") == "1":
        expected[count // 2] ^= 1
    assert accepted == sent, "the accepted-handshake report disagrees with the stimulus"
    assert len(received) == count, f"{len(received)} of {count} payloads arrived"
    for index, (got, want) in enumerate(zip(received, expected)):
        assert got == want, f"payload {index} mismatch: got {unpack(layout, got)}, expected {unpack(layout, want)}"
    if not pauses:
        # Full throughput: one transfer per cycle once the pipe is full.
        assert driver.cycle - start <= count + 4, f"{count} transfers took {driver.cycle - start} cycles"
