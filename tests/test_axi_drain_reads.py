"""AxiDrain's read side in the Amaranth simulator, every cycle against a model of docs/DEVICE.md "Reset":
random ARs (ARLEN 0..3) from the engine side, a memory that accepts them and returns their R beats at random
(it is not reset with the controller, `axi_rst` = 0), random RREADY from the engine, and random controller
resets. The model keeps the R beats owed (ARLEN + 1 per accepted AR, - 1 per R beat) and `draining` (set by
`rst`, cleared in a cycle where nothing is owed); the unit must hold the engines off (`hold` = rst, or draining
while beats are owed) in exactly those cycles: no AR passes and no R beat reaches the engine, RREADY is 1.

The unit's flags are registered from their next values (issue 10); a flag a cycle late lets the first R beat
after a reset through to the engine, which this test sees (the system tests in test_top_axi_memory.py did not).
"""
from __future__ import annotations

import random

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from smartquant.hdl.backend.axi_drain import AxiDrain
from smartquant.params import ControllerParams

PARAMS = ControllerParams(data_width=64, b_max=4, n_regions=1, request_depth=4, dram_addr_bits=14)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reads_are_held_off_exactly_while_draining(seed):
    rng = random.Random(seed)
    dut = AxiDrain(PARAMS)
    up, down = dut.up, dut.down
    top = Module()
    top.submodules.dut = dut
    top.domains.sync = sync = ClockDomain("sync")   # its reset driven by the bench
    stats = {"held_cycles": 0, "resets_with_beats_owed": 0, "beats_to_engine": 0, "beats_drained": 0}

    async def bench(ctx):
        r_owed, draining = 0, True          # power-up: nothing owed, draining set
        ar = None                           # the AR the engine presents: its ARLEN
        memory = []                         # R beats the memory still has to send
        rst = 0
        for cycle in range(4000):
            if ar is None and rng.random() < 0.3:
                ar = rng.randrange(4)
            rst = int(rng.random() < (0.3 if rst else 0.03))      # resets of one or more cycles
            ctx.set(sync.rst, rst)
            ctx.set(up.arvalid, ar is not None)
            ctx.set(up.arlen, ar if ar is not None else 0)
            ctx.set(up.rready, int(rng.random() < 0.7))
            ctx.set(down.arready, int(rng.random() < 0.6))
            ctx.set(down.rvalid, int(bool(memory) and rng.random() < 0.6))
            ctx.set(down.rlast, int(len(memory) == 1))
            ctx.set(dut.axi_rst, 0)

            hold = bool(rst or (draining and r_owed > 0))
            got = {name: ctx.get(signal) for name, signal in (
                ("down.arvalid", down.arvalid), ("up.arready", up.arready), ("up.rvalid", up.rvalid),
                ("down.rready", down.rready), ("busy", dut.busy))}
            want = {"down.arvalid": int(ar is not None and not hold),
                    "up.arready": int(ctx.get(down.arready) and not hold),
                    "up.rvalid": int(ctx.get(down.rvalid) and not hold),
                    "down.rready": int(hold or ctx.get(up.rready)),
                    "busy": int(draining and r_owed > 0)}
            assert got == want, f"cycle {cycle}: r_owed {r_owed}, draining {draining}, rst {rst}"

            ar_fire = got["down.arvalid"] and ctx.get(down.arready)
            r_fire = ctx.get(down.rvalid) and got["down.rready"]
            stats["held_cycles"] += hold and not rst
            owed_before = r_owed > 0
            if r_fire:
                memory.pop(0)
                r_owed -= 1
                stats["beats_to_engine" if got["up.rvalid"] else "beats_drained"] += 1
            if ar_fire:
                memory.extend([cycle] * (ar + 1))
                r_owed += ar + 1
                ar = None
            assert r_owed == len(memory)
            if rst:
                ar = None                   # the engine forgets what it presented
                stats["resets_with_beats_owed"] += owed_before
                draining = True
            elif not owed_before:           # drops in a cycle where nothing is owed
                draining = False
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6, domain="sync")
    sim.add_testbench(bench)
    sim.run()
    # the run must reach the cases it is about
    assert stats["resets_with_beats_owed"] >= 10 and stats["beats_drained"] >= 20
    assert stats["held_cycles"] >= 50 and stats["beats_to_engine"] >= 500, stats
