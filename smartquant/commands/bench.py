"""Benchmarks, one per name:

  codec       golden bit-plane codec: encode/decode throughput of INT8, INT4 and BF16 against numpy copying
              the same bytes (smartquant.scripts.bench_golden)
  traffic     DRAM lines read vs k from the RTL's hardware counters (goal exactly k/B), random-read cost
  rows        DRAM row activates vs k for plane run R = 1 and R = 64 (golden/dram.py over the RTL's AR stream)
  throughput  packed-k and expanded-k output lines per cycle at every k, always-ready backend (goal >= 0.95)
  latency     cycles Req -> AXI AR and -> first DRS on an idle device (goal <= 3 added cycles)
  simspeed    simulation speed: cycles/s and transactions/s
  all         the five device benchmarks in one simulation (smartquant.scripts.bench_device)
  plots       PNGs in docs/img/ from the JSON results (smartquant.scripts.plots)

Add a benchmark by registering BENCHMARKS[name] = (one-line help, run(args)) and, when it takes options,
adding them in add_arguments under its own argument group.
"""
from __future__ import annotations

import argparse

from smartquant.errors import SmartquantError


def _run_codec(args: argparse.Namespace) -> int:
    from smartquant.scripts import bench_golden
    return bench_golden.run(args)


def _device(name: str):
    def run_device(args: argparse.Namespace) -> int:
        from smartquant.scripts import bench_device
        return bench_device.run(name, args)
    return run_device


def _run_plots(args: argparse.Namespace) -> int:
    from smartquant.scripts import plots
    return plots.run(args)


# name -> (one-line help, callable(args) returning an exit status)
BENCHMARKS = {
    "codec": ("golden bit-plane codec throughput vs numpy copy (INT8, INT4, BF16)", _run_codec),
    "traffic": ("RTL DRAM traffic ratio vs k from the hardware counters, random-read cost", _device("traffic")),
    "rows": ("DRAM row activates vs k for R = 1 and R = 64 over the RTL's AR stream", _device("rows")),
    "throughput": ("packed/expanded lines per cycle at every k, always-ready backend", _device("throughput")),
    "latency": ("cycles Req -> AR and -> first DRS on an idle device", _device("latency")),
    "simspeed": ("cocotb/Verilator simulation speed (cycles/s, transactions/s)", _device("simspeed")),
    "all": ("all five RTL device benchmarks in one simulation", _device("all")),
    "plots": ("PNG plots into docs/img/ from the benchmark and demo JSON", _run_plots),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), metavar="BENCHMARK",
                        help="which benchmark: " + "; ".join(f"{name}: {help_text}"
                                                             for name, (help_text, _) in sorted(BENCHMARKS.items())))
    from smartquant.scripts import bench_device, bench_golden, plots
    bench_golden.add_arguments(parser.add_argument_group("codec options"))
    bench_device.add_arguments(parser.add_argument_group("device benchmark options (traffic, rows, throughput, "
                                                         "latency, simspeed, all)"))
    plots.add_arguments(parser.add_argument_group("plots options"))


def run(args: argparse.Namespace) -> int:
    if args.benchmark not in BENCHMARKS:          # argparse choices already refuse it; callers may not use argparse
        raise SmartquantError(f"unknown benchmark {args.benchmark!r}; choose one of {sorted(BENCHMARKS)}")
    _, benchmark = BENCHMARKS[args.benchmark]
    return benchmark(args)
