"""AxiDrain's handshakes read flip-flops (issue 10): its `hold` is the reset inputs and one registered flag,
not zero tests of the 16-bit obligation counters, so the AXI port's VALID / READY and the engines' R / B /
READY inputs are a few LUT levels from registers (scripts/logic_depth.py on the synth_ecp5 netlist).

The drain's behaviour across resets is checked against the memory model in tests/test_top_axi_memory.py.
Before the flags were registered, every output here was 5..8 levels deep, from `head_sent` and `r_owed`.
"""
import functools

from smartquant.fpga.system import board_params
from smartquant.hdl.backend.axi_drain import AxiDrain
from smartquant.scripts.logic_depth import analyse

COUNTERS = {"r_owed", "b_owed", "head_sent", "count"}


@functools.cache
def drain_endpoints():
    return analyse(AxiDrain(board_params(128, 8, 64 * 1024)))


def test_drain_outputs_are_a_few_levels_from_registers():
    outputs = {e.register: e for e in drain_endpoints() if e.pin == "output"}
    handshakes = [name for name in outputs if name.rpartition("__")[2] in (
        "arvalid", "arready", "rvalid", "rready", "awvalid", "awready", "wvalid", "wready", "bvalid", "bready")]
    assert len(handshakes) == 10
    for name in handshakes + ["down__awid", "down__awaddr", "down__awlen", "down__wdata", "down__wstrb", "busy"]:
        assert outputs[name].levels <= 3, (name, outputs[name])
        assert outputs[name].start not in COUNTERS, (name, outputs[name])
    # WLAST of an owed beat compares the beats sent with the burst's length (a queue entry or the presented AW)
    assert outputs["down__wlast"].levels <= 5


def test_drain_flags_are_at_most_six_levels_from_registers():
    """The registered flags (held_off = `busy`, early, queue empty / full) take the zero tests of the counters'
    next values, written from each register's own zero / one tests and the handshakes: no adder before a zero
    test. With the tests of the sums they were 7..8 levels (busy, early: 8 from rd_ptr)."""
    flops = {}
    for e in drain_endpoints():
        if e.pin != "output":
            flops[e.register] = max(flops.get(e.register, 0), e.levels)
    assert {"busy", "early", "queue_empty", "queue_full"} <= set(flops)
    assert max(flops.values()) <= 6, sorted(flops.items(), key=lambda item: -item[1])[:5]
