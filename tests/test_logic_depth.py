"""scripts/logic_depth.py: logic levels between registers on the synth_ecp5 netlist.

A hand-made netlist checks the counting rules (a LUT is a level; the slice's muxes from their LUTs and a carry
chain's CIN are not; a mux select and a LUT RAM read address are); yosys runs check it on designs whose
minimum depth is known (an AND of n flip-flops into a clock enable: ceil(log4 n) LUT4 levels).
"""
import math

import pytest
from amaranth.hdl import Signal, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from smartquant.scripts.logic_depth import analyse, analyse_netlist, histogram


def _cell(kind, inputs, outputs):
    return {"type": kind,
            "port_directions": {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}},
            "connections": {**inputs, **outputs}}


def _hand_netlist():
    """a (FF) -> L1, L2 -> PFUMX (ALUT, BLUT; select from a) -> L3 -> b.DI; a -> b.CE;
    a -> CCU2C c1 -> (CIN) c2 -> c.DI; L3 -> LUT RAM read address -> d.DI; PFUMX -> the LUT RAM's write data."""
    ff = lambda d, q, ce=None: _cell("TRELLIS_FF", {"CLK": [100], "DI": [d], "CE": [ce if ce else "1"],
                                                   "LSR": ["0"]}, {"Q": [q]})
    cells = {
        "ff_a": ff(90, 1),
        "l1": _cell("LUT4", {"A": [1], "B": ["0"], "C": ["0"], "D": ["0"]}, {"Z": [2]}),
        "l2": _cell("LUT4", {"A": [1], "B": ["0"], "C": ["0"], "D": ["0"]}, {"Z": [3]}),
        "mux": _cell("PFUMX", {"ALUT": [2], "BLUT": [3], "C0": [1]}, {"Z": [4]}),
        "l3": _cell("LUT4", {"A": [4], "B": ["0"], "C": ["0"], "D": ["0"]}, {"Z": [5]}),
        "ff_b": ff(5, 6, ce=1),
        "c1": _cell("CCU2C", {"A0": [1], "B0": ["0"], "C0": ["0"], "D0": ["0"], "A1": ["0"], "B1": ["0"],
                              "C1": ["0"], "D1": ["0"], "CIN": ["0"]}, {"S0": [7], "S1": [8], "COUT": [9]}),
        "c2": _cell("CCU2C", {"A0": ["0"], "B0": ["0"], "C0": ["0"], "D0": ["0"], "A1": ["0"], "B1": ["0"],
                              "C1": ["0"], "D1": ["0"], "CIN": [9]}, {"S0": [10], "S1": [11], "COUT": [12]}),
        "ff_c": ff(10, 13),
        "ram": _cell("TRELLIS_DPR16X4", {"DI": [4, "0", "0", "0"], "WAD": ["0"] * 4, "WRE": ["1"], "WCK": [100],
                                         "RAD": [5, "0", "0", "0"]}, {"DO": [14, 15, 16, 17]}),
        "ff_d": ff(14, 18),
    }
    netnames = {"reg_a": {"bits": [1]}, "reg_b": {"bits": [6]}, "reg_c": {"bits": [13]}, "reg_d": {"bits": [18]},
                "lut_ram": {"bits": [14, 15, 16, 17]}, "mid": {"bits": [4]}, "din": {"bits": [90]},
                "clk": {"bits": [100]}}
    ports = {"clk": {"direction": "input", "bits": [100]}, "din": {"direction": "input", "bits": [90]}}
    return {"cells": cells, "netnames": netnames, "ports": ports}


def test_counting_rules_on_a_hand_made_netlist():
    levels = {(e.register, e.pin): e.levels for e in analyse_netlist(_hand_netlist())}
    assert levels[("reg_b", "DI")] == 2        # l1 (1) -> PFUMX over ALUT (0) -> l3 (1); the select path is 2 too
    assert levels[("reg_b", "CE")] == 0        # straight from reg_a
    assert levels[("reg_c", "DI")] == 1        # c1 entered through A0, c2 through the carry
    assert levels[("reg_d", "DI")] == 3        # l3's 2, then the LUT RAM's read address
    assert levels[("lut_ram", "DI")] == 1      # the write data: PFUMX output, one level
    assert levels[("reg_a", "DI")] == 0        # from the input port
    deepest = analyse_netlist(_hand_netlist())[0]
    assert (deepest.register, deepest.levels, deepest.start) == ("reg_d", 3, "reg_a")
    assert deepest.path[0] == "reg_a" and "mid" in deepest.path
    assert dict(deepest.cells) == {"LUT4": 2, "PFUMX": 1, "TRELLIS_DPR16X4": 1}


def test_a_pfumx_select_is_a_level():
    netlist = _hand_netlist()
    # the select now comes through a LUT: l0 (1) -> C0 (+1) = 2 at the mux, 3 at reg_b
    netlist["cells"]["l0"] = _cell("LUT4", {"A": [1], "B": ["0"], "C": ["0"], "D": ["0"]}, {"Z": [50]})
    netlist["cells"]["mux"]["connections"]["C0"] = [50]
    levels = {(e.register, e.pin): e.levels for e in analyse_netlist(netlist)}
    assert levels[("reg_b", "DI")] == 3


def test_unknown_cell_is_an_error():
    netlist = _hand_netlist()
    netlist["cells"]["odd"] = _cell("EHXPLLL", {"CLKI": [100]}, {"CLKOP": [60]})
    with pytest.raises(Exception, match="EHXPLLL"):
        analyse_netlist(netlist)


class _WideEnable(wiring.Component):
    """A counter whose clock enable is the AND of `n` flip-flops, and a register of the XOR of `n` others."""

    def __init__(self, n):
        self.n = n
        super().__init__({"d": In(n), "enables": In(n), "parity": Out(1), "count": Out(8)})

    def elaborate(self, platform):
        m = Module()
        source = Signal(self.n, name="source_regs")
        enable = Signal(self.n, name="enable_regs")
        parity = Signal(name="parity_reg")
        held = Signal(8, name="held_count")
        m.d.sync += [source.eq(self.d), enable.eq(self.enables), parity.eq(source.xor())]
        with m.If(enable.all()):
            m.d.sync += held.eq(held + 1)
        m.d.comb += [self.parity.eq(parity), self.count.eq(held)]
        return m


@pytest.mark.parametrize("n", [4, 16, 64])
def test_wide_clock_enable_depth_from_yosys(n):
    endpoints = analyse(_WideEnable(n))
    enable_paths = [e for e in endpoints if e.pin == "CE" and e.start == "enable_regs"]
    assert len(enable_paths) == 1
    assert enable_paths[0].levels == math.ceil(math.log(n, 4))      # an AND tree of 4-input LUTs
    counter = [e for e in endpoints if e.pin == "DI" and e.register == enable_paths[0].register]
    assert counter and counter[0].levels == 1                      # the increment: a carry chain entered once
    assert sum(histogram(endpoints).values()) == len(endpoints)
    # abc9 does not always find the shallowest XOR tree, but none can beat ceil(log4 n)
    parity = [e for e in endpoints if e.pin == "DI" and e.start == "source_regs"]
    assert len(parity) == 1 and parity[0].levels >= math.ceil(math.log(n, 4))



@pytest.mark.slow
def test_the_board_controller_synthesises_with_the_pinned_yosys():
    """synth_ecp5 (abc9) of the W=128 board controller, as `smartquant build` maps it, runs to a netlist: yosys
    0.70 stopped here with its ABC_OPS_REINTEGRATE assertion (fpga/README.md, "Yosys version"). ~2 min."""
    from smartquant.fpga.system import board_params
    from smartquant.hdl.top import SmartQuantController
    endpoints = analyse(SmartQuantController(board_params(128, 8, 64 * 1024)))
    assert len(endpoints) > 1000
    assert 6 <= max(e.levels for e in endpoints) <= 20
