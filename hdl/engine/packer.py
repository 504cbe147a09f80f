"""Block packer: the k plane lines of a block -> its packed-k or expanded-k output lines (DEVICE.md §3).

Interface (streams are amaranth.lib.stream, payload layouts below):
- load  (In, `load_layout`):  {plane, data}. Writes plane register `plane` of the *fill* bank. A block is the
  planes loaded since the previous start; the controller sends planes 0..k-1 only (planes >= k are never read
  for packing and are replaced by the rounding fill for expanded output, so stale contents do not matter).
- start (In, `start_layout`): {expanded, log2_b, k, midpoint}. Seals the fill bank as a block and queues its
  emission. B = 1 << log2_b. packed: k lines of k-bit fields; expanded: B lines of B-bit fields whose low
  B-k bits are the fill (floor 0..0, midpoint 10..0). Bit orders are golden/layout.py packed_lines /
  expanded_lines: field w at bits [w*F, w*F+F), field bit i = weight bit B-F+i (packed) / i (expanded).
- line  (Out, `line_layout`): {index, last, data}: lines j = 0..n-1 in order, last on j = n-1.

Ordering rules (what the controller must respect):
- Present start only after the block's last load has been accepted (start.valid from state, not from
  load.ready: load.ready depends combinationally on start.valid and start.ready).
- A load accepted in the same cycle as a start belongs to the NEXT block (the start copies the bank as it was
  before that cycle), so a decoupled producer can stream planes of block n+1 right behind start n.
- While a start is presented but not yet accepted (the previous block still emitting), load.ready is low:
  the fill bank is sealed until it has been copied.
Out-of-range starts get a defined response, never a hang: B is clamped to b_max and k to 1..B.

Design (why it is small). The naive packer is one case statement over (k, j) of fixed wirings: every output
bit chooses among ~W*(1+2+...+B)/W sources (~85k LUT4 at W = 512, B = 16). Here the work is spread over
cycles as a gearbox:
- Two plane banks: the fill bank (written by `load`, FF clock enables only, no data mux) and the emit bank,
  copied from the fill bank on start (again only clock enables). Emission of block n overlaps the fetch of
  block n+1.
- Field width F = k (packed) or B (expanded); P = pow2ceil(F); chunk C = W / P weights per cycle, so a cycle
  produces C*F <= W bits. The emit bank does not shift: chunk c of plane q is selected by a mux whose width
  depends on the chunk bit position m: bits m < W/b_max have b_max possible offsets, bits
  W/2^(s+1) <= m < W/2^s only 2^s (the offset is always a multiple of C >= W/2^s there), and plane q is only
  ever used with P >= pow2ceil(q+1), so its chunk is at most W/pow2ceil(q+1) bits wide. The high planes
  (used only by wide fields) therefore carry only narrow chunk muxes. About (b_max/2 + ...)*W mux inputs in
  total instead of a per-bit shift mux on all b_max*W plane bits.
- Compaction: bit t of the chunk vector is field bit t % F of weight t // F, i.e. chunk bit t // F of plane
  F-1-t%F (packed) / B-1-t%F (expanded, same wiring for F = B): one mux over F per output bit. Planes q >= k
  are gated to the rounding fill before compaction (q == k carries the midpoint 1), so expanded and packed
  share the wiring.
- Gearbox: the chunk vector is rotated by the line's fill level (always a multiple of W/b_max, log2(b_max)
  stages of 2:1 muxes) and merged under the partly filled line; a full line goes to the output register.
Throughput: one chunk per cycle while the sink is ready, P chunks per block: pow2 F emits one line per cycle
(F lines in F cycles), other F emit F lines in P = pow2ceil(F) cycles. The next block's start is accepted in
the cycle of the current block's last chunk, so blocks follow back to back. Latency start -> first line:
2 cycles. Area per W and b_max: scripts/packer_area.py.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal, Cat, Const, Mux, Array
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams

PLANE_FIELD_BITS = 4
LOG2_B_FIELD_BITS = 3
K_FIELD_BITS = 5
INDEX_FIELD_BITS = 4


def load_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"plane": PLANE_FIELD_BITS, "data": params.data_width})


def start_layout() -> data.StructLayout:
    return data.StructLayout({"expanded": 1, "log2_b": LOG2_B_FIELD_BITS, "k": K_FIELD_BITS, "midpoint": 1})


def line_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({"index": INDEX_FIELD_BITS, "last": 1, "data": params.data_width})


def pow2ceil_log2(value: int) -> int:
    """log2 of the smallest power of two >= value (value >= 1)."""
    return (value - 1).bit_length()


class BlockPacker(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams()):
        self.params = params
        self.width = params.data_width
        self.b_max = params.b_max
        self.log2_b_max = pow2ceil_log2(params.b_max)
        super().__init__({
            "load": In(stream.Signature(load_layout(params))),
            "start": In(stream.Signature(start_layout())),
            "line": Out(stream.Signature(line_layout(params))),
        })

    # chunk bits of plane q that can ever be used: P >= pow2ceil(q + 1)
    def _chunk_width(self, plane: int) -> int:
        return self.width >> pow2ceil_log2(plane + 1)

    def elaborate(self, platform):
        m = Module()
        W, BM, S = self.width, self.b_max, self.log2_b_max
        unit = W // BM      # gearbox granularity: every chunk offset and line fill level is a multiple of it

        # ---- plane banks ------------------------------------------------------------------------------
        fill_bank = [Signal(W, name=f"fill_plane{q}") for q in range(BM)]
        emit_bank = [Signal(W, name=f"emit_plane{q}") for q in range(BM)]

        # ---- emission state ---------------------------------------------------------------------------
        active = Signal()                       # emit bank holds a block with chunks left
        field_bits = Signal(range(BM + 1))      # F
        chunk_units = Signal(range(BM + 1))     # bits produced per chunk, in units (F * b_max / P)
        offset_step = Signal(range(BM + 1))     # chunk offset increment in units (b_max / P)
        offset = Signal(S)                      # current chunk's offset in the planes, in units
        fill_level = Signal(S)                  # bits of the line under assembly, in units
        line_index = Signal(INDEX_FIELD_BITS)
        plane_keep = Signal(BM)                 # plane q < k: real data
        plane_one = Signal(BM)                  # plane q == k of a midpoint expanded block: fill 1
        partial_line = Signal(W)                # low fill_level units of the line under assembly

        out_valid = Signal()
        out_data = Signal(W)
        out_index = Signal(INDEX_FIELD_BITS)
        out_last = Signal()
        m.d.comb += [
            self.line.valid.eq(out_valid),
            self.line.p.data.eq(out_data),
            self.line.p.index.eq(out_index),
            self.line.p.last.eq(out_last),
        ]

        advance = Signal()                      # the output register can take a line this cycle
        step = Signal()                         # a chunk is processed this cycle
        next_offset = Signal(S + 1)
        last_chunk = Signal()
        m.d.comb += [
            advance.eq(~out_valid | self.line.ready),
            step.eq(active & advance),
            next_offset.eq(offset + offset_step),
            last_chunk.eq(next_offset[S]),      # offsets wrap after exactly P chunks
        ]

        # ---- start / load handshakes ------------------------------------------------------------------
        start_fire = Signal()
        m.d.comb += [
            self.start.ready.eq(~active | (step & last_chunk)),
            start_fire.eq(self.start.valid & self.start.ready),
            # a presented start seals the fill bank until it has been copied
            self.load.ready.eq(~self.start.valid | self.start.ready),
        ]
        with m.If(self.load.valid & self.load.ready):
            with m.Switch(self.load.p.plane):
                for q in range(BM):
                    with m.Case(q):
                        m.d.sync += fill_bank[q].eq(self.load.p.data)

        # ---- start: clamp the configuration, copy the bank --------------------------------------------
        log2_b = Signal(range(S + 1))
        block_b = Signal(range(BM + 1))
        precision_k = Signal(range(BM + 1))
        new_f = Signal(range(BM + 1))
        new_log2_p = Signal(range(S + 1))
        m.d.comb += log2_b.eq(Mux(self.start.p.log2_b > S, S, self.start.p.log2_b))
        m.d.comb += block_b.eq(Const(1, BM.bit_length() + 1) << log2_b)
        with m.If(self.start.p.k == 0):
            m.d.comb += precision_k.eq(1)
        with m.Elif(self.start.p.k > block_b):
            m.d.comb += precision_k.eq(block_b)
        with m.Else():
            m.d.comb += precision_k.eq(self.start.p.k)
        m.d.comb += new_f.eq(Mux(self.start.p.expanded, block_b, precision_k))
        with m.Switch(new_f):
            for f in range(1, BM + 1):
                with m.Case(f):
                    m.d.comb += new_log2_p.eq(pow2ceil_log2(f))

        # ---- chunk select: chunk bit m of plane q = plane bit offset*unit + m --------------------------
        chunks = []
        for q in range(BM):
            width_q = self._chunk_width(q)
            pieces = []
            # segment s holds chunk bits [W >> (s+1), W >> s) (s = S: [0, W >> S)); there the offset is a
            # multiple of W >> s, so only 2**s sources exist
            for s in range(S, -1, -1):
                lo = 0 if s == S else W >> (s + 1)
                hi = W >> s
                if lo >= width_q:
                    continue
                seg = Signal(hi - lo, name=f"chunk{q}_seg{s}")
                sources = [emit_bank[q][lo + i * (W >> s): hi + i * (W >> s)] for i in range(1 << s)]
                select = offset >> (S - s)
                if len(sources) == 1:
                    m.d.comb += seg.eq(sources[0])
                else:
                    with m.Switch(select):
                        for i, src in enumerate(sources):
                            with m.Case(i):
                                m.d.comb += seg.eq(src)
                pieces.append(seg)
            chunk = Signal(width_q, name=f"chunk{q}")
            fill_bit = plane_one[q].replicate(width_q)
            m.d.comb += chunk.eq(Mux(plane_keep[q], Cat(*pieces), fill_bit))
            chunks.append(chunk)

        # ---- compaction: C weights of F-bit fields, weight w at bits [w*F, w*F+F) ---------------------
        compact = Signal(W)
        with m.Switch(field_bits):
            for f in range(1, BM + 1):
                weights = W >> pow2ceil_log2(f)
                bits = [chunks[f - 1 - t % f][t // f] for t in range(weights * f)]
                with m.Case(f):
                    m.d.comb += compact.eq(Cat(*bits))

        # ---- gearbox: rotate to the fill level, merge under the partial line ---------------------------
        rotated = compact
        for b in range(S):
            stage = Signal(W, name=f"rotate_stage{b}")
            m.d.comb += stage.eq(Mux(fill_level[b], rotated.rotate_left(unit << b), rotated))
            rotated = stage
        merged = Signal(W)
        m.d.comb += merged.eq(Cat(*[
            Mux(fill_level > u, partial_line[u * unit:(u + 1) * unit], rotated[u * unit:(u + 1) * unit])
            for u in range(BM)]))
        level_sum = Signal(S + 1)
        m.d.comb += level_sum.eq(fill_level + chunk_units)
        line_complete = level_sum[S]            # sum >= b_max units: the line is full (sum < 2*b_max)

        with m.If(step):
            m.d.sync += [offset.eq(next_offset[:S]), fill_level.eq(level_sum[:S])]
            with m.If(line_complete):
                m.d.sync += [
                    out_valid.eq(1),
                    out_data.eq(merged),
                    out_index.eq(line_index),
                    out_last.eq(line_index == field_bits - 1),
                    line_index.eq(line_index + 1),
                    partial_line.eq(rotated),   # units past the line end start the next line
                ]
            with m.Else():
                m.d.sync += [out_valid.eq(0), partial_line.eq(merged)]
        with m.Elif(self.line.ready):
            m.d.sync += out_valid.eq(0)

        # after the step logic: a start in the last chunk's cycle must win the line counter and levels
        with m.If(start_fire):
            m.d.sync += [
                active.eq(1),
                field_bits.eq(new_f),
                offset_step.eq(Const(BM, S + 1) >> new_log2_p),
                chunk_units.eq((new_f << S) >> new_log2_p),
                offset.eq(0),
                fill_level.eq(0),
                line_index.eq(0),
            ]
            for q in range(BM):
                m.d.sync += [
                    emit_bank[q].eq(fill_bank[q]),
                    plane_keep[q].eq(q < precision_k),
                    plane_one[q].eq(self.start.p.expanded & self.start.p.midpoint & (precision_k == q)),
                ]
        with m.Elif(step & last_chunk):
            m.d.sync += active.eq(0)

        return m
