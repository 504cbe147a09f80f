"""Two-entry stream buffers that keep a port's handshake registered (issue 10, item 2).

`OutputBuffer` sits before an output port: `o.valid` and `o.payload` are flip-flops, and `i.ready` is a
flip-flop too, so the port's ready never reaches the logic upstream in the same cycle. One cycle from `i` to
`o`; one transfer per cycle while `o.ready` stays high. `ready_next` is the value `i.ready` takes at the next
edge, for a producer that keeps a ready of its own derived from it as a register (hdl/backend/axi_writer.py).

`InputSkid` sits behind an input port: `i.ready` (the port's ready) is a flip-flop, `o` shows the port's
message in the same cycle (no added latency). One transfer per cycle while `o.ready` stays high.

Both hold a second entry (the skid) for the message accepted in the cycle the consumer stalled: a registered
ready is one cycle late, so one message may arrive after the consumer stopped. `ready_reg` is kept as its own
register (not the inverse of the skid's valid) so that the port is driven by a flip-flop, not an inverter.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Mux
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
