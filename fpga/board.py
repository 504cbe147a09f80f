"""Radiona ULX3S (ECP5-85F) top: clock, reset, FTDI UART, LEDs around fpga/system.py's BridgedSystem.

- Clock: the 25 MHz oscillator (clk25), used directly or multiplied by an EHXPLLL to `clock_mhz`.
- Reset: the PWR button (active low on the board) or PLL not locked, synchronised into the sync domain.
- UART: the FTDI pins (`uart` resource, DCE role: rx is the FPGA's input), 8N1 at `baud`.
- LEDs: 0 heartbeat (toggles every 2**24 cycles), 1 PLL locked, 2 byte received, 3 byte sent (stretched to be visible).
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import Elaboratable, Module, Signal, ClockDomain, Instance
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams
from smartquant.fpga.system import BridgedSystem

OSCILLATOR_MHZ = 25.0
VCO_MIN_MHZ, VCO_MAX_MHZ = 400.0, 800.0
PFD_MIN_MHZ = 3.125


@dataclass(frozen=True)
class PllConfig:
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def output_mhz(self) -> float:
        return OSCILLATOR_MHZ * self.clkfb_div / self.clki_div

    @property
    def vco_mhz(self) -> float:
        return self.output_mhz * self.clkop_div


def pll_config(target_mhz: float) -> PllConfig:
    """EHXPLLL dividers (feedback from CLKOP, as Lattice's ecppll does) closest to the target frequency."""
    best = None
    for clki_div in range(1, 129):
        if OSCILLATOR_MHZ / clki_div < PFD_MIN_MHZ:
            break
        for clkfb_div in range(1, 81):
            out = OSCILLATOR_MHZ * clkfb_div / clki_div
            for clkop_div in range(1, 129):
                if VCO_MIN_MHZ <= out * clkop_div <= VCO_MAX_MHZ:
                    candidate = PllConfig(clki_div, clkfb_div, clkop_div)
                    if best is None or abs(out - target_mhz) < abs(best.output_mhz - target_mhz):
                        best = candidate
                    break
    if best is None or abs(best.output_mhz - target_mhz) > 0.01 * target_mhz:
        raise SmartquantError(f"no EHXPLLL setting reaches {target_mhz} MHz from {OSCILLATOR_MHZ} MHz")
    return best


def uart_divisor(clock_hz: int, baud: int) -> int:
    """Clock cycles per UART bit; refuses rates the receiver cannot sample or that are more than 2% off."""
    divisor = round(clock_hz / baud) if baud > 0 else 0
    if divisor < 4:
        raise SmartquantError(f"{baud} baud is too fast for a {clock_hz / 1e6} MHz clock")
    if abs(clock_hz / divisor - baud) > 0.02 * baud:
        raise SmartquantError(f"{baud} baud is more than 2% off with a {clock_hz / 1e6} MHz clock")
    return divisor


class ULX3STop(Elaboratable):
    def __init__(self, params: ControllerParams, clock_mhz: float = OSCILLATOR_MHZ, baud: int = 115200,
                 timeout_ms: float = 20.0, controller=None):
        self.params = params
        self.clock_mhz = clock_mhz
        self.pll = None if clock_mhz == OSCILLATOR_MHZ else pll_config(clock_mhz)
        self.clock_hz = round((self.pll.output_mhz if self.pll else OSCILLATOR_MHZ) * 1e6)
        self.baud = baud
        self.baud_divisor = uart_divisor(self.clock_hz, baud)
        self.timeout_cycles = round(timeout_ms * 1e-3 * self.clock_hz)
        self.controller = controller

    def elaborate(self, platform):
        m = Module()
        def pin(name, direction, number=0):
            m.submodules[f"{name}_{number}_buffer"] = buffer = io.Buffer(direction, platform.request(name, number, dir="-"))
            return buffer

        clk25 = pin("clk25", "i").i
        m.domains.sync = sync = ClockDomain("sync")
        locked = Signal()
        if self.pll is None:
            m.d.comb += [sync.clk.eq(clk25), locked.eq(1)]
        else:
            cfg = self.pll
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=str(OSCILLATOR_MHZ), a_FREQUENCY_PIN_CLKOP=f"{cfg.output_mhz:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=cfg.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=cfg.clkop_div,
                p_CLKOP_CPHASE=(cfg.clkop_div - 1) // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=cfg.clkfb_div,
                i_RST=0, i_STDBY=0, i_CLKI=clk25, o_CLKOP=sync.clk, i_CLKFB=sync.clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
            platform.add_clock_constraint(sync.clk, self.clock_hz)
        reset_button = pin("button_pwr", "i").i      # PinsN: the buffer inverts, 1 = pressed
        m.submodules.reset_sync = ResetSynchronizer(reset_button | ~locked, domain="sync")

        m.submodules.system = system = BridgedSystem(self.params, self.baud_divisor, self.timeout_cycles,
                                                     controller=self.controller)
        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-", "rts": "-", "dtr": "-"})
        m.submodules.uart_rx_buffer = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [system.uart_rx.eq(uart_rx.i), uart_tx.o.eq(system.uart_tx)]
        m.d.comb += pin("uart_tx_enable", "o").o.eq(1)

        leds = [pin("led", "o", i).o for i in range(4)]
        heartbeat = Signal(range(self.clock_hz))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += [leds[0].eq(heartbeat[-1] if self.clock_hz >= 2 else 0), leds[1].eq(locked)]
        for i, led in enumerate(leds[2:]):
            stretch = Signal(range(self.clock_hz // 20 + 1))       # 50 ms flash per byte
            with m.If(system.activity[i]):
                m.d.sync += stretch.eq(self.clock_hz // 20)
            with m.Elif(stretch != 0):
                m.d.sync += stretch.eq(stretch - 1)
            m.d.comb += led.eq(stretch != 0)
        return m
