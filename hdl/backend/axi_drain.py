"""AxiDrain: keeps the AXI4 manager port consistent across a controller reset (docs/DEVICE.md "Reset").

The memory behind the AXI port need not be reset with the controller (a CXL link reset does not reset the DRAM
controller), so transactions it accepted before `rst` still complete after it: R beats arrive for reads the
read engine forgot, B responses for writes the write path forgot, and an accepted AW still waits for its W
beats. Without this unit the engines would take those as answers to their new requests.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Mux, Array, ResetSignal
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams
from smartquant.hdl.backend.axi import AxiSignature

AR_MEMBERS = ("arid", "araddr", "arlen", "arsize", "arburst")
R_MEMBERS = ("rid", "rdata", "rresp", "rlast")
AW_MEMBERS = ("awid", "awaddr", "awlen", "awsize", "awburst")
B_MEMBERS = ("bid", "bresp")


class AxiDrain(wiring.Component):
    """Sits between the engines (`up`, AR/R from the read engine, AW/W/B from the write path) and the AXI port
    (`down`). In normal operation it passes everything through and keeps, in registers that `rst` does not
    reset (reset_less; they start at their init value 0 at power-up), the obligations of the port:

    - R beats owed: sum of ARLEN + 1 over accepted ARs minus R beats taken;
    - B responses owed: AWs accepted minus B responses taken;
    - W beats owed: a queue (`queue_depth` entries) of the lengths of accepted AW bursts whose W beats are not
      all sent, with the beats already sent of the oldest one. AXI lets W lead AW: a W beat may go before its
      AW is accepted only for the AW being presented (never for a later one), and the unit keeps a copy of that
      AW. A new AW waits while the queue is full (W progress never waits for a new AW, so no deadlock).

    After `rst` (and at power-up) `draining` is 1; while anything is owed the unit holds off new AR / AW / W of
    the engines (their VALID does not reach the port, their READY is 0, R and B are hidden from them), keeps
    RREADY = BREADY = 1 and discards what arrives, presents again the AW whose W beats went ahead of it, and
    sends the owed W beats with WSTRB = 0 and data 0 (WLAST on the last beat of each burst), so the memory
    completes its accepted bursts without changing memory (apart from beats it already took). When nothing is
    owed, `draining` drops and traffic resumes; with nothing owed there is no added cycle.

    While `rst` (or `axi_rst`) is high every VALID toward the memory is 0 and RREADY = BREADY = 1.
    `axi_rst` says the memory's AXI interface is reset too (tie it to `rst` when the memory shares the
    controller's reset, 0 when it does not): it clears every obligation, since the memory dropped them.
    `busy` is 1 while the drain holds traffic off.
    """

    def __init__(self, params: ControllerParams = ControllerParams(), queue_depth: int = 4):
        self.params = params
        self.queue_depth = queue_depth
        signature = AxiSignature(params.dram_addr_bits, params.data_width, params.axi_id_bits)
        super().__init__({
            "up": In(signature),      # from the engines (they are the managers)
            "down": Out(signature),   # to the memory
            "axi_rst": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        up, down = self.up, self.down
        depth = self.queue_depth

        # ---- obligations (survive rst) -----------------------------------------------------------------
        r_owed = Signal(16, reset_less=True)
        b_owed = Signal(16, reset_less=True)
        lengths = Array(Signal(8, name=f"w_burst{i}_len", reset_less=True) for i in range(depth))
        rd_ptr = Signal(range(depth), reset_less=True)
        wr_ptr = Signal(range(depth), reset_less=True)
        count = Signal(range(depth + 1), reset_less=True)   # accepted AW bursts with W beats still owed
        head_sent = Signal(9, reset_less=True)   # W beats sent of the oldest burst (count = 0: of the AW presented)
        early_done = Signal(reset_less=True)     # count = 0 and every W beat of the presented AW went already
        aw_layout = data.StructLayout({"id": p.axi_id_bits, "addr": p.dram_addr_bits, "len": 8})
        early_aw = Signal(aw_layout, reset_less=True)   # the AW whose W beats went ahead of it

        draining = Signal(init=1)   # reset by rst: set after every reset
        owed = Signal()
        rst = ResetSignal()
        # Flags of the registers above, each a flip-flop loaded with the same function of their next values (so
        # the AXI port's VALID / READY and the engines' handshakes read flip-flops, not zero tests of the
        # 16-bit counters: issue 10, scripts/logic_depth.py). Power-up values: everything 0, nothing owed.
        held_off = Signal(reset_less=True)       # draining & owed
        early = Signal(reset_less=True)          # count = 0 and W beats went ahead of an AW not yet accepted
        queue_empty = Signal(init=1, reset_less=True)   # count = 0
        queue_full = Signal(reset_less=True)     # count = depth
        hold = Signal()
        m.d.comb += [
            hold.eq(rst | self.axi_rst | held_off),
            self.busy.eq(held_off),
        ]

        # ---- AR / R ------------------------------------------------------------------------------------
        for name in AR_MEMBERS:
            m.d.comb += getattr(down, name).eq(getattr(up, name))
        for name in R_MEMBERS:
            m.d.comb += getattr(up, name).eq(getattr(down, name))
        m.d.comb += [
            down.arvalid.eq(up.arvalid & ~hold),
            up.arready.eq(down.arready & ~hold),
            up.rvalid.eq(down.rvalid & ~hold),
            down.rready.eq(hold | up.rready),
        ]
        ar_fire = down.arvalid & down.arready
        r_fire = down.rvalid & down.rready

        # ---- AW / W / B --------------------------------------------------------------------------------
        for name in AW_MEMBERS[3:]:
            m.d.comb += getattr(down, name).eq(getattr(up, name))   # size and burst are constants
        # the AW payload's select is the registered `held_off`: while `rst` / `axi_rst` alone hold traffic
        # off, AWVALID is 0 and the payload does not matter
        with m.If(held_off):   # only the AW whose W beats went ahead of it
            m.d.comb += [
                down.awid.eq(early_aw.id),
                down.awaddr.eq(early_aw.addr),
                down.awlen.eq(early_aw.len),
            ]
        with m.Else():
            m.d.comb += [
                down.awid.eq(up.awid),
                down.awaddr.eq(up.awaddr),
                down.awlen.eq(up.awlen),
            ]
        m.d.comb += down.awvalid.eq(Mux(hold, early & ~rst & ~self.axi_rst, up.awvalid & ~queue_full))
        m.d.comb += up.awready.eq(down.awready & ~hold & ~queue_full)

        head_last = Signal(8)   # AWLEN of the burst the next W beat belongs to
        m.d.comb += head_last.eq(Mux(~queue_empty, lengths[rd_ptr], down.awlen))
        w_credit = Signal()     # the next W beat has its AW accepted, or presented now
        m.d.comb += w_credit.eq(~queue_empty | (down.awvalid & ~early_done))
        last_beat = head_sent == head_last
        with m.If(hold):   # owed beats, strobes 0
            m.d.comb += [
                down.wvalid.eq(w_credit & ~rst & ~self.axi_rst),
                down.wdata.eq(0),
                down.wstrb.eq(0),
                down.wlast.eq(last_beat),
            ]
        with m.Else():
            m.d.comb += [
                down.wvalid.eq(up.wvalid & w_credit),
                down.wdata.eq(up.wdata),
                down.wstrb.eq(up.wstrb),
                down.wlast.eq(up.wlast),
            ]
        m.d.comb += up.wready.eq(down.wready & ~hold & w_credit)

        for name in B_MEMBERS:
            m.d.comb += getattr(up, name).eq(getattr(down, name))
        m.d.comb += [
            up.bvalid.eq(down.bvalid & ~hold),
            down.bready.eq(hold | up.bready),
        ]

        aw_fire = down.awvalid & down.awready
        w_fire = down.wvalid & down.wready
        b_fire = down.bvalid & down.bready
        # an accepted AW enters the queue unless all its W beats went ahead of it
        enqueue = aw_fire & ~(queue_empty & (early_done | (w_fire & last_beat)))
        pop = w_fire & ~queue_empty & last_beat

        # ---- next values of the obligations ------------------------------------------------------------
        r_owed_next = Signal.like(r_owed)
        b_owed_next = Signal.like(b_owed)
        count_next = Signal.like(count)
        head_sent_next = Signal.like(head_sent)
        early_done_next = Signal()
        with m.If(self.axi_rst):   # the memory dropped everything it had accepted
            m.d.comb += [r_owed_next.eq(0), b_owed_next.eq(0), count_next.eq(0), head_sent_next.eq(0),
                         early_done_next.eq(0)]
        with m.Else():
            m.d.comb += [
                # r_owed + (ARLEN + 1 on an AR) - (1 on an R beat, never below 0), with every sum computed from
                # registers and the handshakes only selecting among them: with an AR the sum is at least 1, so
                # an R beat always counts
                r_owed_next.eq(Mux(ar_fire,
                                   Mux(r_fire, r_owed + down.arlen, r_owed + down.arlen + 1),
                                   Mux(r_fire & (r_owed != 0), r_owed - 1, r_owed))),
                # b_owed + (1 on an AW) - (1 on a B, never below 0), selected as r_owed is
                b_owed_next.eq(Mux(aw_fire, Mux(b_fire, b_owed, b_owed + 1),
                                   Mux(b_fire & (b_owed != 0), b_owed - 1, b_owed))),
                count_next.eq(count + enqueue - pop),
                head_sent_next.eq(Mux(w_fire, Mux(last_beat, 0, head_sent + 1), head_sent)),
                early_done_next.eq(Mux(aw_fire & queue_empty, 0,
                                       Mux(w_fire & queue_empty & last_beat, 1, early_done))),
            ]
        m.d.sync += [r_owed.eq(r_owed_next), b_owed.eq(b_owed_next), count.eq(count_next),
                     head_sent.eq(head_sent_next), early_done.eq(early_done_next)]
        with m.If(~self.axi_rst):
            with m.If(enqueue):
                m.d.sync += [lengths[wr_ptr].eq(down.awlen), wr_ptr.eq(Mux(wr_ptr == depth - 1, 0, wr_ptr + 1))]
            with m.If(pop):
                m.d.sync += rd_ptr.eq(Mux(rd_ptr == depth - 1, 0, rd_ptr + 1))
        with m.Else():
            m.d.sync += [rd_ptr.eq(0), wr_ptr.eq(0)]
        with m.If(w_fire & queue_empty):   # a beat ahead of its AW: keep that AW
            m.d.sync += [early_aw.id.eq(down.awid), early_aw.addr.eq(down.awaddr), early_aw.len.eq(down.awlen)]

        # ---- the flags, from the next values -----------------------------------------------------------
        # Each zero test of a next value is written from the register's own zero / one tests and the
        # handshakes (no adder before the test): e.g. r_owed_next is nonzero after an AR unless the AR has one
        # beat and an R beat is taken with nothing owed before; without an AR it is nonzero iff r_owed >= 2, or
        # r_owed = 1 and no R beat is taken. Equal to the tests of the sums (tests/test_axi_drain_reads.py and
        # the reset tests of tests/test_top_axi_memory.py check the behaviour, test_axi_drain_levels the depth).
        r_zero, r_one = r_owed == 0, r_owed == 1
        b_zero, b_one = b_owed == 0, b_owed == 1
        r_nonzero_next = ~self.axi_rst & Mux(ar_fire, ~(r_fire & r_zero & (down.arlen == 0)),
                                             ~r_zero & ~(r_one & r_fire))
        b_nonzero_next = ~self.axi_rst & Mux(aw_fire, ~b_fire | ~b_zero, ~b_zero & ~(b_one & b_fire))
        # count_next = count + enqueue - pop, and pop only with count > 0
        queue_empty_next = self.axi_rst | (~enqueue & (queue_empty | ((count == 1) & pop)))
        queue_full_next = ~self.axi_rst & ((queue_full & (enqueue == pop)) | ((count == depth - 1) & enqueue & ~pop))
        head_sent_nonzero_next = ~self.axi_rst & Mux(w_fire, ~last_beat, head_sent != 0)
        early_next = queue_empty_next & (head_sent_nonzero_next | early_done_next)
        owed_next = r_nonzero_next | b_nonzero_next | ~queue_empty_next | early_next
        m.d.comb += owed.eq(~r_zero | ~b_zero | ~queue_empty | early)
        with m.If(~owed):
            m.d.sync += draining.eq(0)
        m.d.sync += [
            # draining after this cycle: set by rst (the reset value of `draining`), else kept while owed
            held_off.eq((rst | (draining & owed)) & owed_next),
            early.eq(early_next),
            queue_empty.eq(queue_empty_next),
            queue_full.eq(queue_full_next),
        ]
        return m
