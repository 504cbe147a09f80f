"""Golden request-trace model of the controller: every DRS/NDR payload and every event counter, from the trace.

`DeviceModel` applies CXL.mem requests and CSR accesses one at a time, in the order given (the scoreboard feeds
them in the order the DUT accepted them), and implements docs/DEVICE.md literally. It is the independent
expectation the RTL is checked against bit-exact; all bit orders come from `smartquant.golden.layout`.

It also records the backend traffic (`axi_reads`, `axi_writes`, and both in issue order in `axi_bursts`) so
that the traffic counters follow from the bursts and the DRAM row model (golden/dram.py) can replay the
line-address stream (`backend_lines()`). DevLoad, busy_cycles and stall_cycles depend on timing and are not
predicted. DevLoad's rule is `smartquant.params.dev_load_level` of the port occupancy (DEVICE.md §3): a checker
that counts occupancy at the ports checks it by range (tests/test_dev_load.py); sim/scoreboard.py checks only
that it is a legal 2-bit level.

Readings of DEVICE.md where it leaves a choice open (the simplest one, reported to the lead):
 1. REGION_BASE / REGION_SUPERBLOCKS keep the low `dram_addr_bits - log2(line bytes)` bits written (the width of
    the region entry in hdl/csr/layouts.py, at most 32) and read back those. REGION_CONFIG keeps bits [13:0]
    (higher bits read 0); enable reads back 0 when the fields are illegal: BF16 with B != 16, B > b_max,
    rounding 3, and also log2(R) = 7 (R = 128 is outside the plane-run range 1..64 of section 1).
 2. Region window match and span (n_superblocks * R * B) use exact arithmetic; the DRAM line of a raw index is
    (base_line + index) modulo the line-address space (the AXI address is dram_addr_bits wide).
 3. CSR writes honour WSTRB per byte (`strobe`), CONTROL acts only when byte 0 is strobed; the stored
    enable bit of an illegal REGION_CONFIG is 0, which is what a later partial write merges with.
    A region-register write invalidates all buffer slots; it leaves the poison list alone (poison belongs to
    DRAM lines, DEVICE.md §4). Writes to region registers of i >= n_regions, to read-only or unused CSR addresses are ignored;
    unused addresses read 0. CSR address bits [1:0] are ignored (32-bit registers).
 4. Decode errors and holes keep their responses of section 3 whatever the poison list holds (counted in
    nxm_reads / hole_reads, not poison_reads).
 5. poison_writes counts RwD MemWr/MemWrPtl with poison = 1 that are mapped and written (raw or weight-major
    view); dropped, unmapped and bad-opcode writes do not count it and leave the poison list alone.
 6. raw_reads counts raw-view reads served from DRAM (not unmapped ones); reads_at_k counts packed and expanded
    reads served, the weight-major view (expanded at k = B) included.
 7. dram_lines_written counts write beats (always issued, WSTRB possibly 0); bytes_strobed counts set WSTRB bits.
 8. Victim choice is a round-robin pointer advanced on every miss, whether or not the victim slot is valid;
    neither invalidation nor clearing counters moves it.
 9. The byte_enable field of MemWr is ignored (all ones); MemWrPtl's is used.
10. A weight-major write needs W/B >= 8 (a plane slice of whole bytes); with W = 64 and B = 16 the model
    raises SmartquantError rather than guess.
11. `load_raw` is a backdoor (like writing the testbench memory directly): no traffic, no counters, no buffer invalidation.
12. STATUS.busy reads 0: the model is idle between the requests it is given.
13. Backend errors (DEVICE.md sections 3 and 4) cannot follow from the request trace, so the model is told where
    they happen: `inject_read_error(line)` makes every R beat of that DRAM line answer RRESP = SLVERR,
    `inject_write_error(line)` every B response of a write burst that covers that line BRESP = SLVERR, until
    `clear_backend_errors()`. A test's AXI memory applies the same sets. The data a failed beat carries is
    unspecified; the model (like the test memories) returns the stored line, and a failed write still stores
    its data. axi_errors counts every failing R beat and B response; poison_reads counts every mapped read
    answered with poison = 1, whatever the reason (poison list, backend error).
14. Write gathering (DEVICE.md §4): weight-major writes join `gather` (one block) and reach DRAM when it is
    flushed (`flush_writes`): after B lines, before a writable RwD of another block or of the raw view, before a
    read of the block, after a region-register write, and where the caller says the device's idle boundary
    falls (the model has no clock: the scoreboard and the write-path tests call flush_writes("idle") where
    `gather_idle_boundary` of the RwD acceptance cycles says so). Counts per cause in `gather_flushes`.
    A lone line left gathered has not reached `memory` nor the DRAM counters until then.
15. Per-line poison (DEVICE.md §4 "Poison"): `poison_list` holds `poison_entries` records (PoisonRecord: first
    line F, log2 stride s, 16-bit mask; None = free), DRAM line numbers modulo the line-address space. A write's
    own clear or insert is applied when it is accepted (before its backend error insert, which the RTL makes at
    the B response); a flush's clear when it is flushed. `poison_events` counts what happened by kind (for
    coverage).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
import functools
from typing import Iterable

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.params import (
    CONTROL_CLEAR_COUNTERS, CONTROL_CLEAR_POISON, CONTROL_HOLE_POISON, CONTROL_MEM_DATA_NXM, CONTROL_NXM_AS_POISON,
    CSR_CONTROL, CSR_COUNTER_BASE, CSR_ID, CSR_PARAMS, CSR_REGION_BASE, CSR_REGION_STRIDE, CSR_STATUS, CSR_VERSION,
    CSR_POISON_LINE, CSR_POISON_COMMAND, CSR_POISON_LIST_INDEX, CSR_POISON_LIST_LINE, CSR_POISON_LIST_ENTRY,
    CSR_POISON_COUNT, POISON_COMMAND_INJECT, POISON_COMMAND_CLEAR, POISON_ENTRY_VALID, poison_index_limit,
    ID_VALUE, META_FIELD_NO_OP, MAX_PLANE_RUN, N_COUNTERS, TIMING_COUNTERS, VERSION_VALUE, WRITE_GATHER_IDLE_CYCLES,
    ControllerParams, Counter, DrsOpcode, Format, NdrOpcode, ReqOpcode, Rounding, RwdOpcode, View, counter_name, hpa,
    REQ_NO_RESPONSE, REQ_READS, RWD_FULL_WRITES, RWD_PARTIAL_WRITES, RWD_READS,
    REGION_CONFIG_BITS, region_config_word, split_hpa, unpack_region_config,
)

MASK32 = 0xFFFF_FFFF
CONFIG_BITS = (1 << REGION_CONFIG_BITS) - 1   # REGION_CONFIG [13:0]
REGION_REG_BASE, REGION_REG_SUPERBLOCKS, REGION_REG_CONFIG = 0x0, 0x4, 0x8
PACKED, EXPANDED = "packed", "expanded"
PACKED_VIEWS = (View.PACKED_K, View.PACKED_DEFAULT)     # (a tuple built once: enum lookups cost ~0.1 us each)

# counters the model predicts exactly: every defined one except the timing counters
PREDICTED_COUNTERS = tuple(n for n in range(N_COUNTERS)
                           if (n in Counter.__members__.values() or n >= Counter.READS_AT_K1)
                           and n not in TIMING_COUNTERS)


# Req opcode -> its counter; the TEE-intent variants count with their plain opcodes, anything else counts
# req_bad_opcode (hdl/cxl/frontend.py REQ_OPCODE_COUNTERS is the RTL's table)
REQ_COUNTERS = {
    ReqOpcode.MEM_INV: Counter.REQ_MEM_INV, ReqOpcode.MEM_RD: Counter.REQ_MEM_RD,
    ReqOpcode.MEM_RD_TEE: Counter.REQ_MEM_RD, ReqOpcode.MEM_RD_DATA: Counter.REQ_MEM_RD_DATA,
    ReqOpcode.MEM_RD_DATA_TEE: Counter.REQ_MEM_RD_DATA, ReqOpcode.MEM_SPEC_RD: Counter.REQ_MEM_SPEC_RD,
    ReqOpcode.MEM_SPEC_RD_TEE: Counter.REQ_MEM_SPEC_RD, ReqOpcode.MEM_INV_NT: Counter.REQ_MEM_INV_NT,
    ReqOpcode.MEM_CLN_EVCT: Counter.REQ_MEM_CLN_EVCT,
}
HOLE_FILL = 0      # the data a hole read returns (DEVICE.md §3)


# Response, ReadBurst, WriteBurst and ReadTarget are made per message (tens of thousands a second in simulation)
# and never changed after creation. They are plain slotted dataclasses, hashable by value, rather than frozen
# ones: a frozen dataclass's __init__ sets each field through object.__setattr__, four times the cost.
@dataclass(slots=True, unsafe_hash=True)
class Response:
    """One S2M message: channel "drs" or "ndr"; data is the line as a little-endian integer (0 for NDR)."""
    channel: str
    opcode: int
    tag: int
    ld_id: int
    meta_field: int = META_FIELD_NO_OP
    meta_value: int = 0
    poison: int = 0
    data: int = 0


@dataclass(slots=True, unsafe_hash=True)    # see Response
class ReadBurst:
    """AXI INCR read burst: `beats` lines from DRAM line `line` (byte address line * line_bytes)."""
    line: int
    beats: int


@dataclass(slots=True, unsafe_hash=True)    # see Response
class WriteBurst:
    """AXI INCR write burst: `beats` lines from DRAM line `line`, WSTRB of each beat in `strobes`, WDATA of the
    beats in `data` (beats * line_bytes bytes; only strobed bytes are meaningful)."""
    line: int
    beats: int
    strobes: tuple[int, ...]
    data: bytes = field(default=b"", compare=False)


@dataclass
class PoisonRecord:
    """One poison list record: the DRAM lines first + (q << log2_stride) for every set bit q of `mask`."""
    first: int
    log2_stride: int
    mask: int

    def lines(self, line_mask: int) -> list[int]:
        return [(self.first + (q << self.log2_stride)) & line_mask for q in range(16) if self.mask >> q & 1]


POISON_MASK_BITS = 16     # lines a record can name (b_max <= 16)


def line_set(first: int, log2_stride: int, count: int, line_mask: int) -> frozenset[int]:
    """The DRAM lines first + (p << log2_stride), p < count (a read's plane lines, a flush's block, one line)."""
    return frozenset([(first + (p << log2_stride)) & line_mask for p in range(count)])


@dataclass
class GatheredBlock:
    """The gather buffer: weight-major lines of one block merged into its B plane lines (`planes`), `strobe` the
    union of their WSTRB (every plane line the same), `count` lines gathered; `lines` the DRAM line of each
    plane, fixed when the first line joins."""
    index: int
    block: int
    B: int
    R: int
    lines: list[int]
    planes: np.ndarray
    strobe: int = 0
    count: int = 0
    poisoned: bool = False     # a gathered write had poison = 1 (its record is in; the flush clears nothing)


def gather_idle_boundary(previous_cycle: int, cycle: int) -> bool:
    """Whether the device flushes its gather buffer between RwDs accepted in these two cycles: more than
    WRITE_GATHER_IDLE_CYCLES cycles apart (then WRITE_GATHER_IDLE_CYCLES cycles passed with none accepted)."""
    return cycle - previous_cycle > WRITE_GATHER_IDLE_CYCLES


@dataclass(frozen=True)
class RegionConfig:
    """Decoded REGION_CONFIG word (docs/DEVICE.md section 6)."""
    enable: bool
    fmt: int
    B: int
    R: int
    default_k: int
    rounding: int
    legal: bool


@dataclass(slots=True, unsafe_hash=True)    # see Response
class ReadTarget:
    """A read's address decoded (DeviceModel.read_target): its view, region, line L in the region, the block
    whose poison it reports (s*R + r for a raw line), line j in the block, the effective k (0 for raw and
    reserved views) and whether it is served (mapped) or answered as unmapped."""
    view: int
    index: int
    config: RegionConfig
    L: int
    block: int
    j: int
    k: int
    mapped: bool


@functools.lru_cache(maxsize=4096)
def decode_region_config(params: ControllerParams, word: int) -> RegionConfig:
    fields = unpack_region_config(word)
    fmt = fields["format"]
    B = 2 << fields["log2_b_minus_1"]
    log2_r = fields["log2_r"]
    default_k = fields["default_k"]
    rounding = fields["rounding"]
    legal = not ((fmt == Format.BF16 and B != 16) or B > params.b_max or rounding > max(Rounding)
                 or (1 << log2_r) > MAX_PLANE_RUN)
    return RegionConfig(enable=bool(fields["enable"]) and legal, fmt=fmt, B=B, R=1 << log2_r, default_k=default_k,
                        rounding=rounding, legal=legal)


# --- helpers for the testbench and the demo ----------------------------------------------------------------
def region_csr_writes(params: ControllerParams, index: int, base_line: int, n_superblocks: int,
                      fmt: Format | int, B: int, R: int, default_k: int, rounding: Rounding | int,
                      enable: bool = True) -> list[tuple[int, int]]:
    """CSR (address, value) writes that program region `index`; CONFIG last, so the region is whole when enabled."""
    if not 0 <= index < params.n_regions:
        raise SmartquantError(f"region index must be 0..{params.n_regions - 1}, got {index}")
    for name, value in (("base_line", base_line), ("n_superblocks", n_superblocks)):
        if not 0 <= value <= MASK32:
            raise SmartquantError(f"{name} must fit a 32-bit register, got {value}")
    try:
        word = region_config_word(enable=enable, fmt=fmt, B=B, R=R, default_k=default_k, rounding=rounding)
    except ValueError as error:
        raise SmartquantError(str(error)) from None
    base = CSR_REGION_BASE + CSR_REGION_STRIDE * index
    return [(base + REGION_REG_BASE, base_line), (base + REGION_REG_SUPERBLOCKS, n_superblocks),
            (base + REGION_REG_CONFIG, word)]


def superblocks_for(n_weights: int, B: int, R: int, W: int = layout.DEFAULT_W) -> int:
    """Superblocks a tensor of n_weights needs (as layout.to_blocks pads it: at least one block)."""
    layout.check_b(B)
    layout.check_r(R)
    layout.check_w(W)
    if n_weights < 0:
        raise SmartquantError(f"n_weights must be >= 0, got {n_weights}")
    n_blocks = max(1, -(-n_weights // W))
    return -(-n_blocks // R)


def message_address(params: ControllerParams, view: View | int, line: int, k: int = 0) -> int:
    """CXL message address field (HPA >> log2(line bytes)) of DRAM line `line` in a view at precision k."""
    try:
        return hpa(params, view, line * params.line_bytes, k) >> params.line_offset_bits
    except ValueError as error:
        raise SmartquantError(str(error)) from None


def _popcount(value: int) -> int:
    return value.bit_count() if hasattr(value, "bit_count") else bin(value).count("1")


class DeviceModel:
    """The controller as a sequential model: CSRs, region table, poison list, block buffer, counters, DRAM."""

    def __init__(self, params: ControllerParams, memory_bytes: int | None = None):
        self.params = params
        capacity = 1 << params.dram_addr_bits
        memory_bytes = capacity if memory_bytes is None else memory_bytes
        if not 0 < memory_bytes <= capacity or memory_bytes % params.line_bytes:
            raise SmartquantError(f"memory_bytes must be a multiple of {params.line_bytes} in 1..2**"
                                  f"{params.dram_addr_bits}, got {memory_bytes}")
        # np.zeros maps untouched pages lazily, so the full default capacity costs only what is used
        try:
            self.memory = np.zeros((memory_bytes // params.line_bytes, params.line_bytes), dtype=np.uint8)
        except MemoryError:
            raise SmartquantError(f"cannot allocate {memory_bytes} bytes of model DRAM: pass a smaller "
                                  f"memory_bytes") from None
        self.line_bits = params.dram_addr_bits - params.line_offset_bits   # DRAM line-address width
        self.region_field_mask = (1 << min(self.line_bits, 32)) - 1
        self.region_base = [0] * params.n_regions
        self.region_superblocks = [0] * params.n_regions
        self.region_config = [0] * params.n_regions
        # decoded region table, rebuilt after a region register changes (csr_write is the only writer): the
        # active windows in index order, and read_target's answer per address (asked by the checker, the
        # coverage and _read for every request)
        self._windows: list[tuple[int, int, int, RegionConfig]] | None = None
        self._targets: dict[int, ReadTarget | None] = {}
        self._target_poison_lines: dict[int, tuple[ReadTarget, frozenset[int]]] = {}   # read_poison_lines' memo
        self._address_limit = 1 << params.message_address_bits
        self._all_bytes = (1 << params.line_bytes) - 1          # WSTRB of a whole line
        self._all_ones = (1 << params.data_width) - 1           # the data of a decode error
        self._enables: dict[int, np.ndarray] = {}               # _byte_enables' memo
        self.nxm_as_poison = False     # CONTROL[0]: decode errors carry poison
        self.mem_data_nxm = False      # CONTROL[3]: decode errors answer MemData-NXM (else MemData)
        self.hole_poison = False       # CONTROL[4]: holes carry poison
        self.line_mask = (1 << self.line_bits) - 1
        self.poison_list: list[PoisonRecord | None] = [None] * params.poison_entries
        self._listed_lines: frozenset[int] | None = None     # poisoned_lines() until the list changes
        self.poison_overflow = False
        self.poison_line = 0                                # POISON_LINE, the operand of POISON_COMMAND
        self.poison_list_index = 0                          # POISON_LIST_INDEX
        self.poisons_lost = 0                               # records the full list could not take
        self.poison_events: collections.Counter = collections.Counter()   # by kind, for coverage
        # sum(poison_events.values()) and sum(gather_flushes.values()), kept as ints: the scoreboard tests them
        # every cycle and around every write for a change (counts only grow)
        self.poison_event_count = 0
        # lines every insert or clear touched since the last clear-all, and whether a backend write error made
        # a record since then (poison_order_uncertain)
        self.poison_touched: set[int] = set()
        self.error_poison_offered = False
        # (key, assembled lines, backend error while fetching them) per slot
        self.slots: list[tuple | None] = [None] * params.buffer_slots
        self.victim = 0
        self.counts = [0] * N_COUNTERS
        self.axi_bursts: list[ReadBurst | WriteBurst] = []
        self.read_error_lines: set[int] = set()    # DRAM lines whose R beats answer SLVERR (reading 13)
        self.write_error_lines: set[int] = set()   # DRAM lines whose write bursts answer SLVERR on B
        self.gather: GatheredBlock | None = None   # weight-major lines of one block not yet written out
        self.gather_flushes: collections.Counter = collections.Counter()   # flushes by cause (flush_writes)
        self.gather_flush_count = 0                # sum(gather_flushes.values()), as poison_event_count

    # --- backend traffic --------------------------------------------------------------------------------
    @property
    def axi_reads(self) -> list[ReadBurst]:
        return [b for b in self.axi_bursts if isinstance(b, ReadBurst)]

    @property
    def axi_writes(self) -> list[WriteBurst]:
        return [b for b in self.axi_bursts if isinstance(b, WriteBurst)]

    def backend_lines(self) -> np.ndarray:
        """DRAM line addresses of every beat, reads and writes, in issue order (for golden/dram.py)."""
        runs = [np.arange(b.line, b.line + b.beats, dtype=np.int64) for b in self.axi_bursts]
        return np.concatenate(runs) if runs else np.zeros(0, dtype=np.int64)

    def clear_trace(self) -> None:
        self.axi_bursts.clear()

    def _check_lines(self, first: int, beats: int) -> None:
        if first + beats > self.memory.shape[0]:
            raise SmartquantError(f"DRAM line {first + beats - 1:#x} is outside the model memory of "
                                  f"{self.memory.size} bytes (pass a larger memory_bytes)")

    def inject_read_error(self, line: int) -> None:
        """Every later R beat of DRAM line `line` answers RRESP = SLVERR (until clear_backend_errors)."""
        self._check_lines(line, 1)
        self.read_error_lines.add(int(line))

    def inject_write_error(self, line: int) -> None:
        """Every later write burst covering DRAM line `line` answers BRESP = SLVERR (until clear_backend_errors)."""
        self._check_lines(line, 1)
        self.write_error_lines.add(int(line))

    def clear_backend_errors(self) -> None:
        self.read_error_lines.clear()
        self.write_error_lines.clear()

    def _axi_read(self, first: int, beats: int) -> tuple[np.ndarray, bool]:
        """One INCR burst: (lines, any beat answered with an error RRESP)."""
        error = self._record_read(first, beats)
        return self.memory[first:first + beats].copy(), error

    def _record_read(self, first: int, beats: int) -> bool:
        """_axi_read without the data: the burst traced and counted; whether a beat answered an error RRESP."""
        self._check_lines(first, beats)
        self.axi_bursts.append(ReadBurst(first, beats))
        self._count(Counter.READ_BURSTS)
        self._count(Counter.DRAM_LINES_READ, beats)
        return self._count_failed_lines(self.read_error_lines, range(first, first + beats))

    def _record_line_reads(self, lines: list[int]) -> bool:
        """_record_read(line, 1) for each of `lines` in order (the planes of a block with R > 1: one single-line
        burst each), traced and counted at once; whether a beat answered an error RRESP."""
        self._check_lines(max(lines), 1)
        self.axi_bursts.extend([ReadBurst(line, 1) for line in lines])
        self._count(Counter.READ_BURSTS, len(lines))
        self._count(Counter.DRAM_LINES_READ, len(lines))
        return self._count_failed_lines(self.read_error_lines, lines)

    def _count_failed_lines(self, error_lines: set, lines) -> bool:
        """axi_errors counted once per line of `lines` in `error_lines` (one RRESP per read beat, one BRESP per
        single-line write burst); whether any failed."""
        errors = sum(line in error_lines for line in lines) if error_lines else 0
        if errors:
            self._count(Counter.AXI_ERRORS, errors)
        return errors > 0

    def _axi_write(self, first: int, lines: np.ndarray, strobes: list[int]) -> bool:
        """One INCR burst: lines (beats, line_bytes), byte i of beat n written where bit i of strobes[n] is set.

        Returns whether its B response is an error (the data is written either way, reading 13)."""
        error = self._record_write(first, lines, strobes)
        beats = len(strobes)
        all_bytes = self._all_bytes
        if strobes.count(all_bytes) == beats:    # the common burst of whole lines: one copy
            self.memory[first:first + beats] = lines[:beats]
        else:
            for beat, strobe in enumerate(strobes):
                if strobe == all_bytes:      # a whole-line beat, without building a byte mask
                    self.memory[first + beat] = lines[beat]
                elif strobe:
                    enabled = self._byte_enables(strobe)
                    self.memory[first + beat, enabled] = lines[beat, enabled]
        return error

    def _record_write(self, first: int, lines: np.ndarray, strobes: list[int]) -> bool:
        """_axi_write without the store into memory: the burst traced and counted; whether B answers an error."""
        beats = len(strobes)
        self._check_lines(first, beats)
        self.axi_bursts.append(WriteBurst(first, beats, tuple(strobes),
                                          np.ascontiguousarray(lines[:beats], dtype=np.uint8).tobytes()))
        self._count(Counter.WRITE_BURSTS)
        self._count(Counter.DRAM_LINES_WRITTEN, beats)
        self._count(Counter.BYTES_STROBED, sum(_popcount(strobe) for strobe in strobes))
        error = bool(self.write_error_lines) and any(line in self.write_error_lines
                                                     for line in range(first, first + beats))
        if error:
            self._count(Counter.AXI_ERRORS)
        return error

    def _record_line_writes(self, lines: list[int], planes: np.ndarray, strobe: int) -> bool:
        """_record_write(lines[i], planes[i:i + 1], [strobe]) for each i in order (the planes of a block with
        R > 1: one single-line burst each), traced and counted at once; whether any B answers an error."""
        self._check_lines(max(lines), 1)
        data = np.ascontiguousarray(planes, dtype=np.uint8)
        line_bytes = data.shape[1]
        flat = data.tobytes()
        strobes = (strobe,)
        self.axi_bursts.extend([WriteBurst(line, 1, strobes, flat[i * line_bytes:(i + 1) * line_bytes])
                                for i, line in enumerate(lines)])
        self._count(Counter.WRITE_BURSTS, len(lines))
        self._count(Counter.DRAM_LINES_WRITTEN, len(lines))
        self._count(Counter.BYTES_STROBED, len(lines) * _popcount(strobe))
        return self._count_failed_lines(self.write_error_lines, lines)

    def _byte_enables(self, strobe: int) -> np.ndarray:
        """WSTRB as a read-only boolean array over the line's bytes, built once per pattern (weight-major
        writes repeat a few)."""
        enabled = self._enables.get(strobe)
        if enabled is None:
            if len(self._enables) >= 1 << 12:
                self._enables.clear()
            enabled = np.unpackbits(np.frombuffer(strobe.to_bytes(self.params.line_bytes // 8, "little"), np.uint8),
                                    bitorder="little").astype(bool)
            enabled.setflags(write=False)
            self._enables[strobe] = enabled
        return enabled

    # --- backdoor ---------------------------------------------------------------------------------------
    def load_raw(self, base_line: int, raw_lines) -> None:
        """Write raw lines (n, line_bytes) straight into model memory, like a backdoor load of the testbench memory."""
        raw = np.asarray(raw_lines, dtype=np.uint8)
        if raw.ndim != 2 or raw.shape[1] != self.params.line_bytes:
            raise SmartquantError(f"raw lines must have shape (n, {self.params.line_bytes}), got {raw.shape}")
        if base_line < 0:
            raise SmartquantError(f"base_line must be >= 0, got {base_line}")
        self._check_lines(base_line, raw.shape[0])
        self.memory[base_line:base_line + raw.shape[0]] = raw

    # --- counters ---------------------------------------------------------------------------------------
    def _count(self, counter: int, amount: int = 1) -> None:
        self.counts[counter] = (self.counts[counter] + amount) & MASK32

    def counter(self, counter: Counter | int) -> int:
        if int(counter) not in PREDICTED_COUNTERS:
            raise SmartquantError(f"counter {counter_name(int(counter))} is not predicted by the golden model")
        return self.counts[int(counter)]

    @property
    def counters(self) -> dict[str, int]:
        """Every predicted counter by name (params.counter_name), as the CSRs would read them."""
        return {counter_name(n): self.counts[n] for n in PREDICTED_COUNTERS}

    def timing_counter_violations(self, busy_cycles: int, stall_cycles: int, elapsed_cycles: int) -> list[str]:
        """Bounds of the two timing counters (DEVICE.md section 6), counted since the same clear with nothing in
        flight at the clear: every DRS / NDR handshake and every R / W beat takes a cycle of its own channel while
        something is in flight, so busy >= each of those counts; busy <= elapsed; 0 <= stall <= busy.
        Returns the violated bounds in words (empty when all hold)."""
        c = self.counts
        lower = max(c[Counter.DRS_SENT], c[Counter.NDR_SENT], c[Counter.DRAM_LINES_READ],
                    c[Counter.DRAM_LINES_WRITTEN])
        problems = []
        if not lower <= busy_cycles <= elapsed_cycles:
            problems.append(f"busy_cycles {busy_cycles} outside [{lower}, {elapsed_cycles}]")
        if not 0 <= stall_cycles <= busy_cycles:
            problems.append(f"stall_cycles {stall_cycles} outside [0, busy_cycles = {busy_cycles}]")
        return problems

    # --- CSRs -------------------------------------------------------------------------------------------
    def _check_csr(self, addr: int) -> int:
        if not 0 <= addr < (1 << self.params.csr_addr_bits):
            raise SmartquantError(f"CSR address {addr:#x} outside the {self.params.csr_addr_bits}-bit CSR space")
        return addr & ~0b11

    def _region_reg(self, addr: int) -> tuple[int, int] | None:
        offset = addr - CSR_REGION_BASE
        if offset < 0:
            return None
        index, reg = divmod(offset, CSR_REGION_STRIDE)
        if index >= self.params.n_regions or reg > REGION_REG_CONFIG:
            return None
        return index, reg

    def params_word(self) -> int:
        p = self.params
        return ((p.line_bytes & 0xFF) | ((p.b_max & 0x1F) << 8) | ((p.n_regions & 0x1F) << 13)
                | ((p.buffer_slots & 0xF) << 18) | ((p.dram_addr_bits & 0x3F) << 22))

    def csr_read(self, addr: int) -> int:
        addr = self._check_csr(addr)
        if addr == CSR_ID:
            return ID_VALUE
        if addr == CSR_VERSION:
            return VERSION_VALUE
        if addr == CSR_PARAMS:
            return self.params_word()
        if addr == CSR_CONTROL:
            return (CONTROL_NXM_AS_POISON * self.nxm_as_poison | CONTROL_MEM_DATA_NXM * self.mem_data_nxm
                    | CONTROL_HOLE_POISON * self.hole_poison)
        if addr == CSR_STATUS:
            return int(self.poison_overflow)
        if addr == CSR_POISON_LINE:
            return self.poison_line
        if addr == CSR_POISON_LIST_INDEX:
            return self.poison_list_index
        if addr in (CSR_POISON_LIST_LINE, CSR_POISON_LIST_ENTRY):
            record = (self.poison_list[self.poison_list_index]
                      if self.poison_list_index < len(self.poison_list) else None)
            if record is None:
                return 0
            if addr == CSR_POISON_LIST_LINE:
                return record.first
            return record.mask | record.log2_stride << 16 | POISON_ENTRY_VALID
        if addr == CSR_POISON_COUNT:
            return sum(record is not None for record in self.poison_list)
        region = self._region_reg(addr)
        if region is not None:
            index, reg = region
            if reg == REGION_REG_BASE:
                return self.region_base[index]
            if reg == REGION_REG_SUPERBLOCKS:
                return self.region_superblocks[index]
            return self.region_config[index]
        if CSR_COUNTER_BASE <= addr < CSR_COUNTER_BASE + 4 * N_COUNTERS:
            n = (addr - CSR_COUNTER_BASE) // 4
            if n in TIMING_COUNTERS:
                raise SmartquantError(f"{counter_name(n)} depends on timing: the golden model does not predict it")
            return self.counts[n]
        return 0

    def csr_write(self, addr: int, value: int, strobe: int = 0xF) -> None:
        """AXI4-Lite write; `strobe` (WSTRB) selects the bytes of RW registers, CONTROL acts only with byte 0."""
        addr = self._check_csr(addr)
        if not 0 <= value <= MASK32 or not 0 <= strobe <= 0xF:
            raise SmartquantError(f"CSR value must fit 32 bits and strobe 4 bits, got {value:#x}, {strobe:#x}")
        byte_mask = sum(0xFF << (8 * i) for i in range(4) if strobe >> i & 1)

        def merged(old: int) -> int:
            return (old & ~byte_mask) | (value & byte_mask)

        if addr == CSR_CONTROL:
            if not strobe & 1:
                return
            self.nxm_as_poison = bool(value & CONTROL_NXM_AS_POISON)
            self.mem_data_nxm = bool(value & CONTROL_MEM_DATA_NXM)
            self.hole_poison = bool(value & CONTROL_HOLE_POISON)
            if value & CONTROL_CLEAR_COUNTERS:
                self.counts = [0] * N_COUNTERS
            if value & CONTROL_CLEAR_POISON:
                self._clear_poison()
            return
        if addr == CSR_POISON_LINE:
            self.poison_line = merged(self.poison_line) & self.region_field_mask
            return
        if addr == CSR_POISON_LIST_INDEX:
            self.poison_list_index = merged(self.poison_list_index) & (poison_index_limit(self.params) - 1)
            return
        if addr == CSR_POISON_COMMAND:
            if strobe & 1 and value & 0xFF == POISON_COMMAND_INJECT:
                self._poison_insert(PoisonRecord(self.poison_line, 0, 1), "inject")
            elif strobe & 1 and value & 0xFF == POISON_COMMAND_CLEAR:
                self._poison_clear(line_set(self.poison_line, 0, 1, self.line_mask), "clear line")
            return
        region = self._region_reg(addr)
        if region is None:
            return                       # read-only or unused address
        index, reg = region
        if reg == REGION_REG_BASE:
            self.region_base[index] = merged(self.region_base[index]) & self.region_field_mask
        elif reg == REGION_REG_SUPERBLOCKS:
            self.region_superblocks[index] = merged(self.region_superblocks[index]) & self.region_field_mask
        else:
            word = merged(self.region_config[index]) & CONFIG_BITS
            # the stored enable bit is already cleared for illegal fields (what a later partial write merges with)
            self.region_config[index] = word & ~1 | int(decode_region_config(self.params, word).enable)
        self._windows = None
        self._targets.clear()
        self._target_poison_lines.clear()
        self.slots = [None] * self.params.buffer_slots
        self.flush_writes("csr")         # gathered lines go where they were decoded, after the rewrite acts

    def _poison_event(self, kind: str) -> None:
        self.poison_events[kind] += 1
        self.poison_event_count += 1

    def _clear_poison(self) -> None:
        if any(self.poison_list) or self.poison_overflow:
            self._poison_event("clear all")
        self.poison_list = [None] * self.params.poison_entries
        self._listed_lines = None
        self.poison_overflow = False
        self.poison_touched.clear()
        self.error_poison_offered = False

    def poison_order_uncertain(self) -> bool:
        """Whether the list's contents depend on timing (DEVICE.md §4): a backend write error made a record
        since the last clear-all. The model applies it where the write was accepted (or flushed), the RTL at the
        write's B response, so another insert or clear in between (or an overflow) can end differently;
        `poison_touched` holds every line an insert or clear touched since the last clear-all."""
        return self.error_poison_offered

    def poisoned_lines(self, records: Iterable[PoisonRecord | None] | None = None) -> frozenset[int]:
        """Every DRAM line the list holds (or `records`, an earlier copy of the list: records are replaced,
        never changed in place, so a copy of the list keeps its contents). The current list's lines are kept
        until it changes: every mapped read asks for them."""
        if records is None:
            if self._listed_lines is None:
                self._listed_lines = self.poisoned_lines(self.poison_list)
            return self._listed_lines
        return frozenset(line for record in records if record is not None for line in record.lines(self.line_mask))

    def read_poison_lines(self, target: ReadTarget) -> frozenset[int]:
        """The DRAM lines whose poison a mapped read reports: its raw line, or the k plane lines it fetches
        (asked by the checker and again by the model for every mapped read: kept per target until the region
        table changes)."""
        entry = self._target_poison_lines.get(id(target))
        if entry is None or entry[0] is not target:
            if len(self._target_poison_lines) >= 1 << 16:
                self._target_poison_lines.clear()
            entry = self._target_poison_lines[id(target)] = (target, self._read_poison_lines(target))
        return entry[1]

    def _read_poison_lines(self, target: ReadTarget) -> frozenset[int]:
        config = target.config
        if target.view == View.RAW:
            return line_set(self._dram_line(target.index, target.L), 0, 1, self.line_mask)
        superblock, run_slot = divmod(target.block, config.R)
        first = self._dram_line(target.index, layout.raw_line_index(superblock, 0, run_slot, config.B, config.R))
        return line_set(first, config.R.bit_length() - 1, target.k, self.line_mask)

    def _poison_insert(self, record: PoisonRecord, kind: str) -> None:
        """Enter a record (DEVICE.md §4): merged into a record of the same first line and stride, else into the
        lowest free one; a full list does not take it (sticky overflow; only listed lines stay poisoned)."""
        record = PoisonRecord(record.first & self.line_mask, record.log2_stride, record.mask)
        self._poison_event(kind)
        self.poison_touched.update(record.lines(self.line_mask))
        for i, held in enumerate(self.poison_list):
            if held is not None and (held.first, held.log2_stride) == (record.first, record.log2_stride):
                self.poison_list[i] = PoisonRecord(held.first, held.log2_stride, held.mask | record.mask)
                self._listed_lines = None
                self._poison_event("merge")
                return
        for i, held in enumerate(self.poison_list):
            if held is None:
                self.poison_list[i] = record
                self._listed_lines = None
                if all(self.poison_list):
                    self._poison_event("list full")
                return
        self.poison_overflow = True
        self.poisons_lost += 1
        self._poison_event("overflow")

    def _poison_clear(self, lines: frozenset[int], cause: str) -> None:
        """Drop `lines` from every record; a record left empty is free."""
        self.poison_touched.update(lines)
        cleared = False
        for i, held in enumerate(self.poison_list):
            if held is None:
                continue
            mask = held.mask
            for q in range(POISON_MASK_BITS):
                if mask >> q & 1 and (held.first + (q << held.log2_stride)) & self.line_mask in lines:
                    mask &= ~(1 << q)
            if mask != held.mask:
                cleared = True
                self.poison_list[i] = PoisonRecord(held.first, held.log2_stride, mask) if mask else None
                self._listed_lines = None
        if cleared:
            self._poison_event(cause)

    # --- address decode ---------------------------------------------------------------------------------
    def region_active(self, index: int) -> bool:
        """Enabled with legal fields and a base on a B-line boundary: an R = 1 block is one burst of up to B
        lines, which must not cross a 4 KiB boundary (DEVICE.md §2); CONFIG still reads back as written."""
        config = decode_region_config(self.params, self.region_config[index])
        return config.enable and self.region_base[index] % config.B == 0

    def _active_windows(self) -> list[tuple[int, int, int, RegionConfig]]:
        """(base, end, index, config) of every active region, lowest index first (cached until a region
        register is written)."""
        if self._windows is None:
            self._windows = []
            for index in range(self.params.n_regions):
                if self.region_active(index):
                    config = decode_region_config(self.params, self.region_config[index])
                    base = self.region_base[index]
                    self._windows.append((base, base + self.region_superblocks[index] * config.R * config.B, index,
                                          config))
        return self._windows

    def _match_region(self, line: int) -> tuple[int, RegionConfig, int] | None:
        """(region index, config, L) of the lowest-numbered enabled region whose window holds `line`."""
        for base, end, index, config in self._windows if self._windows is not None else self._active_windows():
            if base <= line < end:
                return index, config, line - base
        return None

    def _decode(self, address: int) -> tuple[int, int, tuple[int, RegionConfig, int] | None]:
        """(view, k field, region match or None) of a message address; None when unmapped by high bits."""
        view, k_field, offset, high = split_hpa(self.params, address << self.params.line_offset_bits)
        match = None if high else self._match_region(offset >> self.params.line_offset_bits)
        return view, k_field, match

    def _dram_line(self, index: int, raw_index: int) -> int:
        return (self.region_base[index] + raw_index) & ((1 << self.line_bits) - 1)

    def _plane_lines(self, index: int, block: int, B: int, R: int, count: int) -> list[int]:
        """The DRAM lines of planes 0..count-1 of a block: _dram_line of layout.raw_line_index for each plane, i.e.
        R lines apart from plane 0's (one sum per plane instead of two calls)."""
        superblock, run_slot = divmod(block, R)
        first = self.region_base[index] + layout.raw_line_index(superblock, 0, run_slot, B, R)
        line_mask = self.line_mask
        return [(first + plane * R) & line_mask for plane in range(count)]

    # --- message field checks ---------------------------------------------------------------------------
    def _check_fields(self, **fields: tuple[int, int]) -> None:
        for name, (value, width) in fields.items():
            if not 0 <= int(value) < (1 << width):
                raise SmartquantError(f"message field {name}={value} does not fit in {width} bits")

    def _ndr(self, tag: int, ld_id: int, opcode: NdrOpcode = NdrOpcode.CMP) -> list[Response]:
        self._count(Counter.NDR_SENT)
        return [Response("ndr", opcode, tag, ld_id)]

    def _drs(self, tag: int, ld_id: int, line: np.ndarray | None, poison: bool) -> list[Response]:
        self._count(Counter.DRS_SENT)
        data = 0 if line is None else int.from_bytes(line.tobytes(), "little")
        return [Response("drs", DrsOpcode.MEM_DATA, tag, ld_id, poison=int(poison), data=data)]

    def _nxm_read(self, tag: int, ld_id: int) -> list[Response]:
        """A decode error (no region holds the line, or bits above the map): all-1s data, MemData-NXM when the
        host accepts it, poison when enabled (DEVICE.md §3)."""
        self._count(Counter.NXM_READS)
        self._count(Counter.DRS_SENT)
        opcode = DrsOpcode.MEM_DATA_NXM if self.mem_data_nxm else DrsOpcode.MEM_DATA
        return [Response("drs", opcode, tag, ld_id, poison=int(self.nxm_as_poison), data=self._all_ones)]

    def _hole_read(self, tag: int, ld_id: int) -> list[Response]:
        """A hole inside a region (packed j >= k, illegal k, views 6 and 7): MemData, the hole fill 0."""
        self._count(Counter.HOLE_READS)
        self._count(Counter.DRS_SENT)
        return [Response("drs", DrsOpcode.MEM_DATA, tag, ld_id, poison=int(self.hole_poison), data=HOLE_FILL)]

    # --- M2S Req ----------------------------------------------------------------------------------------
    def req(self, opcode: int, address: int, tag: int, ld_id: int = 0, meta_field: int = 0, meta_value: int = 0,
            snp_type: int = 0) -> list[Response]:
        """Apply one M2S Req; returns the S2M messages it produces (none for MemSpecRd)."""
        if not (0 <= opcode < 16 and 0 <= address < self._address_limit and 0 <= tag < 1 << 16 and 0 <= ld_id < 16
                and 0 <= meta_field < 4 and 0 <= meta_value < 4 and 0 <= snp_type < 8):
            # the same bounds field by field, for the message (the one-expression test above is the fast path)
            self._check_fields(opcode=(opcode, 4), address=(address, self.params.message_address_bits), tag=(tag, 16),
                               ld_id=(ld_id, 4), meta_field=(meta_field, 2), meta_value=(meta_value, 2),
                               snp_type=(snp_type, 3))
        self._count(REQ_COUNTERS.get(opcode, Counter.REQ_BAD_OPCODE))
        if opcode in REQ_READS:
            return self._read(address, tag, ld_id)
        if opcode in REQ_NO_RESPONSE:
            return []
        return self._ndr(tag, ld_id)

    def read_target(self, address: int) -> ReadTarget | None:
        """What a read of `address` reaches with the current region table (the one decode of a read, shared by
        the model and the testbench's checker and coverage); None when no region holds the line or bits above
        the map are set. Views 6 and 7, an illegal k and a packed line j >= k are `mapped` = False."""
        try:
            return self._targets[address]
        except KeyError:
            pass
        if len(self._targets) >= 1 << 16:      # a bound on the memo for long runs with one region table
            self._targets.clear()
        target = self._targets[address] = self._read_target(address)
        return target

    def _read_target(self, address: int) -> ReadTarget | None:
        view, k_field, match = self._decode(address)
        if match is None:
            return None
        index, config, L = match
        if view == View.RAW:
            superblock, rest = divmod(L, config.R * config.B)
            return ReadTarget(view, index, config, L, superblock * config.R + rest % config.R, 0, 0, True)
        block, j = divmod(L, config.B)
        if view > View.EXPANDED_DEFAULT:
            return ReadTarget(view, index, config, L, block, j, 0, False)
        k = {View.WEIGHT_MAJOR: config.B, View.PACKED_K: k_field, View.EXPANDED_K: k_field}.get(
            view, config.default_k)
        packed = view in PACKED_VIEWS
        mapped = 1 <= k <= config.B and not (packed and j >= k)
        return ReadTarget(view, index, config, L, block, j, k, mapped)

    def _read(self, address: int, tag: int, ld_id: int) -> list[Response]:
        target = self.read_target(address)
        if target is None:
            return self._nxm_read(tag, ld_id)
        if not target.mapped:
            return self._hole_read(tag, ld_id)
        index, config, block = target.index, target.config, target.block
        if self.gather is not None and (self.gather.index, self.gather.block) == (index, block):
            self.flush_writes("read")    # the read waits for the gathered lines to land (DEVICE.md §4)
        if target.view == View.RAW:
            lines, error = self._axi_read(self._dram_line(index, target.L), 1)
            self._count(Counter.RAW_READS)
            return self._drs(tag, ld_id, lines[0], self._poisoned_read(target, error))
        mode = PACKED if target.view in PACKED_VIEWS else EXPANDED
        lines, error = self._buffered_block(index, config, block, mode, target.k)
        self._count(Counter.READS_AT_K1 + target.k - 1)
        return self._drs(tag, ld_id, lines[target.j], self._poisoned_read(target, error))

    def _poisoned_read(self, target: ReadTarget, backend_error: bool = False) -> bool:
        poisoned = backend_error or (any(self.poison_list)
                                     and not self.poisoned_lines().isdisjoint(self.read_poison_lines(target)))
        if poisoned:
            self._count(Counter.POISON_READS)
        return poisoned

    def _buffered_block(self, index: int, config: RegionConfig, block: int, mode: str,
                        k: int) -> tuple[np.ndarray, bool]:
        """Assembled output lines of a block (packed: k lines, expanded: B lines), from the buffer or DRAM, and
        whether a backend error hit their fetch (the slot stays poisoned until it is refetched)."""
        key = (index, block, mode, k, config.rounding)
        for slot in self.slots:
            if slot is not None and slot[0] == key:
                self._count(Counter.BUFFER_HITS)
                return slot[1], slot[2]
        self._count(Counter.BUFFER_MISSES)
        B, R = config.B, config.R
        if R == 1:   # planes are consecutive lines: one burst
            planes, error = self._axi_read(self._plane_lines(index, block, B, R, 1)[0], k)
        else:        # planes are R lines apart: one single-line burst per plane, their data in one copy
            plane_lines = self._plane_lines(index, block, B, R, k)
            error = self._record_line_reads(plane_lines)
            planes = self.memory[plane_lines]
        lines = self._assemble(planes, config, mode, k)
        self.slots[self.victim] = (key, lines, error)
        self.victim = (self.victim + 1) % len(self.slots)
        return lines, error

    @staticmethod
    def _assemble(planes: np.ndarray, config: RegionConfig, mode: str, k: int) -> np.ndarray:
        """The output lines of a block from its first k planes: packed-k (k lines) or expanded-k (B lines), what
        layout.packed_lines / layout.expanded_lines of layout.planes_to_blocks give (tests/test_device.py
        compares them for every B, k, mode, fill rule and format), computed on plane bits in three numpy calls
        instead of through the weight values (a fifth of the time, on every buffer miss).

        Plane p holds bit B-1-p of every weight (weight i at bit i). Both views are streams of n-bit fields,
        field bit i = plane n-1-i, field w at stream bits [w*n, w*n+n): packed n = k (the top k bits), expanded
        n = B with planes k..B-1 the fill rule's (FLOOR 0..0, MIDPOINT 10..0, TOWARD_ZERO copies of the sign
        plane 0 for INT and 0..0 for BF16)."""
        bits = np.unpackbits(planes[:k], axis=1, bitorder="little")          # bits[p, w]
        if mode == EXPANDED and k < config.B:
            fill = np.zeros((config.B - k, bits.shape[1]), dtype=np.uint8)
            if config.rounding == Rounding.MIDPOINT:
                fill[0] = 1
            elif config.rounding == Rounding.TOWARD_ZERO and config.fmt != Format.BF16:
                fill[:] = bits[0]
            bits = np.concatenate([bits, fill])
        n = bits.shape[0]
        stream = np.ascontiguousarray(bits[::-1].T).reshape(-1)
        return np.packbits(stream, bitorder="little").reshape(n, planes.shape[1])

    # --- M2S RwD ----------------------------------------------------------------------------------------
    def rwd(self, opcode: int, address: int, tag: int, data: int, byte_enable: int, poison: int, ld_id: int = 0,
            meta_field: int = 0, meta_value: int = 0, snp_type: int = 0) -> list[Response]:
        """Apply one M2S RwD; returns its NDR Cmp, or the DRS of a MemRdFill (its data and poison are ignored)."""
        p = self.params
        if not (0 <= opcode < 16 and 0 <= address < self._address_limit and 0 <= tag < 1 << 16 and 0 <= ld_id < 16
                and 0 <= meta_field < 4 and 0 <= meta_value < 4 and 0 <= snp_type < 8
                and 0 <= data < 1 << p.data_width and 0 <= byte_enable < 1 << p.line_bytes and 0 <= poison < 2):
            # the same bounds field by field, for the message (the one-expression test above is the fast path)
            self._check_fields(opcode=(opcode, 4), address=(address, p.message_address_bits), tag=(tag, 16),
                               ld_id=(ld_id, 4), meta_field=(meta_field, 2), meta_value=(meta_value, 2),
                               snp_type=(snp_type, 3), data=(data, p.data_width),
                               byte_enable=(byte_enable, p.line_bytes), poison=(poison, 1))
        if opcode in RWD_READS:
            self._count(Counter.RWD_MEM_RD_FILL)
            return self._read(address, tag, ld_id)
        full = opcode in RWD_FULL_WRITES
        if not full and opcode not in RWD_PARTIAL_WRITES:
            self._count(Counter.RWD_BAD_OPCODE)
            ack = NdrOpcode.BI_CONFLICT_ACK if opcode == RwdOpcode.BI_CONFLICT else NdrOpcode.CMP
            return self._ndr(tag, ld_id, ack)
        self._count(Counter.RWD_MEM_WR if full else Counter.RWD_MEM_WR_PTL)
        enables = (1 << p.line_bytes) - 1 if full else byte_enable
        target = self.read_target(address)      # the decode a read would make (memoised; the view and line)
        if target is None:
            self._count(Counter.NXM_WRITES)
            return self._ndr(tag, ld_id)
        view = target.view
        if view not in (View.RAW, View.WEIGHT_MAJOR):
            self._count(Counter.WR_DROPPED)
            return self._ndr(tag, ld_id)
        index, config, L = target.index, target.config, target.L
        line = np.frombuffer(int(data).to_bytes(p.line_bytes, "little"), dtype=np.uint8)
        if poison:
            self._count(Counter.POISON_WRITES)
        if view == View.RAW:
            self.flush_writes("evict")     # a raw line stays in order with the gathered block's plane lines
            superblock, rest = divmod(L, config.R * config.B)
            block = superblock * config.R + rest % config.R
            dram_line = self._dram_line(index, L)
            # the write's own poison change comes first (the RTL makes it at acceptance, a failure at B)
            if poison:
                self._poison_insert(PoisonRecord(dram_line, 0, 1), "raw write record")
            elif enables == self._all_bytes:
                self._poison_clear(line_set(dram_line, 0, 1, self.line_mask), "cleared by raw write")
            if self._axi_write(dram_line, line[None], [enables]):
                self._enter_error_poison(PoisonRecord(dram_line, 0, 1))
        else:
            block, j = divmod(L, config.B)
            self._gather_line(index, config, block, j, line, enables)
            if poison:
                self.gather.poisoned = True
                self._poison_insert(PoisonRecord(self.gather.lines[0], config.R.bit_length() - 1,
                                                 (1 << config.B) - 1), "block write record")
        self._invalidate_block(index, block)
        if self.gather is not None and self.gather.count == config.B:
            self.flush_writes("full")
        return self._ndr(tag, ld_id)

    def _invalidate_block(self, index: int, block: int) -> None:
        self.slots = [None if slot is not None and slot[0][:2] == (index, block) else slot for slot in self.slots]

    def _gather_line(self, index: int, config: RegionConfig, block: int, j: int, line: np.ndarray,
                     enables: int) -> None:
        """Weight-major line j of a block -> the bytes [j*S, (j+1)*S) of each of the B plane lines of the gather
        buffer, S = W/8/B (DEVICE.md §4); a line of another block first flushes the gathered one."""
        p, B, R = self.params, config.B, config.R
        if p.data_width % (8 * B):
            raise SmartquantError(f"weight-major writes need W/B >= 8 bits per plane slice (W = {p.data_width}, "
                                  f"B = {B})")
        gather = self.gather
        if gather is not None and (gather.index, gather.block) != (index, block):
            self.flush_writes("evict")
            gather = None
        if gather is None:
            lines = self._plane_lines(index, block, B, R, B)
            gather = self.gather = GatheredBlock(index, block, B, R, lines,
                                                 np.zeros((B, p.line_bytes), dtype=np.uint8))
        slice_bytes = p.line_bytes // B          # one plane byte per aligned B-byte group of the line
        whole_slice = ((1 << slice_bytes) - 1) << (j * slice_bytes)
        if enables == self._all_bytes:           # every group enabled (MemWr), without the loop
            full = whole_slice
        else:
            full = 0
            for group in range(slice_bytes):
                group_enables = (enables >> (group * B)) & ((1 << B) - 1)
                if group_enables == (1 << B) - 1:
                    full |= 1 << (j * slice_bytes + group)
                elif group_enables:
                    self._count(Counter.WR_PARTIAL_GROUPS)   # never half a weight: no read-modify-write
        if full == whole_slice:                  # a plain slice of the planes, without a byte mask
            gather.planes[:, j * slice_bytes:(j + 1) * slice_bytes] = self._line_planes(line, B)
        elif full:
            enabled = self._byte_enables(full)
            gather.planes[:, enabled] = self._line_planes(line, B)[:, enabled[j * slice_bytes:(j + 1) * slice_bytes]]
        gather.strobe |= full
        gather.count += 1

    def flush_writes(self, cause: str = "idle") -> None:
        """Write the gathered block out (DEVICE.md §4): its B plane lines with the union of its lines' WSTRB, one
        burst of B beats when R = 1, else one single-beat burst per plane. `cause` is recorded in
        `gather_flushes` ("full", "evict", "idle", "csr", "read"); the testbench calls it with "idle" where the device's
        idle boundary falls (gather_idle_boundary). Nothing gathered: nothing happens."""
        gather = self.gather
        if gather is None:
            return
        self.gather = None
        self.gather_flushes[cause] += 1
        self.gather_flush_count += 1
        strobes = [gather.strobe] * gather.B
        log2_r = gather.R.bit_length() - 1
        if gather.strobe == self._all_bytes and not gather.poisoned:
            # every plane line of the block written whole with good data
            self._poison_clear(line_set(gather.lines[0], log2_r, gather.B, self.line_mask), "cleared by block write")
        if gather.R == 1:
            error = self._axi_write(gather.lines[0], gather.planes, strobes)
        else:        # one single-line burst per plane (R lines apart), their data stored in one copy
            error = self._record_line_writes(gather.lines, gather.planes, gather.strobe)
            if gather.strobe == self._all_bytes:
                self.memory[gather.lines] = gather.planes
            elif gather.strobe:
                enabled = self._byte_enables(gather.strobe)
                self.memory[np.ix_(gather.lines, enabled)] = gather.planes[:, enabled]
        if error:
            self._enter_error_poison(PoisonRecord(gather.lines[0], log2_r, (1 << gather.B) - 1))
        self._invalidate_block(gather.index, gather.block)

    @staticmethod
    def _line_planes(line: np.ndarray, B: int) -> np.ndarray:
        """(B, W/8/B) planes of a weight-major line: layout.block_planes of layout.unpack_fields (tests/
        test_device.py compares them for every B), on the line's bits: the line is a stream of B-bit fields,
        field w's bit i at stream bit w*B + i, and plane p holds bit B-1-p of every field, field w at bit w."""
        bits = np.unpackbits(line, bitorder="little").reshape(-1, B)        # bits[w, i]
        return np.packbits(np.ascontiguousarray(bits[:, ::-1].T), axis=1, bitorder="little")

    def _enter_error_poison(self, record: PoisonRecord) -> None:
        """A write burst failed (BRESP): the stored data of its lines is unknown, later reads return poison."""
        self.error_poison_offered = True
        self._poison_insert(record, "write error record")

    # --- convenience ------------------------------------------------------------------------------------
    def program(self, writes: Iterable[tuple[int, int]]) -> None:
        """Apply a list of CSR (address, value) writes, e.g. from region_csr_writes."""
        for addr, value in writes:
            self.csr_write(addr, value)

    def address(self, view: View | int, line: int, k: int = 0) -> int:
        """Message address field of a DRAM line in a view (see message_address)."""
        return message_address(self.params, view, line, k)


__all__ = ["DeviceModel", "Response", "ReadBurst", "WriteBurst", "RegionConfig", "decode_region_config",
           "GatheredBlock", "gather_idle_boundary", "PoisonRecord", "line_set",
           "region_csr_writes", "superblocks_for", "message_address", "PREDICTED_COUNTERS"]
