"""Small bit-level helpers shared by the units."""
from __future__ import annotations

from amaranth.hdl import Const, Mux, Cat, Instance, Signal


def popcount(bits):
    """Number of set bits of a value (an adder tree, balanced so its depth is log2 of the width)."""
    terms = [bits[i] for i in range(len(bits))]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def ecp5_slice_muxes(platform) -> bool:
    """Whether mux trees may use the ECP5 slice muxes (PFUMX, L6MUX21): the platform is an ECP5 one (an FPGA
    build). Without a platform (simulation, scripts/area_report.py) every tree is plain 2:1 muxes."""
    return getattr(platform, "family", None) == "ecp5"


def mux_tree(sources, select, slice_muxes=None):
    """sources[i] when select == i, as a binary tree of 2:1 muxes on the select bits (maps to LUT4 + PFUMX /
    L6MUX far better than a one-hot $pmux). None entries are don't-care: their subtree collapses.

    `slice_muxes`: a Module (given only when ecp5_slice_muxes(platform)): every whole 8-way subtree of every
    bit is then built as ECP5 slice logic, 4 LUT4 (2:1 on select bit 0) -> 2 PFUMX (bit 1) -> 1 L6MUX21
    (bit 2), instances added to that module; whole 4-way subtrees as 2 LUT4 -> 1 PFUMX. synth_ecp5's abc9
    cannot use PFUMX / L6MUX21 as mux levels (its wide LUTs are LUT5 = 2 LUT4 + PFUMX with shared inputs), so
    it maps a 16:1 mux in ~13 LUT4; this tree is 9 (8 + a LUT4 for bit 3)."""
    if slice_muxes is not None:
        widths = {len(source) for source in sources if source is not None}
        width = widths.pop() if len(widths) == 1 else max(widths)
        bits = [_slice_tree([None if s is None else s[b] for s in sources], select, slice_muxes)[0]
                for b in range(width)]
        return bits[0] if width == 1 else Cat(*bits)
    if len(sources) == 1:
        return sources[0]
    bits = (len(sources) - 1).bit_length()
    half = 1 << (bits - 1)
    low = mux_tree(sources[:half], select) if any(x is not None for x in sources[:half]) else None
    high = mux_tree(sources[half:], select) if any(x is not None for x in sources[half:]) else None
    if low is None or high is None:
        return high if low is None else low
    return Mux(select[bits - 1], high, low)


def _slice_tree(sources, select, m):
    """(value, kind) of one bit's tree: kind 'lut' (a 2:1 mux on select bit 0, one LUT4), 'pfumx' (a PFUMX of
    two 'lut'), 'l6mux' (an L6MUX21 of two 'pfumx'), or None (anything else: a source, a collapsed or a
    LUT-built subtree). A PFUMX takes only LUT4 outputs and an L6MUX21 only PFUMX outputs (the slice's
    wiring), so they are used only where both halves are whole subtrees of those kinds."""
    if len(sources) == 1:
        return sources[0], None
    bits = (len(sources) - 1).bit_length()
    half = 1 << (bits - 1)
    low = _slice_tree(sources[:half], select, m) if any(x is not None for x in sources[:half]) else None
    high = _slice_tree(sources[half:], select, m) if any(x is not None for x in sources[half:]) else None
    if low is None or high is None:
        return high if low is None else low
    (low_value, low_kind), (high_value, high_kind) = low, high
    if bits == 2 and low_kind == high_kind == "lut":
        out = Signal(name="pfumx")
        m.submodules += Instance("PFUMX", i_ALUT=high_value, i_BLUT=low_value, i_C0=select[1], o_Z=out)
        return out, "pfumx"
    if bits == 3 and low_kind == high_kind == "pfumx":
        out = Signal(name="l6mux")
        m.submodules += Instance("L6MUX21", i_D1=high_value, i_D0=low_value, i_SD=select[2], o_Z=out)
        return out, "l6mux"
    out = Mux(select[bits - 1], high_value, low_value)
    return out, ("lut" if bits == 1 else None)
