"""CXL.mem front end: M2S Req split (docs/DEVICE.md §4) and the S2M NDR arbiter.

`ReqFrontEnd` accepts Req messages and sorts them by opcode:
- MemRd, MemRdData -> `read` stream (address, tag, LD-ID) through a FIFO of `request_depth` entries (bypassed
  while empty); the read engine decodes the address at the stream head.
- MemInv, MemInvNT, MemClnEvct and reserved opcodes -> `cmp` stream (tag, LD-ID) for an NDR Cmp; a reserved
  opcode is still answered and counts `req_bad_opcode`.
- MemSpecRd -> dropped (allowed for a Type-3 device), counted.
Req.ready is 1 while both FIFOs have room (a register; it does not look at the opcode).

`NdrArbiter` merges the front end's Cmp stream with the write path's NDR stream into S2M NDR (round-robin
between the two, into an OutputBuffer: valid, payload and the buffer's ready are registers; dev_load is sampled
when a message enters the output register).
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Mux, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams, Counter, N_COUNTERS, ReqOpcode, NdrOpcode, META_FIELD_NO_OP
from smartquant.hdl.cxl.messages import req_layout, ndr_layout
from smartquant.hdl.stream_buffers import OutputBuffer


def read_request_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"address": params.message_address_bits, "tag": 16, "ld_id": 4})


def cmp_request_layout() -> data.StructLayout:
    return data.StructLayout({"tag": 16, "ld_id": 4})


# Req opcode -> the counter it increments; anything else is a reserved opcode.
REQ_OPCODE_COUNTERS = {
    ReqOpcode.MEM_INV: Counter.REQ_MEM_INV,
    ReqOpcode.MEM_RD: Counter.REQ_MEM_RD,
    ReqOpcode.MEM_RD_DATA: Counter.REQ_MEM_RD_DATA,
    ReqOpcode.MEM_SPEC_RD: Counter.REQ_MEM_SPEC_RD,
    ReqOpcode.MEM_INV_NT: Counter.REQ_MEM_INV_NT,
    ReqOpcode.MEM_CLN_EVCT: Counter.REQ_MEM_CLN_EVCT,
}


CMP_FIFO_DEPTH = 4   # Cmp-only requests are rare; a small FIFO decouples them from NDR back-pressure


class ReqFrontEnd(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        super().__init__({
            "req": In(stream.Signature(req_layout(params))),
            "read": Out(stream.Signature(read_request_layout(params))),
            "cmp": Out(stream.Signature(cmp_request_layout())),
            "events": Out(data.ArrayLayout(unsigned(8), N_COUNTERS)),
            "busy": Out(1),   # a request waits in a FIFO
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        read_layout = read_request_layout(p)
        m.submodules.read_fifo = read_fifo = SyncFIFO(width=read_layout.size, depth=p.request_depth)
        m.submodules.cmp_fifo = cmp_fifo = SyncFIFO(width=cmp_request_layout().size, depth=CMP_FIFO_DEPTH)

        req = self.req.p
        opcode = req.opcode
        is_read = (opcode == ReqOpcode.MEM_RD) | (opcode == ReqOpcode.MEM_RD_DATA)
        is_spec = opcode == ReqOpcode.MEM_SPEC_RD
        accept = Signal()
        # An empty FIFO is bypassed: a read goes to the engine in the cycle it is accepted (one cycle less
        # from Req to AR). read.valid depends on req.valid, never on a ready.
        bypass = Signal()
        # Req.ready is a flip-flop: both FIFOs have room after this cycle's writes and reads (the same value as
        # read_fifo.w_rdy & cmp_fifo.w_rdy, one register earlier, so the port is not driven by a comparator).
        req_ready = Signal(init=1)
        read_level = read_fifo.level + (read_fifo.w_en & read_fifo.w_rdy) - (read_fifo.r_en & read_fifo.r_rdy)
        cmp_level = cmp_fifo.level + (cmp_fifo.w_en & cmp_fifo.w_rdy) - (cmp_fifo.r_en & cmp_fifo.r_rdy)
        m.d.sync += req_ready.eq((read_level != p.request_depth) & (cmp_level != CMP_FIFO_DEPTH))
        m.d.comb += [
            self.req.ready.eq(req_ready),
            accept.eq(self.req.valid & self.req.ready),
        ]
        read_entry = Signal(read_layout)
        cmp_entry = Signal(cmp_request_layout())
        m.d.comb += [
            read_entry.address.eq(req.address), read_entry.tag.eq(req.tag), read_entry.ld_id.eq(req.ld_id),
            cmp_entry.tag.eq(req.tag), cmp_entry.ld_id.eq(req.ld_id),
            read_fifo.w_data.eq(read_entry),
            read_fifo.w_en.eq(accept & is_read & ~bypass),
            cmp_fifo.w_data.eq(cmp_entry),
            cmp_fifo.w_en.eq(accept & ~is_read & ~is_spec),
            self.read.valid.eq(read_fifo.r_rdy | (self.req.valid & self.req.ready & is_read)),
            self.read.p.eq(Mux(read_fifo.r_rdy, read_fifo.r_data, read_entry)),
            read_fifo.r_en.eq(self.read.ready),
            bypass.eq(~read_fifo.r_rdy & self.read.ready),
            self.cmp.valid.eq(cmp_fifo.r_rdy),
            self.cmp.p.eq(cmp_fifo.r_data),
            cmp_fifo.r_en.eq(self.cmp.ready),
            self.busy.eq(read_fifo.r_rdy | cmp_fifo.r_rdy),
        ]

        known = Signal()
        for code, counter in REQ_OPCODE_COUNTERS.items():
            with m.If(accept & (opcode == code)):
                m.d.comb += [self.events[counter].eq(1), known.eq(1)]
        with m.If(accept & ~known):
            m.d.comb += self.events[Counter.REQ_BAD_OPCODE].eq(1)
        return m


class NdrArbiter(wiring.Component):
    """Round-robin merge of front-end Cmp requests and write-path NDRs into one registered S2M NDR stream."""

    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        super().__init__({
            "cmp": In(stream.Signature(cmp_request_layout())),
            "write_ndr": In(stream.Signature(ndr_layout(params))),
            "ndr": Out(stream.Signature(ndr_layout(params))),
            "dev_load": In(2),
        })

    def elaborate(self, platform):
        m = Module()
        # The output buffer registers valid, payload and its own ready: S2M NDR.ready reaches only the buffer,
        # never the write path's or the front end's handshakes (no path from an input to M2S RwD.ready).
        m.submodules.output = output = OutputBuffer(ndr_layout(self.params))
        prefer_write = Signal()   # round-robin: the source not served last goes first
        take_write = Signal()
        take_cmp = Signal()
        m.d.comb += [
            take_write.eq(output.i.ready & self.write_ndr.valid & (prefer_write | ~self.cmp.valid)),
            take_cmp.eq(output.i.ready & self.cmp.valid & ~take_write),
            self.write_ndr.ready.eq(take_write),
            self.cmp.ready.eq(take_cmp),
            output.i.valid.eq(take_write | take_cmp),
        ]
        with m.If(take_write):
            m.d.comb += output.i.p.eq(self.write_ndr.p)
            m.d.sync += prefer_write.eq(0)
        with m.Else():
            m.d.comb += [
                output.i.p.opcode.eq(NdrOpcode.CMP),
                output.i.p.tag.eq(self.cmp.p.tag),
                output.i.p.ld_id.eq(self.cmp.p.ld_id),
            ]
        with m.If(take_cmp):
            m.d.sync += prefer_write.eq(1)
        # DevLoad sampled when the message enters the output register, then held with the payload.
        dev_load = Signal(2)
        with m.If(output.loading):
            m.d.sync += dev_load.eq(self.dev_load)
        # Every NDR carries MetaField = No-Op, MetaValue = 0 (DEVICE.md §3), whoever produced it.
        m.d.comb += [
            self.ndr.valid.eq(output.o.valid),
            self.ndr.p.eq(output.o.p),
            output.o.ready.eq(self.ndr.ready),
            self.ndr.p.dev_load.eq(dev_load),
            self.ndr.p.meta_field.eq(META_FIELD_NO_OP),
            self.ndr.p.meta_value.eq(0),
        ]
        return m
