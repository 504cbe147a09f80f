"""PoisonTable against a Python model of DEVICE.md §4: a set of at most poison_entries distinct blocks, a sticky
overflow flag (and a `lost` pulse) when a new block finds the table full, which poisons nothing else, and a
clear that empties both."""
import random

import pytest
from amaranth.sim import Simulator

from smartquant.params import ControllerParams
from smartquant.hdl.engine.poison import PoisonTable


def simulate(params, ops):
    """ops: per cycle (insert or None, clear, query). Checks every query and the flag against the model and
    returns what the hardware answered, per cycle: (query_poisoned, overflow, lost)."""
    dut = PoisonTable(params)
    poisoned = set()
    overflow = False
    observed = []

    async def tb(ctx):
        nonlocal overflow
        for insert, clear, query in ops:
            ctx.set(dut.query_region, query[0])
            ctx.set(dut.query_block, query[1])
            assert ctx.get(dut.query_poisoned) == (query in poisoned), (query, poisoned, overflow)
            assert ctx.get(dut.overflow) == overflow
            assert ctx.get(dut.count) == len(poisoned)
            ctx.set(dut.clear, clear)
            ctx.set(dut.insert.valid, insert is not None)
            if insert is not None:
                ctx.set(dut.insert.region, insert[0])
                ctx.set(dut.insert.block, insert[1])
            lost = (not clear and insert is not None and insert not in poisoned
                    and len(poisoned) == params.poison_entries)
            assert ctx.get(dut.lost) == lost
            observed.append((ctx.get(dut.query_poisoned), ctx.get(dut.overflow), ctx.get(dut.lost)))
            await ctx.tick()
            if clear:
                poisoned.clear()
                overflow = False
            elif lost:
                overflow = True
            elif insert is not None:
                poisoned.add(insert)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return observed


@pytest.mark.parametrize("entries", [1, 4])
def test_random_inserts_queries_clears(entries):
    params = ControllerParams(n_regions=3, poison_entries=entries)
    rng = random.Random(entries)
    # A small pool makes duplicates, same block in another region, and overflow all frequent.
    pool = [(rng.randrange(3), rng.choice([0, 1, 2, 1 << 20, (1 << 26) - 1])) for _ in range(8)]
    ops = []
    for _ in range(600):
        insert = rng.choice(pool) if rng.random() < 0.3 else None
        ops.append((insert, rng.random() < 0.03, rng.choice(pool)))
    simulate(params, ops)


def test_hand_worked_overflow_and_clear():
    params = ControllerParams(n_regions=2, poison_entries=2)
    a, b, a_in_region1 = (0, 5), (0, 6), (1, 5)
    ops = [                            # (insert, clear, query) -> expected (poisoned, overflow, lost) this cycle
        (a, False, a),                 # (0, 0, 0) empty table
        (a, False, a),                 # (1, 0, 0) a present; the duplicate insert uses no entry
        (b, False, a_in_region1),      # (0, 0, 0) same block number, other region
        (None, False, b),              # (1, 0, 0) table full: a, b
        (a_in_region1, False, (0, 7)),  # (0, 0, 1) does not fit: lost now, overflow from the next cycle
        (None, False, a_in_region1),   # (0, 1, 0) the lost block is not poisoned ...
        (None, False, (0, 7)),         # (0, 1, 0) ... and no other read is (regression: all were)
        (None, False, a),              # (1, 1, 0) the listed blocks still are
        (None, True, (0, 7)),          # (0, 1, 0) clear takes effect at the edge
        (None, False, a),              # (0, 0, 0) a is gone too
    ]
    expected = [(0, 0, 0), (1, 0, 0), (0, 0, 0), (1, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 0), (1, 1, 0), (0, 1, 0),
                (0, 0, 0)]
    assert simulate(params, ops) == expected


def test_clear_wins_over_insert_in_same_cycle():
    params = ControllerParams(poison_entries=2)
    assert simulate(params, [((0, 1), True, (0, 1)), (None, False, (0, 1))]) == [(0, 0, 0), (0, 0, 0)]
