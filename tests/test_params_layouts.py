"""The REGION_CONFIG field table and the widths ControllerParams derives (smartquant/params.py), checked against
the bit positions DEVICE.md §6 gives and the definitions they replace."""
from __future__ import annotations

import itertools

import pytest

from smartquant.hdl.csr.layouts import region_config_layout
from smartquant.params import (
    REGION_CONFIG_BITS, ControllerParams, Format, Rounding, pack_region_config, region_config_word,
    unpack_region_config,
)

# DEVICE.md §6: [0] enable, [1] format, [3:2] log2(B)-1, [6:4] log2(R), [11:7] default k, [13:12] rounding
DEVICE_MD_BITS = {"enable": (0, 1), "format": (1, 1), "log2_b_minus_1": (2, 2), "log2_r": (4, 3),
                  "default_k": (7, 5), "rounding": (12, 2)}


def test_region_config_layout_matches_device_md():
    assert REGION_CONFIG_BITS == 14
    assert {name: (field.offset, field.width) for name, field in region_config_layout} == DEVICE_MD_BITS


def test_pack_unpack_round_trip_and_bits():
    for word in range(1 << REGION_CONFIG_BITS):
        assert pack_region_config(**unpack_region_config(word)) == word
    word = region_config_word(enable=True, fmt=Format.BF16, B=16, R=8, default_k=5, rounding=Rounding.TOWARD_ZERO)
    assert word == 1 | 1 << 1 | 3 << 2 | 3 << 4 | 5 << 7 | 2 << 12
    with pytest.raises(ValueError):
        pack_region_config(default_k=32)
    with pytest.raises(ValueError):
        pack_region_config(colour=1)


@pytest.mark.parametrize("width, addr_bits, regions", itertools.product((64, 128, 512), (12, 32, 44), (1, 2, 5, 16)))
def test_derived_widths(width, addr_bits, regions):
    p = ControllerParams(data_width=width, b_max=4, dram_addr_bits=addr_bits, n_regions=regions)
    assert p.line_bits == addr_bits - (width // 8 - 1).bit_length()
    # the smallest index width that numbers every region (at least 1 bit), worked out by hand
    assert p.region_index_bits == {1: 1, 2: 1, 5: 3, 16: 4}[regions]
    # DEVICE.md §2: the HPA's k field is 5 bits; CXL's Tag is 16 bits and LD-ID 4
    assert (p.k_bits, p.tag_bits, p.ld_id_bits) == (5, 16, 4)


@pytest.mark.parametrize("field, value", [
    ("data_width", 100), ("data_width", 64 + 0), ("b_max", 3), ("n_regions", 0), ("n_regions", 17),
    ("request_depth", 1), ("buffer_slots", 0), ("poison_entries", 0), ("axi_id_bits", 0), ("axi_id_bits", 17),
    ("csr_addr_bits", 10), ("csr_addr_bits", 65), ("dram_addr_bits", 11), ("dram_addr_bits", 45),
    ("host_port", "pcie"), ("host_axi_id_bits", 0),
])
def test_every_field_is_checked_where_the_params_are_made(field, value):
    """ControllerParams refuses what no unit can build, naming the field (every unit takes it as checked)."""
    kwargs = {field: value}
    if (field, value) == ("data_width", 64):
        kwargs["b_max"] = 16     # W/B = 4 < 8: a weight-major line would not be whole plane bytes
    with pytest.raises(ValueError, match=field if field != "data_width" or value != 64 else "too narrow"):
        ControllerParams(**kwargs)


@pytest.mark.parametrize("b_max, slots, expected", [
    # (log2_b_max, block_line_bits, buffer_slot_bits), worked out by hand: B lines per block are numbered 0..B-1
    (2, 1, (1, 1, 1)), (4, 2, (2, 2, 1)), (8, 3, (3, 3, 2)), (16, 4, (4, 4, 2)), (16, 5, (4, 4, 3)),
])
def test_derived_block_widths(b_max, slots, expected):
    p = ControllerParams(data_width=128, b_max=b_max, buffer_slots=slots)
    assert (p.log2_b_max, p.block_line_bits, p.buffer_slot_bits) == expected
    assert (p.view_bits, p.log2_b_bits, p.log2_r_bits) == (3, 3, 3)
