r"""Write path (docs/DEVICE.md §4): M2S RwD -> AXI4 write bursts into the plane layout, then one NDR Cmp per write.

Pipeline (every valid comes from a register, so no valid depends on a ready; RwD.ready is the InputSkid's
register and AXI AW/W leave through OutputBuffers, hdl/stream_buffers.py, so every AXI output is a register):

  rwd -> skid -(MemRdFill, MemRdFillTEE)-> [fill buffer] -> fill (to ReqFrontEnd.fill: reads carried on RwD)
            \--> [held: one RwD + its address decode] --(weight-major)--> [gather buffer: one block]
                      |                     |                                   | flush
                      |                     \--(raw)---------------------------> [AxiWriter] --> axi (AW, W)
                      |                                  allocate entry e         (AWID = e)  <-- axi (B)
                      |                                         v                      | b (id, error)
                      |                           [WriteTable: in-flight entries] <----/
                      |                                         | cmp: all B responses in
                      \--(dropped: bad opcode, unmapped, read-only view)--> [NDR register] --> ndr

Units: GatherBuffer (hdl/engine/gather_buffer.py: the weight-major transpose, one block's plane lines, WSTRB,
tags), AxiWriter (hdl/backend/axi_writer.py: the issue stage, AW / W output buffers, B responses as a stream),
WriteTable (hdl/engine/write_table.py: in-flight entries, B counting, error marking, Cmps, `landed`, the
landing half of the block query). The skid, `held` and its decode, the join / flush decision, the NDR register
and the side outputs are in WritePath's elaborate.

- held: the RwD is decoded at the port (the skid keeps the decode beside a waiting RwD) and registered with its
  region match (one-hot, address_map.region_hits), its line relative to
  every region's base, its class (writable, raw, unmapped, read-only) and its block (address_map.match_block),
  so the join / flush decision reads registers only (whether the held write is of the gathered block is a
  flip-flop of its own, loaded from the compares of both blocks' next values); the rest of the decode
  (address_map.decode_in_region) feeds registers only.
  A write is *writable* when its opcode is MemWr/MemWrPtl or their TEE variants, its line falls in an enabled
  region (no address bit above the map set) and its view is raw (0) or weight-major (1). Everything else
  completes at once with NDR Cmp (BI-ConflictAck for a BIConflict): bad opcode counts rwd_bad_opcode only; no region counts nxm_writes; a region
  hit through views 2..7 counts wr_dropped (golden/device.py applies the same reading).
- Byte enables: MemWr ignores the message's byte_enable field (all bytes); MemWrPtl uses it.
- raw view: one 1-beat burst at the raw line, WSTRB = byte enables (after the gather buffer is flushed), a
  one-beat write of the AxiWriter.
- weight-major view, line j of block b (B-bit little-endian weights [j*W/B, (j+1)*W/B) of the block): plane p's
  slice is bit B-1-p of each of those weights (the GatherBuffer's transpose). One plane byte holds 8 weights =
  one aligned B-byte group of the weight-major line; a group is written only when all its B enables are set, a
  partly enabled group is skipped and counted in wr_partial_groups (never half a weight, no read-modify-write).
- Gather buffer (GatherBuffer, issue 13): weight-major lines of one block *join* it (one per cycle), merged into
  its B plane lines under byte masks, the WSTRB of the block being the union of the lines' strobes. A *flush* copies it
  into the AxiWriter's issue stage, which writes B beats, plane line p on beat p: one INCR burst of B beats when
  R = 1 (planes of a block are consecutive lines), B one-beat bursts at stride R when R > 1. Flush causes, in RwD order: B
  lines joined; a writable RwD of another block or of the raw view in held; an idle boundary; a region-table
  write (`regions_written`); a read of the block in the read engine's dispatch (`block_query`). The stage holds b_max plane lines, so the
  next block gathers while the previous one is written: whole blocks stream at one line per cycle.
- Idle boundary: `gather_idle_cycles` cycles (WRITE_GATHER_IDLE_CYCLES) with no RwD accepted on the port mark a
  flush point after the last RwD accepted. If every earlier RwD has left held, the buffer is flushed at once;
  otherwise the mark rides with the next RwD accepted (`flush_before`, through the skid), so the flush falls
  exactly between the same two RwDs whatever the backpressure: the testbench predicts it from the port
  handshakes (golden.device.gather_idle_boundary). It bounds the time to every Cmp.
- In-flight table (WriteTable, `max_outstanding` entries, at most 2**axi_id_bits): a raw write or a flushed
  block takes an entry (its index is the AWID of its bursts) with the tags and LD-IDs of its writes (up to
  b_max); the entry counts the B responses still due; when it reaches 0 the entry's Cmps leave, one per cycle,
  and the entry is freed after the last. BREADY is always 1.
- Backend errors (DEVICE.md §4): a B response with BRESP != OKAY marks its entry; the entry's record (WriteTable
  `failed`: its raw line, or its flushed block's B plane lines) is entered in the poison list (through
  `poison_insert`; a pending error insert has the port first and a
  poisoned write waits in `held` meanwhile, so a stream of poisoned writes cannot starve it) before the
  entry's Cmps may go out, so a read the host sends after a Cmp already sees the poison. Each failing B
  response counts axi_errors; the NDR is still Cmp (CXL has no error completion for a write).
- Block query (`block_query` -> `block_busy`): the read engine asks about the (region, block) of the read in its
  dispatch stage (stage B), valid for reads served from DRAM (mapped, legal k); `block_busy` is 1 while that
  block is gathered, or flushed and its B responses are not all in (and one cycle more, so the registered
  `landed` invalidation and a failed write's poison insert act first), and the read waits at dispatch; a query
  of the gathered block asks for its flush. So a read never sees a block's DRAM lines without the writes
  gathered for it. The read engine presents what stage B loads; this unit and the WriteTable track the query
  and keep a flip-flop per block compared with it (hdl/engine/block_query.py), so only flip-flops sit before
  `block_busy` and before the join's test of the held write's block.
- The NDR register serves completed entries first, then the dropped write in `held`. NDR carries MetaField
  No-Op, the tag and LD-ID; dev_load is left 0 for the top to fill.
- Side outputs, registered one cycle after the write leaves `held` (or the flush starts): `poison_insert` (a
  CSR inject; else the record of an entry whose B response failed; else a writable RwD with poison = 1: its raw
  line, or its weight-major block's B plane lines) and `poison_clear` (a CSR clear; a flush that writes every
  plane line of its block whole with no poisoned line gathered: those B lines; an unpoisoned raw write of a
  whole line: that line) for the poison list (DEVICE.md §4). A CSR command (`poison_command`) takes one cycle
  in which no write leaves held and no flush starts. `invalidate` (every writable RwD's (region,
  block)) for the read engine's block buffer, and `events`, the per-cycle counter increments: rwd_mem_wr,
  rwd_mem_wr_ptl, rwd_bad_opcode, nxm_writes, wr_dropped, poison_writes and wr_partial_groups when the write
  leaves held; dram_lines_written (beats) and write_bursts when a raw write or a flush loads the stage;
  bytes_strobed per W beat queued; axi_errors one cycle after the failing B response. The other entries of
  `events` are driven 0.
- `landed`: the (region, block) of an entry whose last B response arrived, registered (before its Cmps can
  leave): the read engine invalidates the block's slots again, so a read that ran concurrently with the write
  and filled a slot with the old planes cannot serve a read sent after the Cmp.
- `busy` is 1 while any write is held, gathered, issuing, awaiting B responses or waiting for its NDR;
  `outstanding` is the number of in-flight entries.

Requires W/B >= 8 for every B <= b_max (a plane slice of whole bytes): data_width >= 8 * b_max.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from smartquant.params import (
    ControllerParams, Counter, N_COUNTERS, View, RwdOpcode, NdrOpcode, META_FIELD_NO_OP, RWD_READS,
    WRITE_GATHER_IDLE_CYCLES,
)
from smartquant.hdl.backend.axi import AxiWriteSignature
from smartquant.hdl.backend.axi_writer import AxiWriter
from smartquant.hdl.engine.write_table import WriteTable
from smartquant.hdl.engine.gather_buffer import GatherBuffer
from smartquant.hdl.engine.block_query import block_query_layout, TrackedQuery
from smartquant.hdl.csr.layouts import region_entry_layout
from smartquant.hdl.cxl.frontend import opcode_in, read_request_layout
from smartquant.hdl.cxl.messages import rwd_layout, ndr_layout
from smartquant.hdl.engine.address_map import (
    plane_line, split_address, match_region, match_block, region_locals, decode_in_region,
)
from smartquant.hdl.engine.poison import (
    block_event_layout, poison_insert_layout, line_set_event_layout, leading_lines_mask,
)
from smartquant.hdl.stream_buffers import InputSkid, OutputBuffer
from smartquant.hdl.bits import popcount


# the event counters this unit drives (every other entry of `events` is 0)
WRITE_PATH_EVENTS = frozenset([Counter.RWD_MEM_WR, Counter.RWD_MEM_WR_PTL, Counter.RWD_BAD_OPCODE, Counter.NXM_WRITES,
                               Counter.WR_DROPPED, Counter.POISON_WRITES, Counter.WR_PARTIAL_GROUPS,
                               Counter.DRAM_LINES_WRITTEN, Counter.WRITE_BURSTS, Counter.BYTES_STROBED,
                               Counter.AXI_ERRORS, Counter.RWD_MEM_RD_FILL])


class WritePath(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams(), max_outstanding: int = 8,
                 gather_idle_cycles: int = WRITE_GATHER_IDLE_CYCLES):
        if max_outstanding < 1:
            self._MustUse__silence = True   # a refused instance is not an unused design
            raise ValueError(f"max_outstanding must be >= 1, got {max_outstanding}")
        if gather_idle_cycles < 2:
            self._MustUse__silence = True   # a refused instance is not an unused design
            raise ValueError(f"gather_idle_cycles must be >= 2, got {gather_idle_cycles}")
        self.params = params
        self.max_outstanding = min(max_outstanding, 1 << params.axi_id_bits)
        self.gather_idle_cycles = gather_idle_cycles
        p = params
        super().__init__({
            "rwd": In(stream.Signature(rwd_layout(p))),
            "ndr": Out(stream.Signature(ndr_layout(p))),
            "regions": In(data.ArrayLayout(region_entry_layout(p), p.n_regions)),
            "regions_written": In(1),
            # what the read engine's stage B loads (the read then in dispatch: its (region, block), valid when
            # served from DRAM) and whether that read must wait: its block is gathered or landing (see
            # elaborate, "block query", and hdl/engine/block_query.py)
            "block_query": In(block_query_layout(p)),
            "block_busy": Out(1),
            "fill": Out(stream.Signature(read_request_layout(p))),
            "axi": Out(AxiWriteSignature(p.dram_addr_bits, p.data_width, p.axi_id_bits)),
            "poison_insert": Out(poison_insert_layout(p)),
            "poison_clear": Out(line_set_event_layout(p)),
            # a CSR poison command: inject (clear = 0) or clear the line, taken with priority (see elaborate)
            "poison_command": In(data.StructLayout({"valid": 1, "clear": 1, "line": p.line_bits})),
            "invalidate": Out(block_event_layout(p)),
            "landed": Out(block_event_layout(p)),
            "events": Out(data.ArrayLayout(unsigned(8), N_COUNTERS)),
            "busy": Out(1),
            "outstanding": Out(range(self.max_outstanding + 1)),
        })
        # `room` (see elaborate) and what it must equal in every cycle, the AND of the two units' flip-flops it
        # copies: for tests (tests/test_write_path.py checks them every cycle)
        self.room = Signal(init=1)
        self.room_of_units = Signal()

    def _decode(self, m: Module, rwd, layout: data.StructLayout):
        """The RwD's region match (one-hot over the regions, the matched entry, the line relative to its base),
        its block under every region (address_map.match_block) and its class, as `layout` (the skid's
        `decoded`)."""
        p = self.params
        line, view, _, high = split_address(p, rwd.address)
        locals_ = region_locals(m, p, line, self.regions)
        onehot, region, entry, local = match_region(m, p, line, self.regions, locals_)
        # the TEE-intent variants write like the plain opcodes (no TSP: DEVICE.md §4)
        mem_wr = (rwd.opcode == RwdOpcode.MEM_WR) | (rwd.opcode == RwdOpcode.MEM_WR_TEE)
        mem_wr_ptl = (rwd.opcode == RwdOpcode.MEM_WR_PTL) | (rwd.opcode == RwdOpcode.MEM_WR_PTL_TEE)
        good_opcode = mem_wr | mem_wr_ptl
        region_hit = onehot.any() & (high == 0)   # as decode_in_region's region_hit
        raw = view == View.RAW
        writable_view = raw | (view == View.WEIGHT_MAJOR)
        decoded = Signal(layout)
        m.d.comb += [
            decoded.any_hit.eq(onehot.any()), decoded.region.eq(region), decoded.entry.eq(entry),
            decoded.local.eq(local), decoded.block.eq(match_block(m, p, rwd.address, onehot, self.regions, locals_)),
            decoded.mem_wr.eq(mem_wr), decoded.mem_wr_ptl.eq(mem_wr_ptl), decoded.raw.eq(raw),
            decoded.writable.eq(good_opcode & region_hit & writable_view),
            decoded.unmapped.eq(good_opcode & ~region_hit),
            decoded.read_only.eq(good_opcode & region_hit & ~writable_view),
        ]
        return decoded

    def elaborate(self, platform):
        m = Module()
        p = self.params
        line_bytes = p.line_bytes
        lb = p.line_bits
        G = p.b_max                      # lines a gathered block holds (and Cmps an in-flight entry owes)
        n_entries = self.max_outstanding
        idle_limit = self.gather_idle_cycles
        axi = self.axi

        # ---- idle boundary: T cycles without an accepted RwD mark a flush point in the RwD sequence ---------
        # The mark rides with the next RwD accepted (`flush_before`), or flushes the gather buffer at once when
        # every earlier RwD has already left `held`; either way the flush falls exactly between the same two
        # RwDs, whatever the backpressure (the testbench predicts it from the port handshakes alone).
        # The RwD is decoded at the port, before the skid: the skid's register keeps the decode beside the message
        # and its output mux selects tens of decoded bits after the region match, not the other way round (an
        # FPGA build's critical path ran `skid_valid` -> the mux over every payload bit -> the region match ->
        # `held_named`, fpga/README.md round 18). The decode is of the region table in the cycle the port
        # accepts the RwD (DEVICE.md §6: a request sent in the cycle the host sees a CSR B sees the new table).
        decoded_layout = data.StructLayout({
            "any_hit": 1, "region": p.region_index_bits, "entry": region_entry_layout(p), "local": lb,
            "block": lb, "mem_wr": 1, "mem_wr_ptl": 1, "raw": 1, "writable": 1, "unmapped": 1, "read_only": 1})
        skid_layout = data.StructLayout({"rwd": rwd_layout(p), "flush_before": 1, "decoded": decoded_layout})
        m.submodules.rwd_skid = rwd_skid = InputSkid(skid_layout)
        port_fire = Signal()
        boundary_pending = Signal()   # a boundary after the last RwD accepted, not yet handed on
        rearm = Signal()              # a read leaving on `fill` hands its boundary mark on to the next RwD
        m.d.comb += [
            rwd_skid.i.valid.eq(self.rwd.valid),
            rwd_skid.i.p.rwd.eq(self.rwd.p),
            rwd_skid.i.p.flush_before.eq(boundary_pending),
            rwd_skid.i.p.decoded.eq(self._decode(m, self.rwd.p, decoded_layout)),
            self.rwd.ready.eq(rwd_skid.i.ready),
            port_fire.eq(self.rwd.valid & rwd_skid.i.ready),
        ]
        idle = Signal(range(idle_limit + 1), init=idle_limit)   # cycles since the last RwD accepted (saturating)
        idle_fire = Signal()
        m.d.comb += idle_fire.eq((idle == idle_limit - 1) & ~port_fire)
        with m.If(port_fire):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != idle_limit):
            m.d.sync += idle.eq(idle + 1)

        # ---- held: one RwD and its decode --------------------------------------------------------------
        # RwD.ready is a register (the skid's): the decode of `held` and the NDR handshake stay inside
        rwd_in = rwd_skid.o
        # Reads carried on RwD (MemRdFill, MemRdFillTEE: params.RWD_READS) leave here for the read side, in RwD
        # order behind the port's skid, so the idle boundary keeps counting at the port; a boundary mark such a
        # read carries is re-armed for the next RwD (or flushes once every earlier RwD has joined); such a read
        # waits while an RwD is being accepted, so the mark cannot miss that one.
        # The fill stream leaves through an output buffer (registered valid, payload and ready), so the read
        # engine's readiness never reaches rwd.ready or `held` in the same cycle (an FPGA build's critical path
        # ran skid -> fill -> front end -> the old read gate's decode -> fill.ready -> held). The RwD after a
        # fill waits in the skid until the buffer is empty.
        is_fill = opcode_in(rwd_in.p.rwd.opcode, RWD_READS)
        m.submodules.fill_buffer = fill_buffer = OutputBuffer(read_request_layout(p))
        wiring.connect(m, fill_buffer.o, wiring.flipped(self.fill))
        fill_pending = fill_buffer.o.valid | ~fill_buffer.i.ready   # both registers
        fill_fire = Signal()
        m.d.comb += [
            fill_buffer.i.valid.eq(rwd_in.valid & is_fill & ~(rwd_in.p.flush_before & port_fire)),
            fill_buffer.i.p.address.eq(rwd_in.p.rwd.address),
            fill_buffer.i.p.tag.eq(rwd_in.p.rwd.tag),
            fill_buffer.i.p.ld_id.eq(rwd_in.p.rwd.ld_id),
            fill_fire.eq(fill_buffer.i.valid & fill_buffer.i.ready),
            rearm.eq(fill_fire & rwd_in.p.flush_before),
        ]
        held = Signal(rwd_layout(p))
        held_flush_before = Signal()
        held_valid = Signal()
        held_leaves = Signal()
        m.d.comb += rwd_in.ready.eq(Mux(is_fill, fill_fire, (~held_valid | held_leaves) & ~fill_pending))
        # The region match (done at the port, above) is registered beside the RwD as it enters `held`: the
        # one-hot match, the selected region's entry and the line relative to its base, so the decode of `held`
        # starts from them.
        # What the join / flush decision (which empties `held` and enables its load) needs is registered too:
        # the write's class (writable, raw, ...) and its block, decoded under every region beside the region
        # compares (address_map.match_block), so the decision compares registers only (an FPGA build's
        # critical path ran `held` -> decode shifts -> join -> the clock enable of `held`).
        held_any_hit = Signal()
        held_region = Signal(p.region_index_bits)
        held_entry = Signal(region_entry_layout(p))
        held_line = Signal(lb)   # L: the line relative to the region's base
        held_block = Signal(lb)  # DecodeLayout.block
        is_mem_wr = Signal()
        is_mem_wr_ptl = Signal()
        is_raw = Signal()
        writable = Signal()
        unmapped = Signal()
        read_only = Signal()
        incoming = rwd_in.p.rwd
        decoded = rwd_in.p.decoded
        incoming_region = decoded.region
        incoming_block = decoded.block
        held_loads = Signal()
        m.d.comb += held_loads.eq(rwd_in.valid & rwd_in.ready & ~is_fill)
        with m.If(held_loads):
            m.d.sync += [held.eq(incoming), held_flush_before.eq(rwd_in.p.flush_before), held_valid.eq(1),
                         held_any_hit.eq(decoded.any_hit), held_region.eq(incoming_region),
                         held_entry.eq(decoded.entry), held_line.eq(decoded.local),
                         held_block.eq(incoming_block),
                         is_mem_wr.eq(decoded.mem_wr),
                         is_mem_wr_ptl.eq(decoded.mem_wr_ptl),
                         is_raw.eq(decoded.raw),
                         writable.eq(decoded.writable),
                         unmapped.eq(decoded.unmapped),
                         read_only.eq(decoded.read_only)]
        with m.Elif(held_leaves):
            m.d.sync += held_valid.eq(0)
        pipeline_empty = Signal()     # every RwD accepted so far has left `held`
        m.d.comb += pipeline_empty.eq(~rwd_in.valid & (~held_valid | held_leaves))

        # the rest of the decode (lines, B, R) feeds only registers: the gather buffer, the stage, side outputs
        decoded = decode_in_region(m, p, held.address, held_any_hit, held_region, held_entry, held_line)
        good_opcode = is_mem_wr | is_mem_wr_ptl
        byte_enable = Signal(line_bytes)
        m.d.comb += byte_enable.eq(Mux(is_mem_wr, (1 << line_bytes) - 1, held.byte_enable))

        # plane line 0 of the held block, from registers (the block and its region entry), not from the decode
        wm_first_line = Signal(lb)
        m.d.comb += wm_first_line.eq(plane_line(held_entry.base_line, held_block, Const(0, 4), held_entry.log2_b,
                                                held_entry.log2_r, lb))

        # ---- gather buffer: the weight-major lines of one block, as plane lines and their common WSTRB ------
        m.submodules.gather_buffer = gather_buffer = GatherBuffer(p)
        gathered = gather_buffer.gathered
        flush_request = Signal()   # flush before any later line joins (idle boundary, region-table write)

        # ---- in-flight table: one entry per AXI write (a raw line, or a flushed block and its Cmps) ------
        m.submodules.write_table = table = WriteTable(p, n_entries)
        free_entry = table.free_id
        m.d.comb += self.outstanding.eq(table.outstanding)

        # ---- AXI writer: the issue stage (one raw write or flushed block) and the AW / W / B channels -------
        m.submodules.axi_writer = axi_writer = AxiWriter(p, G)
        wiring.connect(m, axi_writer.axi, wiring.flipped(axi))
        write = axi_writer.write
        # Room for a write: the AXI writer's stage is free and the table has a free entry, both flip-flops in
        # their units, kept here as one flip-flop of the write path loaded with their next values (`room` ==
        # write.ready & allocate.ready in every cycle). The flush decision and the join read it: the writer's
        # flip-flop sits by the AXI W data, far from `held`, and its net into the join was the first 4 ns of a
        # 75 MHz build's worst path (write.ready -> join -> held_loads -> held_named, timing round 20c).
        room = self.room
        m.d.sync += room.eq(axi_writer.ready_next & table.allocate_ready_next)
        m.d.comb += self.room_of_units.eq(write.ready & table.allocate.ready)

        # ---- what held does this cycle: join the gather buffer, load the stage (raw), or drop -------------
        # A failed write's poison insert waits for no one: a poisoned write stays in held while the table has
        # a failed record to hand out.
        poison_blocked = held.poison & table.failed.valid
        # A CSR poison command takes the poison ports for one cycle in which nothing leaves held and no flush
        # starts (so no write's insert or clear meets it); it is a rare host action, so writes lose one cycle.
        command_pending = Signal()
        command_clear = Signal()
        command_line = Signal(lb)
        with m.If(self.poison_command.valid):
            m.d.sync += [command_pending.eq(1), command_clear.eq(self.poison_command.clear),
                         command_line.eq(self.poison_command.line)]
        with m.Elif(command_pending):
            m.d.sync += command_pending.eq(0)
        # Whether the held write's block is the gathered block's is a flip-flop (the same function as the compare
        # of the two registers, so no compare sits before the join and the flush decision): it is loaded from
        # the compares of what both registers hold next cycle. The buffer's block takes the held write's when a
        # line starts a block (decoded.region is held_region); `held` takes the incoming RwD's. (It is read only
        # while a write is held, but kept exact in every cycle.)
        held_in_gathered = Signal(init=1)   # every (region, block) register starts at 0: equal
        starts_block = gather_buffer.starts_block
        incoming_is_held = (incoming_region == held_region) & (incoming_block == held_block)
        incoming_is_gathered = (incoming_region == gathered.region) & (incoming_block == gathered.block)
        m.d.sync += held_in_gathered.eq(Mux(held_loads, Mux(starts_block, incoming_is_held, incoming_is_gathered),
                                            starts_block | held_in_gathered))
        same_block = gathered.valid & held_in_gathered
        # the gathered block must go out first: the held write is raw (kept in order with the block's plane
        # lines), of another block, or after an idle boundary; or the block is whole; or a flush was asked for
        evicting = held_valid & writable & (is_raw | ~same_block | held_flush_before)
        flush_cause = Signal()
        m.d.comb += flush_cause.eq(gathered.full | flush_request | evicting)
        do_flush = Signal()
        m.d.comb += do_flush.eq(gathered.valid & flush_cause & room & ~command_pending)
        # The query of the read in dispatch, tracked here with a flip-flop per block it is compared with: the
        # held write's (loaded with `held`) and the gathered block's (loaded when a line starts a block, from
        # held's, whose match is then the held write's flip-flop), see hdl/engine/block_query.py. So no compare
        # sits between the read engine's stage B and the join below or `block_busy`.
        query = TrackedQuery(m, p, self.block_query, "query")
        held_named = query.names("held_named", held_region, held_block, held_loads, incoming_region,
                                 incoming_block, select_after=True)
        gathered_named = query.names("gathered_named", gathered.region, gathered.block,
                                     gather_buffer.starts_block, held_region, held_block, new_is_current=held_named)
        # a line of the block the read in dispatch names waits until that read has gone: a read held there
        # for the block's flush would otherwise flush each later line of the block on its own, and could be
        # held as long as the lines keep coming (decoded.region is held_region)
        read_names_held = query.valid & held_named
        # A weight-major write joins when the buffer is empty, or holds its block with no flush due, or is
        # flushed in this cycle. Written without do_flush: given the rest of join's terms (a writable weight-major
        # RwD in held, no command), do_flush = gathered.valid & must_flush & room, and
        # `do_flush | ~gathered.valid | ~must_flush` is `~gathered.valid | ~must_flush | room`,
        # so join (which enables `held` and the RwD skid) is one level shallower.
        must_flush = gathered.full | flush_request | ~same_block | held_flush_before
        join = Signal()
        m.d.comb += join.eq(held_valid & writable & ~is_raw & ~poison_blocked & ~command_pending & ~read_names_held
                            & (~gathered.valid | ~must_flush | room))
        load_raw = Signal()
        m.d.comb += load_raw.eq(held_valid & writable & is_raw & ~gathered.valid & room
                                & ~poison_blocked & ~command_pending)
        load_stage = do_flush | load_raw

        # a raw write, or a flushed block: plane line p on beat p (beats past a raw write's one are never sent).
        # A load is a flush exactly when a block is gathered (a raw write loads only into an empty buffer), so the
        # payload selects on gathered.valid, a flip-flop, not on do_flush: the AxiWriter's stage and the table's
        # free entries take the payload whether or not it loads (see there), so the flush decision drives no
        # wide clock enable or mux there
        flushing = gathered.valid
        m.d.comb += [
            write.valid.eq(load_stage),
            write.p.id.eq(free_entry),
            write.p.line.eq(Mux(flushing, gathered.first_line, decoded.raw_line)),
            write.p.log2_r.eq(Mux(flushing, gathered.log2_r, 0)),
            write.p.log2_beats.eq(Mux(flushing, gathered.log2_b, 0)),
            write.p.data.eq(Cat(Mux(flushing, gathered.planes[0], held.data), *(gathered.planes[i] for i in range(1, G)))),
            write.p.strobe.eq(Mux(flushing, gathered.strobe, byte_enable)),
        ]

        # the line in held joins the gather buffer (a line joining as the buffer flushes starts the next block)
        joining_line = {"valid": join, "data": held.data, "byte_enable": byte_enable,
                        "line_in_block": decoded.line_in_slot, "log2_b": decoded.log2_b, "log2_r": decoded.log2_r,
                        "first_line": wm_first_line, "region": decoded.region, "block": held_block, "tag": held.tag,
                        "ld_id": held.ld_id, "poison": held.poison}
        m.d.comb += [getattr(gather_buffer.join, name).eq(value) for name, value in joining_line.items()]
        m.d.comb += gather_buffer.flush.eq(do_flush)

        # ---- block query: a read in the read engine's dispatch stage whose block is gathered, or flushed and
        # not yet landed, is held there (and asks for the flush), so it never sees the block's DRAM lines
        # without the writes gathered for it. The query (valid only for reads served from DRAM: mapped, legal
        # k) is tracked here and in the table with match flip-flops, so only flip-flops sit before
        # `block_busy`. A flushed block stays busy one cycle after its last B response (and after its failed
        # write's poison insert): the `landed` invalidation and the poison-list insert, both registered, have
        # then taken effect before the read dispatches.
        m.d.comb += table.block_query.eq(self.block_query)
        query_gathered = Signal()
        query_landing = Signal()
        m.d.comb += [
            query_gathered.eq(query.valid & gathered.valid & gathered_named),
            query_landing.eq(table.query_landing),
            self.block_busy.eq(query_gathered | query_landing),
        ]

        # flush requests: an idle boundary with every earlier RwD already joined, a boundary carried by a
        # dropped write, a region-table write (lines gathered before it go where they were decoded), or a read
        # of the gathered block
        boundary_now = boundary_pending & pipeline_empty
        drop = Signal()
        # (a query in the cycle its block is flushed asks nothing more: the request would flush the next block)
        with m.If(boundary_now | self.regions_written | (drop & held_flush_before) | (query_gathered & ~do_flush)):
            m.d.sync += flush_request.eq(1)
        with m.Elif(do_flush | ~gathered.valid):
            m.d.sync += flush_request.eq(0)
        with m.If(idle_fire | rearm):
            m.d.sync += boundary_pending.eq(1)
        with m.Elif(port_fire | boundary_now):
            m.d.sync += boundary_pending.eq(0)

        # ---- NDR register: completed writes first, then a dropped write --------------------------------
        ndr = self.ndr
        m.d.comb += table.cmp.ready.eq(~ndr.valid | ndr.ready)
        with m.If(~ndr.valid | ndr.ready):
            with m.If(table.cmp.valid):
                m.d.sync += [ndr.valid.eq(1), ndr.p.opcode.eq(NdrOpcode.CMP), ndr.p.tag.eq(table.cmp.p.tag),
                             ndr.p.ld_id.eq(table.cmp.p.ld_id)]
            with m.Elif(held_valid & ~writable & ~command_pending):
                m.d.comb += drop.eq(1)
                # a dropped RwD gets Cmp, except BIConflict: BI-ConflictAck (DEVICE.md §4)
                m.d.sync += [ndr.valid.eq(1), ndr.p.tag.eq(held.tag), ndr.p.ld_id.eq(held.ld_id),
                             ndr.p.opcode.eq(Mux(held.opcode == RwdOpcode.BI_CONFLICT, NdrOpcode.BI_CONFLICT_ACK,
                                                 NdrOpcode.CMP))]
            with m.Else():
                m.d.sync += ndr.valid.eq(0)
        m.d.comb += [
            ndr.p.meta_field.eq(META_FIELD_NO_OP),
            ndr.p.meta_value.eq(0),
            ndr.p.dev_load.eq(0),
        ]
        m.d.comb += held_leaves.eq(join | load_raw | drop)

        # B responses go to the table (BREADY is always 1: every B response has its entry)
        wiring.connect(m, axi_writer.b, table.b)
        b_error = axi_writer.b.valid & axi_writer.b.p.error
        # A failed write's insert has the port first (a poisoned write waits in held meanwhile, see join and
        # load_raw): each pending error takes one cycle, so neither side waits longer than the table is deep.
        m.d.comb += table.failed.ready.eq(~command_pending)
        error_insert = table.failed.valid & table.failed.ready

        # a raw write, or a flushed block, takes the free entry (its tags in write order)
        m.d.comb += [
            table.allocate.valid.eq(load_stage),
            table.allocate.p.gathered.eq(flushing),
            table.allocate.p.cmps.eq(Mux(flushing, gathered.count, 1)),
            table.allocate.p.region.eq(Mux(flushing, gathered.region, decoded.region)),
            table.allocate.p.block.eq(Mux(flushing, gathered.block, held_block)),
            table.allocate.p.line.eq(write.p.line),
            table.allocate.p.log2_r.eq(write.p.log2_r),
            table.allocate.p.log2_beats.eq(write.p.log2_beats),
            table.allocate.p.tags.eq(Cat(Mux(flushing, gathered.tags[0], held.tag), *(gathered.tags[i] for i in range(1, G)))),
            table.allocate.p.ld_ids.eq(Cat(Mux(flushing, gathered.ld_ids[0], held.ld_id), *(gathered.ld_ids[i] for i in range(1, G)))),
        ]

        # ---- side outputs, one cycle after the write leaves held ---------------------------------------
        enters = join | load_raw
        # poison records: a CSR inject; else a failed write's record; else a poisoned write's (a raw line, or its
        # block's B plane lines). Clears: a CSR clear; a flush that writes every plane line of its block whole
        # with no poisoned line gathered; an unpoisoned raw write of a whole line. (A poisoned write never
        # clears: its own record covers its lines.) The list applies a clear before an insert of the same cycle.
        insert = self.poison_insert.record
        block_mask = leading_lines_mask(decoded.log2_b)
        m.d.sync += self.poison_insert.valid.eq((command_pending & ~command_clear) | error_insert
                                                | (enters & held.poison))
        with m.If(command_pending):
            m.d.sync += [insert.first.eq(command_line), insert.log2_stride.eq(0), insert.mask.eq(1)]
        with m.Elif(error_insert):
            m.d.sync += insert.eq(table.failed.p)
        with m.Elif(is_raw):
            m.d.sync += [insert.first.eq(decoded.raw_line), insert.log2_stride.eq(0), insert.mask.eq(1)]
        with m.Else():
            m.d.sync += [insert.first.eq(wm_first_line), insert.log2_stride.eq(decoded.log2_r),
                         insert.mask.eq(block_mask)]
        clear = self.poison_clear.lines
        flush_clears = do_flush & (gathered.strobe == (1 << line_bytes) - 1) & ~gathered.poisoned
        raw_clears = load_raw & ~held.poison & (byte_enable == (1 << line_bytes) - 1)
        m.d.sync += self.poison_clear.valid.eq((command_pending & command_clear) | flush_clears | raw_clears)
        # (and the set's end line, first + (count << log2_stride), registered here for the poison list's clear test)
        with m.If(command_pending):
            m.d.sync += [clear.first.eq(command_line), clear.log2_stride.eq(0), clear.count.eq(1),
                         clear.end.eq(command_line + 1)]
        with m.Elif(do_flush):
            m.d.sync += [clear.first.eq(gathered.first_line), clear.log2_stride.eq(gathered.log2_r),
                         clear.count.eq(Const(1, 5) << gathered.log2_b),
                         clear.end.eq(gathered.first_line + ((Const(1, 5) << gathered.log2_b) << gathered.log2_r))]
        with m.Else():
            m.d.sync += [clear.first.eq(decoded.raw_line), clear.log2_stride.eq(0), clear.count.eq(1),
                         clear.end.eq(decoded.raw_line + 1)]
        m.d.sync += [
            self.invalidate.valid.eq(enters),
            self.invalidate.region.eq(decoded.region),
            self.invalidate.block.eq(held_block),
        ]
        # `landed`: the write's last B response arrives (registered, like `invalidate`): two cycles before its
        # Cmp can leave the NDR register, so the read engine drops slots filled while the write was in flight
        m.d.comb += self.landed.eq(table.landed)
        events = self.events
        m.d.sync += events.eq(0)
        m.d.sync += events[Counter.AXI_ERRORS].eq(b_error)
        m.d.sync += events[Counter.RWD_MEM_RD_FILL].eq(fill_fire)
        with m.If(held_leaves):
            m.d.sync += [
                events[Counter.RWD_MEM_WR].eq(is_mem_wr),
                events[Counter.RWD_MEM_WR_PTL].eq(is_mem_wr_ptl),
                events[Counter.RWD_BAD_OPCODE].eq(~good_opcode),
                events[Counter.NXM_WRITES].eq(unmapped),
                events[Counter.WR_DROPPED].eq(read_only),
                events[Counter.POISON_WRITES].eq(writable & held.poison),
                events[Counter.WR_PARTIAL_GROUPS].eq(Mux(join, gather_buffer.partial_groups, 0)),
            ]
        # the DRAM traffic is counted when it is committed to the stage: a raw line, or a gathered block
        with m.If(do_flush):
            gathered_beats = Const(1, 5) << gathered.log2_b
            m.d.sync += [
                events[Counter.DRAM_LINES_WRITTEN].eq(gathered_beats),
                events[Counter.WRITE_BURSTS].eq(Mux(gathered.log2_r == 0, 1, gathered_beats)),
            ]
        with m.Elif(load_raw):
            m.d.sync += [
                events[Counter.DRAM_LINES_WRITTEN].eq(1),
                events[Counter.WRITE_BURSTS].eq(1),
            ]
        # bytes_strobed per W beat as it is queued (a whole block's count would not fit an 8-bit event)
        with m.If(axi_writer.strobe_queued.valid):
            m.d.sync += events[Counter.BYTES_STROBED].eq(popcount(axi_writer.strobe_queued.strobe))

        m.d.comb += self.busy.eq(held_valid | axi_writer.busy | table.busy | ndr.valid | gathered.valid
                                 | rwd_in.valid | fill_pending)
        return m
