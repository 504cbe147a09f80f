r"""Read engine (docs/DEVICE.md §3 and §5): in-order reads through the block buffer, AXI AR/R, DRS responses.

Pipeline (every stage a FIFO or a register, so each channel takes backpressure and one line per cycle flows):

  read request stream -[A]-skid-[B]-[dispatch]--> DrsServer: serve FIFO --[serve]--> DRS register --> output buffer
   A: region select,       (hit/miss,     \--> AxiReader: fetch FIFO, AR register --> AXI AR   ^      ^
      block, k             victim,             AXI R --> AxiReader beats --> packer --> BlockBuffer
   B: decode, tag lookup    counters)                                    \--> DrsServer raw line FIFO

Units: BlockBuffer (hdl/engine/block_buffer.py: slot tags, generations, fills, the buffer memory), DrsServer
(hdl/engine/drs_server.py: serve FIFO, poison column, raw lines, S2M DRS), AxiReader (hdl/backend/axi_reader.py),
BlockPacker (hdl/engine/packer.py). This unit holds the request stages, dispatch and the R beat router.
- Stage A registers a one-hot region select (base_line <= line < end_line per region, end_line precomputed
  by the CSR block), the line relative to the selected region's base, and the block, k, k legality and line j
  decoded under every region side by side and selected by the match (address_map.match_early_decode), so stage
  B's key and its readable test start at registers. A skid (InputSkid) between A and B holds one read while
  dispatch waits: stage A's load and read.ready are flip-flops, not dispatch. Stage B registers the decode of
  hdl/engine/address_map.py (block, line, k, view checks, the DRAM line of plane 0) and the block buffer's
  `lookup` of the block key (the compare with every slot tag, forwarding the allocation dispatch makes in the
  same cycle).
- dispatch handles one request per cycle, in arrival order, from stage B's registers. A read served from DRAM
  (mapped, legal k) whose block the write path holds (gathered, or flushed and not landed: its `block_query` /
  `block_busy`, DEVICE.md §4; the query is what stage B loads, so the write path answers from flip-flops,
  hdl/engine/block_query.py) waits there, and the write path flushes the gathered block. Decode errors (no region)
  and holes (in a region: packed j >= k, illegal k, views 6 and 7) go straight to the serve FIFO. Raw reads
  queue one 1-line burst. Packed / expanded reads claim a block buffer slot (key: region, block, expanded, k,
  rounding): a hit, or on a miss the round-robin victim (its tag valid at once: the look-ahead) and the fetch
  of planes 0..k-1. Dispatch stalls only when the victim already has MAX_LIVE_GENERATIONS generations alive
  (block_buffer.py) or a queue is full. The serve queue is request_depth + b_max deep so that the look-ahead
  covers a whole block's fetch latency: packed streaming at power-of-two k gives one DRS per cycle when
  memory returns one line per cycle.
- The AxiReader issues each fetch: one INCR burst of k lines (R = 1), k one-line bursts with stride R (R > 1),
  or one 1-line burst for a raw read; a fetch dispatched while its FIFO is empty goes straight into the AR
  register. It hands back the R beats in order with their plane number and the fetch's route (packer
  settings); this unit sends each beat to the packer or to the DRS server's raw line FIFO. RREADY is a register
  (the reader's R skid).
- The packer writes the block's output lines into the block buffer's slot, where the DRS server serves them.
Poison is sampled at dispatch from the poison list's query of the read's DRAM lines (stage B registers the raw
line or plane-0 line, the stride and k; a read outstanding while the list changes may see either state,
DEVICE.md §4); the list's answer (registered in the list, a cycle after dispatch) goes to the DrsServer's poison
column beside the serve entry. DevLoad: drs_server.py.
A block is one burst at R = 1 (DEVICE.md §5); it never crosses 4 KiB because region bases are B-line aligned
(DEVICE.md §2, a misaligned region is inactive). The testbench's AXI memory checks the rule on every burst.
Backend errors (DEVICE.md §3): an R beat with RRESP != OKAY poisons what it fed. The R router ORs the RRESP
errors of a block's plane beats into one flag per fill (the block buffer's `fill_error`, in step with the
packer's blocks), which poisons every DRS served from that fetch, hits included, until the slot is refilled.
A raw line carries its beat's flag through the raw FIFO. Counted in axi_errors (per beat); poison_reads counts
every mapped DRS sent with poison = 1, whatever the reason.
Toward-zero expanded reads of INT regions (`toward_zero` bit of the region, DEVICE.md §3): the dropped bits
are copies of the sign, i.e. planes k..B-1 equal plane 0. The R router loads plane 0 of the block into the
packer's planes k..B-1 as well (the load's `also`), waits a cycle per copied plane after the k fetched planes
(the timing of B loads), then starts the block at k = B (B load cycles for the B lines the block emits, so
streaming stays one line per cycle; DRAM traffic stays k lines). BF16 regions need no fill (sign-magnitude truncation is toward zero): their packer start is floor.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Const, Mux, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams, Counter, N_COUNTERS, View, DrsOpcode, counter_name
from smartquant.hdl.backend.axi import AxiReadSignature, AXI_RESP_OKAY
from smartquant.hdl.backend.axi_reader import AxiReader
from smartquant.hdl.csr.layouts import region_entry_layout
from smartquant.hdl.cxl.messages import drs_layout
from smartquant.hdl.cxl.frontend import read_request_layout
from smartquant.hdl.engine.address_map import (
    plane_line, split_address, match_region, match_early_decode, early_decode_layout, region_locals, decode_in_region,
)
from smartquant.hdl.engine.block_buffer import BlockBuffer, block_key_layout
from smartquant.hdl.engine.drs_server import DrsServer, SERVE_NXM, SERVE_RAW, SERVE_BUFFER, SERVE_HOLE
from smartquant.hdl.engine.poison import block_event_layout, line_query_layout
from smartquant.hdl.engine.block_query import block_query_layout
from smartquant.hdl.engine.packer import BlockPacker
from smartquant.hdl.stream_buffers import InputSkid

# the events counted at dispatch (registered once in this unit)
DISPATCH_EVENTS = (Counter.NXM_READS, Counter.HOLE_READS, Counter.RAW_READS, Counter.BUFFER_HITS,
                   Counter.BUFFER_MISSES) + tuple(Counter.READS_AT_K1 + k for k in range(16))
# the events counted at a handshake (AR, R beats and their errors, DRS sent, poisoned reads served)
HANDSHAKE_EVENTS = (Counter.DRAM_LINES_READ, Counter.READ_BURSTS, Counter.DRS_SENT, Counter.AXI_ERRORS,
                    Counter.POISON_READS)
# the event counters this unit drives, each from flip-flops only (every other entry of `events` is 0)
READ_ENGINE_EVENTS = frozenset(DISPATCH_EVENTS + HANDSHAKE_EVENTS)


class ReadEngine(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        super().__init__({
            "read": In(stream.Signature(read_request_layout(params))),
            "drs": Out(stream.Signature(drs_layout(params))),
            "regions": In(data.ArrayLayout(region_entry_layout(params), params.n_regions)),
            "nxm_as_poison": In(1),   # decode errors carry poison (CONTROL[0])
            "mem_data_nxm": In(1),    # decode errors answer MemData-NXM, else MemData (CONTROL[3])
            "hole_poison": In(1),     # holes carry poison (CONTROL[4])
            # the DRAM lines whose poison the read in dispatch reports (from stage B's registers) and the
            # poison list's answer for them a cycle later (the list registers it; into the DrsServer's column)
            "poison_query": Out(line_query_layout(params)),
            "poison_hit_late": In(1),
            # bit i: region i reads expanded views toward zero (REGION_CONFIG rounding 2; 0 = the entry's
            # midpoint bit decides floor / midpoint). Separate from `regions` so the region entry layout stays.
            "toward_zero": In(params.n_regions),
            # the write path's block query (DEVICE.md §4): what stage B loads (the next read in dispatch: its
            # (region, block), valid for a read served from DRAM; the write path tracks it, block_query.py), and
            # whether the block of the read in dispatch is gathered or landing (dispatch then waits)
            "block_query": Out(block_query_layout(params)),
            "block_busy": In(1),
            "invalidate": In(block_event_layout(params)),
            # a write's last B response arrived (write path `landed`): its block's slots are invalidated again
            "invalidate_landed": In(block_event_layout(params)),
            "invalidate_all": In(1),
            # the read half of the AXI manager port (the AxiReader's); the write path has the other half
            "axi": Out(AxiReadSignature(params.dram_addr_bits, params.data_width, params.axi_id_bits)),
            "events": Out(data.ArrayLayout(unsigned(8), N_COUNTERS)),
            "dev_load": In(2),      # DevLoad the top reports in DRS, sampled when the DRS register loads
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        lb = p.line_bits
        slots = p.buffer_slots
        # Serve queue deeper than the request FIFO by one block of lines, so that the look-ahead covers the
        # fetch latency of a whole block (one DRS per cycle while streaming).
        serve_depth = p.request_depth + p.b_max

        # ---- request pipeline: region select -> decode and lookups -> dispatch -------------------------
        # Stage A (from the front end's stream): one comparison pair per region against base_line and the
        # precomputed end_line, a one-hot select (lowest region wins), and by it (AND-OR) the region's fields
        # and the line relative to its base, and (address_map.match_early_decode) block, k, k legality and line j
        # under every region, selected the same way. Stage B: the rest of the decode (DRAM lines, readable) and the
        # compare of the block-buffer key with every slot tag. Dispatch (on stage B's registers): hit or
        # miss, victim, queue writes, counters.
        # The slot compare of stage B is the block buffer's `lookup` (against the tags as they will be when the
        # request reaches dispatch, see hdl/engine/block_buffer.py), so hits and misses are exactly those of a
        # compare at dispatch, the golden model's sequence.
        request = self.read.p
        rb = p.region_index_bits
        key_layout = block_key_layout(p)
        stage_a_layout = data.StructLayout({
            "address": len(request.address), "tag": p.tag_bits, "ld_id": p.ld_id_bits, "any_hit": 1, "region": rb,
            "entry": region_entry_layout(p), "local": lb, "toward_zero": 1,
            "early": early_decode_layout(p),
        })
        stage_b_layout = data.StructLayout({
            "key": key_layout, "region_hit": 1, "readable": 1, "raw": 1, "buffered": 1, "line_in_slot": 4,
            "raw_line": lb,
            "fetch_line": lb, "query_end": lb, "log2_b": p.log2_b_bits, "log2_r": p.log2_r_bits, "sign_fill": 1, "tag": p.tag_bits, "ld_id": p.ld_id_bits,
            "match": slots, "same_as_dispatch": 1, "allocated": slots,
        })
        stage_a = Signal(stage_a_layout)
        stage_a_valid = Signal()
        stage_b = Signal(stage_b_layout)
        stage_b_valid = Signal()
        dispatch = Signal()
        stage_b_ready = ~stage_b_valid | dispatch
        # Stage A hands its read to stage B through a skid (InputSkid: registered ready, no added latency), so
        # stage A's clock enable and the front end's read ready come from flip-flops, not from dispatch (an
        # FPGA build's critical path ran dispatch -> stage B's load -> the front end's skid -> stage A's CE).
        # Stage B decodes and looks up the skid's output: the lookup still runs in the cycle stage B loads.
        m.submodules.stage_a_skid = stage_a_skid = InputSkid(stage_a_layout)
        m.d.comb += [
            stage_a_skid.i.valid.eq(stage_a_valid),
            stage_a_skid.i.payload.eq(stage_a),
            stage_a_skid.o.ready.eq(stage_b_ready),
        ]
        stage_a_ready = ~stage_a_valid | stage_a_skid.i.ready
        stage_a_out = stage_a_skid.o.payload

        # stage A
        request_line = split_address(p, request.address)[0]
        locals_ = region_locals(m, p, request_line, self.regions)
        onehot, region, entry, local = match_region(m, p, request_line, self.regions, locals_)
        m.d.comb += self.read.ready.eq(stage_a_ready)
        with m.If(stage_a_ready):
            m.d.sync += [
                stage_a_valid.eq(self.read.valid),
                stage_a.address.eq(request.address),
                stage_a.tag.eq(request.tag),
                stage_a.ld_id.eq(request.ld_id),
                stage_a.any_hit.eq(onehot.any()),
                stage_a.region.eq(region),
                stage_a.entry.eq(entry),
                stage_a.local.eq(local),
                stage_a.toward_zero.eq((self.toward_zero & onehot).any()),
                # block, k, k_legal, line j under every region beside the compares, selected by the match:
                # stage B's key (its compare with the slot tags) and its readable test start at registers
                stage_a.early.eq(match_early_decode(m, p, request.address, onehot, self.regions, locals_)),
            ]

        # stage B (combinational part, from stage A's registers)
        decoded = decode_in_region(m, p, stage_a_out.address, stage_a_out.any_hit, stage_a_out.region,
                                   stage_a_out.entry, stage_a_out.local, stage_a_out.early)
        view = decoded.view
        new_key = Signal(key_layout)
        new_readable = decoded.mapped & decoded.k_legal
        new_expanded = (view == View.WEIGHT_MAJOR) | (view == View.EXPANDED_K) | (view == View.EXPANDED_DEFAULT)
        m.d.comb += [
            new_key.region.eq(stage_a_out.region),
            new_key.block.eq(decoded.block),
            new_key.expanded.eq(new_expanded),
            new_key.k.eq(decoded.k),
            new_key.midpoint.eq(decoded.midpoint),
            new_key.toward_zero.eq(stage_a_out.toward_zero),
        ]

        # the block buffer: stage B registers the compare of the new key with its slot tags (forwarding the
        # allocation of the read now in dispatch), dispatch claims the hit slot or the victim
        m.submodules.block_buffer = block_buffer = BlockBuffer(p, serve_depth)
        m.d.comb += block_buffer.lookup.eq(new_key)

        # dispatch (from stage B's registers)
        key = stage_b.key
        readable = stage_b.readable
        is_raw = stage_b.raw
        is_buffered = stage_b.buffered
        is_expanded = key.expanded
        with m.If(stage_b_ready):
            m.d.sync += [
                stage_b_valid.eq(stage_a_skid.o.valid),
                stage_b.key.eq(new_key),
                stage_b.region_hit.eq(decoded.region_hit),
                stage_b.readable.eq(new_readable),
                stage_b.raw.eq(new_readable & (view == View.RAW)),
                stage_b.buffered.eq(new_readable & (view != View.RAW)),
                stage_b.line_in_slot.eq(decoded.line_in_slot),
                stage_b.raw_line.eq(decoded.raw_line),
                stage_b.fetch_line.eq(Mux(view == View.RAW, decoded.raw_line,
                                          plane_line(decoded.base_line, decoded.block, Const(0, 4),
                                                     decoded.log2_b, decoded.log2_r, lb))),
                # the poison query's end line: raw line + 1, or plane k's line (fetch_line + (k << log2_r)),
                # computed beside fetch_line so that the query's set test needs no add of its own
                stage_b.query_end.eq(Mux(view == View.RAW, decoded.raw_line + 1,
                                         plane_line(decoded.base_line, decoded.block, decoded.k,
                                                    decoded.log2_b, decoded.log2_r, lb))),
                stage_b.log2_b.eq(decoded.log2_b),
                stage_b.log2_r.eq(decoded.log2_r),
                # toward zero on an INT region: planes k..B-1 are copies of plane 0 (BF16: floor fill, no copies)
                stage_b.sign_fill.eq(new_expanded & new_key.toward_zero & ~decoded.bf16),
                stage_b.tag.eq(stage_a_out.tag),
                stage_b.ld_id.eq(stage_a_out.ld_id),
                stage_b.match.eq(block_buffer.lookup_match),
                stage_b.same_as_dispatch.eq(block_buffer.lookup_same),
                stage_b.allocated.eq(block_buffer.allocation),
            ]
        hit = block_buffer.hit
        m.d.comb += [
            block_buffer.request.key.eq(key),
            block_buffer.request.match.eq(stage_b.match),
            block_buffer.request.same.eq(stage_b.same_as_dispatch),
            block_buffer.request.allocated.eq(stage_b.allocated),
        ]

        # what the packer needs of a fetched block, carried with the fetch through the AxiReader to its R beats
        route_layout = data.StructLayout({"expanded": 1, "log2_b": p.log2_b_bits, "midpoint": 1, "sign_fill": 1})
        m.submodules.drs_server = drs_server = DrsServer(p, serve_depth)
        m.submodules.reader = reader = AxiReader(p, route_layout, fetch_depth=max(2, slots + 2),
                                                 route_depth=p.request_depth)
        wiring.connect(m, reader.axi, wiring.flipped(self.axi))
        fetch = reader.fetch

        is_miss = is_buffered & ~hit
        needs_fetch = is_raw | is_miss
        # dispatch's condition written flat, per kind (buffered: a hit, or a miss with a fetch slot and a victim;
        # raw: a fetch slot; the rest: nothing), the same function as (~needs_fetch | fetch.ready) & (~is_miss |
        # can_allocate): the claim and its allocation (the block buffer's tag enables) then see hit, fetch.ready
        # and can_allocate side by side rather than through the OR terms (timing round 12a)
        can_dispatch = Signal()
        kind_ok = Mux(is_buffered, hit | (fetch.ready & block_buffer.can_allocate), ~is_raw | fetch.ready)
        m.d.comb += can_dispatch.eq(drs_server.entry.ready & kind_ok)
        # A read served from DRAM waits while the write path holds its block (gathered, or flushed and not
        # landed), asking it for the flush. The write path is told what stage B loads (its load enable and D
        # input), so its answer for the read in dispatch comes from its own flip-flops (block_query.py).
        m.d.comb += [
            self.block_query.load.eq(stage_b_ready),
            self.block_query.valid.eq(stage_a_skid.o.valid & new_readable),
            self.block_query.region.eq(new_key.region),
            self.block_query.block.eq(new_key.block),
            dispatch.eq(stage_b_valid & can_dispatch & ~self.block_busy),
            block_buffer.claim.eq(dispatch & is_buffered),
        ]

        serve_entry = drs_server.entry.p
        m.d.comb += [
            serve_entry.kind.eq(Mux(is_buffered, SERVE_BUFFER, Mux(is_raw, SERVE_RAW,
                                                                   Mux(stage_b.region_hit, SERVE_HOLE, SERVE_NXM)))),
            serve_entry.address.slot.eq(block_buffer.slot),
            serve_entry.address.gen.eq(block_buffer.gen),
            serve_entry.address.line.eq(stage_b.line_in_slot),
            serve_entry.tag.eq(stage_b.tag),
            serve_entry.ld_id.eq(stage_b.ld_id),
            drs_server.entry.valid.eq(dispatch),
        ]
        # Poison of a mapped read: a record of the poison list holds its raw line, or one of the k plane lines
        # its block fetches (the query runs on stage B's registers, in parallel with the dispatch decision)
        m.d.comb += [
            self.poison_query.first.eq(stage_b.fetch_line),
            self.poison_query.log2_stride.eq(Mux(is_raw, 0, stage_b.log2_r)),
            self.poison_query.count.eq(Mux(is_raw, 1, key.k)),
            self.poison_query.end.eq(stage_b.query_end),
        ]
        with m.If(readable):
            # the list's answer joins the entry a cycle later (the DRS server's poison column)
            m.d.comb += serve_entry.opcode.eq(DrsOpcode.MEM_DATA)
        with m.Elif(stage_b.region_hit):
            m.d.comb += [serve_entry.opcode.eq(DrsOpcode.MEM_DATA), serve_entry.poison.eq(self.hole_poison)]
        with m.Else():
            m.d.comb += [
                serve_entry.opcode.eq(Mux(self.mem_data_nxm, DrsOpcode.MEM_DATA_NXM, DrsOpcode.MEM_DATA)),
                serve_entry.poison.eq(self.nxm_as_poison),
            ]
        m.d.comb += [drs_server.list_poison_late.eq(self.poison_hit_late), drs_server.list_ignore.eq(~readable)]

        m.d.comb += [
            fetch.valid.eq(dispatch & needs_fetch),
            fetch.p.raw.eq(is_raw),
            fetch.p.line.eq(stage_b.fetch_line),
            fetch.p.k.eq(key.k),
            fetch.p.log2_r.eq(stage_b.log2_r),
            fetch.p.route.expanded.eq(is_expanded),
            fetch.p.route.log2_b.eq(stage_b.log2_b),
            fetch.p.route.midpoint.eq(key.midpoint),
            fetch.p.route.sign_fill.eq(stage_b.sign_fill),
        ]

        # ---- R beats to the packer or the DRS server's raw line FIFO ------------------------------------
        # r_in: the AxiReader's beats (in issue order, each with its fetch's route), in their arrival cycle
        ar = self.axi
        r_in = reader.beat
        m.submodules.packer = packer = BlockPacker(p)
        wiring.connect(m, packer.line, block_buffer.line)
        route = r_in.p.route
        beat = r_in.p.plane
        # The packer's start is presented from state after the block's last plane load; loads of the next
        # block may follow at once (the packer holds load.ready low while a start waits), see packer.py.
        start_pending = Signal()
        start_payload = Signal.like(packer.start.p)
        last_beat = r_in.p.last
        beat_error = r_in.p.error   # this R beat answers an error (any RRESP but OKAY)
        block_error = Signal()  # an earlier plane beat of the block under load answered an error
        sign_filling = Signal()         # the cycles of the sign copies (planes fill_plane..B-1 of the packer)
        fill_plane = Signal(5)
        fill_last_plane = Signal(5)
        # one backend-error flag per block handed to the packer (the block buffer's fill_error), presented from a
        # register the cycle after the block's last beat: the error FIFO's write enable and level then start at
        # flip-flops, not at this router's decision (beat.ready, from the packer's load.ready). The flag is read
        # with the block's first output line, >= START_TO_LINE_CYCLES cycles after its start. A beat waits while
        # a pending flag finds the FIFO full (never here: a block's flag is queued after its fill's entry in the
        # block buffer's fill FIFO, of the same depth, and both leave with its last line).
        fill_error = block_buffer.fill_error
        error_pending = Signal()
        error_pending_flag = Signal()
        to_packer_ok = packer.load.ready & (~error_pending | fill_error.ready) & ~sign_filling
        route_b = Signal(5)   # B of the routed block
        m.d.comb += [
            route_b.eq(Const(1, 5) << route.log2_b),
            r_in.ready.eq(Mux(r_in.p.raw, drs_server.raw_line.ready, to_packer_ok)),
            drs_server.raw_line.valid.eq(r_in.valid & r_in.p.raw),
            drs_server.raw_line.p.data.eq(r_in.p.data),
            drs_server.raw_line.p.error.eq(beat_error),
            # plane 0 of a toward-zero block is written into planes k..B-1 as well, as it is loaded (`also`):
            # no W-bit register of plane 0 and no W-bit mux before the packer's fill bank. The sign copies'
            # cycles (one per plane k..B-1, below) load nothing but keep the block's load-to-start timing.
            packer.load.valid.eq(~sign_filling & r_in.valid & ~r_in.p.raw & fill_error.ready),
            packer.load.p.plane.eq(beat),
            packer.load.p.data.eq(r_in.p.data),
            packer.load.p.also.eq(Mux((beat == 0) & route.sign_fill & (r_in.p.k < route_b),
                                      ((Const(1, 18) << route_b) - (Const(1, 18) << r_in.p.k))[:p.b_max], 0)),
            packer.start.valid.eq(start_pending),
            packer.start.p.eq(start_payload),
            fill_error.valid.eq(error_pending),
            fill_error.p.eq(error_pending_flag),
        ]
        with m.If(fill_error.ready):
            m.d.sync += error_pending.eq(0)
        with m.If(packer.start.valid & packer.start.ready):
            m.d.sync += start_pending.eq(0)
        with m.If(sign_filling & packer.load.ready):
            m.d.sync += fill_plane.eq(fill_plane + 1)
            with m.If(fill_plane == fill_last_plane):
                m.d.sync += [sign_filling.eq(0), start_pending.eq(1)]
        with m.If(r_in.valid & r_in.ready):
            with m.If(last_beat):
                m.d.sync += block_error.eq(0)
                with m.If(~r_in.p.raw):
                    m.d.sync += [error_pending.eq(1), error_pending_flag.eq(block_error | beat_error)]
                    b_value = route_b
                    sign_fill = route.sign_fill & (r_in.p.k < b_value)
                    m.d.sync += [
                        start_payload.expanded.eq(route.expanded),
                        start_payload.log2_b.eq(route.log2_b),
                        start_payload.k.eq(Mux(sign_fill, b_value, r_in.p.k)),
                        start_payload.midpoint.eq(route.midpoint & ~route.sign_fill),
                    ]
                    with m.If(sign_fill):
                        # planes k..B-1 hold plane 0 already (its load's `also`, also when this beat is plane 0:
                        # k = 1); these cycles keep the timing of the loads that once copied it
                        m.d.sync += [sign_filling.eq(1), fill_plane.eq(r_in.p.k), fill_last_plane.eq(b_value - 1)]
                    with m.Else():
                        m.d.sync += start_pending.eq(1)
            with m.Else():
                m.d.sync += block_error.eq(block_error | beat_error)

        # ---- DRS server, invalidations ------------------------------------------------------------------
        wiring.connect(m, drs_server.buffer, block_buffer.serve)
        wiring.connect(m, drs_server.drs, wiring.flipped(self.drs))
        m.d.comb += [
            drs_server.dev_load.eq(self.dev_load),
            block_buffer.invalidate.eq(self.invalidate),
            block_buffer.invalidate_landed.eq(self.invalidate_landed),
            block_buffer.invalidate_all.eq(self.invalidate_all),
        ]

        # ---- events, busy ------------------------------------------------------------------------------
        ev = self.events
        # Dispatch (the block buffer's hit, the write path's block-busy answer) ran on through the top's event sum
        # into the CSR block's increment register, an FPGA build's critical path (fpga/README.md round 18).
        # What is registered is `dispatch` (one flip-flop) and the read's class (stage B's flags, the buffer's
        # hit, k), the events decoded after them: with the events themselves registered (2051e43..07f62f9),
        # dispatch was the reset (LSR) of 21 flip-flops, the 75 MHz build of 07f62f9's worst path (round 19b).
        dispatched = Signal()
        was = Signal(data.StructLayout({"region_hit": 1, "readable": 1, "raw": 1, "hit": 1, "k": len(key.k)}))
        m.d.sync += [dispatched.eq(dispatch), was.region_hit.eq(stage_b.region_hit), was.readable.eq(readable),
                     was.raw.eq(is_raw), was.hit.eq(hit), was.k.eq(key.k)]
        was_readable = dispatched & was.region_hit & was.readable
        was_buffered = was_readable & ~was.raw
        dispatch_events = {
            Counter.NXM_READS: dispatched & ~was.region_hit,
            Counter.HOLE_READS: dispatched & was.region_hit & ~was.readable,
            Counter.RAW_READS: was_readable & was.raw,
            Counter.BUFFER_HITS: was_buffered & was.hit,
            Counter.BUFFER_MISSES: was_buffered & ~was.hit,
            **{Counter.READS_AT_K1 + k - 1: was_buffered & (was.k == k) for k in range(1, 17)},
        }
        assert set(dispatch_events) == set(DISPATCH_EVENTS)
        m.d.comb += [ev[n].eq(event) for n, event in dispatch_events.items()]
        # The handshake counts are registered too (timing round 19b): R's ready (the reader's route count, the
        # DRS server's room) and the serve decision behind `poisoned_read` ran on into the increment register's
        # reset at 10 LUT levels. No input of the read engine thus reaches any of its counts.
        handshake_events = {
            Counter.DRAM_LINES_READ: ar.rvalid & ar.rready,
            Counter.READ_BURSTS: ar.arvalid & ar.arready,
            Counter.DRS_SENT: self.drs.valid & self.drs.ready,
            Counter.AXI_ERRORS: ar.rvalid & ar.rready & (ar.rresp != AXI_RESP_OKAY),
            # a mapped read answered with poison (poison list or backend error), counted when served
            Counter.POISON_READS: drs_server.poisoned_read,
        }
        assert set(handshake_events) == set(HANDSHAKE_EVENTS)
        for n, event in handshake_events.items():
            registered = Signal(name=f"handshake_event_{counter_name(n)}")
            m.d.sync += registered.eq(event)
            m.d.comb += ev[n].eq(registered)
        # Entries this unit does not count are driven 0 explicitly: an undriven entry becomes a constant
        # `always @*` in the Verilog, which never runs (Verilator ALWNEVER; random under +verilator+rand+reset).
        for n in range(N_COUNTERS):
            if n not in READ_ENGINE_EVENTS:
                m.d.comb += ev[n].eq(0)
        m.d.comb += self.busy.eq(self.read.valid | stage_a_skid.o.valid | stage_b_valid | drs_server.busy | reader.busy
                                 | start_pending | block_buffer.busy | sign_filling | error_pending)
        return m
