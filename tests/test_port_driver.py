"""The port driver's handshake checks (sim/port_driver.py) fail when the DUT breaks a rule: no simulator, the
ports are stand-ins with the GPI handle interface the driver uses."""
import random

from cocotb.triggers import Event

from smartquant.sim.port_driver import (
    AXI_OKAY, AxiLiteMaster, AxiMemory, Pauses, PortDriver, Sink, Source, int_reader)

STATUS = ("s2m_drs__valid", "axi__arvalid", "axi__rready", "axi__awvalid", "axi__wvalid", "axi__bready")


class FakeGpi:
    def __init__(self, width):
        self.width, self.value = width, 0

    def get_signal_val_binstr(self):
        return format(self.value, f"0{self.width}b")

    def get_signal_val_long(self):
        # a C int, as GPI returns it: a 32-bit value with bit 31 set comes back negative
        return self.value - (1 << 32) if self.width == 32 and self.value >> 31 else self.value

    def set_signal_val_int(self, action, value):
        self.value = value

    def set_signal_val_binstr(self, action, value):
        self.value = int(value, 2)


class FakeSignal:
    def __init__(self, width=1):
        self._handle = FakeGpi(width)

    def __len__(self):
        return self._handle.width

    def set(self, value):
        self._handle.value = value


class FakeDut:
    def __init__(self):
        self.signals = {}

    def __getattr__(self, name):
        if name.startswith("__") or name == "signals":
            raise AttributeError(name)
        return self.signals.setdefault(name, FakeSignal(64))


def make_driver():
    dut = FakeDut()
    dut.signals["tb_status"] = FakeSignal(len(STATUS))
    return dut, PortDriver(dut, None, random.Random(1), STATUS)


def cycle(driver, status):
    """One clock cycle: the parts drive it, then sample the DUT's (stand-in) outputs of it."""
    for part in driver.parts:
        part.drive()
    driver.in_reset = False
    for part in driver.parts:
        part.sample(status)
    driver.cycle += 1


def test_sink_reports_a_payload_that_changes_while_stalled_and_a_dropped_valid():
    dut, driver = make_driver()
    got = []
    sink = driver.add(Sink(driver, "s2m_drs", got.append))
    valid = driver.mask("s2m_drs__valid")
    sink.pauses.set(1.0)                       # READY low: the transfer stalls
    dut.s2m_drs__payload.set(5)
    cycle(driver, valid)
    dut.s2m_drs__payload.set(6)                # changed while waiting
    sink.pauses.set(0.0)
    cycle(driver, valid)
    assert got == [6] and "payload changed" in driver.protocol_errors[-1]
    sink.pauses.set(1.0)
    cycle(driver, valid)
    cycle(driver, 0)                           # VALID dropped without a handshake
    assert "VALID dropped" in driver.protocol_errors[-1]
    assert len(driver.protocol_errors) == 2


def test_sink_accepts_a_held_payload():
    dut, driver = make_driver()
    got = []
    sink = driver.add(Sink(driver, "s2m_drs", got.append))
    valid = driver.mask("s2m_drs__valid")
    dut.s2m_drs__payload.set(9)
    sink.pauses.set(1.0)
    cycle(driver, valid)
    cycle(driver, valid)
    sink.pauses.set(0.0)
    cycle(driver, valid)
    assert got == [9] and not driver.protocol_errors


def test_axi_memory_flags_a_moving_ar_and_orders_b_per_id_only():
    dut, driver = make_driver()
    memory = driver.add(AxiMemory(driver, "axi", 1 << 16, 64))
    memory.pauses["ar"].set(1.0)
    dut.axi__arsize.set(6)
    dut.axi__arburst.set(1)
    dut.axi__araddr.set(0x40)
    cycle(driver, driver.mask("axi__arvalid"))
    dut.axi__araddr.set(0x80)                  # AR address moved before ARREADY
    memory.pauses["ar"].set(0.0)
    cycle(driver, driver.mask("axi__arvalid"))
    assert "axi ar: payload changed" in driver.protocol_errors[-1]
    # B responses of different IDs may come in any order, of one ID in order
    memory.responses = [(1, AXI_OKAY, 0), (1, 2, 0), (2, AXI_OKAY, 0)]
    orders = set()
    for seed in range(20):
        driver.rng.seed(seed)
        memory.b_presenting = False
        memory.drive()
        orders.add(memory.responses[memory.b_index][:2])
    assert orders == {(1, AXI_OKAY), (2, AXI_OKAY)}     # never the second response of ID 1 first


def test_int_reader_reads_narrow_ports_unsigned_and_wide_ports_whole():
    """Ports of up to 32 bits are read as one GPI integer (negative for bit 31 in C): the value must come back
    unsigned; wider ports through the binary string."""
    for width, value in ((1, 1), (15, 0x5A5A), (32, 0xFFFF_FFFF), (32, 0x8000_0001), (33, 1 << 32),
                         (600, (1 << 599) | 12345)):
        signal = FakeSignal(width)
        signal.set(value)
        assert int_reader(signal)() == value, (width, hex(value))


def test_wait_for_wakes_at_the_first_step_after_which_its_condition_holds_or_at_its_deadline():
    """TB.quiesce and rwd_accepted wait this way instead of polling every cycle: the waiter must wake in exactly
    the step a next_cycle() poll would have seen the condition (or the deadline) first."""
    _, driver = make_driver()
    drained_at = 5
    waits = {}
    for name, deadline in (("condition", None), ("deadline", 3)):
        waiter = driver.wait_for(lambda: driver.cycle >= drained_at, deadline)
        waiter.send(None)                      # runs to its await: registered with the driver
        waits[name] = (waiter, driver.conditions[-1][2])
    woke = {}
    for _ in range(8):
        driver.step(0)
        for name, (_, event) in waits.items():
            if event.is_set() and name not in woke:
                woke[name] = driver.cycle
    assert woke == {"deadline": 3, "condition": drained_at} and not driver.conditions
    for waiter, _ in waits.values():
        waiter.close()


def test_a_cancelled_alarm_sets_nothing():
    """traffic.py cancels its stuck-stimulus deadline once the request is issued: a later waiter on the same
    event must not be woken by it."""
    _, driver = make_driver()

    class Recorder:
        def __init__(self):
            self.sets = []

        def set(self):
            self.sets.append(driver.cycle)

        def clear(self):
            pass
    kept, cancelled = Recorder(), Recorder()
    driver.alarm(2, kept)
    driver.cancel_alarm(driver.alarm(3, cancelled))
    for _ in range(5):
        driver.step(0)
    assert kept.sets == [2] and cancelled.sets == [] and not driver.alarms


def test_step_calls_sample_and_drive_in_callback_order_where_the_parts_condition_allows():
    """PortDriver.add compiles the per-cycle calls into two functions that skip a part whose SAMPLE_WHEN /
    DRIVE_WHEN is false; a part without them is called every cycle."""
    _, driver = make_driver()
    calls = []

    class Gated:
        SAMPLE_WHEN = "status & {part}.mask or {part}.busy"
        DRIVE_WHEN = "{part}.busy"

        def __init__(self, name, mask):
            self.name, self.mask, self.busy = name, mask, False

        def sample(self, status):
            calls.append((self.name, "sample", status))

        def drive(self):
            calls.append((self.name, "drive"))

    class Always(Gated):
        SAMPLE_WHEN = DRIVE_WHEN = None

    first, always, last = (driver.add(part) for part in (Gated("first", 1), Always("always", 0), Gated("last", 2)))
    driver.step(0)
    assert calls == [("always", "sample", 0), ("always", "drive")]
    calls.clear()
    driver.step(2)
    assert calls == [("always", "sample", 2), ("last", "sample", 2), ("always", "drive")]
    calls.clear()
    first.busy = True
    driver.step(0)
    assert calls == [("first", "sample", 0), ("always", "sample", 0), ("first", "drive"), ("always", "drive")]


def _state(part, driver):
    """What a part's sample() or drive() can change: its attributes (ports and pause generators by value), the
    DUT inputs it wrote, the shared random generator and the protocol error list."""
    def by_value(value):
        if hasattr(value, "__dict__") and not callable(value) and value is not driver:
            return {name: repr(item) for name, item in vars(value).items() if name != "driver"}
        if isinstance(value, dict):
            return {name: by_value(item) for name, item in value.items()}
        return repr(value)
    return ({name: by_value(value) for name, value in vars(part).items() if name not in ("driver", "errors")},
            driver.rng.getstate(), list(driver.protocol_errors))


def test_a_part_skipped_by_its_condition_would_have_changed_nothing():
    """Random traffic on stand-in ports through a source, a sink, the AXI memory and the CSR master: in every
    cycle where a part's SAMPLE_WHEN or DRIVE_WHEN is false, calling the method anyway changes nothing."""
    status_names = ("m2s_req__ready", "s2m_drs__valid", "axi__arvalid", "axi__rready", "axi__awvalid",
                    "axi__wvalid", "axi__bready", "csr__awready", "csr__wready", "csr__bvalid", "csr__arready",
                    "csr__rvalid")
    dut = FakeDut()
    dut.signals["tb_status"] = FakeSignal(len(status_names))
    driver = PortDriver(dut, None, random.Random(7), status_names)
    source = driver.add(Source(driver, "m2s_req", lambda payload: None))
    sink = driver.add(Sink(driver, "s2m_drs", lambda payload: None))
    memory = driver.add(AxiMemory(driver, "axi", 1 << 16, 64))
    csr = driver.add(AxiLiteMaster(driver, "csr"))
    dut.axi__arsize.set(6)
    dut.axi__arburst.set(1)
    dut.axi__awsize.set(6)
    dut.axi__awburst.set(1)
    dut.axi__wlast.set(1)
    rng = random.Random(3)
    skipped = {"sample": 0, "drive": 0}
    for cycle_index in range(3000):
        if cycle_index % 200 == 0:        # phases: pauses on and off, requests queued or not
            rate = rng.choice([0.0, 0.0, 0.3])
            source.pauses.set(rate, rate / 10)
            sink.pauses.set(rate, rate / 10)
            for pauses in memory.pauses.values():
                pauses.set(rate, rate / 10)
        if rng.random() < 0.05:
            source.send_nowait(rng.getrandbits(32))
        if rng.random() < 0.02 and csr.idle():
            csr.ops.append({"kind": rng.choice(["read", "write"]), "address": 4, "value": 1, "done": Event()})
        status = rng.getrandbits(len(status_names)) if rng.random() < 0.3 else 0
        driver.in_reset = False
        for method, condition_name, arguments in (("sample", "SAMPLE_WHEN", (status,)), ("drive", "DRIVE_WHEN", ())):
            for part in driver.parts:
                condition = getattr(part, condition_name, None)
                allowed = condition is None or bool(eval(condition.format(part="part"), {"part": part, "status": status}))
                before = _state(part, driver)
                getattr(part, method)(*arguments)
                if not allowed:
                    skipped[method] += 1
                    assert _state(part, driver) == before, (type(part).__name__, method, cycle_index)
            if method == "sample":
                driver.cycle += 1
    assert skipped["sample"] > 1000 and skipped["drive"] > 1000


def test_alternating_pauses_take_every_other_cycle_without_drawing_and_a_hold_comes_first():
    rng = random.Random(3)
    pauses = Pauses(rng)
    pauses.set(alternate=True)
    state = rng.getstate()
    assert pauses.active
    assert [pauses() for _ in range(6)] == [True, False, True, False, True, False]
    assert rng.getstate() == state        # no random draw: the rest of a seeded run is unchanged
    pauses.remaining = 3                  # a hold (hold_responses) pauses every cycle, then the alternation goes on
    assert [pauses() for _ in range(5)] == [True, True, True, True, False]
    pauses.set()
    assert not pauses.active and not pauses()
