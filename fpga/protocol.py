"""Host <-> board bridge protocol: byte framing of CXL.mem requests and CSR accesses over a UART.

Pure Python (no Amaranth): the host tool (scripts/board_host.py), the simulation test and the RTL bridge
(fpga/bridge.py, which takes its constants from here) share this one description.

Frame (both directions)::

    SYNC | TYPE | LEN | PAYLOAD (LEN bytes) | CRC

- SYNC is 0xA5 host -> device and 0x5A device -> host.
- CRC is CRC-8 (polynomial 0x07, init 0x00, not reflected, no final xor: "CRC-8/SMBUS") over TYPE, LEN and
  PAYLOAD. Every multi-byte field is little-endian. LB = line bytes = data_width / 8 of the controller.
- LEN is fixed per TYPE (it depends on LB only); any other LEN is a BAD_LENGTH error.

Requests (host -> device)::

    type  name       payload                                                      LEN
    0x01  PING       (none)                                                       0
    0x02  REQ        opcode 1, tag 2, flags 1, hpa 7                              11
    0x03  RWD        opcode 1, tag 2, flags 1, hpa 7, byte_enable LB/8, data LB   11 + LB/8 + LB
    0x04  CSR_READ   address 2                                                    2
    0x05  CSR_WRITE  address 2, data 4                                            6

  REQ/RWD are one M2S Req / RwD message: opcode (ReqOpcode / RwdOpcode), tag, flags [3:0] ld_id, [4] poison
  (RwD only), hpa = device-relative host physical byte address (docs/DEVICE.md §2; bits below the line are
  ignored). The bridge sends MetaField = No-Op, MetaValue 0, SnpType No-Op. byte_enable bit i enables data
  byte i (MemWr ignores it: the controller writes whole lines).

Responses (device -> host)::

    type  name       payload                                                      LEN
    0x81  INFO       protocol version 1, LB 1, b_max 1, dram_addr_bits 1          4
    0x82  DRS        opcode 1, tag 2, flags 1, data LB                            4 + LB
    0x83  NDR        opcode 1, tag 2, flags 1                                     4
    0x84  CSR_RDATA  resp 1, data 4                                               5
    0x85  CSR_BRESP  resp 1                                                       1
    0xFF  ERROR      code 1, type of the offending frame 1 (0 if not received)    2

  DRS/NDR flags: [3:0] ld_id, [4] poison (DRS), [6:5] DevLoad. resp is the AXI4-Lite response (0 OKAY).
  INFO answers PING. Completions come in the controller's order (CXL allows any order; match by tag).

Errors (the device then resynchronises by itself):
- BAD_CRC (1): a whole frame arrived with a wrong CRC; dropped, the next SYNC starts a new frame.
- BAD_TYPE (2) / BAD_LENGTH (3): reported as soon as TYPE / LEN is seen; the device then ignores input until
  the line has been idle for the timeout, and hunts for SYNC again (so the rest of the bad frame is never
  parsed as a new one).
- TIMEOUT (4): a frame stopped mid-way for longer than the timeout; dropped.
- BUSY (5): a good REQ/RWD/CSR frame arrived while the previous one of the same kind had not yet been taken
  by the controller (host sent faster than the device drains); dropped. A host that keeps at most
  `request_depth / 2` requests outstanding never sees it.
- BAD_FIELD (6): a good REQ/RWD frame whose HPA has bits 52..55 set (it would alias a real address); dropped.
Bytes other than SYNC between frames are ignored silently. One error frame is pending at a time; errors that
happen while one is waiting to be sent are not reported separately.
"""
from __future__ import annotations

from dataclasses import dataclass
import enum

from smartquant.errors import SmartquantError
from smartquant.params import HPA_BITS

PROTOCOL_VERSION = 1
SYNC_HOST = 0xA5
SYNC_DEVICE = 0x5A
CRC8_POLY = 0x07
HPA_BYTES = 7        # 52-bit CXL HPA


class FrameType(enum.IntEnum):
    PING = 0x01
    REQ = 0x02
    RWD = 0x03
    CSR_READ = 0x04
    CSR_WRITE = 0x05
    INFO = 0x81
    DRS = 0x82
    NDR = 0x83
    CSR_RDATA = 0x84
    CSR_BRESP = 0x85
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    BAD_CRC = 1
    BAD_TYPE = 2
    BAD_LENGTH = 3
    TIMEOUT = 4
    BUSY = 5
    BAD_FIELD = 6


REQUEST_TYPES = (FrameType.PING, FrameType.REQ, FrameType.RWD, FrameType.CSR_READ, FrameType.CSR_WRITE)

# flags byte
FLAG_LD_ID_MASK = 0x0F
FLAG_POISON = 1 << 4
FLAG_DEV_LOAD_SHIFT = 5


def payload_length(frame_type: FrameType | int, line_bytes: int) -> int:
    """The fixed LEN of a frame type for a controller with `line_bytes`-byte lines."""
    frame_type = FrameType(frame_type)
    return {
        FrameType.PING: 0,
        FrameType.REQ: 4 + HPA_BYTES,
        FrameType.RWD: 4 + HPA_BYTES + line_bytes // 8 + line_bytes,
        FrameType.CSR_READ: 2,
        FrameType.CSR_WRITE: 6,
        FrameType.INFO: 4,
        FrameType.DRS: 4 + line_bytes,
        FrameType.NDR: 4,
        FrameType.CSR_RDATA: 5,
        FrameType.CSR_BRESP: 1,
        FrameType.ERROR: 2,
    }[frame_type]


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8/SMBUS (poly 0x07, init 0, MSB first)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ CRC8_POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def frame(frame_type: int, payload: bytes, sync: int = SYNC_HOST) -> bytes:
    """SYNC | TYPE | LEN | PAYLOAD | CRC (no check of LEN against the type: tests build bad frames with it)."""
    if len(payload) > 255:
        raise SmartquantError(f"frame payload of {len(payload)} bytes does not fit the 1-byte LEN field")
    body = bytes([frame_type & 0xFF, len(payload)]) + bytes(payload)
    return bytes([sync]) + body + bytes([crc8(body)])


def _flags(ld_id: int, poison: bool = False) -> int:
    if not 0 <= ld_id <= FLAG_LD_ID_MASK:
        raise SmartquantError(f"ld_id must be 0..15, got {ld_id}")
    return ld_id | (FLAG_POISON if poison else 0)


def _check_tag_hpa(tag: int, hpa: int) -> None:
    if not 0 <= tag < 1 << 16:
        raise SmartquantError(f"tag must be 0..65535, got {tag}")
    if not 0 <= hpa < 1 << HPA_BITS:
        raise SmartquantError(f"HPA {hpa:#x} does not fit {HPA_BITS} bits")


# --- host -> device ----------------------------------------------------------------------------------------
def encode_ping() -> bytes:
    return frame(FrameType.PING, b"")


def encode_req(opcode: int, tag: int, hpa: int, ld_id: int = 0) -> bytes:
    _check_tag_hpa(tag, hpa)
    payload = bytes([opcode & 0xF]) + tag.to_bytes(2, "little") + bytes([_flags(ld_id)]) \
        + hpa.to_bytes(HPA_BYTES, "little")
    return frame(FrameType.REQ, payload)


def encode_rwd(opcode: int, tag: int, hpa: int, data: bytes, byte_enable: int | None = None,
               poison: bool = False, ld_id: int = 0) -> bytes:
    _check_tag_hpa(tag, hpa)
    line_bytes = len(data)
    if line_bytes not in (8, 16, 32, 64):
        raise SmartquantError(f"a line is 8, 16, 32 or 64 bytes, got {line_bytes}")
    if byte_enable is None:
        byte_enable = (1 << line_bytes) - 1
    if not 0 <= byte_enable < 1 << line_bytes:
        raise SmartquantError(f"byte_enable {byte_enable:#x} wider than a {line_bytes}-byte line")
    payload = bytes([opcode & 0xF]) + tag.to_bytes(2, "little") + bytes([_flags(ld_id, poison)]) \
        + hpa.to_bytes(HPA_BYTES, "little") + byte_enable.to_bytes(line_bytes // 8, "little") + bytes(data)
    return frame(FrameType.RWD, payload)


def encode_csr_read(address: int) -> bytes:
    if not 0 <= address < 1 << 16:
        raise SmartquantError(f"CSR address {address:#x} does not fit 16 bits")
    return frame(FrameType.CSR_READ, address.to_bytes(2, "little"))


def encode_csr_write(address: int, value: int) -> bytes:
    if not 0 <= address < 1 << 16:
        raise SmartquantError(f"CSR address {address:#x} does not fit 16 bits")
    if not 0 <= value < 1 << 32:
        raise SmartquantError(f"CSR value {value:#x} does not fit 32 bits")
    return frame(FrameType.CSR_WRITE, address.to_bytes(2, "little") + value.to_bytes(4, "little"))


# --- device -> host ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Info:
    version: int
    line_bytes: int
    b_max: int
    dram_addr_bits: int


@dataclass(frozen=True)
class Drs:
    opcode: int
    tag: int
    ld_id: int
    poison: int
    dev_load: int
    data: bytes


@dataclass(frozen=True)
class Ndr:
    opcode: int
    tag: int
    ld_id: int
    dev_load: int


@dataclass(frozen=True)
class CsrReadData:
    resp: int
    data: int


@dataclass(frozen=True)
class CsrWriteResp:
    resp: int


@dataclass(frozen=True)
class Error:
    code: ErrorCode
    frame_type: int


Response = Info | Drs | Ndr | CsrReadData | CsrWriteResp | Error


def decode_response(frame_type: int, payload: bytes) -> Response:
    """One response frame's payload (LEN already checked by FrameDecoder) as a record."""
    t = FrameType(frame_type)
    if t == FrameType.INFO:
        return Info(*payload[:4])
    if t in (FrameType.DRS, FrameType.NDR):
        opcode, tag, flags = payload[0], int.from_bytes(payload[1:3], "little"), payload[3]
        dev_load = (flags >> FLAG_DEV_LOAD_SHIFT) & 0b11
        if t == FrameType.NDR:
            return Ndr(opcode, tag, flags & FLAG_LD_ID_MASK, dev_load)
        return Drs(opcode, tag, flags & FLAG_LD_ID_MASK, int(bool(flags & FLAG_POISON)), dev_load,
                   bytes(payload[4:]))
    if t == FrameType.CSR_RDATA:
        return CsrReadData(payload[0], int.from_bytes(payload[1:5], "little"))
    if t == FrameType.CSR_BRESP:
        return CsrWriteResp(payload[0])
    if t == FrameType.ERROR:
        try:
            code = ErrorCode(payload[0])
        except ValueError:
            raise SmartquantError(f"device sent an unknown error code {payload[0]}") from None
        return Error(code, payload[1])
    raise SmartquantError(f"frame type {t.name} is not a response")


class FrameDecoder:
    """Incremental parser of the device's byte stream: feed() bytes, get complete responses back.

    Bytes before a SYNC are skipped (and counted in `skipped`); a frame with a bad CRC, unknown type or wrong
    LEN raises SmartquantError: on a serial link that means the link, not the device, is broken.
    """

    def __init__(self, line_bytes: int, sync: int = SYNC_DEVICE):
        self.line_bytes = line_bytes
        self.sync = sync
        self.buffer = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list[Response]:
        self.buffer += data
        out = []
        while True:
            start = self.buffer.find(bytes([self.sync]))
            if start < 0:
                self.skipped += len(self.buffer)
                self.buffer.clear()
                return out
            self.skipped += start
            del self.buffer[:start]
            if len(self.buffer) < 3:
                return out
            frame_type, length = self.buffer[1], self.buffer[2]
            try:
                expected = payload_length(frame_type, self.line_bytes)
            except ValueError:
                raise SmartquantError(f"device sent an unknown frame type {frame_type:#04x}") from None
            if length != expected:
                raise SmartquantError(f"device frame type {frame_type:#04x} has LEN {length}, expected {expected}")
            if len(self.buffer) < 4 + length:
                return out
            body = bytes(self.buffer[1:3 + length])
            crc = self.buffer[3 + length]
            if crc8(body) != crc:
                raise SmartquantError(f"device frame type {frame_type:#04x} has a bad CRC")
            del self.buffer[:4 + length]
            out.append(decode_response(frame_type, body[2:]))


# --- device side (used by tests that act as the device, and documented for the RTL) ------------------------
def encode_response(response: Response) -> bytes:
    """The device's frame for a response record (the RTL bridge produces the same bytes)."""
    if isinstance(response, Info):
        t, p = FrameType.INFO, bytes([response.version, response.line_bytes, response.b_max, response.dram_addr_bits])
    elif isinstance(response, Drs):
        flags = response.ld_id | (FLAG_POISON if response.poison else 0) | (response.dev_load << FLAG_DEV_LOAD_SHIFT)
        t, p = FrameType.DRS, bytes([response.opcode]) + response.tag.to_bytes(2, "little") + bytes([flags]) + response.data
    elif isinstance(response, Ndr):
        flags = response.ld_id | (response.dev_load << FLAG_DEV_LOAD_SHIFT)
        t, p = FrameType.NDR, bytes([response.opcode]) + response.tag.to_bytes(2, "little") + bytes([flags])
    elif isinstance(response, CsrReadData):
        t, p = FrameType.CSR_RDATA, bytes([response.resp]) + response.data.to_bytes(4, "little")
    elif isinstance(response, CsrWriteResp):
        t, p = FrameType.CSR_BRESP, bytes([response.resp])
    elif isinstance(response, Error):
        t, p = FrameType.ERROR, bytes([int(response.code), response.frame_type])
    else:
        raise TypeError(f"not a response: {response!r}")
    return frame(t, p, sync=SYNC_DEVICE)
