"""Combinational paths from input ports to output ports, and outputs not driven straight from a flip-flop.

An IP integrator expects every output of a block to come from a register and no input to reach an output
without passing one (issue 10, item 2): then the block's timing closes on its own and its neighbour's paths
end at its ports. This tool proves it on the generated netlist: the Amaranth design is converted to RTLIL,
flattened and lowered to single-bit gates and flip-flops by the YoWASP yosys (`proc; flatten;
memory_map; opt; techmap`), and the gate graph is walked backwards from every output bit to the flip-flops,
constants and input ports that feed it combinationally.

    python -m smartquant.scripts.io_paths [--data-width N --b-max N ...]   # the controller, as a table

`analyse(component)` returns {output port: PortReport}: `inputs`, the input ports with a combinational path to
it, and `unregistered_bits`, how many of its bits are driven by logic rather than by a flip-flop's output or a
constant. Latches count as logic (they are transparent).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from smartquant.errors import SmartquantError
from smartquant.scripts.packer_area import yosys_command

FLIP_FLOP_PREFIXES = ("$_DFF_", "$_DFFE_", "$_SDFF_", "$_SDFFE_", "$_SDFFCE_", "$_ADFF_", "$_ADFFE_",
                      "$_ALDFF_", "$_ALDFFE_", "$_DFFSR_", "$_DFFSRE_")
YOSYS_SCRIPT = """
read_rtlil design.il
hierarchy -top top
proc
flatten
memory_map
opt
techmap
opt -fast
opt_clean
write_json design.json
"""


@dataclass
class PortReport:
    direction: str
    width: int
    inputs: frozenset            # input ports with a combinational path to this output
    unregistered_bits: int       # bits driven by logic (not a flip-flop output, not a constant)


def gate_netlist(component, name: str = "top") -> dict:
    """The flattened single-bit gate netlist of `component` (yosys JSON, module `top`)."""
    text = rtlil.convert(component, name=name)
    with tempfile.TemporaryDirectory(prefix="io_paths_") as tmp:
        Path(tmp, "design.il").write_text(text)
        # relative paths: the WebAssembly yosys sees its working directory, not the whole file system
        result = subprocess.run(yosys_command() + ["-q", "-p", YOSYS_SCRIPT.replace("\n", "; ").strip("; ")],
                                capture_output=True, text=True, cwd=tmp)
        if result.returncode != 0:
            raise SmartquantError(f"yosys failed: {(result.stderr or result.stdout).strip()[-2000:]}")
        return json.loads(Path(tmp, "design.json").read_text())["modules"][name]


def analyse_netlist(module: dict, ignore_inputs=("clk",)) -> dict:
    """{output port: PortReport} of a gate netlist from gate_netlist()."""
    input_bits = {}      # bit -> input port name
    for port, info in module["ports"].items():
        if info["direction"] == "input":
            for bit in info["bits"]:
                if isinstance(bit, int):
                    input_bits[bit] = port
    flop_outputs = set()
    gate_inputs = {}     # bit -> the bits of the gate that drives it
    for cell in module["cells"].values():
        kind = cell["type"]
        directions = cell["port_directions"]
        outs = [b for p, bits in cell["connections"].items() if directions[p] == "output" for b in bits
                if isinstance(b, int)]
        if kind.startswith(FLIP_FLOP_PREFIXES):
            flop_outputs.update(outs)
            continue
        if kind == "$scopeinfo":   # hierarchy annotation left by flatten, no logic
            continue
        if not kind.startswith("$_"):
            raise ValueError(f"cell {kind} was not lowered to gates")
        ins = [b for p, bits in cell["connections"].items() if directions[p] == "input" for b in bits
               if isinstance(b, int)]
        for bit in outs:
            gate_inputs[bit] = ins

    reached = {}         # bit -> frozenset of input ports with a combinational path to it

    def inputs_of(root):
        stack = [root]
        while stack:
            bit = stack[-1]
            if bit in reached:
                stack.pop()
                continue
            if bit in input_bits:
                reached[bit] = frozenset([input_bits[bit]]) - set(ignore_inputs)
            elif bit in flop_outputs or bit not in gate_inputs:
                reached[bit] = frozenset()
            else:
                pending = [b for b in gate_inputs[bit] if b not in reached]
                if pending:
                    stack.extend(pending)
                    continue
                reached[bit] = frozenset().union(*(reached[b] for b in gate_inputs[bit]))
            stack.pop()
        return reached[root]

    reports = {}
    for port, info in module["ports"].items():
        if info["direction"] != "output":
            continue
        bits = info["bits"]
        found = frozenset().union(*(inputs_of(b) for b in bits if isinstance(b, int)))
        unregistered = sum(1 for b in bits if isinstance(b, int) and b not in flop_outputs
                           and (b in gate_inputs or b in input_bits))
        reports[port] = PortReport("output", len(bits), found, unregistered)
    return reports


def analyse(component, ignore_inputs=("clk",)) -> dict:
    return analyse_netlist(gate_netlist(component), ignore_inputs)


def main(argv=None) -> int:
    from smartquant.params import ControllerParams
    from smartquant.hdl.host.axi_port import build_controller
    parser = argparse.ArgumentParser(prog="python -m smartquant.scripts.io_paths", description=__doc__.split("\n\n")[0])
    defaults = ControllerParams(data_width=64, b_max=4, n_regions=1, request_depth=4, dram_addr_bits=14)
    for field, value in defaults.as_dict().items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    params = ControllerParams(**{field: getattr(args, field) for field in defaults.as_dict()})
    reports = analyse(build_controller(params))
    print(f"{'output':24} {'bits':>5} {'logic-driven':>12}  inputs reaching it combinationally")
    for port, report in sorted(reports.items()):
        print(f"{port:24} {report.width:5} {report.unregistered_bits:12}  {', '.join(sorted(report.inputs)) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
