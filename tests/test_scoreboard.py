"""The cocotb scoreboard (sim/scoreboard.py) as a checker: it accepts every legal outcome and rejects wrong ones.

Pure Python, no simulator: requests and responses are fed as the port monitors would report them, and the
expectation is written by hand from docs/DEVICE.md. A checker that cannot fail is a defect, so every tolerance
is tested from both sides.
"""
import numpy as np
import pytest

from smartquant.golden.device import DeviceModel, message_address, region_csr_writes
from smartquant.hdl.cxl.messages import drs_layout, ndr_layout, pack, req_layout, rwd_layout
from smartquant.params import (
    ControllerParams, Counter, DrsOpcode, Format, META_FIELD_NO_OP, NdrOpcode, ReqOpcode, Rounding, RwdOpcode,
    View, dev_load_level,
)
from smartquant.sim.scoreboard import Scoreboard

PARAMS = ControllerParams(data_width=128, dram_addr_bits=16, poison_entries=2)
B = 8


def make_board():
    model = DeviceModel(PARAMS)
    for address, value in region_csr_writes(PARAMS, 0, 0, 8, Format.INT, B, 1, B, Rounding.FLOOR):
        model.csr_write(address, value)
    rng = np.random.default_rng(1)
    model.load_raw(0, rng.integers(0, 256, size=(8 * B, PARAMS.line_bytes), dtype=np.uint8))
    return Scoreboard(PARAMS, model)


# Each helper is one handshake in a cycle of its own (end_cycle closes the cycle, as the port driver does).
def read(board, tag, block, line=0):
    address = message_address(PARAMS, View.RAW, block * B + line)
    board.on_req(pack(req_layout(PARAMS), opcode=ReqOpcode.MEM_RD, address=address, tag=tag))
    board.end_cycle()


def write(board, tag, block, poison=0):
    address = message_address(PARAMS, View.RAW, block * B)
    board.on_rwd(pack(rwd_layout(PARAMS), opcode=RwdOpcode.MEM_WR, address=address, tag=tag, poison=poison,
                      byte_enable=(1 << PARAMS.line_bytes) - 1, data=0))
    board.end_cycle()


def drs(board, tag, block, poison, dev_load=0, line=0):
    data = int.from_bytes(board.model.memory[block * B + line].tobytes(), "little")
    board.on_drs(pack(drs_layout(PARAMS), opcode=DrsOpcode.MEM_DATA, tag=tag, poison=poison, data=data,
                      meta_field=META_FIELD_NO_OP, dev_load=dev_load))
    board.end_cycle()


def ndr(board, tag, dev_load=0):
    board.on_ndr(pack(ndr_layout(PARAMS), opcode=NdrOpcode.CMP, tag=tag, meta_field=META_FIELD_NO_OP,
                      dev_load=dev_load))
    board.end_cycle()


def fill_poison_list(board):
    for tag, block in ((100, 6), (101, 7)):      # poison_entries = 2: the list is full
        write(board, tag, block, poison=1)
        ndr(board, tag)


def test_an_overflowing_write_changes_no_read():
    """A poisoned line the full list cannot take poisons nothing (DEVICE.md §4): reads concurrent with that
    write, or of its own block, are exact. Regression: an overflow poisoned every read, and the scoreboard
    accepted either answer from every read outstanding."""
    for answer in (0, 1):
        board = make_board()
        fill_poison_list(board)
        read(board, 1, block=0)                  # outstanding when the overflowing write is accepted
        write(board, 2, block=3, poison=1)       # third distinct block: lost (flagged and counted)
        read(board, 3, block=3)                  # its own block, accepted before the write's Cmp
        drs(board, 1, 0, poison=answer)
        drs(board, 3, 3, poison=answer)
        ndr(board, 2)
        assert board.stats.mismatches == 2 * answer, board.report()
        assert board.model.poisons_lost == 1 and board.model.counts[Counter.POISON_READS] == 0


def test_read_with_no_concurrent_poison_change_is_exact():
    board = make_board()
    read(board, 1, block=0)
    drs(board, 1, 0, poison=1)
    assert board.stats.mismatches == 1


def test_a_new_record_concerns_only_its_own_line_and_never_unmapped_reads():
    board = make_board()
    read(board, 1, block=1)                      # another block: its poison cannot change
    unmapped = message_address(PARAMS, View.RAW, 200)
    board.on_req(pack(req_layout(PARAMS), opcode=ReqOpcode.MEM_RD, address=unmapped, tag=2))
    board.end_cycle()
    write(board, 3, block=0, poison=1)           # enters line 0 only (no overflow)
    drs(board, 1, 1, poison=1)
    board.on_drs(pack(drs_layout(PARAMS), opcode=DrsOpcode.MEM_DATA, tag=2, poison=1,
                      data=(1 << PARAMS.data_width) - 1,
                      meta_field=META_FIELD_NO_OP))    # nxm_as_poison is off: a decode error is never poison
    board.end_cycle()
    assert board.stats.mismatches == 2, board.report()


def line_data(board, line):
    return int.from_bytes(board.model.memory[line].tobytes(), "little")


def drs_data(board, tag, data, poison):
    board.on_drs(pack(drs_layout(PARAMS), opcode=DrsOpcode.MEM_DATA, tag=tag, poison=poison, data=data,
                      meta_field=META_FIELD_NO_OP))
    board.end_cycle()


def test_poison_windows_are_per_line():
    """A write's poison change concerns the reads of the DRAM lines it poisons or clears, nothing else
    (DEVICE.md §4). Regression: a poisoned raw write concerned every read of its block, so a concurrent read of
    another line of the block was accepted with either answer. A clearing write (MemWr of the whole line) opens
    the same window: either answer until its Cmp, exact after it."""
    board = make_board()
    read(board, 1, block=2, line=3)          # same block as the write, another line
    old = line_data(board, 2 * B)
    read(board, 2, block=2, line=0)          # the written line
    write(board, 3, block=2, poison=1)
    drs(board, 1, 2, poison=1, line=3)       # wrong: line 3 is never poisoned
    drs_data(board, 2, old, poison=1)        # before or after the insert: either
    ndr(board, 3)
    assert board.stats.mismatches == 1, board.report()
    assert board.model.poisoned_lines() == {2 * B}
    read(board, 4, block=2)                  # outstanding when the clearing write is accepted
    write(board, 5, block=2)                 # MemWr of the whole line 16: clears it
    drs(board, 4, 2, poison=1)               # either (the data is the same: both writes wrote 0)
    ndr(board, 5)
    assert board.model.poisoned_lines() == set() and board.stats.mismatches == 1
    read(board, 6, block=2)
    drs(board, 6, 2, poison=1)               # after the Cmp: the clear must show
    assert board.stats.mismatches == 2, board.report()


def test_reused_tag_matches_the_request_it_answers():
    board = make_board()
    read(board, 7, block=0, line=1)
    read(board, 7, block=2, line=3)              # same tag, still outstanding
    assert board.stats.tag_reuses == 1
    drs(board, 7, 2, poison=0, line=3)           # answers the second one first
    drs(board, 7, 0, poison=0, line=1)
    assert board.stats.mismatches == 0 and not board.missing()
    drs(board, 7, 0, poison=0, line=1)           # a third answer has no request
    assert board.stats.mismatches == 1


def test_dev_load_counts_a_cycle_as_a_whole():
    """N changes once per cycle: a Req and an RwD accepted in the same cycle move it by two at once."""
    board = make_board()
    optimal = dev_load_level(PARAMS, 0)
    threshold = next(n for n in range(100) if dev_load_level(PARAMS, n) != optimal)   # first N at level 1
    for tag in range(threshold - 2):
        read(board, tag, block=tag % 8)
    address = message_address(PARAMS, View.RAW, 0)
    board.on_req(pack(req_layout(PARAMS), opcode=ReqOpcode.MEM_RD, address=address, tag=500))
    board.on_rwd(pack(rwd_layout(PARAMS), opcode=RwdOpcode.MEM_WR, address=message_address(PARAMS, View.RAW, 9),
                      tag=501, byte_enable=(1 << PARAMS.line_bytes) - 1, data=0))
    board.end_cycle()                            # N = threshold from the next cycle on, never threshold - 1
    board.end_cycle()
    drs(board, 500, 0, poison=0, dev_load=0)
    assert board.stats.mismatches == 1 and "dev_load 0 outside" in board.report()


def test_dev_load_must_lie_in_the_occupancy_range():
    board = make_board()
    n = PARAMS.load_capacity                     # occupancy climbs to n while the reads wait
    for tag in range(n):
        read(board, tag, block=tag % 8)
    assert dev_load_level(PARAMS, 1) == 0 and dev_load_level(PARAMS, n - 1) == 3
    drs(board, 0, 0, poison=0, dev_load=2)       # tag 0 could be loaded at N = 1 .. n - 1: any level
    drs(board, n - 2, (n - 2) % 8, poison=0, dev_load=3)   # at N = n - 1 .. n: Severe only
    assert board.stats.mismatches == 0
    drs(board, n - 1, (n - 1) % 8, poison=0, dev_load=0)   # Light with N >= n - 2 is wrong
    assert board.stats.mismatches == 1 and "dev_load 0 outside [3, 3]" in board.report()


def test_write_burst_data_and_strobes_are_compared():
    board = make_board()
    write(board, 1, block=2)
    want = board.model.axi_bursts[-1]
    line_bytes = PARAMS.line_bytes
    full = (1 << line_bytes) - 1
    board.on_axi_write(want.line * line_bytes, 1, [(0, full)])
    assert board.stats.mismatches == 0
    write(board, 2, block=4)
    board.on_axi_write(board.model.axi_bursts[-1].line * line_bytes, 1, [(1 << 77, full)])   # one bit flipped
    assert board.stats.mismatches == 1 and "WDATA differs" in board.report()
    write(board, 3, block=5)
    board.on_axi_write(board.model.axi_bursts[-1].line * line_bytes, 1, [(0, full >> 1)])    # one byte unstrobed
    assert board.stats.mismatches == 2 and "WSTRB" in board.report()


def test_checked_bursts_are_dropped_from_the_model_trace_and_unchecked_ones_kept():
    """The model records every burst it issues (with its write data); the scoreboard deletes the ones it has
    checked, so a long run's memory stays flat, but never one the DUT has not matched yet."""
    from smartquant.sim.scoreboard import TRACE_TRIM
    board = make_board()
    line_bytes, full = PARAMS.line_bytes, (1 << PARAMS.line_bytes) - 1
    write(board, 1, block=3)                     # its DUT burst comes only at the end: the trace must keep it
    held = board.model.axi_bursts[-1]
    ndr(board, 1)
    for i in range(3 * TRACE_TRIM):
        read(board, 2, block=i % 8, line=i % B)
        board.on_axi_address("read", board.model.axi_bursts[-1].line * line_bytes, 1)
        drs(board, 2, block=i % 8, poison=0, line=i % B)
    assert board.stats.mismatches == 0 and board.model.axi_bursts[0] is held
    board.on_axi_write(held.line * line_bytes, 1, [(0, full)])
    for i in range(3 * TRACE_TRIM):               # reads and writes, both scans moving
        write(board, 3, block=i % 8)
        board.on_axi_write(board.model.axi_bursts[-1].line * line_bytes, 1, [(0, full)])
        ndr(board, 3)
        read(board, 4, block=i % 8)
        board.on_axi_address("read", board.model.axi_bursts[-1].line * line_bytes, 1)
        drs(board, 4, block=i % 8, poison=0)
    assert board.stats.mismatches == 0 and board.bursts_checked == {"read": 6 * TRACE_TRIM, "write": 3 * TRACE_TRIM + 1}
    assert len(board.model.axi_bursts) <= 2 * TRACE_TRIM and board.extra_bursts() == []
    read(board, 5, block=1)                      # still checked after the deletions: a wrong line is reported
    board.on_axi_address("read", (board.model.axi_bursts[-1].line + 1) * line_bytes, 1)
    assert board.stats.mismatches == 1 and f"AXI read burst #{6 * TRACE_TRIM}:" in board.report()
    write(board, 6, block=2)                     # and a model burst the DUT never made
    assert any("the DUT did not" in problem for problem in board.extra_bursts())


def test_a_burst_the_model_issued_but_the_dut_did_not_is_reported():
    board = make_board()
    write(board, 1, block=2)
    assert any("the DUT did not" in problem for problem in board.extra_bursts())


def test_field_unpacker_equals_messages_unpack():
    """The scoreboard's generated unpackers split every channel's payload exactly like messages.unpack."""
    import random
    from smartquant.hdl.cxl.messages import drs_layout, ndr_layout, req_layout, rwd_layout, unpack
    from smartquant.sim.scoreboard import field_unpacker
    rng = random.Random(3)
    for params in (PARAMS, ControllerParams()):
        for layout in (req_layout(params), rwd_layout(params), drs_layout(params), ndr_layout(params)):
            fast = field_unpacker(layout)
            for payload in [0, (1 << layout.size) - 1] + [rng.getrandbits(layout.size) for _ in range(50)]:
                assert fast(payload) == unpack(layout, payload)


def test_field_packer_equals_messages_pack():
    """The testbench's generated packers build every channel's payload exactly like messages.pack (missing
    fields 0), and a field out of range raises messages.pack's error."""
    import random
    from amaranth.hdl import Shape
    from smartquant.sim.scoreboard import field_packer
    rng = random.Random(5)
    for params in (PARAMS, ControllerParams()):
        for layout in (req_layout(params), rwd_layout(params), drs_layout(params), ndr_layout(params)):
            fast = field_packer(layout)
            widths = {name: Shape.cast(field.shape).width for name, field in layout}
            for _ in range(50):
                fields = {name: rng.getrandbits(width) for name, width in widths.items() if rng.random() < 0.8}
                assert fast(**fields) == pack(layout, **fields)
            name, width = next(iter(widths.items()))
            with pytest.raises(ValueError, match=f"field {name}="):
                fast(**{name: 1 << width})
            with pytest.raises(ValueError, match=f"field {name}="):
                fast(**{name: -1})


def test_after_an_overflow_with_a_backend_write_error_the_offered_blocks_may_read_either_way():
    """The device offers a poisoned write's block to the table when it accepts the write, a failed write's block
    at its B response: with the table full, which offered blocks it holds depends on timing (DEVICE.md §4).
    Then reads of offered blocks may be poisoned or not; a block never offered must still read clean."""
    board = make_board()
    board.model.inject_write_error(3 * B)        # the raw write to block 3 fails on B
    for tag, block, poison in ((10, 3, 0), (11, 4, 1), (12, 5, 1)):   # 3, 4 fill the table; 5 is lost
        write(board, tag, block, poison=poison)
        ndr(board, tag)
    assert board.model.poisons_lost == 1
    read(board, 20, block=5)
    read(board, 21, block=4)
    read(board, 22, block=6)
    drs(board, 20, 5, poison=1)                  # the model lost 5, the device may have kept it
    drs(board, 21, 4, poison=0)                  # ... and lost 4 instead
    assert board.stats.mismatches == 0, board.report()
    drs(board, 22, 6, poison=1)                  # never offered: must be clean
    assert board.stats.mismatches == 1


def test_trimming_the_occupancy_log_never_changes_a_dev_load_verdict():
    """The scoreboard logs N only where it changes and trims entries no outstanding request needs: with a log
    trimmed every few entries, random traffic with random DevLoad values gets the same verdicts as untrimmed."""
    verdicts = []
    for limit in (4, 1 << 30):
        board = make_board()
        board.OCCUPANCY_LOG_LIMIT = limit
        rng = np.random.default_rng(5)
        outstanding, next_tag = {}, 0
        for _ in range(600):
            if len(outstanding) < 6 and (not outstanding or rng.random() < 0.55):
                block = int(rng.integers(0, 8))
                read(board, next_tag, block)
                outstanding[next_tag] = block
                next_tag += 1
            else:
                tag = int(rng.choice(list(outstanding)))
                drs(board, tag, outstanding.pop(tag), poison=0, dev_load=int(rng.integers(0, 4)))
            if rng.random() < 0.3:
                board.end_cycle()            # a cycle with no handshake
        verdicts.append((board.stats.mismatches, board.messages))
        if limit == 4:
            assert len(board.occupancy_cycles) <= 2 * 6 + 4      # trimmed as it went
    assert verdicts[0] == verdicts[1] and verdicts[0][0] > 0    # some DevLoad values were wrong, the same ones
