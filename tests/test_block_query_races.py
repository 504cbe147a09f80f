"""Races around the read engine's block query (a read held at dispatch while its block is gathered or landing,
hdl/engine/write_path.py): directed tests against the golden model, found by a review of the move to dispatch."""
import pytest

from test_top_axi_memory import (Bench, block_lines, model_block_written_then_read, program_and_write_block,
                                 ALL_BYTES)
from smartquant.golden.device import region_csr_writes
from smartquant.params import Format, ReqOpcode, RwdOpcode, Rounding, View

B, R, BASE, K = 8, 1, 0x80, 3
CONFIG = (0, BASE, 4, Format.INT, B, R, K, Rounding.FLOOR)


def lags(every, default):
    """Each lag of `every`; those not in `default` run with -m slow (each is a 30 s Python simulation of the
    controller)."""
    return [lag if lag in default else pytest.param(lag, marks=pytest.mark.slow) for lag in every]


@pytest.mark.parametrize("lag", lags(range(-3, 7), default=(-1, 0, 2, 5)))
def test_read_waiting_on_a_flushed_block_does_not_flush_the_next_block(lag):
    """Block X = 0 has line 0 gathered; a packed read of X waits at dispatch and asks for the flush; the 8
    lines of block Y = 1 follow on RwD back to back (`lag` cycles after the read is offered). Whatever the
    interleaving, the golden model writes X (one line's strobes) then Y whole: two bursts. The flush request
    the waiting read sets in the cycle X is flushed must not outlive X and split Y."""
    bench = Bench()
    model = bench.model
    model.program(region_csr_writes(bench.params, *CONFIG))
    x, y = block_lines(5, B), block_lines(6, B)
    # both acceptance orders of the model give the same two write bursts
    model.rwd(RwdOpcode.MEM_WR, model.address(View.WEIGHT_MAJOR, BASE), 200, x[0], ALL_BYTES, 0)
    model.req(ReqOpcode.MEM_RD, model.address(View.PACKED_K, BASE, K), 100)
    for j in range(B):
        model.rwd(RwdOpcode.MEM_WR, model.address(View.WEIGHT_MAJOR, BASE + B + j), 300 + j, y[j], ALL_BYTES, 0)
    model.flush_writes("idle")
    want = [(w.line, w.beats) for w in model.axi_writes]
    assert want == [(BASE, B), (BASE + B, B)]

    def script(b):
        yield from b.program(*CONFIG)
        b.write(200, View.WEIGHT_MAJOR, BASE, x[0])
        yield from b.idle(2)
        steps = sorted([(0, "read"), (lag, "y")])
        now = 0
        for at, what in steps:
            yield from b.idle(at - now)
            now = at
            if what == "read":
                b.read(100, View.PACKED_K, BASE, K)
            else:
                for j in range(B):
                    b.write(300 + j, View.WEIGHT_MAJOR, BASE + B + j, y[j])
        yield from b.wait(lambda: 100 in b.drs and all(300 + j in b.ndr for j in range(B)) and 200 in b.ndr)

    bench.run(script)
    got = [(line, beats) for line, beats, _ in bench.memory.aw_log]
    assert got == want, f"write bursts {got}, model {want}"


@pytest.mark.parametrize("lag", lags([0, 1, 2], default=(1,)))
def test_split_flush_leaves_a_rewritten_block_poisoned(lag):
    """The consequence of the split above that a host sees: block Y was poisoned (a poisoned weight-major
    write, completed), then rewritten whole by 8 clean lines while a read of block X waits at dispatch for
    X's flush. The model writes Y in one full-strobe flush, which clears Y's poison record (DEVICE.md §4); a
    read of Y sent after every Cmp must come back with poison = 0. A split flush writes two partial-strobe
    bursts, neither of which clears."""
    bench = Bench()
    model = bench.model
    model.program(region_csr_writes(bench.params, *CONFIG))
    x, y, bad = block_lines(5, B), block_lines(6, B), block_lines(7, 1)[0]
    wm = lambda line: model.address(View.WEIGHT_MAJOR, line)
    model.rwd(RwdOpcode.MEM_WR, wm(BASE + B), 150, bad, ALL_BYTES, 1)
    model.flush_writes("idle")
    model.rwd(RwdOpcode.MEM_WR, wm(BASE), 200, x[0], ALL_BYTES, 0)
    model.req(ReqOpcode.MEM_RD, model.address(View.PACKED_K, BASE, K), 100)
    for j in range(B):
        model.rwd(RwdOpcode.MEM_WR, wm(BASE + B + j), 300 + j, y[j], ALL_BYTES, 0)
    model.flush_writes("idle")
    (after,) = model.req(ReqOpcode.MEM_RD, model.address(View.PACKED_K, BASE + B, K), 101)
    assert after.poison == 0

    def script(b):
        yield from b.program(*CONFIG)
        b.rwd.append(dict(opcode=RwdOpcode.MEM_WR, address=wm(BASE + B), tag=150, ld_id=0, poison=1,
                          byte_enable=ALL_BYTES, data=bad))
        yield from b.wait(lambda: 150 in b.ndr)
        b.write(200, View.WEIGHT_MAJOR, BASE, x[0])
        yield from b.idle(2)
        b.read(100, View.PACKED_K, BASE, K)
        yield from b.idle(lag)
        for j in range(B):
            b.write(300 + j, View.WEIGHT_MAJOR, BASE + B + j, y[j])
        yield from b.wait(lambda: 100 in b.drs and all(300 + j in b.ndr for j in range(B)) and 200 in b.ndr)
        b.read(101, View.PACKED_K, BASE + B, K)
        yield from b.wait(lambda: 101 in b.drs)

    bench.run(script)
    drs = bench.drs[101][0]
    assert drs["data"] == after.data
    assert drs["poison"] == after.poison, "a read after the rewrite's Cmps still sees the old poison record"


# every lag and every held channel once in the default run (a Latin square), all nine with -m slow
@pytest.mark.parametrize("lag, hold", [(lag, hold) if (lag, hold) in ((0, "aw"), (1, "w"), (3, "b"))
                                       else pytest.param(lag, hold, marks=pytest.mark.slow)
                                       for hold in ("aw", "w", "b") for lag in (0, 1, 3)])
def test_read_of_a_gathered_block_waits_at_dispatch_while_the_flush_is_held(lag, hold):
    """tests/test_top_axi_memory.py's read-while-gathered test with the flush held in the memory (AW, W or B
    held for 40 cycles): the memory applies W at once and answers reads 2 cycles after AR, so there the read
    sees the new data even when dispatch does not wait (it only asks for the flush). Here a read that did not
    wait at dispatch would fetch the old planes while the flush is held."""
    bench = Bench()
    model = bench.model
    old, new = block_lines(3, B), block_lines(4, B)
    packed, before = model_block_written_then_read(model, CONFIG, old, 99)
    model.rwd(RwdOpcode.MEM_WR, model.address(View.WEIGHT_MAJOR, BASE), 200, new[0], ALL_BYTES, 0)
    (after,) = model.req(ReqOpcode.MEM_RD, packed, 100)
    assert before.data != after.data
    seen = {}

    def script(b):
        yield from program_and_write_block(b, CONFIG, old)
        b.read(99, View.PACKED_K, BASE, K)          # the block is buffered: the later read would hit it
        yield from b.wait(lambda: 99 in b.drs)
        yield from b.idle(4)
        seen["burst"] = len(b.memory.aw_log)
        b.memory.hold[hold] = True
        b.write(200, View.WEIGHT_MAJOR, BASE, new[0])
        yield from b.idle(lag)
        b.read(100, View.PACKED_K, BASE, K)
        yield from b.idle(40)
        b.memory.hold[hold] = False
        yield from b.wait(lambda: 100 in b.drs and 200 in b.ndr)

    bench.run(script)
    assert bench.drs[99][0]["data"] == before.data
    assert bench.drs[100][0]["data"] == after.data, "the read did not wait for the held flush"
    assert bench.drs[100][1] > bench.memory.b_cycles[seen["burst"]]


def test_a_waiting_read_flushes_its_block_once_not_every_later_line():
    """Block X has line 0 gathered; a packed read of X arrives (it asks for the flush), then 16 lines of X
    stream in back to back (two whole blocks' worth). DEVICE.md §4 flushes the buffer when a read of the
    gathered block *arrives*: the model writes line 0 (`read`), then two whole blocks (`full`): 3 bursts. The
    read, still waiting at dispatch while X lands, finds each newly gathered line of X and flushes it alone:
    one 8-beat burst per line (write amplification B), and the read waits until the stream ends (no bound)."""
    bench = Bench()
    model = bench.model
    model.program(region_csr_writes(bench.params, *CONFIG))
    x = block_lines(5, B)
    wm = lambda line: model.address(View.WEIGHT_MAJOR, line)
    model.rwd(RwdOpcode.MEM_WR, wm(BASE), 1000, x[0], ALL_BYTES, 0)
    model.req(ReqOpcode.MEM_RD, model.address(View.PACKED_K, BASE, K), 100)
    for i in range(2 * B):
        model.rwd(RwdOpcode.MEM_WR, wm(BASE + i % B), i, x[i % B], ALL_BYTES, 0)
    model.flush_writes("idle")
    want = [(w.line, w.beats) for w in model.axi_writes]
    assert want == [(BASE, B)] * 3

    def script(b):
        yield from b.program(*CONFIG)
        b.write(1000, View.WEIGHT_MAJOR, BASE, x[0])
        yield from b.idle(2)
        b.read(100, View.PACKED_K, BASE, K)
        yield
        for i in range(2 * B):
            b.write(i, View.WEIGHT_MAJOR, BASE + i % B, x[i % B])
        yield from b.wait(lambda: 100 in b.drs and all(i in b.ndr for i in range(2 * B)))

    bench.run(script)
    got = [(line, beats) for line, beats, _ in bench.memory.aw_log]
    assert got == want, f"{len(got)} write bursts, model {len(want)}"
