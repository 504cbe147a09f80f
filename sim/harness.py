"""Simulation harness: the design under test with one extra output, `tb_status`, for a fast testbench.

The testbench (sim/port_driver.py) samples every handshake of every port each cycle. Reading a dozen 1-bit
ports through VPI costs a dozen calls per cycle; the harness concatenates the valid/ready bits the DUT drives,
and then the reset, into one vector, so a cycle costs one read. The harness adds wiring only: every port of
the wrapped design keeps its name (`m2s_req__valid`, `axi__arvalid`, ...), and the DUT's logic is unchanged.
"""
from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from smartquant.params import ControllerParams

# The 1-bit ports the DUT drives, in tb_status bit order (bit 0 first); the bit after them is the reset.
CONTROLLER_STATUS = (
    "m2s_req__ready", "m2s_rwd__ready", "s2m_drs__valid", "s2m_ndr__valid",
    "axi__arvalid", "axi__rready", "axi__awvalid", "axi__wvalid", "axi__bready",
    "csr__awready", "csr__wready", "csr__bvalid", "csr__arready", "csr__rvalid",
)
LOOPBACK_STATUS = ("m2s_req__ready", "s2m_req__valid")
# host_port = "axi" (hdl/host/axi_port.py): the host port's handshakes, both directions (cocotbext-axi's
# AxiMaster drives the host side; sim/axi_host_tb.py monitors every handshake from this vector), then the
# DRAM port and the CSR port as for the CXL top
AXI_HOST_STATUS = (
    "host__arvalid", "host__arready", "host__awvalid", "host__awready", "host__wvalid", "host__wready",
    "host__rvalid", "host__rready", "host__bvalid", "host__bready",
    *CONTROLLER_STATUS[CONTROLLER_STATUS.index("axi__arvalid"):],
    # the core's M2S RwD handshake behind the port: the scoreboard takes each write when the core accepts it,
    # since the write gathering's idle boundary counts at that port (DEVICE.md §4)
    "core.m2s_rwd__valid", "core.m2s_rwd__ready",
)


class SimHarness(wiring.Component):
    """Wraps `inner` (a wiring.Component) with the same ports and adds `tb_status`."""

    def __init__(self, inner: wiring.Component, status_names: tuple[str, ...]):
        self.inner = inner
        self.status_names = status_names
        members = dict(inner.signature.members.items())
        super().__init__({**members, "clk": In(1), "rst": In(1), "tb_status": Out(len(status_names) + 1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = inner = self.inner
        # Every input of the DUT is registered on the falling clock edge. Verilator evaluates the logic that
        # depends combinationally on top-level inputs (its "ico" region) in every eval, and cocotb's loop
        # evaluates three times a cycle (rising edge, the driver's writes after it, falling edge); behind these
        # registers that logic depends on flops instead and runs only when they change. The DUT sees the same
        # values at every rising edge: the driver writes right after rising edge t, the register takes them at
        # the falling edge of that cycle, before edge t + 1 samples them (sim/port_driver.py's discipline).
        # the DUT's clock domain is defined here so that its reset is registered like the other inputs (the
        # next-state logic of every flop depends on it)
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.tb_inputs = inputs = ClockDomain("tb_inputs", clk_edge="neg", reset_less=True)
        m.d.comb += [sync.clk.eq(self.clk), inputs.clk.eq(self.clk)]
        m.d.tb_inputs += sync.rst.eq(self.rst)
        outer_ports = {path: value for path, _, value in self.signature.flatten(self)}
        for path, member, wrapped in inner.signature.flatten(inner):
            if member.flow == wiring.In:
                m.d.tb_inputs += wrapped.eq(outer_ports[path])
            else:
                m.d.comb += outer_ports[path].eq(wrapped)
        bits = []
        for name in self.status_names:
            path, member = name.split("__")
            unit = inner
            for part in path.split("."):      # "core.m2s_rwd": a port of a unit inside `inner`
                unit = getattr(unit, part)
            bits.append(getattr(unit, member))
        m.d.comb += self.tb_status.eq(Cat(*bits, sync.rst))     # the reset the DUT saw
        return m


def controller_status(params: ControllerParams) -> tuple[str, ...]:
    return AXI_HOST_STATUS if params.host_port == "axi" else CONTROLLER_STATUS


def controller_harness(params: ControllerParams) -> SimHarness:
    """The controller with the host port params.host_port selects (hdl/host/axi_port.py build_controller)."""
    from smartquant.hdl.host.axi_port import build_controller
    return SimHarness(build_controller(params), controller_status(params))


def loopback_harness(params: ControllerParams) -> SimHarness:
    from smartquant.sim.loopback import StreamRegisterSlice
    return SimHarness(StreamRegisterSlice(params), LOOPBACK_STATUS)
