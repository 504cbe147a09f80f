"""Golden-model tools on the real all-MiniLM-L6-v2 weights (numpy only, no device).

  smartquant golden sweep     per-matrix SNR, layer-output and sentence-embedding cosine vs FP32, and bytes
                              fetched, for INT8 (per-channel), INT4 (per-group 128) and BF16 storage read at
                              every precision k in 1..B under the floor / midpoint fills, the candidate
                              toward-zero fill and round-to-nearest
  smartquant golden policies  context-dependent precision policies (per-matrix greedy, per-input activation)
                              vs every static k: bytes fetched per forward and embedding cosine
  smartquant golden llm-sweep SmolLM2-135M perplexity (Lee corpus, 1024 tokens) with its 210 linear matrices
                              stored as INT8 per-channel, INT4 per-group 32 or BF16 and read at k under each
                              device fill, per-row bias correction off and on; JSON to --out
  smartquant golden llm-policy SmolLM2-135M: per-matrix sensitivity and per-sequence activation policies vs the
                              best static k (best fill + correction per k), at equal bits per weight and at
                              equal perplexity; calibrated on lee_background.cor, scored on lee.cor; JSON and
                              table to docs/results/ (--out)
  smartquant golden kv-sweep  SmolLM2-135M perplexity with its KV cache in a BF16 / INT8 bit-plane region read
                              at k (static, and KV precision policies), DRAM traffic and energy per token;
                              --weights policy:5.5 with the weights at llm-policy's allocation

Progress goes to stderr, tables to stdout. A full sweep (112 points) took 76 s (36 s for 224 points with
--correction both on a quieter day), policies about 30 s, llm-sweep 6 min 35 s (103 forwards of 1024 tokens,
one BLAS thread), on a busy 2-core machine.
"""
from __future__ import annotations

import argparse

from smartquant.errors import SmartquantError

FORMATS = ("int8", "int4", "bf16")
RULES = ("floor", "midpoint", "toward-zero", "nearest")


CORRECTION_CHOICES = ("off", "on", "both")
DEVICE_FILLS = ("floor", "midpoint", "toward-zero")


def corrections_of(choice: str) -> tuple:
    return {"off": (False,), "on": (True,), "both": (False, True)}[choice]


def parse_budgets(text: str) -> list:
    try:
        budgets = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SmartquantError(f"--budgets takes a comma list of average bits per weight, e.g. 4,5,6; got {text!r}") \
            from None
    if not budgets:
        raise SmartquantError("--budgets needs at least one value")
    return budgets


def parse_ks(text: str | None) -> list | None:
    if text is None:
        return None
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SmartquantError(f"--k takes a comma list of precisions, e.g. 4,6,8; got {text!r}") from None
    if not ks:
        raise SmartquantError("--k needs at least one precision")
    return ks


def add_arguments(parser):
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    sweep = actions.add_parser("sweep", help="precision sweep table (every format x rule x k)",
                               description="Precision sweep of all-MiniLM-L6-v2's 36 encoder matrices.")
    sweep.add_argument("--format", choices=FORMATS + ("all",), default="all", help="storage format (default all)")
    sweep.add_argument("--rounding", choices=RULES + ("all",), default="all",
                       help="read rule: the device's floor / midpoint fill, toward-zero (a candidate fill, not "
                            "in DEVICE.md) or round-to-nearest (default all)")
    sweep.add_argument("--k", metavar="LIST", help="comma list of precisions to run (default every k in 1..B; "
                                                   "values above a format's B are skipped)")
    sweep.add_argument("--correction", choices=CORRECTION_CHOICES, default="off",
                       help="per-row bias correction (workloads/quant.py): off, on or both (default off)")
    sweep.add_argument("--csv", metavar="FILE", help="also write the rows to a CSV file")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    policies = actions.add_parser("policies", help="context-dependent precision policies vs static k",
                                  description="Per-matrix greedy and per-input activation policies vs static k.")
    policies.add_argument("--format", choices=FORMATS, default="int8", help="storage format (default int8)")
    policies.add_argument("--rounding", choices=RULES, default="floor", help="read rule (default floor)")
    policies.add_argument("--budgets", default="4,5,6,7", type=str,
                          help="comma list of average bits per weight (default 4,5,6,7)")
    policies.add_argument("--csv", metavar="FILE", help="also write the rows to a CSV file")
    policies.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    llm = actions.add_parser("llm-sweep", help="SmolLM2-135M perplexity vs k x fill x bias correction",
                             description="Perplexity of SmolLM2-135M with its 210 linear matrices read at k "
                                         "through the golden model (workloads/llm_sweep.py).")
    llm.add_argument("--format", default="all", metavar="LIST",
                     help="comma list of int8, int4, bf16 or 'all' (default all)")
    llm.add_argument("--rounding", default="fills", metavar="LIST",
                     help="comma list of floor, midpoint, toward-zero, nearest; 'fills' = the three device "
                          "fills (default), 'all' adds round-to-nearest")
    llm.add_argument("--k", metavar="LIST", help="comma list of precisions (default INT8 1..8, INT4 1..4, "
                                                 "BF16 6..16; values above a format's B are skipped)")
    llm.add_argument("--correction", choices=CORRECTION_CHOICES, default="both",
                     help="per-row bias correction off, on or both (default both)")
    llm.add_argument("--int4-group", type=int, default=32, help="INT4 group size along the input (default 32)")
    llm.add_argument("--text", choices=("test", "background"), default="test",
                     help="Lee corpus part scored: test = lee.cor, the evaluation text (default); background = "
                          "lee_background.cor, the calibration text that choices are made on")
    llm.add_argument("--windows", type=int, default=4, help="evaluation windows (default 4)")
    llm.add_argument("--window", type=int, default=256, help="predicted tokens per window (default 256)")
    llm.add_argument("--out", metavar="FILE", default=None,
                     help="JSON output (default build/llm_sweep.json under the working directory)")
    llm.add_argument("--no-progress", action="store_true", help="no progress bar or point log on stderr")
    from smartquant.workloads import llm_policy
    policy = actions.add_parser(
        "llm-policy", help="SmolLM2-135M context-dependent precision vs the best static k",
        description="Per-matrix (sensitivity) and per-sequence (activation statistics) precision policies on "
                    "SmolLM2-135M's 210 INT8 matrices against the best static k (best fill + bias correction at "
                    "each k): bits per weight (= DRAM traffic / 8 bits), perplexity, and the traffic ratio to the "
                    "static envelope at equal perplexity (workloads/llm_policy.py). Calibrated on "
                    "lee_background.cor, scored on lee.cor. With the defaults about 4.5 minutes of CPU on one core "
                    "(11 minutes wall on a shared 2-core machine).")
    policy.add_argument("--budgets", default=",".join(str(b) for b in llm_policy.DEFAULT_BUDGETS),
                        help="comma list of average bits per weight for the policies (default "
                             f"{','.join(str(b) for b in llm_policy.DEFAULT_BUDGETS)}; each >= {llm_policy.MIN_K})")
    policy.add_argument("--windows", type=int, default=4, help="evaluation windows of lee.cor (default 4)")
    policy.add_argument("--calibration-windows", type=int, default=4,
                        help="calibration windows of lee_background.cor (default 4)")
    policy.add_argument("--window", type=int, default=256, help="predicted tokens per window (default 256)")
    policy.add_argument("--probe-windows", type=int, default=1,
                        help="calibration windows each sensitivity probe runs on (default 1; more: less noise, "
                             "proportionally longer probes)")
    policy.add_argument("--closed-loop-steps", type=int, default=3,
                        help="closed-loop bisection runs that set the per-sequence policy's price (default 3)")
    policy.add_argument("--layers", metavar="LIST", default=None,
                        help="store only these decoder layers' matrices, the others stay at reference precision "
                             "(a quick look; default all 30)")
    policy.add_argument("--out", metavar="FILE", default=None,
                        help="JSON output; the printed table goes beside it with the suffix .txt (default "
                             "docs/results/llm_policy.json under the working directory)")
    policy.add_argument("--no-progress", action="store_true", help="no progress log on stderr")
    from smartquant.workloads import kv_cache
    kv_cache.add_cli_arguments(actions.add_parser(
        "kv-sweep", help="SmolLM2-135M perplexity vs KV-cache precision, traffic and energy per token",
        description="SmolLM2-135M with its KV cache stored in a BF16 or INT8 bit-plane region and read at k "
                    "(static k per fill, and KV precision policies), weights at reference precision or at "
                    "llm-policy's per-matrix allocation (--weights; workloads/kv_cache.py)."))


def run_sweep_command(formats, rules, ks, csv_path, progress: bool, corrections=(False,)) -> list:
    from smartquant.workloads import quant, sweep
    if csv_path:
        sweep.check_csv_path(csv_path)
    chosen = None
    if ks is not None:
        chosen = {name: [k for k in ks if 1 <= k <= quant.STORAGE_FORMATS[name].bits] for name in formats}
        if any(k < 1 for k in ks) or not any(chosen.values()):
            raise SmartquantError(f"--k values must be precisions in 1..B, got {ks}")
    rows = sweep.run_sweep(formats, rules, chosen, progress=progress, corrections=corrections)
    print("Storage: " + "; ".join(f"{name} = {quant.STORAGE_FORMATS[name].describe()}" for name in formats))
    print(sweep.format_table(rows))
    if len(corrections) > 1:
        print("\nSentence-embedding cosine vs FP32 (mean over sentences); raw = read at k, +corr = per-row bias "
              "correction:")
        print(sweep.pivot_table(rows, "embedding_cos_mean", lambda value: f"{value:.4f}"))
    if csv_path:
        sweep.write_csv(rows, csv_path)
        print(f"wrote {len(rows)} rows to {csv_path}")
    return rows


def run_policies_command(fmt_name, rule, budgets, csv_path, progress: bool) -> list:
    from smartquant.workloads import policies, quant, sweep
    fmt = quant.storage_format(fmt_name)
    for budget in budgets:
        policies.check_budget(budget, fmt.bits)
    if csv_path:
        sweep.check_csv_path(csv_path)
    rows = policies.run_policies(fmt_name, rule, budgets, progress=progress)
    print(f"Policies on {fmt.describe()}, {rule} read rule; fitted on {len(policies.CALIBRATION_SENTENCES)} "
          f"calibration sentences, evaluated on {len(sweep.SENTENCES)} others; MB per forward of all of them.")
    print(policies.format_policy_table(rows))
    if csv_path:
        sweep.write_csv(rows, csv_path, policies.POLICY_COLUMNS + ("format", "rule"))
        print(f"wrote {len(rows)} rows to {csv_path}")
    return rows


def run_llm_sweep_command(args) -> dict:
    import sys

    from smartquant.workloads.sweep import parse_choices
    from smartquant.workloads import llm_sweep
    formats = parse_choices(args.format, FORMATS, "--format")
    rules = list(DEVICE_FILLS) if args.rounding == "fills" else parse_choices(args.rounding, RULES, "--rounding")
    ks = parse_ks(args.k)
    chosen = None
    if ks is not None:
        bits = {name: llm_sweep.llm_format(name).bits for name in formats}
        chosen = {name: [k for k in ks if 1 <= k <= bits[name]] for name in formats}
        if any(k < 1 for k in ks) or not all(chosen.values()):
            raise SmartquantError(f"--k must list precisions in 1..B for every format chosen, got {ks}")
    if args.windows < 1 or args.window < 1:
        raise SmartquantError("--windows and --window must be positive")
    path = llm_sweep.output_path(args.out)       # fail before the run, not after it
    progress = not args.no_progress
    setup = llm_sweep.prepare(n_windows=args.windows, window=args.window, part=args.text)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if progress else None
    result = llm_sweep.run_llm_sweep(formats, rules, chosen, corrections_of(args.correction), setup,
                                     int4_group=args.int4_group, progress=progress, log=log)
    print(f"SmolLM2-135M-Instruct perplexity on {result['text']}, {result['tokens']} predicted tokens "
          f"({result['windows']} windows of {result['window']}); reference (dequantized GGUF, float32) "
          f"{result['reference_perplexity']:.3f}.")
    print(f"{result['matrices']} linear matrices ({result['weights'] / 1e6:.1f} M weights) stored as "
          + "; ".join(f"{name} = {text}" for name, text in result["storage"].items())
          + f"; {result['kept_at_reference']} kept at reference precision. "
            "raw = read at k; +corr = per-row bias correction.")
    print(llm_sweep.format_table(result))
    llm_sweep.write_json(result, path)
    print(f"wrote {path} ({len(result['rows'])} rows, {result['seconds']:.0f} s)")
    return result


def run_llm_policy_command(args) -> dict:
    import sys

    from smartquant.workloads import llm_policy, llm_sweep
    budgets = parse_budgets(args.budgets)
    if args.windows < 1 or args.calibration_windows < 1 or args.window < 1:
        raise SmartquantError("--windows, --calibration-windows and --window must be positive")
    if args.closed_loop_steps < 0:
        raise SmartquantError(f"--closed-loop-steps must be >= 0, got {args.closed_loop_steps}")
    layers = None
    if args.layers is not None:
        try:
            layers = [int(part) for part in args.layers.split(",") if part.strip()]
        except ValueError:
            raise SmartquantError(f"--layers takes a comma list of layer indices, e.g. 0,1; got {args.layers!r}") \
                from None
    path = llm_sweep.output_path(args.out or llm_policy.DEFAULT_OUT)     # fail before the run, not after it
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if not args.no_progress else None
    result = llm_policy.run_llm_policies(budgets, args.windows, args.window, args.calibration_windows, log=log,
                                         layers=layers, closed_loop_steps=args.closed_loop_steps,
                                         probe_windows=args.probe_windows)
    evaluation, calibration = result["evaluation"], result["calibration"]
    print(f"SmolLM2-135M-Instruct, {result['matrices']} matrices ({result['weights'] / 1e6:.1f} M weights) stored as "
          f"{result['storage']}. Evaluated on {evaluation['text']} ({evaluation['tokens']} tokens, reference "
          f"perplexity {evaluation['reference_perplexity']:.3f}); calibrated on {calibration['text']} "
          f"({calibration['tokens']} tokens).")
    print("Read configuration per k (chosen on the calibration text): "
          + ", ".join(f"k={k}: {label}" for k, label in result["configs"].items()) + "; k=8: stored weights.")
    print("bits/weight = DRAM traffic per forward / 8 bits per weight. Static rows: every matrix at k with the "
          "better configuration on the evaluation text. 'static ... at same ...': the static envelope "
          "interpolated log-linearly; traffic ratio = policy bits / static bits at equal perplexity.")
    table = llm_policy.format_table(result)
    print(table)
    llm_sweep.write_json(result, path)
    text = path.with_suffix(".txt")
    try:
        text.write_text(table + "\n")
    except OSError as error:
        raise SmartquantError(f"cannot write {text}: {error.strerror}") from None
    print(f"wrote {path} and {text} ({result['seconds']:.0f} s)")
    return result


def run(args: argparse.Namespace):
    progress = not args.no_progress
    if args.action == "sweep":
        formats = list(FORMATS) if args.format == "all" else [args.format]
        rules = list(RULES) if args.rounding == "all" else [args.rounding]
        run_sweep_command(formats, rules, parse_ks(args.k), args.csv, progress, corrections_of(args.correction))
    elif args.action == "llm-sweep":
        run_llm_sweep_command(args)
    elif args.action == "llm-policy":
        run_llm_policy_command(args)
    elif args.action == "kv-sweep":
        from smartquant.workloads import kv_cache
        kv_cache.run_cli(args)
    else:
        run_policies_command(args.format, args.rounding, parse_budgets(args.budgets), args.csv, progress)
    return 0
