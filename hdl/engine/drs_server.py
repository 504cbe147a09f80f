"""DrsServer: the read engine's response side (serve FIFO, poison column, raw lines, S2M DRS), docs/DEVICE.md §3.

  entry (dispatched read) --> serve FIFO --[serve]--> DRS register --> output buffer --> drs
  list_poison_late (a cycle later) --> poison column ^    ^   \\--> buffer: address, read, take / ready, error, data
  raw_line (R beats of raw reads) --> raw FIFO -/

- An entry says what a read is served from (`kind`): a decode error (all-1s data, SERVE_NXM), DRAM through the
  raw line FIFO (SERVE_RAW), the block buffer (SERVE_BUFFER, at `address`), or a hole of a region (0,
  SERVE_HOLE); and its opcode, tag, LD-ID and own poison bit (holes and decode errors, by the CSRs).
- serve pops the FIFO in order when the head's line is there (the buffer's `ready`, or a raw line) and loads the
  DRS register (data from the buffer's read port, the raw line FIFO or a constant), which passes the response to
  the output buffer that drives S2M DRS from registers. A buffer line is servable from the cycle after it is
  written (block_buffer.py) and an empty raw FIFO is bypassed (R beat -> DRS register in one cycle).
- Poison of a mapped read: the poison list's answer for the entry written in a cycle comes a cycle later
  (`list_poison_late`, from the list's flip-flops of every record's held bits: its set tests are a long cone)
  and is written then into a column beside the serve FIFO, one bit per entry; the serve stage reads the head's
  bit, or the answer itself when the head is the entry written in the previous cycle. A served line fetched
  with a backend error (the buffer's `error`, the raw beat's flag) is poisoned too; `poisoned_read` pulses for
  every mapped (raw or buffer) read served with poison.
- DevLoad (the `dev_load` input, computed by the top from the port occupancy, DEVICE.md §3) is sampled when the
  DRS enters the output register.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux, unsigned
from amaranth.lib.memory import Memory
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams, META_FIELD_NO_OP
from smartquant.hdl.cxl.messages import drs_layout
from smartquant.hdl.engine.block_buffer import buffer_line_layout, buffer_serve_signature
from smartquant.hdl.stream_buffers import OutputBuffer


# what a queued read is served from: a decode error (all-1s data), DRAM through the raw FIFO, the block buffer,
# or a hole of a region (the hole fill, 0); DEVICE.md §3
SERVE_NXM, SERVE_RAW, SERVE_BUFFER, SERVE_HOLE = 0, 1, 2, 3
# cycles from a line being servable to S2M DRS valid: the DRS register (the buffer's read cycle), then the output
# buffer that keeps S2M DRS registered
DRS_OUTPUT_CYCLES = 2


def serve_entry_layout(params: ControllerParams) -> data.StructLayout:
    """A dispatched read: what it is served from (SERVE_*), the buffer line (SERVE_BUFFER), its DRS header and
    its own poison bit (the poison list's answer comes a cycle later, on `list_poison_late`)."""
    return data.StructLayout({"kind": 2, "address": buffer_line_layout(params), "tag": params.tag_bits,
                              "ld_id": params.ld_id_bits, "opcode": 3, "poison": 1})


def raw_line_layout(params: ControllerParams) -> data.StructLayout:
    """An R beat of a raw read: the line and whether RRESP answered an error."""
    return data.StructLayout({"data": params.data_width, "error": 1})


class DrsServer(wiring.Component):
    """`entry` (ready = room in the serve FIFO), `list_poison_late` (the poison list's answer for the entry
    written in the previous cycle),
    `raw_line`, `buffer` (the block buffer's serve side), `drs` (registered), `dev_load`, `poisoned_read`
    (event), `busy`. `depth`: serve FIFO entries."""

    def __init__(self, params: ControllerParams, depth: int):
        self.params = params
        self.depth = depth
        super().__init__({
            "entry": In(stream.Signature(serve_entry_layout(params))),
            "list_poison_late": In(1),
            # the entry written now ignores the list's answer (the read engine: not a mapped read), registered
            # here to meet that answer a cycle later. Kept apart from the answer so that no gate sits between
            # the poison list's set tests and its registers (timing rounds 12a, 19)
            "list_ignore": In(1),
            "raw_line": In(stream.Signature(raw_line_layout(params))),
            "buffer": Out(buffer_serve_signature(params)),
            "drs": Out(stream.Signature(drs_layout(params))),
            "dev_load": In(2),
            "poisoned_read": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        serve_depth = self.depth
        # The serve queue: a head register in front of a LUT-RAM FIFO (the body), so that the serve test (the
        # buffer's `ready` for the head's slot / generation / line) and `advance` start at flip-flops, not at the
        # FIFO's read address and LUT-RAM (an FPGA build's critical path ran serve FIFO read address -> LUT-RAM
        # -> lines_written compare -> advance -> buffer read enable / slot_held, timing round 13a). An entry
        # written while only the head (or nothing) is queued and the head is empty or leaving goes straight into
        # the head, so an entry is servable in the cycle after it is written, as with the plain SyncFIFO before.
        # The body is a ring of serve_depth entries indexed like the poison column: every entry is written at
        # `dispatch_index` (a write enable of dispatch alone), the head reloads from the entry after it
        # (`next_index`, a register) when more than the head is queued. `count` (entries queued, head included,
        # a register) keeps the capacity serve_depth and says whether the body holds the next entry (count >= 2).
        entry_layout_size = serve_entry_layout(p).size
        m.submodules.serve_ring = serve_ring = Memory(shape=unsigned(entry_layout_size), depth=serve_depth, init=[])
        ring_write = serve_ring.write_port()
        ring_read = serve_ring.read_port(domain="comb")
        dispatch_index = Signal(range(serve_depth))     # the entry the next dispatch writes
        serve_index = Signal(range(serve_depth))        # the head's entry
        next_index = Signal(range(serve_depth), init=1 % serve_depth)   # the entry after the head
        head = Signal(entry_layout_size)
        head_valid = Signal()    # always count != 0, kept as its own flip-flop so `advance` and `take` start at one
        count = Signal(range(serve_depth + 1))
        advance = Signal()
        entry_written = self.entry.valid & self.entry.ready
        body_ready = Signal()
        m.d.comb += [
            self.entry.ready.eq(count != serve_depth),
            body_ready.eq(count >= 2),
            ring_write.addr.eq(dispatch_index),
            ring_write.data.eq(self.entry.payload),
            ring_write.en.eq(entry_written),
            ring_read.addr.eq(next_index),
        ]
        with m.If(advance | ~head_valid):
            m.d.sync += [head_valid.eq(body_ready | entry_written),
                         head.eq(Mux(body_ready, ring_read.data, self.entry.payload))]
        with m.If(entry_written & ~advance):
            m.d.sync += count.eq(count + 1)
        with m.Elif(advance & ~entry_written):
            m.d.sync += count.eq(count - 1)
        with m.If(advance):
            m.d.sync += [serve_index.eq(next_index),
                         next_index.eq(Mux(next_index == serve_depth - 1, 0, next_index + 1))]

        # The poison list's answer (its set tests are a long cone) comes a cycle after dispatch, from the list's
        # own registers, and is written then into a column beside the serve FIFO, one bit per entry, indexed in
        # step with the FIFO; the serve stage reads the head's bit, or the answer itself when the head is the
        # read dispatched in the previous cycle. The answer is the list's state in the dispatch cycle.
        late_valid = Signal()                           # a read was dispatched in the previous cycle ...
        late_index = Signal(range(serve_depth))         # ... into this serve FIFO entry ...
        late_ignore = Signal()                          # ... and ignores the list's answer (`list_ignore`)
        late_answer = Signal()
        list_poison = Signal(serve_depth)
        m.d.sync += [late_valid.eq(entry_written), late_index.eq(dispatch_index), late_ignore.eq(self.list_ignore)]
        m.d.comb += late_answer.eq(self.list_poison_late & ~late_ignore)
        with m.If(entry_written):
            m.d.sync += dispatch_index.eq(Mux(dispatch_index == serve_depth - 1, 0, dispatch_index + 1))
        with m.If(late_valid):
            m.d.sync += list_poison.bit_select(late_index, 1).eq(late_answer)
        head_list_poison = Signal()
        m.d.comb += head_list_poison.eq(Mux(late_valid & (late_index == serve_index), late_answer,
                                            list_poison.bit_select(serve_index, 1)))

        # raw line FIFO entries: the line and its RRESP error flag
        m.submodules.raw_fifo = raw_fifo = SyncFIFO(width=p.data_width + 1, depth=2)
        raw_beat = Signal()     # a raw line arrives on R this cycle
        raw_bypass = Signal()   # ... and goes straight into the DRS register (raw FIFO empty, serve waiting)
        m.d.comb += [
            self.raw_line.ready.eq(raw_fifo.w_rdy),
            raw_fifo.w_data.eq(Cat(self.raw_line.p.data, self.raw_line.p.error)),
            raw_beat.eq(self.raw_line.valid & raw_fifo.w_rdy),
            raw_fifo.w_en.eq(raw_beat & ~raw_bypass),
        ]

        # ---- serve -------------------------------------------------------------------------------------
        serve = Signal(serve_entry_layout(p))
        m.d.comb += [serve.eq(head), self.buffer.address.eq(serve.address)]
        serve_ready = Signal()
        with m.Switch(serve.kind):
            with m.Case(SERVE_RAW):
                # the raw FIFO is empty only if the arriving raw line is the oldest one still owed
                m.d.comb += serve_ready.eq(raw_fifo.r_rdy | raw_beat)
            with m.Case(SERVE_BUFFER):
                m.d.comb += serve_ready.eq(self.buffer.ready)
            with m.Default():
                m.d.comb += serve_ready.eq(1)

        # DRS register (the buffer's read cycle) -> output buffer: S2M DRS valid, payload and data are
        # registers, and DRS.ready reaches only the output buffer.
        m.submodules.drs_out = drs_out = OutputBuffer(drs_layout(p))
        drs_valid = Signal()
        drs_payload = Signal(drs_layout(p))
        drs_kind = Signal(2)
        raw_data = Signal(p.data_width)
        backend_error = Signal()   # the line served now was fetched with an error response
        m.d.comb += backend_error.eq(Mux(serve.kind == SERVE_BUFFER, self.buffer.error,
                                         Mux(serve.kind == SERVE_RAW,
                                             Mux(raw_fifo.r_rdy, raw_fifo.r_data[-1], self.raw_line.p.error), 0)))
        serve_poison = Signal()     # the serve entry's own poison (holes, NXM) or the poison list's answer
        m.d.comb += serve_poison.eq(serve.poison | head_list_poison)
        # `take` and the raw FIFO's read enable are written per kind, without the other kinds' ready terms: the
        # raw bypass (an R beat in this cycle, a long path from the AXI R channel) then reaches only `advance`,
        # not the buffer's release and `slot_held` (the same functions: `take` is advance for a buffer head, and
        # a read enable of the empty raw FIFO does nothing)
        out_free = Signal()     # the DRS register is empty or passes its response on: flip-flops only
        m.d.comb += [
            out_free.eq(~drs_valid | drs_out.i.ready),
            advance.eq(head_valid & serve_ready & out_free),
            raw_fifo.r_en.eq(head_valid & (serve.kind == SERVE_RAW) & out_free),
            raw_bypass.eq(advance & (serve.kind == SERVE_RAW) & ~raw_fifo.r_rdy),
            self.buffer.take.eq(head_valid & (serve.kind == SERVE_BUFFER) & self.buffer.ready & out_free),
            self.buffer.read.eq(out_free),
        ]
        # The DRS register loads the head's fields and line whenever it is free, and only its valid bit waits
        # for the serve test (`advance`): a register loaded without `advance` is empty in the next cycle, so
        # what it took is never used. The serve test thus reaches one flip-flop here instead of the clock
        # enables of the payload, the raw line and the buffer's read register (the FPGA builds' worst paths of
        # timing round 19: the head -> the serve test -> those enables, 19-23 ns).
        with m.If(out_free):
            m.d.sync += [
                drs_valid.eq(advance),
                drs_kind.eq(serve.kind),
                drs_payload.opcode.eq(serve.opcode),
                drs_payload.tag.eq(serve.tag),
                drs_payload.ld_id.eq(serve.ld_id),
                drs_payload.poison.eq(serve_poison | backend_error),
                raw_data.eq(Mux(raw_fifo.r_rdy, raw_fifo.r_data[:p.data_width], self.raw_line.p.data)),
            ]
        # DevLoad sampled when the DRS enters the output register (DEVICE.md §3), then held with it
        drs_dev_load = Signal(2)
        with m.If(drs_out.loading):
            m.d.sync += drs_dev_load.eq(self.dev_load)
        m.d.comb += [
            drs_out.i.valid.eq(drs_valid),
            drs_out.i.p.eq(drs_payload.as_value()),
            drs_out.i.p.data.eq(Mux(drs_kind == SERVE_BUFFER, self.buffer.data,
                                    Mux(drs_kind == SERVE_RAW, raw_data,
                                        Mux(drs_kind == SERVE_NXM, Const((1 << p.data_width) - 1, p.data_width), 0)))),
            self.drs.valid.eq(drs_out.o.valid),
            self.drs.p.eq(drs_out.o.p),
            drs_out.o.ready.eq(self.drs.ready),
            self.drs.p.dev_load.eq(drs_dev_load),
            self.drs.p.meta_field.eq(META_FIELD_NO_OP),
            self.drs.p.meta_value.eq(0),
            # a mapped read answered with poison (poison list or backend error), counted when served
            self.poisoned_read.eq(advance & ((serve.kind == SERVE_RAW) | (serve.kind == SERVE_BUFFER))
                                  & (serve_poison | backend_error)),
            self.busy.eq(head_valid | drs_valid | drs_out.o.valid | ~drs_out.i.ready),
        ]
        return m
