"""Streaming MiniLM weights through the device: the host-side plan, the decoder and the streaming loop order.

Plan (`StreamingPlan`): each streamed encoder layer gets one region of the device; its six weight matrices
(query, key, value, attention output, FFN in, FFN out) lie back to back in that region, each starting on a
superblock boundary (a matrix is whole superblocks; its last one padded with zero weights by the encoder).
Region-table entries are reused round-robin (layer i -> entry i % n_regions) and reprogrammed before a layer
is written or read, which also sets the layer's default k. Layers lie back to back in DRAM from `first_line`.
Storage: INT8 symmetric per-channel (the host keeps the per-row scales) or BF16, as workloads/quant.py stores them
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

The `smartquant demo` options, the Verilator launch and the printed tables are in
smartquant/commands/demo_streaming.py; this module only computes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.golden import energy, layout
from smartquant.golden.device import region_csr_writes, superblocks_for
from smartquant.params import ControllerParams, Format, Rounding, View
from smartquant.workloads import quant
from smartquant.workloads.minilm import LAYER_MATRICES, MiniLM, matrix_name

STREAM_VIEWS = ("packed", "default")          # packed-k view (2), packed-default view (4)
RULE_ROUNDING = {"floor": Rounding.FLOOR, "midpoint": Rounding.MIDPOINT}
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
    from smartquant.workloads.policies import activation_statistics
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
