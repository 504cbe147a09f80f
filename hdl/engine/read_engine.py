r"""Read engine (docs/DEVICE.md §3 and §5): in-order reads through the block buffer, AXI AR/R, DRS responses.

Pipeline (every stage a FIFO or a register, so each channel takes backpressure and one line per cycle flows):

  read request stream -[A]-[B]-[dispatch]--> serve FIFO ------------------------[serve]--> DRS reg --> output
   A: region select   (hit/miss,     \--> AxiReader: fetch FIFO, AR register --> AXI AR   ^      ^     buffer
   B: decode,          victim,            AXI R --> AxiReader beats --> packer load/start --> block buffer
      tag compare      counters)                                    \--> raw line FIFO ---------------/

- Stage A registers a one-hot region select (base_line <= line < end_line per region, end_line precomputed
  by the CSR block) and the line relative to every region's base; stage B registers the decode of
  hdl/engine/address_map.py (block, line, k, view checks, the DRAM line of plane 0) and the compare of the block
  key with every slot tag (forwarding the allocation dispatch makes in the same cycle, see elaborate).
- dispatch handles one request per cycle, in arrival order, from stage B's registers. A read served from DRAM
  (mapped, legal k) whose block the write path holds (gathered, or flushed and not landed: its `block_query` /
  `block_busy`, DEVICE.md §4) waits there, and the write path flushes the gathered block. Decode errors (no region)
  and holes (in a region: packed j >= k, illegal k, views 6 and 7) go straight to the serve FIFO. Raw reads
  queue one 1-line burst. Packed / expanded reads look up the
  key (region, block, expanded, k, rounding) in the slot tags; a miss claims the round-robin victim at once
  (its tag becomes valid immediately, so later reads of the same block hit the slot while it is still
  filling: this is the look-ahead that overlaps the fetch of the next block with serving the current one)
  and queues the fetch of planes 0..k-1.
- Slots are reallocated without waiting for the reads still using them: each allocation starts a new
  generation of the slot, every queued read carries the generation it hit, and the new fill's first line
  is held back (at the packer output; its planes are already fetched) until the reads of the generation the
  slot holds are served. So the hit/miss sequence is exactly the round-robin one of DEVICE.md §5, and timing
  only decides when a fill lands. Dispatch stalls only when a slot already has MAX_LIVE_GENERATIONS
  generations alive or a queue is full. The serve queue is request_depth + b_max deep so that the look-ahead
  covers a whole block's fetch latency: packed streaming at power-of-two k gives one DRS per cycle when
  memory returns one line per cycle.
- The AxiReader (hdl/backend/axi_reader.py: fetch FIFO, AR register, route FIFO, R skid) issues each fetch: one
  INCR burst of k lines (R = 1), k one-line bursts with stride R (R > 1), or one 1-line burst for a raw read;
  a fetch dispatched while its FIFO is empty goes straight into the AR register. It hands back the R beats in
  order with their plane number and the fetch's route (packer settings); this unit sends each beat to the
  packer or to the raw line FIFO. RREADY is a register (the reader's R skid).
- The packer (hdl/engine/packer.py) writes the block's output lines into the slot; a per-slot line count
  lets the serve stage answer line j as soon as line j is written.
- serve pops the serve FIFO in order and loads the DRS register (data from the buffer read port, the raw line
  FIFO or zero), which passes the response to the output buffer that drives S2M DRS from registers. The
  buffer read port is transparent (a line is served in the cycle it is written) and an empty raw FIFO is
  bypassed (R beat -> DRS register in one cycle).
Poison is sampled at dispatch from the poison list's query of the read's DRAM lines (stage B registers the raw
line or plane-0 line, the stride and k; a read outstanding while the list changes may see either state,
DEVICE.md §4); the answer is registered and joins the serve entry a cycle later (a one-bit column beside the
serve FIFO); DevLoad (the `dev_load` input, computed by the top from the port occupancy,
DEVICE.md §3) when the DRS enters the output register.
A block is one burst at R = 1 (DEVICE.md §5); it never crosses 4 KiB because region bases are B-line aligned
(DEVICE.md §2, a misaligned region is inactive). The testbench's AXI memory checks the rule on every burst.
Backend errors (DEVICE.md §3): an R beat with RRESP != OKAY poisons what it fed. The R router ORs the RRESP
errors of a block's plane beats into one flag per fill (error FIFO, parallel to the packer's blocks); the slot
keeps the flag of the generation it holds, so every DRS served from that fetch, hits included, carries
poison = 1 until the slot is refilled. A raw line carries its beat's flag through the raw FIFO. Counted in
axi_errors (per beat); poison_reads counts every mapped DRS sent with poison = 1, whatever the reason.
Toward-zero expanded reads of INT regions (`toward_zero` bit of the region, DEVICE.md §3): the dropped bits
are copies of the sign, i.e. planes k..B-1 equal plane 0. The R router keeps plane 0 of the block in a
register and, after the k fetched planes, loads it into the packer as planes k..B-1, then starts the block at
k = B (B loads for the B lines the block emits, so streaming stays one line per cycle; DRAM traffic stays k
lines). BF16 regions need no fill (sign-magnitude truncation is toward zero): their packer start is floor.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams, Counter, N_COUNTERS, View, DrsOpcode, META_FIELD_NO_OP
from smartquant.hdl.backend.axi import AxiReadSignature, AXI_RESP_OKAY
from smartquant.hdl.backend.axi_reader import AxiReader
from smartquant.hdl.csr.layouts import region_entry_layout
from smartquant.hdl.cxl.messages import drs_layout
from smartquant.hdl.cxl.frontend import read_request_layout
from smartquant.hdl.engine.address_map import (
    line_bits, region_index_bits, plane_line, split_address, match_region, decode_in_region,
)
from smartquant.hdl.engine.poison import block_event_layout, line_query_layout

from smartquant.hdl.engine.packer import BlockPacker, line_layout
from smartquant.hdl.stream_buffers import InputSkid, OutputBuffer


# what a queued read is served from: a decode error (all-1s data), DRAM through the raw FIFO, the block buffer,
# or a hole of a region (the hole fill, 0); DEVICE.md §3
SERVE_NXM, SERVE_RAW, SERVE_BUFFER, SERVE_HOLE = 0, 1, 2, 3
# the event counters this unit drives (every other entry of `events` is 0)
READ_ENGINE_EVENTS = frozenset([Counter.NXM_READS, Counter.HOLE_READS, Counter.POISON_READS, Counter.RAW_READS,
                                Counter.BUFFER_HITS,
                                Counter.BUFFER_MISSES, Counter.DRAM_LINES_READ, Counter.READ_BURSTS,
                                Counter.DRS_SENT, Counter.AXI_ERRORS]
                               + [Counter.READS_AT_K1 + k - 1 for k in range(1, 17)])
GENERATION_BITS = 3
# Generations of one slot alive at once (held + pending fills). Below 1 << GENERATION_BITS so that a reused
# generation number never aliases one with reads still queued. At k = 1 every line is a new block, so the blocks
# in flight (slots x live generations) must cover fetch latency + packer pipeline: with 3 live generations and
# 2 slots streaming fell to 0.38 lines/cycle at k = 1 and 0.68 at k = 2; with 7 it holds 1.0.
MAX_LIVE_GENERATIONS = 7
# cycles from a line being servable to S2M DRS valid: the DRS register (the buffer's read cycle), then the output
# buffer that keeps S2M DRS registered
DRS_OUTPUT_CYCLES = 2


def check_read_params(params: ControllerParams) -> None:
    """ValueError for parameters the read side cannot build (call before constructing, see hdl/top.py)."""
    if params.buffer_slots < 1:
        raise ValueError(f"buffer_slots must be >= 1, got {params.buffer_slots}")
    if params.request_depth < 2:
        # the front end holds request_depth reads in a FIFO of request_depth - 1 and its output skid
        raise ValueError(f"request_depth must be >= 2, got {params.request_depth}")


class ReadEngine(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        check_read_params(params)
        super().__init__({
            "read": In(stream.Signature(read_request_layout(params))),
            "drs": Out(stream.Signature(drs_layout(params))),
            "regions": In(data.ArrayLayout(region_entry_layout(params), params.n_regions)),
            "nxm_as_poison": In(1),   # decode errors carry poison (CONTROL[0])
            "mem_data_nxm": In(1),    # decode errors answer MemData-NXM, else MemData (CONTROL[3])
            "hole_poison": In(1),     # holes carry poison (CONTROL[4])
            # the DRAM lines whose poison the read in dispatch reports (from stage B's registers) and the
            # poison list's answer in the dispatch cycle (registered here, it joins the serve entry a cycle later)
            "poison_query": Out(line_query_layout(params)),
            "poison_hit": In(1),
            # bit i: region i reads expanded views toward zero (REGION_CONFIG rounding 2; 0 = the entry's
            # midpoint bit decides floor / midpoint). Separate from `regions` so the region entry layout stays.
            "toward_zero": In(params.n_regions),
            # the write path's block query (DEVICE.md §4): the (region, block) of the read in dispatch, valid for
            # a read served from DRAM, and whether its block is gathered or landing (dispatch then waits)
            "block_query": Out(block_event_layout(params)),
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
        lb = line_bits(p)
        slots = p.buffer_slots
        slot_bits = max(1, (slots - 1).bit_length())
        line_index_bits = max(1, (p.b_max - 1).bit_length())
        # Serve queue deeper than the request FIFO by one block of lines, so that the look-ahead covers the
        # fetch latency of a whole block (one DRS per cycle while streaming).
        serve_depth = p.request_depth + p.b_max
        # `waiting` counts the reads of one (slot, generation) in the serve FIFO: a read is claimed when it is
        # written there and released one cycle after it leaves for the DRS register (see `release_valid`), so
        # the count is at most serve_depth + 1 (all queued reads hitting one block while the DRS is held off,
        # and the one just served).
        count_bits = (serve_depth + 1).bit_length()

        # ---- request pipeline: region select -> decode and lookups -> dispatch -------------------------
        # Stage A (from the front end's stream): one comparison pair per region against base_line and the
        # precomputed end_line, a one-hot select (lowest region wins), and by it (AND-OR) the region's fields
        # and the line relative to its base. Stage B: block / line / k and the compare of
        # the block-buffer key with every slot tag. Dispatch (on stage B's registers): hit or
        # miss, victim, queue writes, counters.
        # The slot compare of stage B is against the tags as they will be when the request reaches dispatch:
        # only dispatch changes tags (an allocation), so for the slot that the request now in dispatch
        # allocates in this cycle, the compare is against that request's key instead (forwarding). Validity
        # (writes invalidate slots at any time) is applied at dispatch. So hits and misses are exactly those
        # of a compare at dispatch, the golden model's sequence.
        request = self.read.p
        rb = region_index_bits(p)
        key_layout = data.StructLayout({"region": rb, "block": lb, "expanded": 1, "k": p.k_bits, "midpoint": 1,
                                        "toward_zero": 1})
        stage_a_layout = data.StructLayout({
            "address": len(request.address), "tag": p.tag_bits, "ld_id": p.ld_id_bits, "any_hit": 1, "region": rb,
            "entry": region_entry_layout(p), "local": lb, "toward_zero": 1,
        })
        stage_b_layout = data.StructLayout({
            "key": key_layout, "region_hit": 1, "readable": 1, "raw": 1, "buffered": 1, "line_in_slot": 4,
            "raw_line": lb,
            "fetch_line": lb, "query_end": lb, "log2_b": 3, "log2_r": 3, "sign_fill": 1, "tag": p.tag_bits, "ld_id": p.ld_id_bits,
            "match": slots,
        })
        stage_a = Signal(stage_a_layout)
        stage_a_valid = Signal()
        stage_b = Signal(stage_b_layout)
        stage_b_valid = Signal()
        dispatch = Signal()
        stage_b_ready = ~stage_b_valid | dispatch
        stage_a_ready = ~stage_a_valid | stage_b_ready

        # stage A
        request_line = split_address(p, request.address)[0]
        onehot, region, entry, local = match_region(m, p, request_line, self.regions)
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
            ]

        # stage B (combinational part, from stage A's registers)
        decoded = decode_in_region(m, p, stage_a.address, stage_a.any_hit, stage_a.region, stage_a.entry,
                                   stage_a.local)
        view = decoded.view
        new_key = Signal(key_layout)
        new_readable = decoded.mapped & decoded.k_legal
        new_expanded = (view == View.WEIGHT_MAJOR) | (view == View.EXPANDED_K) | (view == View.EXPANDED_DEFAULT)
        m.d.comb += [
            new_key.region.eq(stage_a.region),
            new_key.block.eq(decoded.block),
            new_key.expanded.eq(new_expanded),
            new_key.k.eq(decoded.k),
            new_key.midpoint.eq(decoded.midpoint),
            new_key.toward_zero.eq(stage_a.toward_zero),
        ]

        # slot tags and bookkeeping
        tag_valid = [Signal(name=f"slot{s}_valid") for s in range(slots)]
        tag_key = [Signal(key_layout, name=f"slot{s}_key") for s in range(slots)]
        # backend error flag of the fill the slot holds (written_gen): its lines are served with poison
        slot_error = [Signal(name=f"slot{s}_backend_error") for s in range(slots)]
        # Generations: every allocation of a slot starts a new generation (mod GENERATIONS). A read carries the
        # generation it hit or allocated; `waiting[s][g]` counts queued reads of generation g. The slot holds
        # the data of `written_gen` (the fill that last started writing), `lines_written` lines of it so far.
        # A fill's first line may overwrite the slot only when no read of the held generation is left, so
        # the fetch of later blocks runs ahead of the reads still using the slot (look-ahead without stalls).
        gen_bits = GENERATION_BITS
        alloc_gen = [Signal(gen_bits, name=f"slot{s}_alloc_gen") for s in range(slots)]
        written_gen = [Signal(gen_bits, name=f"slot{s}_written_gen") for s in range(slots)]
        waiting = [[Signal(count_bits, name=f"slot{s}_gen{g}_waiting") for g in range(1 << gen_bits)]
                   for s in range(slots)]
        lines_written = [Signal(5, name=f"slot{s}_lines_written") for s in range(slots)]
        # The serve stage's release of a read, registered: (slot, generation) of the buffer read that left for
        # the DRS register in the previous cycle. The counters take it a cycle late, so the serve decision
        # (`advance`, which depends on the packer's line in the same cycle) ends at these few flip-flops
        # instead of the counters' enables and adders (an FPGA build's critical path); the first-line gate
        # subtracts the pending release, so it sees exactly the count it saw before.
        release_valid = Signal()
        release_slot = Signal(slot_bits)
        release_gen = Signal(gen_bits)

        # dispatch (from stage B's registers)
        key = stage_b.key
        readable = stage_b.readable
        is_raw = stage_b.raw
        is_buffered = stage_b.buffered
        is_expanded = key.expanded
        victim = Signal(slot_bits)   # round-robin over misses
        allocating = Signal()        # dispatch allocates the victim slot in this cycle
        new_match = Signal(slots)
        for s in range(slots):
            forward = allocating & (victim == s)
            m.d.comb += new_match[s].eq(Mux(forward, new_key.as_value() == key.as_value(),
                                            new_key.as_value() == tag_key[s].as_value()))
        with m.If(stage_b_ready):
            m.d.sync += [
                stage_b_valid.eq(stage_a_valid),
                stage_b.key.eq(new_key),
                stage_b.region_hit.eq(decoded.region_hit),
                stage_b.readable.eq(new_readable),
                stage_b.raw.eq(new_readable & (view == View.RAW)),
                stage_b.buffered.eq(new_readable & (view != View.RAW)),
                stage_b.line_in_slot.eq(decoded.line_in_slot),
                stage_b.raw_line.eq(decoded.raw_line),
                stage_b.fetch_line.eq(Mux(view == View.RAW, decoded.raw_line,
                                          plane_line(decoded.base_line, decoded.superblock, Const(0, 4),
                                                     decoded.slot_r, decoded.log2_b, decoded.log2_r, lb))),
                # the poison query's end line: raw line + 1, or plane k's line (fetch_line + (k << log2_r)),
                # computed beside fetch_line so that the query's set test needs no add of its own
                stage_b.query_end.eq(Mux(view == View.RAW, decoded.raw_line + 1,
                                         plane_line(decoded.base_line, decoded.superblock, decoded.k,
                                                    decoded.slot_r, decoded.log2_b, decoded.log2_r, lb))),
                stage_b.log2_b.eq(decoded.log2_b),
                stage_b.log2_r.eq(decoded.log2_r),
                # toward zero on an INT region: planes k..B-1 are copies of plane 0 (BF16: floor fill, no copies)
                stage_b.sign_fill.eq(new_expanded & new_key.toward_zero & ~decoded.bf16),
                stage_b.tag.eq(stage_a.tag),
                stage_b.ld_id.eq(stage_a.ld_id),
                stage_b.match.eq(new_match),
            ]

        hits = Signal(slots)
        m.d.comb += hits.eq(stage_b.match & Cat(*tag_valid))
        hit = hits.any()
        hit_slot = Signal(slot_bits)
        for s in reversed(range(slots)):
            with m.If(hits[s]):
                m.d.comb += hit_slot.eq(s)
        victim_free = Signal()   # the victim has fewer than MAX_LIVE_GENERATIONS generations alive
        victim_gen = Signal(gen_bits)   # generation the allocation starts
        hit_gen = Signal(gen_bits)
        with m.Switch(victim):
            for s in range(slots):
                with m.Case(s):
                    m.d.comb += [
                        victim_free.eq(((alloc_gen[s] - written_gen[s])[:gen_bits]) < MAX_LIVE_GENERATIONS - 1),
                        victim_gen.eq(alloc_gen[s] + 1),
                    ]
        with m.Switch(hit_slot):
            for s in range(slots):
                with m.Case(s):
                    m.d.comb += hit_gen.eq(alloc_gen[s])

        serve_layout = data.StructLayout({
            "kind": 2, "slot": slot_bits, "gen": gen_bits, "line": line_index_bits, "tag": p.tag_bits, "ld_id": p.ld_id_bits,
            "opcode": 3, "poison": 1,
        })
        # what the packer needs of a fetched block, carried with the fetch through the AxiReader to its R beats
        route_layout = data.StructLayout({"expanded": 1, "log2_b": 3, "midpoint": 1, "sign_fill": 1})
        m.submodules.serve_fifo = serve_fifo = SyncFIFO(width=serve_layout.size, depth=serve_depth)
        m.submodules.reader = reader = AxiReader(p, route_layout, fetch_depth=max(2, slots + 2),
                                                 route_depth=p.request_depth)
        wiring.connect(m, reader.axi, wiring.flipped(self.axi))
        fetch = reader.fetch
        fill_layout = data.StructLayout({"slot": slot_bits, "gen": gen_bits})
        m.submodules.fill_fifo = fill_fifo = SyncFIFO(width=fill_layout.size, depth=MAX_LIVE_GENERATIONS * slots)

        is_miss = is_buffered & ~hit
        needs_fetch = is_raw | is_miss
        can_dispatch = Signal()
        m.d.comb += can_dispatch.eq(
            serve_fifo.w_rdy
            & (~needs_fetch | fetch.ready)
            & (~is_miss | (victim_free & fill_fifo.w_rdy)))
        # A read served from DRAM waits while the write path holds its block (gathered, or flushed and not
        # landed), asking it for the flush: the query is stage B's registers, so the wait costs no decode.
        m.d.comb += [
            self.block_query.valid.eq(stage_b_valid & readable),
            self.block_query.region.eq(key.region),
            self.block_query.block.eq(key.block),
            dispatch.eq(stage_b_valid & can_dispatch & ~self.block_busy),
            allocating.eq(dispatch & is_miss),
        ]

        serve_entry = Signal(serve_layout)
        m.d.comb += [
            serve_entry.kind.eq(Mux(is_buffered, SERVE_BUFFER, Mux(is_raw, SERVE_RAW,
                                                                   Mux(stage_b.region_hit, SERVE_HOLE, SERVE_NXM)))),
            serve_entry.slot.eq(Mux(hit, hit_slot, victim)),
            serve_entry.gen.eq(Mux(hit, hit_gen, victim_gen)),
            serve_entry.line.eq(stage_b.line_in_slot),
            serve_entry.tag.eq(stage_b.tag),
            serve_entry.ld_id.eq(stage_b.ld_id),
            serve_fifo.w_data.eq(serve_entry),
            serve_fifo.w_en.eq(dispatch),
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
            # the list's answer joins the entry a cycle later (`list_poison` below)
            m.d.comb += serve_entry.opcode.eq(DrsOpcode.MEM_DATA)
        with m.Elif(stage_b.region_hit):
            m.d.comb += [serve_entry.opcode.eq(DrsOpcode.MEM_DATA), serve_entry.poison.eq(self.hole_poison)]
        with m.Else():
            m.d.comb += [
                serve_entry.opcode.eq(Mux(self.mem_data_nxm, DrsOpcode.MEM_DATA_NXM, DrsOpcode.MEM_DATA)),
                serve_entry.poison.eq(self.nxm_as_poison),
            ]

        # The poison list's answer (its set tests are a long cone) leaves dispatch through a register and is
        # written a cycle later into a column beside the serve FIFO, one bit per entry, indexed in step with the
        # FIFO; the serve stage reads the head's bit, or the register itself when the head is the read
        # dispatched in the previous cycle. The answer is still the list's state in the dispatch cycle.
        late_valid = Signal()                           # a read was dispatched in the previous cycle ...
        late_index = Signal(range(serve_depth))         # ... into this serve FIFO entry ...
        late_poison = Signal()                          # ... and the poison list holds one of its lines
        dispatch_index = Signal(range(serve_depth))     # the entry the next dispatch writes
        serve_index = Signal(range(serve_depth))        # the serve FIFO's head
        list_poison = Signal(serve_depth)
        m.d.sync += [late_valid.eq(dispatch), late_index.eq(dispatch_index),
                     late_poison.eq(readable & self.poison_hit)]
        with m.If(dispatch):
            m.d.sync += dispatch_index.eq(Mux(dispatch_index == serve_depth - 1, 0, dispatch_index + 1))
        with m.If(late_valid):
            m.d.sync += list_poison.bit_select(late_index, 1).eq(late_poison)
        head_list_poison = Signal()
        m.d.comb += head_list_poison.eq(Mux(late_valid & (late_index == serve_index), late_poison,
                                            list_poison.bit_select(serve_index, 1)))

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
            fill_fifo.w_data.eq(Cat(victim, victim_gen)),
            fill_fifo.w_en.eq(dispatch & is_miss),
        ]

        # ---- R beats to the packer or the raw line FIFO ---------------------------------------------------
        # r_in: the AxiReader's beats (in issue order, each with its fetch's route), in their arrival cycle
        ar = self.axi
        r_in = reader.beat
        m.submodules.packer = packer = BlockPacker(p)
        route = r_in.p.route
        beat = r_in.p.plane
        # The packer's start is presented from state after the block's last plane load; loads of the next
        # block may follow at once (the packer holds load.ready low while a start waits), see packer.py.
        start_pending = Signal()
        start_payload = Signal.like(packer.start.p)
        # raw line FIFO entries: the line and its RRESP error flag
        m.submodules.raw_fifo = raw_fifo = SyncFIFO(width=p.data_width + 1, depth=2)
        # one backend-error flag per block handed to the packer, popped with the block's last output line
        m.submodules.error_fifo = error_fifo = SyncFIFO(width=1, depth=MAX_LIVE_GENERATIONS * slots)
        raw_beat = Signal()     # a raw line arrives on R this cycle
        raw_bypass = Signal()   # ... and goes straight into the DRS register (raw FIFO empty, serve waiting)
        last_beat = r_in.p.last
        beat_error = r_in.p.error   # this R beat answers an error (any RRESP but OKAY)
        block_error = Signal()  # an earlier plane beat of the block under load answered an error
        plane0 = Signal(p.data_width)   # plane 0 (sign) of the block under load, for toward-zero fills
        sign_filling = Signal()         # loading plane 0 into planes fill_plane..B-1 of the packer
        fill_plane = Signal(5)
        fill_last_plane = Signal(5)
        to_packer_ok = packer.load.ready & error_fifo.w_rdy & ~sign_filling
        route_b = Signal(5)   # B of the routed block
        m.d.comb += [
            route_b.eq(Const(1, 5) << route.log2_b),
            r_in.ready.eq(Mux(r_in.p.raw, raw_fifo.w_rdy, to_packer_ok)),
            raw_fifo.w_data.eq(Cat(r_in.p.data, beat_error)),
            raw_beat.eq(r_in.valid & r_in.p.raw & raw_fifo.w_rdy),
            raw_fifo.w_en.eq(raw_beat & ~raw_bypass),
            packer.load.valid.eq(Mux(sign_filling, 1, r_in.valid & ~r_in.p.raw & error_fifo.w_rdy)),
            packer.load.p.plane.eq(Mux(sign_filling, fill_plane, beat)),
            packer.load.p.data.eq(Mux(sign_filling, plane0, r_in.p.data)),
            packer.start.valid.eq(start_pending),
            packer.start.p.eq(start_payload),
            error_fifo.w_data.eq(block_error | beat_error),
        ]
        with m.If(packer.start.valid & packer.start.ready):
            m.d.sync += start_pending.eq(0)
        with m.If(sign_filling & packer.load.ready):
            m.d.sync += fill_plane.eq(fill_plane + 1)
            with m.If(fill_plane == fill_last_plane):
                m.d.sync += [sign_filling.eq(0), start_pending.eq(1)]
        with m.If(r_in.valid & r_in.ready):
            with m.If(~r_in.p.raw & (beat == 0)):
                m.d.sync += plane0.eq(r_in.p.data)
            with m.If(last_beat):
                m.d.sync += block_error.eq(0)
                with m.If(~r_in.p.raw):
                    m.d.comb += error_fifo.w_en.eq(1)
                    b_value = route_b
                    sign_fill = route.sign_fill & (r_in.p.k < b_value)
                    m.d.sync += [
                        start_payload.expanded.eq(route.expanded),
                        start_payload.log2_b.eq(route.log2_b),
                        start_payload.k.eq(Mux(sign_fill, b_value, r_in.p.k)),
                        start_payload.midpoint.eq(route.midpoint & ~route.sign_fill),
                    ]
                    with m.If(sign_fill):
                        # planes k..B-1 <- plane 0 (captured above, also when this beat is plane 0: k = 1)
                        m.d.sync += [sign_filling.eq(1), fill_plane.eq(r_in.p.k), fill_last_plane.eq(b_value - 1)]
                    with m.Else():
                        m.d.sync += start_pending.eq(1)
            with m.Else():
                m.d.sync += block_error.eq(block_error | beat_error)

        # ---- block buffer ------------------------------------------------------------------------------
        # The packer's lines pass a skid: the packer sees a registered ready, so the first-line gate below (and
        # the serve stage's use of the line) stays off the packer's pipeline advance, which clocks its banks.
        m.submodules.line_skid = line_skid = InputSkid(line_layout(p))
        wiring.connect(m, packer.line, line_skid.i)
        packer_line = line_skid.o
        m.submodules.buffer = buffer = Memory(shape=unsigned(p.data_width), depth=slots * p.b_max, init=[])
        buffer_write = buffer.write_port()
        # transparent: a line can be served in the cycle the packer writes it
        buffer_read = buffer.read_port(domain="sync", transparent_for=(buffer_write,))
        fill = Signal(fill_layout)
        fill_slot = fill.slot
        m.d.comb += [
            fill.eq(fill_fifo.r_data),
            buffer_write.addr.eq(Cat(packer_line.p.index[:line_index_bits], fill_slot)),
            buffer_write.data.eq(packer_line.p.data),
            buffer_write.en.eq(packer_line.valid & packer_line.ready),
            fill_fifo.r_en.eq(packer_line.valid & packer_line.ready & packer_line.p.last),
            error_fifo.r_en.eq(packer_line.valid & packer_line.ready & packer_line.p.last),
        ]
        # A fill's first line overwrites the slot: it waits until the held block's readers are served. The flag
        # is registered per slot (the counters, the generation select and the zero test stay off the path that
        # gates the packer): slot_held[s] is "reads of the generation slot s holds are queued" one cycle late.
        # One cycle late is safe: while a fill of slot s waits, its generation was allocated after the held
        # one, so hits claim the newer generation and the held count can only fall; and in the cycle a fill's
        # first line lands (the held generation changes) the slot counts as held, so the next fill's first
        # line waits for the new count.
        slot_held = Signal(slots)
        for s in range(slots):
            held_count_nonzero = Signal(name=f"slot{s}_held_count_nonzero")
            with m.Switch(written_gen[s]):
                for g in range(1 << gen_bits):
                    with m.Case(g):
                        release_pending = release_valid & (release_slot == s) & (release_gen == g)
                        m.d.comb += held_count_nonzero.eq((waiting[s][g] != 0)
                                                          & ~((waiting[s][g] == 1) & release_pending))
            first_line_lands = (packer_line.valid & packer_line.ready & (fill_slot == s)
                                & (packer_line.p.index == 0))
            m.d.sync += slot_held[s].eq(held_count_nonzero | first_line_lands)
        m.d.comb += packer_line.ready.eq(~((slot_held >> fill_slot)[0] & (packer_line.p.index == 0)))

        # ---- serve -------------------------------------------------------------------------------------
        serve = Signal(serve_layout)
        m.d.comb += serve.eq(serve_fifo.r_data)
        line_ready = Signal()
        line_error = Signal()   # the served line comes from a fetch that met a backend error
        line_written_now = packer_line.valid & packer_line.ready
        with m.Switch(serve.slot):
            for s in range(slots):
                with m.Case(s):
                    held_line = (written_gen[s] == serve.gen) & (lines_written[s] > serve.line)
                    m.d.comb += [
                        line_ready.eq(held_line | (line_written_now & (fill_slot == s) & (fill.gen == serve.gen)
                                                   & (packer_line.p.index == serve.line))),
                        # a line written this cycle belongs to the fill at the head of the error FIFO
                        line_error.eq(Mux(held_line, slot_error[s], error_fifo.r_data)),
                    ]
        serve_ready = Signal()
        with m.Switch(serve.kind):
            with m.Case(SERVE_RAW):
                # the raw FIFO is empty only if the arriving raw line is the oldest one still owed
                m.d.comb += serve_ready.eq(raw_fifo.r_rdy | raw_beat)
            with m.Case(SERVE_BUFFER):
                m.d.comb += serve_ready.eq(line_ready)
            with m.Default():
                m.d.comb += serve_ready.eq(1)

        # DRS register (the buffer's read cycle) -> output buffer: S2M DRS valid, payload and data are
        # registers, and DRS.ready reaches only the output buffer.
        m.submodules.drs_out = drs_out = OutputBuffer(drs_layout(p))
        drs_valid = Signal()
        drs_payload = Signal(drs_layout(p))
        drs_kind = Signal(2)
        raw_data = Signal(p.data_width)
        advance = Signal()
        backend_error = Signal()   # the line served now was fetched with an error response
        m.d.comb += backend_error.eq(Mux(serve.kind == SERVE_BUFFER, line_error,
                                         Mux(serve.kind == SERVE_RAW,
                                             Mux(raw_fifo.r_rdy, raw_fifo.r_data[-1], beat_error), 0)))
        serve_poison = Signal()     # the serve entry's own poison (holes, NXM) or the poison list's answer
        m.d.comb += serve_poison.eq(serve.poison | head_list_poison)
        with m.If(advance):
            m.d.sync += serve_index.eq(Mux(serve_index == serve_depth - 1, 0, serve_index + 1))
        m.d.comb += [
            advance.eq(serve_fifo.r_rdy & serve_ready & (~drs_valid | drs_out.i.ready)),
            serve_fifo.r_en.eq(advance),
            raw_fifo.r_en.eq(advance & (serve.kind == SERVE_RAW)),
            raw_bypass.eq(advance & (serve.kind == SERVE_RAW) & ~raw_fifo.r_rdy),
            buffer_read.addr.eq(Cat(serve.line, serve.slot)),
            buffer_read.en.eq(advance),   # the read port holds its data while the DRS register waits
        ]
        with m.If(advance):
            m.d.sync += [
                drs_valid.eq(1),
                drs_kind.eq(serve.kind),
                drs_payload.opcode.eq(serve.opcode),
                drs_payload.tag.eq(serve.tag),
                drs_payload.ld_id.eq(serve.ld_id),
                drs_payload.poison.eq(serve_poison | backend_error),
            ]
            with m.If(serve.kind == SERVE_RAW):
                m.d.sync += raw_data.eq(Mux(raw_fifo.r_rdy, raw_fifo.r_data[:p.data_width], r_in.p.data))
        with m.Elif(drs_out.i.ready):
            m.d.sync += drs_valid.eq(0)
        # DevLoad sampled when the DRS enters the output register (DEVICE.md §3), then held with it
        drs_dev_load = Signal(2)
        with m.If(drs_out.loading):
            m.d.sync += drs_dev_load.eq(self.dev_load)
        m.d.comb += [
            drs_out.i.valid.eq(drs_valid),
            drs_out.i.p.eq(drs_payload.as_value()),
            drs_out.i.p.data.eq(Mux(drs_kind == SERVE_BUFFER, buffer_read.data,
                                    Mux(drs_kind == SERVE_RAW, raw_data,
                                        Mux(drs_kind == SERVE_NXM, Const((1 << p.data_width) - 1, p.data_width), 0)))),
            self.drs.valid.eq(drs_out.o.valid),
            self.drs.p.eq(drs_out.o.p),
            drs_out.o.ready.eq(self.drs.ready),
            self.drs.p.dev_load.eq(drs_dev_load),
            self.drs.p.meta_field.eq(META_FIELD_NO_OP),
            self.drs.p.meta_value.eq(0),
        ]

        # ---- slot bookkeeping (dispatch claims, serve releases, packer fills, writes invalidate) ----------
        m.d.sync += [
            release_valid.eq(advance & (serve.kind == SERVE_BUFFER)),
            release_slot.eq(serve.slot),
            release_gen.eq(serve.gen),
        ]
        for s in range(slots):
            for g in range(1 << gen_bits):
                claim = dispatch & is_buffered & (serve_entry.slot == s) & (serve_entry.gen == g)
                release = release_valid & (release_slot == s) & (release_gen == g)
                with m.If(claim & ~release):
                    m.d.sync += waiting[s][g].eq(waiting[s][g] + 1)
                with m.Elif(release & ~claim):
                    m.d.sync += waiting[s][g].eq(waiting[s][g] - 1)
            allocate = dispatch & is_miss & (victim == s)
            line_in = packer_line.valid & packer_line.ready & (fill_slot == s)
            with m.If(allocate):
                m.d.sync += [
                    tag_valid[s].eq(1), tag_key[s].eq(key),
                    alloc_gen[s].eq(victim_gen),
                ]
            with m.If(line_in):
                with m.If(packer_line.p.index == 0):
                    m.d.sync += [lines_written[s].eq(1), written_gen[s].eq(fill.gen),
                                 slot_error[s].eq(error_fifo.r_data)]
                with m.Else():
                    m.d.sync += lines_written[s].eq(lines_written[s] + 1)
            # A write invalidates the block the slot holds now; when the slot is being reallocated in this
            # cycle that block is leaving anyway, so the allocation wins: if the new block is the written one
            # (a read concurrent with the write, DEVICE.md §4), it may hold old planes until the write lands.
            # A landed write invalidates again, so no read sent after the write's Cmp hits such a slot; an
            # allocation in that cycle fetches after the B response, so it wins too. A region rewrite
            # invalidates everything, new allocations included.
            hit_by_write = (self.invalidate.valid & (tag_key[s].region == self.invalidate.region)
                            & (tag_key[s].block == self.invalidate.block))
            hit_by_landed = (self.invalidate_landed.valid & (tag_key[s].region == self.invalidate_landed.region)
                             & (tag_key[s].block == self.invalidate_landed.block))
            with m.If(self.invalidate_all | ((hit_by_write | hit_by_landed) & ~allocate)):
                m.d.sync += tag_valid[s].eq(0)
        with m.If(dispatch & is_miss):
            m.d.sync += victim.eq(Mux(victim == slots - 1, 0, victim + 1))

        # ---- events, busy ------------------------------------------------------------------------------
        ev = self.events
        with m.If(dispatch):
            with m.If(~stage_b.region_hit):
                m.d.comb += ev[Counter.NXM_READS].eq(1)
            with m.Elif(~readable):
                m.d.comb += ev[Counter.HOLE_READS].eq(1)
            with m.Else():
                with m.If(is_raw):
                    m.d.comb += ev[Counter.RAW_READS].eq(1)
                with m.Else():
                    m.d.comb += ev[Counter.BUFFER_HITS].eq(hit), ev[Counter.BUFFER_MISSES].eq(~hit)
                    for k in range(1, 17):
                        with m.If(key.k == k):
                            m.d.comb += ev[Counter.READS_AT_K1 + k - 1].eq(1)
        m.d.comb += [
            ev[Counter.DRAM_LINES_READ].eq(ar.rvalid & ar.rready),
            ev[Counter.READ_BURSTS].eq(ar.arvalid & ar.arready),
            ev[Counter.DRS_SENT].eq(self.drs.valid & self.drs.ready),
            ev[Counter.AXI_ERRORS].eq(ar.rvalid & ar.rready & (ar.rresp != AXI_RESP_OKAY)),
            # a mapped read answered with poison (poison list or backend error), counted when served
            ev[Counter.POISON_READS].eq(advance & ((serve.kind == SERVE_RAW) | (serve.kind == SERVE_BUFFER))
                                        & (serve_poison | backend_error)),
        ]
        # Entries this unit does not count are driven 0 explicitly: an undriven entry becomes a constant
        # `always @*` in the Verilog, which never runs (Verilator ALWNEVER; random under +verilator+rand+reset).
        for n in range(N_COUNTERS):
            if n not in READ_ENGINE_EVENTS:
                m.d.comb += ev[n].eq(0)
        m.d.comb += self.busy.eq(self.read.valid | stage_a_valid | stage_b_valid | serve_fifo.r_rdy | drs_valid | reader.busy
                                 | drs_out.o.valid | ~drs_out.i.ready | start_pending | fill_fifo.r_rdy | sign_filling)
        return m
