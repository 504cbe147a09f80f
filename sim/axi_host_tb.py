"""Testbench of the controller with the AXI4 host port (host_port = "axi", hdl/host/axi_port.py).

`AxiHostTB` is sim/tb.py's TB with the CXL.mem message streams replaced by cocotbext-axi's AxiMaster (the
stand-in for a CXL IP that hands the memory side an AXI4 manager) and a monitor of the host port's five
channels. Everything else is shared: the DRAM-side AxiMemory, the CSR master, the golden model, the scoreboard,
the coverage and the random traffic (sim/traffic.py), which keep speaking in CXL.mem terms:

- `req` / `rwd` keep the TB's bookkeeping (tags, LD-IDs, completion listeners) and queue AXI transfers instead
  of messages. MemRd, MemRdData and MemSpecRd are reads on AXI (the port has only MemRd); invalidates and
  reserved opcodes have no AXI form and are not sent (they complete at once); a write becomes one AXI write per
  contiguous run of enabled bytes (AxiMaster makes WSTRB from the address and length, so an arbitrary strobe
  pattern is several writes, each its own RwD at the core; a write with no byte enabled sends nothing and
  completes at once). The opcode the TB expects is the one the port makes: MemWr for a whole line, else
  MemWrPtl.
- Requests queued in the same step are coalesced: consecutive lines (reads; whole-line writes) become one INCR
  burst of up to `max_burst` beats, so streams give bursts. IDs come from a small pool (plus the largest ID), so
  IDs repeat while earlier transfers with them are outstanding.
- The monitor sees every handshake in the harness's status vector (sim/harness.py AXI_HOST_STATUS). What the
  core receives is reconstructed from the bus exactly as the port translates it (DEVICE.md §10): each accepted
  AR beat is a MemRd of line ARADDR / line_bytes + beat, each W beat (paired with its AW in order) an RwD with
  WSTRB as byte enables and WUSER as poison, handed to the scoreboard in the cycle the core accepts it (the
  core's M2S RwD handshake is in the status vector: the write gathering's idle boundary counts there). The response of the oldest outstanding beat *of the same ID* is
  the next R beat (per-ID order, the AXI rule; the port may be stricter), and a B answers every beat of the
  oldest write burst of its ID. They reach the scoreboard as DRS (RRESP DECERR = MemData-NXM, OKAY = MemData,
  RUSER = poison) and NDR Cmp; anything else (SLVERR, a wrong RLAST, a response for an ID with nothing
  outstanding) is a protocol error. DevLoad does not exist on AXI, so the scoreboard does not check it.
"""
from __future__ import annotations

import collections
import random

import cocotb
from cocotbext.axi import AxiBus, AxiMaster

from smartquant.hdl.backend.axi import AXI_RESP_OKAY
from smartquant.hdl.cxl.messages import drs_layout, ndr_layout, pack, req_layout, rwd_layout
from smartquant.hdl.host.axi_port import AXI_RESP_DECERR
from smartquant.params import META_FIELD_NO_OP, DrsOpcode, NdrOpcode, ReqOpcode, RwdOpcode
from smartquant.sim.harness import AXI_HOST_STATUS
from smartquant.sim.port_driver import Pauses, int_reader
from smartquant.sim.tb import TB

HOST_CHANNELS = ("ar", "aw", "w", "r", "b")
ID_POOL = 4                    # IDs 0..3 (and the largest): IDs repeat with transfers outstanding


def byte_runs(enables: int, n_bytes: int) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of set bits in `enables`."""
    runs, start = [], None
    for index in range(n_bytes + 1):
        bit = index < n_bytes and enables >> index & 1
        if bit and start is None:
            start = index
        elif not bit and start is not None:
            runs.append((start, index))
            start = None
    return runs


class AxiHostMonitor:
    """A PortDriver part: samples the host port's handshakes and reports them to the scoreboard as messages."""

    def __init__(self, tb: "AxiHostTB", driver):
        self.tb = tb
        self.driver = driver
        self.params = p = tb.params
        dut = driver.dut
        self.mask = {name: driver.mask(f"host__{name}") for name in
                     ("arvalid", "arready", "awvalid", "awready", "wvalid", "wready", "rvalid", "rready",
                      "bvalid", "bready")}
        self.read = {name: int_reader(getattr(dut, f"host__{name}")) for name in
                     ("arid", "araddr", "arlen", "awid", "awaddr", "awlen", "wdata", "wstrb", "wuser",
                      "rid", "rdata", "rresp", "ruser", "rlast", "bid", "bresp")}
        self.layouts = {"req": req_layout(p), "rwd": rwd_layout(p), "drs": drs_layout(p), "ndr": ndr_layout(p)}
        self.address_mask = (1 << p.message_address_bits) - 1
        self.full = (1 << p.line_bytes) - 1
        self.core_rwd_fire = driver.mask("core.m2s_rwd__valid") | driver.mask("core.m2s_rwd__ready")
        self.errors = driver.protocol_errors
        self.stalls = dict.fromkeys(HOST_CHANNELS, 0)
        self.bursts: collections.Counter = collections.Counter()   # (kind, beats) of every accepted AR / AW
        self.clear()

    def clear(self) -> None:
        # line requests handed to AxiMaster and not yet seen on AR / AW: line -> deque of the TB's fields (by line,
        # not in one queue: the master's coroutines need not put transfers on the bus in the order they were asked)
        self.to_send: dict[str, dict[int, collections.deque]] = {"read": {}, "write": {}}
        self.reads_by_id: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self.bursts_by_id: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        self.aw_bursts: collections.deque = collections.deque()   # [awid, [line entries], beats paired]
        self.w_beats: collections.deque = collections.deque()
        self.core_rwds: collections.deque = collections.deque()   # RwDs of paired W beats the core has not taken
        self.stalls = dict.fromkeys(HOST_CHANNELS, 0)

    def outstanding(self) -> int:
        return sum(len(queue) for table in self.to_send.values() for queue in table.values())

    def expect(self, kind: str, entries: list[dict]) -> None:
        table = self.to_send[kind]
        for entry in entries:
            table.setdefault(entry["address"], collections.deque()).append(entry)

    def _take(self, kind: str, line: int, what: str) -> dict | None:
        table = self.to_send[kind]
        queue = table.get(line)
        if not queue:
            self.errors.append(f"{what}: line {line:#x} was not asked of the master (cycle {self.driver.cycle})")
            return None
        entry = queue.popleft()
        if not queue:
            del table[line]
        return entry

    def drive(self) -> None:
        pass

    def sample(self, status: int) -> None:
        m, read = self.mask, self.read
        if self.driver.in_reset:
            self.core_rwds.clear()      # the port's queued writes are lost with it; the core never saw them
            return
        for channel, valid, ready in (("ar", "arvalid", "arready"), ("aw", "awvalid", "awready"),
                                      ("w", "wvalid", "wready"), ("r", "rvalid", "rready"),
                                      ("b", "bvalid", "bready")):
            if status & m[valid] and not status & m[ready]:
                self.stalls[channel] += 1
            elif self.stalls[channel]:
                self.tb.coverage.sample_stall(f"host_{channel}", self.stalls[channel])
                self.stalls[channel] = 0
        # requests before responses (the scoreboard's rule); AR, AW, then W
        if status & m["arvalid"] and status & m["arready"]:
            self._ar(read["arid"](), read["araddr"](), read["arlen"]())
        if status & m["awvalid"] and status & m["awready"]:
            self._aw(read["awid"](), read["awaddr"](), read["awlen"]())
        if status & m["wvalid"] and status & m["wready"]:
            self.w_beats.append((read["wdata"](), read["wstrb"](), read["wuser"]()))
        self._pair_writes()
        if status & self.core_rwd_fire == self.core_rwd_fire:   # the port hands the beats on in W order
            self.tb.scoreboard.on_rwd(self.core_rwds.popleft())
        if status & m["rvalid"] and status & m["rready"]:
            self._r(read["rid"](), read["rdata"](), read["rresp"](), read["ruser"](), read["rlast"]())
        if status & m["bvalid"] and status & m["bready"]:
            self._b(read["bid"](), read["bresp"]())

    def _ar(self, arid: int, araddr: int, arlen: int) -> None:
        coverage = self.tb.coverage
        coverage.sample_host_burst("read", arlen + 1, bool(self.reads_by_id[arid]))
        self.bursts["read", arlen + 1] += 1
        first = araddr >> self.params.line_offset_bits
        for beat in range(arlen + 1):
            address = (first + beat) & self.address_mask
            entry = self._take("read", address, f"host AR id {arid:#x} beat {beat}")
            if entry is None:
                return
            self.tb.scoreboard.on_req(pack(self.layouts["req"], opcode=ReqOpcode.MEM_RD, address=address,
                                           tag=entry["tag"], ld_id=entry["ld_id"], meta_field=META_FIELD_NO_OP))
            self.reads_by_id[arid].append((entry, beat == arlen))

    def _aw(self, awid: int, awaddr: int, awlen: int) -> None:
        self.tb.coverage.sample_host_burst("write", awlen + 1, bool(self.bursts_by_id[awid]) or any(
            burst[0] == awid for burst in self.aw_bursts))
        self.bursts["write", awlen + 1] += 1
        first = awaddr >> self.params.line_offset_bits
        entries = []
        for beat in range(awlen + 1):
            entry = self._take("write", (first + beat) & self.address_mask, f"host AW id {awid:#x} beat {beat}")
            if entry is None:
                return
            entries.append(entry)
        self.aw_bursts.append([awid, entries, 0])

    def _pair_writes(self) -> None:
        # W beats follow the AW order (AXI4 has no write interleaving); a beat may come before its AW
        while self.aw_bursts and self.w_beats:
            burst = self.aw_bursts[0]
            awid, entries, beat = burst
            data, strobe, user = self.w_beats.popleft()
            entry = entries[beat]
            self.core_rwds.append(pack(
                self.layouts["rwd"], opcode=RwdOpcode.MEM_WR if strobe == self.full else RwdOpcode.MEM_WR_PTL,
                address=entry["address"], tag=entry["tag"], ld_id=entry["ld_id"], meta_field=META_FIELD_NO_OP,
                poison=user, byte_enable=strobe, data=data))
            burst[2] += 1
            if burst[2] == len(entries):
                self.aw_bursts.popleft()
                self.bursts_by_id[awid].append(entries)

    def _r(self, rid: int, rdata: int, rresp: int, ruser: int, rlast: int) -> None:
        queue = self.reads_by_id.get(rid)
        if not queue:
            self.errors.append(f"host R id {rid:#x}: no read with this ID is outstanding (cycle {self.driver.cycle})")
            return
        entry, last = queue.popleft()
        if rlast != last:
            self.errors.append(f"host R id {rid:#x} tag {entry['tag']:#x}: RLAST {rlast}, expected {int(last)}")
        if rresp not in (AXI_RESP_OKAY, AXI_RESP_DECERR):
            self.errors.append(f"host R id {rid:#x} tag {entry['tag']:#x}: RRESP {rresp:#04b} (only OKAY or DECERR "
                               f"for a served INCR burst)")
        opcode = DrsOpcode.MEM_DATA_NXM if rresp == AXI_RESP_DECERR else DrsOpcode.MEM_DATA
        self.tb.scoreboard.on_drs(pack(self.layouts["drs"], opcode=opcode, tag=entry["tag"], ld_id=entry["ld_id"],
                                       meta_field=META_FIELD_NO_OP, poison=ruser, data=rdata))

    def _b(self, bid: int, bresp: int) -> None:
        queue = self.bursts_by_id.get(bid)
        if not queue:
            self.errors.append(f"host B id {bid:#x}: no write burst with this ID is complete on AW and W "
                               f"(cycle {self.driver.cycle})")
            return
        entries = queue.popleft()
        if bresp != AXI_RESP_OKAY:
            self.errors.append(f"host B id {bid:#x}: BRESP {bresp:#04b} for a served INCR burst")
        for entry in entries:
            self.tb.scoreboard.on_ndr(pack(self.layouts["ndr"], opcode=NdrOpcode.CMP, tag=entry["tag"],
                                           ld_id=entry["ld_id"], meta_field=META_FIELD_NO_OP))


class AxiHostTB(TB):
    STATUS = AXI_HOST_STATUS
    CHECK_DEV_LOAD = False

    def __init__(self, dut, params, seed, **knobs):
        # longest burst a coalesced group may form, drawn per group (a directed test may set [16])
        self.burst_limits = [1, 2, 4, 16]
        super().__init__(dut, params, seed, **knobs)

    def _add_host_requests(self, driver) -> None:
        dut, p = self.driver.dut, self.params
        self.host_rng = random.Random(self.seed ^ 0xA11)
        self.monitor = driver.add(AxiHostMonitor(self, driver))
        self.master = AxiMaster(AxiBus.from_prefix(dut, "host_"), dut.clk, dut.rst)
        for logger in (self.master.read_if.log, self.master.write_if.log):
            logger.setLevel("WARNING")        # it logs every transfer at INFO
        self.host_pauses = {channel: Pauses(random.Random(self.seed * 7 + index))
                            for index, channel in enumerate(HOST_CHANNELS)}
        channels = {"ar": self.master.read_if.ar_channel, "r": self.master.read_if.r_channel,
                    "aw": self.master.write_if.aw_channel, "w": self.master.write_if.w_channel,
                    "b": self.master.write_if.b_channel}
        for channel, bfm in channels.items():
            bfm.set_pause_generator(self._pause_generator(self.host_pauses[channel]))
        self.batch: list[tuple[str, dict]] = []
        self.ids = list(range(min(ID_POOL, 1 << p.host_axi_id_bits))) + [(1 << p.host_axi_id_bits) - 1]

    @staticmethod
    def _pause_generator(pauses: Pauses):
        while True:
            yield pauses()

    def _add_host_responses(self, driver) -> None:
        pass                                  # the monitor reports responses too

    def _set_host_knobs(self, idle: float, backpressure: float, stall_runs: float) -> None:
        for channel in ("ar", "aw", "w"):
            self.host_pauses[channel].set(idle, stall_runs)
        for pauses in self._response_pauses():
            pauses.set(backpressure, stall_runs)

    def _response_pauses(self) -> list:
        return [self.host_pauses["r"], self.host_pauses["b"]]

    def host_idle(self) -> bool:
        return not self.batch

    def writes_accepted(self) -> bool:
        """Every write queued so far went over AW/W and the core accepted its RwDs."""
        monitor = self.monitor
        return (not any(kind == "write" for kind, _ in self.batch)
                and not monitor.to_send["write"] and not monitor.aw_bursts and not monitor.w_beats
                and not monitor.core_rwds)

    def host_queued(self) -> str:
        return (f"{len(self.batch)} queued and {self.monitor.outstanding()} sent line requests (AXI)")

    def _flush_host(self) -> int:
        dropped = len(self.batch) + self.monitor.outstanding()
        self.batch.clear()
        self.monitor.clear()                  # AxiMaster flushes its own queues on the reset
        return dropped

    # --- requests: the TB's bookkeeping, AXI transfers --------------------------------------------------------
    def req(self, opcode: int, address: int, *, note=None, **kwargs) -> int:
        """MemRd, MemRdData and MemSpecRd are reads on the AXI port (it makes MemRd only). An AXI host has no
        invalidate or reserved request: those are not sent (the traffic does not guard them against writes in
        flight, as on CXL they read nothing)."""
        if opcode not in (ReqOpcode.MEM_RD, ReqOpcode.MEM_RD_DATA, ReqOpcode.MEM_SPEC_RD):
            return self._not_sent(note)
        return super().req(ReqOpcode.MEM_RD, address, note=note, **kwargs)

    def _not_sent(self, note) -> int:
        """A request the AXI port cannot carry: it completes at once (the completion listeners learn of it)."""
        tag = self.new_tag()
        for listener in self.completion_listeners:
            listener(tag, note)
        return tag

    def _send_req(self, fields: dict) -> None:
        self._queue("read", fields)

    def rwd(self, opcode: int, address: int, data: int, *, byte_enable: int | None = None, poison: int = 0,
            note=None) -> int:
        p = self.params
        full = (1 << p.line_bytes) - 1
        enables = full if byte_enable is None or opcode != RwdOpcode.MEM_WR_PTL else byte_enable
        runs = byte_runs(enables, p.line_bytes)
        if opcode not in (RwdOpcode.MEM_WR, RwdOpcode.MEM_WR_PTL) or not runs:
            # a reserved opcode has no AXI form; WSTRB = 0 cannot be sent by AxiMaster
            return self._not_sent(note)
        tag = None
        for index, (start, end) in enumerate(runs):
            run_enables = ((1 << (end - start)) - 1) << start
            last = index == len(runs) - 1
            tag = self.new_tag()
            ld_id = self.rng.randrange(16)
            run_opcode = RwdOpcode.MEM_WR if run_enables == full else RwdOpcode.MEM_WR_PTL
            # the completion listeners learn about the write with its last piece (B responses come in order)
            self._track(tag, "rwd", run_opcode, address, note if last else None, ld_id)
            self._queue("write", {"tag": tag, "ld_id": ld_id, "address": address, "data": data,
                                  "start": start, "end": end, "poison": poison})
        self.traffic_since_clear = True
        return tag

    def _queue(self, kind: str, fields: dict) -> None:
        if not self.batch:
            cocotb.start_soon(self._send_batch())
        self.batch.append((kind, fields))

    async def _send_batch(self) -> None:
        """Runs once the coroutine that queued requests yields: the step's requests, coalesced into bursts."""
        batch, self.batch = self.batch, []
        rng, lb = self.host_rng, self.params.line_bytes
        index = 0
        while index < len(batch):
            kind, first = batch[index]
            limit = rng.choice(self.burst_limits)
            group = [first]
            whole = kind == "read" or (first["start"], first["end"]) == (0, lb)
            while (whole and index + len(group) < len(batch) and len(group) < limit
                   and batch[index + len(group)][0] == kind
                   and batch[index + len(group)][1]["address"] == group[-1]["address"] + 1
                   and (kind == "read" or (batch[index + len(group)][1]["start"],
                                           batch[index + len(group)][1]["end"]) == (0, lb))):
                group.append(batch[index + len(group)][1])
            index += len(group)
            axi_id = rng.choice(self.ids)
            byte_address = first["address"] * lb
            if kind == "read":
                self.monitor.expect("read", group)
                self.master.init_read(byte_address, len(group) * lb, arid=axi_id)
            else:
                self.monitor.expect("write", group)
                data = b"".join(entry["data"].to_bytes(lb, "little")[entry["start"]:entry["end"]]
                                for entry in group)
                self.master.init_write(byte_address + first["start"], data, awid=axi_id,
                                       wuser=[entry["poison"] for entry in group])
