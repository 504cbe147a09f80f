"""The port driver's handshake checks (sim/port_driver.py) fail when the DUT breaks a rule: no simulator, the
ports are stand-ins with the GPI handle interface the driver uses."""
import random

from smartquant.sim.port_driver import AXI_OKAY, AxiMemory, PortDriver, Sink, int_reader

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
