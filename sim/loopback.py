"""A tiny stand-in DUT for the runner's own tests: a one-entry register slice on a CXL Req-shaped stream.

It has the same port-naming scheme as the controller (`m2s_req__valid`, `s2m_req__payload`, `clk`, `rst`), so
the runner, the stream drivers and the monitors can be checked without waiting for (or blaming) the real top.
"""
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from smartquant.hdl.cxl.messages import req_layout
from smartquant.params import ControllerParams


class StreamRegisterSlice(wiring.Component):
    """Forwards every M2S Req payload unchanged, one cycle later, with full-throughput valid/ready."""

    def __init__(self, params: ControllerParams = ControllerParams()):
        layout = req_layout(params)
        super().__init__({
            "m2s_req": In(stream.Signature(layout)),
            "s2m_req": Out(stream.Signature(layout)),
        })

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        # Accept when empty or when the held item leaves this cycle: no bubble under steady traffic.
        m.d.comb += self.m2s_req.ready.eq(~full | self.s2m_req.ready)
        m.d.comb += self.s2m_req.valid.eq(full)
        with m.If(self.m2s_req.valid & self.m2s_req.ready):
            m.d.sync += [self.s2m_req.payload.eq(self.m2s_req.payload), full.eq(1)]
        with m.Elif(self.s2m_req.ready):
            m.d.sync += full.eq(0)
        return m
