"""UART 8N1 receiver and transmitter (Amaranth), one start bit, 8 data bits LSB first, one stop bit.

`divisor` = clock cycles per bit (clock frequency / baud rate), at least 4 so the receiver can sample the
middle of each bit. The receiver has no flow control (a UART cannot hold the sender back): its byte stream
`data` pulses `valid` for one cycle per byte and ignores `ready`. A byte whose stop bit reads 0 is dropped
and pulses `framing_error` instead.
"""

from amaranth import Module, Signal, Cat, C
from amaranth.lib import wiring, stream
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out


def check_divisor(divisor: int) -> None:
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"UART divisor (clock cycles per bit) must be an integer >= 4, got {divisor!r}")


class UartRx(wiring.Component):
    """Serial line `rx` (idle high) -> byte stream `data`."""

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    framing_error: Out(1)

    def __init__(self, divisor: int):
        check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1)   # asynchronous pin: two flops

        timer = Signal(range(self.divisor + self.divisor // 2 + 1))
        bit_index = Signal(range(8))
        shift = Signal(8)

        m.d.sync += [self.data.valid.eq(0), self.framing_error.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # sample the start bit in its middle to reject glitches
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"       # glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bit_index.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], rx)), timer.eq(self.divisor - 1),
                                 bit_index.eq(bit_index + 1)]
                    with m.If(bit_index == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(rx):
                        m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                    m.next = "IDLE"   # returns in mid stop bit: the next start edge is still seen
        return m


class UartTx(wiring.Component):
    """Byte stream `data` -> serial line `tx` (idle high); `ready` while no byte is being sent."""

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        check_divisor(divisor)
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        bits_left = Signal(range(11))
        # stop bit, 8 data bits, start bit: shifted out LSB first
        frame = Signal(10, init=C(0x3FF, 10))

        m.d.comb += [self.data.ready.eq(bits_left == 0), self.tx.eq(frame[0])]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [frame.eq(Cat(C(0, 1), self.data.payload, C(1, 1))), bits_left.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(bits_left != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [frame.eq(Cat(frame[1:], C(1, 1))), timer.eq(self.divisor - 1),
                             bits_left.eq(bits_left - 1)]
        return m
