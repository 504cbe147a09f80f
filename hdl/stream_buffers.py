"""Stream buffers that keep a port's handshake, or a queue's head, registered (issue 10).

`OutputBuffer` sits before an output port: `o.valid` and `o.payload` are flip-flops, and `i.ready` is a
flip-flop too, so the port's ready never reaches the logic upstream in the same cycle. One cycle from `i` to
`o`; one transfer per cycle while `o.ready` stays high. `ready_next` is the value `i.ready` takes at the next
edge, for a producer that keeps a ready of its own derived from it as a register (hdl/backend/axi_writer.py).

`InputSkid` sits behind an input port: `i.ready` (the port's ready) is a flip-flop, `o` shows the port's
message in the same cycle (no added latency). One transfer per cycle while `o.ready` stays high.

Both hold a second entry (the skid) for the message accepted in the cycle the consumer stalled: a registered
ready is one cycle late, so one message may arrive after the consumer stopped. `ready_reg` is kept as its own
register (not the inverse of the skid's valid) so that the port is driven by a flip-flop, not an inverter.

`HeadRegisterFifo` is amaranth's SyncFIFO (its w_data, w_en, w_rdy, r_data, r_en, r_rdy and level, not r_level /
w_level; the same cycle behaviour: an entry written at one edge is readable after it) with its oldest entry in a
register, so `r_data` is a flip-flop, not the LUT RAM's asynchronous read (timing round 21: a 75 MHz build's
worst path ran from the front end's read FIFO's read pointer through the LUT RAM into the read engine's region
compares).
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Mux, Elaboratable
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out


class OutputBuffer(wiring.Component):
    """Registered valid, payload and upstream ready. `loading` is 1 in a cycle in which the output register
    takes a message (the skid's, else the input's): a field that must be sampled when a message enters the
    output register (DevLoad, DEVICE.md §3) is registered beside it on `loading`."""

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})
        self.loading = Signal()
        self.ready_next = Signal()   # the value `i.ready` takes at the next clock edge

    def elaborate(self, platform):
        m = Module()
        out_valid = Signal()
        out_payload = Signal(self.shape)
        skid_valid = Signal()
        skid_payload = Signal(self.shape)
        in_ready = Signal(init=1)      # == ~skid_valid, as a flip-flop of its own
        take = self.i.valid & in_ready
        out_free = ~out_valid | self.o.ready
        m.d.comb += [
            self.i.ready.eq(in_ready),
            self.o.valid.eq(out_valid),
            self.o.payload.eq(out_payload),
            self.loading.eq(out_free & (skid_valid | take)),
            self.ready_next.eq(out_free | (in_ready & ~take)),
        ]
        with m.If(out_free):
            m.d.sync += [
                out_valid.eq(skid_valid | take),
                out_payload.eq(Mux(skid_valid, skid_payload, self.i.payload)),
                skid_valid.eq(0),
                in_ready.eq(1),
            ]
        with m.Elif(take):
            m.d.sync += [skid_valid.eq(1), in_ready.eq(0)]
        # the skid's payload follows the input while the skid is empty (it is read only while skid_valid, and it
        # holds the input of the cycle skid_valid is set): its clock enable is in_ready (== ~skid_valid), a
        # flip-flop, not the consumer's ready
        with m.If(in_ready):   # == ~skid_valid
            m.d.sync += skid_payload.eq(self.i.payload)
        return m


class InputSkid(wiring.Component):
    """Registered upstream ready, no added latency: `o` shows the skid's message, else the input's."""

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid_payload = Signal(self.shape)
        in_ready = Signal(init=1)      # == ~skid_valid, as a flip-flop of its own
        m.d.comb += [
            self.i.ready.eq(in_ready),
            self.o.valid.eq(skid_valid | self.i.valid),
            self.o.payload.eq(Mux(skid_valid, skid_payload, self.i.payload)),
        ]
        with m.If(skid_valid):
            with m.If(self.o.ready):
                m.d.sync += [skid_valid.eq(0), in_ready.eq(1)]
        with m.Elif(self.i.valid & in_ready & ~self.o.ready):
            m.d.sync += [skid_valid.eq(1), in_ready.eq(0)]
        # the skid's payload follows the input while the skid is empty (read only while skid_valid; it holds the
        # input of the cycle skid_valid is set): its clock enable is in_ready (== ~skid_valid), not the
        # consumer's ready (an FPGA build's critical path ended on this enable: the write path's flush decision
        # -> the RwD skid's payload)
        with m.If(in_ready):   # == ~skid_valid
            m.d.sync += skid_payload.eq(self.i.payload)
        return m


class HeadRegisterFifo(Elaboratable):
    """SyncFIFO's ports (w_data, w_en, w_rdy, r_data, r_en, r_rdy, level) and cycle behaviour, with `r_data` a
    register: the head holds the oldest entry, a SyncFIFO of depth - 1 behind it the rest. Whenever the head
    empties (or is read) it loads the queue's next entry at the same edge, from behind it or, when nothing waits
    there, the entry being written, so an entry is readable one edge after its write, as in SyncFIFO."""

    def __init__(self, *, width: int, depth: int):
        if depth < 1:
            raise ValueError(f"HeadRegisterFifo depth must be >= 1, got {depth}")
        self.width = width
        self.depth = depth
        self.w_data = Signal(width)
        self.w_en = Signal()
        self.w_rdy = Signal()
        self.r_data = Signal(width, name="head")     # the oldest entry's register
        self.r_en = Signal()
        self.r_rdy = Signal()
        self.level = Signal(range(depth + 1))

    def elaborate(self, platform):
        m = Module()
        head_valid = Signal()
        behind = SyncFIFO(width=self.width, depth=self.depth - 1)
        m.submodules.behind = behind
        write = self.w_en & self.w_rdy
        head_free = ~head_valid | self.r_en     # the head has no entry after this edge unless it loads one
        m.d.comb += [
            self.r_rdy.eq(head_valid),
            self.level.eq(behind.level + head_valid),
            self.w_rdy.eq(self.level != self.depth),
            # an entry goes behind the head unless the head takes it at once (nothing waits behind it)
            behind.w_data.eq(self.w_data),
            behind.w_en.eq(write & ~(head_free & ~behind.r_rdy)),
            behind.r_en.eq(head_free),
        ]
        with m.If(head_free):
            m.d.sync += [
                head_valid.eq(behind.r_rdy | write),
                self.r_data.eq(Mux(behind.r_rdy, behind.r_data, self.w_data)),
            ]
        return m
