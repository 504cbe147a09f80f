"""Build the ULX3S (ECP5-85F) bitstream: UART host bridge + controller + block RAM, with the YoWASP toolchain.

Prints progress while yosys / nextpnr / ecppack run, then a table of fmax per clock, the critical path's
start and end, and utilisation (TRELLIS_COMB, TRELLIS_FF, DP16KD, MULT18X18D), also written as report.json in
the build directory. The default target (W=128, b_max=8, 64 KiB RAM, 25 MHz) meets its clock (55.94 MHz at 2e8b0c1;
7..9 minutes on an idle 2-core machine, 15..60 beside test suites); --data-width 512 --b-max 16 --ram-kib 128 is the
full datapath (slow to route on a small machine).
--seeds N places and routes again with nextpnr seeds 2..N and keeps the best. --smoke builds a tiny
configuration (W=64, b_max=4, 4 KiB RAM) for CI. --program loads the bitstream into the board's SRAM with
openFPGALoader.

examples:
  smartquant build --board ulx3s-85f
  smartquant build --board ulx3s-85f --seeds 3
  smartquant build --board ulx3s-85f --smoke
  smartquant build --board ulx3s-85f --data-width 256 --b-max 16 --ram-kib 128
  smartquant build --board ulx3s-85f --program
"""
from smartquant.errors import SmartquantError


def add_arguments(parser):
    from smartquant.fpga.build import BOARDS
    parser.add_argument("--board", choices=BOARDS, default="ulx3s-85f", help="target board (default %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="tiny CI configuration (W=64, b_max=4, 4 KiB RAM)")
    parser.add_argument("--data-width", type=int, default=128, help="controller line width W in bits "
                        "(64, 128, 256, 512; default %(default)s)")
    parser.add_argument("--b-max", type=int, default=8, help="widest stored format B (2, 4, 8, 16; default %(default)s)")
    parser.add_argument("--ram-kib", type=int, default=64, help="block RAM behind the AXI port in KiB "
                        "(power of two, default %(default)s)")
    parser.add_argument("--clock-mhz", type=float, default=25.0, help="system clock; other than 25 uses the "
                        "EHXPLLL (default %(default)s)")
    parser.add_argument("--baud", type=int, default=115200, help="UART baud rate (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=1, help="nextpnr seeds to try (1..N) on the same netlist; the "
                        "best fmax margin gives the bitstream (default %(default)s)")
    parser.add_argument("--build-dir", default=None, help="build directory (default build/ulx3s-<target>)")
    parser.add_argument("--program", action="store_true", help="load the bitstream with openFPGALoader")


def run(args):
    from smartquant.fpga.build import build_bitstream, smoke_target, full_target

    if args.smoke:
        target = smoke_target()
    else:
        if args.ram_kib <= 0:
            raise SmartquantError(f"--ram-kib must be positive, got {args.ram_kib}")
        target = full_target(args.data_width, args.b_max, args.ram_kib * 1024, args.clock_mhz, args.baud)
    build_dir = args.build_dir or f"build/ulx3s-{target.name}"
    report = build_bitstream(target, build_dir, program=args.program, seeds=args.seeds,
                             progress=lambda s: print(s, flush=True))
    print(report.table())
    print(f"report: {build_dir}/report.json")
    return 0
