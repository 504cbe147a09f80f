"""Streaming a transformer's weights through the device: the host-side plan, the decoder and the host loop.

One path for every workload: a plan places named weight matrices (grouped by layer) in device regions, writes
them, reads them at k and decodes what comes back; a workload adapter (`MiniLMWorkload`: the all-MiniLM-L6-v2
encoder scored by embedding cosine; `SmolLM2Workload`: the SmolLM2-135M decoder scored by perplexity) runs its
model's forward with the streamed matrices substituted.

Plan (`StreamingPlan`): each streamed layer gets one region of the device; its weight matrices lie back to back
in that region in the order given, each starting on a superblock boundary (a matrix is whole superblocks; its
last one padded with zero weights by the encoder). Region-table entries are reused round-robin (layer i of the
plan -> entry i % n_regions) and reprogrammed before a layer is written or read, which also sets the layer's
default k. Layers lie back to back in DRAM from `first_line`.
Storage: INT8 symmetric per-channel (the host keeps the per-row scales) or BF16, as workloads/quant.py stores them
(`quant.STORAGE_FORMATS`); the host writes the B-bit weights through the weight-major view (view 1) or, faster,
as raw bit-plane lines from its own encoder (view 0).

Reading: at precision k through the packed-k view (k in the address) or the packed-default view after the host
rewrote the region's default k over CSR. Either way a block arrives as k packed lines (DEVICE.md section 3),
which `decode_packed` turns back into the matrix: field w of the block's bitstream is the weight's top k bits,
which the host widens to B bits with the read rule's fill (floor: 0..0, midpoint: 10..0, toward-zero: copies
of the sign bit, layout.truncate) and dequantizes with its scales; with `corrected` the host then adds the
per-row bias correction c_k (workloads/quant.py: computed from the stored codes at load time, never read from
the device). The independent expectation is `golden_weights`: quant.StoredMatrix.read(k, rule, corrected),
computed from the quantized codes by arithmetic shifts, never through the bit-plane layout.

Host loop (`forward_with`): a static schedule ({matrix: k}) is fetched layer by layer before the forward runs;
a per-input policy (policies.ActivationPolicy) knows a matrix's k only once the matrix's input exists, so
`forward_with` raises `WeightsNeeded` for a (matrix, k) not fetched yet, the caller fetches it and runs the
forward again (a MiniLM forward costs milliseconds). Matrices that are not streamed take the workload's
`resident_weight`: MiniLM's FP32 weights; for SmolLM2 the golden model's read at the schedule's k, so that the
perplexity is that of the whole model at the schedule, with the streamed layers coming from the RTL.

The `smartquant demo` options, the Verilator launch and the printed tables are in
smartquant/commands/demo_streaming.py; the cocotb host in sim/stream_demo.py; this module only computes.
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

STREAM_VIEWS = ("packed", "default")          # packed-k view (2), packed-default view (4)
RULE_ROUNDING = {"floor": Rounding.FLOOR, "midpoint": Rounding.MIDPOINT, "toward-zero": Rounding.TOWARD_ZERO}
MIN_SIM_ADDR_BITS = 23                        # one INT8 + one BF16 MiniLM layer (5.3 MB) fit in 8 MiB


@dataclass(frozen=True)
class MatrixPlacement:
    """Where one weight matrix lies in its layer's region (blocks counted from the region start)."""
    name: str
    layer: int
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


def plan_lines(shapes_by_layer: Mapping[int, list], B: int, R: int, W: int = layout.DEFAULT_W) -> int:
    """DRAM lines a plan of these matrix shapes occupies (each matrix padded to whole superblocks)."""
    return sum(superblocks_for(int(np.prod(shape)), B, R, W) * R * B
               for shapes in shapes_by_layer.values() for shape in shapes)


class StreamingPlan:
    """Which matrices go where, how they are written, read and decoded (see the module docstring)."""

    def __init__(self, layer_matrices: Mapping[int, Mapping[str, np.ndarray]], params: ControllerParams,
                 fmt_name: str = "int8", R: int = 1, rule: str = "floor", corrected: bool = False,
                 first_line: int = 0):
        """layer_matrices: {layer: {matrix name: float (out, in) weights}}, in streaming order."""
        self.params = params
        self.fmt = quant.storage_format(fmt_name)
        self.fmt_name = fmt_name
        self.B = self.fmt.bits
        self.rule = check_rule(rule)
        self.corrected = bool(corrected)
        layout.check_r(R)
        self.R = R
        self.W = params.data_width
        if self.B > params.b_max:
            raise SmartquantError(f"{fmt_name} needs B = {self.B} but the controller has b_max = {params.b_max}")
        if not layer_matrices or not all(layer_matrices.values()):
            raise SmartquantError("a plan needs at least one layer, each with at least one matrix")
        self.layers = tuple(int(layer) for layer in layer_matrices)
        self.stored: dict[str, quant.StoredMatrix] = {}
        self.regions: dict[int, LayerRegion] = {}
        self._corrections: dict[tuple, np.ndarray] = {}
        line = first_line
        for position, (layer, matrices) in enumerate(layer_matrices.items()):
            placements, block = [], 0
            for name, weights in matrices.items():
                if name in self.stored:
                    raise SmartquantError(f"matrix {name} is planned twice")
                self.stored[name] = quant.StoredMatrix(weights, self.fmt)
                n_blocks = superblocks_for(weights.size, self.B, R, self.W) * R
                placements.append(MatrixPlacement(name, int(layer), tuple(weights.shape), block, n_blocks))
                block += n_blocks
            region = LayerRegion(int(layer), position % params.n_regions, line, block // R, self.B, R,
                                 self.fmt.device_format, tuple(placements))
            self.regions[int(layer)] = region
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

    def full_lines(self) -> int:
        """Lines of every planned matrix at full precision (k = B): what a k = B stream reads."""
        return sum(p.n_blocks for p in self.placements.values()) * self.B

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

    def correction(self, name: str, precision_k: int) -> np.ndarray:
        """(out,) per-row bias correction of a matrix at k, from its stored codes (host side, computed once)."""
        key = (name, precision_k)
        if key not in self._corrections:
            self._corrections[key] = self.stored[name].row_correction(precision_k, self.rule)
        return self._corrections[key]

    def decode_packed(self, name: str, precision_k: int, lines: np.ndarray) -> np.ndarray:
        """float32 (out, in) weights the host uses, from the packed DRS lines (n_blocks, k, W/8) of a matrix read
        at k: the top k bits widened with the rule's fill, dequantized, plus the row correction if `corrected`."""
        placement = self.placements[name]
        lines = np.asarray(lines, dtype=np.uint8)
        if lines.shape != (placement.n_blocks, precision_k, self.W // 8):
            raise SmartquantError(f"{name}: expected packed lines of shape {(placement.n_blocks, precision_k, self.W // 8)}"
                                  f", got {lines.shape}")
        top = layout.unpack_fields(lines.reshape(placement.n_blocks, -1), precision_k, self.W)
        top = top.reshape(-1)[: placement.n_weights]
        # the top k bits at the top of a B-bit field, then the device's own fill rule (the expanded view's)
        fields = layout.truncate(top.astype(np.uint32) << (self.B - precision_k), self.B, precision_k,
                                 RULE_ROUNDING[self.rule], self.fmt.device_format)
        stored = self.stored[name]
        if stored.quantized is None:
            weights = layout.floats_from_bf16(fields).reshape(placement.shape)
        else:
            ints = layout.ints_from_fields(fields, self.B).reshape(placement.shape)
            weights = quant.dequantize(ints, stored.quantized.scales, stored.quantized.group_size)
        if self.corrected:
            weights += self.correction(name, precision_k)[:, None]
        return weights

    def golden_weights(self, name: str, precision_k: int) -> np.ndarray:
        """What the host must see at k: quant's arithmetic read of the stored codes (no bit-plane layout)."""
        return self.stored[name].read(precision_k, self.rule, corrected=self.corrected)


# --- precision schedules -----------------------------------------------------------------------------------
def static_choice(precision_k: int) -> Callable:
    """choose(name, x) -> k for a static precision."""
    return lambda name, x: precision_k


def mapping_choice(per_matrix_k: Mapping[str, int]) -> Callable:
    """choose(name, x) -> k of a per-matrix schedule."""
    return lambda name, x: int(per_matrix_k[name])


class WeightsNeeded(Exception):
    """A forward needs a (matrix, k) that has not been fetched from the device yet."""

    def __init__(self, name: str, precision_k: int):
        super().__init__(f"{name} at k = {precision_k}")
        self.name = name
        self.precision_k = precision_k


def forward_with(workload, plan: StreamingPlan, inputs, choose: Callable, fetched: Mapping) -> tuple[dict, dict]:
    """The workload's forward with every planned matrix taken from `fetched[(name, k)]`, k = choose(name, its
    input), and every other matrix from workload.resident_weight(name, choose, x).

    Returns (outputs: the workload's arrays to compare, {planned name: k}); raises WeightsNeeded for the first
    (name, k) missing from `fetched`."""
    chosen = {}

    def select_weight(name, x):
        if name not in plan.placements:
            return workload.resident_weight(name, choose, x)
        k = int(choose(name, x))
        chosen[name] = k
        if (name, k) not in fetched:
            raise WeightsNeeded(name, k)
        return fetched[(name, k)]
    return workload.forward(inputs, select_weight), chosen


class GoldenWeights(dict):
    """`fetched` for the golden forward: every (name, k) read by the golden model when first asked for."""

    def __init__(self, plan: StreamingPlan):
        super().__init__()
        self.plan = plan

    def __contains__(self, key) -> bool:
        return True

    def __missing__(self, key):
        self[key] = weights = self.plan.golden_weights(*key)
        return weights


def golden_forward(workload, plan: StreamingPlan, inputs, choose: Callable) -> tuple[dict, dict]:
    """(outputs, {name: k}) computed with golden_weights: the expectation of a streaming run."""
    return forward_with(workload, plan, inputs, choose, GoldenWeights(plan))


def outputs_equal(outputs: Mapping, expected: Mapping) -> list:
    """Names of the output arrays that differ from the expectation in any bit (empty: all equal)."""
    return [key for key in expected if not np.array_equal(np.asarray(outputs[key]), np.asarray(expected[key]))]


# --- reports -----------------------------------------------------------------------------------------------
def energy_split(counters: Mapping, activates: int, tokens: int, requests: int | None = None, **constants) -> dict:
    """energy.energy_report plus per-token figures and the DRAM / link / controller split in nJ."""
    report = energy.energy_report(counters, activates, **constants)
    report["tokens"] = tokens
    for part in ("dram", "link", "controller", "total"):
        report[f"{part}_nj"] = report[f"{part}_pj"] / 1e3
        report[f"{part}_nj_per_token"] = report[f"{part}_pj"] / 1e3 / tokens if tokens else 0.0
    return report
