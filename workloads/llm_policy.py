"""Context-dependent precision on SmolLM2-135M against the best static k, at equal traffic and equal perplexity.

Storage: the 210 linear matrices as INT8 per channel (workloads/llm_sweep.py); a matrix read at k fetches k of
its 8 bit planes, so its DRAM traffic is exactly k/8 of the full read (the golden model's k/B of the lines:
tests/test_sweep.py, README "DRAM traffic vs k"). Bits per weight below are sum_m n_m k_m / sum_m n_m over the
matrices, per sequence, which is the traffic of one forward pass (every weight fetched once per forward) as a
fraction of 8 bits.

Texts: every choice (the read configuration per k, the matrices' sensitivities, the policies' prices) is made on
the calibration text, lee_background.cor; the evaluation text lee.cor (workloads/corpus.py) is only scored.

Read configuration per k: a packed read delivers the top k bits and the host fills the rest, so the fill rule
and the per-row bias correction are host choices per k. CONFIGS are the two that make the static envelope
in the llm-sweep table on both texts (floor + correction, which equals midpoint + correction for per-channel
storage, best at k <= 5; toward-zero + correction at k >= 6, within 0.1 % of toward-zero alone); `choose_configs`
picks one per k by calibration perplexity, and every policy reads a matrix at k with that configuration.

Baseline, the best static envelope: every matrix at the same k, with the better of CONFIGS at that k measured on
the evaluation text itself (this favours the baseline). A static budget of b bits may use any k <= b, so the
envelope at b is the best perplexity of the static points with k <= b; between integer k it is interpolated
linearly in log perplexity, which stands for a device that reads a fraction of the matrices at k and the rest at
k + 1 with no knowledge of which matter (`static_bits_for`, `static_perplexity_at`).

Policies, one framework (workloads/policies.py, shared with MiniLM), both limited to k in MIN_K..B:
(a) per-matrix sensitivity: each matrix m gets one k_m for every input, minimising sum_m s_m(k_m) within the
    budget (policies.greedy_allocation). s_m(k) = gain_m * u_m(k): u_m is the output noise of m read at k on
    its calibration inputs that no scalar gain explains (`unexplained_noise`, about the output NSR), gain_m
    the loss it costs: m alone is read at PROBE_K, the forward rerun from its layer on the first calibration
    window, and gain_m = (mean NLL increase) / u_m(PROBE_K) (`measure_sensitivity`; increases below the
    probes' resolution, `probe_noise`, count as that resolution).
(b) run-time per sequence: policies.ActivationPolicy with the same gains chooses k per matrix and per sequence
    (window) as the forward runs, from the statistics of the input the matrix is about to multiply (channel
    energies, square of the channel sum), minimising predicted gain x NSR + price x bits. The price is set on
    the calibration windows: open loop from the reference activations, then closed loop (each calibration
    window run with the weights the policy picks) so that their average stays within the budget; on the
    evaluation text the average is what it is (reported as measured).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
import time

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.workloads import llm_sweep, quant, smollm2
from smartquant.workloads.minilm import single_blas_thread
from smartquant.workloads.policies import (ActivationPolicy, activation_statistics, check_budget, greedy_allocation,
                                          per_row_statistics)
from smartquant.workloads.smollm2 import LAYER_MATRICES, matrix_name

FORMAT = "int8"
B = 8
# The lowest k a policy may choose. k = 3 is allowed no more: static k = 3 is at perplexity 1e6 and the
# single-matrix probes cannot resolve what dozens of matrices at 3 bits do together (measured: with 3 allowed,
# 46 of 210 matrices went to 3 and the policy lost to static k = 5 at 5 bits, 52.8 against 44.7; README).
MIN_K = 4
STATIC_KS = (3, 4, 5, 6, 7, 8)   # the static envelope
CONFIGS = (("floor", True), ("toward-zero", True))
PROBE_K = 3                    # probed where the damage is large enough to measure on one window
TABLE_KS = range(min(MIN_K, PROBE_K), B + 1)   # the k with a read configuration and an NSR table
NSR_TOKEN_STRIDE = 4           # every 4th calibration token for the NSR tables (they are smooth averages)
DEFAULT_BUDGETS = (4.5, 5.0, 5.5, 6.0)
DEFAULT_OUT = Path("docs") / "results" / "llm_policy.json"   # under the working directory; the table beside it (.txt)


def config_label(config) -> str:
    rule, corrected = config
    return f"{rule}{' +corr' if corrected else ''}"


def parse_config_label(label: str) -> tuple:
    """Inverse of config_label: 'floor +corr' -> ('floor', True)."""
    rule, _, correction = label.partition(" ")
    quant.check_rule(rule)
    if correction not in ("", "+corr"):
        raise SmartquantError(f"not a read configuration label: {label!r}")
    return rule, correction == "+corr"


def bits_per_weight(allocation: dict, sizes: dict) -> float:
    """Average bits fetched per weight of one forward when matrix m is read at allocation[m] bits."""
    if set(allocation) != set(sizes):
        raise SmartquantError("an allocation must give a precision for every matrix")
    return sum(sizes[name] * int(k) for name, k in allocation.items()) / sum(sizes.values())


class Reader:
    """The weights the host uses for (matrix, k): the stored INT8 codes read at k under configs[k], cached per run.

    configs: k -> (fill rule, corrected). At k = B every configuration reads the stored weights."""

    def __init__(self, stored: dict, configs: dict):
        self.stored = stored
        self.configs = dict(configs)
        self.cache = {}

    def config(self, k: int) -> tuple:
        if k == B:
            return ("floor", False)
        if k not in self.configs:
            raise SmartquantError(f"no read configuration for k = {k}")
        return self.configs[k]

    def __call__(self, name: str, k: int) -> np.ndarray:
        key = (name, int(k))
        if key not in self.cache:
            rule, corrected = self.config(int(k))
            self.cache[key] = self.stored[name].read(int(k), rule, corrected)
        return self.cache[key]

    def clear(self) -> None:
        self.cache = {}


def store(setup: llm_sweep.LLMSetup) -> dict:
    fmt = llm_sweep.llm_format(FORMAT)
    return {name: quant.StoredMatrix(setup.model.weights[name], fmt) for name in setup.names}


def evaluate_allocation(setup: llm_sweep.LLMSetup, allocation: dict, reader: Reader) -> dict:
    """Perplexity of the setup's windows with every matrix read at its allocated k (one k for all windows)."""
    sizes = {name: setup.model.weights[name].size for name in setup.names}
    perplexity, nll = llm_sweep.evaluate(setup, {name: reader(name, k) for name, k in allocation.items()})
    return {"perplexity": perplexity, "mean_nll": nll, "bits_per_weight": bits_per_weight(allocation, sizes)}


def evaluate_per_sequence(setup: llm_sweep.LLMSetup, choose, reader: Reader) -> dict:
    """Perplexity when each window runs alone and matrix m is read at choose(name, x), x its input in that window.

    Bits are counted per window (one forward reads every matrix once) and averaged over the windows."""
    sizes = {name: setup.model.weights[name].size for name in setup.names}
    total = sum(sizes.values())
    nll, window_bits = [], []
    for row in range(setup.batch.shape[0]):
        spent = [0]

        def select_weight(name, x):
            if name not in sizes:                  # not stored (a partial setup): reference weights, not counted
                return setup.model.weights[name]
            k = int(choose(name, x))
            spent[0] += sizes[name] * k
            return reader(name, k)
        nll.append(setup.model.token_nll(setup.batch[row:row + 1], select_weight=select_weight))
        window_bits.append(spent[0] / total)
    mean = float(np.concatenate(nll, axis=None).mean())
    return {"perplexity": float(np.exp(mean)), "mean_nll": mean, "bits_per_weight": float(np.mean(window_bits)),
            "window_bits": [float(b) for b in window_bits]}


# --- the static envelope ------------------------------------------------------------------------------------
def static_envelope(points: list) -> list:
    """[(bits, perplexity)] of the best static run within each bit count: the running minimum over k <= bits."""
    best, envelope = math.inf, []
    for bits, perplexity in sorted(points):
        best = min(best, perplexity)
        envelope.append((float(bits), best))
    return envelope


def static_bits_for(envelope: list, perplexity: float) -> float | None:
    """Fewest bits per weight at which the static envelope reaches `perplexity` (log-linear between points);
    None when the perplexity is outside the envelope (better than its best point, or worse than its first)."""
    if perplexity == envelope[0][1]:
        return envelope[0][0]
    for (b0, p0), (b1, p1) in zip(envelope, envelope[1:]):
        if p1 <= perplexity < p0:
            fraction = (math.log(p0) - math.log(perplexity)) / (math.log(p0) - math.log(p1))
            return b0 + fraction * (b1 - b0)
    return None


def static_perplexity_at(envelope: list, bits: float) -> float | None:
    """Perplexity of the static envelope at `bits` per weight (log-linear between points); None below its first."""
    if bits < envelope[0][0]:
        return None
    for (b0, p0), (b1, p1) in zip(envelope, envelope[1:]):
        if b0 <= bits <= b1:
            fraction = (bits - b0) / (b1 - b0)
            return math.exp(math.log(p0) + fraction * (math.log(p1) - math.log(p0)))
    return envelope[-1][1]


def choose_configs(calibration: llm_sweep.LLMSetup, stored: dict, ks, log) -> tuple:
    """({k: best config on the calibration text}, rows): every config of CONFIGS at every k < B."""
    rows, configs = [], {}
    for k in ks:
        if k == B:
            continue
        for config in CONFIGS:
            reader = Reader(stored, {k: config})
            result = evaluate_allocation(calibration, {name: k for name in calibration.names}, reader)
            rows.append({"text": "calibration", "k": k, "config": config_label(config), **result})
            log(f"calibration k={k} {config_label(config)}: perplexity {result['perplexity']:.3f}")
            if k not in configs or result["perplexity"] < configs[k][1]:
                configs[k] = (config, result["perplexity"])
    return {k: config for k, (config, _) in configs.items()}, rows


def run_static(evaluation: llm_sweep.LLMSetup, stored: dict, ks, log) -> list:
    """Rows of every static k x config on the evaluation text (k = B once: the stored weights)."""
    rows = []
    for k in ks:
        for config in (CONFIGS if k < B else CONFIGS[:1]):
            reader = Reader(stored, {k: config})
            result = evaluate_allocation(evaluation, {name: k for name in evaluation.names}, reader)
            label = config_label(config) if k < B else "stored"
            rows.append({"text": "evaluation", "k": k, "config": label, **result})
            log(f"evaluation static k={k} {label}: perplexity {result['perplexity']:.3f}")
    return rows


# --- sensitivities -------------------------------------------------------------------------------------------
@dataclass
class Sensitivity:
    """What the calibration forward measures for the policies."""
    nsr: dict                      # name -> (B,) unexplained output noise at k = 1..B (0 outside TABLE_KS)
    gains: dict                    # name -> loss increase per unit NSR (module docstring)
    window_statistics: dict        # name -> (energies (windows, in), square sums (windows,)) of the FP32 input
    probe_damage: dict = field(default_factory=dict)   # name -> mean NLL increase with m alone at PROBE_K
    seconds: float = 0.0
    probe_floor: float = 0.0       # probe_noise(probe_damage)


def measure_sensitivity(calibration: llm_sweep.LLMSetup, reader: Reader, log, probe_windows: int = 1) -> Sensitivity:
    """One reference forward over the calibration windows (NSR tables, window statistics), then one probe per
    matrix on the first probe_windows windows: the matrix alone read at PROBE_K, the forward rerun from its
    layer, the mean NLL increase over the reference (module docstring)."""
    start = time.perf_counter()
    model = calibration.model
    stored_names = set(calibration.names)
    probe_ids = calibration.batch[:probe_windows]
    nsr, statistics, layer_inputs = {}, {}, {}
    hidden = model.embed(calibration.batch)
    with single_blas_thread():
        for layer in range(model.config.n_layers):
            inputs = {}

            def record(name, x):
                if name in stored_names:
                    inputs[name] = x
                return model.weights[name]
            layer_inputs[layer] = hidden[:probe_windows]
            output = model.layer(layer, hidden, select_weight=record)
            for name, x in inputs.items():
                statistics[name] = per_row_statistics(x)
                sample = x.reshape(-1, x.shape[-1])[::NSR_TOKEN_STRIDE]
                nsr[name] = unexplained_noise(sample, model.weights[name], lambda k: reader(name, k))
            reader.clear()
            hidden = output
        reference_nll = float(model.nll_of_final_hidden(probe_ids, model.finish(layer_inputs[0], 0)).mean())
        damage = {}
        for index, name in enumerate(calibration.names, 1):
            layer = int(name.split(".")[1])
            final = model.finish(layer_inputs[layer], layer, {name: reader(name, PROBE_K)})
            damage[name] = float(model.nll_of_final_hidden(probe_ids, final).mean()) - reference_nll
            reader.clear()
            if index % 35 == 0 or index == len(calibration.names):
                log(f"sensitivity probes: {index}/{len(calibration.names)} matrices "
                    f"({time.perf_counter() - start:.0f} s)")
    floor = probe_noise(damage)
    gains = {name: max(damage[name], floor) / max(nsr[name][PROBE_K - 1], 1e-30) for name in damage}
    return Sensitivity(nsr, gains, statistics, damage, time.perf_counter() - start, floor)


def unexplained_noise(x: np.ndarray, weights: np.ndarray, read) -> np.ndarray:
    """(B,) table over k in TABLE_KS (0 elsewhere): 1 - cos^2 between the outputs x W^T and x W_k^T, W_k = read(k).

    The output noise left after the best scalar gain: for an error orthogonal to the output it is
    NSR / (1 + NSR), about the NSR; a read that only scales the matrix (toward-zero shrinks every weight a
    little) costs nothing. Plain NSR counted that shrinkage as noise and ranked toward-zero at k = 6 no better
    than floor + correction at k = 5, so 0..2 of 210 matrices got k = 6 (measured), although static k = 6 with
    toward-zero is within 0.2 % of the reference perplexity and floor + correction 4.5 % above it."""
    y = (x @ weights.T).astype(np.float64).reshape(-1)
    signal = float(y @ y)
    table = np.zeros(B)
    for k in TABLE_KS:
        y_k = (x @ read(k).T).astype(np.float64).reshape(-1)
        table[k - 1] = max(1.0 - float(y @ y_k) ** 2 / (signal * float(y_k @ y_k)), 0.0)
    return table


def probe_noise(damage: dict) -> float:
    """The probes' resolution: the rms of the damages below zero (a probe that lowers the loss measured noise,
    not a gain), or the smallest positive damage when none is negative. Damages under it count as this floor:
    a zero gain would send the matrix to MIN_K for free."""
    negative = np.array([value for value in damage.values() if value < 0])
    if negative.size:
        return float(np.sqrt(np.mean(negative ** 2)))
    positive = [value for value in damage.values() if value > 0]
    return float(min(positive)) if positive else 1e-12


# --- the comparison ------------------------------------------------------------------------------------------
def compare(row: dict, envelope: list, B_bits: int = B) -> dict:
    """The policy row plus the static envelope at equal bits and the traffic ratio at equal perplexity."""
    static_bits = static_bits_for(envelope, row["perplexity"])
    return {**row, "of_full": row["bits_per_weight"] / B_bits,
            "static_perplexity_at_bits": static_perplexity_at(envelope, row["bits_per_weight"]),
            "static_bits_at_perplexity": static_bits,
            "traffic_ratio": None if static_bits is None else row["bits_per_weight"] / static_bits}


def run_llm_policies(budgets=DEFAULT_BUDGETS, n_windows: int = 4, window: int = 256, calibration_windows: int = 4,
                     layers=None, static_ks=STATIC_KS, log=None, closed_loop_steps: int = 3,
                     probe_windows: int = 1) -> dict:
    """The whole comparison; returns the JSON-ready result.

    layers: decoder layers whose matrices are stored and read at k (default all 30); the others stay at
    reference precision and are not counted in the bits per weight (quick looks and tests)."""
    log = log or (lambda line: None)
    if not 1 <= probe_windows <= calibration_windows:
        raise SmartquantError(f"probe windows must be in 1..{calibration_windows} (the calibration windows), "
                              f"got {probe_windows}")
    for budget in budgets:
        check_budget(budget, B)
        if budget < MIN_K:
            raise SmartquantError(f"budgets must be at least the lowest policy precision k = {MIN_K}, got {budget}")
    for k in static_ks:
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= B:
            raise SmartquantError(f"static precisions must be in 1..{B}, got {k!r}")
    start = time.perf_counter()
    names = None
    if layers is not None:
        model = smollm2.load_smollm2()
        if not layers or not all(isinstance(layer, (int, np.integer)) and 0 <= layer < model.config.n_layers
                                 for layer in layers):
            raise SmartquantError(f"layers must be indices in 0..{model.config.n_layers - 1}, got {list(layers)}")
        names = [matrix_name(layer, short) for layer in sorted(set(layers)) for short in LAYER_MATRICES]
    evaluation = llm_sweep.prepare(None, n_windows, window, names, part="test")
    calibration = llm_sweep.prepare(evaluation.model, calibration_windows, window, evaluation.names,
                                    part="background")
    sizes = {name: evaluation.model.weights[name].size for name in evaluation.names}
    with single_blas_thread():
        reference = llm_sweep.evaluate(evaluation)[0]
        calibration_reference = llm_sweep.evaluate(calibration)[0]
        log(f"reference perplexity: evaluation {reference:.3f}, calibration {calibration_reference:.3f} "
            f"({time.perf_counter() - start:.0f} s)")
        stored = store(evaluation)
        configs, calibration_rows = choose_configs(calibration, stored, TABLE_KS, log)
        static_rows = run_static(evaluation, stored, sorted(static_ks), log)
        best = {}
        for row in static_rows:
            if row["k"] not in best or row["perplexity"] < best[row["k"]]["perplexity"]:
                best[row["k"]] = row
        envelope = static_envelope([(k, row["perplexity"]) for k, row in best.items()])
        reader = Reader(stored, configs)
        sensitivity = measure_sensitivity(calibration, reader, log, probe_windows)
        weighted = {name: sensitivity.nsr[name] * sensitivity.gains[name] for name in evaluation.names}
        activation = ActivationPolicy.from_weights({name: evaluation.model.weights[name] for name in evaluation.names},
                                                   reader, B, MIN_K)
        reader.clear()
        activation.gains = sensitivity.gains
        policy_rows = []
        for budget in budgets:
            allocation = greedy_allocation(weighted, sizes, budget, B, MIN_K)
            result = evaluate_allocation(evaluation, allocation, reader)
            reader.clear()
            counts = {k: sum(1 for v in allocation.values() if v == k) for k in range(MIN_K, B + 1)}
            policy_rows.append(compare({"policy": "(a) per-matrix sensitivity", "budget": budget, **result,
                                        "matrices_per_k": counts}, envelope))
            log(f"(a) budget {budget}: {result['bits_per_weight']:.3f} bits, perplexity {result['perplexity']:.3f}")

            activation.open_loop_price(sensitivity.window_statistics, budget)

            def choose(name, x):
                return int(activation.choose(name, activation_statistics(x)))

            def calibration_bits():
                measured = evaluate_per_sequence(calibration, choose, reader)["bits_per_weight"]
                log(f"(b) budget {budget}: price {activation.price:.3g} -> {measured:.3f} bits on calibration")
                return measured
            activation.closed_loop_price(calibration_bits, budget, steps=closed_loop_steps)
            result = evaluate_per_sequence(evaluation, choose, reader)
            reader.clear()
            policy_rows.append(compare({"policy": "(b) per-sequence activation", "budget": budget, **result},
                                       envelope))
            log(f"(b) budget {budget}: {result['bits_per_weight']:.3f} bits, perplexity {result['perplexity']:.3f}")
    static_table = [compare({"policy": f"static k={k} {row['config']}", "budget": float(k), **row}, envelope)
                    for k, row in sorted(best.items())]
    return {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32 = reference)",
        "storage": llm_sweep.llm_format(FORMAT).describe(), "matrices": len(evaluation.names),
        "weights": int(sum(sizes.values())),
        "evaluation": {"text": evaluation.source, "tokens": evaluation.tokens, "reference_perplexity": reference},
        "calibration": {"text": calibration.source, "tokens": calibration.tokens,
                        "reference_perplexity": calibration_reference},
        "configs": {str(k): config_label(config) for k, config in sorted(configs.items())},
        "min_k": MIN_K, "probe_k": PROBE_K, "probe_windows": probe_windows, "envelope": envelope,
        "static_rows": static_rows, "calibration_rows": calibration_rows,
        "rows": static_table + policy_rows,
        "gains": sensitivity.gains, "probe_damage": sensitivity.probe_damage, "probe_floor": sensitivity.probe_floor,
        "nsr": {name: table.tolist() for name, table in sensitivity.nsr.items()},
        "seconds": time.perf_counter() - start,
    }


# --- output ---------------------------------------------------------------------------------------------------
def format_table(result: dict) -> str:
    from smartquant.tables import text_table
    headers = ["policy", "budget", "bits/weight", "traffic vs k=8", "perplexity", "static ppl at same bits",
               "static bits at same ppl", "traffic ratio at equal ppl"]
    cells = []
    for row in result["rows"]:
        static_ppl = row["static_perplexity_at_bits"]
        static_bits = row["static_bits_at_perplexity"]
        cells.append([row["policy"], f"{row['budget']:.2f}", f"{row['bits_per_weight']:.3f}", f"{row['of_full']:.3f}",
                      llm_sweep.perplexity_cell(row["perplexity"]),
                      "-" if static_ppl is None else llm_sweep.perplexity_cell(static_ppl),
                      "not reached" if static_bits is None else f"{static_bits:.3f}",
                      "-" if row["traffic_ratio"] is None else f"{row['traffic_ratio']:.3f}"])
    return text_table(headers, cells, left={0})

