"""Write the controller's Verilog (hdl/top.py SmartQuantController, or with --host-port axi the AXI4 host port
in front of it, hdl/host/axi_port.py SmartQuantAxiController) and print its parameters and ports.

Examples:
  smartquant verilog                               # smartquant_top.v with the default parameters
  smartquant verilog -o build/top.v --data-width 128 --b-max 8 --regions 2
  smartquant verilog -o - > top.v                  # Verilog on stdout (summary on stderr)
  smartquant verilog --host-port axi --host-axi-id-bits 12 -o build/top_axi.v   # AXI4 host port (host__*)
"""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams, HOST_PORTS

DEFAULT_TOP_NAME = "smartquant_top"   # the module name the cocotb runner (sim/runner.py) builds

# ControllerParams field -> (command-line option, help)
PARAMETER_OPTIONS = {
    "data_width": ("--data-width", "bits per line = weights per block: 64, 128, 256 or 512"),
    "b_max": ("--b-max", "widest stored weight the datapath supports: 2, 4, 8 or 16"),
    "n_regions": ("--regions", "region-table entries, 1..16"),
    "request_depth": ("--request-depth", "M2S reads the front end buffers"),
    "buffer_slots": ("--buffer-slots", "assembled-block slots in the read engine's block buffer"),
    "poison_entries": ("--poison-entries", "poisoned blocks remembered before the overflow rule"),
    "dram_addr_bits": ("--dram-addr-bits", "AXI byte-address width = device capacity (log2 bytes), 12..44"),
    "axi_id_bits": ("--axi-id-bits", "AXI ID width"),
    "csr_addr_bits": ("--csr-addr-bits", "CSR AXI4-Lite address width"),
    "host_port": ("--host-port", "host interface: cxl (CXL.mem message ports) or axi (AXI4 subordinate)"),
    "host_axi_id_bits": ("--host-axi-id-bits", "AXI ID width of the host port with --host-port axi, 1..16"),
}


def add_arguments(parser):
    parser.add_argument("-o", "--output", default=f"{DEFAULT_TOP_NAME}.v",
                        help="Verilog file to write ('-' for stdout; default %(default)s)")
    parser.add_argument("--name", default=DEFAULT_TOP_NAME, help="top module name (default %(default)s)")
    defaults = ControllerParams()
    for field in fields(ControllerParams):
        option, help_text = PARAMETER_OPTIONS[field.name]
        if field.name == "host_port":
            parser.add_argument(option, dest=field.name, choices=HOST_PORTS, default=defaults.host_port,
                                help=f"{help_text} (default %(default)s)")
            continue
        parser.add_argument(option, dest=field.name, type=int, metavar="N", default=getattr(defaults, field.name),
                            help=f"{help_text} (default %(default)s)")


def params_from_args(args) -> ControllerParams:
    try:
        return ControllerParams(**{field.name: getattr(args, field.name) for field in fields(ControllerParams)})
    except ValueError as error:
        raise SmartquantError(str(error)) from error


def run(args):
    from amaranth.back import verilog
    from amaranth.hdl import Shape
    from smartquant.hdl.host.axi_port import build_controller

    params = params_from_args(args)
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
