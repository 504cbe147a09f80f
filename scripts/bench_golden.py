"""Golden bit-plane codec throughput: encode and decode in bytes/s, against numpy copying the same bytes.

Bytes are the stored plane bytes (n_weights * B / 8), the size of the raw view; the copy baseline is
np.copyto of a buffer that size, timed in the same run, interleaved with the codec so both see the same
machine load. Every figure is the best of --repeats runs. --clock cpu times with the thread's CPU time
instead of wall time, which keeps other processes on a shared machine out of the figures (the codec is
single-threaded numpy).

    python -m smartquant.scripts.bench_golden [--weights 4194304] [--repeats 7] [--plane-run 1] [--clock wall]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.params import Format

# (name, B, storage format): the formats a model store holds most
CODEC_FORMATS = (("INT8", 8, Format.INT), ("INT4", 4, Format.INT), ("BF16", 16, Format.BF16))


@dataclass
class CodecResult:
    name: str
    n_weights: int
    stored_bytes: int
    copy_seconds: float
    encode_seconds: float
    decode_seconds: float

    @property
    def copy_rate(self) -> float:
        return self.stored_bytes / self.copy_seconds

    @property
    def encode_rate(self) -> float:
        return self.stored_bytes / self.encode_seconds

    @property
    def decode_rate(self) -> float:
        return self.stored_bytes / self.decode_seconds


def _weights(B: int, fmt: Format, n_weights: int, rng: np.random.Generator) -> np.ndarray:
    """Random weights in the dtype a user hands the encoder (int8 for INT4/INT8, float32 for BF16)."""
    if fmt == Format.BF16:
        return rng.standard_normal(n_weights, dtype=np.float32)
    return rng.integers(-(1 << (B - 1)), 1 << (B - 1), n_weights, dtype=np.int8)


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def _best_interleaved(actions: dict, repeats: int, clock=time.perf_counter) -> dict:
    """Best time of each action over `repeats` rounds, the actions taking turns inside each round."""
    best = {name: float("inf") for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            start = clock()
            action()
            best[name] = min(best[name], clock() - start)
    return {name: max(seconds, 1e-9) for name, seconds in best.items()}    # a clock tick is never 0 s


def bench_codec(n_weights: int = 1 << 22, repeats: int = 7, R: int = 1, clock: str = "wall",
                seed: int = 0) -> list[CodecResult]:
    if clock not in CLOCKS:
        raise SmartquantError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    if n_weights < 1 or repeats < 1:
        raise SmartquantError(f"need at least one weight and one repeat, got {n_weights} weights, {repeats} repeats")
    layout.check_r(R)
    rng = np.random.default_rng(seed)
    results = []
    for name, B, fmt in CODEC_FORMATS:
        weights = _weights(B, fmt, n_weights, rng)
        raw = layout.encode(weights, B, fmt, R=R)
        decoded = layout.decode(raw, B, n_weights, fmt, R=R)
        expected = layout.floats_from_bf16(layout.bf16_fields(weights)) if fmt == Format.BF16 else weights
        if not np.array_equal(decoded, expected):        # a benchmark of a wrong codec is worthless
            raise SmartquantError(f"{name}: decode(encode(x)) != x, the codec is broken")
        stored_bytes = n_weights * B // 8
        source = np.ones(stored_bytes, dtype=np.uint8)
        target = np.empty_like(source)
        times = _best_interleaved({
            "copy": lambda: np.copyto(target, source),
            "encode": lambda: layout.encode(weights, B, fmt, R=R),
            "decode": lambda: layout.decode(raw, B, n_weights, fmt, R=R),
        }, repeats, CLOCKS[clock])
        results.append(CodecResult(name, n_weights, stored_bytes, times["copy"], times["encode"], times["decode"]))
    return results


def format_table(results: list[CodecResult], R: int, clock: str = "wall") -> str:
    lines = [f"golden codec, plane run R = {R}, {clock} clock, best of repeated runs "
             f"(GB/s = 1e9 stored bytes per second)",
             f"{'format':<7}{'weights':>10}{'stored MB':>11}{'copy GB/s':>11}{'encode GB/s':>13}{'x copy':>8}"
             f"{'decode GB/s':>13}{'x copy':>8}"]
    for r in results:
        lines.append(f"{r.name:<7}{r.n_weights:>10}{r.stored_bytes / 1e6:>11.2f}{r.copy_rate / 1e9:>11.2f}"
                     f"{r.encode_rate / 1e9:>13.3f}{r.encode_rate / r.copy_rate:>8.3f}"
                     f"{r.decode_rate / 1e9:>13.3f}{r.decode_rate / r.copy_rate:>8.3f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=int, default=1 << 22, help="weights per format (default 4194304)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement, best kept (default 7)")
    parser.add_argument("--plane-run", type=int, default=1, dest="plane_run", help="plane run R (default 1)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this thread's CPU time (steadier on a shared machine); default wall")


def run(args: argparse.Namespace) -> int:
    results = bench_codec(args.weights, args.repeats, args.plane_run, args.clock)
    print(format_table(results, args.plane_run, args.clock))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smartquant.scripts.bench_golden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SmartquantError as error:
        print(f"bench_golden: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
