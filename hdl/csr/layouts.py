"""Decoded region-table entry: what the CSR block hands the controller for each region (docs/DEVICE.md §6)."""
from amaranth.lib import data

from smartquant.params import ControllerParams, REGION_CONFIG_FIELDS

# the REGION_CONFIG register (DEVICE.md §6) as the CSR block holds it, from the field table in smartquant/params.py
region_config_layout = data.StructLayout(dict(REGION_CONFIG_FIELDS))


def region_entry_layout(params: ControllerParams) -> data.StructLayout:
    line_bits = params.line_bits
    return data.StructLayout({
        "enable": 1,           # 1 only for a legal configuration
        "bf16": 1,
        "log2_b": params.log2_b_bits,   # B = 1 << log2_b (1..4)
        "log2_r": params.log2_r_bits,   # R = 1 << log2_r (0..6)
        "default_k": params.k_bits,
        "midpoint": 1,         # rounding: 0 floor, 1 midpoint fill
        "base_line": line_bits,
        "n_superblocks": line_bits,
        # first line past the region: base_line + n_superblocks * R * B, at most 1 << line_bits (the end of
        # the device); registered by the CSR block from the three region registers (region_end_line)
        "end_line": line_bits + 1,
    })


def region_end_line(params: ControllerParams, base_line: int, n_superblocks: int, log2_b: int, log2_r: int) -> int:
    """The `end_line` field for a region (what the CSR block computes; tests that set entries directly use it)."""
    line_bits = params.line_bits
    return min(base_line + (n_superblocks << (log2_r + log2_b)), 1 << line_bits)
