"""Benchmarks, one per name:

  codec    golden bit-plane codec: encode/decode throughput of INT8, INT4 and BF16 against numpy copying
           the same bytes (smartquant.scripts.bench_golden)

Add a benchmark by registering BENCHMARKS[name] = (one-line help, run(args)) and, when it takes options,
adding them in add_arguments under its own argument group.
"""
from __future__ import annotations

import argparse

from smartquant.errors import SmartquantError


def _run_codec(args: argparse.Namespace) -> int:
    from smartquant.scripts import bench_golden
    return bench_golden.run(args)


# name -> (one-line help, callable(args) returning an exit status)
BENCHMARKS = {
    "codec": ("golden bit-plane codec throughput vs numpy copy (INT8, INT4, BF16)", _run_codec),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), metavar="BENCHMARK",
                        help="which benchmark: " + "; ".join(f"{name}: {help_text}"
                                                             for name, (help_text, _) in sorted(BENCHMARKS.items())))
    from smartquant.scripts import bench_golden
    bench_golden.add_arguments(parser.add_argument_group("codec options"))


def run(args: argparse.Namespace) -> int:
    if args.benchmark not in BENCHMARKS:          # argparse choices already refuse it; callers may not use argparse
        raise SmartquantError(f"unknown benchmark {args.benchmark!r}; choose one of {sorted(BENCHMARKS)}")
    _, benchmark = BENCHMARKS[args.benchmark]
    return benchmark(args)
