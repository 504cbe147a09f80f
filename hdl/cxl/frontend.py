"""CXL.mem front end: M2S Req split (docs/DEVICE.md §4) and the S2M NDR arbiter.

`ReqFrontEnd` accepts Req messages and sorts them by opcode:
- MemRd, MemRdData -> `read` stream (address, tag, LD-ID) through a FIFO of `request_depth` entries (bypassed
  while empty); the read engine decodes the address at the stream head.
- MemInv, MemInvNT, MemClnEvct and reserved opcodes -> `cmp` stream (tag, LD-ID) for an NDR Cmp; a reserved
  opcode is still answered and counts `req_bad_opcode`.
- MemSpecRd -> dropped (allowed for a Type-3 device), counted.
Req.ready is 1 while both FIFOs have room (it does not look at the opcode, so it never depends on valid).

`NdrArbiter` merges the front end's Cmp stream with the write path's NDR stream into S2M NDR (round-robin
between the two, one registered output; dev_load is sampled when a message enters it).
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Mux, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams, Counter, N_COUNTERS, ReqOpcode, NdrOpcode, META_FIELD_NO_OP
from smartquant.hdl.cxl.messages import req_layout, ndr_layout


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
        # Cmp-only requests are rare; a small FIFO is enough to decouple them from NDR backpressure.
        m.submodules.cmp_fifo = cmp_fifo = SyncFIFO(width=cmp_request_layout().size, depth=4)

        req = self.req.p
        opcode = req.opcode
        is_read = (opcode == ReqOpcode.MEM_RD) | (opcode == ReqOpcode.MEM_RD_DATA)
        is_spec = opcode == ReqOpcode.MEM_SPEC_RD
        accept = Signal()
        # An empty FIFO is bypassed: a read goes to the engine in the cycle it is accepted (one cycle less
        # from Req to AR). read.valid depends on req.valid, never on a ready.
        bypass = Signal()
        m.d.comb += [
            self.req.ready.eq(read_fifo.w_rdy & cmp_fifo.w_rdy),
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
        out_valid = Signal()
        out_payload = Signal(ndr_layout(self.params))
        prefer_write = Signal()   # round-robin: the source not served last goes first
        load = ~out_valid | self.ndr.ready
        take_write = Signal()
        take_cmp = Signal()
        m.d.comb += [
            take_write.eq(load & self.write_ndr.valid & (prefer_write | ~self.cmp.valid)),
            take_cmp.eq(load & self.cmp.valid & ~take_write),
            self.write_ndr.ready.eq(take_write),
            self.cmp.ready.eq(take_cmp),
            self.ndr.valid.eq(out_valid),
            self.ndr.p.eq(out_payload),
        ]
        with m.If(load):
            m.d.sync += out_valid.eq(take_write | take_cmp)
        with m.If(take_write):
            m.d.sync += [out_payload.eq(self.write_ndr.p), prefer_write.eq(0)]
        with m.Elif(take_cmp):
            m.d.sync += [
                out_payload.opcode.eq(NdrOpcode.CMP),
                out_payload.tag.eq(self.cmp.p.tag),
                out_payload.ld_id.eq(self.cmp.p.ld_id),
                prefer_write.eq(1),
            ]
        with m.If(take_write | take_cmp):
            # DevLoad sampled when the message enters the output register, then held with the payload.
            m.d.sync += out_payload.dev_load.eq(self.dev_load)
        # Every NDR carries MetaField = No-Op, MetaValue = 0 (DEVICE.md §3), whoever produced it.
        m.d.comb += [self.ndr.p.meta_field.eq(META_FIELD_NO_OP), self.ndr.p.meta_value.eq(0)]
        return m
