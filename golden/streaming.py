"""Streaming MiniLM weights through the device: the host-side plan, the decoder and the streaming loop order.

Plan (`StreamingPlan`): each streamed encoder layer gets one region of the device; its six weight matrices
(query, key, value, attention output, FFN in, FFN out) lie back to back in that region, each starting on a
superblock boundary (a matrix is whole superblocks; its last one padded with zero weights by the encoder).
Region-table entries are reused round-robin (layer i -> entry i % n_regions) and reprogrammed before a layer
is written or read, which also sets the layer's default k. Layers lie back to back in DRAM from `first_line`.
Storage: INT8 symmetric per-channel (the host keeps the per-row scales) or BF16, as golden/quant.py stores them
(`quant.STORAGE_FORMATS`); the host writes the B-bit weights through the weight-major view (view 1).

Reading: at precision k through the packed-k view (k in the address) or the packed-default view after the host
rewrote the region's default k over CSR. Either way a block arrives as k packed lines (DEVICE.md section 3),
which `decode_packed` turns back into the matrix: field w of the block's bitstream is the weight's top k bits,
which the host widens to B bits with the read rule's fill (floor: 0..0, midpoint: 10..0) and dequantizes with
its scales. The independent expectation is `golden_weights`: quant.StoredMatrix.read(k, rule), computed from
the quantized codes by arithmetic shifts, never through the bit-plane layout.

Loop order (`prefetch_schedule`): layer n+1's reads are issued before layer n's forward runs, so the device
streams the next layer while the host computes (the cocotb demo issues them and only then runs numpy). A
per-input policy (policies.ActivationPolicy) knows a matrix's k only once the matrix's input exists, so its
reads are issued on demand: `run_layer` raises `WeightsNeeded` for a (matrix, k) not yet fetched and the
caller fetches it and runs the layer again (numpy reruns of one layer cost milliseconds).

`run_demo_streaming(args)` / `add_streaming_arguments(parser)` are the `smartquant demo` hook: they run
smartquant.sim.stream_demo in Verilator (through smartquant.scripts.bench_device.simulate) and print the
accuracy / traffic / energy table (`format_energy_table`, `format_run_table`).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.golden import energy, layout, quant
from smartquant.golden.device import region_csr_writes, superblocks_for
from smartquant.golden.minilm import LAYER_MATRICES, MiniLM, matrix_name
from smartquant.params import ControllerParams, Format, Rounding, View
from smartquant.tables import text_table

STREAM_VIEWS = ("packed", "default")          # packed-k view (2), packed-default view (4)
RULE_ROUNDING = {"floor": Rounding.FLOOR, "midpoint": Rounding.MIDPOINT}
DEFAULT_KS = (8, 6, 4)
LOAD_VIEWS = ("raw", "weight-major")
DEFAULT_BUDGET = 5.0                          # bits per weight for the policy runs
MIN_SIM_ADDR_BITS = 23                        # one INT8 + one BF16 layer (5.3 MB) fit in 8 MiB


@dataclass(frozen=True)
class MatrixPlacement:
    """Where one weight matrix lies in its layer's region (blocks counted from the region start)."""
    name: str
    layer: int
    short: str
    shape: tuple
    first_block: int
    n_blocks: int

    @property
    def n_weights(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class LayerRegion:
    """One layer's region: entry `index` of the region table, lines [base_line, base_line + span)."""
    layer: int
    index: int
    base_line: int
    n_superblocks: int
    B: int
    R: int
    fmt: Format
    matrices: tuple

    @property
    def span(self) -> int:
        return self.n_superblocks * self.R * self.B

    def csr_writes(self, params: ControllerParams, default_k: int, rule: str = "floor") -> list:
        """(address, value) CSR writes that point the region entry at this layer with a default k."""
        return region_csr_writes(params, self.index, self.base_line, self.n_superblocks, self.fmt, self.B, self.R,
                                 default_k, RULE_ROUNDING[rule])

    def line(self, placement: MatrixPlacement, block: np.ndarray | int, j: np.ndarray | int):
        """Absolute line address (views 1..5) of line j of a matrix's block."""
        return self.base_line + (placement.first_block + np.asarray(block)) * self.B + np.asarray(j)


def check_rule(rule: str) -> str:
    if rule not in RULE_ROUNDING:
        raise SmartquantError(f"the device read rule must be one of {', '.join(RULE_ROUNDING)}, got {rule!r}")
    return rule


def check_view(view: str) -> str:
    if view not in STREAM_VIEWS:
        raise SmartquantError(f"streaming view must be one of {', '.join(STREAM_VIEWS)}, got {view!r}")
    return view


class StreamingPlan:
    """Which matrices go where, how they are written, read and decoded (see the module docstring)."""

    def __init__(self, model: MiniLM, params: ControllerParams, fmt_name: str = "int8", layers=(0,), R: int = 1,
                 rule: str = "floor", first_line: int = 0, matrices=None):
        """matrices: short names (LAYER_MATRICES keys) to place, default all six (fewer for quick tests)."""
        self.model = model
        self.params = params
        self.fmt = quant.storage_format(fmt_name)
        self.fmt_name = fmt_name
        self.B = self.fmt.bits
        self.rule = check_rule(rule)
        layout.check_r(R)
        self.R = R
        self.W = params.data_width
        self.layers = tuple(int(layer) for layer in layers)
        if not self.layers or len(set(self.layers)) != len(self.layers) or not all(
                0 <= layer < model.n_layers for layer in self.layers):
            raise SmartquantError(f"layers must be distinct indices in 0..{model.n_layers - 1}, got {list(layers)}")
        if self.B > params.b_max:
            raise SmartquantError(f"{fmt_name} needs B = {self.B} but the controller has b_max = {params.b_max}")
        shorts = list(LAYER_MATRICES) if matrices is None else [s for s in LAYER_MATRICES if s in set(matrices)]
        if not shorts or (matrices is not None and len(shorts) != len(set(matrices))):
            raise SmartquantError(f"matrices must be names among {', '.join(LAYER_MATRICES)}, got {matrices!r}")
        self.stored: dict[str, quant.StoredMatrix] = {}
        self.regions: dict[int, LayerRegion] = {}
        line = first_line
        for position, layer in enumerate(self.layers):
            placements, block = [], 0
            for short in shorts:
                name = matrix_name(layer, short)
                weights = model.weights[name]
                self.stored[name] = quant.StoredMatrix(weights, self.fmt)
                n_blocks = superblocks_for(weights.size, self.B, R, self.W) * R
                placements.append(MatrixPlacement(name, layer, short, tuple(weights.shape), block, n_blocks))
                block += n_blocks
            region = LayerRegion(layer, position % params.n_regions, line, block // R, self.B, R,
                                 self.fmt.device_format, tuple(placements))
            self.regions[layer] = region
            line += region.span
        self.end_line = line
        self.placements = {p.name: p for region in self.regions.values() for p in region.matrices}

    # --- geometry ------------------------------------------------------------------------------------------
    def names(self, layer: int | None = None) -> list:
        layers = self.layers if layer is None else (layer,)
        return [p.name for lay in layers for p in self.regions[lay].matrices]

    def region_of(self, name: str) -> LayerRegion:
        return self.regions[self.placements[name].layer]

    def dram_bytes(self) -> int:
        return self.end_line * self.params.line_bytes

    def n_weights(self) -> int:
        return sum(p.n_weights for p in self.placements.values())

    @staticmethod
    def required_addr_bits(end_line: int, line_bytes: int, minimum: int = MIN_SIM_ADDR_BITS) -> int:
        """Smallest device capacity (log2 bytes, at least `minimum`) that holds lines [0, end_line)."""
        return max(minimum, int(end_line * line_bytes - 1).bit_length())

    # --- writing -------------------------------------------------------------------------------------------
    def fields(self, name: str) -> np.ndarray:
        """(n_blocks, W) B-bit fields of the stored matrix, zero padded to whole superblocks."""
        stored = self.stored[name]
        if stored.quantized is None:
            flat = stored.fields
        else:
            flat = layout.fields_from_ints(stored.quantized.ints, self.B)
        return layout.to_blocks(flat, self.W, self.R)

    def weight_major_writes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(absolute lines (n,), line bytes (n, W/8)): the weight-major MemWr stream that stores the matrix."""
        placement = self.placements[name]
        region = self.region_of(name)
        lines = layout.weight_major_lines(self.fields(name), self.B)          # (n_blocks, B, W/8)
        blocks, js = np.divmod(np.arange(placement.n_blocks * self.B), self.B)
        return region.line(placement, blocks, js), lines.reshape(-1, self.W // 8)

    def raw_writes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(absolute lines (n,), line bytes (n, W/8)): the raw-view MemWr stream of the host-side encoder.

        One DRAM beat per line instead of the B strobed beats of a weight-major write; the matrix starts on a
        superblock (its first block is a multiple of R), so its raw lines are contiguous from first_block * B."""
        placement = self.placements[name]
        raw = layout.planes_to_raw(layout.block_planes(self.fields(name), self.B), self.R)
        first = self.region_of(name).base_line + placement.first_block * self.B
        return first + np.arange(len(raw)), raw

    # --- reading -------------------------------------------------------------------------------------------
    def packed_read_lines(self, name: str, precision_k: int) -> np.ndarray:
        """Absolute lines of the packed reads of a matrix at k: lines j < k of every block slot, block order."""
        layout.check_k(precision_k, self.B)
        placement = self.placements[name]
        blocks, js = np.divmod(np.arange(placement.n_blocks * precision_k), precision_k)
        return self.region_of(name).line(placement, blocks, js)

    def view_of(self, view: str) -> View:
        return View.PACKED_K if check_view(view) == "packed" else View.PACKED_DEFAULT

    def decode_packed(self, name: str, precision_k: int, lines: np.ndarray) -> np.ndarray:
        """float32 (out, in) weights from the packed DRS lines (n_blocks, k, W/8) of a matrix read at k."""
        placement = self.placements[name]
        lines = np.asarray(lines, dtype=np.uint8)
        if lines.shape != (placement.n_blocks, precision_k, self.W // 8):
            raise SmartquantError(f"{name}: expected packed lines of shape {(placement.n_blocks, precision_k, self.W // 8)}"
                                  f", got {lines.shape}")
        top = layout.unpack_fields(lines.reshape(placement.n_blocks, -1), precision_k, self.W)
        top = top.reshape(-1)[: placement.n_weights]
        dropped = self.B - precision_k
        fill = layout.fill_pattern(self.B, precision_k, RULE_ROUNDING[self.rule])
        fields = (top.astype(np.uint32) << dropped) | np.uint32(fill)
        stored = self.stored[name]
        if stored.quantized is None:
            return layout.floats_from_bf16(fields).reshape(placement.shape)
        ints = layout.ints_from_fields(fields, self.B).reshape(placement.shape)
        return quant.dequantize(ints, stored.quantized.scales, stored.quantized.group_size)

    def golden_weights(self, name: str, precision_k: int) -> np.ndarray:
        """What the host must see at k: quant's arithmetic read of the stored codes (no bit-plane layout)."""
        return self.stored[name].read(precision_k, self.rule)


# --- precision schedules -----------------------------------------------------------------------------------
def static_choice(precision_k: int) -> Callable:
    """choose(name, x) -> k for a static precision."""
    return lambda name, x: precision_k


class WeightsNeeded(Exception):
    """run_layer needs a (matrix, k) that has not been fetched from the device yet."""

    def __init__(self, name: str, precision_k: int):
        super().__init__(f"{name} at k = {precision_k}")
        self.name = name
        self.precision_k = precision_k


def run_layer(model: MiniLM, layer: int, hidden: np.ndarray, mask: np.ndarray, choose: Callable,
              fetched: Mapping, streamed=None) -> tuple[np.ndarray, dict]:
    """Layer forward with every matrix taken from `fetched[(name, k)]`, k = choose(name, its input).

    streamed: the matrix names that come from the device (default all); the others keep their FP32 weights.
    Returns (output, {name: k}); raises WeightsNeeded for the first (name, k) missing from `fetched`.
    """
    chosen = {}

    def select_weight(name, x):
        if streamed is not None and name not in streamed:
            return model.weights[name]
        k = int(choose(name, x))
        chosen[name] = k
        if (name, k) not in fetched:
            raise WeightsNeeded(name, k)
        return fetched[(name, k)]
    return model.layer(layer, hidden, mask, select_weight=select_weight), chosen


def activation_choice(policy, mask: np.ndarray) -> Callable:
    """choose(name, x) of policies.ActivationPolicy on the batch's real tokens (one k per matrix per batch)."""
    from smartquant.golden.policies import activation_statistics
    return lambda name, x: int(policy.choose(name, activation_statistics(x, mask)))


def prefetch_schedule(layers) -> list:
    """The host loop order: ("fetch", l0), then per layer ("fetch", next), ("compute", current), ("wait", next)."""
    layers = list(layers)
    steps = [("fetch", layers[0]), ("wait", layers[0])] if layers else []
    for position, layer in enumerate(layers):
        following = layers[position + 1] if position + 1 < len(layers) else None
        if following is not None:
            steps.append(("fetch", following))
        steps.append(("compute", layer))
        if following is not None:
            steps.append(("wait", following))
    return steps


def golden_forward(plan: StreamingPlan, batch, choose: Callable) -> tuple[np.ndarray, dict, dict]:
    """(embeddings, layer outputs, {name: k}) computed with golden_weights: the expectation of a streaming run."""
    model = plan.model
    hidden = model.embed(batch)
    outputs, chosen_all = {}, {}
    golden = {}
    for layer in range(model.n_layers):
        if layer in plan.layers:
            while True:
                try:
                    hidden_next, chosen = run_layer(model, layer, hidden, batch.attention_mask, choose, golden,
                                                    plan.placements)
                    break
                except WeightsNeeded as need:
                    golden[(need.name, need.precision_k)] = plan.golden_weights(need.name, need.precision_k)
            chosen_all.update(chosen)
            hidden = hidden_next
            outputs[layer] = hidden
        else:
            hidden = model.layer(layer, hidden, batch.attention_mask)
    return model.pool(hidden, batch.attention_mask), outputs, chosen_all


# --- reports -----------------------------------------------------------------------------------------------
def energy_split(counters: Mapping, activates: int, tokens: int, requests: int | None = None, **constants) -> dict:
    """energy.energy_report plus per-token figures and the DRAM / link / controller split in nJ."""
    report = energy.energy_report(counters, activates, **constants)
    report["tokens"] = tokens
    for part in ("dram", "link", "controller", "total"):
        report[f"{part}_nj"] = report[f"{part}_pj"] / 1e3
        report[f"{part}_nj_per_token"] = report[f"{part}_pj"] / 1e3 / tokens if tokens else 0.0
    return report


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
    from smartquant.golden.minilm import load_minilm
    fmt = quant.storage_format(args.stream_format)
    ks = parse_ks(args.stream_k, fmt.bits)
    policies = parse_policies(args.stream_policies)
    if not ks and not policies:
        raise SmartquantError("nothing to stream: give --stream-k or --stream-policies")
    if policies:
        from smartquant.golden.policies import check_budget
        check_budget(args.stream_budget, fmt.bits)
    layout.check_r(args.plane_run)
    model = load_minilm()
    layers = list(range(model.n_layers)) if args.all_layers else [0]
    out = Path(args.stream_out or Path(__file__).resolve().parent.parent / "build" / "stream_demo.json")
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
    from smartquant.golden.minilm import load_minilm
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
