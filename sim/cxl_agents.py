"""Valid/ready stream agents for the Amaranth-flattened ports (`<port>__valid`, `__ready`, `__payload`).

Timing discipline (the same in every agent, so handshakes are never double-counted or missed): agents write
their outputs right after a rising edge and sample in the ReadOnly phase of the same cycle, when everything is
settled; `valid & ready` seen there is a transfer that completes at the next rising edge.

* StreamSource drives a channel into the DUT from a queue of payload integers, idling when its idle
  generator says so.
* StreamSink drives `ready` from a backpressure generator and hands every transferred payload to a callback.
* HandshakeMonitor only watches a channel and reports each accepted payload: the scoreboard feeds the model
  from what the DUT accepted, not from what the stimulus intended.
Generators yield 1 for "pause this cycle" (cocotbext-axi's convention); None means never pause.
"""
from __future__ import annotations

import collections
from typing import Callable, Iterator

import cocotb
from cocotb.triggers import Event, ReadOnly, RisingEdge


class _Channel:
    def __init__(self, dut, prefix: str):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.name = prefix


class StreamSource:
    """Drives payloads into the DUT in queue order."""

    def __init__(self, dut, prefix: str, clk, idle_generator: Iterator[int] | None = None):
        self.channel = _Channel(dut, prefix)
        self.clk = clk
        self.queue: collections.deque[int] = collections.deque()
        self.idle_generator = idle_generator
        self.sent = 0
        self._empty = Event()
        self._empty.set()
        self.channel.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send_nowait(self, payload: int) -> None:
        self.queue.append(int(payload))
        self._empty.clear()

    def idle(self) -> bool:
        return not self.queue

    async def wait_idle(self) -> None:
        while self.queue:
            self._empty.clear()
            await self._empty.wait()

    def flush(self) -> list[int]:
        """Drop everything not yet accepted (reset in the middle of traffic); returns what was dropped."""
        dropped = list(self.queue)
        self.queue.clear()
        self.channel.valid.value = 0
        self._empty.set()
        return dropped

    async def _run(self) -> None:
        valid, ready = self.channel.valid, self.channel.ready
        driving = False
        handshake = False
        while True:
            await RisingEdge(self.clk)
            if driving and handshake and self.queue:
                self.queue.popleft()
                self.sent += 1
                if not self.queue:
                    self._empty.set()
            driving = False
            if self.queue:
                pause = next(self.idle_generator) if self.idle_generator is not None else 0
                if not pause:
                    self.channel.payload.value = self.queue[0]
                    valid.value = 1
                    driving = True
            if not driving:
                valid.value = 0
            await ReadOnly()
            handshake = driving and bool(ready.value)


class StreamSink:
    """Accepts payloads from the DUT with `ready` driven by a backpressure generator."""

    def __init__(self, dut, prefix: str, clk, callback: Callable[[int], None],
                 backpressure_generator: Iterator[int] | None = None, reset=None):
        self.channel = _Channel(dut, prefix)
        self.clk = clk
        self.callback = callback
        self.backpressure_generator = backpressure_generator
        self.reset = reset
        self.received = 0
        self.channel.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        valid, ready = self.channel.valid, self.channel.ready
        while True:
            await RisingEdge(self.clk)
            pause = next(self.backpressure_generator) if self.backpressure_generator is not None else 0
            ready.value = 0 if pause else 1
            await ReadOnly()
            if not pause and valid.value and not (self.reset is not None and self.reset.value):
                self.received += 1
                self.callback(int(self.channel.payload.value))


class HandshakeMonitor:
    """Reports every payload the DUT accepts on a channel driven by someone else."""

    def __init__(self, dut, prefix: str, clk, callback: Callable[[int], None], reset=None):
        self.channel = _Channel(dut, prefix)
        self.clk = clk
        self.callback = callback
        self.reset = reset
        self.accepted = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        valid, ready = self.channel.valid, self.channel.ready
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            if valid.value and ready.value and not (self.reset is not None and self.reset.value):
                self.accepted += 1
                self.callback(int(self.channel.payload.value))


class AxiAddressMonitor:
    """Reports (address, len) of every AXI AR or AW handshake (`<prefix>__arvalid` & `__arready`)."""

    def __init__(self, dut, prefix: str, channel: str, clk, callback: Callable[[int, int], None], reset=None):
        self.valid = getattr(dut, f"{prefix}__{channel}valid")
        self.ready = getattr(dut, f"{prefix}__{channel}ready")
        self.addr = getattr(dut, f"{prefix}__{channel}addr")
        self.length = getattr(dut, f"{prefix}__{channel}len")
        self.clk = clk
        self.callback = callback
        self.reset = reset
        self._task = cocotb.start_soon(self._run())

    async def _run(self) -> None:
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            if self.valid.value and self.ready.value and not (self.reset is not None and self.reset.value):
                self.callback(int(self.addr.value), int(self.length.value) + 1)
