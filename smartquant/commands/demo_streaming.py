"""The streaming half of `smartquant demo`: its options, the Verilator launch and the printed tables.

`add_streaming_arguments(parser)` / `run_demo_streaming(args)` are the demo's hook: they build the run's
settings (`demo_config`: JSON that the cocotb module smartquant.sim.stream_demo reads), run it in Verilator
(through smartquant.scripts.bench_device.simulate) and print the accuracy / traffic / energy tables. The plan,
the decoder and the loop order it checks are in smartquant.workloads.streaming.

  python -m smartquant.commands.demo_streaming [options]   the streaming half alone (same options as the demo)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from smartquant.errors import SmartquantError
from smartquant.golden import energy, layout
from smartquant.golden.device import superblocks_for
from smartquant.params import ControllerParams
from smartquant.scripts.plots import DEMO_JSON
from smartquant.tables import text_table
from smartquant.workloads import quant
from smartquant.workloads.minilm import LAYER_MATRICES, matrix_name
from smartquant.workloads.streaming import STREAM_VIEWS, StreamingPlan, check_view

DEFAULT_KS = (8, 6, 4)
LOAD_VIEWS = ("raw", "weight-major")
DEFAULT_BUDGET = 5.0                          # bits per weight for the policy runs


def format_run_table(runs: list) -> str:
    """Accuracy and traffic of every streaming run (one row per static k or policy)."""
    headers = ["run", "bits/weight", "emb cos mean", "emb cos min", "DRAM lines read", "of full", "link MB",
               "activates", "RTL == golden"]
    rows = []
    for run in runs:
        rows.append([run["label"], f"{run['bits_per_weight']:.2f}", f"{run['embedding_cos_mean']:.5f}",
                     f"{run['embedding_cos_min']:.5f}", f"{run['counters']['dram_lines_read']:,}",
                     f"{run['traffic_ratio']:.4f}", f"{run['link_bytes'] / 1e6:.2f}", f"{run['activates']:,}",
                     "yes" if run["exact"] else "NO"])
    return text_table(headers, rows)


def format_energy_table(runs: list) -> str:
    """Energy per run: total, per layer, per token and per request, split DRAM / link / controller."""
    headers = ["run", "DRAM uJ", "link uJ", "ctrl uJ", "total uJ", "uJ/layer", "nJ/token", "DRAM nJ/token",
               "link nJ/token", "ctrl nJ/token", "pJ/request"]
    rows = []
    for run in runs:
        e = run["energy"]
        n_layers = max(1, len(run["layers"]))
        rows.append([run["label"], f"{e['dram_nj'] / 1e3:.2f}", f"{e['link_nj'] / 1e3:.2f}",
                     f"{e['controller_nj'] / 1e3:.2f}", f"{e['total_nj'] / 1e3:.2f}",
                     f"{e['total_nj'] / 1e3 / n_layers:.2f}", f"{e['total_nj_per_token']:.1f}",
                     f"{e['dram_nj_per_token']:.1f}", f"{e['link_nj_per_token']:.1f}",
                     f"{e['controller_nj_per_token']:.1f}", f"{e['pj_per_request']:.0f}"])
    return text_table(headers, rows)


def format_layer_energy_table(run: dict) -> str:
    """Per-layer energy of one run (counter deltas and activates between layer completions)."""
    headers = ["layer", "DRAM lines read", "DRS", "activates", "DRAM uJ", "link uJ", "ctrl uJ", "total uJ"]
    rows = []
    for entry in run["per_layer"]:
        e = entry["energy"]
        rows.append([str(entry["layer"]), f"{e['dram_lines_read']:,}", f"{e['lines_delivered']:,}",
                     f"{e['activates']:,}", f"{e['dram_pj'] / 1e6:.2f}", f"{e['link_pj'] / 1e6:.2f}",
                     f"{e['controller_pj'] / 1e6:.2f}", f"{e['total_pj'] / 1e6:.2f}"])
    return text_table(headers, rows)


# --- the `smartquant demo` hook ----------------------------------------------------------------------------
def add_streaming_arguments(parser) -> None:
    """Options of the streaming half of `smartquant demo` (all prefixed --stream-... or plain flags)."""
    group = parser.add_argument_group("streaming through the simulated RTL")
    group.add_argument("--all-layers", action="store_true", help="stream all 6 encoder layers (default: layer 0)")
    group.add_argument("--stream-format", default="int8", choices=("int8", "bf16"),
                       help="storage format of the streamed layers (default int8 per-channel)")
    group.add_argument("--stream-k", default=",".join(map(str, DEFAULT_KS)),
                       help=f"static precisions to stream, comma list (default {','.join(map(str, DEFAULT_KS))})")
    group.add_argument("--stream-policies", default="greedy,activation",
                       help="policies to stream: greedy (per matrix), activation (per input), none")
    group.add_argument("--stream-budget", type=float, default=DEFAULT_BUDGET,
                       help=f"policy budget in bits per weight (default {DEFAULT_BUDGET})")
    group.add_argument("--stream-view", default="packed", choices=STREAM_VIEWS,
                       help="packed: packed-k view (k in the address); default: packed-default view after a CSR "
                            "rewrite of the region's default k")
    group.add_argument("--load-view", default="raw", choices=LOAD_VIEWS,
                       help="how the weights enter the device: raw (host-side bit-plane encoder, 1 DRAM beat per "
                            "line; default, fast) or weight-major (the device transposes: B strobed beats per line)")
    group.add_argument("--plane-run", type=int, default=1, help="plane run R of the regions (default 1)")
    group.add_argument("--stream-out", metavar="FILE", default=None,
                       help="JSON result file (default build/stream_demo.json); DRS payloads go to its .npz twin")
    group.add_argument("--seed", type=int, default=1, help="testbench seed (default 1)")


def parse_ks(text: str, B: int) -> list:
    try:
        ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SmartquantError(f"--stream-k must be a comma list of integers, got {text!r}") from None
    for k in ks:
        layout.check_k(k, B)
    return ks


def parse_policies(text: str) -> list:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in ("greedy", "activation")]
    if bad:
        raise SmartquantError(f"--stream-policies must be a comma list of greedy, activation (or none), got {text!r}")
    return names


def demo_config(args) -> dict:
    """The JSON settings the cocotb module smartquant.sim.stream_demo reads (SQ_STREAM_CONFIG)."""
    from smartquant.workloads.minilm import load_minilm
    fmt = quant.storage_format(args.stream_format)
    ks = parse_ks(args.stream_k, fmt.bits)
    policies = parse_policies(args.stream_policies)
    if not ks and not policies:
        raise SmartquantError("nothing to stream: give --stream-k or --stream-policies")
    if policies:
        from smartquant.workloads.policies import check_budget
        check_budget(args.stream_budget, fmt.bits)
    layout.check_r(args.plane_run)
    model = load_minilm()
    layers = list(range(model.n_layers)) if args.all_layers else [0]
    # absolute: the simulator process that writes it runs in its own build directory
    out = Path(args.stream_out or DEMO_JSON).resolve()
    if not args.stream_out:
        out.parent.mkdir(parents=True, exist_ok=True)
    if not out.parent.is_dir():
        raise SmartquantError(f"cannot write {out}: directory {out.parent} does not exist")
    return {"format": args.stream_format, "layers": layers, "ks": ks, "policies": policies,
            "budget": args.stream_budget, "view": check_view(args.stream_view), "R": args.plane_run,
            "load_view": args.load_view,
            "rule": "floor", "out": str(out)}


def demo_params(config: dict) -> ControllerParams:
    """Controller parameters of a demo run: the default geometry with a device big enough for the layers."""
    from smartquant.workloads.minilm import load_minilm
    model = load_minilm()
    fmt = quant.storage_format(config["format"])
    lines = 0
    for layer in config["layers"]:
        for short in LAYER_MATRICES:
            n = model.weights[matrix_name(layer, short)].size
            lines += superblocks_for(n, fmt.bits, config["R"]) * config["R"] * fmt.bits
    return ControllerParams(dram_addr_bits=StreamingPlan.required_addr_bits(lines, 64))


def run_demo_streaming(args) -> int:
    """Stream MiniLM layer(s) through the RTL (cocotb + Verilator), print the accuracy and energy tables."""
    from smartquant.scripts.bench_device import simulate
    config = demo_config(args)
    params = demo_params(config)
    print(f"\n== Streaming {config['format']} layer(s) {config['layers']} through the RTL ({params.key()}, "
          f"{config['view']} view, R = {config['R']}) ==", flush=True)
    result = simulate(params, "smartquant.sim.stream_demo", "test_stream_minilm", seed=args.seed,
                      extra_env={"SQ_STREAM_CONFIG": json.dumps(config),
                                 "SQ_PROGRESS": "0" if getattr(args, "no_progress", False) else "1"})
    path = Path(config["out"])
    if not result.passed or not path.exists():
        print(result.describe())
        if path.exists():
            print_demo_result(json.loads(path.read_text()))
        return 1
    print_demo_result(json.loads(path.read_text()))
    print(f"(simulation wall time {result.wall_seconds:.0f} s; results in {path})")
    return 0


def print_demo_result(result: dict) -> None:
    runs = result["runs"]
    print(f"{result['tokens']} tokens in {result['sentences']} sentences; {result['n_weights']:,} weights streamed "
          f"per run; load: {result['load']['rwd']:,} {result['load'].get('view', 'weight-major')} MemWr in "
          f"{result['load']['cycles']:,} cycles")
    print(format_run_table(runs))
    print("\nEnergy (hardware counters read over CSR x golden/energy.py constants; activates from the DRAM row "
          "model over the recorded AXI AR stream):")
    print(format_energy_table(runs))
    if runs and len(runs[0]["per_layer"]) > 1:
        print(f"\nPer layer, run {runs[0]['label']}:")
        print(format_layer_energy_table(runs[0]))
    load = result["load"]
    load_energy = energy.energy_report(load["counters"], load["activates"])
    print(f"\nLoad ({load.get('view', 'weight-major')} writes, once): {load['counters']['dram_lines_written']:,} DRAM lines written, "
          f"{load['counters']['bytes_strobed']:,} bytes strobed, {load['activates']:,} activates (AW stream), "
          f"{load_energy['total_pj'] / 1e6:.1f} uJ (DRAM {load_energy['dram_pj'] / 1e6:.1f}, link "
          f"{load_energy['link_pj'] / 1e6:.1f}, controller {load_energy['controller_pj'] / 1e6:.2f})")
    speed = result.get("speed", {})
    if speed:
        print(f"\nsimulation: {speed['cycles']:,} cycles in {speed['wall_seconds']:.1f} s = "
              f"{speed['cycles_per_second']:,.0f} cycles/s, {speed['transactions_per_second']:,.0f} transactions/s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_streaming_arguments(parser)
    return run_demo_streaming(parser.parse_args(argv))


if __name__ == "__main__":
    import sys
    try:
        sys.exit(main())
    except SmartquantError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
