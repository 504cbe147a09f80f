"""CXL.mem front end: M2S Req split (docs/DEVICE.md §4) and the S2M NDR arbiter.

`ReqFrontEnd` accepts Req messages and sorts them by opcode:
- MemRd, MemRdData and their TEE-intent variants (params.REQ_READS) -> `read` stream (address, tag, LD-ID)
  through a FIFO of `request_depth` entries (its head a register; bypassed while empty); the read engine decodes
  the address at the stream head, and its read.ready comes from its own flip-flops.
- MemSpecRd, MemSpecRdTEE, MemRdFwd, MemWrFwd (params.REQ_NO_RESPONSE) -> dropped: they get no response.
- everything else (MemInv, MemInvNT, MemClnEvct, TEUpdate and reserved opcodes) -> `cmp` stream (tag, LD-ID) for
  an NDR Cmp; an opcode the device does not implement is still answered and counts `req_bad_opcode`.
Req.ready is 1 while both FIFOs have room (a register; it does not look at the opcode). The `fill` input (reads
that came on RwD, see below) is merged into `read` ahead of the Req reads: a fill waits at most while the read
engine is not ready.

MemRdFill and MemRdFillTEE (reads carried on RwD, answered like MemRd with a DRS) leave the write path
(hdl/engine/write_path.py) behind its RwD port skid as the `fill` stream (address, tag, LD-ID).

`NdrArbiter` merges the front end's Cmp stream with the write path's NDR stream (behind an InputSkid, so the
write path sees a registered ready) into S2M NDR (round-robin between the two, into an OutputBuffer: valid,
payload and the buffer's ready are registers; dev_load is sampled when a message enters the output register).
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Mux, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from smartquant.params import (
    ControllerParams, Counter, N_COUNTERS, ReqOpcode, NdrOpcode, META_FIELD_NO_OP, REQ_READS, REQ_NO_RESPONSE,
)
from smartquant.hdl.cxl.messages import req_layout, ndr_layout
from smartquant.hdl.stream_buffers import HeadRegisterFifo, InputSkid, OutputBuffer


def read_request_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"address": params.message_address_bits, "tag": params.tag_bits,
                              "ld_id": params.ld_id_bits})


def cmp_request_layout() -> data.StructLayout:
    return data.StructLayout({"tag": ControllerParams.tag_bits, "ld_id": ControllerParams.ld_id_bits})


# Req opcode -> the counter it increments (TEE-intent variants count with their plain opcode); anything else
# (MemRdFwd, MemWrFwd, TEUpdate, reserved) counts req_bad_opcode.
REQ_OPCODE_COUNTERS = {
    ReqOpcode.MEM_INV: Counter.REQ_MEM_INV,
    ReqOpcode.MEM_RD: Counter.REQ_MEM_RD,
    ReqOpcode.MEM_RD_TEE: Counter.REQ_MEM_RD,
    ReqOpcode.MEM_RD_DATA: Counter.REQ_MEM_RD_DATA,
    ReqOpcode.MEM_RD_DATA_TEE: Counter.REQ_MEM_RD_DATA,
    ReqOpcode.MEM_SPEC_RD: Counter.REQ_MEM_SPEC_RD,
    ReqOpcode.MEM_SPEC_RD_TEE: Counter.REQ_MEM_SPEC_RD,
    ReqOpcode.MEM_INV_NT: Counter.REQ_MEM_INV_NT,
    ReqOpcode.MEM_CLN_EVCT: Counter.REQ_MEM_CLN_EVCT,
}


def opcode_in(opcode, opcodes):
    """opcode is one of `opcodes` (a comparison per member, ORed)."""
    result = 0
    for code in sorted(opcodes):
        result = result | (opcode == code)
    return result


CMP_FIFO_DEPTH = 4   # Cmp-only requests are rare; a small FIFO decouples them from NDR back-pressure


class ReqFrontEnd(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        super().__init__({
            "req": In(stream.Signature(req_layout(params))),
            "fill": In(stream.Signature(read_request_layout(params))),   # reads from RwD (WritePath.fill)
            "read": Out(stream.Signature(read_request_layout(params))),
            "cmp": Out(stream.Signature(cmp_request_layout())),
            "events": Out(data.ArrayLayout(unsigned(8), N_COUNTERS)),
            "busy": Out(1),   # a request waits in a FIFO, or a fill is offered
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        read_layout = read_request_layout(p)
        # request_depth reads wait in a FIFO whose head is a register (HeadRegisterFifo), so the read engine's region
        # compares start at a flip-flop, not at the LUT RAM's read (a 75 MHz build's worst path, timing round 21a).
        # No skid after it (round 21d): the read engine's read.ready is a function of two of its flip-flops (its
        # stage A valid and its stage A skid's ready), so nothing of dispatch reaches this FIFO's pointers,
        # Req.ready or fill.ready, and the compares lose a mux level.
        m.submodules.read_fifo = read_fifo = HeadRegisterFifo(width=read_layout.size, depth=p.request_depth)
        m.submodules.cmp_fifo = cmp_fifo = SyncFIFO(width=cmp_request_layout().size, depth=CMP_FIFO_DEPTH)

        req = self.req.p
        opcode = req.opcode
        is_read = opcode_in(opcode, REQ_READS)
        no_response = opcode_in(opcode, REQ_NO_RESPONSE)
        accept = Signal()
        req_read_valid = Signal()   # a Req read is offered to the engine (from the FIFO or bypassing it)
        req_read_ready = Signal()   # ... and the engine takes it (a fill goes first)
        # An empty FIFO is bypassed: a read goes to the engine in the cycle it is accepted (one cycle less
        # from Req to AR). read.valid depends on req.valid, never on a ready.
        bypass = Signal()
        # Req.ready is a flip-flop: both FIFOs have room after this cycle's writes and reads (the same value as
        # read_fifo.w_rdy & cmp_fifo.w_rdy, one register earlier, so the port is not driven by a comparator).
        req_ready = Signal(init=1)
        read_level = read_fifo.level + (read_fifo.w_en & read_fifo.w_rdy) - (read_fifo.r_en & read_fifo.r_rdy)
        cmp_level = cmp_fifo.level + (cmp_fifo.w_en & cmp_fifo.w_rdy) - (cmp_fifo.r_en & cmp_fifo.r_rdy)
        m.d.sync += req_ready.eq((read_level != read_fifo.depth) & (cmp_level != CMP_FIFO_DEPTH))
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
            cmp_fifo.w_en.eq(accept & ~is_read & ~no_response),
            req_read_valid.eq(read_fifo.r_rdy | (self.req.valid & self.req.ready & is_read)),
            req_read_ready.eq(self.read.ready & ~self.fill.valid),
            self.read.valid.eq(self.fill.valid | req_read_valid),
            self.read.p.eq(Mux(self.fill.valid, self.fill.p, Mux(read_fifo.r_rdy, read_fifo.r_data, read_entry))),
            self.fill.ready.eq(self.read.ready),
            read_fifo.r_en.eq(req_read_ready),
            bypass.eq(~read_fifo.r_rdy & req_read_ready),
            self.cmp.valid.eq(cmp_fifo.r_rdy),
            self.cmp.p.eq(cmp_fifo.r_data),
            cmp_fifo.r_en.eq(self.cmp.ready),
            self.busy.eq(read_fifo.r_rdy | cmp_fifo.r_rdy | self.fill.valid),
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
        # The write path's NDRs enter through a skid (InputSkid: registered ready, no added latency): the write
        # path's NDR register frees on flip-flops, not on this round's choice, which reads the front end's Cmp
        # FIFO level (timing round 21e: Cmp FIFO level -> the choice -> the write path's NDR register ->
        # its WriteTable's done slot and the RwD skid, 10..11 LUT levels).
        m.submodules.write_skid = write_skid = InputSkid(ndr_layout(self.params))
        wiring.connect(m, wiring.flipped(self.write_ndr), write_skid.i)
        write_ndr = write_skid.o
        prefer_write = Signal()   # round-robin: the source not served last goes first
        take_write = Signal()
        take_cmp = Signal()
        m.d.comb += [
            take_write.eq(output.i.ready & write_ndr.valid & (prefer_write | ~self.cmp.valid)),
            take_cmp.eq(output.i.ready & self.cmp.valid & ~take_write),
            write_ndr.ready.eq(take_write),
            self.cmp.ready.eq(take_cmp),
            output.i.valid.eq(take_write | take_cmp),
        ]
        with m.If(take_write):
            m.d.comb += output.i.p.eq(write_ndr.p)
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
