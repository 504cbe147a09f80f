"""Talk to the ULX3S board over its UART bridge (frame format: smartquant/fpga/protocol.py).

    python -m smartquant.scripts.board_host --port /dev/ttyUSB0 info
    python -m smartquant.scripts.board_host --port /dev/ttyUSB0 load weights.npy --bits 8 --plane-run 2
    python -m smartquant.scripts.board_host --port /dev/ttyUSB0 set-k 3
    python -m smartquant.scripts.board_host --port /dev/ttyUSB0 read weights.npy --bits 8 --plane-run 2 --k 3
    python -m smartquant.scripts.board_host --port /dev/ttyUSB0 counters

`load` encodes the tensor with golden/layout.py and writes it through the raw view (or the weight-major view,
--view weight-major), after programming the region's CSRs; `set-k` rewrites the region's default k; `read`
streams the tensor back at k (packed-k, expanded-k or the default view) with a window of outstanding reads,
checks every line against the golden layout, and prints throughput; `counters` prints the device's counters.
The serial port is opened with os/termios (raw 8N1), so no pyserial is needed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.fpga import protocol
from smartquant.golden import layout
from smartquant.golden.device import region_csr_writes, superblocks_for
from smartquant.params import (ControllerParams, Format, Rounding, View, ReqOpcode, RwdOpcode, DrsOpcode, hpa,
                               CSR_ID, CSR_VERSION, CSR_PARAMS, CSR_REGION_BASE, CSR_REGION_STRIDE,
                               CSR_COUNTER_BASE, ID_VALUE, Counter, N_COUNTERS, counter_name)

REGION_CONFIG_OFFSET = 8


class SerialPort:
    """A tty in raw 8N1 mode at a standard baud rate (termios), with a read timeout."""

    def __init__(self, path: str, baud: int):
        import termios
        speed = getattr(termios, f"B{baud}", None)
        if speed is None:
            raise SmartquantError(f"baud rate {baud} is not a standard termios speed")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        except OSError as error:
            raise SmartquantError(f"cannot open {path}: {error.strerror}") from None
        attrs = termios.tcgetattr(self.fd)
        attrs[0] = 0                                            # iflag: no translation, no flow control
        attrs[1] = 0                                            # oflag: raw output
        attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL # 8N1
        attrs[3] = 0                                            # lflag: no echo, not canonical
        attrs[4] = attrs[5] = speed
        attrs[6][termios.VMIN] = 0
        attrs[6][termios.VTIME] = 1                             # reads return after 0.1 s of silence
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def read(self, limit: int = 4096) -> bytes:
        return os.read(self.fd, limit)

    def close(self) -> None:
        os.close(self.fd)


class Board:
    """Request/response layer over a byte transport (anything with write(bytes) and read() -> bytes)."""

    def __init__(self, port, line_bytes: int | None = None, timeout_s: float = 2.0):
        self.port = port
        self.timeout_s = timeout_s
        self.tag = 0
        self.decoder = None
        self.backlog: list = []
        if line_bytes is None:
            self.decoder = protocol.FrameDecoder(64)        # INFO's length does not depend on the line size
            info = self.ping()
            line_bytes = info.line_bytes
        self.decoder = protocol.FrameDecoder(line_bytes)
        self.line_bytes = line_bytes

    # --- transport ---
    def _responses(self, count: int) -> list:
        deadline = time.monotonic() + self.timeout_s
        while len(self.backlog) < count:
            if time.monotonic() > deadline:
                raise SmartquantError(f"board did not answer within {self.timeout_s} s "
                                      f"({len(self.backlog)} of {count} responses)")
            chunk = self.port.read()
            if chunk:
                self.backlog += self.decoder.feed(chunk)
                deadline = time.monotonic() + self.timeout_s
        out, self.backlog = self.backlog[:count], self.backlog[count:]
        for response in out:
            if isinstance(response, protocol.Error):
                raise SmartquantError(f"board reported {response.code.name} for a frame of type "
                                      f"{response.frame_type:#04x}")
        return out

    def _next_tag(self) -> int:
        self.tag = (self.tag + 1) & 0xFFFF
        return self.tag

    # --- operations ---
    def ping(self) -> protocol.Info:
        self.port.write(protocol.encode_ping())
        (info,) = self._responses(1)
        if not isinstance(info, protocol.Info):
            raise SmartquantError(f"expected INFO, got {info}")
        return info

    def csr_read(self, address: int) -> int:
        self.port.write(protocol.encode_csr_read(address))
        (r,) = self._responses(1)
        if not isinstance(r, protocol.CsrReadData) or r.resp:
            raise SmartquantError(f"CSR read {address:#x} failed: {r}")
        return r.data

    def csr_write(self, address: int, value: int) -> None:
        self.port.write(protocol.encode_csr_write(address, value))
        (r,) = self._responses(1)
        if not isinstance(r, protocol.CsrWriteResp) or r.resp:
            raise SmartquantError(f"CSR write {address:#x} failed: {r}")

    def write_lines(self, hpas: list[int], lines: np.ndarray, window: int = 4) -> None:
        """MemWr of each line; at most `window` writes outstanding (the bridge answers BUSY beyond that)."""
        outstanding = 0
        for address, line in zip(hpas, lines):
            if outstanding == window:
                self._expect_ndr(1)
                outstanding -= 1
            self.port.write(protocol.encode_rwd(RwdOpcode.MEM_WR, self._next_tag(), address, line.tobytes()))
            outstanding += 1
        self._expect_ndr(outstanding)

    def _expect_ndr(self, count: int) -> None:
        for r in self._responses(count):
            if not isinstance(r, protocol.Ndr):
                raise SmartquantError(f"expected an NDR for a write, got {r}")

    def read_lines(self, hpas: list[int], window: int = 4) -> tuple[np.ndarray, int]:
        """MemRd of each address with `window` outstanding; (lines in address order, poisoned-or-NXM count)."""
        by_tag: dict[int, int] = {}
        lines = np.zeros((len(hpas), self.line_bytes), dtype=np.uint8)
        bad = 0
        sent = received = 0
        while received < len(hpas):
            while sent < len(hpas) and sent - received < window:
                tag = self._next_tag()
                by_tag[tag] = sent
                self.port.write(protocol.encode_req(ReqOpcode.MEM_RD, tag, hpas[sent]))
                sent += 1
            (r,) = self._responses(1)
            if not isinstance(r, protocol.Drs) or r.tag not in by_tag:
                raise SmartquantError(f"unexpected response to a read: {r}")
            lines[by_tag.pop(r.tag)] = np.frombuffer(r.data, dtype=np.uint8)
            bad += int(r.poison or r.opcode == DrsOpcode.MEM_DATA_NXM)
            received += 1
        return lines, bad


# --- tensor helpers ----------------------------------------------------------------------------------------
def device_params(board: Board) -> ControllerParams:
    if board.csr_read(CSR_ID) != ID_VALUE:
        raise SmartquantError("the device's ID register is not 'SQMC': wrong bitstream or not a smartquant board")
    word = board.csr_read(CSR_PARAMS)
    return ControllerParams(data_width=(word & 0xFF) * 8, b_max=(word >> 8) & 0x1F, n_regions=(word >> 13) & 0x1F,
                            buffer_slots=(word >> 18) & 0xF, dram_addr_bits=(word >> 22) & 0x3F)


def load_weights(path: str, fmt: Format) -> np.ndarray:
    try:
        values = np.load(path)
    except (OSError, ValueError) as error:
        raise SmartquantError(f"cannot read {path}: {error}") from None
    return values.reshape(-1)


def load_tensor(board: Board, params: ControllerParams, values, B: int, fmt: Format, R: int, region: int,
                base_line: int, default_k: int, rounding: Rounding, view: str = "raw", window: int = 4) -> int:
    """Program region `region` and write the tensor; returns the number of lines written."""
    W = params.data_width
    blocks = layout.to_blocks(layout.fields_of(values, B, fmt), W, R)
    n_superblocks = superblocks_for(values.size, B, R, W)
    span = n_superblocks * R * B
    if (base_line + span) * params.line_bytes > 1 << params.dram_addr_bits:
        raise SmartquantError(f"tensor needs lines {base_line}..{base_line + span - 1}, beyond the device's "
                              f"{1 << params.dram_addr_bits} bytes")
    for address, value in region_csr_writes(params, region, base_line, n_superblocks, fmt, B, R, default_k, rounding):
        board.csr_write(address, value)
    if view == "raw":
        lines = layout.planes_to_raw(layout.block_planes(blocks, B), R)
        hpas = [hpa(params, View.RAW, (base_line + i) * params.line_bytes) for i in range(span)]
    else:
        lines = layout.weight_major_lines(blocks, B).reshape(-1, params.line_bytes)
        hpas = [hpa(params, View.WEIGHT_MAJOR, (base_line + i) * params.line_bytes) for i in range(span)]
    board.write_lines(hpas, lines, window)
    return span


def read_tensor(board: Board, params: ControllerParams, values, B: int, fmt: Format, R: int, base_line: int,
                k: int, mode: str, rounding: Rounding, window: int = 4) -> dict:
    """Stream the tensor back at k and compare with the golden views; returns a summary."""
    W = params.data_width
    layout.check_k(k, B)
    blocks = layout.to_blocks(layout.fields_of(values, B, fmt), W, R)
    if mode == "packed":
        expected = layout.packed_lines(blocks, B, k)
        view, per_block = View.PACKED_K, k
    else:
        expected = layout.expanded_lines(blocks, B, k, rounding)
        view, per_block = View.EXPANDED_K, B
    hpas = [hpa(params, view, (base_line + b * B + j) * params.line_bytes, k)
            for b in range(len(blocks)) for j in range(per_block)]
    start = time.monotonic()
    lines, bad = board.read_lines(hpas, window)
    seconds = time.monotonic() - start
    mismatches = int(np.count_nonzero((lines != expected.reshape(-1, params.line_bytes)).any(axis=1)))
    return {"lines": len(hpas), "mismatched_lines": mismatches, "poison_or_nxm": bad, "seconds": seconds,
            "bytes_per_s": len(hpas) * params.line_bytes / seconds if seconds else 0.0}


def read_counters(board: Board) -> dict[str, int]:
    return {counter_name(n): board.csr_read(CSR_COUNTER_BASE + 4 * n)
            for n in range(N_COUNTERS) if not (Counter.STALL_CYCLES < n < Counter.READS_AT_K1)}


# --- command line ------------------------------------------------------------------------------------------
def _tensor_arguments(p):
    p.add_argument("weights", help=".npy file: integers for INT storage, floats for BF16")
    p.add_argument("--bits", type=int, default=8, help="stored bits B (default %(default)s)")
    p.add_argument("--format", choices=("int", "bf16"), default="int")
    p.add_argument("--plane-run", type=int, default=1, help="plane run R (default %(default)s)")
    p.add_argument("--region", type=int, default=0)
    p.add_argument("--base-line", type=int, default=0, help="first DRAM line of the region")
    p.add_argument("--rounding", choices=("floor", "midpoint"), default="floor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="board_host", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", default="/dev/ttyUSB0", help="serial device (default %(default)s)")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--window", type=int, default=4, help="outstanding requests (default %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="bridge INFO and the ID/VERSION/PARAMS registers")
    load = sub.add_parser("load", help="program a region and write a tensor")
    _tensor_arguments(load)
    load.add_argument("--default-k", type=int, default=None, help="region default k (default B)")
    load.add_argument("--view", choices=("raw", "weight-major"), default="raw")
    set_k = sub.add_parser("set-k", help="rewrite a region's default k (keeps its other fields)")
    set_k.add_argument("k", type=int)
    set_k.add_argument("--region", type=int, default=0)
    read = sub.add_parser("read", help="stream a loaded tensor back at k and check it")
    _tensor_arguments(read)
    read.add_argument("--k", type=int, required=True)
    read.add_argument("--mode", choices=("packed", "expanded"), default="packed")
    sub.add_parser("counters", help="print the event counters")
    return parser


def run(args, port=None) -> int:
    port = port or SerialPort(args.port, args.baud)
    board = Board(port)
    params = device_params(board)
    if args.command == "info":
        print(f"line bytes {board.line_bytes}, version {board.csr_read(CSR_VERSION):#010x}, params {params}")
    elif args.command == "set-k":
        address = CSR_REGION_BASE + CSR_REGION_STRIDE * args.region + REGION_CONFIG_OFFSET
        config = board.csr_read(address)
        if not config & 1:
            raise SmartquantError(f"region {args.region} is not enabled")
        board.csr_write(address, (config & ~(0x1F << 7)) | ((args.k & 0x1F) << 7))
        print(f"region {args.region}: default k = {args.k}")
    elif args.command in ("load", "read"):
        fmt = Format.BF16 if args.format == "bf16" else Format.INT
        rounding = Rounding.MIDPOINT if args.rounding == "midpoint" else Rounding.FLOOR
        values = load_weights(args.weights, fmt)
        if args.command == "load":
            k = args.bits if args.default_k is None else args.default_k
            lines = load_tensor(board, params, values, args.bits, fmt, args.plane_run, args.region, args.base_line,
                                k, rounding, args.view, args.window)
            print(f"wrote {lines} lines ({values.size} weights, B={args.bits}, R={args.plane_run})")
        else:
            summary = read_tensor(board, params, values, args.bits, fmt, args.plane_run, args.base_line, args.k,
                                  args.mode, rounding, args.window)
            print(f"read {summary['lines']} lines at k={args.k} ({args.mode}) in {summary['seconds']:.2f} s, "
                  f"{summary['bytes_per_s'] / 1024:.1f} KiB/s; mismatched lines {summary['mismatched_lines']}, "
                  f"poison/NXM {summary['poison_or_nxm']}")
            if summary["mismatched_lines"]:
                return 1
    elif args.command == "counters":
        for name, value in read_counters(board).items():
            print(f"{name:<22} {value}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except SmartquantError as error:
        print(f"board_host: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
