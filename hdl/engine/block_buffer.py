"""BlockBuffer: the read engine's block buffer (slots of a block's output lines), docs/DEVICE.md §5.

  lookup key --> compare with every slot tag and with the request's key --> lookup_match, lookup_same,
                 and this cycle's allocation (all three registered by the read engine's stage B)
  request (key, match, same, allocated) --> hit, slot, generation (the hit slot, or the round-robin victim); claim
  packer lines --> skid --> first-line gate --> buffer memory (slots x b_max lines) --> serve data
  fill_error (one flag per block handed to the packer) --/
  serve (slot, generation, line) --> ready, error; read --> the line on `data` a cycle later; take --> released
  invalidate / invalidate_landed / invalidate_all --> slot tags

- A slot's tag is the key (region, block, expanded, k, rounding) of the block it holds or is filling. `lookup`
  compares a key with every tag (`lookup_match`) and with the key of the request now in dispatch (`lookup_same`);
  `allocation` is the slot the request claims as a miss in this cycle (one-hot). Only a claim changes tags, so
  the tags after this cycle are the compared ones except in the allocated slot, which holds the request's key:
  the request's hit test takes `same` for the slot it has in `allocated`, `match` for the others (forwarding,
  resolved at dispatch so that the claim decision does not reach the lookup's registers).
  Validity (writes invalidate slots at any time) is applied to the registered `match` of the request. So hits and
  misses are exactly those of a compare at claim time, the golden model's sequence.
- `claim` (the read engine dispatches a buffered read) takes `slot` / `gen`: on a hit the slot's newest
  generation, on a miss the victim, whose tag becomes valid at once (later reads of the same block hit the slot
  while it is still filling: this is the look-ahead that overlaps the fetch of the next block with serving the
  current one), and the fill (slot, generation) is queued for the packer's lines. `can_allocate`: a miss can be
  claimed now (the victim has fewer than MAX_LIVE_GENERATIONS generations alive, and the fill FIFO has room).
- Slots are reallocated without waiting for the reads still using them: each allocation starts a new
  generation of the slot, every claimed read carries the generation it hit, `waiting[s][g]` counts the claimed
  reads of generation g not yet served, and the new fill's first line is held back (at the packer's output; its
  planes are already fetched) until the reads of the generation the slot holds are served. So the hit/miss
  sequence is exactly the round-robin one of DEVICE.md §5, and timing only decides when a fill lands.
- The packer's lines are written into the slot at the head of the fill FIFO; a per-slot line count lets a read
  of line j be served from the cycle after line j is written (`serve.ready`, from the slot's registered tag).
  `serve.read` reads the line (on `serve.data` from the next cycle, held until the next read); `serve.take`
  releases the read (the DRS server reads in every cycle its DRS register is free, takes only a ready line).
- Backend errors: `fill_error` holds one flag per block (its plane beats' RRESP errors ORed), popped with the
  block's last line; the slot keeps the flag of the generation it holds, so every line served from that fetch,
  hits included, reports `serve.error` until the slot is refilled.
- Writes: `invalidate` (a write's block), `invalidate_landed` (its last B response) and `invalidate_all` (a
  region rewrite) clear the valid bit of the slots holding the block (DEVICE.md §4).
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Mux, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams
from smartquant.hdl.engine.packer import line_layout
from smartquant.hdl.engine.poison import block_event_layout
from smartquant.hdl.stream_buffers import InputSkid

GENERATION_BITS = 3
# Generations of one slot alive at once (held + pending fills). Below 1 << GENERATION_BITS so that a reused
# generation number never aliases one with reads still queued. At k = 1 every line is a new block, so the blocks
# in flight (slots x live generations) must cover fetch latency + packer pipeline: with 3 live generations and
# 2 slots streaming fell to 0.38 lines/cycle at k = 1 and 0.68 at k = 2; with 7 it holds 1.0.
MAX_LIVE_GENERATIONS = 7
# A line is servable from the cycle after the packer writes it (`serve.ready` comes from the slot's registered tag)
WRITE_TO_SERVE_CYCLES = 1


def block_key_layout(params: ControllerParams) -> data.StructLayout:
    """What a slot holds: the block of a region, read expanded or packed, at k, with its rounding."""
    return data.StructLayout({"region": params.region_index_bits, "block": params.line_bits, "expanded": 1,
                              "k": params.k_bits, "midpoint": 1, "toward_zero": 1})


def slot_tag_layout(params: ControllerParams) -> data.StructLayout:
    """One slot's tag and generations: `key` (if `valid`), the generation the last allocation started
    (`alloc_gen`), the one whose lines the slot holds (`written_gen`, `lines_written` of them so far) and that
    fill's backend error flag."""
    return data.StructLayout({"valid": 1, "key": block_key_layout(params), "alloc_gen": GENERATION_BITS,
                              "written_gen": GENERATION_BITS, "lines_written": 5, "backend_error": 1})


def buffer_line_layout(params: ControllerParams) -> data.StructLayout:
    """A claimed read: line `line` of the block of generation `gen` in slot `slot`."""
    return data.StructLayout({"slot": params.buffer_slot_bits, "gen": GENERATION_BITS, "line": params.block_line_bits})


def buffer_serve_signature(params: ControllerParams) -> wiring.Signature:
    """The serve side, as the reader (the DRS server) sees it: it names a claimed read's line, learns whether the
    line is written (`ready`) and was fetched with an error, reads it (`read`: the addressed line's data follows
    on `data` a cycle later and stays until the next read) and takes it (`take`: the read is served, its slot's
    reader released; a take must come with a read: the read port's enable is `read` alone). `read` may be
    given for a line not yet written (its data is then undefined): the reader reads whenever it has room, so
    that the serve test does not reach the data register's enable (timing round 20a)."""
    return wiring.Signature({
        "address": Out(buffer_line_layout(params)),
        "read": Out(1),
        "take": Out(1),
        "ready": In(1),
        "error": In(1),
        "data": In(params.data_width),
    })


class BlockBuffer(wiring.Component):
    """`lookup` / `lookup_match` (the tag compare), `request` / `hit` / `slot` / `gen` / `can_allocate` / `claim`
    (the read in dispatch), `fill_error` and `line` (fills), `serve` (the DRS server's reads), the invalidations,
    `busy` (fills outstanding). `serve_depth`: reads that can be claimed and not yet taken (sizes the counters)."""

    def __init__(self, params: ControllerParams, serve_depth: int):
        self.params = params
        self.serve_depth = serve_depth
        slots = params.buffer_slots
        super().__init__({
            "lookup": In(block_key_layout(params)),
            "lookup_match": Out(slots),
            "lookup_same": Out(1),
            "allocation": Out(slots),
            # the read in dispatch: its key and, registered when it was looked up, lookup_match, lookup_same
            # and the allocation of that cycle (`allocated`)
            "request": In(data.StructLayout({"key": block_key_layout(params), "match": slots, "same": 1,
                                             "allocated": slots})),
            "hit": Out(1),
            "slot": Out(params.buffer_slot_bits),
            "gen": Out(GENERATION_BITS),
            "can_allocate": Out(1),
            "claim": In(1),
            "fill_error": In(stream.Signature(1)),
            "line": In(stream.Signature(line_layout(params))),
            "serve": In(buffer_serve_signature(params)),
            "invalidate": In(block_event_layout(params)),
            "invalidate_landed": In(block_event_layout(params)),
            "invalidate_all": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        slots = p.buffer_slots
        gen_bits = GENERATION_BITS
        # `waiting` counts the claimed reads of one (slot, generation): a read is claimed at dispatch and
        # released one cycle after it is taken (see `release_valid`), so the count is at most serve_depth + 1
        # (all queued reads hitting one block while the DRS is held off, and the one just served).
        count_bits = (self.serve_depth + 1).bit_length()
        tags = Signal(data.ArrayLayout(slot_tag_layout(p), slots))
        waiting = [[Signal(count_bits, name=f"slot{s}_gen{g}_waiting") for g in range(1 << gen_bits)]
                   for s in range(slots)]
        # The release of a taken read, registered: (slot, generation) of the read taken in the previous cycle.
        # The counters take it a cycle late, so the serve decision (`take`, which depends on the packer's line in
        # the same cycle) ends at these few flip-flops instead of the counters' enables and adders (an FPGA
        # build's critical path); the first-line gate subtracts the pending release, so it sees exactly the
        # count it saw before.
        release_valid = Signal()
        release_slot = Signal(p.buffer_slot_bits)
        release_gen = Signal(gen_bits)
        # The claim, registered the same way: the dispatch decision (the deepest cone of the read engine) ends at
        # these flip-flops instead of the counters' decode and adders. The first-line gate needs no pending
        # claim: a claim adds to the generation a slot holds only while no newer one is allocated (hits claim
        # the newest), so the first fill it can hold back is allocated in a later cycle, and that fill's first
        # line is accepted two cycles after its allocation at the earliest (its FIFO entry is written a cycle
        # late, below), when the claim is in the count.
        claim_valid = Signal()
        claim_slot = Signal(p.buffer_slot_bits)
        claim_gen = Signal(gen_bits)

        # ---- lookup and claim --------------------------------------------------------------------------
        key = self.request.key
        victim = Signal(p.buffer_slot_bits)   # round-robin over misses
        allocating = Signal()           # a miss is claimed in this cycle: the victim is allocated
        for s in range(slots):
            m.d.comb += [
                self.lookup_match[s].eq(self.lookup.as_value() == tags[s].key.as_value()),
                self.allocation[s].eq(allocating & (victim == s)),
            ]
        m.d.comb += self.lookup_same.eq(self.lookup.as_value() == key.as_value())
        # the tags as they were after the allocation made when the request was looked up: the slot allocated
        # then holds the key of the read then in dispatch (`same`), every other slot the tag it was compared with
        hits = Signal(slots)
        m.d.comb += hits.eq(Cat(*(Mux(self.request.allocated[s], self.request.same, self.request.match[s])
                                  & tags[s].valid for s in range(slots))))
        hit = hits.any()
        hit_slot = Signal(p.buffer_slot_bits)
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
                        victim_free.eq(((tags[s].alloc_gen - tags[s].written_gen)[:gen_bits])
                                       < MAX_LIVE_GENERATIONS - 1),
                        victim_gen.eq(tags[s].alloc_gen + 1),
                    ]
        with m.Switch(hit_slot):
            for s in range(slots):
                with m.Case(s):
                    m.d.comb += hit_gen.eq(tags[s].alloc_gen)

        fill_layout = data.StructLayout({"slot": p.buffer_slot_bits, "gen": gen_bits})
        fill_depth = MAX_LIVE_GENERATIONS * slots
        m.submodules.fill_fifo = fill_fifo = SyncFIFO(width=fill_layout.size, depth=fill_depth)
        # An allocation's fill is written into the FIFO a cycle later (from registers, off the dispatch cone); no
        # line of it can reach the packer's output before its fetch has gone out on AR and come back on R.
        fill_pending = Signal()
        fill_pending_entry = Signal(fill_layout)
        m.d.sync += [fill_pending.eq(allocating), fill_pending_entry.eq(Cat(victim, victim_gen))]
        # one backend-error flag per block handed to the packer, popped with the block's last output line
        m.submodules.error_fifo = error_fifo = SyncFIFO(width=1, depth=MAX_LIVE_GENERATIONS * slots)
        m.d.comb += [
            self.hit.eq(hit),
            self.slot.eq(Mux(hit, hit_slot, victim)),
            self.gen.eq(Mux(hit, hit_gen, victim_gen)),
            # room for this fill after the pending one (what w_rdy said when fills were written at once)
            self.can_allocate.eq(victim_free & fill_fifo.w_rdy
                                 & ~(fill_pending & (fill_fifo.level == fill_depth - 1))),
            allocating.eq(self.claim & ~hit),
            fill_fifo.w_data.eq(fill_pending_entry),
            fill_fifo.w_en.eq(fill_pending),
            self.fill_error.ready.eq(error_fifo.w_rdy),
            error_fifo.w_data.eq(self.fill_error.payload),
            error_fifo.w_en.eq(self.fill_error.valid),
            self.busy.eq(fill_fifo.r_rdy | fill_pending),
        ]

        # ---- fills -------------------------------------------------------------------------------------
        # The packer's lines pass a skid: the packer sees a registered ready, so the first-line gate below (and
        # the serve side's use of the line) stays off the packer's pipeline advance, which clocks its banks.
        m.submodules.line_skid = line_skid = InputSkid(line_layout(p))
        wiring.connect(m, wiring.flipped(self.line), line_skid.i)
        packer_line = line_skid.o
        m.submodules.buffer = buffer = Memory(shape=unsigned(p.data_width), depth=slots * p.b_max, init=[])
        buffer_write = buffer.write_port()
        buffer_read = buffer.read_port(domain="sync")
        fill = Signal(fill_layout)
        fill_slot = fill.slot
        m.d.comb += [
            fill.eq(fill_fifo.r_data),
            buffer_write.addr.eq(Cat(packer_line.p.index[:p.block_line_bits], fill_slot)),
            buffer_write.data.eq(packer_line.p.data),
            buffer_write.en.eq(packer_line.valid & packer_line.ready),
            fill_fifo.r_en.eq(packer_line.valid & packer_line.ready & packer_line.p.last),
            error_fifo.r_en.eq(packer_line.valid & packer_line.ready & packer_line.p.last),
        ]
        # A fill's first line overwrites the slot: it waits until the held block's readers are served. The flag
        # is registered per slot (the counters, the generation select and the zero test stay off the path that
        # gates the packer): slot_held[s] is "reads of the generation slot s holds are still queued after this
        # cycle's take". The counters lag (a take is counted two cycles later), so the flag subtracts the
        # registered release and this cycle's take of the held generation: a slot's next first line can land
        # in the cycle after its last read is taken, which keeps k = 1 (a new block every line, two slots)
        # streaming at one line per cycle although a line is servable only from the cycle after it is written.
        # Safe: while a fill of slot s waits, its generation was allocated after the held one, so hits claim
        # the newer generation and the held count can only fall; and in the cycle a fill's first line lands
        # (the held generation changes) the slot counts as held, so the next fill's first line waits for the
        # new count.
        slot_held = Signal(slots)
        for s in range(slots):
            held_waiting = Signal(count_bits, name=f"slot{s}_held_waiting")
            held_release = Signal(name=f"slot{s}_held_release")   # a read of it taken in the previous cycle
            with m.Switch(tags[s].written_gen):
                for g in range(1 << gen_bits):
                    with m.Case(g):
                        m.d.comb += [
                            held_waiting.eq(waiting[s][g]),
                            held_release.eq(release_valid & (release_slot == s) & (release_gen == g)),
                        ]
            held_take = (self.serve.take & (self.serve.address.slot == s)
                         & (self.serve.address.gen == tags[s].written_gen))
            still_held = ((held_waiting >= 3) | ((held_waiting == 2) & ~(held_release & held_take))
                          | ((held_waiting == 1) & ~held_release & ~held_take))
            first_line_lands = (packer_line.valid & packer_line.ready & (fill_slot == s)
                                & (packer_line.p.index == 0))
            m.d.sync += slot_held[s].eq(still_held | first_line_lands)
        # (a line waits for its fill's FIFO entry too: never in the read engine, where a fill's lines come after
        # its fetch's R beats, but the unit is then safe by itself)
        m.d.comb += packer_line.ready.eq(fill_fifo.r_rdy
                                         & ~((slot_held >> fill_slot)[0] & (packer_line.p.index == 0)))

        # ---- serve -------------------------------------------------------------------------------------
        # A line is servable from the cycle after it is written: `ready` and `error` come from the slot's
        # registered tag alone, so the packer's line (its skid, the fill FIFO head, the first-line gate) does not
        # reach the DRS server's `take` and the read register's clock enable (an FPGA build's critical path ran
        # skid -> write address -> slot_held -> ready -> take -> the 128-bit read register's enable). The read
        # port need not be transparent: a line is never taken in the cycle it is written (a read of it then
        # gives old data, which the reader does not use).
        serve = self.serve.address
        with m.Switch(serve.slot):
            for s in range(slots):
                with m.Case(s):
                    m.d.comb += [
                        self.serve.ready.eq((tags[s].written_gen == serve.gen)
                                            & (tags[s].lines_written > serve.line)),
                        self.serve.error.eq(tags[s].backend_error),
                    ]
        m.d.comb += [
            buffer_read.addr.eq(Cat(serve.line, serve.slot)),
            buffer_read.en.eq(self.serve.read),   # the read port holds its data until the next read
            self.serve.data.eq(buffer_read.data),
        ]

        # ---- slot bookkeeping (claims, releases, fills, writes invalidate) --------------------------------
        m.d.sync += [
            release_valid.eq(self.serve.take),
            release_slot.eq(serve.slot),
            release_gen.eq(serve.gen),
            claim_valid.eq(self.claim),
            claim_slot.eq(self.slot),
            claim_gen.eq(self.gen),
        ]
        for s in range(slots):
            for g in range(1 << gen_bits):
                claim = claim_valid & (claim_slot == s) & (claim_gen == g)
                release = release_valid & (release_slot == s) & (release_gen == g)
                with m.If(claim & ~release):
                    m.d.sync += waiting[s][g].eq(waiting[s][g] + 1)
                with m.Elif(release & ~claim):
                    m.d.sync += waiting[s][g].eq(waiting[s][g] - 1)
            allocate = allocating & (victim == s)
            line_in = packer_line.valid & packer_line.ready & (fill_slot == s)
            with m.If(allocate):
                m.d.sync += [tags[s].key.eq(key), tags[s].alloc_gen.eq(victim_gen)]
            with m.If(line_in):
                with m.If(packer_line.p.index == 0):
                    m.d.sync += [tags[s].lines_written.eq(1), tags[s].written_gen.eq(fill.gen),
                                 tags[s].backend_error.eq(error_fifo.r_data)]
                with m.Else():
                    m.d.sync += tags[s].lines_written.eq(tags[s].lines_written + 1)
            # A write invalidates the block the slot holds now; when the slot is being reallocated in this
            # cycle that block is leaving anyway, so the allocation wins: if the new block is the written one
            # (a read concurrent with the write, DEVICE.md §4), it may hold old planes until the write lands.
            # A landed write invalidates again, so no read sent after the write's Cmp hits such a slot; an
            # allocation in that cycle fetches after the B response, so it wins too. A region rewrite
            # invalidates everything, new allocations included.
            hit_by_write = (self.invalidate.valid & (tags[s].key.region == self.invalidate.region)
                            & (tags[s].key.block == self.invalidate.block))
            hit_by_landed = (self.invalidate_landed.valid & (tags[s].key.region == self.invalidate_landed.region)
                             & (tags[s].key.block == self.invalidate_landed.block))
            # one expression, so that the allocation (the dispatch cone) enters the valid flip-flop's data through
            # a single LUT beside the invalidations, not through a synchronous reset built as "invalidated and not
            # allocated" (timing round 12a)
            m.d.sync += tags[s].valid.eq(~self.invalidate_all
                                         & (allocate | (tags[s].valid & ~(hit_by_write | hit_by_landed))))
        with m.If(allocating):
            m.d.sync += victim.eq(Mux(victim == slots - 1, 0, victim + 1))
        return m
