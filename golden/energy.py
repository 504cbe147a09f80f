"""Energy constants and the energy report: the one place every energy number of the project lives.

DRAM (core energy, without I/O or background power):
  Source: DRAMsim3 (github.com/umd-memsys/DRAMsim3) configs/DDR4_8Gb_x8_3200.ini
    [power]  VDD = 1.2 V, IDD0 = 57, IDD2N = 37, IDD3N = 52, IDD4R = 168, IDD4W = 150 (mA, per device)
    [timing] tCK = 0.63 ns, tRAS = 52, tRP = 22 (cycles);  [dram_structure] BL = 8, device_width = 8;
    [system] bus_width = 64
  and DRAMsim3's formulas (src/configuration.cc, Config::InitPowerParams; tRC = tRAS + tRP), in V * mA * cycles,
  which times tCK in ns is pJ:
    activate = VDD * (IDD0 * tRC - (IDD3N * tRAS + IDD2N * tRP))    per device
    read     = VDD * (IDD4R - IDD3N) * BL/2                          per device and burst (BL * device_width bits)
    write    = VDD * (IDD4W - IDD3N) * BL/2
  -> 0.529 nJ per activate and x8 device (4.23 nJ per rank activate of 8 devices), 5.48 pJ/bit read,
     4.63 pJ/bit written. `DDR4_3200_X8` derives these in code from the IDD values.
  Background (IDD2N/IDD3N standby) and refresh energy depend on time, which the trace model does not have:
  they are left out.

CXL / PCIe Gen5 link: LINK_PJ_PER_BIT = 5 pJ/bit. No primary figure was found; it is a named parameter (swept
  3 to 10 pJ/bit in the benchmarks) until one is cited. Counted on the 512-bit data payload of every DRS and
  RwD message only (headers, NDR and Req messages are left out).

Controller logic: CONTROLLER_PJ_PER_EVENT = 10 pJ per event, an event being one host message (Req or RwD) or
  one backend line (read or written). No primary figure either: a placeholder to be replaced by a measured
  figure (e.g. the FPGA power estimate); it is a parameter of `energy_report`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from smartquant.errors import SmartquantError
from smartquant.params import Counter, counter_name


@dataclass(frozen=True)
class DramPowerSpec:
    """IDD/timing figures of one DRAM part (DRAMsim3 .ini names) and the per-command energies they give."""
    vdd: float            # V
    idd0: float           # mA, one-bank activate-precharge
    idd2n: float          # mA, precharge standby
    idd3n: float          # mA, active standby
    idd4r: float          # mA, burst read
    idd4w: float          # mA, burst write
    tck_ns: float
    tras: int             # cycles
    trp: int              # cycles
    burst_length: int
    device_width: int     # bits per device
    bus_width: int = 64   # bits per rank

    @property
    def trc(self) -> int:
        return self.tras + self.trp          # DRAMsim3 sets tRC = tRAS + tRP

    @property
    def devices_per_rank(self) -> int:
        return self.bus_width // self.device_width

    @property
    def burst_cycles(self) -> float:
        return self.burst_length / 2         # double data rate

    @property
    def activate_pj_per_device(self) -> float:
        return self.vdd * (self.idd0 * self.trc - (self.idd3n * self.tras + self.idd2n * self.trp)) * self.tck_ns

    @property
    def activate_pj_per_rank(self) -> float:
        """One row activate of the rank (the row model's row spans every device of the rank)."""
        return self.activate_pj_per_device * self.devices_per_rank

    @property
    def read_pj_per_bit(self) -> float:
        burst = self.vdd * (self.idd4r - self.idd3n) * self.burst_cycles * self.tck_ns
        return burst / (self.burst_length * self.device_width)

    @property
    def write_pj_per_bit(self) -> float:
        burst = self.vdd * (self.idd4w - self.idd3n) * self.burst_cycles * self.tck_ns
        return burst / (self.burst_length * self.device_width)


# DRAMsim3 configs/DDR4_8Gb_x8_3200.ini
DDR4_3200_X8 = DramPowerSpec(vdd=1.2, idd0=57, idd2n=37, idd3n=52, idd4r=168, idd4w=150, tck_ns=0.63,
                             tras=52, trp=22, burst_length=8, device_width=8, bus_width=64)

LINK_PJ_PER_BIT = 5.0            # no primary figure found (see module docstring); sweep 3..10
CONTROLLER_PJ_PER_EVENT = 10.0   # placeholder, no primary figure (see module docstring)

HOST_REQUEST_COUNTERS = (Counter.REQ_MEM_INV, Counter.REQ_MEM_RD, Counter.REQ_MEM_RD_DATA, Counter.REQ_MEM_SPEC_RD,
                         Counter.REQ_MEM_INV_NT, Counter.REQ_MEM_CLN_EVCT, Counter.REQ_BAD_OPCODE)
# RwD messages: each carries a data line over the link (MemRdFill too, whose data the device ignores)
HOST_WRITE_COUNTERS = (Counter.RWD_MEM_WR, Counter.RWD_MEM_WR_PTL, Counter.RWD_BAD_OPCODE, Counter.RWD_MEM_RD_FILL)


def _count(counters: Mapping, counter: Counter) -> int:
    """A counter from a mapping keyed by name (params.counter_name), Counter or int; missing counts as 0."""
    for key in (counter_name(int(counter)), counter, int(counter)):
        if key in counters:
            value = counters[key]
            if value < 0:
                raise SmartquantError(f"counter {counter_name(int(counter))} is negative: {value}")
            return int(value)
    return 0


def energy_report(counters: Mapping, activates: int, *, line_bits: int = 512, dram: DramPowerSpec = DDR4_3200_X8,
                  link_pj_per_bit: float = LINK_PJ_PER_BIT,
                  controller_pj_per_event: float = CONTROLLER_PJ_PER_EVENT) -> dict:
    """Energy (pJ) of a trace from its counters (DeviceModel.counters or the CSR values) and row activates.

    Returns the DRAM split (activate, read, write), link and controller energy, the total, and per-request
    (per host Req/RwD message) and per-line (per DRS data line delivered) figures; per-x figures are 0 when
    there is no x.
    """
    if activates < 0:
        raise SmartquantError(f"activates must be >= 0, got {activates}")
    lines_read = _count(counters, Counter.DRAM_LINES_READ)
    lines_written = _count(counters, Counter.DRAM_LINES_WRITTEN)
    drs = _count(counters, Counter.DRS_SENT)
    requests = sum(_count(counters, c) for c in HOST_REQUEST_COUNTERS)
    writes = sum(_count(counters, c) for c in HOST_WRITE_COUNTERS)
    host_messages = requests + writes

    dram_activate = activates * dram.activate_pj_per_rank
    dram_read = lines_read * line_bits * dram.read_pj_per_bit
    dram_write = lines_written * line_bits * dram.write_pj_per_bit
    dram_total = dram_activate + dram_read + dram_write
    link = (drs + writes) * line_bits * link_pj_per_bit
    controller = (host_messages + lines_read + lines_written) * controller_pj_per_event
    total = dram_total + link + controller

    def per(value: float, n: int) -> float:
        return value / n if n else 0.0

    return {
        "dram_activate_pj": dram_activate,
        "dram_read_pj": dram_read,
        "dram_write_pj": dram_write,
        "dram_pj": dram_total,
        "link_pj": link,
        "controller_pj": controller,
        "total_pj": total,
        "activates": activates,
        "dram_lines_read": lines_read,
        "dram_lines_written": lines_written,
        "host_messages": host_messages,
        "lines_delivered": drs,
        "pj_per_request": per(total, host_messages),
        "pj_per_line_delivered": per(total, drs),
        "dram_pj_per_line_delivered": per(dram_total, drs),
        "dram_pj_per_line_read": per(dram_activate + dram_read, lines_read),
    }
