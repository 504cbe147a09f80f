"""`smartquant` command line: one entry point, one module per subcommand in smartquant/commands/."""
from __future__ import annotations

import argparse
import importlib
import sys

from smartquant.errors import SmartquantError

# subcommand -> (module in smartquant.commands, one-line help)
COMMANDS = {
    "demo": ("demo", "the main job: precision sweep on real all-MiniLM-L6-v2 weights (and streaming through the RTL)"),
    "golden": ("golden", "golden-model tools: precision sweep table, context-dependent policies"),
    "verilog": ("verilog", "write the controller's Verilog with a parameter summary"),
    "sim": ("sim", "run constrained-random cocotb/Verilator traffic against the golden model"),
    "bench": ("bench", "benchmarks: codec throughput, traffic ratios, latency, simulation speed"),
    "build": ("build", "FPGA build (ULX3S ECP5-85F): bitstream, fmax and utilisation"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smartquant",
        description="CXL.mem controller that stores transformer weights as bit-planes and serves them at a "
                    "run-time precision k of their B bits. See README.md and docs/DEVICE.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"smartquant.commands.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=module.__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args._run(args)
    except SmartquantError as error:
        print(f"smartquant {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
