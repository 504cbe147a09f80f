"""WriteTable (hdl/engine/write_table.py) in the Amaranth simulator.

Random allocations (raw writes and flushed blocks: 1..b_max tags, R = 1 and R > 1) are answered by random B
responses (interleaved across entries, some with an error) while the Cmp and failed-record consumers stall at
random. Checked against a Python model of the entries: each allocation takes the lowest free entry; its Cmps
leave exactly once, its last tag first, only after all its B responses are in and its failed record (if any
B failed) has left; each failed record names the entry's lines; `landed` pulses with the entry's (region,
block) the cycle after its last B response; `outstanding` counts the entries in use; `query_landing`, for a
block query loaded at random (as the read engine's stage B loads it; a tracked copy and a match flip-flop per
entry, hdl/engine/block_query.py), is exactly "the last query loaded is valid and names a used flushed block
with B responses due or a failed record pending, now or one cycle ago". A hand-worked test checks the Cmp
order across entries and the block query's landing window.
"""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from smartquant.hdl.engine.write_table import WriteTable
from smartquant.params import ControllerParams

PARAMS = ControllerParams(data_width=128, b_max=8, dram_addr_bits=20)


def b_responses_due(log2_r, log2_beats):
    """One B response per AXI burst: one burst when R = 1, else one per beat (docs/DEVICE.md §4)."""
    return 1 if log2_r == 0 else 1 << log2_beats


def set_allocation(ctx, dut, alloc):
    for name in ("gathered", "cmps", "region", "block", "line", "log2_r", "log2_beats"):
        ctx.set(getattr(dut.allocate.p, name), alloc[name])
    for j in range(PARAMS.b_max):
        ctx.set(dut.allocate.p.tags[j], alloc["tags"][j] if j < len(alloc["tags"]) else 0)
        ctx.set(dut.allocate.p.ld_ids[j], alloc["ld_ids"][j] if j < len(alloc["ld_ids"]) else 0)


def random_allocation(rng, serial):
    gathered = rng.random() < 0.7
    log2_beats = rng.choice([1, 2, 3]) if gathered else 0
    cmps = rng.randint(1, 1 << log2_beats) if gathered else 1
    return {"gathered": int(gathered), "cmps": cmps, "region": rng.randrange(4), "block": serial,
            "line": rng.randrange(1 << 12), "log2_r": rng.choice([0, 0, 1, 2]) if gathered else 0,
            "log2_beats": log2_beats, "tags": [rng.getrandbits(16) for _ in range(cmps)],
            "ld_ids": [rng.getrandbits(4) for _ in range(cmps)]}


@pytest.mark.parametrize("seed,entries", [(1, 4), (2, 2), (3, 8), (4, 1)])
def test_random_allocations_against_a_model(seed, entries):
    rng = random.Random(seed)
    allocations = [random_allocation(rng, i) for i in range(80)]
    dut = WriteTable(PARAMS, entries)
    live = {}          # entry -> {"alloc", "b_left", "errors_pending", "records"}
    cmps_seen = []     # (serial, tag, ld_id)
    landed_seen = []   # (cycle, region, block)
    want_landed = []   # (cycle, region, block)
    finished = []
    landing_cycles = []

    async def bench(ctx):
        query = {"valid": 0, "region": 0, "block": 0}   # the last query loaded (what the table answers)
        pending = list(allocations)
        cycle = 0
        while (pending or live) and cycle < 20000:
            # drive this cycle's inputs
            offer = pending[0] if pending and rng.random() < 0.5 else None
            ctx.set(dut.allocate.valid, offer is not None)
            if offer is not None:
                set_allocation(ctx, dut, offer)
            # a block query: mostly a live entry's block or the one being offered, sometimes another; its
            # fields change every cycle, but only a load counts
            candidates = [s["alloc"] for s in live.values()] + ([offer] if offer is not None else [])
            target = (rng.choice(candidates) if candidates and rng.random() < 0.8
                      else {"region": rng.randrange(4), "block": rng.randrange(100)})
            presented = {"valid": int(rng.random() < 0.85), "region": target["region"], "block": target["block"]}
            load = rng.random() < 0.3
            ctx.set(dut.block_query.load, load)
            for name, value in presented.items():
                ctx.set(getattr(dut.block_query, name), value)
            owed = [e for e, s in live.items() if s["b_left"] > 0]
            b_now = None
            if owed and rng.random() < 0.4:
                b_now = (rng.choice(owed), int(rng.random() < 0.15))
            ctx.set(dut.b.valid, b_now is not None)
            if b_now is not None:
                ctx.set(dut.b.p.id, b_now[0])
                ctx.set(dut.b.p.error, b_now[1])
            ctx.set(dut.cmp.ready, rng.random() < 0.6)
            ctx.set(dut.failed.ready, rng.random() < 0.6)
            (_, _, free_id, alloc_ready, outstanding, cmp_valid, cmp_ready, cmp_p, failed_valid, failed_ready,
             failed_p, landed, b_ready, query_landing) = await ctx.tick().sample(
                dut.free_id, dut.allocate.ready, dut.outstanding, dut.cmp.valid, dut.cmp.ready, dut.cmp.p,
                dut.failed.valid, dut.failed.ready, dut.failed.p, dut.landed, dut.b.ready, dut.query_landing)
            assert b_ready == 1
            for state in live.values():
                state["landing_now"] = bool(state["alloc"]["gathered"]
                                            and (state["b_left"] > 0 or state["errors_pending"]))
            want_landing = bool(query["valid"]) and any(
                (s["landing_now"] or s["landing_before"])
                and (s["alloc"]["region"], s["alloc"]["block"]) == (query["region"], query["block"])
                for s in live.values())
            assert query_landing == want_landing, (cycle, query, live)
            if want_landing:
                landing_cycles.append(cycle)
            for state in live.values():
                state["landing_before"] = state["landing_now"]
            if load:
                query = presented
            assert outstanding == len(live)
            assert alloc_ready == (len(live) < entries)
            if landed.valid:
                landed_seen.append((cycle, int(landed.region), int(landed.block)))
            # outputs of this cycle against the model (state before this cycle's updates)
            if cmp_valid and cmp_ready:
                done = [e for e, s in live.items() if s["b_left"] == 0 and not s["errors_pending"]]
                assert done, "a Cmp left for an entry with B responses due or a failed record pending"
                state = live[min(done)]
                alloc = state["alloc"]
                slot = alloc["cmps"] - 1 - state["cmps_out"]
                cmps_seen.append((alloc["block"], int(cmp_p.tag), int(cmp_p.ld_id)))
                assert (int(cmp_p.tag), int(cmp_p.ld_id)) == (alloc["tags"][slot], alloc["ld_ids"][slot])
                state["cmps_out"] += 1
            if failed_valid and failed_ready:
                marked = [e for e, s in live.items() if s["errors_pending"]]
                assert marked
                state = live[min(marked)]
                alloc = state["alloc"]
                assert (int(failed_p.first), int(failed_p.log2_stride), int(failed_p.mask)) == (
                    alloc["line"], alloc["log2_r"], (1 << (1 << alloc["log2_beats"])) - 1)
                state["errors_pending"] = False
                state["records"] += 1
            if b_now is not None:
                state = live[b_now[0]]
                state["b_left"] -= 1
                if b_now[1]:
                    state["errors_pending"] = True
                if state["b_left"] == 0:
                    want_landed.append((cycle + 1, state["alloc"]["region"], state["alloc"]["block"]))
            if offer is not None and alloc_ready:
                assert free_id == min(set(range(entries)) - set(live))
                live[free_id] = {"alloc": offer, "b_left": b_responses_due(offer["log2_r"], offer["log2_beats"]),
                                 "errors_pending": False, "records": 0, "cmps_out": 0, "errors": 0,
                                 "landing_before": False}
                pending.pop(0)
            for e in [e for e, s in live.items() if s["cmps_out"] == s["alloc"]["cmps"]]:
                finished.append(live.pop(e))
            cycle += 1
        assert not pending and not live, "the table stalled"
        await ctx.tick()
        landed = ctx.get(dut.landed)
        if landed.valid:
            landed_seen.append((cycle, int(landed.region), int(landed.block)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want_cmps = sorted((a["block"], t, i) for a in allocations for t, i in zip(a["tags"], a["ld_ids"]))
    assert sorted(cmps_seen) == want_cmps
    assert landed_seen == want_landed
    assert any(s["records"] for s in finished), "no B response failed: the error path went unexercised"
    assert len(landing_cycles) > 20, "the block query was hardly ever answered busy"


def test_hand_worked_cmp_order_landed_and_block_query():
    """Entry 0: a block (region 1, block 5) of 2 lines at R = 1 (1 B response), tags 0x10, 0x11; entry 1: a raw
    write (region 2, block 9), tag 0x20. B for entry 1 arrives first (cycle 3), then entry 0's (cycle 5).
    Expected: landed (2, 9) at cycle 4, (1, 5) at cycle 6; Cmps 0x20, then 0x11, 0x10 (the last write of a
    block first); a query of (1, 5) is landing from allocation until one cycle after its B response."""
    dut = WriteTable(PARAMS, 4)
    events = []

    async def bench(ctx):
        ctx.set(dut.cmp.ready, 1)
        ctx.set(dut.failed.ready, 1)
        # the query is loaded at cycle 0 (as the read engine's stage B loads it) and kept from then on
        ctx.set(dut.block_query.load, 1)
        ctx.set(dut.block_query.valid, 1)
        ctx.set(dut.block_query.region, 1)
        ctx.set(dut.block_query.block, 5)
        block = {"gathered": 1, "cmps": 2, "region": 1, "block": 5, "line": 0x80, "log2_r": 0, "log2_beats": 1,
                 "tags": [0x10, 0x11], "ld_ids": [1, 2]}
        raw = {"gathered": 0, "cmps": 1, "region": 2, "block": 9, "line": 0x33, "log2_r": 0, "log2_beats": 0,
               "tags": [0x20], "ld_ids": [3]}
        for cycle in range(12):
            ctx.set(dut.allocate.valid, cycle in (0, 1))
            if cycle in (0, 1):
                set_allocation(ctx, dut, block if cycle == 0 else raw)
            ctx.set(dut.b.valid, cycle in (3, 5))
            ctx.set(dut.b.p.id, 1 if cycle == 3 else 0)
            ctx.set(dut.b.p.error, 0)
            _, _, free_id, cmp_valid, cmp_p, landed, landing = await ctx.tick().sample(
                dut.free_id, dut.cmp.valid, dut.cmp.p, dut.landed, dut.query_landing)
            if cycle in (0, 1):
                assert free_id == cycle
            if cmp_valid:
                events.append((cycle, "cmp", int(cmp_p.tag)))
            if landed.valid:
                events.append((cycle, "landed", int(landed.region), int(landed.block)))
            events.append((cycle, "landing", int(landing)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [e for e in events if e[1] == "landed"] == [(4, "landed", 2, 9), (6, "landed", 1, 5)]
    assert [e[2] for e in events if e[1] == "cmp"] == [0x20, 0x11, 0x10]
    assert [e[0] for e in events if e[1] == "cmp"] == [4, 6, 7]
    # entry 0 is used from cycle 1; its B response is in at cycle 5; one cycle more (cycle 6) it is still busy
    assert [e[0] for e in events if e[1] == "landing" and e[2]] == [1, 2, 3, 4, 5, 6]


def test_a_lower_entry_done_mid_block_goes_first_and_a_freed_entry_never_completes():
    """The done entry is a register chosen a cycle ahead (round 9): it must still be the lowest done entry of the
    cycle it is read in. Entry 0 (tags 0x10..0x12) and entry 1 (0x20..0x22) are blocks of 3 Cmps, one B response
    each. Entry 1's B (cycle 3) makes it done at 4: its last tag leaves; entry 0's B (cycle 4) makes it done at 5
    and it goes first from then on (a stall at cycle 6 holds 0x11). Entry 0 is freed after 0x10 (cycle 8) and
    taken again at cycle 9 by a raw write (0x30) whose B arrives at cycle 10, as entry 1's last Cmp leaves: 0x30
    at cycle 11, and nothing after it (no Cmp from a freed entry, no tag twice)."""
    dut = WriteTable(PARAMS, 4)
    seen = []

    def block(tags):
        return {"gathered": 1, "cmps": len(tags), "region": 0, "block": tags[0], "line": 0x80, "log2_r": 0,
                "log2_beats": 2, "tags": tags, "ld_ids": [t & 15 for t in tags]}

    allocations = {0: block([0x10, 0x11, 0x12]), 1: block([0x20, 0x21, 0x22]),
                   9: {"gathered": 0, "cmps": 1, "region": 0, "block": 0, "line": 0x33, "log2_r": 0,
                       "log2_beats": 0, "tags": [0x30], "ld_ids": [5]}}
    b_ids = {3: 1, 4: 0, 10: 0}

    async def bench(ctx):
        ctx.set(dut.failed.ready, 1)
        ctx.set(dut.block_query.valid, 0)
        for cycle in range(16):
            ctx.set(dut.allocate.valid, cycle in allocations)
            if cycle in allocations:
                set_allocation(ctx, dut, allocations[cycle])
            ctx.set(dut.b.valid, cycle in b_ids)
            ctx.set(dut.b.p.id, b_ids.get(cycle, 0))
            ctx.set(dut.b.p.error, 0)
            ctx.set(dut.cmp.ready, cycle != 6)
            _, _, free_id, alloc_ready, cmp_valid, cmp_p, outstanding = await ctx.tick().sample(
                dut.free_id, dut.allocate.ready, dut.cmp.valid, dut.cmp.p, dut.outstanding)
            if cycle in allocations:
                assert alloc_ready and free_id == (1 if cycle == 1 else 0)
            if cmp_valid:
                seen.append((cycle, int(cmp_p.tag), int(cmp_p.ld_id), cycle != 6))
            if cycle == 15:
                assert outstanding == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(4, 0x22, 2, True), (5, 0x12, 2, True), (6, 0x11, 1, False), (7, 0x11, 1, True),
                    (8, 0x10, 0, True), (9, 0x21, 1, True), (10, 0x20, 0, True), (11, 0x30, 5, True)]


def test_refuses_more_entries_than_awids():
    with pytest.raises(ValueError, match="one AWID each"):
        WriteTable(PARAMS, (1 << PARAMS.axi_id_bits) + 1)


def test_a_failure_in_the_cycle_the_record_leaves_marks_the_entry_again():
    """A block at R = 2 (2 B responses, both SLVERR): the first marks the entry (record out at cycle 3); the
    second arrives at cycle 3, as the record leaves, and must mark it again (record out at cycle 4), so the
    Cmps wait for it (first Cmp at cycle 5)."""
    dut = WriteTable(PARAMS, 2)
    seen = []

    async def bench(ctx):
        ctx.set(dut.cmp.ready, 1)
        ctx.set(dut.failed.ready, 1)
        block = {"gathered": 1, "cmps": 2, "region": 0, "block": 1, "line": 0x40, "log2_r": 1, "log2_beats": 1,
                 "tags": [7, 8], "ld_ids": [0, 0]}
        for cycle in range(8):
            ctx.set(dut.allocate.valid, cycle == 0)
            if cycle == 0:
                set_allocation(ctx, dut, block)
            ctx.set(dut.b.valid, cycle in (2, 3))
            ctx.set(dut.b.p.id, 0)
            ctx.set(dut.b.p.error, 1)
            _, _, failed_valid, failed_p, cmp_valid, cmp_p = await ctx.tick().sample(
                dut.failed.valid, dut.failed.p, dut.cmp.valid, dut.cmp.p)
            if failed_valid:
                seen.append((cycle, "failed", int(failed_p.first), int(failed_p.log2_stride), int(failed_p.mask)))
            if cmp_valid:
                seen.append((cycle, "cmp", int(cmp_p.tag)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(3, "failed", 0x40, 1, 0b11), (4, "failed", 0x40, 1, 0b11), (5, "cmp", 8), (6, "cmp", 7)]
