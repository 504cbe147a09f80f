"""AXI4 subordinate over block RAM (amaranth.lib.memory.Memory): the controller's DRAM on the FPGA.

- INCR bursts of any length (1..256 beats) at the full data width; the address of beat i is the burst address
  + i lines. FIXED/WRAP bursts and narrow sizes are treated as full-width INCR (the controller issues no
  others, docs/DEVICE.md §4/§5).
- Any ID: the read and write channels each serve one burst at a time, in arrival order, and answer with the
  burst's own ID (in-order responses are legal AXI for any mix of IDs).
- Backpressure everywhere: the read port only advances when the R channel can take a beat, so `rready` low
  holds the beat on the bus; B waits for `bready`.
- Reads and writes run concurrently on the two RAM ports. Addresses wrap modulo the RAM size (the board
  builds the controller with dram_addr_bits = log2(RAM bytes), so no controller address wraps).
- WSTRB is a byte enable on the RAM's write port (DP16KD byte enables on ECP5).
"""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from smartquant.hdl.backend.axi import AxiSignature, AXI_RESP_OKAY


class AxiRam(wiring.Component):
    def __init__(self, *, data_width: int, addr_width: int, id_width: int, size_bytes: int, init=()):
        line_bytes = data_width // 8
        if size_bytes % line_bytes or size_bytes & (size_bytes - 1):
            raise ValueError(f"RAM size must be a power of two of whole lines, got {size_bytes} bytes")
        self.data_width = data_width
        self.depth = size_bytes // line_bytes
        self.line_offset_bits = (line_bytes - 1).bit_length()
        self.init = init
        super().__init__({"axi": In(AxiSignature(addr_width, data_width, id_width))})

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        m.submodules.memory = memory = Memory(shape=self.data_width, depth=self.depth, init=self.init)
        wr = memory.write_port(granularity=8)
        rd = memory.read_port(transparent_for=())
        index_bits = max(1, (self.depth - 1).bit_length())

        def line_of(address):
            return address[self.line_offset_bits:self.line_offset_bits + index_bits]

        # ---- write channel: AW, then the burst's W beats, then one B
        w_line = Signal(index_bits)
        w_id = Signal.like(axi.awid)
        with m.FSM(name="write"):
            with m.State("ADDRESS"):
                m.d.comb += axi.awready.eq(1)
                with m.If(axi.awvalid):
                    m.d.sync += [w_line.eq(line_of(axi.awaddr)), w_id.eq(axi.awid)]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [axi.wready.eq(1), wr.addr.eq(w_line), wr.data.eq(axi.wdata)]
                with m.If(axi.wvalid):
                    m.d.comb += wr.en.eq(axi.wstrb)
                    m.d.sync += w_line.eq(w_line + 1)
                    with m.If(axi.wlast):
                        m.next = "RESPONSE"
            with m.State("RESPONSE"):
                m.d.comb += [axi.bvalid.eq(1), axi.bid.eq(w_id), axi.bresp.eq(AXI_RESP_OKAY)]
                with m.If(axi.bready):
                    m.next = "ADDRESS"

        # ---- read channel: AR, then beats; the RAM's output register is the R beat register
        r_line = Signal(index_bits)
        r_left = Signal(9)           # beats still to fetch from the RAM
        r_id = Signal.like(axi.arid)
        r_valid = Signal()
        r_last = Signal()
        advance = ~r_valid | axi.rready
        m.d.comb += [axi.rvalid.eq(r_valid), axi.rdata.eq(rd.data), axi.rlast.eq(r_last), axi.rid.eq(r_id),
                     axi.rresp.eq(AXI_RESP_OKAY), rd.addr.eq(r_line), rd.en.eq(advance)]
        with m.If(advance):
            m.d.sync += r_valid.eq(r_left != 0)
            with m.If(r_left != 0):
                m.d.sync += [r_line.eq(r_line + 1), r_left.eq(r_left - 1), r_last.eq(r_left == 1)]
        # a new burst starts once the previous one is fetched and its last beat is leaving (r_id is shared)
        with m.If((r_left == 0) & advance):
            m.d.comb += axi.arready.eq(1)
            with m.If(axi.arvalid):
                m.d.sync += [r_line.eq(line_of(axi.araddr)), r_left.eq(axi.arlen + 1), r_id.eq(axi.arid)]
        return m
