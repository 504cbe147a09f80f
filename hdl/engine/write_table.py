"""WriteTable: the write path's in-flight table (B response counting, error marking, Cmp per tag, `landed`),
docs/DEVICE.md §4.

  allocate (a raw write or a flushed block) --> [entry e: its tags / LD-IDs, B responses still due] <-- b (BID = e)
                                                     | all B responses in, no error pending
                                                     v
                                                    cmp (one per write of the entry, one per cycle)

- An entry (`entries` of them; its index is the AWID of its bursts, `free_id`: the lowest free one, `allocate.ready`:
  one is free) holds the tags and LD-IDs of its writes (`cmps` of them, up to b_max; in LUT RAM), its (region, block), whether
  it is a flushed block (`gathered`) and its poison record (the raw line, or the block's 1 << log2_beats plane
  lines from `line` at stride 1 << log2_r). It counts the B responses still due: 1 for one burst (log2_r = 0),
  else one per beat. `b.ready` is always 1 (every B response has its entry).
- When the count reaches 0 the entry's Cmps leave on `cmp` (the lowest such entry first; within it the last
  write first), and the entry is freed after the last. The done entry (one-hot and binary), its slot and
  `cmp.valid` are registers, chosen a cycle ahead from the entries' next state (no cycle changes: they equal the
  lowest entry that is done in the cycle they are read), so `cmp`'s payload is one LUT-RAM read at a registered
  address and a mux on a registered slot.
- A B response with an error marks its entry: its record leaves on `failed` (the lowest marked entry first)
  for the poison list, and the entry's Cmps wait until it has gone, so a read the host sends after a Cmp
  already sees the poison. A new failure of the same entry in the cycle its record leaves marks it again.
- `landed`: the (region, block) of a flushed block whose last B response arrived, registered (two cycles before
  its first Cmp can leave the write path's NDR register).
- `query_landing`: the read in the read engine's dispatch names a flushed block whose B responses are not all
  in or whose record is not yet in the poison list, or was so one cycle ago (so the registered `landed`
  invalidation and the poison insert act first). `block_query` is what the read engine's stage B loads; the
  table tracks the query and keeps two flip-flops per entry, "names the query's block" (hdl/engine/block_query.py)
  and "landing now or one cycle ago" (loaded from the entry's next state), so `query_landing` is an AND-OR of
  flip-flops.
- `outstanding`: the entries in use; `busy`: one is.
"""
from __future__ import annotations

from amaranth.hdl import Signal, Module, Cat, Const, Mux, Array
from amaranth.lib import wiring, data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams
from smartquant.hdl.backend.axi_writer import b_response_layout
from smartquant.hdl.bits import or_all, popcount
from smartquant.hdl.engine.poison import (
    block_event_layout, poison_record_layout, leading_lines_mask, MASK_BITS,
)
from smartquant.hdl.engine.block_query import block_query_layout, TrackedQuery


def allocation_layout(params: ControllerParams) -> data.StructLayout:
    """One write taking an entry: `cmps` tags and LD-IDs (tags[0] first), its (region, block), `gathered` (a
    flushed block, which `block_query` can name), and its lines: 1 << log2_beats from `line` at stride
    1 << log2_r (as the AXI writer writes them)."""
    return data.StructLayout({
        "gathered": 1, "cmps": range(params.b_max + 1),
        "region": params.region_index_bits, "block": params.line_bits,
        "line": params.line_bits, "log2_r": params.log2_r_bits, "log2_beats": params.log2_b_bits,
        "tags": data.ArrayLayout(16, params.b_max), "ld_ids": data.ArrayLayout(4, params.b_max),
    })


def cmp_layout() -> data.StructLayout:
    return data.StructLayout({"tag": 16, "ld_id": 4})


class WriteTable(wiring.Component):
    """`allocate` (ready from registers only: an entry is free; it takes entry `free_id`), `b` (B responses,
    always taken), `cmp` (completions), `failed` (poison records of entries whose write failed)."""

    def __init__(self, params: ControllerParams, entries: int):
        if not 1 <= entries <= 1 << params.axi_id_bits:
            self._MustUse__silence = True   # a refused instance is not an unused design
            raise ValueError(f"entries must be in 1..{1 << params.axi_id_bits} (one AWID each), got {entries}")
        self.params = params
        self.entries = entries
        super().__init__({
            "allocate": In(stream.Signature(allocation_layout(params))),
            "free_id": Out(range(entries)),
            "b": In(stream.Signature(b_response_layout(params))),
            "cmp": Out(stream.Signature(cmp_layout())),
            "failed": Out(stream.Signature(poison_record_layout(params))),
            "block_query": In(block_query_layout(params)),
            "query_landing": Out(1),
            "landed": Out(block_event_layout(params)),
            "outstanding": Out(range(entries + 1)),
            "busy": Out(1),
        })
        self.allocate_ready_next = Signal()   # the value `allocate.ready` takes at the next clock edge

    def elaborate(self, platform):
        m = Module()
        p = self.params
        lb = p.line_bits
        G = p.b_max
        n_entries = self.entries
        new = self.allocate.p
        b = self.b

        entry_used = [Signal(name=f"entry{i}_used") for i in range(n_entries)]
        # the tags and LD-IDs of an entry's writes, one memory word per entry: written once at allocation and
        # read by the done entry, so LUT RAM (an asynchronous read port) in place of entries x b_max x 20
        # flip-flops and their entries-way read mux
        entry_writes = Memory(shape=data.StructLayout({"tags": data.ArrayLayout(16, G),
                                                       "ld_ids": data.ArrayLayout(4, G)}),
                              depth=n_entries, init=[])
        m.submodules.entry_writes = entry_writes
        writes_store = entry_writes.write_port()
        done_writes = entry_writes.read_port(domain="comb")
        # the slot of the entry's last write whose Cmp is still owed (cmps - 1; the entry is freed after slot 0's)
        entry_last = [Signal(range(G), name=f"entry{i}_last") for i in range(n_entries)]
        entry_due = [Signal(range(17), name=f"entry{i}_due") for i in range(n_entries)]   # B responses due
        # entry_due == 0 and == 1 of a used entry as flip-flops of their own (updated beside entry_due), so the
        # done choice and `landed` read one register bit, not a 5-bit compare
        entry_due_zero = [Signal(name=f"entry{i}_due_zero") for i in range(n_entries)]
        entry_due_one = [Signal(name=f"entry{i}_due_one") for i in range(n_entries)]
        entry_region = [Signal(p.region_index_bits, name=f"entry{i}_region") for i in range(n_entries)]
        entry_block = [Signal(lb, name=f"entry{i}_block") for i in range(n_entries)]
        # the poison record a failed B response of the entry enters: its raw line, or its block's B plane lines
        entry_first_line = [Signal(lb, name=f"entry{i}_first_line") for i in range(n_entries)]
        entry_log2_stride = [Signal(3, name=f"entry{i}_log2_stride") for i in range(n_entries)]
        entry_mask = [Signal(MASK_BITS, name=f"entry{i}_mask") for i in range(n_entries)]
        # a B response of the write failed and its record is not yet in the poison list
        entry_error = [Signal(name=f"entry{i}_backend_error") for i in range(n_entries)]
        entry_gathered = [Signal(name=f"entry{i}_gathered") for i in range(n_entries)]   # a flushed block

        free_entry = Signal(range(n_entries))
        for i in reversed(range(n_entries)):     # lowest free entry
            with m.If(~entry_used[i]):
                m.d.comb += free_entry.eq(i)
        # `allocate.ready` (on the write path's flush decision) is a flip-flop: every entry used, kept as a
        # register of its own and updated below from the allocation and the release of this cycle
        all_used = Signal()
        have_free = Signal()
        m.d.comb += have_free.eq(~all_used)
        # the done entry (all its B responses in, no failed record pending: the lowest such entry), one-hot and
        # binary, its slot (the entry's `entry_last`) and whether there is one: registers, loaded below from the
        # entries' next state, so each equals what the entries' state of the cycle it is read in gives
        # (only `have_done` is reset: the others are read under it, so a reset in their next-state cone would
        # only add a level to the deepest cone of the table)
        done_onehot = Signal(n_entries, reset_less=True)
        done_entry = Signal(range(n_entries), reset_less=True)
        done_slot = Signal(range(G), reset_less=True)
        have_done = Signal()
        # the lowest entry whose failed write still waits for its insert, one-hot and binary: registers, loaded
        # below from the marks' next state (so each equals the lowest marked entry of the cycle it is read in),
        # so no priority chain over the marks sits before the marks' own next state and the done choice
        # (reset-less like the done choice: read under `have_error`)
        error_onehot = Signal(n_entries, reset_less=True)
        error_entry = Signal(range(n_entries), reset_less=True)
        # `failed.valid` (it holds a poisoned write in the write path's `held`) is a flip-flop too: some entry
        # marked, kept beside the marks and updated below as they are
        have_error = Signal()
        m.d.comb += [
            self.allocate.ready.eq(have_free),
            self.free_id.eq(free_entry),
            self.outstanding.eq(popcount(Cat(*entry_used))),
            self.busy.eq(Cat(*entry_used).any()),
            b.ready.eq(1),
        ]

        # ---- Cmps of the done entry: its last write still owed first ----------------------------------
        m.d.comb += [
            self.cmp.valid.eq(have_done),
            done_writes.addr.eq(done_entry),
            self.cmp.p.tag.eq(done_writes.data.tags[done_slot]),
            self.cmp.p.ld_id.eq(done_writes.data.ld_ids[done_slot]),
        ]
        complete = self.cmp.valid & self.cmp.ready

        # ---- failed writes' poison records ------------------------------------------------------------
        m.d.comb += [
            self.failed.valid.eq(have_error),
            self.failed.p.first.eq(Array(entry_first_line)[error_entry]),
            self.failed.p.log2_stride.eq(Array(entry_log2_stride)[error_entry]),
            self.failed.p.mask.eq(Array(entry_mask)[error_entry]),
        ]
        error_insert = self.failed.valid & self.failed.ready

        # ---- entries: allocate, count B responses down, hand Cmps out -----------------------------------
        b_fire = b.valid & b.ready
        b_error = b_fire & b.p.error
        allocating = self.allocate.valid & self.allocate.ready
        one_burst = new.log2_r == 0
        error_next = [Signal(name=f"entry{i}_backend_error_next") for i in range(n_entries)]
        for i in range(n_entries):
            m.d.comb += error_next[i].eq((entry_error[i] & ~(error_insert & error_onehot[i]))
                                         | (b_error & (b.p.id == i) & entry_used[i]))   # a new failure wins
            m.d.sync += entry_error[i].eq(error_next[i])
            # a free entry's fields follow `new` (nothing reads them until the entry is used): their clock
            # enable is ~entry_used, not the allocation (which the write path's flush decision drives).
            # entry_last and entry_due (and its flags) are loaded while free and counted down while used, each
            # on its own condition: a used entry's Cmp and its B responses never fall in one cycle (it is done
            # only with no B response due), so neither next state waits on the allocation or on the Cmp
            # handshake beside a B response
            with m.If(~entry_used[i]):
                m.d.sync += [
                    entry_gathered[i].eq(new.gathered),
                    entry_last[i].eq(new.cmps - 1),
                    entry_due[i].eq(Mux(one_burst, 1, Const(1, 5) << new.log2_beats)),
                    entry_due_zero[i].eq(0),
                    entry_due_one[i].eq(one_burst | (new.log2_beats == 0)),
                    entry_region[i].eq(new.region),
                    entry_block[i].eq(new.block),
                    entry_first_line[i].eq(new.line),
                    entry_log2_stride[i].eq(new.log2_r),
                    entry_mask[i].eq(leading_lines_mask(new.log2_beats)),
                ]
            with m.Elif(complete & done_onehot[i]):
                m.d.sync += entry_last[i].eq(entry_last[i] - 1)
            with m.If(entry_used[i] & b_fire & (b.p.id == i) & ~entry_due_zero[i]):
                m.d.sync += [entry_due[i].eq(entry_due[i] - 1), entry_due_zero[i].eq(entry_due_one[i]),
                             entry_due_one[i].eq(entry_due[i] == 2)]
            with m.If(allocating & (free_entry == i)):
                m.d.sync += entry_used[i].eq(1)
            with m.Elif(complete & done_onehot[i] & (done_slot == 0)):
                m.d.sync += entry_used[i].eq(0)

        # every entry used after this cycle: none is released (a Cmp leaving its entry's last write), and either
        # the allocation takes the only free entry or all were used already
        released = complete & (done_slot == 0)
        free_mask = Cat(*(~used for used in entry_used))
        one_free = (free_mask != 0) & ((free_mask & (free_mask - 1)) == 0)
        all_used_next = ~released & Mux(allocating, one_free, all_used)
        m.d.sync += all_used.eq(all_used_next)
        m.d.comb += self.allocate_ready_next.eq(~all_used_next)
        m.d.sync += have_error.eq(Cat(*error_next).any())

        # ---- the next done entry and slot (registered) ------------------------------------------------------
        # An entry is done next cycle when it is used and stays so (not released by this cycle's Cmp), its count
        # is 0 or this cycle's B response takes it to 0, and it is not marked (error_next). A free entry is not
        # done next cycle (an entry allocated now owes at least one B response). The done set is made for both
        # outcomes of this cycle's Cmp handshake, each picked (lowest), and `complete` (the NDR register's ready)
        # selects between the picks: with a Cmp the done entry's slot moves down (its `entry_last` - 1) and, after
        # its slot 0, the entry leaves the done set; a lower entry done next cycle goes first either way. (Round
        # 12b had one pick after the select, a level fewer from the B channel; round 13b went back to two picks
        # for the Cmp FIFO's readiness, the deeper of the two in the controller: see fpga/README.md.)
        # Written as register-only terms (`waits_none`: done unless this cycle's B response for it fails;
        # `waits_last`: done if this cycle's B response for it is its last, and good) and the B response's two
        # per-entry decodes, so the B channel (valid, id, error) enters one level before the choice, not through
        # error_next (the same function: a used entry's new failure is error_next's only B term).
        done_stays = Signal(n_entries)   # done next cycle if no Cmp leaves now
        done_after_cmp = Signal(n_entries)   # done next cycle if a Cmp leaves now
        released_entry = Mux(done_slot == 0, done_onehot, 0)   # registers: the entry a Cmp now would free
        for i in range(n_entries):
            b_good_here = b_fire & ~b.p.error & (b.p.id == i)
            b_bad_here = b_error & (b.p.id == i)
            error_kept = entry_error[i] & ~(error_insert & error_onehot[i])   # error_next without the B term
            waits_none = Signal(name=f"entry{i}_waits_none")
            waits_last = Signal(name=f"entry{i}_waits_last")
            m.d.comb += [waits_none.eq(entry_used[i] & ~error_kept & entry_due_zero[i]),
                         waits_last.eq(entry_used[i] & ~error_kept & entry_due_one[i])]
            m.d.comb += [
                done_stays[i].eq((waits_none & ~b_bad_here) | (waits_last & b_good_here)),
                done_after_cmp[i].eq(((waits_none & ~released_entry[i]) & ~b_bad_here)
                                     | ((waits_last & ~released_entry[i]) & b_good_here)),
            ]

        def lowest(bits, slots=None):
            """The lowest set bit of `bits`: one-hot, index, its `slots` entry and whether there is one, each an
            AND-OR of the bits (bit i and none below it), not a priority chain of muxes."""
            onehot = Signal(n_entries)
            index = Signal(range(n_entries))
            slot = Signal(range(G))
            m.d.comb += onehot.eq(Cat(*(bits[i] & ~bits[:i].any() if i else bits[0] for i in range(n_entries))))
            m.d.comb += index.eq(or_all([Const(i, len(index)) & onehot[i].replicate(len(index))
                                         for i in range(n_entries)]))
            if slots is not None:
                m.d.comb += slot.eq(or_all([slots[i] & onehot[i].replicate(len(slot)) for i in range(n_entries)]))
            return onehot, index, slot, bits.any()

        # The lowest marked entry is picked for both outcomes of this cycle's insert handshake (kept: no insert,
        # every mark stays; taken: the picked entry's mark goes) and `error_insert` (registers only: `failed.valid`
        # and the write path's command flag) selects after the picks, so the insert's readiness is one level
        # before the registers, not ahead of the pick (round 13b; an entry's new failure, the B term, is in both)
        error_if_kept = Signal(n_entries)
        error_if_taken = Signal(n_entries)
        for i in range(n_entries):
            b_bad_here = b_error & (b.p.id == i) & entry_used[i]
            m.d.comb += [error_if_kept[i].eq(entry_error[i] | b_bad_here),
                         error_if_taken[i].eq((entry_error[i] & ~error_onehot[i]) | b_bad_here)]
        error_kept_pick = lowest(error_if_kept)
        error_taken_pick = lowest(error_if_taken)
        m.d.sync += [error_onehot.eq(Mux(error_insert, error_taken_pick[0], error_kept_pick[0])),
                     error_entry.eq(Mux(error_insert, error_taken_pick[1], error_kept_pick[1]))]

        # Round 13b: two picks, one per outcome of this cycle's Cmp handshake, and `complete` (the NDR register's
        # ready, from the front end's Cmp FIFO level through the NDR arbiter) selects after them, so the
        # handshake is one mux before the registers instead of ahead of the pick (the controller's deepest
        # path into done_slot ran cmp_fifo.level -> complete -> the pick)
        stays_pick = lowest(done_stays, entry_last)
        after_pick = lowest(done_after_cmp, [entry_last[i] - done_onehot[i] for i in range(n_entries)])
        m.d.sync += [register.eq(Mux(complete, after, stays)) for register, after, stays in
                     zip((done_onehot, done_entry, done_slot, have_done), after_pick, stays_pick)]
        m.d.comb += [
            # the free entry's word is written whether or not it is allocated (a free entry's word is never read)
            writes_store.en.eq(have_free),
            writes_store.addr.eq(free_entry),
            writes_store.data.tags.eq(new.tags),
            writes_store.data.ld_ids.eq(new.ld_ids),
        ]

        # `landed`: the last B response of an entry arrives (registered)
        m.d.sync += self.landed.valid.eq(0)
        for i in range(n_entries):
            with m.If(b_fire & (b.p.id == i) & entry_used[i] & entry_due_one[i]):
                m.d.sync += [self.landed.valid.eq(1), self.landed.region.eq(entry_region[i]),
                             self.landed.block.eq(entry_block[i])]

        # ---- block query: a flushed block still landing, or landed one cycle ago ----------------------
        # Whether an entry holds the query's block is a flip-flop per entry (block_query.py): a free entry's
        # (region, block) follows `new`, as its fields do above, so its match follows `new`'s compare.
        query = TrackedQuery(m, p, self.block_query, "query")
        entry_named = [query.names(f"entry{i}_named", entry_region[i], entry_block[i], ~entry_used[i],
                                   new.region, new.block) for i in range(n_entries)]
        # An entry is landing while it is a used flushed block with B responses due or a failed record not yet
        # inserted; `query_landing` wants "landing now or one cycle ago" of an entry still used. That is a
        # flip-flop per entry (`entry_holds_landing`), loaded from the entry's next state as the entry registers
        # above load it, so `query_landing` is an AND-OR of two flip-flops per entry and the query's valid
        # (timing round 15: the 75 MHz build's worst path ran entry_used -> this OR -> block_busy -> dispatch).
        entry_holds_landing = [Signal(name=f"entry{i}_holds_landing") for i in range(n_entries)]
        for i in range(n_entries):
            landing = entry_used[i] & entry_gathered[i] & (~entry_due_zero[i] | entry_error[i])
            released_here = complete & done_onehot[i] & (done_slot == 0)
            b_here = b_fire & (b.p.id == i)
            due_zero_next = entry_due_zero[i] | (b_here & entry_due_one[i])
            # error_next written per outcome of this cycle's insert handshake, which selects last (as for the
            # error choice above: `failed.ready` stays a mux before the registers it reaches)
            b_bad_here = b_error & (b.p.id == i)
            still_landing = Mux(error_insert & error_onehot[i], ~due_zero_next | b_bad_here,
                                ~due_zero_next | entry_error[i] | b_bad_here)
            landing_next = Mux(entry_used[i], entry_gathered[i] & ~released_here & still_landing,
                               allocating & (free_entry == i) & new.gathered)   # entry_used's own terms
            m.d.sync += entry_holds_landing[i].eq(landing_next | (landing & ~released_here))
        m.d.comb += self.query_landing.eq(
            query.valid & Cat(*(entry_holds_landing[i] & entry_named[i] for i in range(n_entries))).any())
        return m
