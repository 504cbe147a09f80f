r"""AXI4 host port (docs/DEVICE.md §10): a second, thin front end on the unchanged CXL.mem controller core.

`AxiHostPort` is an AXI4 subordinate on one side and a CXL.mem message manager on the other: it turns AR and
AW + W into the core's M2S Req (MemRd) and RwD (MemWr / MemWrPtl) messages and the core's S2M DRS and NDR back
into R beats and B responses. `SmartQuantAxiController` is the core (hdl/top.py, SmartQuantController) with
this port in front of its message ports: same engines, CSRs, DRAM port and counters, no second copy.

  host AR -> skid -> [read splitter: 1 MemRd per beat] -> core M2S Req
                           \--> read-burst FIFO (ARID, ARLEN, bad) --\
  core S2M DRS ------------------------------------------------------[R assembly]--> R output buffer -> host R
  host AW -> skid -> [write splitter: 1 RwD per W beat, tag = order slot] -> core M2S RwD
  host W  -> skid --/        \--> order table (AWID, bad, beats issued, Cmps due) <-- core S2M NDR (by tag)
                                        head complete --> B output buffer -> host B

- Address: AxADDR is the device-relative HPA of DEVICE.md §2 (HPA_BITS = 52 wide: view and k in the bits
  above the capacity); AxADDR[5:0] (the byte offset in the line) is ignored, as a CXL.mem message has none.
  Beat i of a burst is line (AxADDR >> line_offset_bits) + i: INCR bursts of any length are split into one
  line request per beat.
- A burst with AxSIZE != log2(W/8) (narrow) or AxBURST != INCR is not served: its beats still go through the
  core, at the same offset in reserved view 7 (reads: answer ignored, writes: dropped and completed by the
  core), so they keep their place in the response order; every R beat of it is RRESP = SLVERR with zero data
  and RUSER = 0, its B is SLVERR.
- Responses: R beat = DRS: RDATA = data, RUSER[0] = poison, RRESP = DECERR for MemData-NXM, else OKAY.
  B = OKAY once every beat's NDR Cmp arrived: the core sends a write's Cmp only after the DRAM accepted all
  of its B responses (hdl/engine/write_path.py), so B means "landed". WUSER[0] is the beat's RwD poison bit.
  WSTRB = byte enables: all set -> MemWr, else MemWrPtl. The beat count comes from AWLEN; WLAST is not used.
- Ordering: everything is answered in request order, across IDs too (AXI allows more reordering, never
  requires it). Reads: the core answers MemRd in arrival order (hdl/engine/read_engine.py: in-order dispatch
  and serve FIFO), so R follows the read-burst FIFO. Writes: the core's write path completes writes out of
  order, so writes wait in an order table of WRITE_ORDER_SLOTS bursts whose index is the RwD tag; B leaves
  for the oldest burst once it is complete.
- Every output is a flip-flop: AxREADY and WREADY come from InputSkid registers, R and B from OutputBuffers
  (hdl/stream_buffers.py); no input reaches an output combinationally.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from smartquant.params import (
    ControllerParams, DrsOpcode, HPA_BITS, META_FIELD_NO_OP, ReqOpcode, RwdOpcode,
)
from smartquant.hdl.backend.axi import AxiSignature, AxiLiteSignature, AXI_BURST_INCR, AXI_RESP_OKAY, AXI_RESP_SLVERR
from smartquant.hdl.cxl.messages import req_layout, rwd_layout, ndr_layout, drs_layout
from smartquant.hdl.stream_buffers import InputSkid, OutputBuffer

AXI_RESP_DECERR = 0b11
RESERVED_VIEW = 7            # where a burst the port does not serve is sent (its beats keep their place)
WRITE_ORDER_SLOTS = 16       # write bursts between AW and B (the core's write path holds 8 writes in flight)


class AxiHostSignature(wiring.Signature):
    """AXI4 (manager's view) as AxiSignature, plus 1-bit WUSER and RUSER for poison."""

    def __init__(self, addr_width: int, data_width: int, id_width: int):
        members = dict(AxiSignature(addr_width, data_width, id_width).members.items())
        members.update({"wuser": Out(1), "ruser": In(1)})
        super().__init__(members)


def host_axi_signature(params: ControllerParams) -> AxiHostSignature:
    return AxiHostSignature(HPA_BITS, params.data_width, params.host_axi_id_bits)


def _address_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"id": params.host_axi_id_bits, "addr": HPA_BITS, "len": 8, "size": 3, "burst": 2})


def _w_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"data": params.data_width, "strb": params.line_bytes, "user": 1})


def _r_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"id": params.host_axi_id_bits, "data": params.data_width, "resp": 2, "user": 1,
                              "last": 1})


def _b_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"id": params.host_axi_id_bits, "resp": 2})


def _read_burst_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"id": params.host_axi_id_bits, "len": 8, "bad": 1})


def read_burst_fifo_depth(params: ControllerParams) -> int:
    """Read bursts between AR and their last R beat: as many as the core holds reads (one line each)."""
    return params.load_capacity


class AxiHostPort(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        super().__init__({
            "host": In(host_axi_signature(params)),
            "req": Out(stream.Signature(req_layout(params))),
            "rwd": Out(stream.Signature(rwd_layout(params))),
            "ndr": In(stream.Signature(ndr_layout(params))),
            "drs": In(stream.Signature(drs_layout(params))),
        })

    def _line_of(self, m, name: str, fields) -> tuple[Signal, Signal]:
        """(message address of the burst's first line, bad) of an AR/AW: a burst the port does not serve is
        moved to the reserved view (its offset and k kept)."""
        p = self.params
        bad = Signal(name=f"{name}_bad")
        line = Signal(p.message_address_bits, name=f"{name}_line")
        first = fields.addr[p.line_offset_bits:]
        view_lsb = p.view_shift - p.line_offset_bits
        m.d.comb += [
            bad.eq((fields.size != p.line_offset_bits) | (fields.burst != AXI_BURST_INCR)),
            line.eq(Mux(bad, Cat(first[:view_lsb], Const(RESERVED_VIEW, 3), first[view_lsb + 3:]), first)),
        ]
        return line, bad

    def elaborate(self, platform):
        m = Module()
        p = self.params
        host = self.host
        address_layout = _address_layout(p)

        # ---- host inputs behind skids (registered AxREADY / WREADY) ----------------------------------------
        m.submodules.ar_skid = ar_skid = InputSkid(address_layout)
        m.submodules.aw_skid = aw_skid = InputSkid(address_layout)
        m.submodules.w_skid = w_skid = InputSkid(_w_layout(p))
        for skid, prefix in ((ar_skid, "ar"), (aw_skid, "aw")):
            m.d.comb += [
                skid.i.valid.eq(getattr(host, f"{prefix}valid")),
                getattr(host, f"{prefix}ready").eq(skid.i.ready),
                skid.i.p.id.eq(getattr(host, f"{prefix}id")),
                skid.i.p.addr.eq(getattr(host, f"{prefix}addr")),
                skid.i.p.len.eq(getattr(host, f"{prefix}len")),
                skid.i.p.size.eq(getattr(host, f"{prefix}size")),
                skid.i.p.burst.eq(getattr(host, f"{prefix}burst")),
            ]
        m.d.comb += [
            w_skid.i.valid.eq(host.wvalid), host.wready.eq(w_skid.i.ready),
            w_skid.i.p.data.eq(host.wdata), w_skid.i.p.strb.eq(host.wstrb), w_skid.i.p.user.eq(host.wuser),
        ]

        # ---- reads: one MemRd per beat, R beats from the DRS stream in order ---------------------------------
        m.submodules.read_bursts = read_bursts = SyncFIFO(width=_read_burst_layout(p).size,
                                                          depth=read_burst_fifo_depth(p))
        rd_busy = Signal()
        rd_line = Signal(p.message_address_bits)
        rd_left = Signal(range(257))       # beats still to request
        rd_tag = Signal(16)                # running tag: the core does not need unique tags, it helps waves
        req_fire = Signal()
        m.d.comb += [
            self.req.valid.eq(rd_busy),
            self.req.p.opcode.eq(ReqOpcode.MEM_RD),
            self.req.p.address.eq(rd_line),
            self.req.p.tag.eq(rd_tag),
            self.req.p.meta_field.eq(META_FIELD_NO_OP),
            req_fire.eq(self.req.valid & self.req.ready),
        ]
        ar_line, ar_bad = self._line_of(m, "ar", ar_skid.o.p)
        rd_load = Signal()
        m.d.comb += [
            rd_load.eq(ar_skid.o.valid & read_bursts.w_rdy & (~rd_busy | (req_fire & (rd_left == 1)))),
            ar_skid.o.ready.eq(rd_load),
            read_bursts.w_en.eq(rd_load),
            read_bursts.w_data.eq(Cat(ar_skid.o.p.id, ar_skid.o.p.len, ar_bad)),
        ]
        with m.If(req_fire):
            m.d.sync += [rd_line.eq(rd_line + 1), rd_left.eq(rd_left - 1), rd_tag.eq(rd_tag + 1)]
            with m.If(rd_left == 1):
                m.d.sync += rd_busy.eq(0)
        with m.If(rd_load):
            m.d.sync += [rd_busy.eq(1), rd_line.eq(ar_line), rd_left.eq(ar_skid.o.p.len + 1)]

        m.submodules.r_buffer = r_buffer = OutputBuffer(_r_layout(p))
        head = Signal(_read_burst_layout(p))
        r_beat = Signal(8)
        r_fire = Signal()
        m.d.comb += [
            head.eq(read_bursts.r_data),
            r_buffer.i.valid.eq(self.drs.valid & read_bursts.r_rdy),
            self.drs.ready.eq(r_buffer.i.ready & read_bursts.r_rdy),
            r_fire.eq(r_buffer.i.valid & r_buffer.i.ready),
            r_buffer.i.p.id.eq(head.id),
            r_buffer.i.p.last.eq(r_beat == head.len),
            read_bursts.r_en.eq(r_fire & (r_beat == head.len)),
        ]
        with m.If(head.bad):
            m.d.comb += r_buffer.i.p.resp.eq(AXI_RESP_SLVERR)
        with m.Else():
            m.d.comb += [
                r_buffer.i.p.data.eq(self.drs.p.data),
                r_buffer.i.p.user.eq(self.drs.p.poison),
                r_buffer.i.p.resp.eq(Mux(self.drs.p.opcode == DrsOpcode.MEM_DATA_NXM, AXI_RESP_DECERR,
                                         AXI_RESP_OKAY)),
            ]
        with m.If(r_fire):
            m.d.sync += r_beat.eq(Mux(r_beat == head.len, 0, r_beat + 1))
        m.d.comb += [
            host.rvalid.eq(r_buffer.o.valid), r_buffer.o.ready.eq(host.rready),
            host.rid.eq(r_buffer.o.p.id), host.rdata.eq(r_buffer.o.p.data), host.rresp.eq(r_buffer.o.p.resp),
            host.ruser.eq(r_buffer.o.p.user), host.rlast.eq(r_buffer.o.p.last),
        ]

        # ---- writes: one RwD per W beat (tag = order slot), B in AW order once every beat's Cmp is back ------
        n = WRITE_ORDER_SLOTS
        slot_bits = (n - 1).bit_length()
        slot_valid = Signal(n)
        slot_issued = Signal(n)            # every beat of the burst went to the core
        slot_bad = Signal(n)
        slot_id = [Signal(p.host_axi_id_bits, name=f"slot{i}_id") for i in range(n)]
        slot_due = [Signal(range(257), name=f"slot{i}_due") for i in range(n)]   # Cmps still to come
        order_head = Signal(slot_bits)
        order_tail = Signal(slot_bits)

        wr_busy = Signal()
        wr_line = Signal(p.message_address_bits)
        wr_left = Signal(range(257))
        wr_slot = Signal(slot_bits)
        rwd_fire = Signal()
        all_bytes = (1 << p.line_bytes) - 1
        m.d.comb += [
            self.rwd.valid.eq(wr_busy & w_skid.o.valid),
            w_skid.o.ready.eq(wr_busy & self.rwd.ready),
            self.rwd.p.opcode.eq(Mux(w_skid.o.p.strb == all_bytes, RwdOpcode.MEM_WR, RwdOpcode.MEM_WR_PTL)),
            self.rwd.p.address.eq(wr_line),
            self.rwd.p.tag.eq(wr_slot),
            self.rwd.p.meta_field.eq(META_FIELD_NO_OP),
            self.rwd.p.poison.eq(w_skid.o.p.user),
            self.rwd.p.byte_enable.eq(w_skid.o.p.strb),
            self.rwd.p.data.eq(w_skid.o.p.data),
            rwd_fire.eq(self.rwd.valid & self.rwd.ready),
        ]
        aw_line, aw_bad = self._line_of(m, "aw", aw_skid.o.p)
        wr_load = Signal()
        m.d.comb += [
            wr_load.eq(aw_skid.o.valid & ~slot_valid.bit_select(order_tail, 1)
                       & (~wr_busy | (rwd_fire & (wr_left == 1)))),
            aw_skid.o.ready.eq(wr_load),
        ]
        with m.If(rwd_fire):
            m.d.sync += [wr_line.eq(wr_line + 1), wr_left.eq(wr_left - 1)]
            with m.If(wr_left == 1):
                m.d.sync += wr_busy.eq(0)
        with m.If(wr_load):
            m.d.sync += [wr_busy.eq(1), wr_line.eq(aw_line), wr_left.eq(aw_skid.o.p.len + 1),
                         wr_slot.eq(order_tail), order_tail.eq(order_tail + 1)]

        m.submodules.b_buffer = b_buffer = OutputBuffer(_b_layout(p))
        head_done = Signal()
        b_fire = Signal()
        m.d.comb += [
            self.ndr.ready.eq(1),          # a Cmp only decrements its slot's count: never held
            head_done.eq(slot_valid.bit_select(order_head, 1) & slot_issued.bit_select(order_head, 1)
                         & (Cat(*[slot_due[i] == 0 for i in range(n)]).bit_select(order_head, 1))),
            b_buffer.i.valid.eq(head_done),
            b_fire.eq(head_done & b_buffer.i.ready),
        ]
        with m.Switch(order_head):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += [
                        b_buffer.i.p.id.eq(slot_id[i]),
                        b_buffer.i.p.resp.eq(Mux(slot_bad[i], AXI_RESP_SLVERR, AXI_RESP_OKAY)),
                    ]
        with m.If(b_fire):
            m.d.sync += order_head.eq(order_head + 1)
        ndr_fire = self.ndr.valid & self.ndr.ready
        for i in range(n):
            issue_i = rwd_fire & (wr_slot == i)
            cmp_i = ndr_fire & (self.ndr.p.tag[:slot_bits] == i)
            m.d.sync += slot_due[i].eq(slot_due[i] + issue_i - cmp_i)
            with m.If(issue_i & (wr_left == 1)):
                m.d.sync += slot_issued[i].eq(1)
            with m.If(b_fire & (order_head == i)):
                m.d.sync += slot_valid[i].eq(0)
            with m.If(wr_load & (order_tail == i)):   # never the head being freed: a full table takes no AW
                m.d.sync += [slot_valid[i].eq(1), slot_issued[i].eq(0), slot_bad[i].eq(aw_bad),
                             slot_id[i].eq(aw_skid.o.p.id)]
        m.d.comb += [
            host.bvalid.eq(b_buffer.o.valid), b_buffer.o.ready.eq(host.bready),
            host.bid.eq(b_buffer.o.p.id), host.bresp.eq(b_buffer.o.p.resp),
        ]
        return m


class SmartQuantAxiController(wiring.Component):
    """The controller with the AXI4 host port (params.host_port == "axi"): ports host (AXI4 subordinate),
    csr, axi and axi_rst as in hdl/top.py."""

    def __init__(self, params: ControllerParams):
        from smartquant.hdl.top import SmartQuantController
        if params.host_port != "axi":
            raise ValueError(f"SmartQuantAxiController needs host_port = 'axi', got {params.host_port!r}")
        self.params = p = params
        super().__init__({
            "host": In(host_axi_signature(p)),
            "csr": In(AxiLiteSignature(p.csr_addr_bits, 32)),
            "axi": Out(AxiSignature(p.dram_addr_bits, p.data_width, p.axi_id_bits)),
            "axi_rst": In(1),
        })
        try:
            self.core = SmartQuantController(p)
        except ValueError:
            self._MustUse__silence = True
            raise
        self.host_port = AxiHostPort(p)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.host_port = host_port = self.host_port
        wiring.connect(m, wiring.flipped(self.host), host_port.host)
        wiring.connect(m, host_port.req, core.m2s_req)
        wiring.connect(m, host_port.rwd, core.m2s_rwd)
        wiring.connect(m, core.s2m_ndr, host_port.ndr)
        wiring.connect(m, core.s2m_drs, host_port.drs)
        wiring.connect(m, wiring.flipped(self.csr), core.csr)
        wiring.connect(m, core.axi, wiring.flipped(self.axi))
        m.d.comb += core.axi_rst.eq(self.axi_rst)
        return m


def build_controller(params: ControllerParams) -> wiring.Component:
    """The top for params.host_port: SmartQuantController (CXL.mem ports) or SmartQuantAxiController."""
    if params.host_port == "axi":
        return SmartQuantAxiController(params)
    from smartquant.hdl.top import SmartQuantController
    return SmartQuantController(params)
