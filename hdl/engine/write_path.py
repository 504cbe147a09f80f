r"""Write path (docs/DEVICE.md §4): M2S RwD -> AXI4 write bursts into the plane layout, then one NDR Cmp per write.

Pipeline (every valid comes from a register, so no valid depends on a ready; RwD.ready is the InputSkid's
register and AXI AW/W leave through OutputBuffers, hdl/stream_buffers.py, so every AXI output is a register):

  rwd -> skid -> [held: one RwD + its address decode] --(writable)--> [issue stage] --> AW buffer --> axi.aw*
                      |                                 |                  \--> W buffer  --> axi.w*
                      |                          allocate entry e          (AWID = e on every burst)
                      |                                 v
                      |                      [in-flight table: tag, ld_id, B responses still due] <-- axi.b*
                      |                                 | all B responses in
                      \--(dropped: bad opcode, unmapped, read-only view)--> [NDR register] --> ndr

- Throughput with no backpressure: one raw write per cycle; a weight-major write's B beats back to back.
- held: the RwD is registered with its region match (one-hot, address_map.region_hits) and its line relative to
  every region's base, then decoded combinationally with address_map.decode_in_region.
  A write is *writable* when its opcode is MemWr/MemWrPtl or their TEE variants, its line falls in an enabled
  region (no address bit above the map set) and its view is raw (0) or weight-major (1). Everything else
  completes at once with NDR Cmp: bad opcode counts rwd_bad_opcode only; no region counts nxm_writes; a region
  hit through views 2..7 counts wr_dropped (golden/device.py applies the same reading).
- Byte enables: MemWr ignores the message's byte_enable field (all bytes); MemWrPtl uses it.
- raw view: one 1-beat burst at the raw line, WSTRB = byte enables.
- weight-major view, line j of block b (B-bit little-endian weights [j*W/B, (j+1)*W/B) of the block): plane p's
  slice is bit B-1-p of each of those weights. The transpose is fixed wiring per B in {2, 4, 8, 16} <= b_max,
  muxed by the region's B; it is stored plane-major (plane p at bits [p*W/B, (p+1)*W/B)) in the issue stage.
  Beat p carries plane p's slice replicated B times across the line, and WSTRB selects copy j: the bytes
  [j*W/8/B, (j+1)*W/8/B) of the plane line, so no shifter is needed. One plane byte holds 8 weights = one
  aligned B-byte group of the weight-major line; a group is written only when all its B enables are set, a
  partly enabled group is skipped and counted in wr_partial_groups (never half a weight, no read-modify-write).
  B beats are always issued (WSTRB possibly 0): one INCR burst of B beats when R = 1 (planes of a block are
  consecutive lines), B one-beat bursts at stride R when R > 1.
- Several writes are in flight: each writable RwD takes an entry of the in-flight table (`max_outstanding`
  entries, 8 by default, at most 2**axi_id_bits; 8 sustain one raw write per cycle when B returns promptly) and uses the entry index as AWID on all its bursts, so B responses
  of one write arrive in order and different writes may complete out of order. The entry counts the B
  responses still due; when it reaches 0 the write's NDR Cmp is sent and the entry freed. BREADY is always 1.
- Backend errors (DEVICE.md §4): a B response with BRESP != OKAY marks its entry; the entry's (region, block)
  is entered in the poison table (through `poison_insert`; a pending error insert has the port first and a
  poisoned write waits in `held` meanwhile, so a stream of poisoned writes cannot starve it) before
  the write's NDR Cmp may go out, so a read the host sends after the Cmp already sees the poison. Each failing
  B response counts axi_errors; the NDR is still Cmp (CXL has no error completion for a write).
- The NDR register serves completed entries first, then the dropped write in `held` (a drop waits at most
  until the table drains, since no new write enters while it waits). NDR carries MetaField No-Op, the tag and
  LD-ID; dev_load is left 0 for the top to fill.
- Side outputs, registered one cycle after the write leaves `held`: `poison_insert` (a writable RwD with
  poison = 1: its (region, block), the raw view's block being s*R + r of the raw line; or the block of a write
  whose B response failed, which goes first) for the poison table,
  `invalidate` (every writable RwD's (region, block)) for the read engine's block buffer, and `events`, the
  per-cycle increments of rwd_mem_wr, rwd_mem_wr_ptl, rwd_bad_opcode, nxm_writes, wr_dropped, poison_writes,
  wr_partial_groups, dram_lines_written (beats), write_bursts and bytes_strobed (set WSTRB bits). All
  counters of a write are counted in one cycle, when it leaves `held`; axi_errors one cycle after the failing
  B response. The other entries of `events` are driven 0.
- `landed`: the (region, block) of a write whose last B response arrived, registered (the cycle after that B,
  before the write's Cmp can leave): the read engine invalidates the block's slots again, so a read that ran
  concurrently with the write and filled a slot with the old planes cannot serve a read sent after the Cmp.
- `busy` is 1 while any write is held, issuing, awaiting B responses or waiting for its NDR; `outstanding` is
  the number of in-flight entries (writes with AXI traffic not yet completed).

Requires W/B >= 8 for every B <= b_max (a plane slice of whole bytes): data_width >= 8 * b_max.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux, Array, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from smartquant.params import (
    ControllerParams, Counter, N_COUNTERS, View, RwdOpcode, NdrOpcode, META_FIELD_NO_OP, SUPPORTED_B,
)
from smartquant.hdl.backend.axi import AxiSignature, AXI_BURST_INCR, AXI_RESP_OKAY
from smartquant.hdl.csr.layouts import region_entry_layout
from smartquant.hdl.cxl.messages import rwd_layout, ndr_layout
from smartquant.hdl.engine.address_map import (
    line_bits, region_index_bits, plane_line, split_address, match_region, decode_in_region,
)
from smartquant.hdl.engine.poison import block_event_layout
from smartquant.hdl.stream_buffers import InputSkid, OutputBuffer


# the event counters this unit drives (every other entry of `events` is 0)
WRITE_PATH_EVENTS = frozenset([Counter.RWD_MEM_WR, Counter.RWD_MEM_WR_PTL, Counter.RWD_BAD_OPCODE, Counter.NXM_WRITES,
                               Counter.WR_DROPPED, Counter.POISON_WRITES, Counter.WR_PARTIAL_GROUPS,
                               Counter.DRAM_LINES_WRITTEN, Counter.WRITE_BURSTS, Counter.BYTES_STROBED,
                               Counter.AXI_ERRORS])


def popcount(bits):
    """Number of set bits of a value (an adder tree, balanced so its depth is log2 of the width)."""
    terms = [bits[i] for i in range(len(bits))]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


class WritePath(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams(), max_outstanding: int = 8):
        if params.data_width < 8 * params.b_max:
            self._MustUse__silence = True   # a refused instance is not an unused design
            raise ValueError(f"weight-major writes need W/B >= 8 (whole plane bytes): data_width "
                             f"{params.data_width} < 8 * b_max = {8 * params.b_max}")
        if max_outstanding < 1:
            self._MustUse__silence = True   # a refused instance is not an unused design
            raise ValueError(f"max_outstanding must be >= 1, got {max_outstanding}")
        self.params = params
        self.max_outstanding = min(max_outstanding, 1 << params.axi_id_bits)
        p = params
        super().__init__({
            "rwd": In(stream.Signature(rwd_layout(p))),
            "ndr": Out(stream.Signature(ndr_layout(p))),
            "regions": In(data.ArrayLayout(region_entry_layout(p), p.n_regions)),
            "axi": Out(AxiSignature(p.dram_addr_bits, p.data_width, p.axi_id_bits)),
            "poison_insert": Out(block_event_layout(p)),
            "invalidate": Out(block_event_layout(p)),
            "landed": Out(block_event_layout(p)),
            "events": Out(data.ArrayLayout(unsigned(8), N_COUNTERS)),
            "busy": Out(1),
            "outstanding": Out(range(self.max_outstanding + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        W = p.data_width
        line_bytes = p.line_bytes
        lb = line_bits(p)
        b_options = [B for B in SUPPORTED_B if B <= p.b_max]
        n_entries = self.max_outstanding
        axi = self.axi

        # ---- held: one RwD and its decode --------------------------------------------------------------
        # RwD.ready is a register (the skid's): the decode of `held` and the NDR handshake stay inside
        m.submodules.rwd_skid = rwd_skid = InputSkid(rwd_layout(p))
        wiring.connect(m, wiring.flipped(self.rwd), rwd_skid.i)
        rwd_in = rwd_skid.o
        held = Signal(rwd_layout(p))
        held_valid = Signal()
        held_leaves = Signal()
        m.d.comb += rwd_in.ready.eq(~held_valid | held_leaves)
        # The region match is done as the RwD enters `held`: the one-hot match, the selected region's entry and
        # the line relative to its base are registered beside it, so the decode of `held` starts from them.
        held_any_hit = Signal()
        held_region = Signal(region_index_bits(p))
        held_entry = Signal(region_entry_layout(p))
        held_line = Signal(lb)   # L: the line relative to the region's base
        incoming_line = split_address(p, rwd_in.p.address)[0]
        incoming_onehot, incoming_region, incoming_entry, incoming_local = match_region(m, p, incoming_line,
                                                                                        self.regions)
        with m.If(rwd_in.valid & rwd_in.ready):
            m.d.sync += [held.eq(rwd_in.p), held_valid.eq(1), held_any_hit.eq(incoming_onehot.any()),
                         held_region.eq(incoming_region), held_entry.eq(incoming_entry),
                         held_line.eq(incoming_local)]
        with m.Elif(held_leaves):
            m.d.sync += held_valid.eq(0)

        decoded = decode_in_region(m, p, held.address, held_any_hit, held_region, held_entry, held_line)
        # the TEE-intent variants write like the plain opcodes (no TSP: DEVICE.md §4)
        is_mem_wr = (held.opcode == RwdOpcode.MEM_WR) | (held.opcode == RwdOpcode.MEM_WR_TEE)
        is_mem_wr_ptl = (held.opcode == RwdOpcode.MEM_WR_PTL) | (held.opcode == RwdOpcode.MEM_WR_PTL_TEE)
        good_opcode = is_mem_wr | is_mem_wr_ptl
        is_raw = decoded.view == View.RAW
        writable_view = is_raw | (decoded.view == View.WEIGHT_MAJOR)
        writable = Signal()
        unmapped = Signal()
        read_only = Signal()
        m.d.comb += [
            writable.eq(good_opcode & decoded.region_hit & writable_view),
            unmapped.eq(good_opcode & ~decoded.region_hit),
            read_only.eq(good_opcode & decoded.region_hit & ~writable_view),
        ]
        byte_enable = Signal(line_bytes)
        m.d.comb += byte_enable.eq(Mux(is_mem_wr, (1 << line_bytes) - 1, held.byte_enable))

        # Weight-major transpose and strobes, fixed wiring per B, muxed by the region's B.
        planes = Signal(W)              # plane p's slice at bits [p*W/B, (p+1)*W/B)
        slice_strobe = Signal(line_bytes)
        full_groups = Signal(range(line_bytes + 1))
        partial_groups = Signal(range(line_bytes + 1))
        with m.Switch(decoded.log2_b):
            for B in b_options:
                with m.Case(B.bit_length() - 1):
                    per_slice = W // B           # weights per weight-major line = bits per plane slice
                    n_groups = per_slice // 8    # plane bytes per slice = B-byte groups per line
                    m.d.comb += planes.eq(Cat(*(held.data[weight * B + B - 1 - plane]
                                                for plane in range(B) for weight in range(per_slice))))
                    groups = [byte_enable[g * B:(g + 1) * B] for g in range(n_groups)]
                    group_full = Cat(*(group.all() for group in groups))
                    group_partial = Cat(*(group.any() & ~group.all() for group in groups))
                    m.d.comb += [
                        slice_strobe.eq(Cat(*(group_full & (decoded.line_in_slot == j).replicate(n_groups)
                                              for j in range(B)))),
                        full_groups.eq(popcount(group_full)),
                        partial_groups.eq(popcount(group_partial)),
                    ]

        one_burst = is_raw | (decoded.log2_r == 0)
        n_beats = Signal(range(17))
        m.d.comb += n_beats.eq(Mux(is_raw, 1, Const(1, 5) << decoded.log2_b))
        n_bursts = Signal(range(17))
        m.d.comb += n_bursts.eq(Mux(one_burst, 1, n_beats))
        first_line = Signal(lb)
        m.d.comb += first_line.eq(Mux(is_raw, decoded.raw_line,
                                      plane_line(decoded.base_line, decoded.superblock, Const(0, 4), decoded.slot_r,
                                                 decoded.log2_b, decoded.log2_r, lb)))

        # ---- in-flight table ---------------------------------------------------------------------------
        entry_used = [Signal(name=f"entry{i}_used") for i in range(n_entries)]
        entry_tag = [Signal(16, name=f"entry{i}_tag") for i in range(n_entries)]
        entry_ld_id = [Signal(4, name=f"entry{i}_ld_id") for i in range(n_entries)]
        entry_due = [Signal(range(17), name=f"entry{i}_due") for i in range(n_entries)]   # B responses due
        entry_done = [Signal(name=f"entry{i}_done") for i in range(n_entries)]
        entry_region = [Signal.like(decoded.region, name=f"entry{i}_region") for i in range(n_entries)]
        entry_block = [Signal(lb, name=f"entry{i}_block") for i in range(n_entries)]
        # a B response of the write failed and its block is not yet in the poison table
        entry_error = [Signal(name=f"entry{i}_backend_error") for i in range(n_entries)]
        for i in range(n_entries):
            m.d.comb += entry_done[i].eq(entry_used[i] & (entry_due[i] == 0) & ~entry_error[i])

        free_entry = Signal(range(n_entries))
        have_free = Signal()
        for i in reversed(range(n_entries)):     # lowest free entry
            with m.If(~entry_used[i]):
                m.d.comb += [free_entry.eq(i), have_free.eq(1)]
        done_entry = Signal(range(n_entries))
        have_done = Signal()
        for i in reversed(range(n_entries)):
            with m.If(entry_done[i]):
                m.d.comb += [done_entry.eq(i), have_done.eq(1)]
        m.d.comb += self.outstanding.eq(popcount(Cat(*entry_used)))

        # ---- issue stage: the write whose AW and W beats are being sent ---------------------------------
        stage_busy = Signal()
        stage_raw = Signal()
        stage_one_burst = Signal()
        stage_entry = Signal(range(n_entries))
        stage_first_line = Signal(lb)
        stage_log2_b = Signal(3)
        stage_log2_r = Signal(3)
        stage_n_beats = Signal(range(17))
        stage_n_bursts = Signal(range(17))
        stage_data = Signal(W)          # raw: the line; weight-major: plane-major slices
        stage_strobe = Signal(line_bytes)
        aw_sent = Signal(range(17))
        w_sent = Signal(range(17))
        aw_pending = Signal()
        w_pending = Signal()
        m.d.comb += [
            aw_pending.eq(stage_busy & (aw_sent != stage_n_bursts)),
            w_pending.eq(stage_busy & (w_sent != stage_n_beats)),
        ]

        # AW and W leave through output buffers (two entries each): AXI valid and payload are registers, and the
        # issue stage sees only the buffers' registered ready, so no combinational path runs from
        # AWREADY/WREADY back to rwd.ready, yet the next write loads in the cycle its predecessor queues its
        # last beat.
        aw_layout = data.StructLayout({"id": p.axi_id_bits, "line": lb, "len": 8})
        w_layout = data.StructLayout({"data": W, "strb": line_bytes, "last": 1})
        m.submodules.aw_buffer = aw_buffer = OutputBuffer(aw_layout)
        m.submodules.w_buffer = w_buffer = OutputBuffer(w_layout)
        aw_out = aw_buffer.o.p
        w_out = w_buffer.o.p
        axsize = (line_bytes - 1).bit_length()
        m.d.comb += [
            axi.awvalid.eq(aw_buffer.o.valid),
            aw_buffer.o.ready.eq(axi.awready),
            axi.awid.eq(aw_out.id),
            axi.awaddr.eq(Cat(Const(0, p.line_offset_bits), aw_out.line)),
            axi.awlen.eq(aw_out.len),
            axi.awsize.eq(axsize),
            axi.awburst.eq(AXI_BURST_INCR),
            axi.wvalid.eq(w_buffer.o.valid),
            w_buffer.o.ready.eq(axi.wready),
            axi.wdata.eq(w_out.data),
            axi.wstrb.eq(w_out.strb),
            axi.wlast.eq(w_out.last),
        ]

        aw_next = Signal(aw_layout)
        m.d.comb += [
            aw_next.id.eq(stage_entry),
            aw_next.line.eq((stage_first_line + (aw_sent << stage_log2_r))[:lb]),
            aw_next.len.eq(Mux(stage_one_burst, stage_n_beats - 1, 0)),
            aw_buffer.i.p.eq(aw_next),
            aw_buffer.i.valid.eq(aw_pending),
        ]
        with m.If(aw_buffer.i.valid & aw_buffer.i.ready):
            m.d.sync += aw_sent.eq(aw_sent + 1)

        # Beat p of a weight-major write is plane p's slice, replicated; WSTRB picks copy j.
        w_next = Signal(w_layout)
        with m.If(stage_raw):
            m.d.comb += w_next.data.eq(stage_data)
        with m.Else():
            with m.Switch(stage_log2_b):
                for B in b_options:
                    with m.Case(B.bit_length() - 1):
                        plane_slice = stage_data.word_select(w_sent[:B.bit_length() - 1], W // B)
                        m.d.comb += w_next.data.eq(plane_slice.replicate(B))
        m.d.comb += [
            w_next.strb.eq(stage_strobe),
            w_next.last.eq(~stage_one_burst | (w_sent == stage_n_beats - 1)),
            w_buffer.i.p.eq(w_next),
            w_buffer.i.valid.eq(w_pending),
        ]
        with m.If(w_buffer.i.valid & w_buffer.i.ready):
            m.d.sync += w_sent.eq(w_sent + 1)

        # The stage takes the next write once this cycle queues the last AW and W of the current one.
        stage_free = Signal()
        m.d.comb += stage_free.eq(
            (~aw_pending | ((aw_sent + 1 == stage_n_bursts) & aw_buffer.i.ready))
            & (~w_pending | ((w_sent + 1 == stage_n_beats) & w_buffer.i.ready)))

        # A failed write's poison insert waits for no one: a poisoned write stays in held while one is pending
        # (have_error is defined with the in-flight table's error flags below).
        have_error = Signal()
        load_stage = Signal()
        m.d.comb += load_stage.eq(held_valid & writable & stage_free & have_free & ~(held.poison & have_error))
        with m.If(load_stage):   # after the counter updates above: a new write restarts them at 0
            m.d.sync += [
                stage_busy.eq(1),
                stage_raw.eq(is_raw),
                stage_one_burst.eq(one_burst),
                stage_entry.eq(free_entry),
                stage_first_line.eq(first_line),
                stage_log2_b.eq(decoded.log2_b),
                stage_log2_r.eq(decoded.log2_r),
                stage_n_beats.eq(n_beats),
                stage_n_bursts.eq(n_bursts),
                stage_data.eq(Mux(is_raw, held.data, planes)),
                stage_strobe.eq(Mux(is_raw, byte_enable, slice_strobe)),
                aw_sent.eq(0),
                w_sent.eq(0),
            ]
        with m.Elif(stage_free):
            m.d.sync += stage_busy.eq(0)

        # ---- NDR register: completed writes first, then a dropped write --------------------------------
        m.d.comb += axi.bready.eq(1)
        b_fire = axi.bvalid & axi.bready
        ndr = self.ndr
        complete = Signal()
        drop = Signal()
        with m.If(~ndr.valid | ndr.ready):
            with m.If(have_done):
                m.d.comb += complete.eq(1)
                m.d.sync += [
                    ndr.valid.eq(1),
                    ndr.p.tag.eq(Cat(*entry_tag).word_select(done_entry, 16)),
                    ndr.p.ld_id.eq(Cat(*entry_ld_id).word_select(done_entry, 4)),
                ]
            with m.Elif(held_valid & ~writable):
                m.d.comb += drop.eq(1)
                m.d.sync += [ndr.valid.eq(1), ndr.p.tag.eq(held.tag), ndr.p.ld_id.eq(held.ld_id)]
            with m.Else():
                m.d.sync += ndr.valid.eq(0)
        m.d.comb += [
            ndr.p.opcode.eq(NdrOpcode.CMP),
            ndr.p.meta_field.eq(META_FIELD_NO_OP),
            ndr.p.meta_value.eq(0),
            ndr.p.dev_load.eq(0),
        ]
        m.d.comb += held_leaves.eq(load_stage | drop)

        b_error = b_fire & (axi.bresp != AXI_RESP_OKAY)
        error_entry = Signal(range(n_entries))   # lowest entry whose failed block still waits for its insert
        for i in reversed(range(n_entries)):
            with m.If(entry_error[i]):
                m.d.comb += [error_entry.eq(i), have_error.eq(1)]
        # A failed write's insert has the port first (a poisoned write waits in held meanwhile, see load_stage):
        # each pending error takes one cycle, so neither side waits longer than the in-flight table is deep.
        error_insert = have_error
        for i in range(n_entries):
            with m.If(error_insert & (error_entry == i)):
                m.d.sync += entry_error[i].eq(0)
            with m.If(b_error & (axi.bid == i) & entry_used[i]):   # after the clear: a new failure wins
                m.d.sync += entry_error[i].eq(1)
            with m.If(load_stage & (free_entry == i)):
                m.d.sync += [entry_used[i].eq(1), entry_tag[i].eq(held.tag), entry_ld_id[i].eq(held.ld_id),
                             entry_due[i].eq(n_bursts), entry_region[i].eq(decoded.region),
                             entry_block[i].eq(decoded.block)]
            with m.Elif(complete & (done_entry == i)):
                m.d.sync += entry_used[i].eq(0)
            with m.Elif(b_fire & (axi.bid == i) & entry_used[i] & (entry_due[i] != 0)):
                m.d.sync += entry_due[i].eq(entry_due[i] - 1)

        # ---- side outputs, one cycle after the write leaves held ---------------------------------------
        m.d.sync += [
            self.poison_insert.valid.eq((load_stage & held.poison) | error_insert),
            self.poison_insert.region.eq(Mux(error_insert, Array(entry_region)[error_entry], decoded.region)),
            self.poison_insert.block.eq(Mux(error_insert, Array(entry_block)[error_entry], decoded.block)),
            self.invalidate.valid.eq(load_stage),
            self.invalidate.region.eq(decoded.region),
            self.invalidate.block.eq(decoded.block),
        ]
        # `landed`: the write's last B response arrives (registered, like `invalidate`): two cycles before its
        # Cmp can leave the NDR register, so the read engine drops slots filled while the write was in flight
        m.d.sync += self.landed.valid.eq(0)
        for i in range(n_entries):
            with m.If(b_fire & (axi.bid == i) & entry_used[i] & (entry_due[i] == 1)):
                m.d.sync += [self.landed.valid.eq(1), self.landed.region.eq(entry_region[i]),
                             self.landed.block.eq(entry_block[i])]
        events = self.events
        m.d.sync += events.eq(0)
        m.d.sync += events[Counter.AXI_ERRORS].eq(b_error)
        with m.If(held_leaves):
            bytes_strobed = Mux(is_raw, popcount(byte_enable), full_groups << decoded.log2_b)
            m.d.sync += [
                events[Counter.RWD_MEM_WR].eq(is_mem_wr),
                events[Counter.RWD_MEM_WR_PTL].eq(is_mem_wr_ptl),
                events[Counter.RWD_BAD_OPCODE].eq(~good_opcode),
                events[Counter.NXM_WRITES].eq(unmapped),
                events[Counter.WR_DROPPED].eq(read_only),
                events[Counter.POISON_WRITES].eq(writable & held.poison),
                events[Counter.WR_PARTIAL_GROUPS].eq(Mux(writable & ~is_raw, partial_groups, 0)),
                events[Counter.DRAM_LINES_WRITTEN].eq(Mux(writable, n_beats, 0)),
                events[Counter.WRITE_BURSTS].eq(Mux(writable, n_bursts, 0)),
                events[Counter.BYTES_STROBED].eq(Mux(writable, bytes_strobed, 0)),
            ]

        m.d.comb += self.busy.eq(held_valid | stage_busy | Cat(*entry_used).any() | ndr.valid
                                 | aw_buffer.o.valid | w_buffer.o.valid | ~aw_buffer.i.ready | ~w_buffer.i.ready
                                 | rwd_in.valid)
        return m
