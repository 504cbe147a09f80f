"""Testbench of the SmartQuantController: port driver, AXI memory, CSR master, golden model, scoreboard, coverage.

    tb = TB(dut, params, seed)          # starts the clock and the port driver (CXL channels, AXI memory, CSR master)
    await tb.reset()
    await tb.program_region(RegionSetup(0, base_line=0, n_superblocks=2, B=8, R=1, default_k=4))
    tb.load_raw(0, raw_lines)           # backdoor into the AXI memory and the model alike
    tb.read(View.PACKED_K, line, k=3)   # queue requests; the scoreboard checks every response
    await tb.finish()                   # quiesce, check every counter, raise on any mismatch

The model only sees accepted handshakes (reported by sim/port_driver.py, which drives and samples every port
in one coroutine) and completed CSR writes (at quiescence unless the caller vouches otherwise). Backpressure,
idle cycles and stall runs come from `Pauses` generators seeded from the TB's own `random.Random(seed)`, so a
seed replays a run exactly. The AXI memory is not reset with the controller (DEVICE.md, Reset).
"""
from __future__ import annotations

import dataclasses
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import Immediate
from cocotb.triggers import Event

from smartquant.golden.device import (
    PREDICTED_COUNTERS, REGION_REG_CONFIG, DeviceModel, message_address, region_csr_writes,
)
from smartquant.hdl.backend.axi import AXI_RESP_OKAY
from smartquant.hdl.cxl.messages import req_layout, rwd_layout
from smartquant.params import (
    CSR_CONTROL, CSR_COUNTER_BASE, CSR_ID, CSR_PARAMS, CSR_REGION_BASE, CSR_REGION_STRIDE, CSR_STATUS,
    CSR_VERSION, CONTROL_CLEAR_COUNTERS, N_COUNTERS, ControllerParams, Counter, Format,
    ReqOpcode, Rounding, RwdOpcode, counter_name, CSR_POISON_LINE, CSR_POISON_COUNT, CSR_POISON_LIST_INDEX,
    CSR_POISON_LIST_LINE, CSR_POISON_LIST_ENTRY,
)
from smartquant.sim.coverage import Coverage
from smartquant.sim.harness import CONTROLLER_STATUS
from smartquant.sim.port_driver import AxiLiteMaster, AxiMemory, PortDriver, Sink, Source
from smartquant.sim.scoreboard import Scoreboard, field_packer

CLOCK_NS = 10


@dataclasses.dataclass
class RegionSetup:
    """One region-table entry as the testbench programs it (docs/DEVICE.md §6)."""
    index: int
    base_line: int
    n_superblocks: int
    B: int
    R: int = 1
    default_k: int | None = None   # None -> B
    fmt: int = Format.INT
    rounding: int = Rounding.FLOOR
    enable: bool = True

    def __post_init__(self):
        if self.default_k is None:
            self.default_k = self.B

    def contains(self, line: int) -> bool:
        return self.base_line <= line < self.base_line + self.span

    @property
    def span(self) -> int:
        return self.n_superblocks * self.R * self.B

    @property
    def n_blocks(self) -> int:
        return self.n_superblocks * self.R

    def block_of_raw(self, L: int) -> int:
        """Block of raw line L: s*R + r of its (s, p, r)."""
        superblock, rest = divmod(L, self.R * self.B)
        return superblock * self.R + rest % self.R

    def view_line(self, block: int, j: int = 0) -> int:
        """Line j of block `block` in a view's address space: views address a block's lines contiguously,
        B per block from base_line (docs/DEVICE.md §2), whatever R lays the planes out as in DRAM."""
        return self.base_line + block * self.B + j

    def block_lines(self, block: int) -> list[int]:
        """Absolute DRAM lines holding the block's B planes."""
        superblock, slot = divmod(block, self.R)
        return [self.base_line + superblock * self.R * self.B + plane * self.R + slot for plane in range(self.B)]


class TB:
    def __init__(self, dut, params: ControllerParams, seed: int, *, idle: float = 0.0, backpressure: float = 0.0,
                 axi_pause: float = 0.0):
        self.dut = dut
        self.params = params
        self.seed = seed
        self.rng = random.Random(seed)
        self.log = dut._log
        self.model = DeviceModel(params)
        # tag -> [(kind, opcode, address, note, ld_id)] of requests queued or unanswered (a tag may be reused);
        # `note` is whatever the issuer attached (conflict bookkeeping)
        self.outstanding: dict[int, list[tuple]] = {}
        self.in_flight = 0
        self.completion_listeners = []
        self.completions = Event()     # set (and cleared) whenever requests complete or are dropped by a reset
        self.coverage = Coverage(params)
        self.scoreboard = Scoreboard(params, self.model, self.log, on_complete=self._completed,
                                     coverage=self.coverage, check_dev_load=self.CHECK_DEV_LOAD)
        self.regions: dict[int, RegionSetup] = {}
        self.control_mode = 0      # the RW mode bits of CONTROL as last written (params.CONTROL_MODE_BITS)
        self.dropped_by_reset = 0
        self._next_tag = 0
        self.layouts = {"req": req_layout(params), "rwd": rwd_layout(params)}
        self.pack_req, self.pack_rwd = field_packer(self.layouts["req"]), field_packer(self.layouts["rwd"])
        self.traffic_since_clear = False

        # the clock toggles without delay (not as an inertial deposit, which Verilator applies only after an
        # evaluation of its own): the port driver's rising-edge callback runs at once, and each edge costs one
        # evaluation instead of two (sim/port_driver.py, timing discipline)
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi", set_action=Immediate).start())
        dut.rst.value = 1
        dut.axi_rst.value = 0    # the AXI memory is never reset with the controller (port_driver.AxiMemory)
        board = self.scoreboard
        self.driver = driver = PortDriver(dut, dut.clk, self.rng, self.STATUS)
        # callback order within a cycle: requests, AXI, responses (see sim/port_driver.py)
        self._add_host_requests(driver)
        self.ram = driver.add(AxiMemory(driver, "axi", 1 << params.dram_addr_bits, params.line_bytes))
        # other recorders of the AXI bursts (e.g. sim/stream_demo.py's row model) register here
        self.burst_listeners: dict[str, list] = {"ar": [], "aw": []}
        self.ram.on_read_burst = self._read_burst
        self.ram.on_write_burst = self._write_burst
        self._add_host_responses(driver)
        self.csr = driver.add(AxiLiteMaster(driver, "csr"))
        driver.end_of_cycle.append(board.end_cycle)
        coverage = self.coverage
        self.ram.on_read_response = coverage.sample_axi_read_response
        self.ram.on_write_response = coverage.sample_axi_write_response
        self.ram.on_stall = coverage.sample_stall
        self.set_knobs(idle=idle, backpressure=backpressure, axi_pause=axi_pause)
        driver.start()

    # --- the host port: CXL.mem message streams (sim/axi_host_tb.py overrides these for host_port = "axi") ----
    STATUS = CONTROLLER_STATUS
    CHECK_DEV_LOAD = True

    def _add_host_requests(self, driver: PortDriver) -> None:
        board = self.scoreboard
        self.req_source = driver.add(Source(driver, "m2s_req", board.on_req))
        self.rwd_source = driver.add(Source(driver, "m2s_rwd", board.on_rwd))
        self.req_source.on_stall = self.rwd_source.on_stall = self.coverage.sample_stall

    def _add_host_responses(self, driver: PortDriver) -> None:
        board = self.scoreboard
        self.drs_sink = driver.add(Sink(driver, "s2m_drs", board.on_drs))
        self.ndr_sink = driver.add(Sink(driver, "s2m_ndr", board.on_ndr))
        self.drs_sink.on_stall = self.ndr_sink.on_stall = self.coverage.sample_stall

    def _set_host_knobs(self, idle: float, backpressure: float, stall_runs: float) -> None:
        for source in (self.req_source, self.rwd_source):
            source.pauses.set(idle, stall_runs)
        for pauses in self._response_pauses():
            pauses.set(backpressure, stall_runs)

    def _response_pauses(self) -> list:
        """The pauses of the host's response channels (S2M DRS and NDR)."""
        return [self.drs_sink.pauses, self.ndr_sink.pauses]

    def halve_response_rate(self) -> None:
        """The host takes responses in every other cycle only (READY alternates on DRS and NDR) until the next
        set_knobs."""
        for pauses in self._response_pauses():
            pauses.set(alternate=True)

    def hold_responses(self, cycles: int) -> None:
        """The host takes no response for the next `cycles` cycles (READY low on every response channel)."""
        for pauses in self._response_pauses():
            pauses.remaining = max(pauses.remaining, cycles)

    def host_idle(self) -> bool:
        """Every queued request was handed to the DUT."""
        return self.req_source.idle() and self.rwd_source.idle()

    def host_queued(self) -> str:
        return f"{len(self.req_source.queue)} Req and {len(self.rwd_source.queue)} RwD"

    def _flush_host(self) -> int:
        """Drop the requests not yet accepted (a reset); returns how many."""
        return len(self.req_source.flush()) + len(self.rwd_source.flush())

    def _read_burst(self, address: int, beats: int, _id: int) -> None:
        self.scoreboard.on_axi_address("read", address, beats)
        for listener in self.burst_listeners["ar"]:
            listener(address, beats)

    def _write_burst(self, address: int, beats: int, data: list, _id: int) -> None:
        self.scoreboard.on_axi_write(address, beats, data)
        for listener in self.burst_listeners["aw"]:
            listener(address, beats)

    def set_knobs(self, *, idle: float = 0.0, backpressure: float = 0.0, axi_pause: float = 0.0,
                  stall_runs: float = 0.0) -> None:
        """Idle cycles on the M2S sources, backpressure on the S2M sinks, stalls on all five AXI channels
        (ready on AW/W/AR, valid on R/B); `stall_runs` adds long stall runs (2..24 cycles) on all of them."""
        self._set_host_knobs(idle, backpressure, stall_runs)
        for pauses in self.ram.pauses.values():
            pauses.set(axi_pause, stall_runs)

    # --- reset and time -----------------------------------------------------------------------------------
    async def _set_reset(self, value: bool) -> None:
        # from the next rising edge on (the port driver sees the reset through the harness's tb_status)
        await self.driver.next_cycle()
        self.dut.rst.value = int(value)

    async def reset(self, cycles: int = 4) -> None:
        await self._set_reset(True)
        await self.driver.cycles(cycles)
        await self._set_reset(False)
        await self.driver.cycles(2)

    @property
    def cycles(self) -> int:
        return self.driver.cycle

    # --- CSRs (at quiescence unless the caller says otherwise, so the model sees them in the right place) ----
    async def csr_write(self, address: int, value: int, *, in_flight_ok: bool = False) -> None:
        """A CSR write the model applies when it completes. By default at quiescence: only there is its place
        in the model's trace the same as the DUT's for every request (a region rewrite with buffered reads
        queued would race the read engine). `in_flight_ok`: the caller guarantees that nothing in flight
        depends on it (e.g. rewriting a region no outstanding request touches, with no poison state)."""
        if not in_flight_ok:
            await self.quiesce()
        resp = await self.csr.write(address, value)
        # coverage from what the ports saw: requests accepted and unanswered when the CSR write completed
        in_flight = bool(self.scoreboard.pending)
        is_region = CSR_REGION_BASE <= address < CSR_REGION_BASE + CSR_REGION_STRIDE * self.params.n_regions
        config_write = is_region and (address - CSR_REGION_BASE) % CSR_REGION_STRIDE == REGION_REG_CONFIG
        if config_write:
            self.coverage.sample_region_rewrite(in_flight)
        assert resp == AXI_RESP_OKAY, f"CSR write {address:#x} answered {resp}"
        self.model.csr_write(address, value)
        if address == CSR_CONTROL and value & CONTROL_CLEAR_COUNTERS:
            self.traffic_since_clear = False

    async def csr_read(self, address: int) -> int:
        data, resp = await self.csr.read(address)
        assert resp == AXI_RESP_OKAY, f"CSR read {address:#x} answered {resp}"
        return data

    async def set_control_mode(self, mode: int) -> None:
        """Write CONTROL's mode bits (nxm_as_poison, mem_data_nxm, hole_poison; params.CONTROL_MODE_BITS)."""
        self.control_mode = mode
        await self.csr_write(CSR_CONTROL, mode)

    async def program_region(self, region: RegionSetup, *, in_flight_ok: bool = False) -> None:
        for address, value in region_csr_writes(self.params, region.index, region.base_line, region.n_superblocks,
                                                region.fmt, region.B, region.R, region.default_k, region.rounding,
                                                region.enable):
            await self.csr_write(address, value, in_flight_ok=in_flight_ok)
        self.regions[region.index] = region

    async def disable_region(self, index: int) -> None:
        await self.csr_write(CSR_REGION_BASE + CSR_REGION_STRIDE * index + 8, 0)
        self.regions.pop(index, None)

    # --- memory backdoor ----------------------------------------------------------------------------------
    def load_raw(self, base_line: int, raw_lines) -> None:
        raw = np.asarray(raw_lines, dtype=np.uint8)
        self.ram.write(base_line * self.params.line_bytes, raw.tobytes())
        self.model.load_raw(base_line, raw)

    def ram_lines(self) -> np.ndarray:
        data = self.ram.read(0, 1 << self.params.dram_addr_bits)
        return np.frombuffer(data, dtype=np.uint8).reshape(-1, self.params.line_bytes)

    # --- requests -----------------------------------------------------------------------------------------
    def new_tag(self) -> int:
        for _ in range(1 << 16):
            tag = self._next_tag
            self._next_tag = (self._next_tag + 1) & 0xFFFF
            if tag not in self.outstanding:
                return tag
        raise AssertionError("all 65536 tags outstanding")

    def address(self, view: int, line: int, k: int = 0) -> int:
        return message_address(self.params, view, line, k)

    def _track(self, tag: int, kind: str, opcode: int, address: int, note, ld_id: int) -> None:
        self.outstanding.setdefault(tag, []).append((kind, opcode, address, note, ld_id))
        self.in_flight += 1

    def req(self, opcode: int, address: int, *, note=None, ld_id: int | None = None, tag: int | None = None) -> int:
        """Queue a Req; `tag` may repeat an outstanding one (CXL does not require unique tags). A reused tag gets
        an LD-ID no outstanding request with that tag has: two NDR Cmp with the same tag and LD-ID are the same
        bits, so no checker at the ports could tell which request completed (and which write's poison window or
        conflict ended). Without a free LD-ID a fresh tag is used."""
        if tag is not None and tag in self.outstanding and ld_id is None:
            taken = {entry[4] for entry in self.outstanding[tag]}
            free = [candidate for candidate in range(16) if candidate not in taken]
            if free:
                ld_id = self.rng.choice(free)
            else:
                tag = None
        tag = self.new_tag() if tag is None else tag
        ld_id = self.rng.randrange(16) if ld_id is None else ld_id
        self._track(tag, "req", opcode, address, note, ld_id)
        self.traffic_since_clear = True
        self._send_req(dict(opcode=opcode, address=address, tag=tag, ld_id=ld_id, meta_field=self.rng.randrange(4),
                            meta_value=self.rng.randrange(4), snp_type=self.rng.randrange(8)))
        return tag

    def _send_req(self, fields: dict) -> None:
        self.req_source.send_nowait(self.pack_req(**fields))

    def read(self, view: int, line: int, k: int = 0, *, opcode: int = ReqOpcode.MEM_RD, note=None) -> int:
        return self.req(opcode, self.address(view, line, k), note=note)

    def rwd(self, opcode: int, address: int, data: int, *, byte_enable: int | None = None, poison: int = 0,
            note=None) -> int:
        tag = self.new_tag()
        ld_id = self.rng.randrange(16)
        self._track(tag, "rwd", opcode, address, note, ld_id)
        self.traffic_since_clear = True
        full = (1 << self.params.line_bytes) - 1
        self.rwd_source.send_nowait(self.pack_rwd(opcode=opcode, address=address, tag=tag, ld_id=ld_id,
                                                  meta_field=self.rng.randrange(4), meta_value=self.rng.randrange(4),
                                                  snp_type=self.rng.randrange(8), poison=poison,
                                                  byte_enable=full if byte_enable is None else byte_enable, data=data))
        return tag

    def write(self, view: int, line: int, data: int, *, byte_enable: int | None = None, poison: int = 0,
              note=None) -> int:
        opcode = RwdOpcode.MEM_WR if byte_enable is None else RwdOpcode.MEM_WR_PTL
        return self.rwd(opcode, self.address(view, line), data, byte_enable=byte_enable, poison=poison, note=note)

    def _completed(self, tag: int, kind: str, request: dict) -> None:
        entries = self.outstanding.get(tag, [])
        note = None
        for index, (entry_kind, opcode, address, entry_note, ld_id) in enumerate(entries):
            if (entry_kind, opcode, address, ld_id) == (kind, request["opcode"], request["address"],
                                                        request["ld_id"]):
                note = entry_note
                del entries[index]
                self.in_flight -= 1
                break
        if not entries:
            self.outstanding.pop(tag, None)
        for listener in self.completion_listeners:
            listener(tag, note)
        self.completions.set()
        self.completions.clear()

    def wake_completion_waiters_at(self, cycle: int) -> list:
        """Set `completions` at driver cycle `cycle` too, so that a waiter for the next completion also wakes at its
        deadline. Waiters therefore wake without a completion at times, and re-check their condition in a loop
        (one event, no First(): cocotb's First starts a task per trigger, ~10 % of a random run's time)."""
        return self.driver.alarm(cycle, self.completions)

    def writes_accepted(self) -> bool:
        """Every RwD queued so far has been accepted by the DUT."""
        return self.rwd_source.idle()

    async def rwd_accepted(self) -> None:
        """Wait until every RwD queued so far has been accepted by the DUT."""
        while not self.writes_accepted():
            await self.driver.wait_for(self.writes_accepted)

    def quiet(self) -> bool:
        """Every queued request accepted and answered (MemSpecRd: accepted), every port idle."""
        return not self.outstanding and self.host_idle()

    async def quiesce(self, timeout_cycles: int = 20000) -> None:
        """Wait until every queued request was accepted and answered (MemSpecRd: accepted)."""
        start = self.cycles
        while not self.quiet():
            if self.cycles - start > timeout_cycles:
                missing = self.scoreboard.missing()
                raise AssertionError(
                    f"timeout after {timeout_cycles} cycles: {self.host_queued()} not accepted, "
                    f"{len(missing)} accepted requests unanswered"
                    + "".join(f"\n  {line}" for line in missing[:10]) + f"\n{self.scoreboard.report()}")
            await self.driver.wait_for(self.quiet, start + timeout_cycles + 1)
        # responses that should not exist (duplicates) would show up in the next few cycles
        await self.driver.cycles(8)

    # --- reset in the middle of traffic -------------------------------------------------------------------
    async def reset_mid_traffic(self, write_lines_in_flight: set[int]) -> None:
        """Pulse reset with requests in flight, then rebuild the model's view of the device.

        After reset the DUT has lost its CSRs, counters, buffer and poison list; DRAM keeps its contents.
        Every DRAM line is checked against the model, except lines a write in flight may have touched: those are
        taken from the AXI memory (they hold old data, new data or a mix of strobed beats) into the fresh model.
        """
        await self._set_reset(True)
        self.coverage.sample_reset(*self.ram.outstanding())    # what the memory is owed as reset is asserted
        self.ram.controller_reset()
        dropped = self._flush_host()
        await self.driver.cycles(4)
        self.dropped_by_reset += dropped + len(self.scoreboard.forget_outstanding())
        self.outstanding.clear()
        self.in_flight = 0
        for listener in self.completion_listeners:
            listener(None, None)
        self.completions.set()
        self.completions.clear()
        await self._set_reset(False)
        # the controller drains what the memory is still owed or owes (DEVICE.md "Reset"); W beats the memory took
        # before the reset land when their AW arrives, so memory is settled only once nothing is owed
        for _ in range(2000):
            await self.driver.next_cycle()
            if self.ram.idle():
                break
        else:
            raise AssertionError(f"AXI obligations not drained 2000 cycles after reset: (R beats, B, W beats) owed "
                                 f"{self.ram.outstanding()}")
        uncertain = np.zeros(len(self.model.memory), dtype=bool)
        uncertain[sorted(write_lines_in_flight)] = True
        ram = self.check_memory(ignore=uncertain, when="after the reset (no write to them was in flight)")
        fresh = DeviceModel(self.params)
        fresh.memory[:] = self.model.memory
        fresh.memory[uncertain] = ram[uncertain]
        self.model = fresh
        # bursts of the old model the DUT never issued may belong to requests the reset cut; a DUT burst the old
        # model never issued is wrong whatever the reset did (requests are reported before their bursts)
        stray = self.scoreboard.unissued_dut_bursts()
        assert not stray, "before the reset: " + "; ".join(stray[:8])
        self.scoreboard.model = fresh
        self.scoreboard.restart_bursts()
        self.traffic_since_clear = False
        regions = list(self.regions.values())
        self.regions = {}
        for region in regions:
            await self.program_region(region)
        if self.control_mode:
            await self.set_control_mode(self.control_mode)

    # --- end-of-test checks -------------------------------------------------------------------------------
    async def read_counters(self) -> list[int]:
        return [await self.csr_read(CSR_COUNTER_BASE + 4 * n) for n in range(N_COUNTERS)]

    async def check_counters(self) -> list[int]:
        """Every counter over AXI-Lite against the model (timing counters against their bounds)."""
        values = await self.read_counters()
        wrong = [f"{counter_name(n)} = {values[n]}, model {self.model.counts[n]}"
                 for n in PREDICTED_COUNTERS if values[n] != self.model.counts[n]]
        busy, stall = values[Counter.BUSY_CYCLES], values[Counter.STALL_CYCLES]
        if not busy >= stall >= 0:
            wrong.append(f"busy_cycles {busy} < stall_cycles {stall}")
        if self.traffic_since_clear and busy == 0:
            wrong.append("busy_cycles = 0 after traffic")
        assert not wrong, "counter mismatch: " + "; ".join(wrong)
        return values

    async def check_csrs(self) -> None:
        """Identity, status and the region table read back as the model says."""
        addresses = [CSR_ID, CSR_VERSION, CSR_PARAMS, CSR_CONTROL, CSR_STATUS]
        for index in range(self.params.n_regions):
            addresses += [CSR_REGION_BASE + CSR_REGION_STRIDE * index + offset for offset in (0, 4, 8)]
        wrong = []
        for address in addresses:
            got, want = await self.csr_read(address), self.model.csr_read(address)
            if address == CSR_STATUS:
                got &= ~0b10          # STATUS.busy is timing; the model is idle by construction
            if got != want:
                wrong.append(f"CSR {address:#05x} = {got:#x}, model {want:#x}")
        if not self.model.poison_order_uncertain():
            # the poison list, record by record (after a backend write error its contents depend on timing)
            addresses = [CSR_POISON_LINE, CSR_POISON_COUNT]
            for index in range(self.params.poison_entries):
                await self.csr_write(CSR_POISON_LIST_INDEX, index)
                for address in (CSR_POISON_LIST_LINE, CSR_POISON_LIST_ENTRY):
                    got, want = await self.csr_read(address), self.model.csr_read(address)
                    if got != want:
                        wrong.append(f"poison record {index}: CSR {address:#05x} = {got:#x}, model {want:#x}")
            for address in addresses:
                got, want = await self.csr_read(address), self.model.csr_read(address)
                if got != want:
                    wrong.append(f"CSR {address:#05x} = {got:#x}, model {want:#x}")
        assert not wrong, "CSR mismatch: " + "; ".join(wrong)

    def check_memory(self, ignore: np.ndarray | None = None, when: str = "") -> np.ndarray:
        """The whole DRAM (the AXI memory) equals the model's memory, byte for byte, except lines marked in
        `ignore`; returns the memory's lines."""
        ram = self.ram_lines()
        differs = (ram != self.model.memory).any(axis=1)
        if ignore is not None:
            differs &= ~ignore
        differing = np.nonzero(differs)[0]
        assert differing.size == 0, (f"{differing.size} DRAM lines differ from the golden model's memory {when}, "
                                     f"first {[hex(line) for line in differing[:8].tolist()]}")
        return ram

    def assert_clean(self) -> None:
        errors = self.driver.protocol_errors
        assert not errors, "protocol violations (AXI, AXI-Lite, handshakes): " + "; ".join(errors[:10])
        board = self.scoreboard
        assert board.stats.mismatches == 0, board.report()
        missing = board.missing()
        assert not missing, "unanswered tags:\n" + "\n".join(missing[:20])
        extra = board.extra_bursts()
        assert not extra, "\n".join(extra[:20])

    async def finish(self) -> list[int]:
        await self.quiesce()
        assert self.ram.idle(), (
            f"AXI memory not idle at the end: (R beats, B, W beats) owed {self.ram.outstanding()}, "
            f"{len(self.ram.w_beats)} W beats without an AW")
        self.assert_clean()
        self.check_memory()
        await self.check_csrs()
        counters = await self.check_counters()
        self.assert_clean()
        return counters
