"""CXL.mem message layouts (CXL 3.x field widths), shared by the RTL and the testbench.

A layout is an `amaranth.lib.data.StructLayout`: the first field sits at bit 0 of the flattened payload, which
is also how the testbench packs and unpacks the `*__payload` Verilog ports (`pack` / `unpack` below).
"""
from __future__ import annotations

from amaranth.hdl import Shape
from amaranth.lib import data

from smartquant.params import ControllerParams


def _m2s_header(params: ControllerParams) -> dict:
    """Fields M2S Req and RwD share, in payload order."""
    return {
        "opcode": 4,
        "address": params.message_address_bits,
        "tag": params.tag_bits,
        "ld_id": params.ld_id_bits,
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
    "tag": ControllerParams.tag_bits,
    "ld_id": ControllerParams.ld_id_bits,
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


_FIELD_TABLES: dict[int, tuple] = {}


def _fields(layout: data.StructLayout) -> tuple[tuple[str, int, int], ...]:
    """(name, offset, width) of every field, computed once per layout object (testbenches pack and unpack
    millions of payloads; Shape.cast per field per call was a visible share of simulation time)."""
    entry = _FIELD_TABLES.get(id(layout))
    if entry is None or entry[0] is not layout:
        entry = (layout, tuple((name, field.offset, Shape.cast(field.shape).width) for name, field in layout))
        _FIELD_TABLES[id(layout)] = entry
    return entry[1]


def pack(layout: data.StructLayout, **fields: int) -> int:
    """Flatten named field values into the payload integer (missing fields are 0)."""
    value = 0
    for name, offset, width in _fields(layout):
        v = int(fields.pop(name, 0))
        if v < 0 or v >> width:
            raise ValueError(f"field {name}={v:#x} does not fit in {width} bits")
        value |= v << offset
    if fields:
        raise ValueError(f"unknown fields {sorted(fields)}")
    return value


def unpack(layout: data.StructLayout, value: int) -> dict[str, int]:
    """Split a payload integer into its named fields."""
    value = int(value)
    return {name: (value >> offset) & ((1 << width) - 1) for name, offset, width in _fields(layout)}
