"""Functional coverage of the controller, sampled from what the monitors see at the DUT's ports.

Pure Python (no cocotb): the testbench's monitors call the `sample_*` methods once per transaction (an accepted
M2S message, a sent S2M message, an AXI R beat or B response, the end of a stall run, ...), never from the
stimulus. A `Coverage` is a set of named groups of named bins with hit counts; `to_json` / `from_json` / `merge`
combine runs of the same `ControllerParams`.

The bins are data: each group is one entry of `GROUPS` (group name -> the bin names a parameter set defines),
built from the small tables below, so adding a bin is one line. A bin a parameter set makes impossible (a B = 16
format when b_max < 16, a k above b_max) is not defined for it. A sample that lands outside the defined bins
(e.g. a stall on B, whose ready the DUT ties to 1) is not lost: it is counted in `unexpected`, which the table
reports, and which does not count towards the percentage.

Meaning of "mapped" (`ReadDecode.mapped`, from `decode_for_coverage`): a read of that address is served from a
region (not a hole: packed j >= k, illegal k, views 6 and 7, docs/DEVICE.md section 3). A write is a mapped
write when `decode` is not None and its view is 0..5 (the k field and the line in the block slot do not matter
to writes); writes through views 2..5 are mapped (and dropped by the DUT).
"""
from __future__ import annotations

import functools

import collections
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from amaranth.hdl import Shape

from smartquant.hdl.cxl.messages import drs_layout, req_layout, rwd_layout
from smartquant.params import (
    MAX_PLANE_RUN, REQ_READS, RWD_FULL_WRITES, RWD_PARTIAL_WRITES, ControllerParams, DrsOpcode, Format, ReqOpcode,
    Rounding, RwdOpcode, View,
)

if TYPE_CHECKING:
    from smartquant.golden.device import DeviceModel, ReadTarget

# --- tables: one per group ------------------------------------------------------------------------------------
CXL_CHANNELS = ("m2s_req", "m2s_rwd", "s2m_drs", "s2m_ndr")
AXI_CHANNELS = ("aw", "w", "b", "ar", "r")
# channels whose valid-without-ready runs are binned: not B, whose bready the DUT ties to 1
# (hdl/engine/write_path.py), so a B stall is unreachable; one would be counted as unexpected
STALL_CHANNELS = CXL_CHANNELS + ("aw", "w", "ar", "r")
# host_port = "axi" (hdl/host/axi_port.py, sim/axi_host_tb.py): the host AXI4 port's channels replace the CXL ones
HOST_AXI_CHANNELS = ("host_ar", "host_aw", "host_w", "host_r", "host_b")
HOST_BURSTS = (("1 beat", 1), ("2-16 beats", 2))             # (bin, fewest beats), ascending
HOST_ID_REUSE = ("read", "write")     # an AR / AW with an ID that earlier transfers still have outstanding
STALL_RUNS = (("1 cycle", 1), ("2-7 cycles", 2), (">=8 cycles", 8))   # (bin, shortest run in it), ascending

# (name, Format, B): defined when B <= b_max
FORMATS = (("INT2", Format.INT, 2), ("INT4", Format.INT, 4), ("INT8", Format.INT, 8), ("INT16", Format.INT, 16),
           ("BF16", Format.BF16, 16))
VIEWS = (View.RAW, View.WEIGHT_MAJOR, View.PACKED_K, View.EXPANDED_K, View.PACKED_DEFAULT, View.EXPANDED_DEFAULT)
EXPANDED_VIEWS = (View.WEIGHT_MAJOR, View.EXPANDED_K, View.EXPANDED_DEFAULT)
PLANE_RUNS = tuple(1 << n for n in range(MAX_PLANE_RUN.bit_length()))          # 1, 2, 4, ..., 64
FILL_ROUNDINGS = (Rounding.FLOOR, Rounding.MIDPOINT, Rounding.TOWARD_ZERO)
WRITE_OPCODES = RWD_FULL_WRITES | RWD_PARTIAL_WRITES

WRITE_ENABLES = (
    "MemWr",                          # byte_enable ignored (all ones)
    "MemWrPtl all enabled",
    "MemWrPtl some enabled",          # neither all nor none
    "MemWrPtl partial B-byte group",  # mapped weight-major write with a B-byte group neither all-on nor all-off
    "MemWrPtl none enabled",
)
AXI_ERRORS = ("read error", "write error")            # RRESP != OKAY on an R beat, BRESP != OKAY on a B
# what the poison list did (golden DeviceModel.poison_events, DEVICE.md §4): the record kinds, a merge into a
# record of the same first line and stride, the last free record taken, an overflow, and the clears
POISON_LIST_EVENTS = ("raw write record", "block write record", "write error record", "inject", "merge",
                      "list full", "overflow", "cleared by raw write", "cleared by block write", "clear line",
                      "clear all")
POISONED_RESPONSES = ("mapped read",)                  # DRS MemData, poison = 1, answering a mapped read
# a decode error's DRS as CONTROL chooses it: (opcode MemData-NXM?, poison?) -> bin
DECODE_ERRORS = {(False, False): "MemData", (False, True): "MemData poisoned", (True, False): "MemData-NXM",
                 (True, True): "MemData-NXM poisoned"}
HOLE_KINDS = ("packed j >= k", "illegal k", "reserved view")
HOLE_POISON = {False: "hole poison off", True: "hole poison on"}
TAG_REUSE = ("tag reused",)
REGION_REWRITES = {False: "at quiescence", True: "with traffic in flight"}
RESET_OBLIGATIONS = ("R beats owed", "B owed", "W beats owed")
# weight-major write gathering (DEVICE.md §4): golden.device flush causes -> bins
GATHER_FLUSHES = {"full": "whole block (B lines)", "evict": "partial, another block or a raw write",
                  "idle": "partial, idle boundary", "csr": "partial, region-table write"}
QUEUED_READERS = ((">= request_depth", lambda p: p.request_depth),)     # (bin, fewest readers of one key)
DEV_LOAD_CHANNELS = ("DRS", "NDR")


def _cxl(p: ControllerParams) -> bool:
    return p.host_port == "cxl"


def _field_width(layout, name: str) -> int:
    return next(Shape.cast(field.shape).width for field_name, field in layout if field_name == name)


@functools.lru_cache(maxsize=None)     # 16 opcodes per channel, named for every message sampled
def opcode_name(enum_type, value: int, width: int) -> str:
    """Opcode bin name: the enum member's name, or reserved_0b.... for unnamed values."""
    try:
        return enum_type(value).name
    except ValueError:
        return f"reserved_0b{value:0{width}b}"


@functools.lru_cache(maxsize=None)     # (channel, run capped at the longest bin's shortest): a few dozen
def _stall_bin(channel: str, cycles: int) -> str | None:
    """The stall bin of a run of `cycles` on `channel` (None for no cycle); ValueError for an unknown channel."""
    if channel not in CXL_CHANNELS + AXI_CHANNELS + HOST_AXI_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}: expected one of "
                         f"{CXL_CHANNELS + AXI_CHANNELS + HOST_AXI_CHANNELS}")
    runs = [name for name, shortest in STALL_RUNS if cycles >= shortest]
    return f"{channel}/{runs[-1]}" if runs else None


@functools.lru_cache(maxsize=None)     # a few hundred names, asked for every message
def format_name(fmt: int, B: int) -> str:
    return "BF16" if fmt == Format.BF16 else f"INT{B}"


@functools.lru_cache(maxsize=None)     # a few hundred names, asked for every message
def _enum_name(enum_type, value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return str(value)


def _formats(p: ControllerParams) -> list[tuple[str, int]]:
    return [(name, B) for name, _, B in FORMATS if B <= p.b_max]


def _opcode_bins(enum_type, width: int) -> list[str]:
    return [opcode_name(enum_type, value, width) for value in range(1 << width)]


def _view_format(p: ControllerParams) -> list[str]:
    return [f"{view.name}/{f}" for view in VIEWS for f, _ in _formats(p)]


# group -> bins of a parameter set, in report order
GROUPS = (
    ("read view x format", _view_format),
    ("write view x format", _view_format),
    ("format x k", lambda p: [f"{f}/k={k}" for f, B in _formats(p) for k in range(1, B + 1)]),
    ("format x plane run", lambda p: [f"{f}/R={R}" for f, _ in _formats(p) for R in PLANE_RUNS]),
    ("fill x format", lambda p: [f"{r.name}/{f}" for r in FILL_ROUNDINGS for f, _ in _formats(p)]),
    ("req opcode", lambda p: (_opcode_bins(ReqOpcode, _field_width(req_layout(p), "opcode")) if _cxl(p)
                              else [ReqOpcode.MEM_RD.name])),      # the AXI port makes MemRd only
    ("rwd opcode", lambda p: (_opcode_bins(RwdOpcode, _field_width(rwd_layout(p), "opcode")) if _cxl(p)
                              else [RwdOpcode.MEM_WR.name, RwdOpcode.MEM_WR_PTL.name])),   # the AXI port's two
    # the AXI port makes MemWr of a whole-line strobe; AxiMaster sends no WSTRB = 0 beat
    ("write enables", lambda p: [name for name in WRITE_ENABLES
                                 if _cxl(p) or name not in ("MemWrPtl all enabled", "MemWrPtl none enabled")]),
    ("stall", lambda p: [f"{c}/{run}" for c in (STALL_CHANNELS if _cxl(p) else HOST_AXI_CHANNELS + AXI_CHANNELS[:2]
                                                + AXI_CHANNELS[3:]) for run, _ in STALL_RUNS]),
    # AXI host port only. Random writes are seldom to consecutive lines (a few 2-beat bursts in 10^4
    # transactions): multi-beat write bursts are no bin; the directed test of sim/axi_host_tb.py sends them
    ("host burst", lambda p: [] if _cxl(p) else [f"read/{name}" for name, _ in HOST_BURSTS] + ["write/1 beat"]),
    ("host id reuse", lambda p: [] if _cxl(p) else list(HOST_ID_REUSE)),
    ("axi errors", lambda p: list(AXI_ERRORS)),
    ("poison list", lambda p: list(POISON_LIST_EVENTS)),
    ("poisoned response", lambda p: list(POISONED_RESPONSES)),
    ("decode error", lambda p: list(DECODE_ERRORS.values())),
    ("hole", lambda p: list(HOLE_KINDS) + list(HOLE_POISON.values())),
    ("tag reuse", lambda p: list(TAG_REUSE)),
    ("region rewrite", lambda p: list(REGION_REWRITES.values())),
    ("write gather", lambda p: list(GATHER_FLUSHES.values())),
    ("reset", lambda p: list(RESET_OBLIGATIONS)),
    ("queued readers", lambda p: [name for name, _ in QUEUED_READERS]),
    ("dev load", lambda p: [] if not _cxl(p) else [f"{c}/{level}" for c in DEV_LOAD_CHANNELS
                                                   for level in range(1 << _field_width(drs_layout(p), "dev_load"))]),
)


# --- address decode (what the golden model knows at acceptance time) -------------------------------------------
@dataclass(frozen=True)
class ReadDecode:
    """An address as the golden model decodes it: view, region format / B / R / rounding, the effective k
    (address k for views 2 and 3, the region default for 4 and 5, B for weight-major, 0 for raw and views 6, 7),
    and whether a read of it is served (mapped) rather than answered as unmapped / illegal k."""
    view: int
    fmt: int
    B: int
    R: int
    k: int
    rounding: int
    mapped: bool


def decode_for_coverage(model: "DeviceModel", address: int) -> ReadDecode | None:
    """Decode a message address (HPA >> log2(line bytes)) with the model's current region table.

    None when no active region holds the line (or bits above the map are set); otherwise the region's fields,
    with mapped = False for reserved views 6 and 7, illegal k (0 or > B) and packed line j >= k."""
    target = model.read_target(address)
    return None if target is None else read_decode(target)


def read_decode(target: "ReadTarget") -> ReadDecode:
    """The coverage view of a decoded read (golden/device.py DeviceModel.read_target)."""
    config = target.config
    return ReadDecode(view=target.view, fmt=config.fmt, B=config.B, R=config.R, k=target.k,
                      rounding=config.rounding, mapped=target.mapped)


# --- the model ----------------------------------------------------------------------------------------------
NO_BINS: dict[str, int] = {}      # the bins of a group this parameter set does not define (never written)


class Coverage:
    """Hit counts of every bin `GROUPS` defines for one parameter set."""

    JSON_VERSION = 1

    def __init__(self, params: ControllerParams):
        self.params = params
        # a group with no bin for this parameter set (the other host port's) is left out
        self._hits: dict[str, dict[str, int]] = {group: dict.fromkeys(names, 0) for group, bins in GROUPS
                                                 if (names := bins(params))}
        self.unexpected: collections.Counter[str] = collections.Counter()   # "group/bin" sampled but not defined
        self._opcode_bins = {"req opcode": (ReqOpcode, _field_width(req_layout(params), "opcode")),
                             "rwd opcode": (RwdOpcode, _field_width(rwd_layout(params), "opcode"))}
        self._all_bytes = (1 << params.line_bytes) - 1
        self._dev_load = _cxl(params)         # the AXI host port carries no DevLoad
        # the dev load bins' names by channel and level, named once (sampled on every response)
        levels = range(1 << _field_width(drs_layout(params), "dev_load"))
        self._dev_load_bins = {channel: [f"{channel}/{level}" for level in levels] for channel in DEV_LOAD_CHANNELS}
        # run state, not coverage (neither saved nor merged): tag -> mapped? of reads awaiting their DRS
        self._pending_reads: dict[int, collections.deque[bool]] = {}
        self._read_bins: dict[int, tuple[ReadDecode, list[tuple[str, str]]]] = {}   # sample_req's memo
        self._queued_reader_bins = [(name, fewest(params)) for name, fewest in QUEUED_READERS]

    def _hit(self, group: str, name: str) -> None:
        bins = self._hits.get(group, NO_BINS)
        if name in bins:
            bins[name] += 1
        else:
            self.unexpected[f"{group}/{name}"] += 1

    def opcode_bin(self, group: str, opcode: int) -> str:
        """The bin of `opcode` in the "req opcode" or "rwd opcode" group (the width from the message layout)."""
        enum_type, width = self._opcode_bins[group]
        return opcode_name(enum_type, opcode, width)

    # --- M2S, as accepted ---------------------------------------------------------------------------------
    def sample_req(self, fields: dict, decode: ReadDecode | None) -> None:
        opcode = int(fields["opcode"])
        self._hit("req opcode", self.opcode_bin("req opcode", opcode))
        if opcode not in REQ_READS:
            return
        mapped = decode is not None and decode.mapped
        tag = int(fields["tag"])
        pending = self._pending_reads.get(tag)
        if pending is None:
            pending = self._pending_reads[tag] = collections.deque()
        pending.append(mapped)
        if not mapped:
            return
        # the bins of a decode, named once per decode object (the scoreboard passes the same object for every
        # read of its region config, view and k until the region table changes)
        entry = self._read_bins.get(id(decode))
        if entry is None or entry[0] is not decode:
            if len(self._read_bins) >= 1 << 16:
                self._read_bins.clear()
            entry = self._read_bins[id(decode)] = (decode, self._mapped_read_bins(decode))
        for group, name in entry[1]:
            self._hit(group, name)

    @staticmethod
    def _mapped_read_bins(decode: ReadDecode) -> list[tuple[str, str]]:
        f = format_name(decode.fmt, decode.B)
        bins = [("read view x format", f"{_enum_name(View, decode.view)}/{f}"),
                ("format x plane run", f"{f}/R={decode.R}")]
        if decode.view != View.RAW:
            bins.append(("format x k", f"{f}/k={decode.k}"))
        if decode.view in EXPANDED_VIEWS and decode.k < decode.B:
            bins.append(("fill x format", f"{_enum_name(Rounding, decode.rounding)}/{f}"))
        return bins

    def sample_rwd(self, fields: dict, decode: ReadDecode | None) -> None:
        opcode = int(fields["opcode"])
        self._hit("rwd opcode", self.opcode_bin("rwd opcode", opcode))
        if opcode not in WRITE_OPCODES:
            return
        mapped = decode is not None and decode.view <= View.EXPANDED_DEFAULT
        if opcode in RWD_FULL_WRITES:
            self._hit("write enables", "MemWr")
        else:
            enables = int(fields["byte_enable"])
            self._hit("write enables", "MemWrPtl all enabled" if enables == self._all_bytes
                      else "MemWrPtl none enabled" if enables == 0 else "MemWrPtl some enabled")
            if mapped and decode.view == View.WEIGHT_MAJOR and self._partial_group(enables, decode.B):
                self._hit("write enables", "MemWrPtl partial B-byte group")
        if mapped:
            self._hit("write view x format", f"{_enum_name(View, decode.view)}/{format_name(decode.fmt, decode.B)}")

    def _partial_group(self, enables: int, B: int) -> bool:
        group_mask = (1 << B) - 1
        return any(0 < (enables >> shift) & group_mask < group_mask
                   for shift in range(0, self.params.line_bytes, B))

    # --- S2M, as sent -------------------------------------------------------------------------------------
    def sample_drs(self, fields: dict) -> None:
        if self._dev_load:
            self._hit("dev load", self._dev_load_bins["DRS"][fields["dev_load"]])
        tag = int(fields["tag"])
        pending = self._pending_reads.get(tag)
        mapped = bool(pending) and pending.popleft()
        if pending is not None and not pending:
            del self._pending_reads[tag]
        if mapped and int(fields["poison"]) and int(fields["opcode"]) == DrsOpcode.MEM_DATA:
            self._hit("poisoned response", "mapped read")

    def sample_ndr(self, fields: dict) -> None:
        if self._dev_load:
            self._hit("dev load", self._dev_load_bins["NDR"][fields["dev_load"]])

    # --- AXI, as seen on the port -------------------------------------------------------------------------
    def sample_axi_read_response(self, resp: int) -> None:
        if resp:
            self._hit("axi errors", "read error")

    def sample_axi_write_response(self, resp: int) -> None:
        if resp:
            self._hit("axi errors", "write error")

    def sample_stall(self, channel: str, cycles: int) -> None:
        """A run of `cycles` consecutive cycles with valid = 1 and ready = 0 on `channel` ended."""
        name = _stall_bin(channel, max(0, min(cycles, STALL_RUNS[-1][1])))
        if name is not None:
            self._hit("stall", name)

    def sample_host_burst(self, kind: str, beats: int, id_outstanding: bool) -> None:
        """An AR (kind "read") or AW ("write") of `beats` beats accepted on the AXI host port; `id_outstanding`:
        earlier transfers with its ID are still unanswered."""
        name = [name for name, fewest in HOST_BURSTS if beats >= fewest][-1]
        if kind == "read" or beats == 1:       # multi-beat write bursts: no bin (see GROUPS)
            self._hit("host burst", f"{kind}/{name}")
        if id_outstanding:
            self._hit("host id reuse", kind)

    # --- events the testbench recognises ------------------------------------------------------------------
    def sample_tag_reuse(self) -> None:
        self._hit("tag reuse", "tag reused")

    def sample_poison_list(self, event: str) -> None:
        if event not in POISON_LIST_EVENTS:
            raise ValueError(f"unknown poison list event {event!r}: expected one of {POISON_LIST_EVENTS}")
        self._hit("poison list", event)

    def sample_decode_error(self, mem_data_nxm: bool, poison: bool) -> None:
        """A read no region holds, answered as CONTROL's mem_data_nxm and nxm_as_poison bits say."""
        self._hit("decode error", DECODE_ERRORS[bool(mem_data_nxm), bool(poison)])

    def sample_hole(self, decode: ReadDecode, poison: bool) -> None:
        """A read of a hole inside a region (decode.mapped is False), answered with CONTROL's hole_poison bit."""
        kind = ("reserved view" if decode.view > View.EXPANDED_DEFAULT
                else "illegal k" if not 1 <= decode.k <= decode.B else "packed j >= k")
        self._hit("hole", kind)
        self._hit("hole", HOLE_POISON[bool(poison)])

    def sample_region_rewrite(self, with_traffic_in_flight: bool) -> None:
        self._hit("region rewrite", REGION_REWRITES[bool(with_traffic_in_flight)])

    def sample_gather_flush(self, cause: str) -> None:
        """The gather buffer written out, for `cause` (a key of GATHER_FLUSHES: golden.device's flush causes)."""
        # a flush for a read cannot happen in random traffic (a read and a write of one block are never in
        # flight together): one would be counted in `unexpected`
        self._hit("write gather", GATHER_FLUSHES.get(cause, f"partial, {cause}"))

    def sample_reset(self, r_beats_owed: int, b_owed: int, w_beats_owed: int) -> None:
        for name, owed in zip(RESET_OBLIGATIONS, (r_beats_owed, b_owed, w_beats_owed)):
            if owed > 0:
                self._hit("reset", name)
        self._pending_reads.clear()          # a reset drops every outstanding request

    def sample_queued_readers(self, n: int) -> None:
        for name, fewest in self._queued_reader_bins:
            if n >= fewest:
                self._hit("queued readers", name)

    # --- results ------------------------------------------------------------------------------------------
    def bins(self) -> dict[str, dict[str, int]]:
        return {group: dict(bins) for group, bins in self._hits.items()}

    def missed(self) -> list[str]:
        return [f"{group}/{name}" for group, bins in self._hits.items() for name, hits in bins.items() if not hits]

    def _totals(self) -> tuple[int, int]:
        defined = sum(len(bins) for bins in self._hits.values())
        hit = sum(1 for bins in self._hits.values() for hits in bins.values() if hits)
        return hit, defined

    def percent(self) -> float:
        hit, defined = self._totals()
        return 100.0 * hit / defined if defined else 100.0

    @staticmethod
    def _format_percent(value: float) -> str:
        # rounded down: never print 100.0% while a bin is missed
        return f"{math.floor(value * 10 + 1e-9) / 10:.1f}%"

    def summary_line(self) -> str:
        hit, defined = self._totals()
        line = f"coverage: {self._format_percent(self.percent())} of {defined} bins"
        return line if hit == defined else f"{line}, {defined - hit} missed"

    def table(self) -> str:
        rows = []
        for group, bins in self._hits.items():
            hit = sum(1 for hits in bins.values() if hits)
            rows.append((group, f"{hit} / {len(bins)}", self._format_percent(100.0 * hit / len(bins))))
        hit, defined = self._totals()
        rows.append(("total", f"{hit} / {defined}", self._format_percent(self.percent())))
        header = ("group", "bins hit", "percent")
        widths = [max(len(row[i]) for row in rows + [header]) for i in range(3)]
        lines = [f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}",
                 "  ".join("-" * w for w in widths)]
        for i, (group, count, pct) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("  ".join("-" * w for w in widths))
            lines.append(f"{group:<{widths[0]}}  {count:>{widths[1]}}  {pct:>{widths[2]}}")
        for name, hits in sorted(self.unexpected.items()):
            lines.append(f"unexpected: {name} ({hits} hits)")
        return "\n".join(lines)

    # --- persistence and merging --------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"version": self.JSON_VERSION, "params": self.params.as_dict(), "bins": self.bins(),
                "unexpected": dict(self.unexpected)}

    @classmethod
    def from_json(cls, params: ControllerParams, data: dict) -> "Coverage":
        if data.get("version") != cls.JSON_VERSION:
            raise ValueError(f"coverage data version {data.get('version')!r}, expected {cls.JSON_VERSION}")
        if data.get("params") != params.as_dict():
            raise ValueError(f"coverage data is for parameters {data.get('params')}, not {params.as_dict()}")
        coverage = cls(params)
        for group, bins in data["bins"].items():
            for name, hits in bins.items():
                if name not in coverage._hits.get(group, {}):
                    raise ValueError(f"coverage data has bin {group}/{name}, which these parameters do not define")
                coverage._hits[group][name] = int(hits)
        coverage.unexpected.update({name: int(hits) for name, hits in data.get("unexpected", {}).items()})
        return coverage

    def merge(self, other: "Coverage") -> None:
        """Add the hits of another run of the same parameter set."""
        if other.params != self.params:
            raise ValueError(f"cannot merge coverage of {other.params} into {self.params}")
        for group, bins in other._hits.items():
            for name, hits in bins.items():
                self._hit_n(group, name, hits)
        self.unexpected.update(other.unexpected)

    def _hit_n(self, group: str, name: str, hits: int) -> None:
        if name in self._hits.get(group, {}):
            self._hits[group][name] += hits
        else:
            self.unexpected[f"{group}/{name}"] += hits


__all__ = ["Coverage", "ReadDecode", "decode_for_coverage", "GROUPS", "CXL_CHANNELS", "AXI_CHANNELS",
           "STALL_CHANNELS", "format_name", "opcode_name"]
