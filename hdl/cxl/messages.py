"""CXL.mem message layouts (CXL 3.x field widths), shared by the RTL and the testbench.

A layout is an `amaranth.lib.data.StructLayout`: the first field sits at bit 0 of the flattened payload, which
is also how the testbench packs and unpacks the `*__payload` Verilog ports (`pack` / `unpack` below).
"""
from __future__ import annotations

from amaranth.hdl import Shape
from amaranth.lib import data

from smartquant.params import ControllerParams

HPA_BITS = 52


def address_bits(params: ControllerParams) -> int:
    """Width of the message address field: HPA[51 : log2(line bytes)]."""
    return HPA_BITS - params.line_offset_bits


def _m2s_header(params: ControllerParams) -> dict:
    """Fields M2S Req and RwD share, in payload order."""
    return {
        "opcode": 4,
        "address": address_bits(params),
        "tag": 16,
        "ld_id": 4,
        "meta_field": 2,
        "meta_value": 2,
        "snp_type": 3,
    }


def req_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout(_m2s_header(params))


def rwd_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({
        **_m2s_header(params),
        "poison": 1,
        "byte_enable": params.line_bytes,
        "data": params.data_width,
    })


# Fields S2M NDR and DRS share, in payload order.
_S2M_HEADER = {
    "opcode": 3,
    "tag": 16,
    "ld_id": 4,
    "meta_field": 2,
    "meta_value": 2,
    "dev_load": 2,
}


def ndr_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout(dict(_S2M_HEADER))


def drs_layout(params: ControllerParams) -> data.StructLayout:
    return data.StructLayout({
        **_S2M_HEADER,
        "poison": 1,
        "data": params.data_width,
    })


def pack(layout: data.StructLayout, **fields: int) -> int:
    """Flatten named field values into the payload integer (missing fields are 0)."""
    value = 0
    for name, field in layout:
        v = int(fields.pop(name, 0))
        width = Shape.cast(field.shape).width
        if v < 0 or v >> width:
            raise ValueError(f"field {name}={v:#x} does not fit in {width} bits")
        value |= v << field.offset
    if fields:
        raise ValueError(f"unknown fields {sorted(fields)}")
    return value


def unpack(layout: data.StructLayout, value: int) -> dict[str, int]:
    """Split a payload integer into its named fields."""
    value = int(value)
    return {name: (value >> field.offset) & ((1 << Shape.cast(field.shape).width) - 1) for name, field in layout}
