"""AxiWriter: the write path's AXI write manager (AW and W issue, B responses), docs/DEVICE.md §4.

  write stream --> [issue stage: one write] --> AW buffer --> AXI AW
                                            \\-> W buffer  --> AXI W
  AXI B --> b stream (id, error)

A write is `1 << log2_beats` lines, line p on beat p (`data` holds beat p at bits [p*W, (p+1)*W), one WSTRB for
every beat): one INCR burst of all beats from `line` when log2_r = 0 (a raw line, or the plane lines of a block
at R = 1, which are consecutive), else one one-beat burst per beat at a stride of R = 1 << log2_r lines (a block
of a superblock with R > 1). Every burst of the write carries AWID = `id` (the write path's in-flight entry),
full-width AWSIZE and INCR.
The issue stage holds one write; it takes the next in the cycle it queues the current one's last AW and W, so
whole blocks stream at one beat per cycle. `write.ready` is a flip-flop, loaded with what the stage's free test
gives on the flags and buffer readies of the next cycle: the write path decides a flush and what its held write
does from it in the same cycle (an FPGA build's critical path ran from the stage's flags through that test, the
flush decision and the held write's acceptance, fpga/README.md round 17).
AW and W leave through OutputBuffers (hdl/stream_buffers.py, two entries each): AXI valid and payload are
registers, and no combinational path runs from AWREADY / WREADY back to `write.ready`.
B responses are handed on one cycle after they arrive, from a register (`b`; BREADY = 1 while the register is
empty or `b.ready`; the write path takes every one at once, so BREADY is constant 1 there).
`strobe_queued`: the WSTRB of the W beat queued in this cycle (valid = one was), for the bytes_strobed counter.
`busy`: a write is still in the stage or a buffer.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams
from smartquant.hdl.backend.axi import AxiWriteSignature, AXI_BURST_INCR, AXI_RESP_OKAY
from smartquant.hdl.stream_buffers import OutputBuffer
from smartquant.hdl.bits import mux_tree


def write_layout(params: ControllerParams, max_beats: int) -> data.StructLayout:
    """One write: `1 << log2_beats` beats (<= max_beats) from `line`, consecutive (log2_r = 0, one burst) or at a
    stride of 1 << log2_r lines (one burst per beat); beat p is data[p*W:(p+1)*W]; AWID `id`."""
    return data.StructLayout({"id": params.axi_id_bits, "line": params.line_bits, "log2_r": params.log2_r_bits, "log2_beats": params.log2_b_bits,
                              "data": max_beats * params.data_width, "strobe": params.line_bytes})


def b_response_layout(params: ControllerParams) -> data.StructLayout:
    """One B response: its BID and whether BRESP answered an error (not OKAY)."""
    return data.StructLayout({"id": params.axi_id_bits, "error": 1})


class AxiWriter(wiring.Component):
    """`write` (ready from registers only), `b` (B responses), `axi` (the write half of the AXI manager port);
    `max_beats`: the most beats a write has (the write path's b_max), a power of two <= 16."""

    def __init__(self, params: ControllerParams, max_beats: int):
        if max_beats < 1 or max_beats > 16 or max_beats & (max_beats - 1):
            self._MustUse__silence = True   # a refused instance is not an unused design
            raise ValueError(f"max_beats must be a power of two in 1..16, got {max_beats}")
        self.params = params
        self.max_beats = max_beats
        super().__init__({
            "write": In(stream.Signature(write_layout(params, max_beats))),
            "b": Out(stream.Signature(b_response_layout(params))),
            "axi": Out(AxiWriteSignature(params.dram_addr_bits, params.data_width, params.axi_id_bits)),
            "strobe_queued": Out(data.StructLayout({"valid": 1, "strobe": params.line_bytes})),
            "busy": Out(1),
        })
        self.ready_next = Signal()   # the value `write.ready` takes at the next clock edge

    def elaborate(self, platform):
        m = Module()
        p = self.params
        W = p.data_width
        lb = p.line_bits
        axi = self.axi
        write = self.write.p

        # ---- issue stage: the write whose AW and W beats are being queued -------------------------------
        stage_busy = Signal()
        stage_one_burst = Signal()
        stage_id = Signal(p.axi_id_bits)
        stage_first_line = Signal(lb)
        stage_log2_r = Signal(3)
        stage_n_beats = Signal(range(17))
        stage_n_bursts = Signal(range(17))
        stage_data = Signal(self.max_beats * W)
        stage_strobe = Signal(p.line_bytes)
        aw_sent = Signal(range(17))
        w_sent = Signal(range(17))
        # Flags of the counters kept as registers beside them (set on load, updated per AW / W queued), so the
        # stage's free test (write.ready, on the write path's flush decision) is an AND of flip-flops:
        # aw_pending = stage_busy & (aw_sent != stage_n_bursts), aw_last = (aw_sent + 1 == stage_n_bursts),
        # and likewise for W.
        aw_pending = Signal()
        w_pending = Signal()
        aw_last = Signal()
        w_last = Signal()

        aw_layout = data.StructLayout({"id": p.axi_id_bits, "line": lb, "len": 8})
        w_layout = data.StructLayout({"data": W, "strb": p.line_bytes, "last": 1})
        m.submodules.aw_buffer = aw_buffer = OutputBuffer(aw_layout)
        m.submodules.w_buffer = w_buffer = OutputBuffer(w_layout)
        aw_out = aw_buffer.o.p
        w_out = w_buffer.o.p
        m.d.comb += [
            axi.awvalid.eq(aw_buffer.o.valid),
            aw_buffer.o.ready.eq(axi.awready),
            axi.awid.eq(aw_out.id),
            axi.awaddr.eq(Cat(Const(0, p.line_offset_bits), aw_out.line)),
            axi.awlen.eq(aw_out.len),
            axi.awsize.eq(p.line_offset_bits),
            axi.awburst.eq(AXI_BURST_INCR),
            axi.wvalid.eq(w_buffer.o.valid),
            w_buffer.o.ready.eq(axi.wready),
            axi.wdata.eq(w_out.data),
            axi.wstrb.eq(w_out.strb),
            axi.wlast.eq(w_out.last),
        ]

        # The flags' next values, computed once: the registers take them, and so does the stage's free test
        # for the next cycle (a load takes precedence over the last AW / W of the write it replaces).
        load = Signal()
        one_burst = write.log2_r == 0
        single_beat = write.log2_beats == 0
        aw_queued = aw_buffer.i.valid & aw_buffer.i.ready
        w_queued = w_buffer.i.valid & w_buffer.i.ready
        aw_pending_next = Mux(load, 1, Mux(aw_queued, ~aw_last, aw_pending))
        aw_last_next = Mux(load, one_burst | single_beat, Mux(aw_queued, aw_sent + 2 == stage_n_bursts, aw_last))
        w_pending_next = Mux(load, 1, Mux(w_queued, ~w_last, w_pending))
        w_last_next = Mux(load, single_beat, Mux(w_queued, w_sent + 2 == stage_n_beats, w_last))
        m.d.sync += [aw_pending.eq(aw_pending_next), aw_last.eq(aw_last_next),
                     w_pending.eq(w_pending_next), w_last.eq(w_last_next)]

        aw_next = Signal(aw_layout)
        m.d.comb += [
            aw_next.id.eq(stage_id),
            aw_next.line.eq((stage_first_line + (aw_sent << stage_log2_r))[:lb]),
            aw_next.len.eq(Mux(stage_one_burst, stage_n_beats - 1, 0)),
            aw_buffer.i.p.eq(aw_next),
            aw_buffer.i.valid.eq(aw_pending),
        ]
        with m.If(aw_queued):
            m.d.sync += aw_sent.eq(aw_sent + 1)

        w_next = Signal(w_layout)
        m.d.comb += [
            # beat w_sent of the stage: a mux tree of the max_beats words (word_select on a register this wide
            # became a shifter over all of it: 15.4k LUT4 at W=512, b_max=16)
            w_next.data.eq(mux_tree([stage_data[beat * W:(beat + 1) * W] for beat in range(self.max_beats)],
                                    w_sent)),
            w_next.strb.eq(stage_strobe),
            w_next.last.eq(~stage_one_burst | w_last),
            w_buffer.i.p.eq(w_next),
            w_buffer.i.valid.eq(w_pending),
        ]
        with m.If(w_queued):
            m.d.sync += w_sent.eq(w_sent + 1)
        m.d.comb += [self.strobe_queued.valid.eq(w_queued), self.strobe_queued.strobe.eq(stage_strobe)]

        # The stage takes the next write once this cycle queues the last AW and W of the current one:
        # stage_free == (~aw_pending | (aw_last & aw_buffer.i.ready)) & (~w_pending | (w_last & w_buffer.i.ready)),
        # kept as a flip-flop loaded with that test on the next values (all 0 after reset: free).
        def free(aw_pending, aw_last, aw_ready, w_pending, w_last, w_ready):
            return (~aw_pending | (aw_last & aw_ready)) & (~w_pending | (w_last & w_ready))

        stage_free = Signal(init=1)
        m.d.comb += self.ready_next.eq(free(aw_pending_next, aw_last_next, aw_buffer.ready_next,
                                            w_pending_next, w_last_next, w_buffer.ready_next))
        m.d.sync += stage_free.eq(self.ready_next)
        m.d.comb += [
            self.write.ready.eq(stage_free),
            load.eq(self.write.valid & stage_free),
        ]
        n_beats = Const(1, 5) << write.log2_beats
        # The stage's payload registers take `write.p` whenever the stage is free, loaded or not (a stage that
        # does not load goes idle and nothing reads them until the next load): their clock enable is stage_free,
        # an AND of flip-flops, not write.valid (the write path's flush decision); the flags and counters load
        # on `load`.
        with m.If(stage_free):
            m.d.sync += [
                stage_id.eq(write.id),
                stage_one_burst.eq(one_burst),
                stage_first_line.eq(write.line),
                stage_log2_r.eq(write.log2_r),
                stage_n_beats.eq(n_beats),
                stage_n_bursts.eq(Mux(one_burst, 1, n_beats)),
                stage_data.eq(write.data),
                stage_strobe.eq(write.strobe),
            ]
        with m.If(load):
            m.d.sync += [
                stage_busy.eq(1),
                aw_sent.eq(0),
                w_sent.eq(0),
            ]
        with m.Elif(stage_free):
            m.d.sync += stage_busy.eq(0)

        # ---- B responses: registered once (BID ran through the write table's entry decode and picks into
        # its done and error registers: 11 LUT levels, fpga/README.md round 17). BREADY is 1 while the register
        # is empty or its response is taken: with a consumer that takes every B (WriteTable) it is constant 1.
        b_valid = Signal()
        b_id = Signal(p.axi_id_bits)
        b_error = Signal()
        b_register_free = ~b_valid | self.b.ready
        with m.If(b_register_free):
            m.d.sync += [b_valid.eq(axi.bvalid), b_id.eq(axi.bid), b_error.eq(axi.bresp != AXI_RESP_OKAY)]
        m.d.comb += [
            self.b.valid.eq(b_valid),
            self.b.p.id.eq(b_id),
            self.b.p.error.eq(b_error),
            axi.bready.eq(b_register_free),
        ]

        m.d.comb += self.busy.eq(stage_busy | aw_buffer.o.valid | w_buffer.o.valid | ~aw_buffer.i.ready
                                 | ~w_buffer.i.ready)
        return m
