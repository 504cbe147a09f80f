"""DrsServer (hdl/engine/drs_server.py) in the Amaranth simulator.

The testbench writes serve entries of every kind at random (with the poison list's answer a cycle after each, as the
list gives it, and garbage on `list_poison_late` in the cycles after none), plays the block buffer (a line becomes
ready at a random cycle; its data follows a read a cycle later) and the R router (each raw read's line arrives at a
random time after its entry), holds S2M DRS off at random and changes `dev_load` every cycle. Checked against a
Python model: DRS leave in entry order, each with its tag, LD-ID and opcode, data by kind (all ones for a decode
error, 0 for a hole, the raw line, the buffer line), poison = the entry's own bit | the list's answer | the line's
backend error (raw and buffer reads), `poisoned_read` once per mapped read sent with poison, DevLoad as driven in
the cycle before the DRS became visible (the cycle it entered the output register), and `take` only for a ready
buffer head. A hand-worked case checks the latencies: buffer line ready -> S2M DRS valid 2 cycles later, a raw line
straight from R (the empty raw FIFO bypassed) likewise, and the list's answer for an entry that reaches the head the
cycle after its write.
"""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from smartquant.hdl.engine.drs_server import (
    DrsServer, DRS_OUTPUT_CYCLES, SERVE_NXM, SERVE_RAW, SERVE_BUFFER, SERVE_HOLE,
)
from smartquant.params import ControllerParams, DrsOpcode

PARAMS = ControllerParams(data_width=64, b_max=8, buffer_slots=2, dram_addr_bits=16)
DEPTH = 12
ALL_ONES = (1 << PARAMS.data_width) - 1


def address_of(serial):
    """A buffer address unique among the queued entries (slot, generation, line from the serial)."""
    return {"slot": serial & 1, "gen": (serial >> 1) & 7, "line": (serial >> 4) & 7}


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_entries_against_a_model(seed):
    rng = random.Random(seed)
    dut = DrsServer(PARAMS, DEPTH)
    entries = []
    for serial in range(500):
        kind = rng.choice([SERVE_NXM, SERVE_RAW, SERVE_BUFFER, SERVE_BUFFER, SERVE_HOLE])
        entries.append({
            "kind": kind, "tag": rng.getrandbits(16), "ld_id": rng.getrandbits(4),
            "opcode": rng.choice([DrsOpcode.MEM_DATA, DrsOpcode.MEM_DATA_NXM]), "poison": int(rng.random() < 0.1),
            "list_poison": int(rng.random() < 0.15), "error": int(rng.random() < 0.1),
            "data": rng.getrandbits(PARAMS.data_width), "address": address_of(serial),
        })
    stats = {"sent": 0, "poisoned_reads": 0, "want_poisoned_reads": 0}

    async def bench(ctx):
        written = 0               # entries the unit took
        written_at = {}           # serial -> cycle its entry was written
        ready_at = {}             # buffer serial -> cycle its line becomes ready
        raw_serials = []          # raw entries written, in order (their lines arrive in this order)
        raw_sent = 0
        buffer_data = None        # the buffer's read port: the line of the last read (junk if not yet ready)
        shown = None              # (serial, cycle it became visible on S2M DRS)
        dev_load = {}
        expected = 0              # next DRS in order
        late_answer = None        # the list's answer for the entry written in the previous cycle
        for cycle in range(60 * len(entries)):
            if expected == len(entries):
                break
            dev_load[cycle] = rng.randrange(4)
            ctx.set(dut.dev_load, dev_load[cycle])

            # the poison list's answer for the entry written in the previous cycle (none: it must be ignored)
            ctx.set(dut.list_poison_late, rng.getrandbits(1) if late_answer is None else late_answer)
            # entries (the read engine's dispatch)
            offer = written < len(entries) and rng.random() < 0.6
            ctx.set(dut.entry.valid, int(offer))
            if offer:
                e = entries[written]
                ctx.set(dut.entry.payload, {k: e[k] for k in ("kind", "tag", "ld_id", "opcode", "poison", "address")})
                offer = ctx.get(dut.entry.ready)

            # raw lines from R, in order, at least a cycle after their entry
            offer_raw = raw_sent < len(raw_serials) and written_at[raw_serials[raw_sent]] < cycle \
                and rng.random() < 0.4
            ctx.set(dut.raw_line.valid, int(offer_raw))
            if offer_raw:
                e = entries[raw_serials[raw_sent]]
                ctx.set(dut.raw_line.payload, {"data": e["data"], "error": e["error"]})
                offer_raw = ctx.get(dut.raw_line.ready)

            # the block buffer: the head's line is ready from its cycle on (addresses are unique among the
            # entries not yet sent, so the address names the entry)
            address = ctx.get(dut.buffer.address)
            serial = next((s for s in range(expected, written) if entries[s]["kind"] == SERVE_BUFFER
                           and {"slot": address.slot, "gen": address.gen, "line": address.line}
                           == entries[s]["address"]), None)
            line_ready = serial is not None and ready_at[serial] <= cycle
            ctx.set(dut.buffer.ready, int(line_ready))
            ctx.set(dut.buffer.error, entries[serial]["error"] if serial is not None else rng.getrandbits(1))
            ctx.set(dut.buffer.data, buffer_data if buffer_data is not None else 0)

            # S2M DRS
            drs_ready = rng.random() < 0.7
            ctx.set(dut.drs.ready, int(drs_ready))
            if ctx.get(dut.drs.valid):
                e = entries[expected]
                if shown is None or shown[0] != expected:
                    shown = (expected, cycle)
                got = ctx.get(dut.drs.payload)
                mapped = e["kind"] in (SERVE_RAW, SERVE_BUFFER)
                want_data = {SERVE_NXM: ALL_ONES, SERVE_HOLE: 0}.get(e["kind"], e["data"])
                want_poison = e["poison"] | e["list_poison"] | (e["error"] if mapped else 0)
                assert (got.tag, got.ld_id, got.opcode) == (e["tag"], e["ld_id"], e["opcode"]), f"entry {expected}"
                assert got.data == want_data, f"entry {expected}: data"
                assert got.poison == want_poison, f"entry {expected}: poison"
                assert got.dev_load == dev_load[shown[1] - 1], f"entry {expected}: dev_load"
                if drs_ready:
                    expected += 1
                    stats["sent"] += 1
                    stats["want_poisoned_reads"] += int(mapped and want_poison)
            stats["poisoned_reads"] += ctx.get(dut.poisoned_read)

            take = ctx.get(dut.buffer.take)
            read = ctx.get(dut.buffer.read)
            if take:
                assert serial is not None and line_ready, f"cycle {cycle}: take"
                assert read, f"cycle {cycle}: a take without a read"
            await ctx.tick()

            late_answer = entries[written]["list_poison"] if offer else None
            if offer:
                written_at[written] = cycle
                if entries[written]["kind"] == SERVE_BUFFER:
                    ready_at[written] = cycle + rng.choice([0, 1, 2, 5, 20])
                if entries[written]["kind"] == SERVE_RAW:
                    raw_serials.append(written)
                written += 1
            if offer_raw:
                raw_sent += 1
            if read:
                # a line not yet written reads as whatever the memory held: junk the server must not send
                buffer_data = entries[serial]["data"] if line_ready else rng.getrandbits(PARAMS.data_width)
        else:
            raise AssertionError(f"not all DRS sent: {stats}")
        assert stats["poisoned_reads"] == stats["want_poisoned_reads"] > 0, stats

    run(dut, bench)


def test_latencies_and_bypasses():
    """A buffer read whose line becomes ready in cycle t is on S2M DRS in t + 2 (DRS_OUTPUT_CYCLES); so is a raw
    read whose line arrives on R in cycle t while it waits at the head (the empty raw FIFO bypassed); the
    poison list's answer, given the cycle after its entry, reaches its DRS although the entry is at the head in
    that cycle (the column is written only then); an answer in a cycle after none is ignored."""
    dut = DrsServer(PARAMS, DEPTH)

    async def bench(ctx):
        ctx.set(dut.drs.ready, 1)

        async def write(kind, tag, list_poison=0):
            ctx.set(dut.entry.valid, 1)
            ctx.set(dut.entry.payload, {"kind": kind, "tag": tag, "ld_id": 0, "opcode": DrsOpcode.MEM_DATA,
                                        "poison": 0, "address": address_of(tag)})
            await ctx.tick()
            ctx.set(dut.entry.valid, 0)
            ctx.set(dut.list_poison_late, list_poison)   # the list's answer, the cycle after the entry

        async def wait_for_drs(limit=16):
            """(cycles until S2M DRS is valid, its payload); fails, rather than hangs, when none comes."""
            cycles = 0
            while not ctx.get(dut.drs.valid):
                assert cycles < limit, f"no DRS within {limit} cycles"
                await ctx.tick()
                cycles += 1
            return cycles, ctx.get(dut.drs.payload)

        # buffer read: waits for its line, then two cycles (the constant DRS_OUTPUT_CYCLES other tests' bounds use)
        assert DRS_OUTPUT_CYCLES == 2
        await write(SERVE_BUFFER, 5)
        for _ in range(4):
            await ctx.tick()
            assert not ctx.get(dut.drs.valid)
        ctx.set(dut.buffer.ready, 1)   # cycle t
        assert ctx.get(dut.buffer.take)
        await ctx.tick()
        ctx.set(dut.buffer.ready, 0)
        ctx.set(dut.buffer.data, 0x1234)
        cycles, drs = await wait_for_drs()
        # by hand: line ready in t -> the DRS register in t + 1 -> the DRS output buffer valid in t + 2; the bench
        # already ticked once (t -> t + 1), so DRS must be valid after exactly one more tick
        assert cycles == 1
        assert (drs.tag, drs.data, drs.poison) == (5, 0x1234, 0)
        await ctx.tick()

        # raw read: its line arrives while it waits at the head
        await write(SERVE_RAW, 6)
        await ctx.tick()
        ctx.set(dut.raw_line.valid, 1)   # cycle t
        ctx.set(dut.raw_line.payload, {"data": 0xBEEF, "error": 1})
        await ctx.tick()
        ctx.set(dut.raw_line.valid, 0)
        cycles, drs = await wait_for_drs()
        # raw line in t -> DRS register t + 1 -> output buffer t + 2, as a buffer line: one tick after the bench's
        assert cycles == 1
        assert (drs.tag, drs.data, drs.poison) == (6, 0xBEEF, 1)
        await ctx.tick()

        # a hole with the list's answer set (the read engine gives 0 for unmapped reads; the unit just ORs it):
        # the entry is the head the cycle after its write, before its column bit is written
        await write(SERVE_HOLE, 7, list_poison=1)
        cycles, drs = await wait_for_drs()
        assert cycles == 2
        assert (drs.tag, drs.data, drs.poison) == (7, 0, 1)
        await ctx.tick()
        ctx.set(dut.list_poison_late, 1)   # no entry written in the cycle before: ignored
        await ctx.tick()
        await write(SERVE_NXM, 8)
        await ctx.tick()
        ctx.set(dut.list_poison_late, 1)   # two cycles after the write, none in the cycle before: ignored
        cycles, drs = await wait_for_drs()
        assert (drs.tag, drs.data, drs.poison) == (8, ALL_ONES, 0)

    run(dut, bench)


def test_list_ignore_masks_the_list_answer():
    """`list_ignore` with an entry (the read engine: not a mapped read) drops the list's answer given with it, both
    when the entry is the head the cycle after its write (the late register's bypass) and when it waits in the
    FIFO (the poison column); the next entry's answer still counts."""
    dut = DrsServer(PARAMS, DEPTH)
    served = []

    async def bench(ctx):
        ctx.set(dut.drs.ready, 0)   # the DRS are held until the writes are done, then collected

        async def write(kind, tag, list_poison, list_ignore):
            ctx.set(dut.entry.valid, 1)
            ctx.set(dut.entry.payload, {"kind": kind, "tag": tag, "ld_id": 0, "opcode": DrsOpcode.MEM_DATA,
                                        "poison": 0, "address": address_of(tag)})
            ctx.set(dut.list_ignore, list_ignore)
            await ctx.tick()
            ctx.set(dut.entry.valid, 0)
            ctx.set(dut.list_ignore, 0)
            ctx.set(dut.list_poison_late, list_poison)   # the list's answer, the cycle after the entry

        # the head the cycle after its write: the late register's answer, masked
        await write(SERVE_HOLE, 1, 1, 1)
        # a buffer read waiting for its line holds the head: the next three are answered from the column
        await write(SERVE_BUFFER, 2, 1, 0)
        await write(SERVE_HOLE, 3, 1, 1)
        await write(SERVE_HOLE, 4, 0, 1)
        ctx.set(dut.drs.ready, 1)
        for _ in range(40):
            if ctx.get(dut.drs.valid):
                drs = ctx.get(dut.drs.payload)
                served.append((int(drs.tag), int(drs.poison)))
            ctx.set(dut.buffer.ready, 1)
            await ctx.tick()

    run(dut, bench)
    assert served == [(1, 0), (2, 1), (3, 0), (4, 0)]


def test_serve_queue_capacity_and_streaming():
    """The serve queue (a head register in front of the LUT-RAM FIFO, timing round 13a) holds exactly `depth`
    entries (`entry.ready` drops with the depth-th one queued and rises when the head leaves), and keeps the
    plain FIFO's timing: with every line ready and S2M DRS always taken, an entry written in cycle t is taken
    in t + 1 and entries written every cycle are taken every cycle (a write into the head as it leaves), in
    order."""
    dut = DrsServer(PARAMS, DEPTH)

    def payload(tag):
        return {"kind": SERVE_BUFFER, "tag": tag, "ld_id": 0, "opcode": DrsOpcode.MEM_DATA, "poison": 0,
                "address": address_of(tag)}

    async def bench(ctx):
        # capacity: lines never ready, so nothing leaves
        ctx.set(dut.drs.ready, 1)
        for tag in range(DEPTH):
            assert ctx.get(dut.entry.ready), f"queue full after {tag} entries"
            ctx.set(dut.entry.valid, 1)
            ctx.set(dut.entry.payload, payload(tag))
            await ctx.tick()
        assert not ctx.get(dut.entry.ready), "queue takes more than depth entries"
        ctx.set(dut.entry.valid, 0)
        await ctx.tick()
        assert not ctx.get(dut.entry.ready)
        # drain: one take per cycle, in order, room again from the cycle after the first take
        taken = []
        ctx.set(dut.buffer.ready, 1)
        for _ in range(DEPTH):
            assert ctx.get(dut.buffer.take)
            taken.append(ctx.get(dut.buffer.address.line) * 16 + ctx.get(dut.buffer.address.gen) * 2
                         + ctx.get(dut.buffer.address.slot))
            await ctx.tick()
            assert ctx.get(dut.entry.ready)
        assert taken == list(range(DEPTH))
        assert not ctx.get(dut.buffer.take)
        await ctx.tick()
        # streaming: a write every cycle, each taken the cycle after its write
        expected = []
        for tag in range(20, 60):
            assert ctx.get(dut.entry.ready)
            ctx.set(dut.entry.valid, 1)
            ctx.set(dut.entry.payload, payload(tag))
            if expected:
                assert ctx.get(dut.buffer.take), f"no take in the cycle after entry {expected[-1]}'s write"
                got = (ctx.get(dut.buffer.address.line) * 16 + ctx.get(dut.buffer.address.gen) * 2
                       + ctx.get(dut.buffer.address.slot))
                assert got == address_of(expected[-1])["line"] * 16 + address_of(expected[-1])["gen"] * 2 \
                    + address_of(expected[-1])["slot"]
            else:
                assert not ctx.get(dut.buffer.take)
            expected.append(tag)
            await ctx.tick()
        ctx.set(dut.entry.valid, 0)

    run(dut, bench)


def test_serve_test_reaches_only_the_valid_bit_of_the_drs_register():
    """Timing round 20a (issue 10): the DRS register loads the head's fields, the raw line and the buffer's
    read register whenever it is free, and only its valid bit waits for the serve test. On the synth_ecp5 netlist
    of a W=128 server, the buffer's `ready` (the serve test's input) reaches no payload, raw-line or kind
    flip-flop of the DRS register, and no input reaches the buffer's `read` (f17a415: `ready` reached the 128
    `raw_data` enables through `advance`, and the buffer's read enable was `take`; the serve test into those
    enables was the worst path of every round-19 build)."""
    from smartquant.scripts.io_paths import analyse
    from smartquant.scripts.logic_depth import levels_from_port, synthesised_netlist
    params = ControllerParams(data_width=128, b_max=8, buffer_slots=2, dram_addr_bits=16)
    reached = levels_from_port(synthesised_netlist(DrsServer(params, DEPTH)), "buffer__ready")
    # the DRS register's valid bit, named after the output buffer's input it drives: the port is traced
    assert "i__valid" in reached, sorted(reached)
    # its payload (`i__payload` there; f17a415 reached it at 1 level), kind and raw line
    data_registers = {name for name in reached if name.startswith(("i__payload", "drs_payload", "drs_kind",
                                                                   "raw_data"))}
    assert not data_registers, sorted(reached)
    report = analyse(DrsServer(params, DEPTH))["buffer__read"]
    assert not report.inputs, report
