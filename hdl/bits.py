"""Small bit-level helpers shared by the units."""
from __future__ import annotations

from amaranth.hdl import Const, Mux


def popcount(bits):
    """Number of set bits of a value (an adder tree, balanced so its depth is log2 of the width)."""
    terms = [bits[i] for i in range(len(bits))]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def mux_tree(sources, select):
    """sources[i] when select == i, as a binary tree of 2:1 muxes on the select bits (maps to LUT4 + PFUMX /
    L6MUX far better than a one-hot $pmux). None entries are don't-care: their subtree collapses."""
    if len(sources) == 1:
        return sources[0]
    bits = (len(sources) - 1).bit_length()
    half = 1 << (bits - 1)
    low = mux_tree(sources[:half], select) if any(x is not None for x in sources[:half]) else None
    high = mux_tree(sources[half:], select) if any(x is not None for x in sources[half:]) else None
    if low is None or high is None:
        return high if low is None else low
    return Mux(select[bits - 1], high, low)


def or_all(values):
    """The bitwise OR of a list of values (the AND-OR selects of one-hot choices)."""
    result = values[0]
    for value in values[1:]:
        result = result | value
    return result
