"""hdl/bits.py: mux_tree built of ECP5 slice muxes (PFUMX, L6MUX21) is the same function as the plain tree.

The slice-mux form is elaborated only for an ECP5 platform (FPGA builds), so the simulations never run it: a
yosys SAT proof (`miter -equiv`) checks it against the plain 2:1 tree, with PFUMX / L6MUX21 as their models in
yosys's techlibs/lattice/common_sim.vh (Z = C0 ? ALUT : BLUT, Z = SD ? D1 : D0).
"""
import subprocess
import tempfile
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from smartquant.hdl.bits import mux_tree, ecp5_slice_muxes
from smartquant.scripts.packer_area import yosys_command, Ecp5Platform

SLICE_MODELS = """
module PFUMX (input ALUT, BLUT, C0, output Z); assign Z = C0 ? ALUT : BLUT; endmodule
module L6MUX21 (input D0, D1, SD, output Z); assign Z = SD ? D1 : D0; endmodule
"""


class Tree(wiring.Component):
    """`out` = mux_tree of `n` sources of `width` bits (None where `holes` says) on `select`."""

    def __init__(self, n, width, holes=()):
        self.n, self.width, self.holes = n, width, set(holes)
        super().__init__({"sources": In(n * width), "select": In(max(1, (n - 1).bit_length())),
                          "out": Out(width)})

    def elaborate(self, platform):
        m = Module()
        sources = [None if i in self.holes else self.sources[i * self.width:(i + 1) * self.width]
                   for i in range(self.n)]
        m.d.comb += self.out.eq(mux_tree(sources, self.select,
                                         slice_muxes=m if ecp5_slice_muxes(platform) else None))
        return m


def cells_and_proof(n, width, holes=()):
    """(cell types of the slice-mux netlist, whether SAT proves it equal to the plain tree where the plain
    tree's select picks a present source)."""
    gold = rtlil.convert(Tree(n, width, holes), name="gold")
    gate = rtlil.convert(Tree(n, width, holes), name="gate", platform=Ecp5Platform())
    with tempfile.TemporaryDirectory(prefix="test_bits_") as tmp:
        Path(tmp, "gold.il").write_text(gold)
        Path(tmp, "gate.il").write_text(gate)
        Path(tmp, "models.v").write_text(SLICE_MODELS)
        # don't-care sources: the select is constrained to the present ones (an `assume` of the miter input)
        present = [i for i in range(n) if i not in holes]
        script = ("read_rtlil gold.il; read_rtlil gate.il; read_verilog models.v; proc; "
                  "tee -o counts.txt stat gate; "
                  "miter -equiv -flatten -make_outputs -ignore_gold_x gold gate miter; hierarchy -top miter; ")
        # don't-care sources: the proof is made for each select value that picks a present source
        present = [i for i in range(n) if i not in holes]
        if len(present) < n:
            script += "; ".join(f"sat -verify -prove trigger 0 -set in_select {i} miter" for i in present)
        else:
            script += "sat -verify -prove trigger 0 miter"
        result = subprocess.run(yosys_command() + ["-q", "-p", script], capture_output=True, text=True, cwd=tmp)
        counts = Path(tmp, "counts.txt").read_text() if Path(tmp, "counts.txt").exists() else ""
    return counts, result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.parametrize("n, width, holes", [
    (16, 3, ()),                 # the AxiWriter's beat mux: 16 words
    (8, 1, ()),                  # the packer's even-offset trees
    (4, 2, ()),
    (2, 1, ()),
    (16, 1, (11, 13, 14, 15)),   # the packer's compaction: don't-care sources
    (12, 1, ()),                 # a length that is not a power of two
])
def test_slice_mux_tree_equals_the_plain_tree(n, width, holes):
    counts, proved, log = cells_and_proof(n, width, holes)
    assert proved, log
    whole = [b for b in range(0, n - 7, 8) if not set(range(b, b + 8)) & set(holes)]
    if whole:   # every whole 8-way subtree of every bit is one L6MUX21 of two PFUMX
        assert "L6MUX21" in counts and "PFUMX" in counts, counts


def test_no_slice_muxes_without_an_ecp5_platform():
    class Other:
        family = "ice40"
    assert not ecp5_slice_muxes(None) and not ecp5_slice_muxes(Other()) and ecp5_slice_muxes(Ecp5Platform())
