"""Context-dependent precision policies: which k to read each weight matrix at, judged as traffic vs accuracy.

Both policies are fitted on CALIBRATION_SENTENCES and evaluated on the sweep's SENTENCES (disjoint), against
every static k of the same storage format and read rule. A budget is an average number of bits fetched per
weight (static k = budget k fetches exactly that).

(a) `greedy_allocation` (per matrix, fixed): each of the 36 matrices gets its own k. Sensitivity is the
    matrix's output noise-to-signal ratio on its real FP32 calibration inputs X:
    NSR_m(k) = ||X (W - W_k)^T||^2 / ||X W^T||^2. Starting from k = 1 everywhere, the step (matrix m, k -> k')
    with the largest drop of sum_m gain_m NSR_m per extra bit fetched is taken while it fits the budget
    (looking ahead over all k' > k, so a step that only pays off after two bits is still found). gain_m
    (`embedding_gains`) is the embedding damage per unit NSR of matrix m, probed with m alone at k = B/2;
    unweighted (all gains 1) the allocation was worse than static k with the toward-zero fill (measured).
(b) `ActivationPolicy` (per input): k is chosen per sentence (a token batch) and per matrix, at run time, from
    two statistics of the input x the matrix is about to multiply (known before its weights are fetched):
    channel energies e_j = mean over tokens of x_j^2, and s = mean over tokens of (sum_j x_j)^2. Per-matrix
    tables computed offline from E = W - W_k split into row means and the row-centred rest E_c (likewise W):
    err_k[j] = ||column j of E_c||^2, bias_k = ||row means of E||^2 (floor and midpoint fills shift a whole
    row the same way, so that error adds up with sum(x)). Predicted output NSR =
    (e . err_k + s bias_k) / (e . sig + s sig_bias), weighted by (a)'s gain_m;
    the policy reads the k minimising predicted NSR + price x bits fetched (the Lagrangian form of (a)'s
    equal gain per bit). Inputs whose energy sits on channels where the truncated weights are poor get more
    bits. The price is set by bisection on the calibration sentences (closed loop: each sentence run with the
    weights the policy picks) so that their average bits per weight meet the budget; on new sentences the
    average can differ slightly (reported as measured).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.workloads import quant
from smartquant.workloads.minilm import LAYER_MATRICES, cosine
from smartquant.workloads.sweep import SweepContext, bytes_fetched, prepare, progress_bar, single_blas_thread
from smartquant.tables import text_table

CALIBRATION_SENTENCES = (
    "A small dog barked at the delivery van parked outside the house.",
    "The committee approved the budget after a long and heated debate.",
    "How many planes does a memory controller read for a four-bit weight?",
    "Photosynthesis converts light energy into chemical energy stored in sugars.",
    "He forgot his umbrella, and of course it started to pour.",
    "Compilers translate high-level source code into machine instructions.",
)

DEFAULT_BUDGETS = (4.0, 5.0, 6.0, 7.0)


def check_budget(budget: float, B: int) -> None:
    if not isinstance(budget, (int, float)) or not 1.0 <= budget <= B:
        raise SmartquantError(f"a budget is the average bits per weight, in 1..{B} for B = {B}; got {budget!r}")


def matrix_inputs(context: SweepContext) -> dict:
    """name -> FP32 input rows (tokens, in) of every swept matrix on the context's real tokens."""
    real = context.batch.attention_mask > 0
    inputs = {}
    for layer in context.layers():
        taps = {}
        context.model.layer(layer, context.states[layer], context.batch.attention_mask, taps=taps)
        for short, x in taps.items():
            inputs[f"encoder.layer.{layer}.{LAYER_MATRICES[short]}.weight"] = x[real]
    return inputs


def output_nsr(context: SweepContext, fmt_name: str, rule: str, progress: bool = False) -> dict:
    """name -> array over k = 1..B of the matrix's output noise-to-signal ratio on the context's inputs."""
    inputs = matrix_inputs(context)
    stored = context.stored(fmt_name)
    B = quant.storage_format(fmt_name).bits
    table = {}
    for name in progress_bar(context.names, len(context.names), "sensitivity", progress):
        weights = context.model.weights[name]
        signal = float(np.sum((inputs[name] @ weights.T).astype(np.float64) ** 2))
        table[name] = np.array([
            float(np.sum((inputs[name] @ (weights - stored[name].read(k, rule)).T).astype(np.float64) ** 2)) / signal
            for k in range(1, B + 1)])
    return table


def embedding_gains(context: SweepContext, nsr: dict, weights: "WeightCache", probe_k: int) -> dict:
    """name -> embedding damage per unit of the matrix's output NSR.

    Matrices matter unequally (an error early or in attention scores travels further): matrix m alone is read
    at probe_k, the rest FP32, and gain_m = mean(1 - embedding cosine) / NSR_m(probe_k). Weighting NSR_m by
    gain_m turns the sum minimised by the policies into an additive estimate of embedding damage.
    """
    gains = {}
    for name in context.names:
        hidden = context.model.hidden_states(context.batch, {name: weights(name, probe_k)})[-1]
        damage = float(np.mean(1.0 - cosine(context.model.pool(hidden, context.batch.attention_mask),
                                            context.embeddings)))
        gains[name] = max(damage, 0.0) / max(float(nsr[name][probe_k - 1]), 1e-30)
    return gains


def greedy_allocation(nsr: dict, sizes: dict, budget: float, B: int, min_k: int = 1) -> dict:
    """name -> k in min_k..B: minimise sum of NSR under total bits <= budget * total weights (module docstring).

    nsr[name][k - 1] is the (weighted) noise of the matrix read at k; entries below min_k are never used."""
    check_budget(budget, B)
    if budget < min_k:
        raise SmartquantError(f"a budget of {budget} bits per weight is below the lowest precision k = {min_k}")
    names = list(nsr)
    total_bits = int(np.floor(budget * sum(sizes[name] for name in names)))
    precision = {name: min_k for name in names}
    spent = sum(sizes[name] for name in names) * min_k
    while True:
        best = None
        for name in names:
            k = precision[name]
            for target in range(k + 1, B + 1):
                extra = sizes[name] * (target - k)
                if spent + extra > total_bits:
                    break
                gain = (nsr[name][k - 1] - nsr[name][target - 1]) / extra
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, name, target, extra)
        if best is None:
            return precision
        _, name, target, extra = best
        precision[name] = target
        spent += extra


@dataclass
class ActivationPolicy:
    """Per-input precision from the input's activation statistics (module docstring, policy (b))."""
    error_columns: dict    # name -> (B, in) column energy of the row-centred weight error at k = 1..B
    error_bias: dict       # name -> (B,) energy of the per-row mean weight error at k = 1..B
    signal_columns: dict   # name -> (in,) column energy of the row-centred FP32 weights
    signal_bias: dict      # name -> energy of the per-row means of the FP32 weights
    sizes: dict            # name -> weights in the matrix
    B: int
    gains: dict | None = None   # name -> model damage per unit NSR (e.g. embedding_gains); None = all 1
    price: float = 1e-9    # NSR units per bit fetched: the Lagrange multiplier set by `calibrate`
    min_k: int = 1         # the lowest precision the policy may choose

    @classmethod
    def fit_tables(cls, context: SweepContext, fmt_name: str, rule: str) -> "ActivationPolicy":
        stored = context.stored(fmt_name)
        return cls.from_weights({name: context.model.weights[name] for name in context.names},
                                lambda name, k: stored[name].read(k, rule), quant.storage_format(fmt_name).bits)

    @classmethod
    def from_weights(cls, reference: dict, read, B: int, min_k: int = 1) -> "ActivationPolicy":
        """Tables from the reference weights {name: (out, in)} and read(name, k), the weights the host uses at k
        (any model, fill rule or correction); rows for k below min_k stay 0 (`choose` never picks them)."""
        error_columns, error_bias, signal_columns, signal_bias = {}, {}, {}, {}
        for name, matrix in reference.items():
            weights = matrix.astype(np.float64)
            centred, means = split_row_means(weights)
            signal_columns[name] = np.sum(centred ** 2, axis=0)
            signal_bias[name] = float(np.sum(means ** 2))
            columns = np.zeros((B, weights.shape[1]))
            bias = np.zeros(B)
            for k in range(min_k, B + 1):
                centred, means = split_row_means(weights - read(name, k))
                columns[k - 1] = np.sum(centred ** 2, axis=0)
                bias[k - 1] = float(np.sum(means ** 2))
            error_columns[name], error_bias[name] = columns, bias
        sizes = {name: matrix.size for name, matrix in reference.items()}
        return cls(error_columns, error_bias, signal_columns, signal_bias, sizes, B, min_k=min_k)

    def predicted_nsr(self, name: str, statistics: tuple) -> np.ndarray:
        """Predicted output NSR (times the matrix's gain, if set) at k = 1..B from (channel energies (..., in), mean squared channel sum (...,)).

        W x = W_c x + w_mean * sum(x) with W_c the row-centred W; the two parts are treated as uncorrelated and
        the columns of W_c as uncorrelated (quantization noise is nearly white, but floor and midpoint fills
        bias every weight of a row the same way, which only the sum(x) term captures).
        """
        energy, square_of_sum = statistics
        signal = energy @ self.signal_columns[name] + square_of_sum * self.signal_bias[name]
        noise = energy @ self.error_columns[name].T + np.multiply.outer(square_of_sum, self.error_bias[name])
        gain = 1.0 if self.gains is None else self.gains[name]
        return gain * noise / np.maximum(signal, 1e-30)[..., None]

    def choose(self, name: str, statistics: tuple, price: float | None = None) -> np.ndarray:
        """k minimising predicted NSR + price * bits fetched (equal marginal gain per bit, as greedy (a))."""
        price = self.price if price is None else price
        bits = self.sizes[name] * np.arange(self.min_k, self.B + 1)
        cost = self.predicted_nsr(name, statistics)[..., self.min_k - 1:] + price * bits
        return np.argmin(cost, axis=-1) + self.min_k

    def calibrate(self, context: SweepContext, budget: float, weights: "WeightCache | None" = None) -> float:
        """Lowest price whose average bits per weight on the context's sentences stay within the budget.

        First open loop, from the FP32 activations (cheap, exact bisection); then, given `weights`, closed loop:
        each sentence run through the weights the policy picks, whose activations differ from FP32 enough to
        overshoot a 4-bit budget by ~9% open loop (measured: 4.35 bits on the calibration sentences).
        """
        price = self.open_loop_price(per_sentence_statistics(context), budget)
        if weights is None:
            return price
        total = sum(self.sizes[name] for name in context.names)
        return self.closed_loop_price(
            lambda: evaluate_per_input(context, self, weights)["bytes_fetched"] * 8 / total, budget)

    def closed_loop_price(self, measured_bits, budget: float, steps: int = 8) -> float:
        """Lowest price (from the current one, log-space bisection in `steps` runs) at which measured_bits(),
        the average bits per weight of the calibration inputs run with the weights the policy picks at
        self.price, stay within the budget; sets and returns it."""
        def bits_at(price: float) -> float:
            self.price = price
            return measured_bits()
        low = high = self.price
        if bits_at(high) <= budget:
            low = high / 4
        else:
            for _ in range(6):
                high *= 4
                if bits_at(high) <= budget:
                    break
            else:
                raise SmartquantError(f"no price keeps the per-input policy within {budget} bits per weight")
        for _ in range(steps):     # log-space bisection between a price over budget and one within it
            middle = np.sqrt(low * high)
            low, high = (middle, high) if bits_at(middle) > budget else (low, middle)
        self.price = high
        return high

    def open_loop_price(self, statistics: dict, budget: float) -> float:
        """Lowest price whose choices on given input statistics ({name: (energies (n, in), square sums (n,))},
        n inputs, e.g. from the reference activations) average at most `budget` bits per weight; sets it."""
        check_budget(budget, self.B)
        if budget < self.min_k:
            raise SmartquantError(f"a budget of {budget} bits per weight is below the lowest precision k = {self.min_k}")
        total = sum(self.sizes[name] for name in statistics)

        def average_bits(price: float) -> float:
            return sum(self.sizes[name] * self.choose(name, stats, price).mean()
                       for name, stats in statistics.items()) / total
        low, high = 1e-24, 1e6     # prices: everything at k = B .. everything at k = min_k
        if average_bits(high) > budget:
            raise SmartquantError(f"budget {budget} bits is below what any price reaches")
        for _ in range(100):       # bisection in log space; average_bits falls as the price rises
            middle = np.sqrt(low * high)
            low, high = (middle, high) if average_bits(middle) > budget else (low, middle)
        self.price = high
        return high


def split_row_means(weights: np.ndarray) -> tuple:
    means = weights.mean(axis=1, keepdims=True)
    return weights - means, means


def activation_statistics(x: np.ndarray, mask: np.ndarray | None = None) -> tuple:
    """(mean x_j^2 over tokens (in,), mean (sum_j x_j)^2 over tokens) of one token batch x (T, in)."""
    x = x.reshape(-1, x.shape[-1]).astype(np.float64)
    if mask is not None:
        x = x[mask.reshape(-1) > 0]
    return np.mean(x ** 2, axis=0), float(np.mean(x.sum(axis=1) ** 2))


def per_row_statistics(x: np.ndarray, mask: np.ndarray | None = None) -> tuple:
    """(energies (n, in), square sums (n,)): activation_statistics of each row (sentence, window) of x (n, T, in)."""
    per_row = [activation_statistics(x[row], None if mask is None else mask[row]) for row in range(x.shape[0])]
    return np.stack([energy for energy, _ in per_row]), np.array([square for _, square in per_row])


def per_sentence_statistics(context: SweepContext) -> dict:
    """name -> (energies (sentences, in), square sums (sentences,)) of each matrix's FP32 input per sentence."""
    mask = context.batch.attention_mask
    statistics = {}
    for layer in context.layers():
        taps = {}
        context.model.layer(layer, context.states[layer], mask, taps=taps)
        for short, x in taps.items():
            statistics[f"encoder.layer.{layer}.{LAYER_MATRICES[short]}.weight"] = per_row_statistics(x, mask)
    return statistics


class WeightCache:
    """Weights of each (matrix, k) read once and reused across sentences."""

    def __init__(self, context: SweepContext, fmt_name: str, rule: str):
        self.stored = context.stored(fmt_name)
        self.rule = rule
        self.cache = {}

    def __call__(self, name: str, precision_k: int) -> np.ndarray:
        key = (name, int(precision_k))
        if key not in self.cache:
            self.cache[key] = self.stored[name].read(int(precision_k), self.rule)
        return self.cache[key]


def evaluate_allocation(context: SweepContext, allocation: dict, weights: WeightCache) -> dict:
    """Embedding cosine and bytes of one fixed per-matrix allocation on the context's sentences."""
    matrices = {name: weights(name, k) for name, k in allocation.items()}
    embeddings = context.model.pool(context.model.hidden_states(context.batch, matrices)[-1],
                                    context.batch.attention_mask)
    cosines = cosine(embeddings, context.embeddings)
    fetched = sum(bytes_fetched(context.model.weights[name].size, k) for name, k in allocation.items())
    return {"bytes_fetched": float(fetched), "embedding_cos_mean": float(cosines.mean()),
            "embedding_cos_min": float(cosines.min())}


def evaluate_per_input(context: SweepContext, policy: ActivationPolicy, weights: WeightCache) -> dict:
    """Run every sentence alone, each matrix read at the k the policy picks from that sentence's own input."""
    cosines, fetched = [], []
    for row in range(len(context.batch)):
        batch = context.batch.select([row])
        spent = [0]

        def select_weight(name, x):
            if name not in policy.sizes:        # not swept (a partial context): stays FP32, not counted
                return context.model.weights[name]
            k = int(policy.choose(name, activation_statistics(x)))
            spent[0] += bytes_fetched(context.model.weights[name].size, k)
            return weights(name, k)
        hidden = context.model.hidden_states(batch, select_weight=select_weight)[-1]
        embedding = context.model.pool(hidden, batch.attention_mask)[0]
        cosines.append(float(cosine(embedding, context.embeddings[row])))
        fetched.append(spent[0])
    n_weights = sum(context.model.weights[name].size for name in context.names)
    return {"bytes_fetched": float(np.mean(fetched)), "embedding_cos_mean": float(np.mean(cosines)),
            "embedding_cos_min": float(np.min(cosines)),
            "sentence_bits": (min(fetched) * 8 / n_weights, max(fetched) * 8 / n_weights)}


def run_policies(fmt_name: str = "int8", rule: str = "floor", budgets=DEFAULT_BUDGETS,
                 evaluation: SweepContext | None = None, calibration: SweepContext | None = None,
                 progress: bool = True) -> list:
    """Rows: every static k, then policy (a) and (b) at each budget; bytes are per forward of one sentence set."""
    fmt = quant.storage_format(fmt_name)
    quant.check_rule(rule)
    for budget in budgets:
        check_budget(budget, fmt.bits)
    with single_blas_thread():
        evaluation = prepare() if evaluation is None else evaluation
        calibration = prepare(CALIBRATION_SENTENCES, evaluation.model) if calibration is None else calibration
        sizes = {name: evaluation.model.weights[name].size for name in evaluation.names}
        n_weights = sum(sizes.values())
        weights = WeightCache(evaluation, fmt_name, rule)
        calibration._stored = evaluation._stored       # same stored weights, quantized once
        rows = []

        def row(policy, budget, allocation_bits, result):
            return {"policy": policy, "format": fmt_name, "rule": rule, "budget_bits": budget,
                    "bits_per_weight": allocation_bits, "k_over_B": allocation_bits / fmt.bits, **result}

        for k in progress_bar(range(1, fmt.bits + 1), fmt.bits, "static k", progress):
            result = evaluate_allocation(evaluation, {name: k for name in evaluation.names}, weights)
            rows.append(row(f"static k={k}", float(k), float(k), result))
        nsr = output_nsr(calibration, fmt_name, rule, progress)
        calibration_weights = WeightCache(calibration, fmt_name, rule)
        gains = embedding_gains(calibration, nsr, calibration_weights, max(1, fmt.bits // 2))
        weighted_nsr = {name: nsr[name] * gains[name] for name in nsr}
        activation = ActivationPolicy.fit_tables(evaluation, fmt_name, rule)
        activation.gains = gains
        for budget in progress_bar(budgets, len(budgets), "policies", progress):
            allocation = greedy_allocation(weighted_nsr, sizes, budget, fmt.bits)
            result = evaluate_allocation(evaluation, allocation, weights)
            rows.append(row("(a) per-matrix greedy", budget, result["bytes_fetched"] * 8 / n_weights, result))
            activation.calibrate(calibration, budget, calibration_weights)
            result = evaluate_per_input(evaluation, activation, weights)
            rows.append(row("(b) per-input activation", budget, result["bytes_fetched"] * 8 / n_weights, result))
        return rows


POLICY_COLUMNS = ("policy", "budget_bits", "bits_per_weight", "sentence_bits", "k_over_B", "bytes_fetched",
                  "embedding_cos_mean", "embedding_cos_min")


def format_policy_table(rows) -> str:
    headers = {"policy": "policy", "budget_bits": "budget bits", "bits_per_weight": "bits/weight",
               "sentence_bits": "per-sentence bits", "k_over_B": "of B",
               "bytes_fetched": "MB/forward", "embedding_cos_mean": "emb cos", "embedding_cos_min": "emb cos min"}

    def cell(row, column):
        value = row.get(column)
        if column == "policy":
            return value
        if column == "sentence_bits":
            return "" if value is None else f"{value[0]:.2f}-{value[1]:.2f}"
        if column == "bytes_fetched":
            return f"{value / 1e6:.2f}"
        if column.startswith("embedding"):
            return f"{value:.5f}"
        return f"{value:.3f}" if column == "k_over_B" else f"{value:.2f}"
    cells = [[cell(row, c) for c in POLICY_COLUMNS] for row in rows]
    titles = [headers[c] for c in POLICY_COLUMNS]
    return text_table(titles, cells)
