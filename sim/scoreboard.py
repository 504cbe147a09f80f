"""Scoreboard: every S2M DRS and NDR checked bit-exact against the golden DeviceModel.

The model is fed only with what the monitors saw the DUT accept (M2S Req/RwD handshakes, in acceptance order)
and with CSR writes the testbench completed at quiescence; it never sees the stimulus queues. Each accepted
request's expected responses wait under its tag; a response is checked field by field (opcode, tag, LD-ID,
MetaField, MetaValue, poison, data; the opcode carries NXM) when it arrives, in any order. DevLoad is timing
dependent: it is only checked to be a legal 2-bit level and histogrammed. A tag answered twice, a response
nobody asked for and a response on the wrong channel are mismatches; `missing()` lists tags never answered.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable

from smartquant.golden.device import DeviceModel, ReadBurst, Response, WriteBurst
from smartquant.hdl.cxl.messages import drs_layout, ndr_layout, req_layout, rwd_layout, unpack
from smartquant.params import ControllerParams, DrsOpcode, NdrOpcode, ReqOpcode, RwdOpcode

MAX_REPORTED = 20   # mismatch messages kept verbatim (all are counted)


def _opcode_name(channel: str, opcode: int) -> str:
    enum = {"drs": DrsOpcode, "ndr": NdrOpcode, "req": ReqOpcode, "rwd": RwdOpcode}[channel]
    try:
        return enum(opcode).name
    except ValueError:
        return f"reserved({opcode:#x})"


@dataclass
class Pending:
    """An accepted request waiting for its response."""
    channel: str            # the S2M channel its response must come on
    expected: Response
    request: dict           # the accepted M2S fields (for messages)
    kind: str               # "req" or "rwd"


@dataclass
class ScoreboardStats:
    requests: int = 0
    responses: int = 0
    checked_drs: int = 0
    checked_ndr: int = 0
    mismatches: int = 0
    dev_load: collections.Counter = field(default_factory=collections.Counter)


class Scoreboard:
    def __init__(self, params: ControllerParams, model: DeviceModel, log=None,
                 on_complete: Callable[[int], None] | None = None):
        self.params = params
        self.model = model
        self.log = log
        self.on_complete = on_complete
        self.layouts = {"req": req_layout(params), "rwd": rwd_layout(params),
                        "drs": drs_layout(params), "ndr": ndr_layout(params)}
        self.pending: dict[int, Pending] = {}
        self.stats = ScoreboardStats()
        self.recent = collections.deque(maxlen=16)   # last accepted requests, printed with the first mismatch
        self.record = False                  # keep every response by tag (directed tests check some by hand)
        self.bursts_checked = {"read": 0, "write": 0}
        self.restart_bursts()
        self.early: dict[int, tuple[str, dict]] = {}   # responses seen in the cycle of their request's handshake
        self.responses: dict[int, dict] = {}
        self.messages: list[str] = []

    # --- accepted M2S traffic -----------------------------------------------------------------------------
    def on_req(self, payload: int) -> None:
        fields = unpack(self.layouts["req"], payload)
        self._expect("req", fields, self.model.req(**fields))

    def on_rwd(self, payload: int) -> None:
        fields = unpack(self.layouts["rwd"], payload)
        self._expect("rwd", fields, self.model.rwd(**fields))

    def _expect(self, kind: str, fields: dict, responses: list[Response]) -> None:
        self.stats.requests += 1
        self.recent.append((kind, fields["opcode"], fields["address"], fields["tag"]))
        tag = fields["tag"]
        if tag in self.pending:
            # The stimulus never reuses an outstanding tag, so this is a DUT accepting something twice.
            self._mismatch(f"{kind} {_opcode_name(kind, fields['opcode'])} accepted with tag {tag:#x} while that "
                           f"tag is still outstanding")
        if len(responses) > 1:
            raise AssertionError(f"golden model gave {len(responses)} responses to one request")
        for response in responses:
            self.pending[tag] = Pending(response.channel, response, fields, kind)
        self._match_bursts()
        if not responses and self.on_complete is not None:
            self.on_complete(tag)      # MemSpecRd: nothing will come back
        if tag in self.early:
            channel, got = self.early.pop(tag)
            self._check(channel, got, early=False)

    # --- S2M traffic ------------------------------------------------------------------------------------
    def on_drs(self, payload: int) -> None:
        self._check("drs", unpack(self.layouts["drs"], payload))

    def on_ndr(self, payload: int) -> None:
        self._check("ndr", unpack(self.layouts["ndr"], payload))

    def _check(self, channel: str, got: dict, early: bool = True) -> None:
        tag = got["tag"]
        if early and tag not in self.pending and tag not in self.early:
            # Monitors of one cycle run in no defined order: the request's handshake may be reported just after
            # its response (a same-cycle bypass). Anything still parked at quiescence is a real stray response.
            self.early[tag] = (channel, got)
            return
        self.stats.responses += 1
        self.stats.dev_load[got["dev_load"]] += 1
        if self.record:
            self.responses[tag] = dict(got, channel=channel)
        pending = self.pending.pop(tag, None)
        if pending is None:
            self._mismatch(f"{channel.upper()} {_opcode_name(channel, got['opcode'])} tag {tag:#x}: no request "
                           f"is waiting for this tag (duplicate or unrequested response)")
            return
        if self.on_complete is not None:
            self.on_complete(tag)
        request = pending.request
        what = (f"{channel.upper()} for {pending.kind} {_opcode_name(pending.kind, request['opcode'])} "
                f"address {request['address']:#x} tag {tag:#x}")
        if pending.channel != channel:
            self._mismatch(f"{what}: came on {channel.upper()}, expected {pending.channel.upper()}")
            return
        if channel == "drs":
            self.stats.checked_drs += 1
        else:
            self.stats.checked_ndr += 1
        expected = pending.expected
        want = {"opcode": expected.opcode, "tag": expected.tag, "ld_id": expected.ld_id,
                "meta_field": expected.meta_field, "meta_value": expected.meta_value}
        if channel == "drs":
            want.update(poison=expected.poison, data=expected.data)
        wrong = [name for name, value in want.items() if got[name] != value]
        if not 0 <= got["dev_load"] <= 3:
            wrong.append("dev_load")
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
                else:
                    details.append(f"{name} {got[name]} expected {want.get(name, '0..3')}")
            self._mismatch(f"{what}: " + "; ".join(details))

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
        trace = self.model.axi_bursts
        line_bytes = self.params.line_bytes
        for kind, wanted in (("read", ReadBurst), ("write", WriteBurst)):
            waiting = self._bursts_waiting[kind]
            while waiting:
                position = self._burst_scan[kind]       # scan forward: the model's trace only grows
                while position < len(trace) and not isinstance(trace[position], wanted):
                    position += 1
                self._burst_scan[kind] = position
                if position >= len(trace):
                    break
                self._burst_scan[kind] = position + 1
                byte_address, beats, data = waiting.popleft()
                index = self._burst_index[kind]
                self._burst_index[kind] += 1
                self.bursts_checked[kind] += 1
                want = trace[position]
                line = byte_address // line_bytes
                if (line, beats) != (want.line, want.beats) or byte_address % line_bytes:
                    self._mismatch(f"AXI {kind} burst #{index}: address {byte_address:#x} x{beats} beats, model "
                                   f"expects line {want.line:#x} ({want.line * line_bytes:#x}) x{want.beats}")
                elif data is not None:
                    self._check_write_data(index, want, data)

    def _check_write_data(self, index: int, want: WriteBurst, data: list[tuple[int, int]]) -> None:
        """WSTRB of every beat exactly, WDATA in the strobed bytes (the others are don't-care)."""
        line_bytes = self.params.line_bytes
        for beat, ((value, strobe), want_strobe) in enumerate(zip(data, want.strobes)):
            if strobe != want_strobe:
                self._mismatch(f"AXI write burst #{index} line {want.line + beat:#x}: WSTRB {strobe:#x}, model "
                               f"{want_strobe:#x}")
                return
            expected = int.from_bytes(want.data[beat * line_bytes:(beat + 1) * line_bytes], "little")
            mask = int.from_bytes(bytes(0xFF if strobe >> i & 1 else 0 for i in range(line_bytes)), "little")
            if (value ^ expected) & mask:
                self._mismatch(f"AXI write burst #{index} line {want.line + beat:#x}: WDATA differs from the model "
                               f"in strobed bytes (got {value & mask:#x}, model {expected & mask:#x})")
                return

    def extra_bursts(self) -> list[str]:
        """At quiescence: DUT bursts the model never issued, and model bursts the DUT never issued."""
        problems = [f"AXI {kind} burst address {address:#x} x{beats}: the model issued no such burst (extra DRAM "
                    f"access)" for kind in ("read", "write") for address, beats, _ in self._bursts_waiting[kind]]
        for kind, wanted in (("read", ReadBurst), ("write", WriteBurst)):
            for burst in self.model.axi_bursts[self._burst_scan[kind]:]:
                if isinstance(burst, wanted):
                    problems.append(f"AXI {kind} burst at line {burst.line:#x} x{burst.beats}: the model issued it, "
                                    f"the DUT did not (missing DRAM access)")
        return problems

    def restart_bursts(self) -> None:
        """A new model (after reset) starts a new burst trace; bursts of the old one are void."""
        self._burst_index = {"read": 0, "write": 0}
        self._burst_scan = {"read": 0, "write": 0}
        self._bursts_waiting = {"read": collections.deque(), "write": collections.deque()}

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
    def settle(self) -> None:
        """At quiescence: responses still parked never had a request."""
        for tag, (channel, got) in list(self.early.items()):
            del self.early[tag]
            self._check(channel, got, early=False)

    def missing(self) -> list[str]:
        return [f"tag {tag:#x} ({p.kind} {_opcode_name(p.kind, p.request['opcode'])} address "
                f"{p.request['address']:#x}) never answered on {p.channel.upper()}" for tag, p in self.pending.items()]

    def forget_outstanding(self) -> list[int]:
        """Reset: requests in flight are lost by definition; any later response to them is a mismatch."""
        lost = list(self.pending)
        self.pending.clear()
        return lost

    def report(self) -> str:
        lines = [f"{self.stats.requests} requests accepted, {self.stats.checked_drs} DRS and "
                 f"{self.stats.checked_ndr} NDR checked, {self.stats.mismatches} mismatches"]
        lines += self.messages
        if self.stats.mismatches > len(self.messages):
            lines.append(f"... and {self.stats.mismatches - len(self.messages)} more mismatches")
        return "\n".join(lines)
