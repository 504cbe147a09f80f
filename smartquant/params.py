"""Controller parameters and the host address map, shared by the RTL, the golden model and the testbench.

Every rule here is specified in docs/DEVICE.md; this module is the one place the numbers live.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict
import enum
import functools


class View(enum.IntEnum):
    """Host-visible view, carried in HPA bits [dram_addr_bits+2 : dram_addr_bits]."""
    RAW = 0               # plane lines as stored
    WEIGHT_MAJOR = 1      # write: B-bit weights, transposed into planes; read: expanded at k = B
    PACKED_K = 2          # k from the address: block = k lines of packed k-bit fields
    EXPANDED_K = 3        # k from the address: B-bit weights, dropped bits filled by the region's rounding rule
    PACKED_DEFAULT = 4    # packed at the region's current default k
    EXPANDED_DEFAULT = 5  # expanded at the region's current default k
    # 6, 7 reserved: reads answer as unmapped, writes are dropped (and completed)


class Format(enum.IntEnum):
    INT = 0    # two's complement, B in {2, 4, 8, 16}
    BF16 = 1   # B = 16; plane order sign, exponent 8..1, mantissa 7..1


class Rounding(enum.IntEnum):
    FLOOR = 0     # dropped low bits read as 0 (two's complement truncation = floor)
    MIDPOINT = 1  # dropped low bits read as 100..0 (middle of the dropped interval)
    TOWARD_ZERO = 2  # INT: dropped low bits are copies of the sign bit (plane 0); BF16: 0..0 (= FLOOR)


# CXL.mem opcodes (CXL 3.1, message level; docs/DEVICE.md §4 gives the response of each)
class ReqOpcode(enum.IntEnum):
    MEM_INV = 0b0000
    MEM_RD = 0b0001
    MEM_RD_DATA = 0b0010
    MEM_RD_FWD = 0b0011        # HDM-D (Type 2) forwarding flow: no completion to the host
    MEM_WR_FWD = 0b0100        # HDM-D (Type 2) forwarding flow: no completion to the host
    MEM_RD_TEE = 0b0101        # MemRd with TEE intent (TSP)
    MEM_RD_DATA_TEE = 0b0110   # MemRdData with TEE intent
    MEM_SPEC_RD = 0b1000
    MEM_INV_NT = 0b1001
    MEM_CLN_EVCT = 0b1010
    MEM_SPEC_RD_TEE = 0b1100   # MemSpecRd with TEE intent: no response either
    TE_UPDATE = 0b1101         # TSP TE-state update


class RwdOpcode(enum.IntEnum):
    MEM_WR = 0b0001
    MEM_WR_PTL = 0b0010
    BI_CONFLICT = 0b0100       # HDM-DB back-invalidate conflict (never expected by an HDM-H device)
    MEM_RD_FILL = 0b0101       # a read carried on RwD (TSP partial-write flows): answered like MemRd
    MEM_WR_TEE = 0b1001
    MEM_WR_PTL_TEE = 0b1010
    MEM_RD_FILL_TEE = 0b1101


class NdrOpcode(enum.IntEnum):
    CMP = 0b000
    CMP_S = 0b001
    CMP_E = 0b010
    CMP_M = 0b011
    BI_CONFLICT_ACK = 0b100    # the answer to an RwD BIConflict (S2M NDR opcode table, DEVICE.md §4)


class DrsOpcode(enum.IntEnum):
    MEM_DATA = 0b000
    MEM_DATA_NXM = 0b001
    MEM_DATA_TEE = 0b010


# How the device answers each Req opcode (DEVICE.md §4). The device implements no TSP (TE state 0, no access
# control), so the TEE-intent variants are served like their plain opcodes and answered with non-TEE opcodes.
REQ_READS = frozenset({ReqOpcode.MEM_RD, ReqOpcode.MEM_RD_DATA, ReqOpcode.MEM_RD_TEE, ReqOpcode.MEM_RD_DATA_TEE})
REQ_NO_RESPONSE = frozenset({ReqOpcode.MEM_SPEC_RD, ReqOpcode.MEM_SPEC_RD_TEE, ReqOpcode.MEM_RD_FWD,
                             ReqOpcode.MEM_WR_FWD})
# RwD opcodes that write (the TEE-intent variants write like the plain ones)
RWD_FULL_WRITES = frozenset({RwdOpcode.MEM_WR, RwdOpcode.MEM_WR_TEE})
RWD_PARTIAL_WRITES = frozenset({RwdOpcode.MEM_WR_PTL, RwdOpcode.MEM_WR_PTL_TEE})
# RwD opcodes that read (MemRdFill "is equivalent to MemRd": a DRS, the RwD data is ignored)
RWD_READS = frozenset({RwdOpcode.MEM_RD_FILL, RwdOpcode.MEM_RD_FILL_TEE})

META_FIELD_NO_OP = 0b11  # responses carry MetaField = No-Op: an HDM-H device keeps no host metadata

SUPPORTED_B = (2, 4, 8, 16)
HPA_BITS = 52            # CXL host physical address width: HPA[51:0]
MAX_PLANE_RUN = 64
# Weight-major writes are gathered per block (DEVICE.md §4): the gather buffer is flushed wherever this many
# cycles pass with no RwD accepted, so a host that waits for Cmps still gets them in bounded time.
WRITE_GATHER_IDLE_CYCLES = 16
HOST_PORTS = ("cxl", "axi")


@dataclass(frozen=True)
class ControllerParams:
    """Geometry of one controller instance (one frozen settings object, as LiteDRAM does)."""
    data_width: int = 512        # bits per line = weights per block
    b_max: int = 16              # widest storage format the datapath supports (2, 4, 8 or 16)
    n_regions: int = 4           # region-table entries
    request_depth: int = 16      # outstanding M2S requests the front end buffers (tags in flight)
    buffer_slots: int = 2        # assembled-block slots in the block buffer
    poison_entries: int = 8      # poison list records (runs of poisoned DRAM lines) before the overflow rule applies
    dram_addr_bits: int = 32     # AXI byte-address width = device capacity (log2 bytes)
    axi_id_bits: int = 4
    csr_addr_bits: int = 12
    host_port: str = "cxl"       # "cxl": CXL.mem message ports; "axi": AXI4 subordinate (docs/DEVICE.md §10)
    host_axi_id_bits: int = 8    # AXI ID width of the host port when host_port = "axi"

    def __post_init__(self):
        if self.data_width not in (64, 128, 256, 512):
            raise ValueError(f"data_width must be 64, 128, 256 or 512 bits, got {self.data_width}")
        if self.b_max not in SUPPORTED_B:
            raise ValueError(f"b_max must be one of {SUPPORTED_B}, got {self.b_max}")
        if self.data_width < 8 * self.b_max:
            # a weight-major line holds W/B weights, i.e. a W/B-bit slice of each plane: it must be whole bytes
            raise ValueError(f"data_width {self.data_width} is too narrow for b_max {self.b_max} "
                             f"(need at least {8 * self.b_max} bits)")
        if not 1 <= self.n_regions <= 16:
            raise ValueError(f"n_regions must be 1..16, got {self.n_regions}")
        if self.dram_addr_bits < 12 or self.dram_addr_bits > 44:
            raise ValueError(f"dram_addr_bits must be 12..44, got {self.dram_addr_bits}")
        if self.host_port not in HOST_PORTS:
            raise ValueError(f"host_port must be one of {', '.join(map(repr, HOST_PORTS))}, got {self.host_port!r}")
        if not 1 <= self.host_axi_id_bits <= 16:
            raise ValueError(f"host_axi_id_bits must be 1..16, got {self.host_axi_id_bits}")
        if self.request_depth < 2:
            # the front end's read FIFO holds request_depth reads; with one entry, after a stall that filled
            # it, it would take a read only every other cycle (a full FIFO takes no write in the cycle it is read)
            raise ValueError(f"request_depth must be >= 2, got {self.request_depth}")
        if self.buffer_slots < 1:
            raise ValueError(f"buffer_slots must be >= 1, got {self.buffer_slots}")
        if self.poison_entries < 1:
            raise ValueError(f"poison_entries must be >= 1, got {self.poison_entries}")
        if not 1 <= self.axi_id_bits <= 16:
            raise ValueError(f"axi_id_bits must be 1..16, got {self.axi_id_bits}")
        last_counter = CSR_COUNTER_BASE + 4 * (N_COUNTERS - 1)
        if last_counter >> self.csr_addr_bits:
            raise ValueError(f"csr_addr_bits = {self.csr_addr_bits} cannot reach COUNTER({N_COUNTERS - 1}) at "
                             f"{last_counter:#x}: need at least {last_counter.bit_length()} bits")
        if self.csr_addr_bits > 64:
            raise ValueError(f"csr_addr_bits must be at most 64 (AXI addresses), got {self.csr_addr_bits}")

    # --- derived geometry -------------------------------------------------------------------------
    # (cached per instance: the fields are frozen, and the golden model and the testbench ask for these per
    # message)
    @functools.cached_property
    def line_bytes(self) -> int:
        return self.data_width // 8

    @functools.cached_property
    def line_offset_bits(self) -> int:
        """log2(line_bytes): HPA bits below the line address."""
        return (self.line_bytes - 1).bit_length()

    @functools.cached_property
    def line_bits(self) -> int:
        """Width of a DRAM line index (device capacity in lines)."""
        return self.dram_addr_bits - self.line_offset_bits

    @functools.cached_property
    def region_index_bits(self) -> int:
        """Width of a region-table index."""
        return max(1, (self.n_regions - 1).bit_length())

    # fixed field widths of the RTL, named here so that every unit uses the same numbers
    k_bits = 5         # precision k (1..16) and the HPA k field
    view_bits = 3      # the HPA view field (View)
    log2_b_bits = 3    # log2(B) of a region, 1..4
    log2_r_bits = 3    # log2(R) of a region, 0..6 (R = plane run, at most MAX_PLANE_RUN)
    tag_bits = 16      # CXL message Tag
    ld_id_bits = 4     # CXL LD-ID

    @functools.cached_property
    def log2_b_max(self) -> int:
        return self.b_max.bit_length() - 1

    @functools.cached_property
    def block_line_bits(self) -> int:
        """Width of a line's index within a block (plane 0..b_max - 1; at least 1 bit)."""
        return max(1, (self.b_max - 1).bit_length())

    @functools.cached_property
    def buffer_slot_bits(self) -> int:
        """Width of a block-buffer slot index (at least 1 bit)."""
        return max(1, (self.buffer_slots - 1).bit_length())

    @functools.cached_property
    def message_address_bits(self) -> int:
        """Width of a CXL.mem message's address field, HPA[51 : line_offset_bits] (RTL and golden model alike)."""
        return HPA_BITS - self.line_offset_bits

    @functools.cached_property
    def block_weights(self) -> int:
        return self.data_width

    @functools.cached_property
    def view_shift(self) -> int:
        """HPA bit where the view field starts (above the device capacity)."""
        return self.dram_addr_bits

    @functools.cached_property
    def k_shift(self) -> int:
        return self.dram_addr_bits + 3

    @functools.cached_property
    def hpa_bits(self) -> int:
        """Meaningful HPA bits; any set bit above these decodes as unmapped."""
        return self.dram_addr_bits + 8

    @functools.cached_property
    def load_capacity(self) -> int:
        """Most reads the device holds before M2S Req back-pressure starts (docs/DEVICE.md §3, DevLoad): the
        front end's read FIFO (request_depth), the read engine's two request stages before dispatch and the skid
        register between them (3), its serve FIFO (request_depth + b_max), the DRS register (1) and the DRS output
        buffer (2). Reached when reads queue without stalling dispatch (buffer hits, unmapped reads) while S2M DRS
        is held off; tests/test_dev_load.py measures it at the ports."""
        return 2 * self.request_depth + self.b_max + 6

    def as_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """Short stable name of a parameter set (build-directory caching)."""
        key = "w{data_width}_b{b_max}_r{n_regions}_q{request_depth}_s{buffer_slots}_p{poison_entries}_a{dram_addr_bits}".format(**asdict(self))
        # the CXL port keeps the key it always had (cached builds stay valid)
        return key if self.host_port == "cxl" else f"{key}_axi{self.host_axi_id_bits}"


class DevLoad(enum.IntEnum):
    """CXL DevLoad field of S2M NDR / DRS (2 bits; CXL QoS Telemetry for Memory)."""
    LIGHT_LOAD = 0
    OPTIMAL_LOAD = 1
    MODERATE_OVERLOAD = 2
    SEVERE_OVERLOAD = 3


def dev_load_thresholds(params: ControllerParams) -> tuple[int, int, int]:
    """Smallest occupancy N at which DevLoad is Optimal, Moderate and Severe: N >= C/4, C/2 and 3C/4 of
    C = params.load_capacity (rounded up). The RTL (hdl/top.py) compares against these constants."""
    c = params.load_capacity
    return tuple(-(-i * c // 4) for i in (1, 2, 3))


def dev_load_level(params: ControllerParams, n: int) -> DevLoad:
    """DevLoad reported at occupancy N (M2S messages accepted that still owe a response; docs/DEVICE.md §3)."""
    if n < 0:
        raise ValueError(f"occupancy must be >= 0, got {n}")
    optimal, moderate, severe = dev_load_thresholds(params)
    if n >= severe:
        return DevLoad.SEVERE_OVERLOAD
    if n >= moderate:
        return DevLoad.MODERATE_OVERLOAD
    if n >= optimal:
        return DevLoad.OPTIMAL_LOAD
    return DevLoad.LIGHT_LOAD


def hpa(params: ControllerParams, view: View | int, offset: int, k: int = 0) -> int:
    """Host physical (device-relative) address of byte `offset` of a view at precision k."""
    if not 0 <= offset < (1 << params.dram_addr_bits):
        raise ValueError(f"offset {offset:#x} outside the device capacity (2**{params.dram_addr_bits} bytes)")
    if not 0 <= k < 32:
        raise ValueError(f"k must fit the 5-bit address field, got {k}")
    return (k << params.k_shift) | (int(view) << params.view_shift) | offset


def split_hpa(params: ControllerParams, address: int) -> tuple[int, int, int, int]:
    """(view, k, offset, high) of an HPA; high != 0 means bits above the map are set (unmapped)."""
    offset = address & ((1 << params.dram_addr_bits) - 1)
    view = (address >> params.view_shift) & 0b111
    k = (address >> params.k_shift) & 0b11111
    high = address >> params.hpa_bits
    return view, k, offset, high


class Counter(enum.IntEnum):
    """Event counters (docs/DEVICE.md section 6): COUNTER(n) at CSR 0x400 + 4*n."""
    REQ_MEM_INV = 0
    REQ_MEM_RD = 1
    REQ_MEM_RD_DATA = 2
    REQ_MEM_SPEC_RD = 3
    REQ_MEM_INV_NT = 4
    REQ_MEM_CLN_EVCT = 5
    REQ_BAD_OPCODE = 6
    RWD_MEM_WR = 7
    RWD_MEM_WR_PTL = 8
    RWD_BAD_OPCODE = 9
    DRS_SENT = 10
    NDR_SENT = 11
    DRAM_LINES_READ = 12
    DRAM_LINES_WRITTEN = 13
    BYTES_STROBED = 14
    READ_BURSTS = 15
    WRITE_BURSTS = 16
    BUFFER_HITS = 17
    BUFFER_MISSES = 18
    NXM_READS = 19
    NXM_WRITES = 20
    POISON_WRITES = 21
    POISON_READS = 22
    WR_DROPPED = 23
    WR_PARTIAL_GROUPS = 24
    RAW_READS = 25
    BUSY_CYCLES = 26
    STALL_CYCLES = 27
    AXI_ERRORS = 28    # R beats and B responses with RESP != OKAY (the data they carry is poisoned)
    HOLE_READS = 29    # reads inside a region that hit a hole (packed j >= k, illegal k, views 6 and 7)
    RWD_MEM_RD_FILL = 30   # RwD MemRdFill and MemRdFillTEE (reads carried on RwD)
    READS_AT_K1 = 32   # reads_at_k[k] = READS_AT_K1 + k - 1, k = 1..16


N_COUNTERS = Counter.READS_AT_K1 + 16
TIMING_COUNTERS = (Counter.BUSY_CYCLES, Counter.STALL_CYCLES)


def counter_name(n: int) -> str:
    if n >= Counter.READS_AT_K1:
        return f"reads_at_k{n - Counter.READS_AT_K1 + 1}"
    try:
        return Counter(n).name.lower()
    except ValueError:
        return f"reserved{n}"


# CSR byte addresses (docs/DEVICE.md section 6)
CSR_ID = 0x000
CSR_VERSION = 0x004
CSR_PARAMS = 0x008
CSR_CONTROL = 0x00C
CSR_STATUS = 0x010
CSR_POISON_LINE = 0x014        # RW: the line (DPA >> 6) POISON_COMMAND acts on
CSR_POISON_COMMAND = 0x018     # WO: POISON_COMMAND_INJECT / POISON_COMMAND_CLEAR (byte 0), reads 0
CSR_POISON_LIST_INDEX = 0x01C  # RW: which poison list record POISON_LIST_LINE / POISON_LIST_ENTRY show
CSR_POISON_LIST_LINE = 0x020   # RO: the record's first line F
CSR_POISON_LIST_ENTRY = 0x024  # RO: [15:0] line mask, [18:16] log2 stride, [31] valid
CSR_POISON_COUNT = 0x028       # RO: records in use
CSR_REGION_BASE = 0x100
CSR_REGION_STRIDE = 0x10
CSR_COUNTER_BASE = 0x400
ID_VALUE = 0x5351_4D43   # "SQMC"
VERSION_VALUE = 0x0001_0000
CONTROL_NXM_AS_POISON = 1 << 0
CONTROL_CLEAR_COUNTERS = 1 << 1
CONTROL_CLEAR_POISON = 1 << 2
CONTROL_MEM_DATA_NXM = 1 << 3    # the host accepts MemData-NXM (256B-flit hosts); else decode errors answer MemData
CONTROL_HOLE_POISON = 1 << 4     # reads of holes inside a region carry poison = 1
CONTROL_MODE_BITS = CONTROL_NXM_AS_POISON | CONTROL_MEM_DATA_NXM | CONTROL_HOLE_POISON   # the RW bits of CONTROL
POISON_COMMAND_INJECT = 1       # poison the line POISON_LINE names (a one-line record)
POISON_COMMAND_CLEAR = 2        # drop the line POISON_LINE names from every record
POISON_ENTRY_VALID = 1 << 31


def poison_index_limit(params: "ControllerParams") -> int:
    """POISON_LIST_INDEX keeps log2 of this many values (records at or past poison_entries read 0)."""
    return 1 << max(1, (params.poison_entries - 1).bit_length())


# REGION_CONFIG (DEVICE.md §6): (field, width) from bit 0 up. The one field table: the CSR block's register is a
# data.Struct of it (hdl/csr/layouts.py region_config_layout), the golden model packs and unpacks with it.
REGION_CONFIG_FIELDS = (("enable", 1), ("format", 1), ("log2_b_minus_1", 2), ("log2_r", 3), ("default_k", 5),
                        ("rounding", 2))
REGION_CONFIG_BITS = sum(width for _, width in REGION_CONFIG_FIELDS)


def pack_region_config(**fields: int) -> int:
    """REGION_CONFIG word from its fields (missing fields 0; a value wider than its field is a ValueError)."""
    word, offset = 0, 0
    for name, width in REGION_CONFIG_FIELDS:
        value = int(fields.pop(name, 0))
        if not 0 <= value < 1 << width:
            raise ValueError(f"REGION_CONFIG.{name} = {value} does not fit {width} bits")
        word |= value << offset
        offset += width
    if fields:
        raise ValueError(f"unknown REGION_CONFIG fields {sorted(fields)}")
    return word


def unpack_region_config(word: int) -> dict[str, int]:
    """The fields of a REGION_CONFIG word (bits above REGION_CONFIG_BITS ignored)."""
    fields, offset = {}, 0
    for name, width in REGION_CONFIG_FIELDS:
        fields[name] = (word >> offset) & ((1 << width) - 1)
        offset += width
    return fields


def region_config_word(*, enable: bool, fmt: Format | int, B: int, R: int, default_k: int,
                       rounding: Rounding | int) -> int:
    """REGION_CONFIG value: [0] enable, [1] format, [3:2] log2(B)-1, [6:4] log2(R), [11:7] default k, [13:12] rounding."""
    if B not in SUPPORTED_B:
        raise ValueError(f"B must be one of {SUPPORTED_B}, got {B}")
    if R < 1 or R > MAX_PLANE_RUN or R & (R - 1):
        raise ValueError(f"R must be a power of two in 1..{MAX_PLANE_RUN}, got {R}")
    if not 0 <= default_k < 32:
        raise ValueError(f"default k must fit 5 bits, got {default_k}")
    return pack_region_config(enable=int(enable), format=int(fmt), log2_b_minus_1=B.bit_length() - 2,
                              log2_r=R.bit_length() - 1, default_k=default_k, rounding=int(rounding))
