"""Device benchmarks through the simulated RTL (cocotb + Verilator): traffic, rows, throughput, latency, simspeed.

Each benchmark runs one cocotb test of smartquant.sim.device_bench (all of them in one simulation for `all`),
prints a table of ratios measured in that run and writes the JSON to --out (default build/bench/<name>.json).
Every run is also a check: DRS/NDR bit-exact and every counter equal to the golden DeviceModel's.

    smartquant bench traffic      DRAM lines read / full precision at every k (goal exactly k/B), random reads
    smartquant bench rows         row activates vs k for R = 1 and R = 64 (golden/dram.py over the AR stream)
    smartquant bench throughput   packed-k and expanded-k output lines per cycle at every k, always-ready
                                  backend (goal >= 0.95 with the pipeline fill)
    smartquant bench latency      Req -> AR valid, last R beat -> DRS, Req -> DRS (goal <= 3 added cycles)
    smartquant bench simspeed     simulated cycles/s and transactions/s
    smartquant bench all          all five in one simulation
    smartquant bench plots        PNGs in docs/img/ from the JSON results (scripts/plots.py)

`simulate` is the small adapter other modules use to run a cocotb module of their own against the controller
build of sim/runner.py (runner.run only knows the test modules of its DESIGNS table).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams
from smartquant.scripts.plots import BENCH_DIR
from smartquant.tables import text_table

BENCH_MODULE = "smartquant.sim.device_bench"
BENCH_TESTS = {"traffic": "test_traffic", "rows": "test_rows", "throughput": "test_throughput",
               "latency": "test_latency", "simspeed": "test_simspeed"}
# a 1 MiB device (the test suite's build) holds every benchmark region
BENCH_PARAMS = ControllerParams(dram_addr_bits=20)


def simulate(params: ControllerParams, test_module: str, testcase, seed: int = 1, extra_env: dict | None = None):
    """Build the controller for `params` (cached by sim/runner.py) and run `testcase` of `test_module`."""
    from cocotb_tools.runner import get_runner
    from smartquant.sim import runner

    started = time.monotonic()
    print(f"Verilator model of the controller for {params.key()} (built once per RTL version and parameter set; "
          f"a first build takes minutes)", flush=True)
    build_dir = Path(runner.build(params, "controller")).resolve()
    names = [testcase] if isinstance(testcase, str) else list(testcase)
    run_dir = build_dir / "runs" / f"{'-'.join(names)[:60]}-seed{seed}-pid{os.getpid()}-{time.time_ns() % 10**9}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {"SQ_PARAMS": json.dumps(params.as_dict()), "SQ_SEED": str(seed),
           "PYTHONWARNINGS": "ignore::DeprecationWarning", **(extra_env or {})}
    results_xml = run_dir / "results.xml"
    try:
        get_runner("verilator").test(test_module=test_module, hdl_toplevel=runner.TOPLEVEL,
                                     hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=run_dir,
                                     testcase=names, seed=seed, extra_env=env, results_xml=str(results_xml))
    except SystemExit:
        pass            # the cocotb runner exits on a failing test; results.xml says which
    tests, failures = runner.parse_results(results_xml)
    result = runner.RunResult(tests=tests, failures=failures, results_xml=results_xml, run_dir=run_dir, seed=seed,
                              summary={}, wall_seconds=time.monotonic() - started)
    if result.passed:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def run_benchmarks(names: list, config: dict | None = None, seed: int = 1,
                   params: ControllerParams = BENCH_PARAMS) -> tuple[dict, object]:
    """({benchmark name: result dict}, RunResult) of one simulation running the benchmarks' cocotb tests."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    # absolute: the simulator writes into it from its own run directory
    out_dir = BENCH_DIR.resolve() / f"raw-{os.getpid()}-{time.time_ns() % 10**9}"
    out_dir.mkdir()
    result = simulate(params, BENCH_MODULE, [BENCH_TESTS[name] for name in names], seed,
                      {"SQ_BENCH_CONFIG": json.dumps(config or {}), "SQ_BENCH_DIR": str(out_dir)})
    found = {}
    for name in names:
        path = out_dir / f"{BENCH_TESTS[name]}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    shutil.rmtree(out_dir, ignore_errors=True)
    return found, result


# --- tables ------------------------------------------------------------------------------------------------
def _table(headers, rows) -> str:
    return text_table(headers, rows, left=frozenset())


def traffic_table(result: dict) -> str:
    rows = [[str(r["B"]), str(r["k"]), f"{r['dram_lines_read']}", f"{r['full_lines']}", f"{r['traffic_ratio']:.4f}",
             f"{r['ideal_ratio']:.4f}", "yes" if r["dram_lines_read"] * r["B"] == r["k"] * r["full_lines"] else "NO",
             f"{r['random_lines_per_read']:.2f}"] for r in result["rows"]]
    return _table(["B", "k", "lines read", "full (N x B)", "ratio", "k/B", "exact", "random: lines/read"], rows)


def rows_table(result: dict) -> str:
    by_r = {}
    for r in result["rows"]:
        by_r.setdefault(r["R"], {})[r["k"]] = r
    out = []
    for R, per_k in by_r.items():
        full = per_k[max(per_k)]["activates"]
        for k, r in sorted(per_k.items()):
            out.append([str(R), str(k), str(r["dram_lines_read"]), str(r["activates"]), str(r["row_hits"]),
                        f"{r['activates'] / full:.3f}" if full else "-", f"{k / r['B']:.3f}"])
    return _table(["R", "k", "lines read", "activates", "row hits", "act / act(k=B)", "k/B"], out)


def throughput_table(result: dict) -> str:
    rows = [[str(r["B"]), r.get("format", "-"), r.get("view", "packed"), str(r["k"]), str(r["reads"]),
             str(r["cycles"]), str(r.get("fill_cycles", "-")), f"{r['lines_per_cycle']:.3f}",
             f"{r['steady_lines_per_cycle']:.3f}" if "steady_lines_per_cycle" in r else "-",
             f"{r['r_beats_per_cycle']:.3f}", str(r.get("ar_bursts", "-")), str(r.get("ar_wait_cycles", "-"))]
            for r in result["rows"]]
    return _table(["B", "format", "view", "k", "lines out", "cycles", "fill", "lines/cycle", "steady",
                   "R beats/cycle", "AR bursts", "AR waits"], rows)


THROUGHPUT_GOAL = 0.95      # output lines per cycle at every k, pipeline fill included (issue 10)


def latency_table(result: dict) -> str:
    rows = [[r["read"], str(r["beats"]), str(r["req_to_ar"]), str(r["ar_to_first_r"]), str(r["last_r_to_drs"]),
             str(r["req_to_drs"]), str(r["added"])] for r in result["rows"]]
    return _table(["read", "R beats", "Req->AR", "AR->R (memory)", "last R->DRS", "Req->DRS", "added"], rows)


def simspeed_table(result: dict) -> str:
    return _table(["transactions", "cycles", "wall s", "cycles/s", "transactions/s", "CPU s", "cycles/CPU s"],
                  [[str(result["transactions"]), str(result["cycles"]), f"{result['wall_seconds']:.1f}",
                    f"{result['cycles_per_second']:.0f}", f"{result['transactions_per_second']:.0f}",
                    f"{result['cpu_seconds']:.1f}", f"{result['cycles_per_cpu_second']:.0f}"]])


def summary_lines(name: str, result: dict) -> list:
    """The one-line ratios the issue asks for, measured in this run."""
    if name == "traffic":
        exact = all(r["dram_lines_read"] * r["B"] == r["k"] * r["full_lines"] for r in result["rows"])
        return [f"sequential packed-k traffic ratio == k/B exactly at every k: {'yes' if exact else 'NO'}; random "
                f"single-line reads cost {min(r['random_lines_per_read'] for r in result['rows']):.2f}.."
                f"{max(r['random_lines_per_read'] for r in result['rows']):.2f} DRAM lines per line delivered"]
    if name == "rows":
        lines = []
        for R in sorted({r["R"] for r in result["rows"]}):
            per_k = {r["k"]: r["activates"] for r in result["rows"] if r["R"] == R}
            lines.append(f"R = {R}: activates at k = 1..8: {[per_k[k] for k in sorted(per_k)]}")
        return lines
    if name == "throughput":
        rows = result["rows"]
        worst = min(rows, key=lambda r: r["lines_per_cycle"])
        below = [f"B={r['B']} {r.get('view', 'packed')} k={r['k']}" for r in rows
                 if r["lines_per_cycle"] < THROUGHPUT_GOAL]
        lines = [f"lines/cycle with fill ({result.get('lines_wanted', '?')}+ lines per stream): min "
                 f"{worst['lines_per_cycle']:.3f} (B={worst['B']} {worst.get('view', 'packed')} k={worst['k']}); "
                 f">= {THROUGHPUT_GOAL} at every k: {'yes' if not below else 'NO: ' + ', '.join(below)}"]
        if all("steady_lines_per_cycle" in r for r in rows):
            lines.append(f"steady state (first to last DRS): min "
                         f"{min(r['steady_lines_per_cycle'] for r in rows):.3f}; fill (Req -> first DRS) "
                         f"{min(r['fill_cycles'] for r in rows)}..{max(r['fill_cycles'] for r in rows)} cycles")
        return lines
    if name == "latency":
        return [f"added cycles (Req->AR + last R->DRS): max {max(r['added'] for r in result['rows'])}"]
    if name == "simspeed":
        failed = " (the random run FAILED its checks: see below)" if result.get("error") else ""
        return [f"{result['cycles_per_second']:.0f} cycles/s, {result['transactions_per_second']:.0f} "
                f"transactions/s, {result['cycles_per_cpu_second']:.0f} cycles per CPU second{failed}"]
    return []


TABLES = {"traffic": traffic_table, "rows": rows_table, "throughput": throughput_table, "latency": latency_table,
          "simspeed": simspeed_table}
TITLES = {"traffic": "DRAM traffic vs k (hardware counters)", "rows": "DRAM row activates vs k (RowModel over AR)",
          "throughput": "packed-k / expanded-k streaming rate (always-ready backend and sinks)",
          "latency": "latency on an idle device (cycles)", "simspeed": "simulation speed"}


# --- command -----------------------------------------------------------------------------------------------
def add_arguments(group) -> None:
    group.add_argument("--out", metavar="FILE", default=None,
                       help="JSON result file (default build/bench/<benchmark>.json)")
    group.add_argument("--bench-seed", type=int, default=1, help="seed of the benchmark testbench (default 1)")
    group.add_argument("--blocks", type=int, default=None, help="blocks streamed per k (traffic)")
    group.add_argument("--lines", type=int, default=None,
                       help="output lines streamed per view and k, at least (throughput; default 640)")
    group.add_argument("--no-plots", action="store_true", help="do not write PNGs into docs/img/")


def run(name: str, args) -> int:
    names = list(BENCH_TESTS) if name == "all" else [name]
    if name not in BENCH_TESTS and name != "all":
        raise SmartquantError(f"unknown device benchmark {name!r}")
    config = {}
    if getattr(args, "blocks", None) is not None:
        if args.blocks < 1:
            raise SmartquantError(f"--blocks must be >= 1, got {args.blocks}")
        config.update(blocks=args.blocks)
    if getattr(args, "lines", None) is not None:
        if args.lines < 1:
            raise SmartquantError(f"--lines must be >= 1, got {args.lines}")
        config.update(throughput_lines=args.lines)
    if getattr(args, "out", None):
        out = Path(args.out)
    else:
        BENCH_DIR.mkdir(parents=True, exist_ok=True)    # the default place (a fresh clone has no build/ yet)
        out = BENCH_DIR / f"{name}.json"
    if not out.parent.is_dir():
        raise SmartquantError(f"cannot write {out}: directory {out.parent} does not exist")
    print(f"smartquant bench {name}: simulating {', '.join(BENCH_TESTS[n] for n in names)} "
          f"({BENCH_PARAMS.key()}, seed {args.bench_seed})", flush=True)
    found, result = run_benchmarks(names, config, args.bench_seed)
    for bench in names:
        if bench in found:
            print(f"\n== {TITLES[bench]} ==")
            print(TABLES[bench](found[bench]))
    print("\n== summary ==")
    for bench in names:
        if bench in found:
            for line in summary_lines(bench, found[bench]):
                print(f"{bench}: {line}")
    print(f"(simulation wall time {result.wall_seconds:.0f} s)")
    payload = found[names[0]] if name != "all" and names[0] in found else found
    out.write_text(json.dumps({"benchmark": name, "params": BENCH_PARAMS.as_dict(), "seed": args.bench_seed,
                               "passed": result.passed, "results": payload}, indent=1))
    if name == "all":          # each benchmark's own file too, for `smartquant bench plots`
        for bench, data in found.items():
            (BENCH_DIR / f"{bench}.json").write_text(json.dumps(
                {"benchmark": bench, "params": BENCH_PARAMS.as_dict(), "seed": args.bench_seed,
                 "passed": result.passed, "results": data}, indent=1))
    print(f"wrote {out}")
    if not getattr(args, "no_plots", False) and found:
        from smartquant.scripts import plots
        for path in plots.write_plots(BENCH_DIR):
            print(f"wrote {path}")
    if not result.passed:
        print(result.describe())
        return 1
    return 0
