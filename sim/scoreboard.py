"""Scoreboard: every S2M DRS and NDR checked bit-exact against the golden DeviceModel.

The model is fed only with what the port monitors saw the DUT accept (M2S Req/RwD handshakes, in acceptance
order) and with CSR writes the testbench completed; it never sees the stimulus queues. Each accepted request's
expected response waits under its tag; a response is checked field by field (opcode, tag, LD-ID, MetaField,
MetaValue, poison, data; the opcode carries NXM) when it arrives, in any order.

Every legal outcome is accepted, and only those:
* Tags need not be unique (CXL does not require it): a response matches one of the requests outstanding under
  its tag on its channel, the one it equals if any.
* Poison of a read concurrent with a change of the poison list. CXL orders nothing between Req and RwD, so a
  read outstanding at any time between the acceptance of a write that changes the poison state and that
  write's Cmp may see the list before or after the change, if the change concerns it: the change concerns the
  mapped reads of the DRAM lines it poisoned or cleared (a raw read: its line; a block read: its k plane lines;
  an insert into a full list changes no line: it is flagged); decode errors and holes never. After a backend
  write error (which the device enters at the B response, the model where the write was accepted) the lines
  any insert or clear touched until the next clear-all are uncertain (DeviceModel.poison_order_uncertain).
  Such a read's poison may be either value (data must still match), and the poison_reads count the model
  predicted is corrected by the difference. A read accepted after the Cmp must see it (docs/DEVICE.md §4).
* DevLoad: the device reports dev_load_level(N) of its port occupancy N (M2S messages accepted that still owe
  a response, docs/DEVICE.md §3), sampled when it loads the message. The scoreboard counts N per cycle from
  the same handshakes and requires level(min N) <= DevLoad <= level(max N) over the cycles in which the
  response could have been loaded (see end_cycle).
A response nobody asked for and a response on the wrong channel are mismatches; `missing()` lists requests
never answered. Functional coverage (sim/coverage.py), when given, is sampled here from the same handshakes.
"""
from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field
from typing import Callable

from smartquant.golden.device import PACKED_VIEWS, DeviceModel, ReadBurst, Response, WriteBurst
from amaranth.hdl import Shape

from smartquant.hdl.cxl.messages import drs_layout, ndr_layout, pack, req_layout, rwd_layout
from smartquant.params import (
    REQ_READS, ControllerParams, Counter, DrsOpcode, NdrOpcode, ReqOpcode, RwdOpcode, View, WRITE_GATHER_IDLE_CYCLES,
    dev_load_level,
)
from smartquant.sim.coverage import Coverage, ReadDecode, read_decode
from smartquant.sim.port_driver import strobe_data_mask

MAX_REPORTED = 20   # mismatch messages kept verbatim (all are counted)
TRACE_TRIM = 1 << 12   # model bursts between deletions of the checked ones (_drop_checked_bursts)


def field_unpacker(layout) -> Callable[[int], dict[str, int]]:
    """A function splitting a payload into the layout's named fields, the same dict as messages.unpack, as one
    generated dict display (about half the cost of unpack's generic loop, paid for every message checked)."""
    items = ", ".join(f"{name!r}: value >> {field.offset} & {(1 << Shape.cast(field.shape).width) - 1}"
                      for name, field in layout)
    return eval(f"lambda value: {{{items}}}")


def field_packer(layout) -> Callable[..., int]:
    """A function of the layout's fields (keywords, missing ones 0) returning the payload integer, what
    messages.pack returns, as one generated expression; a field out of range goes to messages.pack, which
    raises its error (every request the stimulus sends is packed)."""
    fields = [(name, field.offset, Shape.cast(field.shape).width) for name, field in layout]
    arguments = ", ".join(f"{name}=0" for name, _, _ in fields)
    in_range = " and ".join(f"0 <= {name} < {1 << width}" for name, _, width in fields)
    value = " | ".join(f"{name} << {offset}" for name, offset, _ in fields)
    namespace = {"pack": pack, "layout": layout}
    exec(f"def packer(*, {arguments}):\n"
         f"    if not ({in_range}):\n"
         f"        return pack(layout, **{{{', '.join(f'{name!r}: {name}' for name, _, _ in fields)}}})\n"
         f"    return int({value})\n", namespace)
    return namespace["packer"]


def _opcode_name(channel: str, opcode: int) -> str:
    enum = {"drs": DrsOpcode, "ndr": NdrOpcode, "req": ReqOpcode, "rwd": RwdOpcode}[channel]
    try:
        return enum(opcode).name
    except ValueError:
        return f"reserved({opcode:#x})"


@dataclass(slots=True)      # one per request: slots make it cheaper to build and to keep
class Pending:
    """An accepted request waiting for its response."""
    channel: str            # the S2M channel its response must come on
    expected: Response
    request: dict           # the accepted M2S fields (for messages)
    kind: str               # "req" or "rwd"
    accepted: int = 0       # the scoreboard's cycle of the handshake (DevLoad range; see end_cycle)
    poison_either: bool = False   # concurrent with a poison-list change that affects it: poison may be 0 or 1
    block_key: tuple | None = None   # buffered reads: (mode, k, rounding, block line), for queued-reader coverage
    poison_key: frozenset | None = None  # mapped reads: the DRAM lines whose poison the read reports


@dataclass
class ScoreboardStats:
    requests: int = 0
    responses: int = 0
    checked_drs: int = 0
    checked_ndr: int = 0
    mismatches: int = 0
    tag_reuses: int = 0
    poison_either_accepted: int = 0   # concurrent reads whose poison differed from the model's acceptance order
    dev_load: collections.Counter = field(default_factory=collections.Counter)


class Scoreboard:
    OCCUPANCY_LOG_LIMIT = 1 << 16    # entries of the occupancy log before end_cycle trims what no request needs

    def __init__(self, params: ControllerParams, model: DeviceModel, log=None,
                 on_complete: Callable[[int, str, dict], None] | None = None, coverage: Coverage | None = None,
                 check_dev_load: bool = True):
        self.params = params
        self.check_dev_load = check_dev_load     # False for a host port without DevLoad (AXI, hdl/host/axi_port.py)
        self.coverage = coverage
        self.load_level = [int(dev_load_level(params, n)) for n in range(4 * params.load_capacity + 64)]
        self.occupancy = 0                       # N: accepted M2S messages that still owe a response
        self.occupancy_change = 0                # handshakes of the current cycle, applied by end_cycle
        self.cycle = 0                           # cycles closed by end_cycle
        # N after each cycle, logged only where it changed (most cycles it does not): N after cycle c is
        # occupancy_values[i] for the last i with occupancy_cycles[i] <= c (trimmed to what pending requests
        # still need; the first entry stands for every cycle before it)
        self.occupancy_cycles: list[int] = [-1]
        self.occupancy_values: list[int] = [0]
        # id() of a write that changed the poison state -> the DRAM lines whose poison it changed, until its Cmp
        self.poison_windows: dict[int, frozenset] = {}
        self.queued_readers: collections.Counter = collections.Counter()
        self.model = model
        self.log = log
        self.on_complete = on_complete
        self.layouts = {"req": req_layout(params), "rwd": rwd_layout(params),
                        "drs": drs_layout(params), "ndr": ndr_layout(params)}
        self.unpack = {channel: field_unpacker(layout) for channel, layout in self.layouts.items()}
        self._read_decodes: dict[tuple, tuple] = {}    # _read_decode's memo
        self._strobe_masks: dict[int, int] = {}        # WSTRB -> WDATA bit mask (_check_write_data)
        self.pending: dict[int, list[Pending]] = {}
        self.stats = ScoreboardStats()
        self.recent = collections.deque(maxlen=16)   # last accepted requests, printed with the first mismatch
        self.record = False                  # keep every response by tag (directed tests check some by hand)
        self.bursts_checked = {"read": 0, "write": 0}
        self.restart_bursts()
        self.responses: dict[int, dict] = {}
        self.messages: list[str] = []

    # --- accepted M2S traffic -----------------------------------------------------------------------------
    def on_req(self, payload: int) -> None:
        fields = self.unpack["req"](payload)
        target = self.model.read_target(fields["address"])
        is_read = fields["opcode"] in REQ_READS
        served = is_read and target is not None and target.mapped
        if self.coverage is not None:
            decode = None if target is None else self._read_decode(target)
            self.coverage.sample_req(fields, decode)
            if is_read and target is None:
                self.coverage.sample_decode_error(self.model.mem_data_nxm, self.model.nxm_as_poison)
            elif is_read and not served:
                self.coverage.sample_hole(decode, self.model.hole_poison)
        key = poison_key = None
        if served:
            poison_key = self.model.read_poison_lines(target)
            if target.view != View.RAW:
                mode = "packed" if target.view in PACKED_VIEWS else "expanded"
                key = (mode, target.k, target.config.rounding, fields["address"] // target.config.B)
        self._expect("req", fields, self.model.req(**fields), key, poison_key)

    def _read_decode(self, target) -> "ReadDecode":
        """coverage.read_decode of a target, one object per (region config, view, k, mapped), which is all it
        depends on: every address of a region's view shares it, so the coverage can memoise its bins per object
        (per target, most of a random run's addresses are new: half the decodes were built afresh)."""
        config = target.config
        key = (id(config), target.view, target.k, target.mapped)
        entry = self._read_decodes.get(key)
        if entry is None or entry[0] is not config:
            if len(self._read_decodes) >= 1 << 12:
                self._read_decodes.clear()
            entry = self._read_decodes[key] = (config, read_decode(target))
        return entry[1]

    def on_rwd(self, payload: int) -> None:
        fields = self.unpack["rwd"](payload)
        if self.coverage is not None:
            target = self.model.read_target(fields["address"])     # decode_for_coverage, with _read_decode's memo
            self.coverage.sample_rwd(fields, None if target is None else self._read_decode(target))
        # the device's idle boundary (DEVICE.md §4) falls this many cycles after the last write, if no write follows
        self.gather_idle_cycle = self.cycle + WRITE_GATHER_IDLE_CYCLES
        self._poison_change(lambda: self._apply_rwd(fields))

    def _apply_rwd(self, fields: dict) -> list[Pending]:
        """The write fed to the model; returns its pending Cmp and those of the gathered writes it flushed (a
        failed flush changes the poison list within their windows too)."""
        old = self.model.gather
        old_count = 0 if old is None else old.count
        pendings = self._expect("rwd", fields, self.model.rwd(**fields))
        flushed = []
        if old is not None and self.model.gather is not old:
            flushed, self.gather_pendings = self.gather_pendings, []
        gather = self.model.gather
        if gather is not None and (gather is not old or gather.count > old_count):
            self.gather_pendings.extend(pendings)
        return pendings + flushed

    def _poison_change(self, apply) -> None:
        """Run `apply` (a write fed to the model, or a flush of its gather buffer, which may enter a failed
        block) and open the poison windows its change of the poison list opens; `apply` returns the pending
        responses of the write (none for a flush)."""
        model = self.model
        events_before = model.poison_event_count
        # the lines are built only when the list changed (most writes leave it alone): from a copy taken now
        list_before = tuple(model.poison_list)
        pendings = apply()
        if model.poison_event_count == events_before:
            return pendings
        lines_before = model.poisoned_lines(list_before)
        if model.poison_order_uncertain():
            for waiting in self.pending.values():
                for p in waiting:
                    if p.poison_key is not None and self._order_uncertain(p.poison_key):
                        p.poison_either = True
        changed = lines_before ^ model.poisoned_lines()
        if changed:
            # Reads outstanding now or accepted before this write's Cmp may see the list before or after the
            # change, if the change concerns them: reads of the lines poisoned or cleared (DEVICE.md §4).
            # Decode errors and holes never depend on the list.
            for pending in pendings:
                self.poison_windows[id(pending)] = changed
            for waiting in self.pending.values():
                for p in waiting:
                    if self._poison_affects(changed, p.poison_key):
                        p.poison_either = True
        return pendings

    def _order_uncertain(self, poison_key: frozenset) -> bool:
        """The list's contents depend on timing for these lines (DeviceModel.poison_order_uncertain)."""
        model = self.model
        return model.poison_order_uncertain() and not poison_key.isdisjoint(model.poison_touched)

    @staticmethod
    def _poison_affects(affected: frozenset, poison_key: frozenset | None) -> bool:
        return poison_key is not None and not poison_key.isdisjoint(affected)

    def end_cycle(self) -> None:
        """Called once per cycle after every handshake of the cycle was reported (sim/port_driver.py).

        The device's occupancy register holds, during cycle c + 1, N after the handshakes of cycle c; a message
        loaded at the edge ending cycle e carries level(N during e). A request accepted in cycle a can be answered
        by a message loaded at the end of cycle a + 1 at the earliest (N after cycle a), and a response handed over
        in cycle h was loaded at the end of cycle h - 1 at the latest (N after cycle h - 2). So each outstanding
        request's range takes N after a cycle only from the next cycle on.

        So a request accepted in cycle a and answered in cycle h > a allows the levels of N after the cycles
        a .. max(a, h - 2) (`_load_range`); N after every cycle is kept until no pending request needs it."""
        if self.cycle == self.gather_idle_cycle:
            # the device's idle boundary (DEVICE.md §4): it flushes the weight-major lines it gathered
            self._poison_change(lambda: self._flush_gathered("idle"))
        model = self.model
        # what the poison list did, however it was driven (RwD, CSR), and every flush of the model's gather
        # buffer, whatever called it: the model's running totals tell whether anything happened (counts only
        # grow), the Counters by kind what
        if model.poison_event_count != self._poison_event_count_seen:
            events = model.poison_events
            if self.coverage is not None:
                for event, count in events.items():
                    if count != self._poison_events_seen[event]:
                        self.coverage.sample_poison_list(event)
            self._poison_events_seen = collections.Counter(events)
            self._poison_event_count_seen = model.poison_event_count
        if model.gather_flush_count != self._flush_count_seen:
            flushes = model.gather_flushes
            if self.coverage is not None:
                for cause, count in flushes.items():
                    for _ in range(count - self._flushes_seen[cause]):
                        self.coverage.sample_gather_flush(cause)
            self._flushes_seen = collections.Counter(flushes)
            self._flush_count_seen = model.gather_flush_count
        if self.occupancy_change:
            self.occupancy += self.occupancy_change
            self.occupancy_change = 0
        occupancy = self.occupancy
        if occupancy != self.occupancy_values[-1]:      # (a reset's forget_outstanding changes it too)
            self.occupancy_cycles.append(self.cycle)
            self.occupancy_values.append(occupancy)
            if len(self.occupancy_cycles) > self.OCCUPANCY_LOG_LIMIT:
                oldest = min((p.accepted for waiting in self.pending.values() for p in waiting), default=self.cycle)
                # keep the entry in force at the oldest pending acceptance and every one after it
                drop = bisect.bisect_right(self.occupancy_cycles, oldest) - 1
                del self.occupancy_cycles[:drop], self.occupancy_values[:drop]
        self.cycle += 1

    def _load_range(self, pending: Pending) -> tuple[int, int] | None:
        """(min, max) of N while `pending`'s response could have been loaded (see end_cycle), for a response seen
        in the current cycle; None when it was accepted in this same cycle (impossible for a register)."""
        if pending.accepted >= self.cycle:
            return None
        # N after the cycles accepted .. last (inclusive): the entry in force at `accepted` and the changes after it
        last = max(pending.accepted, self.cycle - 2)
        cycles = self.occupancy_cycles
        window = self.occupancy_values[max(0, bisect.bisect_right(cycles, pending.accepted) - 1):
                                       bisect.bisect_right(cycles, last)]
        return min(window), max(window)

    def _expect(self, kind: str, fields: dict, responses: list[Response], key: tuple | None = None,
                poison_key: frozenset | None = None) -> list[Pending]:
        self.stats.requests += 1
        self.recent.append((kind, fields["opcode"], fields["address"], fields["tag"]))
        tag = fields["tag"]
        if self.pending.get(tag):
            self.stats.tag_reuses += 1
            if self.coverage is not None:
                self.coverage.sample_tag_reuse()
        if len(responses) > 1:
            raise AssertionError(f"golden model gave {len(responses)} responses to one request")
        created = []
        for response in responses:
            self.occupancy_change += 1
            either = poison_key is not None and (
                (self.poison_windows and any(self._poison_affects(affected, poison_key)
                                             for affected in self.poison_windows.values()))
                or self._order_uncertain(poison_key))
            pending = Pending(response.channel, response, fields, kind, accepted=self.cycle, block_key=key,
                              poison_key=poison_key, poison_either=either)
            waiting = self.pending.get(tag)
            if waiting is None:
                self.pending[tag] = [pending]
            else:
                waiting.append(pending)
            created.append(pending)
            if key is not None:
                self.queued_readers[key] += 1
                if self.coverage is not None:
                    self.coverage.sample_queued_readers(self.queued_readers[key])
        self._match_bursts()
        if not responses and self.on_complete is not None:
            self.on_complete(tag, kind, fields)      # MemSpecRd: nothing will come back
        return created

    # --- S2M traffic ------------------------------------------------------------------------------------
    def on_drs(self, payload: int) -> None:
        fields = self.unpack["drs"](payload)
        if self.coverage is not None:
            self.coverage.sample_drs(fields)
        self._check("drs", fields)

    def on_ndr(self, payload: int) -> None:
        fields = self.unpack["ndr"](payload)
        if self.coverage is not None:
            self.coverage.sample_ndr(fields)
        self._check("ndr", fields)

    def _differences(self, channel: str, pending: Pending, got: dict) -> list[str]:
        expected = pending.expected
        if (got["opcode"] == expected.opcode and got["tag"] == expected.tag and got["ld_id"] == expected.ld_id
                and got["meta_field"] == expected.meta_field and got["meta_value"] == expected.meta_value
                and (channel != "drs" or (got["data"] == expected.data
                                          and (pending.poison_either or got["poison"] == expected.poison)))):
            wrong = []       # the common case, without building the dict of expected fields below
        else:
            want = {"opcode": expected.opcode, "tag": expected.tag, "ld_id": expected.ld_id,
                    "meta_field": expected.meta_field, "meta_value": expected.meta_value}
            if channel == "drs":
                want["data"] = expected.data
                if not pending.poison_either:
                    want["poison"] = expected.poison
            wrong = [name for name, value in want.items() if got[name] != value]
        if not self.check_dev_load:
            return wrong
        load = self._load_range(pending)
        if load is None:      # answered in the cycle it was accepted: impossible for a register
            wrong.append("dev_load")
        elif not self._level(load[0]) <= got["dev_load"] <= self._level(load[1]):
            wrong.append("dev_load")
        return wrong

    def _level(self, n: int) -> int:
        """dev_load_level(n), from a table (it is asked twice per response)."""
        return self.load_level[n] if n < len(self.load_level) else int(dev_load_level(self.params, n))

    def _check(self, channel: str, got: dict) -> None:
        # The port driver reports a cycle's requests before its responses, so a response whose request has not
        # been reported is a response nobody asked for.
        tag = got["tag"]
        waiting = self.pending.get(tag)
        self.stats.responses += 1
        self.stats.dev_load[got["dev_load"]] += 1
        if self.record:
            self.responses[tag] = dict(got, channel=channel)
        if not waiting:
            self._mismatch(f"{channel.upper()} {_opcode_name(channel, got['opcode'])} tag {tag:#x}: no request "
                           f"is waiting for this tag (duplicate or unrequested response)")
            return
        # with a reused tag, the response answers the request it matches (else the oldest on its channel)
        candidates = waiting if len(waiting) == 1 else [p for p in waiting if p.channel == channel] or waiting
        pending, wrong = candidates[0], None
        for candidate in candidates:
            differences = self._differences(channel, candidate, got)
            if not differences:
                pending, wrong = candidate, differences
                break
        waiting.remove(pending)
        if not waiting:
            del self.pending[tag]
        self.occupancy_change -= 1
        if self.poison_windows:
            self.poison_windows.pop(id(pending), None)
        if pending.block_key is not None:
            self.queued_readers[pending.block_key] -= 1
        if self.on_complete is not None:
            self.on_complete(tag, pending.kind, pending.request)
        if pending.channel != channel:
            self._mismatch(f"{self._what(channel, pending, tag)}: came on {channel.upper()}, expected "
                           f"{pending.channel.upper()}")
            return
        if channel == "drs":
            self.stats.checked_drs += 1
        else:
            self.stats.checked_ndr += 1
        expected = pending.expected
        if wrong is None:      # no candidate matched: the differences of the one it is held against
            wrong = self._differences(channel, pending, got)
        if channel == "drs" and pending.poison_either and got["poison"] != expected.poison and not wrong:
            # the legal other order: the model's poison_reads follows the DUT's answer
            # (only mapped reads can differ: an unmapped read's poison is nxm_as_poison, which no write changes)
            self.stats.poison_either_accepted += 1
            self.model.counts[Counter.POISON_READS] += got["poison"] - expected.poison
        if wrong:
            details = []
            for name in wrong:
                if name == "data":
                    diff = got["data"] ^ expected.data
                    bytes_off = sorted({bit // 8 for bit in range(self.params.data_width) if diff >> bit & 1})
                    details.append(f"data differs in {len(bytes_off)} bytes (first bytes {bytes_off[:8]}): "
                                   f"got {got['data']:#x}, expected {expected.data:#x}")
                elif name == "opcode":
                    details.append(f"opcode {_opcode_name(channel, got['opcode'])} expected "
                                   f"{_opcode_name(channel, expected.opcode)}")
                elif name == "dev_load" and self._load_range(pending) is None:
                    details.append("answered in the cycle its request was accepted")
                elif name == "dev_load":
                    low, high = self._load_range(pending)
                    details.append(f"dev_load {got['dev_load']} outside [{self._level(low)}, {self._level(high)}] "
                                   f"(occupancy {low}..{high} while it could be loaded)")
                else:
                    details.append(f"{name} {got[name]} expected {getattr(expected, name)}")
            self._mismatch(f"{self._what(channel, pending, tag)}: " + "; ".join(details))

    @staticmethod
    def _what(channel: str, pending: Pending, tag: int) -> str:
        """The head of a response's mismatch message (built only for a mismatch)."""
        request = pending.request
        return (f"{channel.upper()} for {pending.kind} {_opcode_name(pending.kind, request['opcode'])} "
                f"address {request['address']:#x} tag {tag:#x}")

    # --- backend traffic: the DUT's AXI bursts against the model's, in issue order ---------------------------
    def on_axi_address(self, kind: str, byte_address: int, beats: int) -> None:
        """AR handshake (kind "read"); reads are issued in request order."""
        self._bursts_waiting[kind].append((byte_address, beats, None))
        self._match_bursts()

    def on_axi_write(self, byte_address: int, beats: int, data: list[tuple[int, int]]) -> None:
        """A whole AXI write burst (AW and all its W beats: (WDATA, WSTRB) per beat), in issue order."""
        self._bursts_waiting["write"].append((byte_address, beats, data))
        self._match_bursts()

    def _match_bursts(self) -> None:
        if self._reads_waiting:
            self._match_kind("read", ReadBurst, self._reads_waiting)
        if self._writes_waiting:
            self._match_kind("write", WriteBurst, self._writes_waiting)
        if len(self.model.axi_bursts) >= self._next_trim:
            self._drop_checked_bursts()

    def _match_kind(self, kind: str, wanted: type, waiting: collections.deque) -> None:
        """The DUT's `waiting` bursts of one kind against the model's of that kind, in order, while both have one."""
        trace = self.model.axi_bursts
        line_bytes = self.params.line_bytes
        position, end = self._burst_scan[kind], len(trace)      # scan forward: the trace only grows at its end
        index = self._burst_index[kind]
        while waiting:
            while position < end and not isinstance(trace[position], wanted):
                position += 1
            if position >= end:
                break
            want = trace[position]
            position += 1
            byte_address, beats, data = waiting.popleft()
            if byte_address != want.line * line_bytes or beats != want.beats:
                self._mismatch(f"AXI {kind} burst #{index}: address {byte_address:#x} x{beats} beats, model "
                               f"expects line {want.line:#x} ({want.line * line_bytes:#x}) x{want.beats}")
            elif data is not None:
                self._check_write_data(index, want, data)
            index += 1
        self.bursts_checked[kind] += index - self._burst_index[kind]
        self._burst_index[kind] = index
        self._burst_scan[kind] = position

    def _drop_checked_bursts(self) -> None:
        """Delete the model's bursts that both scans have passed (checked, or of the other kind): the model keeps
        every burst it issues, with its write data, so a 10^6-transaction run held a GB of them."""
        trace = self.model.axi_bursts
        for kind, wanted in (("read", ReadBurst), ("write", WriteBurst)):
            position = self._burst_scan[kind]      # skip the other kind's bursts, as the match would
            while position < len(trace) and not isinstance(trace[position], wanted):
                position += 1
            self._burst_scan[kind] = position
        checked = min(self._burst_scan.values())
        del trace[:checked]
        for kind in self._burst_scan:
            self._burst_scan[kind] -= checked
        self._next_trim = len(trace) + TRACE_TRIM

    def _check_write_data(self, index: int, want: WriteBurst, data: list[tuple[int, int]]) -> None:
        """WSTRB of every beat exactly, WDATA in the strobed bytes (the others are don't-care)."""
        line_bytes = self.params.line_bytes
        all_bytes, all_data = (1 << line_bytes) - 1, (1 << (8 * line_bytes)) - 1
        for beat, ((value, strobe), want_strobe) in enumerate(zip(data, want.strobes)):
            if strobe != want_strobe:
                self._mismatch(f"AXI write burst #{index} line {want.line + beat:#x}: WSTRB {strobe:#x}, model "
                               f"{want_strobe:#x}")
                return
            if not strobe:
                continue                 # no byte enabled: WDATA is don't-care
            expected = int.from_bytes(want.data[beat * line_bytes:(beat + 1) * line_bytes], "little")
            mask = all_data if strobe == all_bytes else self._strobe_masks.get(strobe)
            if mask is None:     # built once per strobe pattern (weight-major writes repeat a few patterns)
                if len(self._strobe_masks) >= 1 << 12:
                    self._strobe_masks.clear()
                mask = self._strobe_masks[strobe] = strobe_data_mask(strobe, line_bytes)
            if (value ^ expected) & mask:
                self._mismatch(f"AXI write burst #{index} line {want.line + beat:#x}: WDATA differs from the model "
                               f"in strobed bytes (got {value & mask:#x}, model {expected & mask:#x})")
                return

    def unissued_dut_bursts(self) -> list[str]:
        """DUT bursts the model never issued (requests are reported before their bursts, so at any time)."""
        return [f"AXI {kind} burst address {address:#x} x{beats}: the model issued no such burst (extra DRAM "
                f"access)" for kind in ("read", "write") for address, beats, _ in self._bursts_waiting[kind]]

    def extra_bursts(self) -> list[str]:
        """At quiescence: DUT bursts the model never issued, and model bursts the DUT never issued."""
        problems = self.unissued_dut_bursts()
        for kind, wanted in (("read", ReadBurst), ("write", WriteBurst)):
            for burst in self.model.axi_bursts[self._burst_scan[kind]:]:
                if isinstance(burst, wanted):
                    problems.append(f"AXI {kind} burst at line {burst.line:#x} x{burst.beats}: the model issued it, "
                                    f"the DUT did not (missing DRAM access)")
        return problems

    def _flush_gathered(self, cause: str) -> list:
        self.model.flush_writes(cause)
        self._match_bursts()
        flushed, self.gather_pendings = self.gather_pendings, []
        return flushed

    def restart_bursts(self) -> None:
        """A new model (after reset) starts a new burst trace; bursts of the old one are void."""
        self.gather_idle_cycle = -1      # the device's idle timer restarts saturated: no boundary pending
        self.gather_pendings: list[Pending] = []   # Cmps of the writes in the model's gather buffer
        self._flushes_seen: collections.Counter = collections.Counter()   # the model's gather_flushes, sampled
        self._poison_events_seen: collections.Counter = collections.Counter()   # the model's poison_events
        self._flush_count_seen = self._poison_event_count_seen = 0     # their totals
        self._burst_index = {"read": 0, "write": 0}
        self._burst_scan = {"read": 0, "write": 0}    # positions in the model's trace, which _match_bursts trims
        self._next_trim = TRACE_TRIM
        self._bursts_waiting = {"read": collections.deque(), "write": collections.deque()}
        self._reads_waiting, self._writes_waiting = self._bursts_waiting["read"], self._bursts_waiting["write"]

    def _mismatch(self, message: str) -> None:
        if self.stats.mismatches == 0 and self.log is not None:
            self.log.error("last accepted requests before the first mismatch:\n  " + "\n  ".join(
                f"{kind} {_opcode_name(kind, opcode)} address {address:#x} tag {tag:#x}"
                for kind, opcode, address, tag in self.recent))
        self.stats.mismatches += 1
        if len(self.messages) < MAX_REPORTED:
            self.messages.append(message)
        if self.log is not None:
            self.log.error("MISMATCH %s", message)

    # --- end of test --------------------------------------------------------------------------------------
    def missing(self) -> list[str]:
        return [f"tag {tag:#x} ({p.kind} {_opcode_name(p.kind, p.request['opcode'])} address "
                f"{p.request['address']:#x}) never answered on {p.channel.upper()}"
                for tag, waiting in self.pending.items() for p in waiting]

    def forget_outstanding(self) -> list[Pending]:
        """Reset: requests in flight are lost by definition; any later response to them is a mismatch."""
        lost = [p for waiting in self.pending.values() for p in waiting]
        self.pending.clear()
        self.occupancy = self.occupancy_change = 0
        self.poison_windows.clear()
        self.queued_readers.clear()
        return lost

    def report(self) -> str:
        lines = [f"{self.stats.requests} requests accepted, {self.stats.checked_drs} DRS and "
                 f"{self.stats.checked_ndr} NDR checked, {self.stats.mismatches} mismatches"]
        lines += self.messages
        if self.stats.mismatches > len(self.messages):
            lines.append(f"... and {self.stats.mismatches - len(self.messages)} more mismatches")
        return "\n".join(lines)
