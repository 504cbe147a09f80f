"""AxiReader: the read engine's AXI read manager (AR issue and R routing), docs/DEVICE.md §5.

  fetch stream --> fetch FIFO --[AR register]--> AXI AR
          \\--(bypass when the FIFO is empty)--/
          \\--> route FIFO --\\
  AXI R --> skid (registered RREADY) --+--> beat stream (data, error, plane number, last, the fetch's route)

A fetch is `k` lines of DRAM from `line`: one INCR burst of k lines (log2_r = 0), k one-line bursts with a
stride of R = 1 << log2_r lines (a block of a superblock with R > 1), or, for a raw read, one 1-line burst.
AR is an output register (valid, address and length are flip-flops). It loads the fetch FIFO's head, or the
fetch offered in this cycle when the FIFO is empty (no cycle lost to the FIFO, so Req -> AR stays within the
read engine's latency budget); a strided fetch stays in it for its k bursts, stepping the address by R.
All bursts use ARID 0, so R beats return in issue order: the route FIFO (one entry per fetch) tells which
fetch each beat answers, and every beat leaves on `beat` with its plane number (beat index within the fetch),
`last`, its RRESP error flag and the fetch's `route` payload (opaque here; the read engine's packer settings).
R enters through a skid (InputSkid): RREADY is a register, so the consumer's readiness stays inside.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams
from smartquant.hdl.backend.axi import AxiReadSignature, AXI_BURST_INCR, AXI_RESP_OKAY
from smartquant.hdl.stream_buffers import InputSkid


def fetch_layout(params: ControllerParams, route_shape) -> data.StructLayout:
    """One fetch: `k` lines from `line` (stride 1 << log2_r), or one line if `raw`; `route` comes back with
    every R beat of the fetch."""
    return data.StructLayout({"raw": 1, "line": params.line_bits, "k": params.k_bits, "log2_r": params.log2_r_bits,
                              "route": route_shape})


def beat_layout(params: ControllerParams, route_shape) -> data.StructLayout:
    """One R beat, routed: its fetch's `raw` flag, `k` and `route`, the plane (beat number in the fetch) and
    `last` (the fetch's final beat), the data and whether RRESP answered an error."""
    return data.StructLayout({"data": params.data_width, "error": 1, "raw": 1, "k": params.k_bits,
                              "plane": params.k_bits, "last": 1, "route": route_shape})


class AxiReader(wiring.Component):
    """`fetch` (ready = room in both FIFOs, independent of valid), `beat` (R beats in order), `axi` (the read
    half of the AXI manager port). `busy`: a fetch or beat is still in the unit."""

    def __init__(self, params: ControllerParams, route_shape, fetch_depth: int, route_depth: int):
        self.params = params
        self.route_shape = route_shape
        self.fetch_depth = fetch_depth
        self.route_depth = route_depth
        super().__init__({
            "fetch": In(stream.Signature(fetch_layout(params, route_shape))),
            "beat": Out(stream.Signature(beat_layout(params, route_shape))),
            "axi": Out(AxiReadSignature(params.dram_addr_bits, params.data_width, params.axi_id_bits)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        lb = p.line_bits
        axi = self.axi
        layout = fetch_layout(p, self.route_shape)
        # `last_plane` = k - 1, computed when the fetch is queued (the R router's last-beat test is then a compare
        # of two registers)
        route_layout = data.StructLayout({"raw": 1, "k": p.k_bits, "last_plane": p.k_bits,
                                          "route": self.route_shape})
        m.submodules.fetch_fifo = fetch_fifo = SyncFIFO(width=layout.size, depth=self.fetch_depth)
        # The route FIFO's head is a register (SyncFIFOBuffered: its r_data is the read port's output register),
        # so the R router's decisions (beat.ready -> the packer's load and start, the block buffer's error FIFO)
        # start at flip-flops, not at the FIFO storage's asynchronous read. It costs a cycle from a fetch to its
        # route entry (two instead of one), never seen: the fetch's first R beat comes at the earliest in the
        # second cycle after it (AR register, then the AR handshake; AXI forbids RVALID before it). Its capacity
        # stays route_depth: `route_count` (entries written and not popped: the buffered FIFO's `level`, kept as
        # a register of its own because `level` is an adder, inner level + head valid, and fetch.ready sits in
        # the dispatch cone) decides fetch.ready; one entry of the buffered FIFO's route_depth + 1 is never used.
        m.submodules.route_fifo = route_fifo = SyncFIFOBuffered(width=route_layout.size, depth=self.route_depth + 1)
        route_count = Signal(range(self.route_depth + 1))

        # ---- AR issue ----------------------------------------------------------------------------------
        offered = self.fetch.valid & self.fetch.ready
        fetch_bypass = Signal()   # the fetch offered now goes straight into the AR register
        ar_valid = Signal()
        ar_line = Signal(lb)
        ar_len = Signal(8)
        ar_bursts_left = Signal(p.k_bits)   # bursts of the fetch after the one presented
        ar_log2_stride = Signal(3)
        ar_fire = ar_valid & axi.arready
        ar_free = Signal()
        next_fetch = Signal(layout)
        next_single_burst = next_fetch.raw | (next_fetch.log2_r == 0)
        route_entry = Signal(route_layout)
        m.d.comb += [
            self.fetch.ready.eq(fetch_fifo.w_rdy & (route_count != self.route_depth)),
            fetch_fifo.w_data.eq(self.fetch.p),
            fetch_fifo.w_en.eq(offered & ~fetch_bypass),
            route_entry.raw.eq(self.fetch.p.raw),
            route_entry.k.eq(self.fetch.p.k),
            route_entry.last_plane.eq(self.fetch.p.k - 1),
            route_entry.route.eq(self.fetch.p.route),
            route_fifo.w_data.eq(route_entry),
            route_fifo.w_en.eq(offered),
            ar_free.eq(~ar_valid | (ar_fire & (ar_bursts_left == 0))),
            fetch_bypass.eq(~fetch_fifo.r_rdy & ar_free),
            next_fetch.eq(Mux(fetch_fifo.r_rdy, fetch_fifo.r_data, self.fetch.p.as_value())),
            fetch_fifo.r_en.eq(ar_free),
            axi.arvalid.eq(ar_valid),
            axi.araddr.eq(Cat(Const(0, p.line_offset_bits), ar_line)),
            axi.arid.eq(0),
            axi.arsize.eq(p.line_offset_bits),
            axi.arburst.eq(AXI_BURST_INCR),
            axi.arlen.eq(ar_len),
        ]
        with m.If(ar_free):
            m.d.sync += [
                ar_valid.eq(fetch_fifo.r_rdy | offered),
                ar_line.eq(next_fetch.line),
                ar_len.eq(Mux(next_single_burst, Mux(next_fetch.raw, 0, next_fetch.k - 1), 0)),
                ar_bursts_left.eq(Mux(next_single_burst, 0, next_fetch.k - 1)),
                ar_log2_stride.eq(next_fetch.log2_r),
            ]
        with m.Elif(ar_fire):
            m.d.sync += [
                ar_line.eq(ar_line + (Const(1, lb) << ar_log2_stride)),
                ar_bursts_left.eq(ar_bursts_left - 1),
            ]

        # ---- R routing ---------------------------------------------------------------------------------
        m.submodules.r_skid = r_skid = InputSkid(data.StructLayout({"data": p.data_width, "resp": 2}))
        r_in = r_skid.o
        route = Signal(route_layout)
        beat = Signal(p.k_bits)
        last_beat = route.raw | (beat == route.last_plane)
        m.d.comb += [
            r_skid.i.valid.eq(axi.rvalid),
            r_skid.i.p.data.eq(axi.rdata),
            r_skid.i.p.resp.eq(axi.rresp),
            axi.rready.eq(r_skid.i.ready),
            route.eq(route_fifo.r_data),
            self.beat.valid.eq(r_in.valid & route_fifo.r_rdy),
            self.beat.p.data.eq(r_in.p.data),
            self.beat.p.error.eq(r_in.p.resp != AXI_RESP_OKAY),
            self.beat.p.raw.eq(route.raw),
            self.beat.p.k.eq(route.k),
            self.beat.p.plane.eq(beat),
            self.beat.p.last.eq(last_beat),
            self.beat.p.route.eq(route.route),
            r_in.ready.eq(route_fifo.r_rdy & self.beat.ready),
        ]
        with m.If(r_in.valid & r_in.ready):
            with m.If(last_beat):
                m.d.comb += route_fifo.r_en.eq(1)
                m.d.sync += beat.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        popped = route_fifo.r_en & route_fifo.r_rdy
        with m.If(offered & ~popped):
            m.d.sync += route_count.eq(route_count + 1)
        with m.Elif(popped & ~offered):
            m.d.sync += route_count.eq(route_count - 1)

        m.d.comb += self.busy.eq(fetch_fifo.r_rdy | ar_valid | r_in.valid | (route_count != 0))
        return m
