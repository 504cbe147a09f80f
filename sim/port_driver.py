"""One coroutine that drives and samples every port of the DUT, once per clock cycle.

Why one coroutine: each cocotb wake-up and each VPI access costs microseconds of Python, and the W = 512
controller itself simulates at ~150k cycles/s with ports-only visibility. Per-channel agents (one coroutine per
channel and per AXI channel, as cocotbext-axi and the first testbench had) spent ~20 wake-ups a cycle. Here a
cycle is one wake-up, right after the rising edge, one read of the harness's `tb_status` vector (every
valid/ready the DUT drives, and the reset), writes only of inputs that change, and payload reads only on a
handshake and on the first cycle of a stall (to check the payload is held).

Timing discipline (the same for every channel), from how cocotb runs Verilator (cocotb's verilator.cpp): the
clock's RisingEdge callback fires when the clock input changes, before the design evaluates that edge. So at
the wake-up for edge t+1 every port still shows, settled, what it was during cycle t (outputs against the
inputs this driver wrote for cycle t), and what the driver writes takes effect for cycle t+1. A wake-up samples cycle t (`valid & ready` there is a
transfer that completed at edge t+1), then writes the inputs of cycle t+1. An output that depends
combinationally on an input is seen as it settled, so no second wake-up (cocotb's ReadOnly phase) is needed.
tests/test_sim_runner.py's loopback run with pauses fails if a simulator orders this differently. The harness
(sim/harness.py) registers every DUT input on the falling edge: what a wake-up writes reaches the DUT at the
next falling edge, before the next rising edge samples it (it spares Verilator evaluating the input-dependent
logic in every eval). So the driver writes without delay (`_Port`): a write lands in the model before the edge's
evaluation, which only the falling-edge registers read, instead of after it as an inertial put (cocotb's
deposit), which cost Verilator another evaluation in every cycle with a write and a copy of each value.
Callbacks of one cycle run in a fixed order: M2S requests (Req, RwD), AXI AR, AW, W, R, B, then S2M responses
(DRS, NDR), so a response is never reported before the request it answers.

Parts:
* `Source`: an M2S stream into the DUT from a queue; VALID stays up until the handshake (no retraction).
* `Sink`: an S2M stream out of the DUT, READY from a `Pauses` generator; reports every stall run.
* `AxiMemory`: the AXI4 subordinate (device DRAM): a byte array, INCR bursts, W before or after AW,
  per-channel pauses, a configurable read latency, injected SLVERR on chosen lines, and protocol checks. It
  is not reset with the DUT: a controller reset leaves the memory and its responses in flight (a CXL link
  reset need not reset the DRAM controller), so late R beats and B responses still arrive.
* `AxiLiteMaster`: CSR reads and writes, one at a time.
Every part reads its inputs from the same `tb_status` sample; `PortDriver._run` is the only coroutine.
"""
from __future__ import annotations

import atexit
import collections
import ctypes
import functools
import gc
import heapq
import itertools
import random
from typing import Callable

import cocotb
import cocotb._event_loop
from cocotb import simulator
from cocotb.triggers import Event

AXI_OKAY, AXI_SLVERR = 0b00, 0b10
# 8 strobe bits -> the 8-byte data mask they enable (0xFF per set bit)
BYTE_MASKS = [bytes(0xFF if bits >> i & 1 else 0 for i in range(8)) for bits in range(256)]


def strobe_data_mask(strobe: int, line_bytes: int) -> int:
    """The data bits a WSTRB enables (0xFF per enabled byte) of a line of `line_bytes` bytes, as an int."""
    return int.from_bytes(b"".join(BYTE_MASKS[bits] for bits in strobe.to_bytes(line_bytes // 8, "little")),
                          "little")


def int_reader(handle) -> Callable[[], int]:
    """A function reading the port's value as an unsigned int, without building a cocotb LogicArray (several
    microseconds for a 600-bit payload). Ports of up to 32 bits are read as one integer (GPI's
    get_signal_val_long, what cocotb's own get() uses for them), which costs a fraction of parsing the binary
    string; the mask makes a 32-bit value that GPI returns as a negative C int unsigned again. Wider ports are
    read as the GPI handle's binary string, which a 2-state simulator (Verilator) fills with 0/1 only."""
    gpi = handle._handle
    width = len(handle)
    if width <= 32:
        get_long, mask = gpi.get_signal_val_long, (1 << width) - 1
        return lambda: get_long() & mask
    read_vector = vector_reader(handle)
    if read_vector is not None:
        return read_vector
    get_binstr = gpi.get_signal_val_binstr
    return lambda: int(get_binstr(), 2)


class Pauses:
    """Per-cycle pause decisions of one channel: independent pauses at `rate`, plus stall runs started at
    `run_rate` that last 2..`max_run` cycles (long runs exercise full queues; independent pauses do not)."""

    def __init__(self, rng: random.Random, rate: float = 0.0, run_rate: float = 0.0, max_run: int = 24):
        self.rng = rng
        self.random = rng.random       # bound once: drawn every cycle of a paused channel
        self.set(rate, run_rate, max_run)
        self.remaining = 0
        self.paused_last = False

    def set(self, rate: float = 0.0, run_rate: float = 0.0, max_run: int = 24, alternate: bool = False) -> None:
        """`alternate`: pause every other cycle, no random draw (a consumer at exactly half rate)."""
        self.rate, self.run_rate, self.max_run, self.alternate = rate, run_rate, max_run, alternate
        # `p.remaining or p.active` is false exactly when p() would return False without drawing a random number:
        # the per-cycle callers test it before paying for the call
        self.active = bool(rate or run_rate or alternate)

    def __call__(self) -> bool:
        if self.remaining:
            self.remaining -= 1
            return True
        if self.alternate:
            self.paused_last = not self.paused_last
            return self.paused_last
        if not self.active:
            return False
        roll = self.random()
        if roll < self.run_rate:
            self.remaining = self.rng.randint(1, self.max_run - 1)
            return True
        return roll < self.run_rate + self.rate


GPI_NO_DELAY = 3    # cocotb.handle._GPISetAction.NO_DELAY
NO_ALARM = float("inf")
VPI_VECTOR_VAL, VPI_NO_DELAY = 9, 1     # vpi_user.h: vpiVectorVal, vpiNoDelay


class _VpiValue(ctypes.Structure):
    """vpi_user.h s_vpi_value with the union's `vector` member (a pointer: same size and alignment as the union)."""
    _fields_ = [("format", ctypes.c_int32), ("vector", ctypes.c_void_p)]


def vector_writer(handle) -> Callable[[int], None] | None:
    """A function writing an int to a port wider than 32 bits through Verilator's own vpi_put_value as a vpiVectorVal
    (32-bit words), or None where that is not available (another simulator). cocotb's GPI writes such a port as a
    binary string, which Verilator parses bit by bit: for a 512-bit line about 3 us, a twentieth of the whole
    W = 512 random run (py-spy) for the R data and the RwD payloads. Same value, same moment (no delay, like
    `_Port`'s other writes): sim/test_loopback.py sends random multi-word Req payloads through it and compares
    every one, and the random controller runs check every DRS line against the golden model."""
    found = _verilator_vpi(handle, "vpi_put_value")
    if found is None:
        return None
    put_value, vpi_handle = found
    words = (len(handle) + 31) // 32
    vector = (ctypes.c_uint32 * (2 * words))()       # (aval, bval) per word; bval (X/Z) stays 0
    avals = memoryview(vector).cast("B").cast("I")[0::2]
    value = _VpiValue(VPI_VECTOR_VAL, ctypes.addressof(vector))
    size = 4 * words
    # the arguments as ctypes objects built once (no argtypes: converting Python ints costs as much as the call)
    arguments = (ctypes.c_void_p(vpi_handle), ctypes.c_void_p(ctypes.addressof(value)), None,
                 ctypes.c_int32(VPI_NO_DELAY))

    def write(data: int, _buffers=(value, vector)) -> None:     # (the default keeps the buffers alive)
        avals[:] = memoryview(data.to_bytes(size, "little")).cast("I")
        put_value(*arguments)
    return write


def vector_reader(handle) -> Callable[[], int] | None:
    """A function reading a port wider than 32 bits as an unsigned int through Verilator's own vpi_get_value as a
    vpiVectorVal (32-bit words), or None where that is not available. GPI's binary string costs Verilator a loop
    over every bit and Python a parse of it (`int(s, 2)`: ~0.9 us for a 600-bit DRS payload); the words are
    copied out of the buffer Verilator returns (aval of each (aval, bval) pair: a 2-state model has bval 0).
    The random controller runs check every DRS payload and W beat read this way against the golden model."""
    found = _verilator_vpi(handle, "vpi_get_value")
    if found is None:
        return None
    get_value, vpi_handle = found
    width = len(handle)
    words, mask = (width + 31) // 32, (1 << width) - 1
    value = _VpiValue(VPI_VECTOR_VAL, None)
    arguments = (ctypes.c_void_p(vpi_handle), ctypes.byref(value))
    returned = [None, None]      # the address of the words Verilator returned last, and a view of their avals

    def read(_buffers=(value,)) -> int:
        get_value(*arguments)
        address = value.vector
        if address != returned[0]:       # (Verilator returns one static buffer: the view is made once)
            words_at = (ctypes.c_uint32 * (2 * words)).from_address(address)
            returned[:] = address, memoryview(words_at).cast("B").cast("I")[0::2]
        return int.from_bytes(returned[1].tobytes(), "little") & mask
    return read


def _verilator_vpi(handle, function: str) -> tuple[Callable, int] | None:
    """Verilator's VPI `function` (from the simulator executable, which exports the VPI it serves to cocotb) with
    its results and arguments left to the caller, and the VPI handle of the port; None without Verilator."""
    if "verilator" not in getattr(cocotb, "SIM_NAME", "").lower():     # (no simulator: unit tests' mock ports)
        return None
    try:
        program = ctypes.CDLL(None)
        vpi_function, handle_by_name = getattr(program, function), program.vpi_handle_by_name
    except (OSError, AttributeError):
        return None
    handle_by_name.restype, handle_by_name.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]
    vpi_handle = handle_by_name(handle._path.encode(), None)
    if not vpi_handle:
        return None
    vpi_function.restype = None
    return vpi_function, vpi_handle


class _Port:
    """An input of the DUT, written only when its value changes, straight through the GPI handle: the drive phase
    runs right after a rising edge, where an immediate write is what cocotb's scheduled (ReadWrite-phase) write
    would do one callback later, without the per-write Python (range checks, LogicArray, an extra trigger).
    The write takes no delay (GPI's NO_DELAY, not an inertial deposit): see the module docstring. Checked with
    Verilator (the same cycle counts and results as scheduled and as inertial writes); another simulator may
    need cocotb's scheduled writes back."""

    def __init__(self, handle, value: int = 0):
        self.gpi = gpi = handle._handle
        self.width = width = len(handle)
        self.write_vector = vector_writer(handle) if width > 32 else None
        # the write chosen once (set() runs for a port every few cycles): GPI's integer write up to 32 bits, the
        # VPI word vector above, else the binary string
        if width <= 32:
            self.write = functools.partial(gpi.set_signal_val_int, GPI_NO_DELAY)
        elif self.write_vector is not None:
            self.write = self.write_vector
        else:
            self.write = lambda value: gpi.set_signal_val_binstr(GPI_NO_DELAY, format(value, f"0{width}b"))
        self.last = None
        self.set(value)

    def set(self, value: int) -> None:
        if value != self.last:
            self.write(value)
            self.last = value


class Source:
    """M2S stream into the DUT. `on_accept(payload)` reports every transfer the DUT accepted."""

    # when sample() and drive() can change anything (PortDriver calls them only then, see PortDriver.add)
    SAMPLE_WHEN = "{part}.driving"
    DRIVE_WHEN = "{part}.queue and not {part}.driving or {part}.driving != {part}.valid.last"

    def __init__(self, driver: "PortDriver", prefix: str, on_accept: Callable[[int], None] | None = None):
        dut = driver.dut
        self.name = prefix
        self.valid = _Port(getattr(dut, f"{prefix}__valid"))
        self.payload = _Port(getattr(dut, f"{prefix}__payload"))
        self.ready_mask = driver.mask(f"{prefix}__ready")
        self.queue: collections.deque[int] = collections.deque()
        self.pauses = Pauses(driver.rng)
        self.on_accept = on_accept
        self.driving = False
        self.sent = 0
        self.stall = 0
        self.on_stall: Callable[[str, int], None] | None = None

    def send_nowait(self, payload: int) -> None:
        self.queue.append(int(payload))

    def idle(self) -> bool:
        return not self.queue

    def flush(self) -> list[int]:
        dropped = list(self.queue)
        self.queue.clear()
        self.driving = False
        self.valid.set(0)
        return dropped

    def drive(self) -> None:
        if not self.driving and self.queue:
            pauses = self.pauses
            if not ((pauses.remaining or pauses.active) and pauses()):
                self.payload.set(self.queue[0])
                self.driving = True
        if self.driving != self.valid.last:
            self.valid.set(int(self.driving))

    def sample(self, status: int) -> None:
        if not self.driving:
            return
        if status & self.ready_mask:
            payload = self.queue.popleft()
            self.driving = False
            self.sent += 1
            if self.stall and self.on_stall:
                self.on_stall(self.name, self.stall)
            self.stall = 0
            if self.on_accept is not None:
                self.on_accept(payload)
        else:
            self.stall += 1


class Sink:
    """S2M stream out of the DUT: READY from `pauses`; `callback(payload)` for every transfer."""

    # when sample() and drive() can change anything (PortDriver calls them only then, see PortDriver.add)
    SAMPLE_WHEN = "status & {part}.valid_mask or {part}.stall"
    DRIVE_WHEN = "{part}.pauses.remaining or {part}.pauses.active or not {part}.ready.last"

    def __init__(self, driver: "PortDriver", prefix: str, callback: Callable[[int], None]):
        dut = driver.dut
        self.name = prefix
        self.ready = _Port(getattr(dut, f"{prefix}__ready"))
        self.read_payload = int_reader(getattr(dut, f"{prefix}__payload"))
        self.valid_mask = driver.mask(f"{prefix}__valid")
        self.pauses = Pauses(driver.rng)
        self.callback = callback
        self.received = 0
        self.stall = 0
        self.held = 0           # the payload of a stalled transfer
        self.on_stall: Callable[[str, int], None] | None = None
        self.driver = driver

    def drive(self) -> None:
        pauses = self.pauses
        ready = 0 if (pauses.remaining or pauses.active) and pauses() else 1
        if ready != self.ready.last:
            self.ready.set(ready)

    def sample(self, status: int) -> None:
        valid = status & self.valid_mask
        if self.driver.in_reset:
            self.stall = 0
            return
        if not valid:
            if self.stall:
                self.driver.protocol_errors.append(f"{self.name}: VALID dropped after {self.stall} stalled cycles "
                                                   f"without a handshake (cycle {self.driver.cycle})")
                self.stall = 0
            return
        if self.ready.last:
            payload = self.read_payload()
            if self.stall and payload != self.held:
                # a stalled transfer must keep its payload (DevLoad included) until it is taken: compared
                # between the first stalled cycle and the handshake (one extra read per stall run)
                self.driver.protocol_errors.append(f"{self.name}: payload changed while VALID waited for READY "
                                                   f"(cycle {self.driver.cycle})")
            self.received += 1
            if self.stall and self.on_stall:
                self.on_stall(self.name, self.stall)
            self.stall = 0
            self.callback(payload)
        else:
            if not self.stall:
                self.held = self.read_payload()
            self.stall += 1


class AxiMemory:
    """AXI4 subordinate over a byte array (see the module docstring). Callbacks:
    on_read_burst(byte_address, beats, arid), on_write_burst(byte_address, beats, [(data, strobe), ...], awid),
    on_read_response(rresp), on_write_response(bresp), on_stall(channel, cycles)."""

    # when sample() can change anything (PortDriver calls it only then, see PortDriver.add): something offered,
    # presented or stalled (no VALID dropped after a stall otherwise; bursts complete only when an AW or W is
    # taken)
    SAMPLE_WHEN = ("status & {part}.address_data_valid or {part}.r_presenting or {part}.b_presenting"
                   " or {part}.stalls['ar'] or {part}.stalls['aw'] or {part}.stalls['w']")

    def __init__(self, driver: "PortDriver", prefix: str, size: int, line_bytes: int, *, read_latency: int = 2,
                 max_reads: int = 8):
        dut = driver.dut
        self.driver = driver
        self.size = size
        self.line_bytes = line_bytes
        self.line_size = (line_bytes - 1).bit_length()     # AxSIZE of a full-width beat
        self.memory = bytearray(size)     # plain bytes: a line goes to and from an int without numpy per beat
        self.read_latency = read_latency
        self.max_reads = max_reads          # bursts the memory queues before it stops accepting AR
        rng = driver.rng
        self.pauses = {channel: Pauses(rng) for channel in ("aw", "w", "b", "ar", "r")}
        self._pauses = tuple(self.pauses[channel] for channel in ("ar", "aw", "w", "r", "b"))   # drive()'s order
        self.read_error_lines: set[int] = set()
        self.write_error_lines: set[int] = set()
        self.strobe_masks: dict[int, int] = {}       # WSTRB -> the line's data bit mask (_complete_write)

        def handle(name):
            return getattr(dut, f"{prefix}__{name}")
        self.arready, self.awready, self.wready = (_Port(handle(n)) for n in ("arready", "awready", "wready"))
        self.rvalid, self.rlast, self.rresp, self.rid = (_Port(handle(n)) for n in ("rvalid", "rlast", "rresp", "rid"))
        self.rdata = _Port(handle("rdata"))
        self.bvalid, self.bresp, self.bid = (_Port(handle(n)) for n in ("bvalid", "bresp", "bid"))
        self.ar = {n: int_reader(handle(f"ar{n}")) for n in ("addr", "len", "id", "size", "burst")}
        self.aw = {n: int_reader(handle(f"aw{n}")) for n in ("addr", "len", "id", "size", "burst")}
        self.wdata, self.wstrb, self.wlast = (int_reader(handle(n)) for n in ("wdata", "wstrb", "wlast"))
        self.m = {name: driver.mask(f"{prefix}__{name}") for name in ("arvalid", "rready", "awvalid", "wvalid",
                                                                      "bready")}
        self.address_data_valid = self.m["arvalid"] | self.m["awvalid"] | self.m["wvalid"]
        self.reads: collections.deque[list] = collections.deque()     # [id, next line, beats left, ready_at]
        self.writes: collections.deque[list] = collections.deque()    # [id, first line, beats, stale] AW accepted
        self.stale_w_beats = 0    # W beats taken before a controller reset for an AW not yet accepted
        self.w_beats: collections.deque[tuple] = collections.deque()   # (data, strobe, last, reset epoch)
        self.responses: list[tuple[int, int, int]] = []    # (id, resp, ready_at): in order per ID only
        self.b_index = 0                                   # the response being presented
        self.epoch = 0                                     # controller resets so far
        self.r_presenting = False
        self.b_presenting = False
        self.stalls = {channel: 0 for channel in ("aw", "w", "ar", "r", "b")}
        self.held: dict[str, tuple] = {}
        self.on_read_burst = self.on_write_burst = self.on_read_response = self.on_write_response = None
        self.on_stall: Callable[[str, int], None] | None = None
        self.errors = driver.protocol_errors   # AXI protocol violations seen on the manager side

    # --- backdoor --------------------------------------------------------------------------------------------
    def read(self, address: int, length: int) -> bytes:
        return bytes(self.memory[address:address + length])

    def write(self, address: int, data: bytes) -> None:
        self.memory[address:address + len(data)] = data

    def controller_reset(self) -> None:
        """The controller is reset: bursts it issued before are no longer reported (their W beats, sent by the
        controller's drain after the reset, complete them without reaching a scoreboard)."""
        for write in self.writes:
            write[3] = True
        self.stale_w_beats = max(0, len(self.w_beats) - sum(write[2] for write in self.writes))
        self.epoch += 1

    def idle(self) -> bool:
        """Nothing owed either way: no burst waiting for beats or responses, no W beat waiting for its AW."""
        return not any(self.outstanding()) and not self.w_beats

    def outstanding(self) -> tuple[int, int, int]:
        """(R beats owed, B responses owed, W beats still expected) for accepted AR/AW bursts."""
        r_beats = sum(burst[2] for burst in self.reads)
        w_beats = sum(write[2] for write in self.writes) - len(self.w_beats)
        return r_beats, len(self.responses) + len(self.writes), max(0, w_beats)

    # --- per cycle -------------------------------------------------------------------------------------------
    def drive(self) -> None:
        cycle = self.driver.cycle
        # (x.remaining or x.active) and x() is x() without the call when x cannot pause (see Pauses.set)
        ar, aw, w, r, b = self._pauses
        reads = self.reads
        # the READY/VALID ports are compared here before calling set(): most cycles change none of them
        ready = 0 if len(reads) >= self.max_reads or ((ar.remaining or ar.active) and ar()) else 1
        if ready != self.arready.last:
            self.arready.set(ready)
        ready = 0 if (aw.remaining or aw.active) and aw() else 1
        if ready != self.awready.last:
            self.awready.set(ready)
        ready = 0 if (w.remaining or w.active) and w() else 1
        if ready != self.wready.last:
            self.wready.set(ready)
        if (not self.r_presenting and reads and reads[0][3] <= cycle
                and not ((r.remaining or r.active) and r())):
            arid, line, beats, _ = reads[0]
            address = line * self.line_bytes
            self.rdata.set(int.from_bytes(self.memory[address:address + self.line_bytes], "little"))
            self.rresp.set(AXI_SLVERR if line in self.read_error_lines else AXI_OKAY)
            self.rlast.set(int(beats == 1))
            self.rid.set(arid)
            self.r_presenting = True
        if self.r_presenting != self.rvalid.last:
            self.rvalid.set(int(self.r_presenting))
        if not self.b_presenting and self.responses and not ((b.remaining or b.active) and b()):
            # AXI orders B responses per ID only: present the oldest response of a randomly chosen ID
            heads, seen = [], set()
            for index, (bid, _, ready_at) in enumerate(self.responses):
                if bid not in seen:
                    seen.add(bid)
                    if ready_at <= cycle:
                        heads.append(index)
            if heads:
                self.b_index = self.driver.rng.choice(heads)
                bid, bresp, _ = self.responses[self.b_index]
                self.bid.set(bid)
                self.bresp.set(bresp)
                self.b_presenting = True
        if self.b_presenting != self.bvalid.last:
            self.bvalid.set(int(self.b_presenting))

    def _hold(self, channel: str, accepted: bool, read: Callable[[], tuple]) -> tuple | None:
        """While the DUT's VALID waits for our READY its payload must not change (AXI A3.2.1): the payload of the
        first stalled cycle is compared with the one taken at the handshake. Returns the payload when taken."""
        stalled = self.stalls[channel]
        if accepted:
            value = read()
            if stalled and value != self.held[channel]:
                self.driver.protocol_errors.append(f"axi {channel}: payload changed while VALID waited for READY "
                                                   f"(cycle {self.driver.cycle})")
            return value
        if not stalled:
            self.held[channel] = read()
        return None

    def _valid_dropped(self, channel: str, status: int) -> None:
        """Called when the DUT's VALID of `channel` is 0: an unfinished handshake is a protocol error."""
        if self.stalls[channel] and not self.driver.in_reset:
            self.driver.protocol_errors.append(f"axi {channel}: VALID dropped after {self.stalls[channel]} stalled "
                                               f"cycles without a handshake (cycle {self.driver.cycle})")
        self.stalls[channel] = 0

    def _stall(self, channel: str, stalled: bool) -> None:
        if stalled:
            self.stalls[channel] += 1
        elif self.stalls[channel]:
            if self.on_stall:
                self.on_stall(channel, self.stalls[channel])
            self.stalls[channel] = 0

    def _address_channel(self, channel: str, kind: str, fields: dict, ready: int) -> tuple[int, int, int] | None:
        """AR or AW with VALID = 1: `_hold`, `_check_burst` and `_stall` in one, reading the address and length
        once. Returns (byte address, beats, ID) when taken."""
        stalled = self.stalls[channel]
        if not ready:
            if not stalled:
                self.held[channel] = (fields["addr"](), fields["len"]())
            self.stalls[channel] = stalled + 1
            return None
        held = (fields["addr"](), fields["len"]())
        if stalled:
            if held != self.held[channel]:
                self.driver.protocol_errors.append(f"axi {channel}: payload changed while VALID waited for READY "
                                                   f"(cycle {self.driver.cycle})")
            if self.on_stall:
                self.on_stall(channel, stalled)
            self.stalls[channel] = 0
        return self._check_burst(kind, fields, held)

    def _check_burst(self, kind: str, fields: dict, address_len: tuple[int, int] | None = None
                     ) -> tuple[int, int, int]:
        address, length = (fields["addr"](), fields["len"]()) if address_len is None else address_len
        beats = length + 1
        axi_id, size, burst = fields["id"](), fields["size"](), fields["burst"]()
        if size != self.line_size or burst != 0b01 or address % self.line_bytes:
            self.errors.append(f"{kind} burst at {address:#x}: size {size}, burst {burst} (want a full-width INCR "
                               f"burst at a line address)")
        if address // 4096 != (address + beats * self.line_bytes - 1) // 4096:
            self.errors.append(f"{kind} burst at {address:#x} x{beats} crosses a 4 KiB boundary")
        if address + beats * self.line_bytes > self.size:
            self.errors.append(f"{kind} burst at {address:#x} x{beats} runs past the memory ({self.size} bytes)")
        return address, beats, axi_id

    def sample(self, status: int) -> None:
        m = self.m
        cycle = self.driver.cycle
        stalls = self.stalls
        # _valid_dropped and _stall change nothing for a channel with no stall run: called only when they would
        if status & m["arvalid"]:
            burst = self._address_channel("ar", "read", self.ar, self.arready.last)
            if burst is not None:
                address, beats, arid = burst
                first = address // self.line_bytes
                self.reads.append([arid, first, beats, cycle + self.read_latency])
                if self.on_read_burst:
                    self.on_read_burst(address, beats, arid)
        elif stalls["ar"]:
            self._valid_dropped("ar", status)
        if status & m["awvalid"]:
            burst = self._address_channel("aw", "write", self.aw, self.awready.last)
            if burst is not None:
                address, beats, awid = burst
                stale = self.stale_w_beats > 0
                self.stale_w_beats = max(0, self.stale_w_beats - beats)
                self.writes.append([awid, address // self.line_bytes, beats, stale])
        elif stalls["aw"]:
            self._valid_dropped("aw", status)
        if status & m["wvalid"]:
            accepted = self.wready.last
            beat = self._hold("w", accepted, self._read_w_beat)
            if beat is not None:
                self.w_beats.append((*beat, self.epoch))
            if stalls["w"] or not accepted:
                self._stall("w", not accepted)
        elif stalls["w"]:
            self._valid_dropped("w", status)
        while self.writes and len(self.w_beats) >= self.writes[0][2]:
            self._complete_write(cycle)
        if self.r_presenting:
            ready = status & m["rready"]
            if ready:
                self.r_presenting = False
                burst = self.reads[0]
                if self.on_read_response:
                    self.on_read_response(self.rresp.last)
                burst[1] += 1
                burst[2] -= 1
                if burst[2] == 0:
                    self.reads.popleft()
            if stalls["r"] or not ready:
                self._stall("r", not ready)
        if self.b_presenting:
            ready = status & m["bready"]
            if ready:
                self.b_presenting = False
                del self.responses[self.b_index]
                if self.on_write_response:
                    self.on_write_response(self.bresp.last)
            if stalls["b"] or not ready:
                self._stall("b", not ready)

    def _read_w_beat(self) -> tuple[int, int, int]:
        return self.wdata(), self.wstrb(), self.wlast()

    def _complete_write(self, cycle: int) -> None:
        awid, first, beats, stale = self.writes.popleft()
        w_beats = self.w_beats
        data = [w_beats.popleft() for _ in range(beats)]
        values, strobes, lasts, _ = zip(*data)        # (tuples, one per field)
        if stale and any(strobe for _, strobe, _, epoch in data if epoch == self.epoch):
            # beats the controller sent after its reset only complete a burst the memory accepted before it
            self.errors.append(f"write burst at line {first:#x}: a W beat sent after the controller's reset to "
                               f"complete it has WSTRB != 0 (the drain must not change memory)")
        if lasts[-1] != 1 or sum(lasts) != 1:       # WLAST on the last beat only (1-bit values)
            self.errors.append(f"write burst at line {first:#x} x{beats}: WLAST pattern {list(lasts)}")
        failed = bool(self.write_error_lines) and any(first + beat in self.write_error_lines for beat in range(beats))
        line_bytes = self.line_bytes
        all_bytes = (1 << line_bytes) - 1
        memory = self.memory
        if strobes.count(all_bytes) == beats:    # the common burst of whole lines: one copy
            address = first * line_bytes
            memory[address:address + beats * line_bytes] = b"".join([value.to_bytes(line_bytes, "little")
                                                                     for value in values])
        else:
            for beat, (value, strobe, _, _) in enumerate(data):
                address = (first + beat) * line_bytes
                if strobe == all_bytes:      # a whole-line beat, without a mask
                    memory[address:address + line_bytes] = value.to_bytes(line_bytes, "little")
                elif strobe:
                    mask = self.strobe_masks.get(strobe)
                    if mask is None:     # built once per strobe pattern (weight-major writes repeat a few)
                        if len(self.strobe_masks) >= 1 << 12:
                            self.strobe_masks.clear()
                        mask = self.strobe_masks[strobe] = strobe_data_mask(strobe, line_bytes)
                    old = int.from_bytes(memory[address:address + line_bytes], "little")
                    memory[address:address + line_bytes] = (old & ~mask | value & mask).to_bytes(line_bytes, "little")
        self.responses.append((awid, AXI_SLVERR if failed else AXI_OKAY, cycle + 1))
        if self.on_write_burst and not stale:
            self.on_write_burst(first * line_bytes, beats, list(zip(values, strobes)), awid)


class AxiLiteMaster:
    """CSR accesses over AXI4-Lite, one at a time: `await write(address, value)` -> BRESP,
    `await read(address)` -> (data, RRESP)."""

    # when sample() and drive() can change anything (PortDriver calls them only then, see PortDriver.add)
    SAMPLE_WHEN = "{part}.state is not None or status & {part}.response_mask"
    DRIVE_WHEN = "{part}.state is not None or {part}.ops or not {part}.quiet"

    def __init__(self, driver: "PortDriver", prefix: str):
        dut = driver.dut

        def handle(name):
            return getattr(dut, f"{prefix}__{name}")
        self.awaddr, self.awvalid, self.wdata, self.wstrb, self.wvalid, self.bready = (
            _Port(handle(n)) for n in ("awaddr", "awvalid", "wdata", "wstrb", "wvalid", "bready"))
        self.araddr, self.arvalid, self.rready = (_Port(handle(n)) for n in ("araddr", "arvalid", "rready"))
        self.handshake_ports = (self.awvalid, self.wvalid, self.bready, self.arvalid, self.rready)
        self.handshakes = (False,) * 5      # what drive() last wrote to handshake_ports (all start at 0)
        _Port(handle("awprot")), _Port(handle("arprot"))
        self.bresp, self.rresp, self.rdata = (int_reader(handle(n)) for n in ("bresp", "rresp", "rdata"))
        self.m = {name: driver.mask(f"{prefix}__{name}") for name in ("awready", "wready", "bvalid", "arready",
                                                                      "rvalid")}
        self.response_mask = self.m["bvalid"] | self.m["rvalid"]
        self.ops: collections.deque = collections.deque()
        self.state: dict | None = None
        self.quiet = False          # the last drive() wrote no access (all VALID/READY 0)
        self.driver = driver
        self.errors = driver.protocol_errors

    async def write(self, address: int, value: int) -> int:
        op = {"kind": "write", "address": address, "value": value, "done": Event()}
        self.ops.append(op)
        await op["done"].wait()
        return op["resp"]

    async def read(self, address: int) -> tuple[int, int]:
        op = {"kind": "read", "address": address, "done": Event()}
        self.ops.append(op)
        await op["done"].wait()
        return op["data"], op["resp"]

    def idle(self) -> bool:
        return self.state is None and not self.ops

    def drive(self) -> None:
        if self.state is None and not self.ops and self.quiet:
            return                   # no access: every VALID and READY already written 0
        self.quiet = self.state is None and not self.ops
        if self.state is None and self.ops:
            self.state = op = self.ops.popleft()
            if op["kind"] == "write":
                op["aw"] = op["w"] = False
                self.awaddr.set(op["address"])
                self.wdata.set(op["value"])
                self.wstrb.set(0xF)
            else:
                op["ar"] = False
                self.araddr.set(op["address"])
        op = self.state
        writing = op is not None and op["kind"] == "write"
        reading = op is not None and op["kind"] == "read"
        handshakes = (writing and not op["aw"], writing and not op["w"], writing, reading and not op["ar"], reading)
        if handshakes != self.handshakes:     # most cycles of an access change none of the five
            self.handshakes = handshakes
            for port, value in zip(self.handshake_ports, handshakes):
                port.set(int(value))

    def sample(self, status: int) -> None:
        op = self.state
        if op is None:
            if status & self.response_mask and not self.driver.in_reset:
                self.errors.append(f"CSR port: BVALID/RVALID with no access in progress (cycle {self.driver.cycle})")
            return
        m = self.m
        if op["kind"] == "write":
            if self.awvalid.last and status & m["awready"]:
                op["aw"] = True
            if self.wvalid.last and status & m["wready"]:
                op["w"] = True
            if status & m["bvalid"]:
                if not (op["aw"] and op["w"]):
                    self.errors.append(f"CSR write {op['address']:#x}: BVALID before the AW and W handshakes")
                op["resp"] = self.bresp()
                self._done(op)
        else:
            if self.arvalid.last and status & m["arready"]:
                op["ar"] = True
            if status & m["rvalid"]:
                if not op["ar"]:
                    self.errors.append(f"CSR read {op['address']:#x}: RVALID before the AR handshake")
                op["data"], op["resp"] = self.rdata(), self.rresp()
                self._done(op)

    def _done(self, op: dict) -> None:
        self.state = None
        op["done"].set()


class PortDriver:
    """Owns the clock loop: at every rising edge, every registered part samples the cycle that just ended, then
    drives the next one."""

    def __init__(self, dut, clk, rng: random.Random, status_names: tuple[str, ...]):
        self.dut = dut
        self.clk = clk
        self.rng = rng
        self.status_names = status_names
        self.status = dut.tb_status
        self.reset_mask = 1 << len(status_names)    # the harness appends the reset to the status bits
        self.cycle = 0
        self.in_reset = True       # the DUT's reset during the cycle being sampled
        self.parts: list = []      # in callback order
        self._sample_parts, self._drive_parts = self._compile_parts()
        self.protocol_errors: list[str] = []   # handshake-rule violations by the DUT, any port
        self.end_of_cycle: list[Callable[[], None]] = []   # called after every part sampled the cycle
        self.tick = Event()        # set (and cleared) after a step that next_cycle() callers wait for
        self.tick_waiters = False
        self.alarms: list[list] = []      # heap of [cycle, sequence, event] (event None: cancelled)
        self.next_alarm = NO_ALARM        # the heap's first cycle: step() tests one int per cycle
        self.conditions: list[tuple[Callable[[], bool], int | None, Event]] = []   # wait_for(): (test, deadline, event)
        self._alarm_sequence = itertools.count()
        self._task = None

    def mask(self, name: str) -> int:
        return 1 << self.status_names.index(name)

    def add(self, part):
        """Register a part: `sample(status)` and `drive()` are called every cycle, in the order parts were added,
        except where the part's SAMPLE_WHEN / DRIVE_WHEN expression (class attributes, optional) says the call
        would change nothing."""
        self.parts.append(part)
        self._sample_parts, self._drive_parts = self._compile_parts()
        return part

    def _compile_parts(self) -> tuple[Callable[[int], None], Callable[[], None]]:
        """Two generated functions, one sampling every part and one driving every part, each a flat sequence of
        `if <part's condition>: part.sample(status)` in callback order: most cycles most parts have nothing to
        do, and testing that inline spares a Python call per part and cycle (and the loop) where the method
        would return at once. (Generated like the field packers: sim/scoreboard.py `field_packer`.)"""
        names = [f"part{index}" for index in range(len(self.parts))]
        parameters = "".join(f", {name}={name}" for name in names)

        def body(method: str, condition_attribute: str, argument: str) -> list[str]:
            lines = []
            for name, part in zip(names, self.parts):
                condition = getattr(part, condition_attribute, None)
                call = f"{name}.{method}({argument})"
                lines.append(f"    if {condition.format(part=name)}: {call}" if condition else f"    {call}")
            return lines + ["    pass"]

        source = "\n".join([f"def sample_parts(status{parameters}):", *body("sample", "SAMPLE_WHEN", "status"),
                            f"def drive_parts({parameters.lstrip(', ')}):", *body("drive", "DRIVE_WHEN", "")])
        namespace = dict(zip(names, self.parts))
        exec(compile(source, "<port driver parts>", "exec"), namespace)      # noqa: S102 - our own expressions
        return namespace["sample_parts"], namespace["drive_parts"]

    def start(self) -> None:
        self._task = cocotb.start_soon(self._run())

    def step(self, status: int) -> None:
        """Sample the cycle that ended (its `tb_status`), drive the next one, then wake the coroutines waiting
        for a cycle. They run after this step, in the same time step: what they write (a reset, a queued
        request) takes effect in the cycle just driven, and the driver samples it after the next edge."""
        self.in_reset = status & self.reset_mask != 0
        self._sample_parts(status)
        for hook in self.end_of_cycle:
            hook()
        self.cycle = cycle = self.cycle + 1
        self._drive_parts()
        if cycle >= self.next_alarm:
            alarms = self.alarms
            while alarms and alarms[0][0] <= cycle:
                event = heapq.heappop(alarms)[2]
                if event is not None:
                    event.set()         # wakes the coroutines waiting now; cleared so that a later wait blocks
                    event.clear()
            self.next_alarm = alarms[0][0] if alarms else NO_ALARM
        if self.conditions:       # where a next_cycle() poll would wake and test them
            for entry in list(self.conditions):
                condition, deadline, event = entry
                if condition() or (deadline is not None and cycle >= deadline):
                    self.conditions.remove(entry)
                    event.set()
        if self.tick_waiters:     # most cycles nobody waits: no trigger to fire
            self.tick_waiters = False
            self.tick.set()
            self.tick.clear()

    def next_cycle(self):
        """A trigger: the next step of the driver. Coroutines of the testbench wait for cycles this way (never on
        the clock itself), so they always run after the driver's step of the cycle, in a fixed order."""
        self.tick_waiters = True
        return self.tick.wait()

    def alarm(self, cycle: int, event: Event) -> list:
        """Set and clear `event` after the driver's step of `cycle` (the next step if that is past); returns the
        alarm, for cancel_alarm."""
        alarm = [cycle, next(self._alarm_sequence), event]
        heapq.heappush(self.alarms, alarm)
        self.next_alarm = min(self.next_alarm, cycle)
        return alarm

    @staticmethod
    def cancel_alarm(alarm: list) -> None:
        """The alarm will not set its event (it stays in the heap until its cycle)."""
        alarm[2] = None

    async def wait_for(self, condition: Callable[[], bool], deadline: int | None = None) -> None:
        """Wait for the first step after which `condition()` holds (or whose cycle reaches `deadline`): what a loop
        awaiting next_cycle() and testing `condition` does, with one wake-up instead of one per cycle (a quiesce
        waits hundreds of cycles, at every CSR write and phase change). The step tests `condition` where it would
        wake next_cycle() waiters, so it must be a condition only the step makes true (a request answered, a
        queue drained); a coroutine may make it false again (the caller tests it again when it wakes)."""
        done = Event()
        self.conditions.append((condition, deadline, done))
        await done.wait()

    async def cycles(self, count: int) -> None:
        """Wait `count` driver steps with one wake-up."""
        if count <= 0:
            return
        done = Event()
        self.alarm(self.cycle + count, done)
        await done.wait()

    async def _run(self) -> None:
        """Run `step` from a GPI value-change callback on the clock's rising edge, re-registered at every edge,
        instead of a task awaiting RisingEdge: the same simulator callback, without a Trigger object and a task
        resume per cycle (the cocotb scheduler still runs the coroutines `step` woke, right after it). An
        exception in `step` ends the callbacks and is raised here, so it fails the test like before; the end of
        the test (which cancels this task) ends them too."""
        read_status = int_reader(self.status)
        if len(self.status) < 32:      # read every cycle: GPI's integer read itself (no sign to mask off)
            read_status = self.status._handle.get_signal_val_long
        step = self.step
        for part in self.parts:       # the first cycle
            part.drive()
        quiet_garbage_collector()
        failed = Event()
        failure: list[BaseException] = []
        event_loop = cocotb._event_loop._inst
        run_event_loop = event_loop.run
        clock, register, rising = self.clk._handle, simulator.register_value_change_callback, simulator.RISING

        stopped = False

        def on_rising_edge() -> None:
            if stopped:      # the test that started this driver has ended: its last registration lapses
                return
            try:
                step(read_status())
            except BaseException as error:     # noqa: BLE001 - re-raised by _run, in the test's task
                failure.append(error)
                failed.set()
            else:
                register(clock, on_rising_edge, rising)
            if event_loop._callbacks:      # the coroutines step() woke, if any
                run_event_loop()
        register(clock, on_rising_edge, rising)
        try:
            await failed.wait()
        finally:
            # also when cocotb cancels this task at the end of its test: a module's next test starts a driver of
            # its own, and two drivers stepping the same ports would fight
            stopped = True
        raise failure[0]


def quiet_garbage_collector() -> None:
    """Python's full (generation 2) collections rescanned every long-lived object of the testbench and the golden
    model several times a run, and once more at interpreter exit: 10-20 % of a `smartquant sim` run's CPU time
    (py-spy). The objects alive now (modules, golden model, memory) are frozen out of collection, young cyclic
    garbage (finished coroutines) is still collected by generations 0 and 1, and the exit scan is skipped."""
    global _exit_scan_skipped
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 1_000_000_000)
    if not _exit_scan_skipped:     # once per process: a module's tests each start a driver
        atexit.register(gc.freeze)
        _exit_scan_skipped = True


_exit_scan_skipped = False
