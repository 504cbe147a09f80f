"""DEVICE.md §6: a CSR poison command (POISON_COMMAND inject / clear, CONTROL.clear_poison) acts before its
AXI4-Lite B response: a CSR read of the list and a MemRd of the line sent as soon as the host sees B see the
command. The controller in Verilator, driven by the testbench's AXI4-Lite manager (sim/test_controller.py)."""
from smartquant.sim import runner


def test_poison_commands_act_before_their_b_response():
    result = runner.run(runner.SIM_PARAMS, testcase="test_poison_commands_act_before_their_b_response", seed=5)
    assert result.passed, result.describe()
    assert result.tests == 1, result.describe()
