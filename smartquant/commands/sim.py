"""Run constrained-random CXL.mem traffic through the RTL (cocotb + Verilator) against the golden model.

Every DRS and NDR is checked bit-exact (DevLoad against the port occupancy), every AXI burst (address, beats,
WSTRB, WDATA), every counter over AXI-Lite and the whole memory at the end against the golden model. The traffic
runs in phases (idle, backpressure, AXI pauses, stall runs, SLVERR injection, tag reuse, region rewrites in
flight, resets with AXI in flight, ...), and functional coverage sampled from the port monitors is printed and
written as JSON (--coverage-report). The seed is printed and replays the run exactly. Builds are cached under
build/sim/ per parameter set. With --waves the run is traced and the file is kept; without it, a failing run
is repeated once with tracing and the wave file's path is printed.

Every ControllerParams field is an option (defaults: the controller's, with a 1 MiB simulated DRAM).

Examples:
  smartquant sim --transactions 20000 --seed 7
  smartquant sim --transactions 20000 --seed 4401 --data-width 128 --request-depth 4 --buffer-slots 1
  smartquant sim --transactions 1000000 --seed 1 --coverage-report cov.json
  smartquant sim --directed                   # the directed cocotb tests instead of random traffic
  smartquant sim --host-port axi --transactions 10000 --seed 7   # the same traffic through the AXI4 host port
  smartquant sim --merge-coverage a.json b.json --coverage-report all.json   # several runs, one report
"""
from __future__ import annotations

import json
import random

from smartquant.errors import SmartquantError
from smartquant.commands.parameters import add_parameter_options, params_from_options
from smartquant.params import ControllerParams

SIM_DEFAULTS = {"dram_addr_bits": 20}      # AxiMemory holds the whole device in the simulator's memory
def add_arguments(parser):
    parser.add_argument("--transactions", type=int, default=10_000, help="random transactions (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    parser.add_argument("--waves", action="store_true", help="trace the run and keep the wave file")
    parser.add_argument("--coverage-report", metavar="PATH", default=None,
                        help="write the functional coverage (JSON: every bin and its hits) to PATH")
    parser.add_argument("--directed", action="store_true", help="run the directed tests instead")
    parser.add_argument("--merge-coverage", nargs="+", metavar="JSON", default=None,
                        help="merge coverage reports of several runs (same parameters) and print the table; no "
                             "simulation (with --coverage-report, also write the merged JSON)")
    add_parameter_options(parser.add_argument_group("controller parameters (ControllerParams)"),
                          ControllerParams(**SIM_DEFAULTS), notes={"dram_addr_bits": "12..24 in simulation"})


def params_from_args(args) -> ControllerParams:
    if not 12 <= args.dram_addr_bits <= 24:
        raise SmartquantError(f"--dram-addr-bits must be 12..24 in simulation (the AXI memory holds the whole "
                              f"device), got {args.dram_addr_bits}")
    return params_from_options(args)


def merge_coverage(paths: list[str], out: str | None) -> int:
    from smartquant.sim.coverage import Coverage

    merged = None
    for path in paths:
        try:
            with open(path) as handle:
                data = json.load(handle)
            params = ControllerParams(**data["params"])
            coverage = Coverage.from_json(params, data)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SmartquantError(f"cannot read coverage report {path}: {error}") from None
        if merged is None:
            merged = coverage
        elif coverage.params != merged.params:
            raise SmartquantError(f"{path} is for {coverage.params.key()}, the others for {merged.params.key()}")
        else:
            merged.merge(coverage)
    print(f"{len(paths)} coverage reports of {merged.params.key()} merged")
    print(merged.table())
    print(merged.summary_line())
    if merged.missed():
        print("  missed bins: " + ", ".join(merged.missed()))
    if out:
        with open(out, "w") as handle:
            json.dump(merged.to_json(), handle, indent=1)
        print(f"  merged coverage report: {out}")
    return 0 if not merged.missed() else 1


def run(args):
    from smartquant.sim import runner
    from smartquant.sim.coverage import Coverage

    if args.merge_coverage:
        return merge_coverage(args.merge_coverage, args.coverage_report)
    if args.transactions < 1:
        raise SmartquantError(f"--transactions must be >= 1, got {args.transactions}")
    params = params_from_args(args)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"smartquant sim: seed {seed}, {params.key()}", flush=True)
    testcase = None if args.directed else "test_random"
    try:
        result = runner.run(params, testcase=testcase, seed=seed, transactions=args.transactions, waves=args.waves)
    except RuntimeError as error:       # the Verilator build or the simulator refused the design
        raise SmartquantError(str(error)) from None
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
          f"{summary['ndr_checked']}, AXI bursts checked {summary['bursts_checked']}, dropped by resets "
          f"{summary['dropped_by_reset']}, reused tags {summary['tag_reuses']}")
    print(f"  {summary['cycles']} cycles in {summary['wall_seconds']:.1f} s: {summary['cycles_per_second']:.0f} "
          f"cycles/s, {summary['transactions_per_second']:.0f} transactions/s (wall {result.wall_seconds:.1f} s "
          f"with build); {summary['cycles_per_cpu_second']:.0f} cycles per CPU second")
    dev_load = (f"DevLoad levels seen: {summary['dev_load']}" if params.host_port == "cxl"
                else "no DevLoad on the AXI host port")
    print(f"  phases: {dict(summary['phases'])}; {dev_load}")
    coverage = Coverage.from_json(params, summary["coverage"])
    print(coverage.table())
    print(coverage.summary_line())
    if coverage.missed():
        print("  missed bins: " + ", ".join(coverage.missed()))
    if args.coverage_report:
        with open(args.coverage_report, "w") as handle:
            json.dump(coverage.to_json(), handle, indent=1)
        print(f"  coverage report: {args.coverage_report}")
    if not result.passed:
        print(result.describe())
        return 1
    return 0
