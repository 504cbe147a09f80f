"""Board-independent FPGA system: UART <-> HostBridge <-> SmartQuantController <-> AxiRam (block RAM).

`BridgedSystem(params, baud_divisor, timeout_cycles)` has two pins, `uart_rx` (in) and `uart_tx` (out), plus
`activity` (out, 2 bits: byte received, byte sent; for LEDs). The simulation test drives it at the UART pins
or, faster, through the bridge's byte streams (serial=False); the ULX3S top (fpga/board.py) adds clocking and I/O.

`board_params(data_width, b_max, ram_bytes, ...)` makes the controller's device capacity equal to the RAM:
dram_addr_bits = log2(ram_bytes), so every DRAM address the controller can form exists in the RAM.
"""

from amaranth import Module, Cat, ResetSignal
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams
from smartquant.fpga.uart import UartRx, UartTx
from smartquant.fpga.bridge import HostBridge
from smartquant.fpga.axi_ram import AxiRam


def board_params(data_width: int = 512, b_max: int = 16, ram_bytes: int = 128 * 1024, **overrides) -> ControllerParams:
    if ram_bytes < 4096 or ram_bytes & (ram_bytes - 1):
        raise SmartquantError(f"RAM size must be a power of two of at least 4096 bytes, got {ram_bytes}")
    try:
        return ControllerParams(data_width=data_width, b_max=b_max,
                                dram_addr_bits=(ram_bytes - 1).bit_length(), **overrides)
    except ValueError as error:
        raise SmartquantError(str(error)) from None


class BridgedSystem(wiring.Component):
    def __init__(self, params: ControllerParams, baud_divisor: int, timeout_cycles: int, controller=None,
                 serial: bool = True):
        """`controller`: the controller instance to wire in (default SmartQuantController(params)).
        `serial` = False leaves out the UART and exposes the bridge's byte streams `rx` / `tx` instead (fast
        simulation of everything behind the UART)."""
        self.params = params
        self.baud_divisor = baud_divisor
        self.timeout_cycles = timeout_cycles
        self._controller = controller
        self.serial = serial
        if serial:
            ports = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "activity": Out(2)}
        else:
            ports = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        super().__init__(ports)

    def elaborate(self, platform):
        from smartquant.hdl.top import SmartQuantController   # imported late: the top is the heaviest module

        m = Module()
        p = self.params
        m.submodules.bridge = bridge = HostBridge(p, self.timeout_cycles)
        m.submodules.controller = controller = self._controller or SmartQuantController(p)
        m.submodules.ram = ram = AxiRam(data_width=p.data_width, addr_width=p.dram_addr_bits,
                                        id_width=p.axi_id_bits, size_bytes=1 << p.dram_addr_bits)
        if self.serial:
            m.submodules.uart_rx = rx = UartRx(self.baud_divisor)
            m.submodules.uart_tx = tx = UartTx(self.baud_divisor)
            m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx),
                         self.activity.eq(Cat(rx.data.valid, tx.data.valid & tx.data.ready))]
            wiring.connect(m, rx.data, bridge.rx)
            wiring.connect(m, bridge.tx, tx.data)
        else:
            wiring.connect(m, wiring.flipped(self.rx), bridge.rx)
            wiring.connect(m, bridge.tx, wiring.flipped(self.tx))
        wiring.connect(m, bridge.m2s_req, controller.m2s_req)
        wiring.connect(m, bridge.m2s_rwd, controller.m2s_rwd)
        wiring.connect(m, controller.s2m_ndr, bridge.s2m_ndr)
        wiring.connect(m, controller.s2m_drs, bridge.s2m_drs)
        wiring.connect(m, bridge.csr, controller.csr)
        wiring.connect(m, controller.axi, ram.axi)
        # the block RAM shares the controller's reset: no AXI transaction survives it (hdl/backend/axi_drain.py)
        m.d.comb += controller.axi_rst.eq(ResetSignal())
        return m
