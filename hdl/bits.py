"""Small bit-level helpers shared by the units."""
from __future__ import annotations

from amaranth.hdl import Const


def popcount(bits):
    """Number of set bits of a value (an adder tree, balanced so its depth is log2 of the width)."""
    terms = [bits[i] for i in range(len(bits))]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]
