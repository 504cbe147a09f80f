"""Write the controller's Verilog (hdl/top.py SmartQuantController, or with --host-port axi the AXI4 host port
in front of it, hdl/host/axi_port.py SmartQuantAxiController) and print its parameters and ports.

Examples:
  smartquant verilog                               # smartquant_top.v with the default parameters
  smartquant verilog -o build/top.v --data-width 128 --b-max 8 --n-regions 2
  smartquant verilog -o - > top.v                  # Verilog on stdout (summary on stderr)
  smartquant verilog --host-port axi --host-axi-id-bits 12 -o build/top_axi.v   # AXI4 host port (host__*)
"""
from __future__ import annotations

import sys
from pathlib import Path

from smartquant.errors import SmartquantError
from smartquant.commands.parameters import add_parameter_options, params_from_options

DEFAULT_TOP_NAME = "smartquant_top"   # the module name the cocotb runner (sim/runner.py) builds

def add_arguments(parser):
    parser.add_argument("-o", "--output", default=f"{DEFAULT_TOP_NAME}.v",
                        help="Verilog file to write ('-' for stdout; default %(default)s)")
    parser.add_argument("--name", default=DEFAULT_TOP_NAME, help="top module name (default %(default)s)")
    add_parameter_options(parser.add_argument_group("controller parameters (ControllerParams)"))


def run(args):
    from amaranth.back import verilog
    from amaranth.hdl import Shape
    from smartquant.hdl.host.axi_port import build_controller

    params = params_from_options(args)
    try:
        top = build_controller(params)
        text = verilog.convert(top, name=args.name, emit_src=False)
    except ValueError as error:
        raise SmartquantError(str(error)) from error
    summary = sys.stderr if args.output == "-" else sys.stdout
    if args.output == "-":
        sys.stdout.write(text)
    else:
        path = Path(args.output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as error:
            raise SmartquantError(f"cannot write {path}: {error}") from error
        print(f"wrote {path} ({len(text.splitlines())} lines), top module {args.name}", file=summary)
    print("parameters:", file=summary)
    for name, value in params.as_dict().items():
        print(f"  {name:16} {value}", file=summary)
    print("ports (clk, rst and):", file=summary)
    for path, member, value in top.signature.flatten(top):
        direction = "in " if member.flow.name == "In" else "out"
        width = Shape.cast(member.shape).width
        print(f"  {direction} {'__'.join(str(part) for part in path):24} [{width}]", file=summary)
    return 0
