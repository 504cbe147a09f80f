"""SmartQuantController: the whole CXL.mem Type-3 controller (RTL team contract, docs/DEVICE.md).

Ports (Verilog flattens them with "__": m2s_req__valid, csr__awaddr, axi__arvalid, ...):
    m2s_req  In  stream of req_layout   (M2S Req)
    m2s_rwd  In  stream of rwd_layout   (M2S RwD)
    s2m_ndr  Out stream of ndr_layout   (S2M NDR)
    s2m_drs  Out stream of drs_layout   (S2M DRS)
    csr      AXI4-Lite subordinate (CSR map of DEVICE.md §6)
    axi      AXI4 manager to device DRAM (read engine drives ar*/r*, write path aw*/w*/b*, through AxiDrain)
    axi_rst  In  the memory behind `axi` is reset too (tie to rst if it shares the controller's reset, else 0)
Clock `clk`, synchronous reset `rst`. AxiDrain (hdl/backend/axi_drain.py) sits between the engines and the AXI
port: after a reset it absorbs the responses and sends the W beats the memory is still owed (DEVICE.md "Reset").

Units: ReqFrontEnd (Req split, merges MemRdFill reads) -> ReadEngine (decode, block buffer, packer, DRS);
WritePath (RwD -> AXI writes, NDR; MemRdFill on to ReqFrontEnd.fill behind its port skid); NdrArbiter
(front-end Cmp + write NDR); CsrBlock (region table, control, counters); PoisonList (poisoned DRAM lines).
The top sums every unit's per-cycle counter increments into CsrBlock.counter_inc and adds its own:
ndr_sent, busy_cycles (any request or AXI transaction in flight) and stall_cycles (a DRS, NDR, AR, AW or W
channel holds valid without ready). DevLoad in every DRS and NDR is dev_load_level(N) of smartquant/params.py,
N = M2S messages accepted on the ports that still owe a response (one up/down counter on the port handshakes),
sampled when the message enters its output register (DEVICE.md §3).
Every entry of every unit's `events` array is driven (0 where the unit counts nothing): an undriven entry
becomes a constant `always @*` in the Verilog that never runs (Verilator ALWNEVER) and would start random
under +verilator+rand+reset. The Req front end leaves its other entries undriven, so the top uses
`ReqFrontEndEvents`, which drives them 0 (hdl/cxl/frontend.py is not changed here).
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Mux, unsigned
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams, Counter, N_COUNTERS, REQ_NO_RESPONSE, dev_load_thresholds
from smartquant.hdl.backend.axi import AxiSignature, AxiLiteSignature, connect_axi_half
from smartquant.hdl.backend.axi_drain import AxiDrain
from smartquant.hdl.csr.csr_block import CsrBlock
from smartquant.hdl.cxl.messages import req_layout, rwd_layout, ndr_layout, drs_layout
from smartquant.hdl.cxl.frontend import (
    ReqFrontEnd, NdrArbiter, REQ_OPCODE_COUNTERS, CMP_FIFO_DEPTH, opcode_in,
)
from smartquant.hdl.engine.poison import PoisonList
from smartquant.hdl.engine.read_engine import ReadEngine

from smartquant.hdl.engine.write_path import WritePath


# the event counters ReqFrontEnd drives: one per Req opcode and the bad-opcode count
FRONTEND_EVENTS = frozenset([*REQ_OPCODE_COUNTERS.values(), Counter.REQ_BAD_OPCODE])


class ReqFrontEndEvents(ReqFrontEnd):
    """ReqFrontEnd with the event entries it does not count driven 0 (see the module docstring)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        for n in range(N_COUNTERS):
            if n not in FRONTEND_EVENTS:
                m.d.comb += self.events[n].eq(0)
        return m


class SmartQuantController(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = p = params
        super().__init__({
            "m2s_req": In(stream.Signature(req_layout(p))),
            "m2s_rwd": In(stream.Signature(rwd_layout(p))),
            "s2m_ndr": Out(stream.Signature(ndr_layout(p))),
            "s2m_drs": Out(stream.Signature(drs_layout(p))),
            "csr": In(AxiLiteSignature(p.csr_addr_bits, 32)),
            "axi": Out(AxiSignature(p.dram_addr_bits, p.data_width, p.axi_id_bits)),
            "axi_rst": In(1),
        })
        # DevLoad occupancy counter (driven in elaborate; an attribute so that tests can watch it). Every
        # message it counts sits in a queue until its response: at most load_capacity reads, the Cmp FIFO and
        # the NDR output buffer (2) with the NDR arbiter's skid for a write NDR (1), and the write path (RwD skid,
        # held register, the gather buffer and <= 2**axi_id_bits in-flight entries of up to b_max writes each,
        # its NDR register). Twice that sum is far from any reachable count, so it never wraps.
        self.occupancy = Signal(range(2 * (p.load_capacity + CMP_FIFO_DEPTH + 2 + 1 + 2 + 1
                                           + ((1 << p.axi_id_bits) + 1) * p.b_max + 1) + 1))
        # Units are built here, not in elaborate(), so that a parameter a unit refuses raises ValueError at
        # construction (the verilog command turns it into a one-line error).
        self._units = {}
        try:
            for name, unit_class in (("poison_list", PoisonList), ("csr_block", CsrBlock), ("frontend", ReqFrontEndEvents),
                                     ("read_engine", ReadEngine), ("write_path", WritePath),
                                     ("ndr_arbiter", NdrArbiter), ("axi_drain", AxiDrain)):
                self._units[name] = unit_class(p)
        except ValueError:
            for unit in (self, *self._units.values()):   # refused design: nothing built here is an error
                unit._MustUse__silence = True
            raise

    def elaborate(self, platform):
        m = Module()
        p = self.params
        for name, unit in self._units.items():
            m.submodules[name] = unit
        frontend, read_engine, write_path, ndr_arbiter, csr_block, poison_list = (
            self._units[name] for name in ("frontend", "read_engine", "write_path", "ndr_arbiter", "csr_block",
                                           "poison_list"))

        wiring.connect(m, wiring.flipped(self.m2s_req), frontend.req)
        wiring.connect(m, frontend.read, read_engine.read)
        wiring.connect(m, read_engine.drs, wiring.flipped(self.s2m_drs))
        wiring.connect(m, wiring.flipped(self.m2s_rwd), write_path.rwd)
        wiring.connect(m, write_path.fill, frontend.fill)
        wiring.connect(m, frontend.cmp, ndr_arbiter.cmp)
        wiring.connect(m, write_path.ndr, ndr_arbiter.write_ndr)
        wiring.connect(m, ndr_arbiter.ndr, wiring.flipped(self.s2m_ndr))
        wiring.connect(m, wiring.flipped(self.csr), csr_block.bus)

        # One AXI manager port: the read half from the read engine, the write half from the write path, both
        # through the drain unit (reset with AXI transactions in flight).
        axi_drain = self._units["axi_drain"]
        connect_axi_half(m, read_engine.axi, axi_drain.up)
        connect_axi_half(m, write_path.axi, axi_drain.up)
        wiring.connect(m, axi_drain.down, wiring.flipped(self.axi))
        m.d.comb += axi_drain.axi_rst.eq(self.axi_rst)

        m.d.comb += [
            read_engine.regions.eq(csr_block.regions),
            read_engine.toward_zero.eq(csr_block.toward_zero),
            write_path.regions.eq(csr_block.regions),
            write_path.regions_written.eq(csr_block.regions_written),
            read_engine.nxm_as_poison.eq(csr_block.nxm_as_poison),
            read_engine.mem_data_nxm.eq(csr_block.mem_data_nxm),
            read_engine.hole_poison.eq(csr_block.hole_poison),
            poison_list.query.eq(read_engine.poison_query),
            read_engine.poison_hit_late.eq(poison_list.query_hit_late),
            poison_list.insert.eq(write_path.poison_insert),
            poison_list.clear.eq(write_path.poison_clear),
            poison_list.clear_all.eq(csr_block.clear_poison),
            write_path.poison_command.eq(csr_block.poison_command),
            poison_list.read_index.eq(csr_block.poison_list_index),
            csr_block.poison_record.eq(poison_list.read_record),
            csr_block.poison_record_valid.eq(poison_list.read_valid),
            csr_block.poison_count.eq(poison_list.count),
            csr_block.poison_overflow.eq(poison_list.overflow),
            # a read of a block still gathered (or landing) waits at dispatch for its flush to land
            write_path.block_query.eq(read_engine.block_query),
            read_engine.block_busy.eq(write_path.block_busy),
            read_engine.invalidate.eq(write_path.invalidate),
            read_engine.invalidate_landed.eq(write_path.landed),
            read_engine.invalidate_all.eq(csr_block.regions_written),
        ]
        # ---- DevLoad (DEVICE.md §3): occupancy N = M2S messages accepted that still owe a response ----------
        occupancy = self.occupancy
        req_counted = Signal()   # every Req gets a DRS or NDR except REQ_NO_RESPONSE (reserved opcodes get an NDR)
        m.d.comb += req_counted.eq(self.m2s_req.valid & self.m2s_req.ready
                                   & ~opcode_in(self.m2s_req.p.opcode, REQ_NO_RESPONSE))
        m.d.sync += occupancy.eq(occupancy + req_counted + (self.m2s_rwd.valid & self.m2s_rwd.ready)
                                 - (self.s2m_drs.valid & self.s2m_drs.ready)
                                 - (self.s2m_ndr.valid & self.s2m_ndr.ready))
        optimal, moderate, severe = dev_load_thresholds(p)   # the level rule of params.dev_load_level
        dev_load = Signal(2)
        m.d.comb += [
            dev_load.eq(Mux(occupancy >= severe, 3, Mux(occupancy >= moderate, 2, Mux(occupancy >= optimal, 1, 0)))),
            ndr_arbiter.dev_load.eq(dev_load),
            read_engine.dev_load.eq(dev_load),
        ]

        # ---- counters ----------------------------------------------------------------------------------
        axi = self.axi
        busy = Signal()
        stall = Signal()
        axi_write_in_flight = Signal()
        # AW accepted, B not yet returned, as the write path sees them (the drain hides a B from before a reset)
        outstanding_writes = Signal(8)
        aw_done = write_path.axi.awvalid & write_path.axi.awready
        b_done = write_path.axi.bvalid & write_path.axi.bready
        with m.If(aw_done & ~b_done):
            m.d.sync += outstanding_writes.eq(outstanding_writes + 1)
        with m.Elif(b_done & ~aw_done):
            m.d.sync += outstanding_writes.eq(outstanding_writes - 1)
        m.d.comb += [
            axi_write_in_flight.eq((outstanding_writes != 0) | axi.awvalid | axi.wvalid),
            busy.eq(frontend.busy | read_engine.busy | write_path.busy | self.m2s_rwd.valid
                    | self.m2s_req.valid
                    | self.s2m_ndr.valid | axi_write_in_flight | axi_drain.busy),
            stall.eq((self.s2m_drs.valid & ~self.s2m_drs.ready) | (self.s2m_ndr.valid & ~self.s2m_ndr.ready)
                     | (axi.arvalid & ~axi.arready) | (axi.awvalid & ~axi.awready) | (axi.wvalid & ~axi.wready)),
            csr_block.busy.eq(busy),
        ]
        top_events = Signal(data.ArrayLayout(unsigned(8), N_COUNTERS))
        top_counted = (Counter.NDR_SENT, Counter.BUSY_CYCLES, Counter.STALL_CYCLES)
        m.d.comb += [
            top_events[Counter.NDR_SENT].eq(self.s2m_ndr.valid & self.s2m_ndr.ready),
            top_events[Counter.BUSY_CYCLES].eq(busy),
            top_events[Counter.STALL_CYCLES].eq(stall),
        ]
        m.d.comb += [top_events[n].eq(0) for n in range(N_COUNTERS) if n not in top_counted]
        for n in range(N_COUNTERS):
            m.d.comb += csr_block.counter_inc[n].eq(
                frontend.events[n] + read_engine.events[n] + write_path.events[n]
                + top_events[n])
        return m
