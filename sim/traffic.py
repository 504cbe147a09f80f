"""Constrained-random CXL.mem traffic for the controller testbench (replayable from one seed).

A run is a sequence of phases (RandomTraffic.PHASES, shuffled, repeated): calm, idle M2S, S2M backpressure,
AXI pauses, long stall runs, AXI SLVERR injection, many reads of one block key (hammer), tag reuse, region
rewrites with traffic in flight, controller resets with AXI transactions in flight, and all knobs at once.
Each phase starts at quiescence with a register change (usually a new layout: formats and plane runs are dealt
from a deck of every (format, B, R) combination, so INT2..BF16 and R = 1..64 all occur).

Constraints (docs/DEVICE.md §4): a read and a write of the same block are never in flight together (their
hit/miss order is timing dependent; directed tests cover that case), so the generator keeps per-block counts
of reads and writes in flight and waits before issuing a conflicting one. Regions never overlap. Region
rewrites with traffic in flight touch only regions no request in flight depends on (see
_phase_rewrite_in_flight); other register changes happen at quiescence.
"""
from __future__ import annotations

import collections
import dataclasses
import random

import numpy as np

from smartquant.params import (
    CONTROL_CLEAR_COUNTERS, CONTROL_CLEAR_POISON, CONTROL_HOLE_POISON, CONTROL_MEM_DATA_NXM, CONTROL_NXM_AS_POISON,
    CSR_CONTROL, MAX_PLANE_RUN, RWD_READS, ControllerParams, Format, ReqOpcode,
    Rounding, RwdOpcode, View, CSR_POISON_LINE, CSR_POISON_COMMAND, POISON_COMMAND_INJECT, POISON_COMMAND_CLEAR,
)
from smartquant.sim.coverage import format_name
from smartquant.sim.tb import TB, RegionSetup

# Req opcodes an HDM-H device only sees from a faulty host (forwarding and TSP flows it does not implement) and
# the reserved ones; RwD opcodes that neither write nor read (BIConflict) and the reserved ones
RARE_REQ = [ReqOpcode.MEM_RD_FWD, ReqOpcode.MEM_WR_FWD, ReqOpcode.TE_UPDATE] + [
    op for op in range(16) if op not in {int(o) for o in ReqOpcode}]
RARE_RWD = [RwdOpcode.BI_CONFLICT] + [
    op for op in range(16) if op not in {int(o) for o in RwdOpcode}]
# every combination of CONTROL's mode bits (decode-error poison, MemData-NXM, hole poison)
CONTROL_MODES = [CONTROL_NXM_AS_POISON * a | CONTROL_MEM_DATA_NXM * b | CONTROL_HOLE_POISON * c
                 for a in (0, 1) for b in (0, 1) for c in (0, 1)]


@dataclasses.dataclass
class Note:
    """What an issued request touches, for the read/write conflict rule."""
    kind: str                       # "read" or "write"
    block_key: tuple | None         # (region, block) or None when it touches nothing
    lines: tuple[int, ...] = ()     # DRAM lines a write may change


FORMATS = [(Format.INT, 2), (Format.INT, 4), (Format.INT, 8), (Format.INT, 16), (Format.BF16, 16)]
READ_ONLY_VIEWS = [View.PACKED_K, View.EXPANDED_K, View.PACKED_DEFAULT, View.EXPANDED_DEFAULT]
PLANE_RUNS = [1 << n for n in range(MAX_PLANE_RUN.bit_length())]      # 1, 2, 4, ..., 64


class LayoutDeck:
    """Every (format, B, R) combination the parameters allow, dealt in a shuffled order and reshuffled when used
    up, so a run of many layouts sees each combination (INT2 and R = 64 included) rather than a random few."""

    def __init__(self, rng: random.Random, params: ControllerParams):
        self.rng = rng
        self.combos = [(fmt, B, R) for fmt, B in FORMATS if B <= params.b_max for R in PLANE_RUNS]
        self.cards: list = []
        self.roundings = collections.Counter()     # per format: the fill rules cycle, so each format gets all

    def deal(self) -> tuple[int, int, int]:
        if not self.cards:
            self.cards = list(self.combos)
            self.rng.shuffle(self.cards)
        return self.cards.pop()

    def give_back(self, combo: tuple[int, int, int]) -> None:
        """A combination that found no room in this layout goes first into the next one."""
        self.cards.append(combo)

    def rounding(self, fmt: int, B: int) -> Rounding:
        turn = self.roundings[(fmt, B)]
        self.roundings[(fmt, B)] += 1
        return list(Rounding)[turn % len(Rounding)]


def random_layout(rng: random.Random, params: ControllerParams, deck: LayoutDeck | None = None) -> list[RegionSetup]:
    """Non-overlapping regions, formats and plane runs from the deck (random when None)."""
    total_lines = (1 << params.dram_addr_bits) // params.line_bytes
    regions, cursor = [], rng.randrange(0, 4) * params.b_max
    for index in range(params.n_regions):
        if deck is not None:
            fmt, B, R = deck.deal()
        else:
            fmt, B = rng.choice([combo for combo in FORMATS if combo[1] <= params.b_max])
            R = rng.choice([1, 1, 2, 4, 8])
        n_superblocks = rng.randint(1, max(1, 6 // R))
        default_k = rng.randint(1, B) if rng.random() < 0.9 else rng.choice([0, B + 1])
        rounding = deck.rounding(fmt, B) if deck is not None else rng.choice(list(Rounding))
        region = RegionSetup(index, cursor, n_superblocks, B, R, default_k=default_k, fmt=fmt, rounding=rounding)
        if cursor + region.span > total_lines:
            if deck is not None:
                deck.give_back((fmt, B, R))
            break
        regions.append(region)
        # Gaps are unmapped lines. Bases stay multiples of B lines (DEVICE.md §2): no AXI burst crosses 4 KiB.
        gap = rng.randrange(0, 40)
        cursor += region.span + gap
        cursor = -(-cursor // params.b_max) * params.b_max
    return regions


class RandomTraffic:
    def __init__(self, tb: TB, rng: random.Random, *, max_outstanding: int = 24, log_every: int = 1000):
        self.tb = tb
        self.rng = rng
        self.params = tb.params
        self.max_outstanding = max_outstanding
        self.log_every = log_every
        self.reads_in_flight: collections.Counter = collections.Counter()
        self.writes_in_flight: collections.Counter = collections.Counter()
        self.write_lines: dict[int, tuple[int, ...]] = {}
        self.issued = 0
        self.hot_blocks: collections.deque = collections.deque(maxlen=8)
        self.poison_rate = 0.04
        self.read_only_turns: collections.Counter = collections.Counter()   # per (format, B): see read_only_view_writes
        tb.completion_listeners.append(self._completed)

    # --- bookkeeping ---------------------------------------------------------------------------------------
    def _completed(self, tag, note) -> None:
        if tag is None:                      # reset: everything in flight is gone
            self.reads_in_flight.clear()
            self.writes_in_flight.clear()
            self.write_lines.clear()
            return
        if note is None or note.block_key is None:
            return
        if note.kind == "read":
            self.reads_in_flight[note.block_key] -= 1
        else:
            self.writes_in_flight[note.block_key] -= 1
            self.write_lines.pop(tag, None)

    def _conflicts(self, note: Note) -> bool:
        if note.block_key is None:
            return False
        if note.kind == "read":
            return self.writes_in_flight[note.block_key] > 0
        return self.reads_in_flight[note.block_key] > 0

    async def _issue(self, note: Note, send) -> None:
        start = self.tb.cycles
        deadline = None
        while self._conflicts(note) or self.tb.in_flight >= self.max_outstanding:
            # only a completion (or a reset) unblocks: no wake-up per cycle while waiting
            if deadline is None:
                deadline = self.tb.wake_completion_waiters_at(start + 20001)
            await self.tb.completions.wait()
            waited = self.tb.cycles - start
            if waited > 20000:
                raise AssertionError(f"stimulus stuck for {waited} cycles waiting for responses:\n"
                                     + "\n".join(self.tb.scoreboard.missing()[:10]))
        if deadline is not None:      # not stuck: its deadline would only wake a later waiter for nothing
            self.tb.driver.cancel_alarm(deadline)
        if note.block_key is not None:
            (self.reads_in_flight if note.kind == "read" else self.writes_in_flight)[note.block_key] += 1
        tag = send()
        if note.kind == "write" and note.lines:
            self.write_lines[tag] = note.lines
        self.issued += 1

    # --- layout --------------------------------------------------------------------------------------------
    async def new_layout(self) -> None:
        tb = self.tb
        if tb.model.poison_order_uncertain():
            # after backend write errors the list's contents depend on timing: a runtime loading new tensors
            # starts from a clean list (poison of other DRAM lines otherwise carries over into the new layout)
            await tb.csr_write(CSR_CONTROL, tb.control_mode | CONTROL_CLEAR_POISON)
        for index in range(self.params.n_regions):
            await tb.disable_region(index)
        layout = random_layout(self.rng, self.params, getattr(self, "deck", None))
        for region in layout:
            span_bytes = region.span * self.params.line_bytes
            tb.load_raw(region.base_line, np.frombuffer(self.rng.randbytes(span_bytes), dtype=np.uint8)
                        .reshape(region.span, self.params.line_bytes))
            if region.index == self.params.n_regions - 1 and region.index and self.rng.random() < 0.15:
                if getattr(self, "deck", None) is not None:
                    self.deck.give_back((region.fmt, region.B, region.R))   # this layout does not use its card
                region.fmt, region.B = Format.BF16, 8       # illegal: BF16 needs B = 16 -> stays disabled
                region.default_k = min(region.default_k, 8)
            await tb.program_region(region)
        # only legal regions decode; the illegal one reads back disabled and serves as unmapped space
        self.regions = [r for r in layout if not (r.fmt == Format.BF16 and r.B != 16)]
        await self.read_only_view_writes()

    async def read_only_view_writes(self) -> None:
        """One write per region through a read-only view (packed / expanded: dropped, counted wr_dropped,
        DEVICE.md §4), the next of the four in turn for the region's format. The random mix sends few such
        writes (each `write view x format` bin of them was hit 1..3 times in 5,000 transactions, and a timing
        change left one at 0); in turn, every (view, format) pair is written once a format was laid out four
        times, which a run's layouts cover (RandomTraffic.run deals the deck twice)."""
        tb, rng, p = self.tb, self.rng, self.params
        for region in self.regions:
            turn = self.read_only_turns[(region.fmt, region.B)]
            self.read_only_turns[(region.fmt, region.B)] += 1
            view = READ_ONLY_VIEWS[turn % len(READ_ONLY_VIEWS)]
            block = rng.randrange(region.n_blocks)
            line = region.view_line(block, rng.randrange(region.B))
            k = rng.randint(1, region.B) if view in (View.PACKED_K, View.EXPANDED_K) else 0
            address, data = tb.address(view, line, k), rng.getrandbits(p.data_width)
            note = Note("write", (region.index, block))
            await self._issue(note, lambda: tb.rwd(RwdOpcode.MEM_WR, address, data, note=note))

    # --- one random transaction ---------------------------------------------------------------------------
    def _pick_block(self, region: RegionSetup) -> int:
        if self.hot_blocks and self.rng.random() < 0.5:
            index, block = self.rng.choice(list(self.hot_blocks))
            if index == region.index and block < region.n_blocks:
                return block
        block = self.rng.randrange(region.n_blocks)
        self.hot_blocks.append((region.index, block))
        return block

    def _unmapped_address(self) -> int:
        p, tb = self.params, self.tb
        choice = self.rng.random()
        total_lines = (1 << p.dram_addr_bits) // p.line_bytes
        if choice < 0.4:
            for _ in range(20):
                line = self.rng.randrange(total_lines)
                if not any(region.contains(line) for region in self.regions):
                    view = self.rng.choice([View.RAW, View.WEIGHT_MAJOR, View.PACKED_K, View.EXPANDED_DEFAULT])
                    return tb.address(view, line, self.rng.randrange(1, 17))
        if choice < 0.7 and self.regions:
            region = self.rng.choice(self.regions)
            return tb.address(self.rng.choice([6, 7]), region.base_line + self.rng.randrange(region.span))
        high = 1 << self.rng.randrange(p.hpa_bits - p.line_offset_bits, 52 - p.line_offset_bits)
        return high | tb.address(View.RAW, self.rng.randrange(total_lines))

    def _target(self, writing: bool):
        """(address, note) of a random mapped or unmapped target."""
        rng, tb = self.rng, self.tb
        kind = "write" if writing else "read"
        if not self.regions or rng.random() < 0.08:
            return self._unmapped_address(), Note(kind, None)
        region = rng.choice(self.regions)
        if writing:
            view = rng.choices([View.RAW, View.WEIGHT_MAJOR, View.PACKED_K, View.EXPANDED_K, View.PACKED_DEFAULT,
                                View.EXPANDED_DEFAULT], weights=[40, 45, 4, 4, 4, 3])[0]
        else:
            view = rng.choices(list(range(8)), weights=[14, 14, 22, 16, 16, 12, 3, 3])[0]
        block = self._pick_block(region)
        k = 0
        if view in (View.PACKED_K, View.EXPANDED_K):
            k = rng.randint(1, region.B) if rng.random() < 0.92 else rng.choice([0, region.B + 1, 31])
        if view == View.RAW:
            line = region.block_lines(block)[rng.randrange(region.B)]    # the block's line of a random plane
            lines = (line,)
        else:
            line = region.view_line(block, rng.randrange(region.B))
            lines = tuple(region.block_lines(block)) if view == View.WEIGHT_MAJOR else ()
        return tb.address(view, line, k), Note(kind, (region.index, block), lines)

    async def stream(self, budget: int) -> None:
        """A host streaming one block at one precision (what the block buffer is for): up to `budget` reads."""
        rng, tb = self.rng, self.tb
        region = rng.choice(self.regions)
        block = self._pick_block(region)
        view = rng.choice([View.PACKED_K, View.EXPANDED_K, View.PACKED_DEFAULT, View.EXPANDED_DEFAULT,
                           View.WEIGHT_MAJOR])
        k = rng.randint(1, region.B) if view in (View.PACKED_K, View.EXPANDED_K) else 0
        packed_k = k if view == View.PACKED_K else region.default_k if view == View.PACKED_DEFAULT else region.B
        lines = range(min(packed_k, region.B) if view in (View.PACKED_K, View.PACKED_DEFAULT) else region.B)
        for j in list(lines)[:budget]:
            address = tb.address(view, region.view_line(block, j), k)
            note = Note("read", (region.index, block))
            await self._issue(note, lambda: tb.req(ReqOpcode.MEM_RD, address, note=note))

    async def block_write(self, budget: int, partial: bool = False, poison_rate: float | None = None,
                          target: tuple[RegionSetup, int] | None = None, whole: bool = False) -> None:
        """A host writing a block through the weight-major view, lines 0..B-1 in order (what the write path
        gathers into B beats): the whole block, or (`partial`) its first 1..B-1 lines; at most `budget` lines.
        `target`: (region, block) instead of a random one; `whole`: every line a MemWr (every byte enabled)."""
        rng, tb, p = self.rng, self.tb, self.params
        region, block = target if target is not None else (None, None)
        if region is None:
            region = rng.choice(self.regions)
            block = self._pick_block(region)
        count = min(rng.randrange(1, region.B) if partial else region.B, budget)
        rate = self.poison_rate if poison_rate is None else poison_rate
        note = Note("write", (region.index, block), tuple(region.block_lines(block)))
        for j in range(count):
            address = tb.address(View.WEIGHT_MAJOR, region.view_line(block, j))
            data = rng.getrandbits(p.data_width)
            if whole or rng.random() < 0.8:
                opcode, enables = RwdOpcode.MEM_WR, (1 << p.line_bytes) - 1
            else:
                opcode, enables = RwdOpcode.MEM_WR_PTL, self._group_enables()
            poison = int(rng.random() < rate)
            await self._issue(note, lambda: tb.rwd(opcode, address, data, byte_enable=enables, poison=poison,
                                                   note=note))

    def _owner(self, line: int) -> tuple[RegionSetup, int] | None:
        """(region, block) of the current layout whose plane lines hold a DRAM line, if any."""
        for region in self.regions:
            if region.contains(line):
                return region, region.block_of_raw(line - region.base_line)
        return None

    async def poison_action(self, roll: float | None = None) -> None:
        """What a host does about poison (DEVICE.md §4): the CSR commands in the spirit of the CXL mailbox's
        Inject / Clear Poison (at quiescence: a CSR write is ordered with nothing on the ports), or a repair
        write of a poisoned line: a raw MemWr of the line, or a whole weight-major rewrite of its block."""
        tb, rng = self.tb, self.rng
        owned = [line for line in sorted(tb.model.poisoned_lines()) if self._owner(line) is not None]
        roll = rng.random() if roll is None else roll
        if roll < 0.35 or not owned:
            if owned and rng.random() < 0.3:
                line = rng.choice(owned)              # poisoned already: merges into its one-line record, if any
            else:
                region = rng.choice(self.regions)
                line = region.block_lines(self._pick_block(region))[rng.randrange(region.B)]
            await tb.csr_write(CSR_POISON_LINE, line)
            await tb.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_INJECT)
        elif roll < 0.55:
            await tb.csr_write(CSR_POISON_LINE, rng.choice(owned))
            await tb.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_CLEAR)
        elif roll < 0.8:
            line = rng.choice(owned)
            region, block = self._owner(line)
            note = Note("write", (region.index, block), (line,))
            data = rng.getrandbits(self.params.data_width)
            await self._issue(note, lambda: tb.rwd(RwdOpcode.MEM_WR, tb.address(View.RAW, line), data, note=note))
        else:
            region, block = self._owner(rng.choice(owned))
            await self.block_write(region.B, poison_rate=0.0, target=(region, block), whole=True)

    async def one(self, budget: int = 1) -> None:
        rng, tb, p = self.rng, self.tb, self.params
        if self.regions and rng.random() < 0.012:
            return await self.poison_action()
        roll = rng.random()
        if roll < 0.12 and self.regions and budget > 1:
            await self.stream(budget)
        elif roll < 0.55:
            address, note = self._target(writing=False)
            opcode = rng.choices([ReqOpcode.MEM_RD, ReqOpcode.MEM_RD_DATA, ReqOpcode.MEM_SPEC_RD,
                                  ReqOpcode.MEM_RD_TEE, ReqOpcode.MEM_RD_DATA_TEE, ReqOpcode.MEM_SPEC_RD_TEE],
                                 weights=[40, 40, 6, 6, 6, 2])[0]
            await self._issue(note, lambda: tb.req(opcode, address, note=note))
        elif roll < 0.88 and self.regions and budget > 1 and rng.random() < 0.2:
            await self.block_write(budget, partial=rng.random() < 0.3)
        elif roll < 0.88:
            address, note = self._target(writing=True)
            data = rng.getrandbits(p.data_width)
            tee = rng.random() < 0.1      # TEE intent: written like the plain opcodes
            if rng.random() < 0.6:
                opcode = RwdOpcode.MEM_WR_TEE if tee else RwdOpcode.MEM_WR
                enables = (1 << p.line_bytes) - 1
            else:
                opcode = RwdOpcode.MEM_WR_PTL_TEE if tee else RwdOpcode.MEM_WR_PTL
                roll = rng.random()
                enables = (0 if roll < 0.03 else (1 << p.line_bytes) - 1 if roll < 0.06
                           else rng.getrandbits(p.line_bytes) if roll < 0.5 else self._group_enables())
            poison = int(rng.random() < self.poison_rate)
            await self._issue(note, lambda: tb.rwd(opcode, address, data, byte_enable=enables, poison=poison,
                                                   note=note))
        elif roll < 0.96:
            opcode = rng.choice([ReqOpcode.MEM_INV, ReqOpcode.MEM_INV_NT, ReqOpcode.MEM_CLN_EVCT])
            address, _ = self._target(writing=False)
            await self._issue(Note("read", None), lambda: tb.req(opcode, address))
        elif roll < 0.98:
            address, _ = self._target(writing=False)
            await self._issue(Note("read", None), lambda: tb.req(rng.choice(RARE_REQ), address))
        else:
            address, _ = self._target(writing=False)
            data = rng.getrandbits(p.data_width)
            await self._issue(Note("read", None), lambda: tb.rwd(rng.choice(RARE_RWD), address, data))

    def _group_enables(self) -> int:
        """Byte enables made of whole 8-byte groups (whole INT8..INT16 weights in every format)."""
        enables = 0
        for group in range(self.params.line_bytes // 8):
            if self.rng.random() < 0.5:
                enables |= 0xFF << (8 * group)
        return enables

    # --- a whole run: phases ---------------------------------------------------------------------------------
    PHASES = ("calm", "idle", "backpressure", "axi_pauses", "stall_runs", "errors", "hammer", "tag_reuse",
              "rewrite_in_flight", "reset", "stress")

    def _knobs(self, phase: str) -> dict:
        rng = self.rng
        return {
            "calm": dict(),
            "idle": dict(idle=rng.uniform(0.2, 0.6)),
            "backpressure": dict(backpressure=rng.uniform(0.3, 0.7)),
            "axi_pauses": dict(axi_pause=rng.uniform(0.2, 0.6)),
            "stall_runs": dict(stall_runs=rng.uniform(0.02, 0.08)),
            "errors": dict(axi_pause=0.2),
            "hammer": dict(backpressure=0.3, stall_runs=0.05),
            "tag_reuse": dict(backpressure=0.3),
            "rewrite_in_flight": dict(axi_pause=0.3),
            "reset": dict(axi_pause=0.5, stall_runs=0.05),
            "stress": dict(idle=0.3, backpressure=0.3, axi_pause=0.3, stall_runs=0.03),
        }[phase]

    async def run(self, transactions: int, *, phase_length: int = 600) -> None:
        """Phases of about `phase_length` transactions (fewer when the run is short, so that it still holds twice
        the layouts needed to deal every (format, R) combination) in a shuffled cycle of PHASES: each changes
        the stimulus knobs and starts with a new region layout at quiescence, so every seed visits every
        regime and every configuration."""
        tb, rng = self.tb, self.rng
        self.deck = LayoutDeck(rng, self.params)
        layouts_needed = 2 * -(-len(self.deck.combos) // self.params.n_regions) + 2 * len(self.PHASES)
        phase_length = max(50, min(phase_length, transactions // layouts_needed))
        self.phases_run: list[str] = []
        await self.new_layout()
        order: list[str] = []
        next_log = self.log_every
        while self.issued < transactions:
            if not order:
                order = list(self.PHASES)
                rng.shuffle(order)
            phase = order.pop()
            self.phases_run.append(phase)
            budget = min(transactions - self.issued, max(50, int(phase_length * rng.uniform(0.5, 1.5))))
            await tb.quiesce()
            tb.assert_clean()
            await tb.check_counters()
            await tb.check_csrs()
            await self.new_layout()
            await self.epoch_change()
            # decode-error and hole responses: every phase runs in one of the modes a host may choose
            await tb.set_control_mode(rng.choice(CONTROL_MODES))
            await self.fill_reads(2)
            if self.issued >= transactions // 2:
                await self.close_coverage_gaps()
            tb.set_knobs(**self._knobs(phase))
            # poisoned writes: rare, but often enough in the stress phase to overflow the poison list
            self.poison_rate = 0.25 if phase == "stress" else 0.04
            # phases that fill the device (DevLoad up to Severe) let more requests be outstanding
            self.max_outstanding = (self.params.load_capacity + 16 if phase in ("backpressure", "hammer", "stress")
                                    else 24)
            await getattr(self, f"_phase_{phase}", self._phase_mixed)(budget)
            if self.log_every and self.issued >= next_log:
                next_log = (self.issued // self.log_every + 1) * self.log_every
                tb.log.info("%d / %d transactions issued (phase %s), %d mismatches so far", self.issued,
                            transactions, phase, tb.scoreboard.stats.mismatches)
        tb.set_knobs()

    async def _phase_mixed(self, budget: int) -> None:
        end = self.issued + budget
        while self.issued < end:
            await self.one(budget=end - self.issued)

    async def _phase_backpressure(self, budget: int) -> None:
        """S2M backpressure, opened by a host that takes no response while it sends more reads than the device
        holds (params.load_capacity): the device fills and back-pressures M2S Req for a long run, then for short
        ones while it drains at the backpressure rate (the Req stall-run bins in every run, not only long ones)."""
        tb, p = self.tb, self.params
        flood = min(budget, p.load_capacity + 16)
        tb.hold_responses(2 * p.load_capacity + 32)
        for _ in range(flood):
            address, note = self._target(writing=False)
            await self._issue(note, lambda: tb.req(ReqOpcode.MEM_RD, address, note=note))
        await self._phase_mixed(budget - flood)

    async def _phase_errors(self, budget: int) -> None:
        """SLVERR on a few mapped lines (reads and writes), set and cleared at quiescence in model and memory."""
        tb, rng = self.tb, self.rng
        lines = [region.base_line + rng.randrange(region.span) for region in self.regions for _ in range(3)]
        for line in lines:
            if rng.random() < 0.5:
                tb.model.inject_read_error(line)
                tb.ram.read_error_lines.add(line)
            else:
                tb.model.inject_write_error(line)
                tb.ram.write_error_lines.add(line)
        await self._phase_mixed(budget)
        await tb.quiesce()
        tb.model.clear_backend_errors()
        tb.ram.read_error_lines.clear()
        tb.ram.write_error_lines.clear()

    async def _phase_stress(self, budget: int) -> None:
        """All knobs at once, after a host injected poison into more lines than the poison list has free
        records (DEVICE.md §4: the list fills, the rest is lost and flagged, only listed lines read poisoned)."""
        tb, rng = self.tb, self.rng
        if self.regions:
            free = sum(record is None for record in tb.model.poison_list)
            for _ in range(free + 1):
                region = rng.choice(self.regions)
                line = region.block_lines(self._pick_block(region))[rng.randrange(region.B)]
                await tb.csr_write(CSR_POISON_LINE, line)
                await tb.csr_write(CSR_POISON_COMMAND, POISON_COMMAND_INJECT)
        await self._phase_mixed(budget)

    async def _phase_hammer(self, budget: int) -> None:
        """Many reads of one buffered block key at once (more than request_depth), the rest mixed."""
        tb, rng = self.tb, self.rng
        end = self.issued + budget
        while self.issued < end and self.regions:
            region = rng.choice(self.regions)
            block = self._pick_block(region)
            view = rng.choice([View.PACKED_K, View.EXPANDED_K])
            k = rng.randint(1, region.B)
            lines = k if view == View.PACKED_K else region.B
            for _ in range(self.params.request_depth + rng.randrange(self.params.b_max + 1)):
                address = tb.address(view, region.view_line(block, rng.randrange(lines)), k)
                note = Note("read", (region.index, block))
                await self._issue(note, lambda: tb.req(ReqOpcode.MEM_RD, address, note=note))
            for _ in range(rng.randrange(1, 20)):
                await self.one()

    async def _phase_tag_reuse(self, budget: int) -> None:
        """Reads and NDR-only requests that reuse a tag still outstanding (CXL allows it)."""
        tb, rng = self.tb, self.rng
        end = self.issued + budget
        while self.issued < end:
            if tb.outstanding and rng.random() < 0.3:
                tag = rng.choice(list(tb.outstanding))
                address, note = self._target(writing=False)
                opcode = rng.choice([ReqOpcode.MEM_RD, ReqOpcode.MEM_RD_DATA, ReqOpcode.MEM_INV])
                if opcode == ReqOpcode.MEM_INV:
                    note = Note("read", None)
                await self._issue(note, lambda: tb.req(opcode, address, note=note, tag=tag))
            else:
                await self.one()

    async def _phase_rewrite_in_flight(self, budget: int) -> None:
        """Region rewrites (default k, rounding) while raw reads and unpoisoned writes of other regions, unmapped
        reads and NDR-only requests are in flight. None of these depends on the rewritten region's default k, on
        the block buffer or on the poison list (which is cleared first), so the
        model's order is the DUT's (DEVICE.md §4)."""
        tb, rng = self.tb, self.rng
        if not self.regions:
            return await self._phase_mixed(budget)
        await tb.csr_write(CSR_CONTROL, tb.control_mode | CONTROL_CLEAR_POISON)
        end = self.issued + budget
        while self.issued < end:
            target = rng.choice(self.regions)
            others = [region for region in self.regions if region is not target]
            for _ in range(rng.randrange(2, 12)):
                roll = rng.random()
                if others and roll < 0.6:
                    region = rng.choice(others)
                    block = self._pick_block(region)
                    line = region.block_lines(block)[rng.randrange(region.B)]
                    if roll < 0.3:
                        note = Note("read", (region.index, block))
                        await self._issue(note, lambda: tb.req(ReqOpcode.MEM_RD, tb.address(View.RAW, line),
                                                               note=note))
                    else:
                        note = Note("write", (region.index, block), (line,))
                        data = rng.getrandbits(self.params.data_width)
                        await self._issue(note, lambda: tb.rwd(RwdOpcode.MEM_WR, tb.address(View.RAW, line), data,
                                                               byte_enable=(1 << self.params.line_bytes) - 1,
                                                               note=note))
                elif roll < 0.8:
                    address = self._unmapped_address()
                    await self._issue(Note("read", None), lambda: tb.req(ReqOpcode.MEM_RD, address))
                else:
                    opcode = rng.choice([ReqOpcode.MEM_INV, ReqOpcode.MEM_INV_NT, ReqOpcode.MEM_CLN_EVCT])
                    address, _ = self._target(writing=False)
                    await self._issue(Note("read", None), lambda: tb.req(opcode, address))
            if others or rng.random() < 0.5:
                # part of a block of another region (with one region: of the target itself, whose weight-major
                # writes do not depend on its default k or rounding), gathered when the rewrite acts: the
                # rewrite flushes it (all of it accepted before the CSR write starts, so the model's order is
                # the device's)
                saved, self.regions = self.regions, others or [target]
                await self.block_write(3, partial=True, poison_rate=0.0)
                self.regions = saved
                await tb.rwd_accepted()
            target.default_k = rng.randint(1, target.B)
            target.rounding = rng.choice(list(Rounding))
            await tb.program_region(target, in_flight_ok=True)
            # the rewrite must show: reads through the default views of the target, at its new k and rounding
            block = self._pick_block(target)
            for view in (View.PACKED_DEFAULT, View.EXPANDED_DEFAULT):
                line = target.view_line(block, rng.randrange(min(target.default_k, target.B)))
                note = Note("read", (target.index, block))
                await self._issue(note, lambda: tb.req(ReqOpcode.MEM_RD, tb.address(view, line), note=note))
            # these depend on the default k and the buffer: they must be answered before the next rewrite
            await tb.quiesce()

    async def _phase_reset(self, budget: int) -> None:
        """Controller resets with AXI transactions in flight (R beats, B responses, W beats owed); the AXI
        memory is not reset, so late responses arrive after the reset (DEVICE.md, Reset)."""
        tb, rng = self.tb, self.rng
        end = self.issued + budget
        for wanted in rng.sample(range(3), 3):      # 0: R beats owed, 1: B owed, 2: W beats owed
            # the memory holds back the channel whose obligation this reset is to catch in flight
            tb.ram.pauses[("r", "b", "w")[wanted]].set(0.9)
            for _ in range(max(1, budget // 4)):
                await self.one()
                if tb.ram.outstanding()[wanted]:
                    break
            lines = {line for written in self.write_lines.values() for line in written}
            lines |= {line for entries in tb.outstanding.values() for entry in entries
                      if isinstance(entry[3], Note) for line in entry[3].lines}
            tb.log.info("reset with %d requests outstanding, AXI owed (R beats, B, W beats) %s", tb.in_flight,
                        tb.ram.outstanding())
            await tb.reset_mid_traffic(lines)
            tb.set_knobs(**self._knobs("reset"))
        await self._phase_mixed(max(0, end - self.issued))

    # the poison_action roll that makes each poison-list bin's event (an inject merges when the line is poisoned)
    POISON_ACTION_ROLLS = {"inject": 0.0, "merge": 0.0, "clear line": 0.4, "cleared by raw write": 0.6,
                           "cleared by block write": 0.9}

    async def close_coverage_gaps(self) -> None:
        """Directed stimulus for the bins still unhit (sim/coverage.py) that the generator can aim at: one
        transaction for a rare opcode, a read of a format at a view or k the current layout holds, a poison-list
        action; a half-rate drain (half_rate_drain) for the Req stall runs. Called between phases
        in the second half of a run, so the random mix comes first and what it left is closed (a timing change
        that shifts the random stream once left a bin such as a reserved opcode or `clear line` unhit in a
        5,000-transaction run). A bin this cannot reach stays in the report."""
        tb, rng, p = self.tb, self.rng, self.params
        req_stalls_driven = False
        for missed in tb.coverage.missed():
            group, name = missed.split("/", 1)
            if group in ("req opcode", "rwd opcode"):
                rare = RARE_REQ if group == "req opcode" else RARE_RWD
                opcode = next((int(op) for op in rare if tb.coverage.opcode_bin(group, int(op)) == name), None)
                if opcode is None:
                    continue
                address, _ = self._target(writing=False)
                if group == "req opcode":
                    await self._issue(Note("read", None), lambda: tb.req(opcode, address))
                else:
                    data = rng.getrandbits(p.data_width)
                    await self._issue(Note("read", None), lambda: tb.rwd(opcode, address, data))
            elif group in ("format x k", "read view x format"):
                if group == "format x k":
                    fmt, k_name = name.split("/")
                    view, k = View.PACKED_K, int(k_name.removeprefix("k="))
                else:
                    view_name, fmt = name.split("/")
                    view, k = View[view_name], 0
                regions = [r for r in self.regions if format_name(r.fmt, r.B) == fmt]
                if not regions:
                    continue      # the format is not laid out now: a later phase's layout may have it
                region = rng.choice(regions)
                block = rng.randrange(region.n_blocks)
                if view in (View.PACKED_K, View.EXPANDED_K):
                    k = k or rng.randint(1, region.B)
                line = (region.block_lines(block)[0] if view == View.RAW
                        else region.view_line(block, 0 if view in (View.PACKED_K, View.PACKED_DEFAULT)
                                              else rng.randrange(region.B)))
                address, note = tb.address(view, line, k), Note("read", (region.index, block))
                await self._issue(note, lambda: tb.req(ReqOpcode.MEM_RD, address, note=note))
            elif group == "poison list" and name in self.POISON_ACTION_ROLLS and self.regions:
                await self.poison_action(self.POISON_ACTION_ROLLS[name])
            elif group == "stall" and name.startswith("m2s_req/") and not req_stalls_driven:
                req_stalls_driven = True
                await self.half_rate_drain()

    async def half_rate_drain(self) -> None:
        """Req stall runs of every length: unmapped reads (answered without DRAM, so dispatch never waits) sent
        back to back, more than the device holds, while the host takes responses in every other cycle: the
        device fills (a long stall while it does), then frees one read per two cycles (one-cycle stalls). The
        backpressure phase's random drain may give no one-cycle run (seed 7, 5,000 transactions, 4421e67)."""
        tb, p = self.tb, self.params
        saved = self.max_outstanding
        self.max_outstanding = p.load_capacity + 16
        tb.hold_responses(p.load_capacity)
        tb.halve_response_rate()
        for _ in range(2 * p.load_capacity + 16):
            address, note = self._unmapped_address(), Note("read", None)
            await self._issue(note, lambda: tb.req(ReqOpcode.MEM_RD, address, note=note))
        await tb.quiesce()
        tb.set_knobs()
        self.max_outstanding = saved

    async def fill_reads(self, count: int) -> None:
        """MemRdFill / MemRdFillTEE reads (on RwD) of random targets, each alone, at quiescence: a fill takes its
        place among Req reads where it meets them in the read engine, not at the ports the model is fed from
        (DEVICE.md §4). Sent between phases, so that no phase's sustained pressure is drained for them."""
        tb, rng = self.tb, self.rng
        for _ in range(count):
            address, note = self._target(writing=False)
            opcode = rng.choice(sorted(RWD_READS))
            await self._issue(note, lambda: tb.rwd(opcode, address, rng.getrandbits(self.params.data_width),
                                                   poison=rng.randrange(2), note=note))
            await tb.quiesce()

    async def epoch_change(self) -> None:
        """A register change at quiescence: what a runtime does between layers or tensors."""
        tb, rng = self.tb, self.rng
        action = rng.choice(["default_k", "layout", "clear_poison", "clear_counters"])
        if action == "default_k" and self.regions:
            region = rng.choice(self.regions)
            region.default_k = rng.randint(1, region.B)
            region.rounding = rng.choice(list(Rounding))
            await tb.program_region(region)
        elif action == "layout":
            await self.new_layout()
        elif action == "clear_poison":
            await tb.csr_write(CSR_CONTROL, tb.control_mode | CONTROL_CLEAR_POISON)
        else:
            await tb.csr_write(CSR_CONTROL, tb.control_mode | CONTROL_CLEAR_COUNTERS)
