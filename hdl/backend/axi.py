"""AXI4 and AXI4-Lite port signatures with flat, conventionally named members.

Members are plain signals (not streams) so that the Verilog ports come out as `<port>__awaddr` etc., which
any AXI verification IP binds by prefix (sim/port_driver.py uses `<port>__<member>`).
"""
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite, from the manager's point of view (Out = driven by the manager)."""

    def __init__(self, addr_width: int, data_width: int = 32):
        self.addr_width = addr_width
        self.data_width = data_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


def _axi_read_members(addr_width: int, data_width: int, id_width: int) -> dict:
    return {
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
        "rready": Out(1),
    }


def _axi_write_members(addr_width: int, data_width: int, id_width: int) -> dict:
    return {
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1), "wvalid": Out(1),
        "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


class _AxiManagerSignature(wiring.Signature):
    """AXI4 members (`members(addr, data, id)`), from the manager's point of view; keeps the three widths."""

    def __init__(self, members, addr_width: int, data_width: int, id_width: int):
        self.addr_width = addr_width
        self.data_width = data_width
        self.id_width = id_width
        super().__init__(members(addr_width, data_width, id_width))


class AxiReadSignature(_AxiManagerSignature):
    """The read half of AxiSignature (AR, R), for a unit that only reads (the read engine's AxiReader)."""

    def __init__(self, addr_width: int, data_width: int = 512, id_width: int = 4):
        super().__init__(_axi_read_members, addr_width, data_width, id_width)


class AxiWriteSignature(_AxiManagerSignature):
    """The write half of AxiSignature (AW, W, B), for a unit that only writes (the write path)."""

    def __init__(self, addr_width: int, data_width: int = 512, id_width: int = 4):
        super().__init__(_axi_write_members, addr_width, data_width, id_width)


class AxiSignature(_AxiManagerSignature):
    """AXI4 (full), from the manager's point of view. INCR bursts only; size = full data width.
    The members are those of AxiWriteSignature and AxiReadSignature, flat (one Verilog port per member)."""

    def __init__(self, addr_width: int, data_width: int = 512, id_width: int = 4):
        super().__init__(lambda *widths: {**_axi_write_members(*widths), **_axi_read_members(*widths)},
                         addr_width, data_width, id_width)


def connect_axi_half(m, half, full) -> None:
    """Connects a manager's read or write half (an interface of AxiReadSignature / AxiWriteSignature, the
    manager's side) to the same members of a full AXI manager port `full` (AxiSignature, the manager's side of
    the unit it feeds, e.g. AxiDrain.up): Out members flow half -> full, In members full -> half."""
    for name, member in half.signature.members.items():
        if member.flow == wiring.Out:
            m.d.comb += getattr(full, name).eq(getattr(half, name))
        else:
            m.d.comb += getattr(half, name).eq(getattr(full, name))


AXI_BURST_INCR = 0b01
AXI_RESP_OKAY = 0b00
AXI_RESP_SLVERR = 0b10
