"""Run constrained-random CXL.mem traffic through the RTL (cocotb + Verilator) against the golden model.

Every DRS and NDR is checked bit-exact, every tag must be answered once, and every counter read over AXI-Lite
must equal the golden model's. The seed is printed and replays the run exactly. Builds are cached under
build/sim/ per parameter set. With --waves the run is traced (FST) and the file is kept; without it, a failing
run is repeated once with tracing and the wave file's path is printed.

Examples:
  smartquant sim --transactions 10000 --seed 7
  smartquant sim --transactions 1000000 --seed 1 --data-width 256
  smartquant sim --directed                   # the directed cocotb tests instead of random traffic
"""
from __future__ import annotations

import random

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams


def add_arguments(parser):
    parser.add_argument("--transactions", type=int, default=10_000, help="random transactions (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    parser.add_argument("--waves", action="store_true", help="trace the run and keep the FST wave file")
    parser.add_argument("--data-width", type=int, default=512, choices=(64, 128, 256, 512),
                        help="line width W in bits (default 512)")
    parser.add_argument("--dram-addr-bits", type=int, default=20,
                        help="simulated device capacity, log2 bytes (default 20: a 1 MiB AxiRam)")
    parser.add_argument("--buffer-slots", type=int, default=2, help="block-buffer slots (default 2)")
    parser.add_argument("--directed", action="store_true", help="run the directed tests instead")


def run(args):
    from smartquant.sim import runner

    if args.transactions < 1:
        raise SmartquantError(f"--transactions must be >= 1, got {args.transactions}")
    if not 12 <= args.dram_addr_bits <= 24:
        raise SmartquantError(f"--dram-addr-bits must be 12..24 in simulation (AxiRam holds the whole device), "
                              f"got {args.dram_addr_bits}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    try:
        params = ControllerParams(data_width=args.data_width, dram_addr_bits=args.dram_addr_bits,
                                  buffer_slots=args.buffer_slots)
    except ValueError as error:
        raise SmartquantError(str(error)) from None
    print(f"smartquant sim: seed {seed}, {params.key()}", flush=True)
    testcase = None if args.directed else "test_random"
    result = runner.run(params, testcase=testcase, seed=seed, transactions=args.transactions, waves=args.waves)
    summary = result.summary
    if args.directed:
        print(result.describe())
        return 0 if result.passed else 1
    if not summary:
        print(result.describe())
        print(f"no summary from the simulation (seed {seed}); see {result.run_dir}")
        return 1
    print(f"{summary['transactions']} transactions: {summary['passed']} passed, {summary['failed']} failed "
          f"({summary['mismatches']} mismatches), seed {seed}")
    print(f"  accepted {summary['accepted']}, DRS checked {summary['drs_checked']}, NDR checked "
          f"{summary['ndr_checked']}, dropped by the mid-run reset {summary['dropped_by_reset']}")
    print(f"  {summary['cycles']} cycles in {summary['wall_seconds']:.1f} s: {summary['cycles_per_second']:.0f} "
          f"cycles/s, {summary['transactions_per_second']:.0f} transactions/s (wall {result.wall_seconds:.1f} s "
          f"with build)")
    print(f"  DevLoad levels seen: {summary['dev_load']}; stimulus knobs {summary['knobs']}")
    counters = {name: value for name, value in summary.get("counters", {}).items()
                if value and not name.startswith("reserved")}
    if counters:
        print("  counters since the last clear: " + ", ".join(f"{name}={value}" for name, value in counters.items()))
    if not result.passed:
        print(result.describe())
        return 1
    return 0
