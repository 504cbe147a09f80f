"""BlockBuffer (hdl/engine/block_buffer.py) in the Amaranth simulator.

The testbench plays the read engine around the unit: stage B (it registers `lookup_match`, `lookup_same` and
the cycle's `allocation` with the next read's key, and holds them while dispatch stalls), dispatch (claims at random, a miss only when `can_allocate`), the
packer (pushes each fill's error flag, then its lines, with random gaps) and the DRS server (takes ready lines
at random). Checked against a Python model of a round-robin tag cache (DEVICE.md §5): every claim's hit / miss
and slot equal the model's (a read right behind the miss that allocates its block must hit: the forwarding),
invalidations clear the model's matching tags (an allocation in the same cycle wins; invalidate_all spares
nothing), and every taken line carries the data and error flag of the fill its read claimed, which can only hold
if no fill overwrites a slot while reads of the generation it holds are queued. Hand-worked cases check the
first-line gate's timing and an invalidation.
"""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from smartquant.hdl.engine.block_buffer import BlockBuffer, MAX_LIVE_GENERATIONS
from smartquant.params import ControllerParams

SERVE_DEPTH = 12
NO_EVENT = {"valid": 0, "region": 0, "block": 0}


def params_with(slots):
    return ControllerParams(data_width=64, b_max=8, n_regions=4, buffer_slots=slots, dram_addr_bits=16)


def key_fields(key):
    region, block, k = key
    return {"region": region, "block": block, "expanded": k % 2, "k": k, "midpoint": 0, "toward_zero": 0}


def lines_of(key):
    """Lines the packer emits for a block of this key (1..b_max)."""
    return 1 << (key[2] % 4)


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("slots,seed", [(1, 1), (2, 2), (2, 3), (4, 4)])
def test_random_reads_against_a_round_robin_model(slots, seed):
    rng = random.Random(seed)
    dut = BlockBuffer(params_with(slots), SERVE_DEPTH)
    keys = [(rng.randrange(4), rng.randrange(4), rng.randint(1, 8)) for _ in range(slots + 3)]
    reads = [(key, rng.randrange(lines_of(key))) for key in (rng.choice(keys) for _ in range(400))]
    # bursts of the same block (as in streaming), so that reads hit a slot while its fill is under way
    reads = [read for read in reads for _ in range(rng.choice([1, 1, 3]))]
    stats = {"hits": 0, "misses": 0, "served": 0, "errors": 0, "gated": 0}

    async def bench(ctx):
        model_tags = [None] * slots    # key of each valid slot
        model_victim = 0
        slot_fill = [None] * slots     # fill the slot's newest allocation started
        fills = []                     # {"key", "error", "lines"}
        errors_pushed = 0              # fills whose error flag the unit took
        line_fill = line_index = 0     # the line the packer presents next
        queue = []                     # claimed reads not yet taken: (slot, gen, fill, line)
        taken = None                   # the read taken in the previous cycle
        held = None                    # the line `data` must still show: taken earlier, no read since
        request = None                 # (key, line, registered match) of the read in dispatch
        next_read = 0
        for cycle in range(40 * len(reads)):
            if taken is not None:
                held = fills[taken[0]]["lines"][taken[1]]
                stats["served"] += 1
                taken = None
            if held is not None:
                assert ctx.get(dut.serve.data) == held, f"cycle {cycle}: data"
            if next_read == len(reads) and request is None and not queue and line_fill == len(fills):
                break

            # dispatch
            claim = allocated = None
            if request is not None:
                key, line, looked_up = request
                ctx.set(dut.request, {"key": key_fields(key), **looked_up})
                hit_slots = [s for s in range(slots) if model_tags[s] == key]
                assert ctx.get(dut.hit) == bool(hit_slots), f"cycle {cycle}: hit"
                assert ctx.get(dut.slot) == (hit_slots[0] if hit_slots else model_victim), f"cycle {cycle}: slot"
                if (hit_slots or ctx.get(dut.can_allocate)) and len(queue) < SERVE_DEPTH and rng.random() < 0.7:
                    claim = (key, line, ctx.get(dut.slot), ctx.get(dut.gen))
            ctx.set(dut.claim, int(claim is not None))
            if claim:
                key, line, slot, gen = claim
                if hit_slots:
                    stats["hits"] += 1
                else:
                    stats["misses"] += 1
                    allocated = slot
                    fills.append({"key": key, "error": int(rng.random() < 0.2),
                                  "lines": [rng.getrandbits(64) for _ in range(lines_of(key))]})
                    slot_fill[slot] = len(fills) - 1
                queue.append((slot, gen, slot_fill[slot], line))

            # writes invalidate (applied to the model with the allocation, after the edge)
            invalidated = None
            if rng.random() < 0.03:
                invalidated = rng.choice([k for k in model_tags if k] or [(0, 0, 1)])[:2]
                port = dut.invalidate if rng.random() < 0.5 else dut.invalidate_landed
                ctx.set(port, {"valid": 1, "region": invalidated[0], "block": invalidated[1]})
            invalidate_all = rng.random() < 0.004
            ctx.set(dut.invalidate_all, int(invalidate_all))

            # stage B: the next read's lookup, registered when dispatch moves on
            if (request is None or claim) and next_read < len(reads):
                key, line = reads[next_read]
                ctx.set(dut.lookup, key_fields(key))
                request = (key, line, {"match": ctx.get(dut.lookup_match), "same": ctx.get(dut.lookup_same),
                                       "allocated": ctx.get(dut.allocation)})
                next_read += 1
            elif claim:
                request = None

            # packer: a fill's error flag, then its lines
            push_error = errors_pushed < len(fills) and rng.random() < 0.5
            ctx.set(dut.fill_error.valid, int(push_error))
            if push_error:
                ctx.set(dut.fill_error.payload, fills[errors_pushed]["error"])
                push_error = ctx.get(dut.fill_error.ready)
            offer_line = line_fill < errors_pushed and rng.random() < 0.7
            ctx.set(dut.line.valid, int(offer_line))
            if offer_line:
                fill = fills[line_fill]
                ctx.set(dut.line.payload, {"index": line_index, "last": int(line_index == len(fill["lines"]) - 1),
                                           "data": fill["lines"][line_index]})
                stats["gated"] += not ctx.get(dut.line.ready)
                offer_line = ctx.get(dut.line.ready)

            # DRS server: the head read, taken when its line is there
            take = False
            head_ready = False
            if queue:
                slot, gen, fill, line = queue[0]
                ctx.set(dut.serve.address, {"slot": slot, "gen": gen, "line": line})
                head_ready = ctx.get(dut.serve.ready)
                take = head_ready and rng.random() < 0.8
                if take:
                    assert ctx.get(dut.serve.error) == fills[fill]["error"], f"cycle {cycle}: error flag"
                    stats["errors"] += fills[fill]["error"]
                    taken = (fill, line)
                    queue.pop(0)
            ctx.set(dut.serve.take, int(take))
            # the DRS server reads whenever its DRS register is free, the head's line ready or not: a read
            # without a take replaces `data` (with the head's line when it is written, else undefined), no read
            # keeps it
            read = take or rng.random() < 0.5
            ctx.set(dut.serve.read, int(read))
            if read and not take:
                held = fills[queue[0][2]]["lines"][queue[0][3]] if head_ready else None
            await ctx.tick()

            if push_error:
                errors_pushed += 1
            if offer_line:
                line_index += 1
                if line_index == len(fills[line_fill]["lines"]):
                    line_fill, line_index = line_fill + 1, 0
            if allocated is not None:
                model_tags[allocated] = claim[0]
                model_victim = (model_victim + 1) % slots
            for s in range(slots):
                if invalidate_all or (invalidated and model_tags[s] and model_tags[s][:2] == invalidated
                                      and s != allocated):
                    model_tags[s] = None
            ctx.set(dut.invalidate, NO_EVENT)
            ctx.set(dut.invalidate_landed, NO_EVENT)
        else:
            raise AssertionError(f"not all reads served: {stats}, {len(queue)} queued")
        assert stats["served"] == len(reads)
        await ctx.tick()
        assert ctx.get(dut.busy) == 0

    run(dut, bench)
    # the run exercised what it claims to: hits and misses, error flags, the first-line gate
    assert stats["hits"] > 50 and stats["misses"] > 50 and stats["errors"] > 0 and stats["gated"] > 0, stats


def test_first_line_waits_for_the_held_generation_and_invalidation_forces_a_miss():
    """One slot. Read A (miss, generation 1) and read B (another block: miss, the same slot, generation 2).
    B's first line reaches the unit at once but may not overwrite A's block while A's read is queued. A is
    taken in cycle t; the release is registered (t + 1) and the per-slot held flag too, so B's first line is
    written, and B's read ready, in cycle t + 2. Then an invalidation of B's block makes a further read of B
    miss."""
    dut = BlockBuffer(params_with(1), SERVE_DEPTH)
    key_a, key_b = (0, 1, 1), (0, 2, 1)   # k = 1: one line per block

    async def bench(ctx):
        async def claim(key):
            ctx.set(dut.lookup, key_fields(key))
            ctx.set(dut.request, {"key": key_fields(key), "match": ctx.get(dut.lookup_match)})
            ctx.set(dut.claim, 1)
            result = (ctx.get(dut.hit), ctx.get(dut.slot), ctx.get(dut.gen))
            await ctx.tick()
            ctx.set(dut.claim, 0)
            return result

        async def fill(error, data):
            ctx.set(dut.fill_error.valid, 1)
            ctx.set(dut.fill_error.payload, error)
            await ctx.tick()
            ctx.set(dut.fill_error.valid, 0)
            ctx.set(dut.line.valid, 1)
            ctx.set(dut.line.payload, {"index": 0, "last": 1, "data": data})

        assert await claim(key_a) == (0, 0, 1)
        assert await claim(key_b) == (0, 0, 2)
        await fill(0, 0xAAAA)
        await ctx.tick()   # A's line written
        ctx.set(dut.line.valid, 0)
        await fill(1, 0xBBBB)
        ctx.set(dut.serve.address, {"slot": 0, "gen": 1, "line": 0})
        for _ in range(5):   # B's line waits behind A's read
            assert ctx.get(dut.serve.ready) == 1
            await ctx.tick()
            ctx.set(dut.line.valid, 0)   # the skid holds it
        ctx.set(dut.serve.take, 1)       # cycle t
        ctx.set(dut.serve.read, 1)
        await ctx.tick()
        ctx.set(dut.serve.take, 0)
        ctx.set(dut.serve.read, 0)
        assert ctx.get(dut.serve.data) == 0xAAAA
        ctx.set(dut.serve.address, {"slot": 0, "gen": 2, "line": 0})
        assert ctx.get(dut.serve.ready) == 0   # t + 1
        await ctx.tick()
        assert ctx.get(dut.serve.ready) == 1 and ctx.get(dut.serve.error) == 1   # t + 2
        ctx.set(dut.serve.take, 1)
        ctx.set(dut.serve.read, 1)
        await ctx.tick()
        ctx.set(dut.serve.take, 0)
        ctx.set(dut.serve.read, 0)
        assert ctx.get(dut.serve.data) == 0xBBBB
        # B is held and valid: a read of it hits; after an invalidation of its block it misses
        ctx.set(dut.lookup, key_fields(key_b))
        ctx.set(dut.request, {"key": key_fields(key_b), "match": ctx.get(dut.lookup_match)})
        assert ctx.get(dut.hit) == 1 and ctx.get(dut.gen) == 2
        ctx.set(dut.invalidate, {"valid": 1, "region": 0, "block": 2})
        await ctx.tick()
        ctx.set(dut.invalidate, NO_EVENT)
        assert ctx.get(dut.hit) == 0 and ctx.get(dut.gen) == 3

    run(dut, bench)


def test_a_slot_holds_at_most_max_live_generations():
    """One slot, no fills landing: misses of distinct blocks can be claimed while the slot has fewer than
    MAX_LIVE_GENERATIONS generations alive (the held one counts), then `can_allocate` falls."""
    dut = BlockBuffer(params_with(1), SERVE_DEPTH)

    async def bench(ctx):
        allocated = 0
        for block in range(MAX_LIVE_GENERATIONS + 2):
            ctx.set(dut.request, {"key": key_fields((0, block, 1)), "match": 0})
            if not ctx.get(dut.can_allocate):
                break
            ctx.set(dut.claim, 1)
            await ctx.tick()
            ctx.set(dut.claim, 0)
            allocated += 1
        assert allocated == MAX_LIVE_GENERATIONS - 1

    run(dut, bench)
