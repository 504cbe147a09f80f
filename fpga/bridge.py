"""Host bridge: framed byte stream (from a UART) <-> the controller's CXL.mem channels and CSR bus.

The frame format, the error codes and the resynchronisation rules are specified in fpga/protocol.py (one
description shared with the host tool and the tests); this module implements the device side of it. In short:
`SYNC | TYPE | LEN | PAYLOAD | CRC-8` (0xA5 from the host, 0x5A from the device, CRC-8/SMBUS over TYPE, LEN and
PAYLOAD, little-endian fields); requests PING, REQ (M2S Req), RWD (M2S RwD), CSR_READ, CSR_WRITE; responses
INFO, DRS, NDR, CSR_RDATA, CSR_BRESP and ERROR (BAD_CRC, BAD_TYPE, BAD_LENGTH, TIMEOUT, BUSY, BAD_FIELD).

`HostBridge(params, timeout_cycles)` ports:
- rx: In(stream of bytes) from the UART receiver. Always ready (a UART cannot be held back).
- tx: Out(stream of bytes) to the UART transmitter (which back-pressures).
- m2s_req / m2s_rwd: Out(stream) to the controller; s2m_ndr / s2m_drs: In(stream) from it.
- csr: Out(AxiLiteSignature): AXI4-Lite manager, one access at a time.

Choices:
- One received frame is buffered per destination (Req, RwD, CSR); a new frame for a destination whose
  previous one has not been taken yet is answered with a BUSY error (never a hang, never a silent drop).
- CSR addresses that do not fit the controller's csr_addr_bits are answered SLVERR without a bus access
  (they would otherwise alias real registers). HPA bits 52..55 set -> BAD_FIELD error.
- Responses are sent one frame at a time in the priority error > INFO > CSR > NDR > DRS; NDR/DRS are taken
  from the controller only when the transmitter is free, so a slow UART back-pressures the controller.
"""
from __future__ import annotations

from amaranth import Module, Signal, Cat, C
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from smartquant.params import HPA_BITS, ControllerParams, META_FIELD_NO_OP
from smartquant.hdl.cxl.messages import req_layout, rwd_layout, ndr_layout, drs_layout
from smartquant.hdl.backend.axi import AxiLiteSignature, AXI_RESP_SLVERR
from smartquant.fpga.protocol import (FrameType, ErrorCode, payload_length, SYNC_HOST, SYNC_DEVICE, CRC8_POLY,
                                      REQUEST_TYPES, PROTOCOL_VERSION, HPA_BYTES)


def crc8_step(crc, byte):
    """CRC-8 (poly 0x07, MSB first) of `crc` extended by one byte: the RTL twin of protocol.crc8.

    The eight shift/xor steps are unrolled symbolically into one XOR per output bit (a flat network rather
    than a chain of muxes, which would grow with every step)."""
    # each bit is a set of terms ("c", i) / ("d", i); xor of two sets is their symmetric difference
    bits = [{("c", i), ("d", i)} for i in range(8)]             # crc ^= byte
    for _ in range(8):
        top = bits[7]
        shifted = [set()] + bits[:7]
        bits = [shifted[j] ^ top if (CRC8_POLY >> j) & 1 else shifted[j] for j in range(8)]
    out = []
    for terms in bits:
        value = C(0, 1)
        for kind, i in sorted(terms):
            value = value ^ (crc[i] if kind == "c" else byte[i])
        out.append(value)
    return Cat(*out)


class HostBridge(wiring.Component):
    def __init__(self, params: ControllerParams = ControllerParams(), timeout_cycles: int = 250_000):
        if timeout_cycles < 2:
            raise ValueError(f"timeout_cycles must be >= 2, got {timeout_cycles}")
        self.params = params
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "m2s_req": Out(stream.Signature(req_layout(params))),
            "m2s_rwd": Out(stream.Signature(rwd_layout(params))),
            "s2m_ndr": In(stream.Signature(ndr_layout(params))),
            "s2m_drs": In(stream.Signature(drs_layout(params))),
            "csr": Out(AxiLiteSignature(params.csr_addr_bits, 32)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        line_bytes = p.line_bytes
        max_len = payload_length(FrameType.RWD, line_bytes)

        # ---------------------------------------------------------------- receive
        # The received byte is registered here, beside the frame logic, before any decode: the UART receiver sits
        # by its pin, and its data -> the frame FSM's compares -> the error registers' enable was a 75 MHz build's
        # worst path (timing round 21, 17.0 ns, 4 ns of it one net across the chip). A byte comes every few
        # hundred cycles, so the cycle this adds costs nothing.
        rx_valid = Signal()
        rx_byte = Signal(8)
        m.d.sync += [rx_valid.eq(self.rx.valid), rx_byte.eq(self.rx.payload)]
        rx_buf = Signal(max_len * 8)
        rx_index = Signal(range(max_len + 1))
        rx_type = Signal(8)
        rx_len = Signal(8)
        rx_crc = Signal(8)
        idle = Signal(range(self.timeout_cycles + 1))
        timed_out = Signal()
        m.d.comb += [self.rx.ready.eq(1), timed_out.eq(idle == self.timeout_cycles)]
        with m.If(rx_valid):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)

        def expected_length(type_value):
            known, length = Signal(), Signal(8)
            with m.Switch(type_value):
                for t in REQUEST_TYPES:
                    with m.Case(int(t)):
                        m.d.comb += [known.eq(1), length.eq(payload_length(t, line_bytes))]
            return known, length

        byte_type_known, _ = expected_length(rx_byte)
        _, type_length = expected_length(rx_type)

        # errors: one pending at a time (later ones are not reported while it waits)
        err_pending = Signal()
        err_code = Signal(8)
        err_type = Signal(8)

        def raise_error(code, frame_type):
            with m.If(~err_pending):
                m.d.sync += [err_pending.eq(1), err_code.eq(int(code)), err_type.eq(frame_type)]

        # fields at fixed payload offsets (REQ is a prefix of RWD)
        f_opcode = rx_buf[0:8]
        f_tag = rx_buf[8:24]
        f_flags = rx_buf[24:32]
        f_hpa = rx_buf[32:32 + 8 * HPA_BYTES]
        be_at = 32 + 8 * HPA_BYTES
        f_byte_enable = rx_buf[be_at:be_at + line_bytes]
        data_at = be_at + line_bytes
        f_data = rx_buf[data_at:data_at + p.data_width]
        f_csr_addr = rx_buf[0:16]
        f_csr_wdata = rx_buf[16:48]
        hpa_too_high = f_hpa[HPA_BITS:].any()
        message_address = f_hpa[p.line_offset_bits:HPA_BITS]

        info_pending = Signal()
        csr_start = Signal()
        csr_write = Signal()
        csr_addr = Signal(16)
        csr_wdata = Signal(32)
        csr_busy = Signal()

        req_busy = self.m2s_req.valid & ~self.m2s_req.ready
        rwd_busy = self.m2s_rwd.valid & ~self.m2s_rwd.ready
        with m.If(self.m2s_req.ready):
            m.d.sync += self.m2s_req.valid.eq(0)
        with m.If(self.m2s_rwd.ready):
            m.d.sync += self.m2s_rwd.valid.eq(0)
        # The payloads follow the frame buffer whenever their stream is free, so a dispatch only raises VALID:
        # loading the ~180 RwD payload flip-flops under the CRC compare of the incoming byte was the 75 MHz
        # build's critical path (0ffdb38, 20.1 ns); now their clock enable is the stream's busy flag.
        for message, busy in ((self.m2s_req, req_busy), (self.m2s_rwd, rwd_busy)):
            with m.If(~busy):
                m.d.sync += [message.p.opcode.eq(f_opcode[:4]), message.p.address.eq(message_address),
                             message.p.tag.eq(f_tag), message.p.ld_id.eq(f_flags[:4]),
                             message.p.meta_field.eq(META_FIELD_NO_OP), message.p.meta_value.eq(0),
                             message.p.snp_type.eq(0)]
        with m.If(~rwd_busy):
            m.d.sync += [self.m2s_rwd.p.poison.eq(f_flags[4]), self.m2s_rwd.p.byte_enable.eq(f_byte_enable),
                         self.m2s_rwd.p.data.eq(f_data)]
        m.d.sync += csr_start.eq(0)

        with m.FSM(name="rx_fsm"):
            with m.State("HUNT"):
                with m.If(rx_valid & (rx_byte == SYNC_HOST)):
                    m.next = "TYPE"
            with m.State("TYPE"):
                with m.If(rx_valid):
                    m.d.sync += [rx_type.eq(rx_byte), rx_crc.eq(crc8_step(C(0, 8), rx_byte))]
                    with m.If(byte_type_known):
                        m.next = "LEN"
                    with m.Else():
                        raise_error(ErrorCode.BAD_TYPE, rx_byte)
                        m.next = "DRAIN"
                with m.Elif(timed_out):
                    raise_error(ErrorCode.TIMEOUT, 0)
                    m.next = "HUNT"
            with m.State("LEN"):
                with m.If(rx_valid):
                    m.d.sync += [rx_len.eq(rx_byte), rx_crc.eq(crc8_step(rx_crc, rx_byte)), rx_index.eq(0)]
                    with m.If(rx_byte != type_length):
                        raise_error(ErrorCode.BAD_LENGTH, rx_type)
                        m.next = "DRAIN"
                    with m.Elif(rx_byte == 0):
                        m.next = "CRC"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    raise_error(ErrorCode.TIMEOUT, rx_type)
                    m.next = "HUNT"
            with m.State("PAYLOAD"):
                with m.If(rx_valid):
                    for i in range(max_len):         # one enable per byte: cheaper than a variable-index part select
                        with m.If(rx_index == i):
                            m.d.sync += rx_buf[8 * i:8 * i + 8].eq(rx_byte)
                    m.d.sync += [rx_index.eq(rx_index + 1),
                                 rx_crc.eq(crc8_step(rx_crc, rx_byte))]
                    with m.If(rx_index == rx_len - 1):
                        m.next = "CRC"
                with m.Elif(timed_out):
                    raise_error(ErrorCode.TIMEOUT, rx_type)
                    m.next = "HUNT"
            with m.State("CRC"):
                with m.If(rx_valid):
                    m.next = "HUNT"
                    with m.If(rx_byte != rx_crc):
                        raise_error(ErrorCode.BAD_CRC, rx_type)
                    with m.Else():
                        self._dispatch(m, rx_type, raise_error, req_busy, rwd_busy, csr_busy, hpa_too_high,
                                       info_pending, csr_start, csr_write, csr_addr, csr_wdata,
                                       f_csr_addr, f_csr_wdata)
                with m.Elif(timed_out):
                    raise_error(ErrorCode.TIMEOUT, rx_type)
                    m.next = "HUNT"
            with m.State("DRAIN"):
                # the rest of a frame whose TYPE/LEN was bad: ignore bytes until the line goes quiet
                with m.If(timed_out):
                    m.next = "HUNT"

        # ---------------------------------------------------------------- CSR (AXI4-Lite manager)
        csr = self.csr
        csr_resp_pending = Signal()
        csr_resp_is_read = Signal()
        csr_resp = Signal(2)
        csr_rdata = Signal(32)
        csr_in_range = csr_addr[p.csr_addr_bits:] == 0
        m.d.comb += [csr.awprot.eq(0), csr.arprot.eq(0), csr.wstrb.eq(0xF)]
        with m.FSM(name="csr_fsm") as csr_fsm:
            with m.State("IDLE"):
                with m.If(csr_start):
                    m.d.sync += csr_resp_is_read.eq(~csr_write)
                    with m.If(~csr_in_range):
                        m.d.sync += [csr_resp_pending.eq(1), csr_resp.eq(AXI_RESP_SLVERR), csr_rdata.eq(0)]
                    with m.Elif(csr_write):
                        m.d.sync += [csr.awaddr.eq(csr_addr), csr.wdata.eq(csr_wdata),
                                     csr.awvalid.eq(1), csr.wvalid.eq(1)]
                        m.next = "WRITE"
                    with m.Else():
                        m.d.sync += [csr.araddr.eq(csr_addr), csr.arvalid.eq(1)]
                        m.next = "READ"
            with m.State("WRITE"):
                with m.If(csr.awready):
                    m.d.sync += csr.awvalid.eq(0)
                with m.If(csr.wready):
                    m.d.sync += csr.wvalid.eq(0)
                aw_done = ~csr.awvalid | csr.awready
                w_done = ~csr.wvalid | csr.wready
                with m.If(aw_done & w_done):
                    m.next = "WRITE_RESP"
            with m.State("WRITE_RESP"):
                m.d.comb += csr.bready.eq(1)
                with m.If(csr.bvalid):
                    m.d.sync += [csr_resp_pending.eq(1), csr_resp.eq(csr.bresp)]
                    m.next = "IDLE"
            with m.State("READ"):
                with m.If(csr.arready):
                    m.d.sync += csr.arvalid.eq(0)
                    m.next = "READ_DATA"
            with m.State("READ_DATA"):
                m.d.comb += csr.rready.eq(1)
                with m.If(csr.rvalid):
                    m.d.sync += [csr_resp_pending.eq(1), csr_resp.eq(csr.rresp), csr_rdata.eq(csr.rdata)]
                    m.next = "IDLE"
        m.d.comb += csr_busy.eq(~csr_fsm.ongoing("IDLE") | csr_resp_pending | csr_start)

        # ---------------------------------------------------------------- transmit
        tx_buf = Signal(payload_length(FrameType.DRS, line_bytes) * 8)
        tx_type = Signal(8)
        tx_len = Signal(8)
        tx_left = Signal(8)
        tx_crc = Signal(8)
        ndr, drs = self.s2m_ndr, self.s2m_drs

        def load(frame_type, fields):
            m.d.sync += [tx_type.eq(int(frame_type)), tx_len.eq(payload_length(frame_type, line_bytes)),
                         tx_buf.eq(Cat(*fields))]

        with m.FSM(name="tx_fsm"):
            with m.State("IDLE"):
                with m.If(err_pending):
                    load(FrameType.ERROR, [err_code, err_type])
                    m.d.sync += err_pending.eq(0)
                    m.next = "SYNC"
                with m.Elif(info_pending):
                    load(FrameType.INFO, [C(PROTOCOL_VERSION, 8), C(line_bytes, 8), C(p.b_max, 8),
                                          C(p.dram_addr_bits, 8)])
                    m.d.sync += info_pending.eq(0)
                    m.next = "SYNC"
                with m.Elif(csr_resp_pending):
                    with m.If(csr_resp_is_read):
                        load(FrameType.CSR_RDATA, [Cat(csr_resp, C(0, 6)), csr_rdata])
                    with m.Else():
                        load(FrameType.CSR_BRESP, [Cat(csr_resp, C(0, 6))])
                    m.d.sync += csr_resp_pending.eq(0)
                    m.next = "SYNC"
                with m.Elif(ndr.valid):
                    m.d.comb += ndr.ready.eq(1)
                    load(FrameType.NDR, [Cat(ndr.p.opcode, C(0, 5)), ndr.p.tag,
                                         Cat(ndr.p.ld_id, C(0, 1), ndr.p.dev_load, C(0, 1))])
                    m.next = "SYNC"
                with m.Elif(drs.valid):
                    m.d.comb += drs.ready.eq(1)
                    load(FrameType.DRS, [Cat(drs.p.opcode, C(0, 5)), drs.p.tag,
                                         Cat(drs.p.ld_id, drs.p.poison, drs.p.dev_load, C(0, 1)), drs.p.data])
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(SYNC_DEVICE)]
                with m.If(self.tx.ready):
                    m.next = "TYPE"
            with m.State("TYPE"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_type)]
                with m.If(self.tx.ready):
                    m.d.sync += tx_crc.eq(crc8_step(C(0, 8), tx_type))
                    m.next = "LEN"
            with m.State("LEN"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_len)]
                with m.If(self.tx.ready):
                    m.d.sync += [tx_crc.eq(crc8_step(tx_crc, tx_len)), tx_left.eq(tx_len)]
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_buf[:8])]
                with m.If(self.tx.ready):
                    m.d.sync += [tx_crc.eq(crc8_step(tx_crc, tx_buf[:8])), tx_buf.eq(tx_buf >> 8),
                                 tx_left.eq(tx_left - 1)]
                    with m.If(tx_left == 1):
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc)]
                with m.If(self.tx.ready):
                    m.next = "IDLE"
        return m

    def _dispatch(self, m, rx_type, raise_error, req_busy, rwd_busy, csr_busy, hpa_too_high, info_pending,
                  csr_start, csr_write, csr_addr, csr_wdata, f_csr_addr, f_csr_wdata):
        """A good frame: hand it to its destination (or answer BUSY / BAD_FIELD)."""
        with m.Switch(rx_type):
            with m.Case(int(FrameType.PING)):
                m.d.sync += info_pending.eq(1)
            with m.Case(int(FrameType.REQ)):
                with m.If(hpa_too_high):
                    raise_error(ErrorCode.BAD_FIELD, rx_type)
                with m.Elif(req_busy):
                    raise_error(ErrorCode.BUSY, rx_type)
                with m.Else():
                    m.d.sync += self.m2s_req.valid.eq(1)
            with m.Case(int(FrameType.RWD)):
                with m.If(hpa_too_high):
                    raise_error(ErrorCode.BAD_FIELD, rx_type)
                with m.Elif(rwd_busy):
                    raise_error(ErrorCode.BUSY, rx_type)
                with m.Else():
                    m.d.sync += self.m2s_rwd.valid.eq(1)
            with m.Case(int(FrameType.CSR_READ), int(FrameType.CSR_WRITE)):
                with m.If(csr_busy):
                    raise_error(ErrorCode.BUSY, rx_type)
                with m.Else():
                    m.d.sync += [csr_start.eq(1), csr_write.eq(rx_type == int(FrameType.CSR_WRITE)),
                                 csr_addr.eq(f_csr_addr), csr_wdata.eq(f_csr_wdata)]
