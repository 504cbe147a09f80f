"""DevLoad (docs/DEVICE.md §3): occupancy N counted at the ports, level = smartquant.params.dev_load_level(N).

The top is driven in the Amaranth simulator with no AXI memory at all: unmapped reads (NXM) and unmapped
writes take the same queues as buffer hits and dropped writes (front-end FIFO, serve FIFO, DRS register; the
write path's held register and NDR), so the device can be filled without a backend. The bench keeps its own
N from the port handshakes and checks every DRS and NDR:
  - exactly: DevLoad == dev_load_level(N) with N the count of the cycle the message entered its output
    register (the cycle before it first shows valid);
  - by range: dev_load_level(min N) <= DevLoad <= dev_load_level(max N) over the cycles from the request's
    acceptance to the response's handshake (what a checker without cycle knowledge can require);
  - and the RTL counter (`SmartQuantController.occupancy`) equals the port count every cycle (it never wraps).
"""
from __future__ import annotations

import pytest
from smartquant.params import (
    ControllerParams, DevLoad, ReqOpcode, RwdOpcode, dev_load_level, dev_load_thresholds,
)

P8 = ControllerParams(data_width=128, b_max=16, n_regions=2, request_depth=8, dram_addr_bits=16)
P4 = ControllerParams(data_width=64, b_max=8, n_regions=1, request_depth=4, dram_addr_bits=14)


@pytest.mark.parametrize("params,capacity,table", [
    # C = 2 * request_depth + b_max + 1; Optimal from ceil(C/4), Moderate from ceil(C/2), Severe from ceil(3C/4)
    (P8, 33, {0: 0, 1: 0, 8: 0, 9: 1, 16: 1, 17: 2, 24: 2, 25: 3, 33: 3, 200: 3}),
    (P4, 17, {0: 0, 4: 0, 5: 1, 8: 1, 9: 2, 12: 2, 13: 3, 17: 3}),
    (ControllerParams(), 49, {0: 0, 12: 0, 13: 1, 24: 1, 25: 2, 36: 2, 37: 3, 49: 3}),
    (ControllerParams(request_depth=4), 25, {6: 0, 7: 1, 12: 1, 13: 2, 18: 2, 19: 3}),
])
def test_dev_load_level_against_a_hand_worked_table(params, capacity, table):
    assert params.load_capacity == capacity
    for n, level in table.items():
        assert dev_load_level(params, n) == level, n
    levels = [dev_load_level(params, n) for n in range(3 * capacity)]
    assert levels == sorted(levels) and set(levels) == set(DevLoad)
    assert dev_load_level(params, capacity - 1) == DevLoad.SEVERE_OVERLOAD
    assert list(dev_load_thresholds(params)) == [levels.index(level) for level in (1, 2, 3)]
    with pytest.raises(ValueError):
        dev_load_level(params, -1)
