"""The main job: real transformer weights stored in the simulated device and read at run-time precision.

--model minilm (all-MiniLM-L6-v2), smollm2 (SmolLM2-135M) or both (the default: MiniLM, then SmolLM2).
MiniLM, in two parts:

1. Golden model (numpy, about a minute): the precision sweep (INT8 per-channel and INT4 per-group-128 at every k,
   BF16 at k = 8..16; floor, midpoint and toward-zero fills) and the per-matrix and per-input policies on INT8.
   --full: every format x {floor, midpoint, toward-zero, nearest} x every k in 1..B.
2. Streaming through the simulated device (cocotb + Verilator): encoder layer 0 is written into the RTL over
   CXL.mem, then read back at each static k and under each policy (a per-input policy's reads are issued as its
   forward asks for them); the weights that come out of the RTL feed the numpy forward and must equal the golden
   model's bit for bit. Prints embedding cosine vs FP32, DRAM lines, link bytes and energy from the hardware counters.
   The first run builds the simulator (Verilator, several minutes; cached in build/sim/). --no-stream skips it;
   --all-layers streams all six layers (long).
SmolLM2: decoder layer 0 (--smollm2-layers) stored INT8 per-channel in regions of plane run R = 64, written over
   CXL.mem and streamed at static k = 8, 6, 5 and at the per-matrix precision of
   workloads/stream_workloads.py smollm2_layer_precisions (--smollm2-k); the other 29 layers are read at the same
   k by the golden model; toward-zero fill with the per-row bias correction. Prints perplexity on lee.cor (RTL
   and golden, equal bit for bit), DRAM lines, activates and energy from the hardware counters, and plots
   perplexity vs DRAM traffic and energy (build/stream_demo_smollm2.png).
   --kv: instead, one decoder layer's KV cache through the RTL (--kv-layer, default 0): its K and V written token
   by token into a BF16 and an INT8 region and read back after each token at BF16 k = 16, 12 and INT8 k = 8, 5 and
   under a recent-window policy (workloads/kv_cache.py DEVICE_RUNS); perplexity from the RTL's reads == the golden
   KV model's, DRAM lines and energy from the counters (1 window of 128 tokens by default, --kv-window).
"""
from __future__ import annotations

import sys

from smartquant.commands import golden
from smartquant.errors import SmartquantError
from smartquant.commands import demo_streaming


def add_arguments(parser):
    parser.add_argument("--full", action="store_true", help="full sweep: every rule and every k of every format")
    parser.add_argument("--csv", metavar="FILE", help="also write the sweep rows to a CSV file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--no-stream", action="store_true", help="golden model only: skip streaming through the RTL")
    demo_streaming.add_streaming_arguments(parser)


def run(args):
    models = demo_streaming.models_of(args)
    if args.no_stream and "minilm" not in models:
        raise SmartquantError("--no-stream leaves nothing to do for --model smollm2 (its demo is the RTL stream)")
    if not args.no_stream:
        for workload in models:
            demo_streaming.demo_config(args, workload)   # bad streaming options fail now, not after the sweep
    if "minilm" in models:
        status = run_minilm_golden(args)
        if status or args.no_stream:
            return status
    return demo_streaming.run_demo_streaming(args)


def run_minilm_golden(args) -> int:
    """The golden half of the MiniLM demo: the precision sweep and the policies."""
    from smartquant.workloads.minilm import load_minilm
    from smartquant.workloads import quant, sweep
    progress = not args.no_progress
    if args.csv:
        sweep.check_csv_path(args.csv)
    model = load_minilm()     # fails early, with the pip command, when the weights are not installed
    print(f"all-MiniLM-L6-v2 from {model.directory}: {model.n_layers} layers, hidden {model.hidden}, "
          f"{sum(model.weights[name].size for name in model.linear_weight_names()):,} encoder weights swept")
    if args.full:
        ks, rules = None, list(golden.RULES)
    else:
        ks, rules = {"bf16": range(8, 17)}, ["floor", "midpoint", "toward-zero"]
    print("\n== Precision sweep ==", flush=True)
    rows = sweep.run_sweep(list(golden.FORMATS), rules, ks, progress=progress)
    print("Storage: " + "; ".join(f"{name} = {quant.STORAGE_FORMATS[name].describe()}" for name in golden.FORMATS))
    print(sweep.format_table(rows))
    if args.csv:
        sweep.write_csv(rows, args.csv)
        print(f"wrote {len(rows)} rows to {args.csv}")
    print("\n== Context-dependent precision policies ==", flush=True)
    golden.run_policies_command("int8", "floor", [4.0, 5.0, 6.0, 7.0], None, progress)
    sys.stdout.flush()
    return 0
