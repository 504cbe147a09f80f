"""Block packer: the k plane lines of a block -> its packed-k or expanded-k output lines (DEVICE.md §3).

Interface (streams are amaranth.lib.stream, payload layouts below):
- load  (In, `load_layout`):  {plane, data, also}. Writes plane register `plane` of the *fill* bank, and every
  plane whose bit is set in `also` (one load writes several planes with the same data). A block is the
  planes loaded since the previous start; the controller sends planes 0..k-1 only (and copies of plane 0
  into planes k..B-1 through `also`). Every start clears the fill bank, so planes >= k of the next block read
  as 0 (never stale data); plane numbers >= b_max are ignored.
- start (In, `start_layout`): {expanded, log2_b, k, midpoint}. Seals the fill bank as a block and queues its
  emission. B = 1 << log2_b. packed: k lines of k-bit fields; expanded: B lines of B-bit fields whose low
  B-k bits are the fill (floor 0..0, midpoint 10..0). Bit orders are golden/layout.py packed_lines /
  expanded_lines: field w at bits [w*F, w*F+F), field bit i = weight bit B-F+i (packed) / i (expanded).
- line  (Out, `line_layout`): {index, last, data}: lines j = 0..n-1 in order, last on j = n-1. Held while
  line.ready is low.

Ordering rules (what the controller must respect):
- Present start only after the block's last load has been accepted (start.valid from state, not from
  load.ready: load.ready depends combinationally on start.valid and start.ready, and start.ready on
  line.ready).
- A load accepted in the same cycle as a start belongs to the NEXT block (the start copies the bank as it was
  before that cycle), so a decoupled producer can stream planes of block n+1 right behind start n.
- While a start is presented but not yet accepted (the previous block still emitting), load.ready is low:
  the fill bank is sealed until it has been copied.
Out-of-range starts get a defined response, never a hang: B is clamped to b_max and k to 1..B (k = 0 -> 1).

Design. A naive packer is one case statement over (k, j) of fixed wirings: every output bit chooses among
(1+2+...+B) sources (~85k LUT4 + 28k PFUMX at W = 512, B = 16, ARCHITECTURE.md). Here the work is spread
over cycles as a gearbox and factored into three small muxes per bit:
- Two plane banks: the fill bank (written by `load`: clock enables plus a synchronous clear, no data mux)
  and the emit bank, copied on start (clock enables; the midpoint plane k is a synchronous set). Emission of
  block n overlaps the fetch of block n+1. Planes >= k being 0 is the expanded floor fill, and the set plane
  k is the midpoint 1, so expanded and packed output share one datapath with no gating logic.
- Field width F = k (packed) or B (expanded); G = pow2floor(F); a chunk of C = W / G weights per cycle gives
  C*F bits: exactly W for a pow2 F, between W and 2W otherwise (F = 3: 1.5 lines, F = 15: 1.875). Chunk
  select: chunk bit m of plane q = plane bit m + offset, by a mux tree on the offset. The emit bank never
  shifts (a shift mux would sit on every one of the b_max*W plane bits): chunk bits m < W/b_max have b_max
  possible offsets, bits W/2^(s+1) <= m < W/2^s only 2^s (there the offset is a multiple of C >= W/2^s), and
  plane q is only used with G >= pow2floor(q+1), so its chunk is at most W/pow2floor(q+1) bits wide: the
  high planes (used by wide fields only) carry narrow muxes. The b_max offsets of bits m < W/b_max come from
  G = b_max alone, whose odd offsets follow the even one in the previous feed cycle: an odd chunk takes those
  bits from the chunk register's next unit (loaded by the even chunk), so they are a b_max/2-way tree on the
  even offsets plus one 2:1 mux (the last plane's register is two units wide for it).
- Compaction: output bit t = field bit t % F of weight t // F = chunk bit t // F of plane F-1-t%F (for
  expanded F = B the same wiring): one b_max-way mux tree per output bit on F - 1; bits >= C*F don't care;
  bits >= W only choose among the non-pow2 F.
- Gearbox: every chunk completes a line. The compacted chunk is shifted by the held level (the units left
  over from earlier chunks, < b_max when a chunk is taken; always a multiple of two units 2W/b_max, since a
  non-pow2 F's chunk brings F*b_max/G units with G <= b_max/2: log2(b_max)-1 stages of 2:1 muxes); the line
  is the held units plus the chunk's low units (one 2:1 mux per gear unit, which also gives a held whole
  line), the chunk's upper units are held. When the held units make a whole line (non-pow2 F: a block's G
  chunks bring F lines), that line leaves in a cycle that takes no chunk, and chunk issue pauses for it; the
  held bits then move down a line (a 2:1 mux only on the held bits below held width - W, the rest is
  don't-care after a held line and loads the shifted chunk directly).
- Pipeline: chunk select -> register -> compaction -> register -> gearbox -> output register; the first
  three stages move together when the output register is free and the gearbox holds no whole line. The
  registers cost ~2W..3W + W flip-flops and halve the LUT4 count: yosys/ABC maps the same logic as one cone
  far worse (128/16: 10.0k -> 4.0k LUT4, measured before the non-pow2 chunks).
Throughput: one line per cycle while the sink is ready, at every F: a block of F lines takes G chunk cycles
and F - G held-line cycles. The next block's start is accepted in the cycle of the current block's last
chunk issue, so blocks follow back to back (period max(F, k) with the loads of the next block overlapping;
the pow2ceil(F) chunks of W/pow2ceil(F) weights of the earlier design gave k/pow2ceil(k) lines per cycle).
line.valid rises 4 cycles after the start handshake.
Area (yosys 0.70 synth_ecp5, packer alone, scripts/packer_area.py): W=128 b_max=8 2.5k LUT4 + 0.5k PFUMX,
3.0k FF; W=128 b_max=16 5.8k + 0.9k, 5.3k FF; W=512 b_max=16 23.0k + 4.0k, 20.9k FF. The full-rate chunks
cost +22% / +47% / +44% LUT4 there (2.1k / 4.0k / 16.0k before: wider chunks of the planes q+1 not a power
of two, compaction bits >= W, a gearbox shifting up to ~2W bits); W=512 b_max=8 was 8.1k + 1.1k before them.
The two-unit gearbox (2026-11-30, fpga/README.md "Cuts"): W=512 b_max=16 23,007 -> 21,942 LUT4, W=128
b_max=8 2,536 -> 2,533 (one shift stage fewer; ABC had already merged most of the output and held muxes);
with the odd-offset lowest chunk segment W=512 b_max=16 21,942 -> 20,340 LUT4, W=128 b_max=8 2,533 -> 2,489.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams
from smartquant.hdl.bits import mux_tree

PLANE_FIELD_BITS = 4
INDEX_FIELD_BITS = 4
# cycles from the start handshake to line.valid (the pipeline registers that buy the area, see above)
START_TO_LINE_CYCLES = 4


def load_layout(params: ControllerParams) -> data.StructLayout:
    """`plane` takes `data`; so does every plane whose bit is set in `also` (the read engine's toward-zero sign
    copies: plane 0 also written into planes k..B-1, no register or mux of its own)."""
    return data.StructLayout({"plane": PLANE_FIELD_BITS, "data": params.data_width, "also": params.b_max})


def start_layout() -> data.StructLayout:
    return data.StructLayout({"expanded": 1, "log2_b": ControllerParams.log2_b_bits, "k": ControllerParams.k_bits, "midpoint": 1})


def line_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"index": INDEX_FIELD_BITS, "last": 1, "data": params.data_width})


def pow2floor_log2(value: int) -> int:
    """log2 of the largest power of two <= value (value >= 1)."""
    return value.bit_length() - 1


def chunk_units_for(field: int, b_max: int) -> int:
    """Bits of one chunk of field width `field`, in units of W / b_max: C * F with C = W / pow2floor(F)."""
    return (field * b_max) >> pow2floor_log2(field)


class BlockPacker(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        self.width = params.data_width
        self.b_max = params.b_max
        self.log2_b_max = params.log2_b_max
        super().__init__({
            "load": In(stream.Signature(load_layout(params))),
            "start": In(stream.Signature(start_layout())),
            "line": Out(stream.Signature(line_layout(params))),
        })

    # chunk bits of plane q that can ever be used: plane q serves fields F >= q + 1, whose chunks are
    # W / pow2floor(F) <= W / pow2floor(q + 1) bits wide
    def _chunk_width(self, plane: int) -> int:
        return self.width >> pow2floor_log2(plane + 1)

    def elaborate(self, platform):
        m = Module()
        W, BM, S = self.width, self.b_max, self.log2_b_max
        unit = W // BM      # chunk offset granularity: every chunk offset is a multiple of it
        # widest chunk after compaction, in units (F = b_max - 1 for b_max >= 4: almost two lines)
        compact_units = max(chunk_units_for(f, BM) for f in range(1, BM + 1))
        # Gearbox granularity: two units. A chunk brings F * b_max / G units; for a pow2 F that is b_max (one
        # line, nothing held), for a non-pow2 F (G <= b_max / 2) a multiple of b_max / G >= 2. So every held
        # level is a multiple of 2 units and the gearbox shifts by 0..b_max/2-1 of its units (one 2:1 stage
        # fewer than at unit granularity).
        gear = 2 * unit
        line_gears = BM // 2                    # gear units per line
        log2_line_gears = S - 1
        assert all(chunk_units_for(f, BM) % 2 == 0 for f in range(1, BM + 1))
        compact_gears = compact_units // 2
        # the gearbox keeps what a chunk brings beyond the line it completes (< compact_gears gear units), or
        # a whole line waiting for its output cycle
        held_gears = max(compact_gears - 1, line_gears)

        # ---- plane banks ------------------------------------------------------------------------------
        fill_bank = [Signal(W, name=f"fill_plane{q}") for q in range(BM)]
        # The midpoint set below must be the flip-flops' only synchronous set/reset, and an ECP5 flip-flop's
        # set/reset value equals its power-up value: so no `rst` reset and an all-ones init (without both,
        # yosys emulates the set with ~8 LUT4 per bit). The emit bank is always written by a start before use.
        emit_bank = [Signal(W, name=f"emit_plane{q}", reset_less=True, init=(1 << W) - 1) for q in range(BM)]

        # ---- pipeline: chunk select -> [chunk register] -> compaction -> [compact register] -> gearbox ->
        # [output register]. The chunk and compact stages move together (`feed`) when the output register
        # can take a line and the gearbox does not hold a whole line of its own (a chunk of a non-pow2 field
        # brings more than one line: those extra lines leave in cycles that take no chunk). A stalled sink
        # freezes the whole pipeline. The registers cut the logic into cones that yosys/ABC maps well: the
        # same logic as one combinational cone costs ~2x the LUT4s.
        advance = Signal()                      # the output register can take a line
        feed = Signal()                         # ... and the gearbox can take a chunk

        # chunk issue state (stage 1): the block in the emit bank
        active = Signal()                       # emit bank holds a block with chunks left to issue
        field_minus_one = Signal(S)             # F - 1
        chunk_gears = Signal(range(BM))         # bits produced per chunk, in gear units (F * b_max / 2 / pow2floor(F))
        offset_step = Signal(range(BM + 1))     # chunk offset increment in units (b_max / pow2floor(F))
        offset = Signal(S)                      # current chunk's offset in the planes, in units
        issue = Signal()                        # a chunk enters the pipeline this cycle
        next_offset = Signal(S + 1)
        # the current chunk is the block's last: offsets wrap after exactly pow2floor(F) chunks, i.e.
        # (offset + offset_step)[S]. A register (set by the start and by every issue for the next offset), so that
        # start.ready and load.ready (the R router's decision in the read engine) need no adder.
        last_chunk = Signal()
        m.d.comb += [
            issue.eq(active & feed),
            next_offset.eq(offset + offset_step),
        ]

        # stage 2 (chunk register) and stage 3 (compact register): data plus the chunk's own configuration,
        # so that the next block may start issuing while these chunks are still in flight
        chunk_valid = Signal()
        chunk_field_minus_one = Signal(S)
        chunk_chunk_gears = Signal(range(BM))
        compact_valid = Signal()
        compact_field_minus_one = Signal(S)
        compact_chunk_gears = Signal(range(BM))

        # gearbox state (stage 4)
        held_level = Signal(range(BM))          # gear units held back for the next lines (0 between blocks)
        held = Signal(held_gears * gear, reset_less=True)
        held_field_minus_one = Signal(S)        # F - 1 of the block the held units belong to
        held_line_full = Signal()
        line_index = Signal(INDEX_FIELD_BITS)

        out_valid = Signal()
        out_data = Signal(W, reset_less=True)
        out_index = Signal(INDEX_FIELD_BITS)
        out_last = Signal()
        m.d.comb += [
            held_line_full.eq(held_level >= line_gears),
            advance.eq(~out_valid | self.line.ready),
            feed.eq(advance & ~held_line_full),
            self.line.valid.eq(out_valid),
            self.line.p.data.eq(out_data),
            self.line.p.index.eq(out_index),
            self.line.p.last.eq(out_last),
        ]

        # ---- start / load handshakes ------------------------------------------------------------------
        start_fire = Signal()
        m.d.comb += [
            self.start.ready.eq(~active | (issue & last_chunk)),
            start_fire.eq(self.start.valid & self.start.ready),
            # a presented start seals the fill bank until it has been copied
            self.load.ready.eq(~self.start.valid | self.start.ready),
        ]
        load_fire = self.load.valid & self.load.ready
        for q in range(BM):
            loading = Signal(name=f"loading_plane{q}")
            m.d.comb += loading.eq(load_fire & ((self.load.p.plane == q) | self.load.p.also[q]))
            # the next block starts empty: planes >= its k stay 0, which is the expanded floor fill. Written as
            # a top-priority clear so that yosys maps it to the flip-flops' synchronous reset (no data mux).
            with m.If(start_fire & ~loading):
                m.d.sync += fill_bank[q].eq(0)
            with m.Elif(loading):
                m.d.sync += fill_bank[q].eq(self.load.p.data)

        # ---- start: clamp the configuration, copy the bank --------------------------------------------
        log2_b = Signal(range(S + 1))
        block_b = Signal(range(BM + 1))
        precision_k = Signal(range(BM + 1))
        new_f = Signal(range(BM + 1))
        m.d.comb += log2_b.eq(Mux(self.start.p.log2_b > S, S, self.start.p.log2_b))
        m.d.comb += block_b.eq(Const(1, BM.bit_length() + 1) << log2_b)
        with m.If(self.start.p.k == 0):
            m.d.comb += precision_k.eq(1)
        with m.Elif(self.start.p.k > block_b):
            m.d.comb += precision_k.eq(block_b)
        with m.Else():
            m.d.comb += precision_k.eq(self.start.p.k)
        m.d.comb += new_f.eq(Mux(self.start.p.expanded, block_b, precision_k))
        new_offset_step = Signal.like(offset_step)
        new_chunk_gears = Signal.like(chunk_gears)
        with m.Switch(new_f):
            for f in range(1, BM + 1):
                with m.Case(f):
                    m.d.comb += [
                        new_offset_step.eq(BM >> pow2floor_log2(f)),
                        new_chunk_gears.eq(chunk_units_for(f, BM) // 2),
                    ]

        # ---- chunk select: chunk bit m of plane q = plane bit offset*unit + m --------------------------
        # An odd offset (G = b_max only: unit-wide chunks, offsets 0, 1, 2, ...) always follows the even offset
        # before it in the previous feed cycle (a block's chunks issue in consecutive feed cycles; feed low
        # holds the register). So the lowest segment (chunk bits [0, unit), b_max possible offsets) takes an
        # odd offset's unit from the chunk register's bits [unit, 2*unit), which the even chunk loaded with
        # that plane unit: a b_max/2-way mux tree on the even offsets plus one 2:1 mux, in place of a
        # b_max-way tree. The register of the last plane (a unit wide) grows to 2 units for it.
        chunks = []
        for q in range(BM):
            width_q = self._chunk_width(q)
            chunk = Signal(max(width_q, 2 * unit), name=f"chunk{q}", reset_less=True)
            pieces = []
            # segment s holds chunk bits [W >> (s+1), W >> s) (s = S: [0, W >> S)); they exist only for chunks
            # of >= W >> s bits, whose offset is a multiple of W >> s: so only 2**s sources
            for s in range(S, -1, -1):
                lo = 0 if s == S else W >> (s + 1)
                hi = W >> s
                if lo >= len(chunk):
                    continue
                if s == S:
                    # even offsets: the segment below's sources (offset multiple of 2 units), shifted down a unit
                    for bit in range(lo, hi):
                        even = mux_tree([emit_bank[q][bit + i * (W >> (S - 1))] for i in range(1 << (S - 1))],
                                        offset[1:])
                        pieces.append(Mux(offset[0], chunk[unit + bit], even))
                    continue
                select = offset[S - s:]
                for bit in range(lo, hi):
                    pieces.append(mux_tree([emit_bank[q][bit + i * (W >> s)] for i in range(1 << s)], select))
            with m.If(feed):
                m.d.sync += chunk.eq(Cat(*pieces))
            chunks.append(chunk)
        with m.If(feed):
            m.d.sync += [
                chunk_valid.eq(issue),
                chunk_field_minus_one.eq(field_minus_one),
                chunk_chunk_gears.eq(chunk_gears),
            ]

        # ---- compaction: C weights of F-bit fields, weight w at bits [w*F, w*F+F) ---------------------
        # bits at and above C*F are don't-care: the gearbox overwrites them with the next chunk. Bits >= W
        # exist for non-pow2 F only.
        compact_bits = []
        for t in range(compact_units * unit):
            sources = []
            for f in range(1, BM + 1):
                weights = W >> pow2floor_log2(f)
                sources.append(chunks[f - 1 - t % f][t // f] if t < weights * f else None)
            compact_bits.append(mux_tree(sources, chunk_field_minus_one))
        compact = Signal(compact_units * unit, reset_less=True)
        with m.If(feed):
            m.d.sync += [
                compact.eq(Cat(*compact_bits)),
                compact_valid.eq(chunk_valid),
                compact_field_minus_one.eq(chunk_field_minus_one),
                compact_chunk_gears.eq(chunk_chunk_gears),
            ]

        # ---- gearbox: shift the chunk to the held level, merge above the held units --------------------
        # A chunk is >= one line, so every chunk taken completes a line: the line is the held units plus the
        # low units of the shifted chunk, and the rest of the chunk is held. The held level is < one line when
        # a chunk is taken (otherwise `feed` is low and the held line leaves alone), so only gear units < b_max/2
        # of the line can come from `held`, and the shift is by 0..b_max/2-1 gear units (log2(b_max)-1 stages of
        # 2:1 muxes).
        shifted = Signal((compact_gears + line_gears - 1) * gear)
        stage_value = compact
        for b in range(log2_line_gears):
            stage = Signal(len(shifted), name=f"shift_stage{b}")
            m.d.comb += stage.eq(Mux(held_level[b], stage_value << (gear << b), stage_value))
            stage_value = stage
        m.d.comb += shifted.eq(stage_value)
        # a held whole line (held_line_full: level >= a line) is all held units, so the merge gives it as well
        merged_line = Signal(W)
        m.d.comb += merged_line.eq(Cat(*[
            Mux(held_level > u, held[u * gear:(u + 1) * gear], shifted[u * gear:(u + 1) * gear])
            for u in range(line_gears)]))
        take_chunk = feed & compact_valid
        emit_held = advance & held_line_full
        # the line this cycle's output belongs to ends its block: index F - 1 of the chunk's (or held) block
        emit_field_minus_one = Mux(held_line_full, held_field_minus_one, compact_field_minus_one)
        block_done = line_index == emit_field_minus_one
        with m.If(take_chunk | emit_held):
            m.d.sync += [
                out_valid.eq(1),
                out_data.eq(merged_line),
                out_index.eq(line_index),
                out_last.eq(block_done),
                line_index.eq(Mux(block_done, 0, line_index + 1)),
            ]
        with m.Elif(self.line.ready):
            m.d.sync += out_valid.eq(0)
        # After a held line leaves, the level is below held_gears - line_gears: the held bits above that are
        # don't-care, so they load the shifted chunk unconditionally (no 2:1 mux on them).
        # (b_max = 2: every field is pow2, nothing is ever held)
        kept = len(held) - W
        with m.If(emit_held):
            m.d.sync += held_level.eq(held_level - line_gears)
            if kept:
                m.d.sync += held[:kept].eq(held[W:])
        with m.Elif(take_chunk):
            # a block's chunks fill exactly F lines, so the level is back at 0 after its last line
            m.d.sync += [
                held_level.eq(held_level + compact_chunk_gears - line_gears),
                held_field_minus_one.eq(compact_field_minus_one),
            ]
            if kept:
                m.d.sync += held[:kept].eq(shifted[W:W + kept])
        with m.If(take_chunk | emit_held):
            m.d.sync += held[max(kept, 0):].eq(shifted[W + max(kept, 0):])

        with m.If(issue):
            m.d.sync += [
                offset.eq(next_offset[:S]),
                last_chunk.eq((next_offset[:S] + offset_step)[S]),
            ]
        # after the issue logic: a start in the last chunk's cycle wins the offset
        with m.If(start_fire):
            m.d.sync += [
                active.eq(1),
                field_minus_one.eq(new_f - 1),
                offset_step.eq(new_offset_step),
                chunk_gears.eq(new_chunk_gears),
                offset.eq(0),
                last_chunk.eq(new_offset_step[S]),   # offset 0 + step wraps: F = 1, a single chunk
            ]
        with m.Elif(issue & last_chunk):
            m.d.sync += active.eq(0)
        for q in range(BM):
            # plane k of a midpoint expanded block is the fill's 1 (top priority: the flip-flops' synchronous
            # set); planes above k arrive as 0 from the cleared fill bank
            midpoint_one = start_fire & self.start.p.expanded & self.start.p.midpoint & (precision_k == q)
            with m.If(midpoint_one):
                m.d.sync += emit_bank[q].eq(Const(-1, W))
            with m.Elif(start_fire):
                m.d.sync += emit_bank[q].eq(fill_bank[q])

        return m
