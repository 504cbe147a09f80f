"""Registered ports (issue 10, item 2): no combinational path from an input port to an output port, and every
output driven straight by a flip-flop, on the gate netlist yosys makes of the generated design
(smartquant/scripts/io_paths.py).

The one exception is the reset: while `rst` or `axi_rst` is high every AXI VALID is 0 in that very cycle
(docs/DEVICE.md "Reset"; AxiDrain), so those two inputs reach the AXI port through the drain's gating. The
engines behind the drain drive their AXI channels from registers, which the unit checks below prove, and the
drain's gating is a few LUT levels from its registered flags (tests/test_axi_drain_levels.py).
"""
from __future__ import annotations

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from smartquant.hdl.engine.read_engine import ReadEngine
from smartquant.hdl.engine.write_path import WritePath
from smartquant.hdl.stream_buffers import InputSkid, OutputBuffer
from smartquant.hdl.top import SmartQuantController
from smartquant.params import ControllerParams
from smartquant.scripts.io_paths import analyse

SMALL = ControllerParams(data_width=64, b_max=4, n_regions=2, request_depth=4, dram_addr_bits=14)
RESET_INPUTS = {"rst", "axi_rst"}


class PassThrough(wiring.Component):
    """One output straight from an input through a gate, one through a register: the checker's own test."""
    def __init__(self):
        super().__init__({"a": In(1), "b": In(1), "combinational": Out(1), "registered": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.combinational.eq(self.a & self.b)
        m.d.sync += self.registered.eq(self.a & self.b)
        return m


def test_checker_finds_a_combinational_path_and_a_gate_driven_output():
    reports = analyse(PassThrough())
    assert reports["combinational"].inputs == {"a", "b"}
    assert reports["combinational"].unregistered_bits == 1
    assert reports["registered"].inputs == set()
    assert reports["registered"].unregistered_bits == 0


@pytest.mark.parametrize("buffer_class", [OutputBuffer, InputSkid])
def test_stream_buffers_register_the_ready_they_give_upstream(buffer_class):
    reports = analyse(buffer_class(8))
    assert reports["i__ready"].unregistered_bits == 0 and not reports["i__ready"].inputs
    if buffer_class is OutputBuffer:
        assert all(reports[name].unregistered_bits == 0 and not reports[name].inputs
                   for name in ("o__valid", "o__payload"))


# W128_b8 is the FPGA build's configuration; the small one runs with -m slow
@pytest.mark.parametrize("params", [pytest.param(SMALL, marks=pytest.mark.slow, id="W64_b4"),
                                    pytest.param(ControllerParams(data_width=128, b_max=8, n_regions=4,
                                                                  dram_addr_bits=16), id="W128_b8")])
def test_controller_has_no_path_from_an_input_to_an_output(params):
    reports = analyse(SmartQuantController(params))
    paths = {port: sorted(r.inputs) for port, r in reports.items() if r.inputs - RESET_INPUTS}
    assert not paths, f"combinational paths from inputs: {paths}"
    # every port but the AXI manager (gated by the reset in AxiDrain) is a flip-flop or a constant
    logic_driven = {port: r.unregistered_bits for port, r in reports.items()
                    if r.unregistered_bits and not port.startswith("axi__")}
    assert not logic_driven, f"outputs driven by logic: {logic_driven}"
    assert {port for port, r in reports.items() if r.inputs} <= {port for port in reports if port.startswith("axi__")}


def test_axi_host_top_has_no_path_from_an_input_to_an_output():
    """host_port = "axi": the AXI4 host port (hdl/host/axi_port.py) is registered like the CXL ports: no input
    reaches an output but the reset into the DRAM-side AXI port, and every host__* output is a flip-flop."""
    from dataclasses import replace
    from smartquant.hdl.host.axi_port import SmartQuantAxiController
    reports = analyse(SmartQuantAxiController(replace(SMALL, host_port="axi", host_axi_id_bits=4)))
    assert {port for port in reports if port.startswith("host__")} == {
        f"host__{name}" for name in ("arready", "awready", "wready", "rid", "rdata", "rresp", "ruser", "rlast",
                                     "rvalid", "bid", "bresp", "bvalid")}
    paths = {port: sorted(r.inputs) for port, r in reports.items() if r.inputs - RESET_INPUTS}
    assert not paths, f"combinational paths from inputs: {paths}"
    logic_driven = {port: r.unregistered_bits for port, r in reports.items()
                    if r.unregistered_bits and not port.startswith("axi__")}
    assert not logic_driven, f"outputs driven by logic: {logic_driven}"


def test_engines_drive_their_axi_channels_from_registers():
    read = analyse(ReadEngine(SMALL))
    for name in ("arvalid", "araddr", "arlen", "arid", "arsize", "arburst", "rready"):
        report = read[f"axi__{name}"]
        assert report.unregistered_bits == 0 and not report.inputs, (name, report)
    write = analyse(WritePath(SMALL))
    for name in ("awvalid", "awaddr", "awlen", "awid", "wvalid", "wdata", "wstrb", "wlast", "bready"):
        report = write[f"axi__{name}"]
        assert report.unregistered_bits == 0 and not report.inputs, (name, report)
    assert write["rwd__ready"].unregistered_bits == 0 and not write["rwd__ready"].inputs


def test_write_path_fill_stream_is_registered():
    """MemRdFill reads leave the write path through an output buffer: fill valid and payload are flip-flops that
    no input reaches, and fill.ready reaches no output. Before, the skid's valid ran combinationally through the
    fill stream, the front end and the read gate's decode back into `held` (the FPGA build's critical path)."""
    write = analyse(WritePath(SMALL))
    for name in ("fill__valid", "fill__payload"):
        assert write[name].unregistered_bits == 0 and not write[name].inputs, (name, write[name])
    assert not [port for port, report in write.items() if "fill__ready" in report.inputs]


def test_front_end_read_ready_reaches_only_fill_ready_and_the_fifo():
    """The read engine's read.ready comes from two of its flip-flops (test_read_engine_read_ready_is_registered),
    so since round 21d the front end takes it without a skid of its own: it reaches the front end's fill.ready
    (the write path's fill buffer takes it as its output's ready) and nothing else at the ports; Req.ready stays a
    flip-flop that no input reaches."""
    from smartquant.hdl.cxl.frontend import ReqFrontEnd
    reports = analyse(ReqFrontEnd(SMALL))
    assert [port for port, report in reports.items() if "read__ready" in report.inputs] == ["fill__ready"]
    assert reports["fill__ready"].inputs == {"read__ready"}
    assert reports["req__ready"].unregistered_bits == 0 and not reports["req__ready"].inputs


def test_front_end_read_fifo_lut_ram_reaches_only_its_head_register():
    """Timing round 21a: the read FIFO's oldest entry is a register (HeadRegisterFifo), so the read engine's region
    compares start at a flip-flop. On the synth_ecp5 netlist of a W=128 front end, the LUT RAMs' read pointers
    reach only their own FIFO's registers, the read FIFO's its head and no output port (with amaranth's SyncFIFO
    there, the pointer reaches the `read` payload port, and in the controller stage A: a 75 MHz build's worst
    path, 17.2 ns; on 520ba90 also the read skid's payload)."""
    from smartquant.hdl.cxl.frontend import ReqFrontEnd
    from smartquant.fpga.system import board_params
    from smartquant.scripts.logic_depth import (levels_from_register, lut_ram_read_pointers,
                                                output_ports_reached_from_register, synthesised_netlist)
    netlist = synthesised_netlist(ReqFrontEnd(board_params(128, 8, 64 * 1024)))
    pointers = lut_ram_read_pointers(netlist)
    assert len(pointers) == 2, pointers        # the read FIFO's and the Cmp FIFO's
    read_pointers = [pointer for pointer in pointers if pointer.startswith("read_fifo.")]
    assert len(read_pointers) == 1, pointers
    for pointer in pointers:
        fifo = pointer.split(".")[0]      # read_fifo.behind.consume, cmp_fifo.consume
        reached = levels_from_register(netlist, pointer)
        outside = {name for name in reached if not name.startswith(fifo + ".") and name != "head"}
        assert not outside, (pointer, sorted(outside))
    assert "head" in levels_from_register(netlist, read_pointers[0])
    assert not output_ports_reached_from_register(netlist, read_pointers[0])
    # the check's own test: the Cmp FIFO (a SyncFIFO) reaches its output port through its LUT RAM
    cmp_pointer = next(pointer for pointer in pointers if pointer.startswith("cmp_fifo."))
    assert "cmp__payload" in output_ports_reached_from_register(netlist, cmp_pointer)


def test_ndr_arbiter_gives_the_write_path_a_registered_ready():
    """Timing round 21e: the write path's NDRs enter the NDR arbiter through a skid, so write_ndr.ready is a
    flip-flop that no input reaches (ca9cc90: it was the round-robin choice, from the Cmp stream's valid, i.e. the
    front end's Cmp FIFO level, into the write path's NDR register, its WriteTable and its RwD skid: 10..11 LUT
    levels on the controller's netlist)."""
    from smartquant.hdl.cxl.frontend import NdrArbiter
    report = analyse(NdrArbiter(SMALL))["write_ndr__ready"]
    assert report.unregistered_bits == 0 and not report.inputs, report


def test_read_engine_read_ready_is_registered():
    """Stage A hands its read to stage B through a skid, so the read engine's read.ready (and stage A's clock
    enable, the same signal) comes from its own flip-flops: no input reaches it. Before, it was
    ~stage_a_valid | ~stage_b_valid | dispatch, and dispatch waits on block_busy, the AXI reader and the DRS
    server: a 75 MHz build's critical path ran from dispatch through stage B's load and the front end's read skid
    into stage A's clock enable."""
    report = analyse(ReadEngine(SMALL))["read__ready"]
    assert not report.inputs, report.inputs


def test_read_engine_registers_its_events():
    """No input of the read engine reaches its counts: each is made from flip-flops. The counts made at dispatch (nxm /
    hole / raw reads, buffer hits and misses, reads_at_k): dispatch waits on block_busy and the block buffer's hit,
    and a 75 MHz build's critical path ran from there through the top's event sum into the CSR block's increment
    register (timing round 18); the read's class is registered beside `dispatch` and the 21 dispatch counts are
    decoded after those flip-flops (round 19b: registered as events, dispatch was the reset of 21 flip-flops and the
    75 MHz build's worst path). The five handshake counts (AR, R beats, R errors, DRS sent, poisoned reads): R's
    ready and the serve decision ran into the increment register's reset at 10 LUT levels (round 19b). So no input
    reaches `events` (07f62f9: the AXI and DRS inputs reached the five handshake bits)."""
    report = analyse(ReadEngine(SMALL))["events"]
    assert not report.inputs, (report.unregistered_bits, report.inputs)


def test_write_path_reads_its_own_room_flip_flop():
    """Timing round 20c: the write path's join and flush decision read `room`, a flip-flop of the write path
    loaded with the AXI writer's and the table's next ready values, not the writer's `write.ready` flip-flop,
    which the placer puts by the AXI W data (a 75 MHz build's worst path began with that net, 4.1 ns across the
    chip, into write.ready -> join -> held_loads -> held_named). On the synth_ecp5 netlist of a W=128 write
    path, `write.ready` reaches only the writer's own registers and `room` (cfa9be2: also `held`, `held_named`,
    the gather buffer ...). That `room` equals write.ready & allocate.ready in every cycle is checked by
    tests/test_write_path.py's monitor."""
    from smartquant.fpga.system import board_params
    from smartquant.scripts.logic_depth import levels_from_register, synthesised_netlist
    reached = levels_from_register(synthesised_netlist(WritePath(board_params(128, 8, 64 * 1024))), "write__ready")
    # the writer's registers: named inside it, or after its ports (`write.ready`, `strobe_queued`)
    outside_writer = {name for name in reached if not name.startswith("axi_writer.")}
    assert "room" in outside_writer, sorted(reached)     # the test's own check: the flip-flop is traced
    assert outside_writer <= {"room", "write__ready", "strobe_queued"}, sorted(outside_writer)


def test_axi_writer_write_ready_is_a_register():
    """The AXI writer's stage-free test is a flip-flop (loaded with the test on the next cycle's flags): the write
    path's flush decision and its held write's acceptance start from a register, not from two LUT levels over
    the stage's flags (the FPGA build's critical path, fpga/README.md round 17). Its behaviour, one write taken
    in the cycle the last beat is queued, is tests/test_axi_writer.py's."""
    from smartquant.hdl.backend.axi_writer import AxiWriter
    report = analyse(AxiWriter(SMALL, 4))["write__ready"]
    assert report.unregistered_bits == 0 and not report.inputs, report
