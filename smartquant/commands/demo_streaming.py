"""The streaming half of `smartquant demo`: its options, the Verilator launch and the printed tables.

`add_streaming_arguments(parser)` / `run_demo_streaming(args)` are the demo's hook: for each workload asked for
(--model minilm, smollm2 or both) they build the run's settings (`demo_config`: JSON that the cocotb module
smartquant.sim.stream_demo reads), run it in Verilator (through smartquant.scripts.bench_device.simulate) and
print the accuracy / traffic / energy tables. The plan, the decoder and the host loop it checks are in
smartquant.workloads.streaming, the two workloads in smartquant.workloads.stream_workloads.

  python -m smartquant.commands.demo_streaming [options]   the streaming half alone (same options as the demo)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from smartquant.errors import SmartquantError
from smartquant.outputs import output_file
from smartquant.golden import energy, layout
from smartquant.params import ControllerParams
from smartquant.scripts.plots import DEMO_JSON, SMOLLM2_DEMO_JSON
from smartquant.tables import text_table
from smartquant.workloads import quant
from smartquant.workloads.streaming import STREAM_VIEWS, StreamingPlan, check_view, plan_lines

DEFAULT_KS = (8, 6, 4)
LOAD_VIEWS = ("raw", "weight-major")
DEFAULT_BUDGET = 5.0                          # bits per weight for the MiniLM policy runs
MODELS = ("minilm", "smollm2", "both")
SMOLLM2_DEFAULT_KS = (8, 6, 5)
SMOLLM2_DEFAULT_LAYERS = (0,)
KV_DEFAULT_WINDOW = 128
KV_DEMO_JSON = Path("build") / "stream_demo_smollm2_kv.json"


def format_run_table(result: dict) -> str:
    """Accuracy and traffic of every streaming run (one row per static k or policy)."""
    smollm2 = result.get("workload") == "smollm2"
    if smollm2:
        headers = ["run", "bits/weight", "perplexity (RTL)", "perplexity (golden)"]
    else:
        headers = ["run", "bits/weight", "emb cos mean", "emb cos min"]
    headers += ["DRAM lines read", "of full", "link MB", "activates", "RTL == golden"]
    rows = []
    for run in result["runs"]:
        if smollm2:
            row = [run["label"], f"{run['bits_per_weight']:.2f}", f"{run['perplexity']:.4f}",
                   f"{run['golden']['perplexity']:.4f}"]
        else:
            row = [run["label"], f"{run['bits_per_weight']:.2f}", f"{run['embedding_cos_mean']:.5f}",
                   f"{run['embedding_cos_min']:.5f}"]
        rows.append(row + [f"{run['counters']['dram_lines_read']:,}", f"{run['traffic_ratio']:.4f}",
                           f"{run['link_bytes'] / 1e6:.2f}", f"{run['activates']:,}",
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
    """Options of the streaming half of `smartquant demo`."""
    group = parser.add_argument_group("streaming through the simulated RTL")
    group.add_argument("--model", default="both", choices=MODELS,
                       help="workload streamed through the RTL: minilm (the encoder, after the golden sweep), "
                            "smollm2 (a SmolLM2-135M decoder layer, perplexity) or both (default)")
    group.add_argument("--plane-run", type=int, default=None,
                       help="plane run R of the regions (default 1 for MiniLM, 64 for SmolLM2: the layout where "
                            "row activates fall with k)")
    group.add_argument("--load-view", default="raw", choices=LOAD_VIEWS,
                       help="how the weights enter the device: raw (host-side bit-plane encoder, 1 DRAM beat per "
                            "line; default, fast) or weight-major (the device transposes and gathers each block: B plane beats per "
                            "block, one per line)")
    group.add_argument("--stream-view", default="packed", choices=STREAM_VIEWS,
                       help="packed: packed-k view (k in the address); default: packed-default view after a CSR "
                            "rewrite of the region's default k")
    group.add_argument("--seed", type=int, default=1, help="testbench seed (default 1)")
    minilm = parser.add_argument_group("MiniLM streaming (--model minilm or both)")
    minilm.add_argument("--all-layers", action="store_true", help="stream all 6 encoder layers (default: layer 0)")
    minilm.add_argument("--stream-format", default="int8", choices=("int8", "bf16"),
                        help="storage format of the streamed layers (default int8 per-channel)")
    minilm.add_argument("--stream-k", default=",".join(map(str, DEFAULT_KS)),
                        help=f"static precisions to stream, comma list (default {','.join(map(str, DEFAULT_KS))})")
    minilm.add_argument("--stream-policies", default="greedy,activation",
                        help="policies to stream: greedy (per matrix), activation (per input), none")
    minilm.add_argument("--stream-budget", type=float, default=DEFAULT_BUDGET,
                        help=f"policy budget in bits per weight (default {DEFAULT_BUDGET})")
    minilm.add_argument("--stream-out", metavar="FILE", default=None,
                        help=f"JSON result file (default {DEMO_JSON}); DRS payloads go to its .npz twin")
    smollm2 = parser.add_argument_group("SmolLM2 streaming (--model smollm2 or both)")
    smollm2.add_argument("--smollm2-layers", default=",".join(map(str, SMOLLM2_DEFAULT_LAYERS)),
                         help="decoder layers streamed through the RTL, comma list of 0..29 (default 0; each "
                              "layer adds about 57k writes and 57k x k/8 reads per run); the other layers are "
                              "read at the same k by the golden model")
    smollm2.add_argument("--smollm2-static-k", default=",".join(map(str, SMOLLM2_DEFAULT_KS)),
                         help=f"static precisions, comma list (default {','.join(map(str, SMOLLM2_DEFAULT_KS))}; "
                              "'none' for none)")
    smollm2.add_argument("--smollm2-k", default=None, metavar="SPEC",
                         help="the per-matrix precision run: 'policy:BUDGET[:FILE]' (the fitted per-matrix policy "
                              "of `smartquant golden llm-policy`, allocated at BUDGET bits/weight from its result "
                              "FILE, default docs/results/llm_policy.json), one k for all ('6') or per matrix kind "
                              "('attn_q=5,ffn_down=7', the others keep workloads/stream_workloads.py "
                              "DEFAULT_KIND_K); default: policy:5.5 when that file is here, else DEFAULT_KIND_K "
                              "(5.78 bits/weight); 'none' skips it")
    smollm2.add_argument("--smollm2-windows", type=int, default=4,
                         help="perplexity windows of 256 tokens of lee.cor (default 4 = 1024 tokens)")
    smollm2.add_argument("--smollm2-out", metavar="FILE", default=None,
                         help=f"JSON result file (default {SMOLLM2_DEMO_JSON})")
    kv = parser.add_argument_group("SmolLM2 KV cache through the RTL (--model smollm2 --kv)")
    kv.add_argument("--kv", action="store_true",
                    help="instead of SmolLM2's weights, stream one layer's KV cache through the RTL: its K and V "
                         "written token by token into a BF16 and an INT8 region (weight-major MemWr) and, after "
                         "each token, every block so far read at the KV precision (packed-k MemRd): BF16 k = 16 "
                         "and 12, INT8 k = 8 and 5 and the policy 'recent 2 blocks at 8, older K5 V4', midpoint "
                         "fill (workloads/kv_cache.py DEVICE_RUNS); the other layers' caches by the golden model. "
                         "Prints perplexity (RTL and golden, equal bit for bit), DRAM lines and energy from the "
                         "counters. The reads grow with the square of the window: the default 1 x 128 tokens is "
                         "about 310k transactions, a few minutes (2 min 15 s on a busy 2-core machine with the "
                         "simulator built)")
    kv.add_argument("--kv-layer", type=int, default=0, help="decoder layer whose cache goes through the RTL "
                                                            "(default 0)")
    kv.add_argument("--kv-windows", type=int, default=1, help="windows of lee.cor (default 1)")
    kv.add_argument("--kv-window", type=int, default=KV_DEFAULT_WINDOW,
                    help=f"predicted tokens per window (default {KV_DEFAULT_WINDOW}; 64 takes about a quarter of "
                         "the time, 256 four times as long)")
    kv.add_argument("--kv-weights", default="reference", metavar="SPEC",
                    help="the weights beside the cache: reference (float32, default) or policy:BUDGET[:FILE] "
                         "(llm-policy's per-matrix allocation, read by the golden model)")
    kv.add_argument("--kv-out", metavar="FILE", default=None, help=f"JSON result file (default {KV_DEMO_JSON})")


def models_of(args) -> list:
    model = getattr(args, "model", "minilm")
    return ["minilm", "smollm2"] if model == "both" else [model]


def parse_ks(text: str, B: int, option: str = "--stream-k") -> list:
    if text.strip() == "none":
        return []
    try:
        ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SmartquantError(f"{option} must be a comma list of integers, got {text!r}") from None
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


def parse_layers(text: str, n_layers: int) -> list:
    from smartquant.workloads.stream_workloads import check_layers
    try:
        layers = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SmartquantError(f"--smollm2-layers must be a comma list of integers, got {text!r}") from None
    return check_layers(layers, n_layers)


def output_path(option_value, default: Path) -> str:
    # absolute: the simulator process that writes it runs in its own build directory
    return str(output_file(option_value, default))


def demo_config(args, workload: str = "minilm") -> dict:
    """The JSON settings the cocotb module smartquant.sim.stream_demo reads (SQ_STREAM_CONFIG)."""
    if workload == "smollm2" and getattr(args, "kv", False):
        return kv_config(args)
    common = {"workload": workload, "view": check_view(args.stream_view), "load_view": args.load_view}
    if workload == "smollm2":
        return {**common, **smollm2_config(args)}
    fmt = quant.storage_format(args.stream_format)
    ks = parse_ks(args.stream_k, fmt.bits)
    policies = parse_policies(args.stream_policies)
    if not ks and not policies:
        raise SmartquantError("nothing to stream: give --stream-k or --stream-policies")
    if policies:
        from smartquant.workloads.policies import check_budget
        check_budget(args.stream_budget, fmt.bits)
    R = 1 if args.plane_run is None else args.plane_run
    layout.check_r(R)
    from smartquant.workloads.minilm import load_minilm
    model = load_minilm()
    layers = list(range(model.n_layers)) if args.all_layers else [0]
    return {**common, "format": args.stream_format, "layers": layers, "ks": ks, "policies": policies,
            "budget": args.stream_budget, "R": R, "rule": "floor", "corrected": False,
            "out": output_path(args.stream_out, DEMO_JSON)}


def smollm2_config(args) -> dict:
    """SmolLM2's settings: INT8 per-channel, the generative default read (toward-zero + row correction)."""
    from smartquant.workloads import llm_sweep
    from smartquant.workloads.smollm2 import gguf_path
    from smartquant.workloads.gguf_weights import GGUFFile
    from smartquant.workloads.stream_workloads import (DEFAULT_KIND_K, parse_kind_k, policy_precisions,
                                                       policy_spec_default)
    n_layers = int(GGUFFile(gguf_path()).value("llama.block_count"))     # metadata only: fails early if missing
    fmt = llm_sweep.llm_format("int8")
    ks = parse_ks(args.smollm2_static_k, fmt.bits, "--smollm2-static-k")
    spec = args.smollm2_k
    per_matrix = spec is None or spec.strip() != "none"
    if spec is None:                      # decided here, explicitly: the simulator runs in its own directory
        spec = policy_spec_default() or ",".join(f"{kind}={k}" for kind, k in DEFAULT_KIND_K.items())
    if per_matrix and spec.strip().startswith("policy"):
        from smartquant.workloads.llm_policy import DEFAULT_OUT
        from smartquant.workloads.smollm2 import LAYER_MATRICES, matrix_name
        _, budget, *path = spec.strip().split(":", 2)
        spec = f"policy:{budget}:{Path(path[0] if path else DEFAULT_OUT).resolve()}"    # absolute, for the simulator
        names = [matrix_name(layer, kind) for layer in range(n_layers) for kind in LAYER_MATRICES]
        policy_precisions(spec, dict.fromkeys(names, 1), fmt.bits)   # budget, file and coverage checked now
    elif per_matrix:
        for k in parse_kind_k(spec).values():
            layout.check_k(k, fmt.bits)
    if not ks and not per_matrix:
        raise SmartquantError("nothing to stream: give --smollm2-static-k or --smollm2-k")
    if args.smollm2_windows < 1:
        raise SmartquantError(f"--smollm2-windows must be >= 1, got {args.smollm2_windows}")
    R = 64 if args.plane_run is None else args.plane_run
    layout.check_r(R)
    config = {"format": "int8", "layers": parse_layers(args.smollm2_layers, n_layers), "ks": ks, "policies": [],
              "budget": None, "R": R, "rule": llm_sweep.DEFAULT_RULE, "corrected": llm_sweep.DEFAULT_CORRECTION,
              "windows": args.smollm2_windows, "window": 256, "out": output_path(args.smollm2_out, SMOLLM2_DEMO_JSON)}
    if per_matrix:
        config["per_matrix"] = {"spec": spec}
    return config


def kv_config(args) -> dict:
    """The settings of the KV run (sim/stream_demo.py test_stream_kv)."""
    from smartquant.workloads import kv_cache
    from smartquant.workloads.gguf_weights import GGUFFile
    from smartquant.workloads.smollm2 import gguf_path
    gguf = GGUFFile(gguf_path())                       # metadata only: fails early if the model is missing
    n_layers, context = int(gguf.value("llama.block_count")), int(gguf.value("llama.context_length"))
    if not 0 <= args.kv_layer < n_layers:
        raise SmartquantError(f"--kv-layer must be in 0..{n_layers - 1}, got {args.kv_layer}")
    if args.kv_windows < 1 or not 1 <= args.kv_window < context:
        raise SmartquantError(f"--kv-windows must be >= 1 and --kv-window in 1..{context - 1}, got "
                              f"{args.kv_windows} and {args.kv_window}")
    weights = args.kv_weights.strip()
    if weights != kv_cache.WEIGHTS_REFERENCE:
        if not weights.startswith("policy:"):
            raise SmartquantError(f"--kv-weights must be 'reference' or 'policy:BUDGET[:FILE]', got {weights!r}")
        from smartquant.workloads.llm_policy import DEFAULT_OUT
        from smartquant.workloads.smollm2 import LAYER_MATRICES, matrix_name
        from smartquant.workloads.stream_workloads import policy_precisions
        _, budget, *path = weights.split(":", 2)
        weights = f"policy:{budget}:{Path(path[0] if path else DEFAULT_OUT).resolve()}"   # for the simulator
        names = [matrix_name(layer, kind) for layer in range(n_layers) for kind in LAYER_MATRICES]
        policy_precisions(weights, dict.fromkeys(names, 1), 8)      # budget, file and coverage checked now
    return {"workload": "smollm2-kv", "layer": args.kv_layer, "windows": args.kv_windows, "window": args.kv_window,
            "weights": weights, "heads": int(gguf.value("llama.attention.head_count_kv")),
            "head_dim": int(gguf.value("llama.embedding_length")) // int(gguf.value("llama.attention.head_count")),
            "runs": [{"format": fmt, "fill": rule, "policy": kv_cache.policy_to_json(policy)}
                     for fmt, rule, policy in kv_cache.DEVICE_RUNS],
            "out": output_path(args.kv_out, KV_DEMO_JSON)}


def demo_params(config: dict) -> ControllerParams:
    """Controller parameters of a demo run: the default geometry with a device big enough for the layers."""
    if config["workload"] == "smollm2-kv":
        from smartquant.workloads.kv_cache import device_regions
        _, lines = device_regions([run["format"] for run in config["runs"]], config["windows"],
                                  config["window"] + 1, config["heads"], config["head_dim"])
        return ControllerParams(dram_addr_bits=StreamingPlan.required_addr_bits(lines, 64))
    fmt = quant.storage_format(config["format"])
    shapes = {layer: layer_shapes(config, layer) for layer in config["layers"]}
    lines = plan_lines(shapes, fmt.bits, config["R"])
    return ControllerParams(dram_addr_bits=StreamingPlan.required_addr_bits(lines, 64))


def layer_shapes(config: dict, layer: int) -> list:
    """(out, in) of every matrix a layer of the config streams, from the model files' metadata."""
    if config["workload"] == "smollm2":
        from smartquant.workloads.gguf_weights import GGUFFile
        from smartquant.workloads.smollm2 import LAYER_MATRICES, gguf_path, matrix_name
        gguf = GGUFFile(gguf_path())
        return [gguf.shape(matrix_name(layer, short)) for short in LAYER_MATRICES]
    from smartquant.workloads.minilm import LAYER_MATRICES, load_minilm, matrix_name
    model = load_minilm()
    return [model.weights[matrix_name(layer, short)].shape for short in LAYER_MATRICES]


def run_demo_streaming(args) -> int:
    """Stream the asked-for workloads' layers through the RTL (cocotb + Verilator), print the tables."""
    configs = [demo_config(args, workload) for workload in models_of(args)]   # every bad option fails first
    status = 0
    for config in configs:
        status = max(status, run_one(config, args))
    return status


def run_one(config: dict, args) -> int:
    from smartquant.scripts.bench_device import simulate
    params = demo_params(config)
    kv = config["workload"] == "smollm2-kv"
    if kv:
        print(f"\n== SmolLM2-135M layer {config['layer']}'s KV cache through the RTL ({params.key()}, weight-major "
              f"writes token by token, packed-k reads at every step, {config['windows']} x {config['window']} "
              f"tokens, weights {config['weights']}) ==", flush=True)
    else:
        name = {"minilm": "MiniLM", "smollm2": "SmolLM2-135M"}[config["workload"]]
        print(f"\n== Streaming {name} {config['format']} layer(s) {config['layers']} through the RTL "
              f"({params.key()}, {config['view']} view, R = {config['R']}, {config['rule']} fill"
              f"{', row correction' if config['corrected'] else ''}) ==", flush=True)
    result = simulate(params, "smartquant.sim.stream_demo", "test_stream_kv" if kv else "test_stream_layers",
                      seed=args.seed, extra_env={"SQ_STREAM_CONFIG": json.dumps(config),
                                                 "SQ_PROGRESS": "0" if getattr(args, "no_progress", False) else "1"})
    show = print_kv_result if kv else print_demo_result
    path = Path(config["out"])
    if not result.passed or not path.exists():
        print(result.describe())
        if path.exists():
            show(json.loads(path.read_text()))
        return 1
    data = json.loads(path.read_text())
    show(data)
    print(f"(simulation wall time {result.wall_seconds:.0f} s; results in {path})")
    if kv:
        return 0
    if config["workload"] == "smollm2":
        from smartquant.scripts.plots import plot_perplexity_traffic
        print(f"plot: {plot_perplexity_traffic(data, path.with_suffix('.png'))} (`smartquant bench plots` puts it "
              "in docs/img)")
    return 0


def format_kv_table(result: dict) -> str:
    """One row per KV run: perplexity from the RTL's reads and the golden cache's, the device's traffic and energy
    per token, and the coalescing write path's traffic for the same decode (kv_cache.kv_counters)."""
    tokens = result["positions"]
    headers = ["KV read", "perplexity (RTL)", "perplexity (golden)", "MemWr", "MemRd", "DRAM rd/token",
               "DRAM wr/token", "activates", "uJ/token", "coalesced: DRAM rd/token", "DRAM wr/token", "RTL == golden"]
    rows = []
    for run in result["runs"]:
        c, model = run["counters"], run["coalesced_model"]
        rows.append([run["label"], f"{run['perplexity']:.4f}", f"{run['golden']['perplexity']:.4f}",
                     f"{run['writes']:,}", f"{run['reads']:,}", f"{c.get('dram_lines_read', 0) / tokens:.1f}",
                     f"{c.get('dram_lines_written', 0) / tokens:.1f}", f"{run['activates']:,}",
                     f"{run['energy']['total_nj_per_token'] / 1e3:.3f}",
                     f"{model.get('dram_lines_read', 0) / tokens:.1f}",
                     f"{model.get('dram_lines_written', 0) / tokens:.1f}", "yes" if run["exact"] else "NO"])
    return text_table(headers, rows, left={0})


def print_kv_result(result: dict) -> None:
    print(f"SmolLM2-135M-Instruct on {result['text']}: {result['tokens']} predicted tokens ({result['windows']} x "
          f"{result['window']}; the forward's {result['positions']} positions are written and read), weights "
          f"{result['weights']}, float32 K/V {result['reference_perplexity']:.4f}. Layer {result['config']['layer']}'s "
          "K and V go through the RTL, the other layers' caches are read by the golden model at the same setting. "
          "Per position of one layer (3 KV heads, K and V): DRAM lines from the hardware counters (weight-major "
          "writes: B strobed beats a line; the newest, partial block read from DRAM), activates over the AR and AW "
          "streams, energy from golden/energy.py; 'coalesced': the same decode with issue 13's coalescing write "
          "path (kv_cache.kv_counters: B plane lines a block of 8 tokens, the partial block from the gather buffer)")
    print(format_kv_table(result))
    score, speed = result["scoreboard"], result["speed"]
    print(f"scoreboard: {score['drs_checked']:,} DRS and {score['ndr_checked']:,} NDR checked, {score['mismatches']} "
          f"mismatches; every counter read over CSR after each run equals the golden device's")
    print(f"simulation: {speed['cycles']:,} cycles in {speed['wall_seconds']:.1f} s = {speed['cycles_per_second']:,.0f} "
          f"cycles/s, {speed['transactions_per_second']:,.0f} transactions/s")


def print_demo_result(result: dict) -> None:
    runs = result["runs"]
    if result.get("workload") == "smollm2":
        reference = result["reference"]
        print(f"perplexity over {result['tokens']} tokens of lee.cor ({result['inputs']} windows); reference model "
              f"(dequantized GGUF, float32) {reference['perplexity']:.4f}. Layers {result['config']['layers']} "
              f"come from the RTL ({result['n_weights']:,} weights), the other layers are read at the same k by "
              f"the golden model; load: {result['load']['rwd']:,} {result['load']['view']} MemWr in "
              f"{result['load']['cycles']:,} cycles")
    else:
        print(f"{result['tokens']} tokens in {result['inputs']} sentences; {result['n_weights']:,} weights streamed "
              f"per run; load: {result['load']['rwd']:,} {result['load'].get('view', 'weight-major')} MemWr in "
              f"{result['load']['cycles']:,} cycles")
    print(format_run_table(result))
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
