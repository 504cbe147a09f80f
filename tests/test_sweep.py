"""Precision sweep and precision policies (workloads/sweep.py, workloads/policies.py) and the golden/demo CLI.

The sweep runs on two sentences with layers 0 and 3 quantized (the rest FP32) to stay fast; the full sweep is
`smartquant golden sweep`.
"""
import csv
from fractions import Fraction

import numpy as np
import pytest

from smartquant.cli import main
from smartquant.workloads import policies, quant, sweep
from smartquant.workloads.minilm import load_minilm

LAYERS = (1,)


@pytest.fixture(scope="module")
def context():
    return sweep.prepare(sweep.SENTENCES[:2], load_minilm(), layers=LAYERS)


@pytest.fixture(scope="module")
def rows(context):
    def run(formats, rules, ks):
        return sweep.run_sweep(formats, rules, ks, context=context, progress=False)
    return (run(("int8", "int4"), ("floor", "midpoint", "toward-zero", "nearest"),
                {"int8": range(2, 9), "int4": range(2, 5)})
            + run(("bf16",), ("floor",), {"bf16": range(1, 17)})
            + run(("bf16",), ("midpoint", "nearest"), {"bf16": range(9, 17)}))


def select(rows, fmt, rule):
    return sorted((r for r in rows if r["format"] == fmt and r["rule"] == rule), key=lambda r: r["k"])


def test_bytes_fetched_are_exactly_k_of_B(context, rows):
    n_weights = sum(load_minilm().weights[name].size for name in context.names)
    assert n_weights == len(LAYERS) * (4 * 384 * 384 + 2 * 384 * 1536)
    for row in rows:
        assert row["bytes_fetched"] * 8 == n_weights * row["k"]
        assert Fraction(row["bytes_fetched"] * 8, n_weights * row["B"]) == Fraction(row["k"], row["B"])
        assert row["k_over_B"] == row["k"] / row["B"]


@pytest.mark.parametrize("fmt, rule, first_k", [
    ("int8", "floor", 3), ("int8", "midpoint", 3), ("int8", "toward-zero", 3), ("int8", "nearest", 3),
    ("int4", "floor", 3), ("int4", "midpoint", 3), ("int4", "toward-zero", 3), ("int4", "nearest", 3),
    ("bf16", "floor", 9), ("bf16", "midpoint", 9), ("bf16", "nearest", 9),
])
def test_accuracy_rises_with_precision(rows, fmt, rule, first_k):
    points = [r for r in select(rows, fmt, rule) if r["k"] >= first_k]
    assert [r["k"] for r in points] == list(range(first_k, quant.STORAGE_FORMATS[fmt].bits + 1))
    for metric in ("snr_db_mean", "layer_cos_mean", "embedding_cos_mean"):
        values = [r[metric] for r in points]
        assert all(b > a for a, b in zip(values, values[1:])), (metric, values)


@pytest.mark.parametrize("fmt, rule", [("int8", "floor"), ("int4", "floor"), ("bf16", "floor"),
                                       ("int8", "toward-zero"), ("int4", "toward-zero")])
def test_truncation_snr_never_falls_for_any_k(rows, fmt, rule):
    # truncation (floor, toward zero) keeps more of each weight's own bits as k grows: every weight's error
    # shrinks or stays, so every matrix's SNR does too, even while BF16 loses exponent bits (there the layer
    # and embedding cosines wobble)
    points = select(rows, fmt, rule)
    for name in points[0]["snr_db_per_matrix"]:
        values = [r["snr_db_per_matrix"][name] for r in points]
        assert all(b >= a for a, b in zip(values, values[1:])), (name, values)


def test_full_precision_rows_match_an_independent_quantize_dequantize(context, rows):
    model = load_minilm()
    int8 = select(rows, "int8", "floor")[-1]
    expected = [quant.snr_db(model.weights[n], quant.quantize_symmetric(model.weights[n], 8).dequantize())
                for n in context.names]
    assert int8["snr_db_mean"] == pytest.approx(np.mean(expected), rel=1e-6)
    assert select(rows, "bf16", "floor")[-1]["embedding_cos_min"] > 0.9999
    assert 35 < int8["snr_db_min"] < 50          # 8-bit symmetric: ~6 dB per bit minus the row peak factor


def test_table_and_csv(rows, tmp_path):
    table = sweep.format_table(rows)
    lines = table.splitlines()
    assert len(lines) == len(rows) + 2 and len({len(line) for line in lines}) == 1
    path = tmp_path / "sweep.csv"
    sweep.write_csv(rows, path)
    with open(path) as handle:
        read = list(csv.DictReader(handle))
    assert len(read) == len(rows) and list(read[0]) == list(sweep.COLUMNS)
    assert float(read[5]["embedding_cos_mean"]) == pytest.approx(rows[5]["embedding_cos_mean"])


def test_greedy_allocation_hand_worked():
    nsr = {"a": np.array([1.0, 0.5, 0.25]), "b": np.array([1.0, 0.1, 0.01])}
    sizes = {"a": 1, "b": 1}
    # 4 bits: start at 1 + 1; b's first bit gains 0.9, then a's first bit (0.5) beats b's second (0.09)
    assert policies.greedy_allocation(nsr, sizes, 2.0, 3) == {"a": 2, "b": 2}
    assert policies.greedy_allocation(nsr, sizes, 1.5, 3) == {"a": 1, "b": 2}
    assert policies.greedy_allocation(nsr, sizes, 3.0, 3) == {"a": 3, "b": 3}
    with pytest.raises(Exception, match="budget"):
        policies.greedy_allocation(nsr, sizes, 0.5, 3)


def test_policies_respect_their_budgets(context):
    calibration = sweep.prepare(policies.CALIBRATION_SENTENCES[:2], load_minilm(), layers=LAYERS)
    calibration._stored = context._stored
    sizes = {name: load_minilm().weights[name].size for name in context.names}
    nsr = policies.output_nsr(calibration, "int8", "floor")
    assert all(np.all(np.diff(table) < 0) for table in nsr.values())   # more planes, less output noise
    activation = policies.ActivationPolicy.fit_tables(context, "int8", "floor")
    statistics = policies.per_sentence_statistics(calibration)
    weights = policies.WeightCache(context, "int8", "floor")
    static5 = policies.evaluate_allocation(context, {name: 5 for name in context.names}, weights)
    for budget in (4.0, 5.5):
        allocation = policies.greedy_allocation(nsr, sizes, budget, 8)
        assert sum(sizes[n] * k for n, k in allocation.items()) <= budget * sum(sizes.values())
        assert sum(sizes[n] * k for n, k in allocation.items()) > (budget - 0.5) * sum(sizes.values())
        activation.calibrate(calibration, budget)
        chosen_bits = sum(sizes[n] * activation.choose(n, statistics[n]).sum() for n in context.names)
        assert chosen_bits <= budget * sum(sizes.values()) * len(calibration.batch)
    closed_loop = policies.WeightCache(calibration, "int8", "floor")
    gains = policies.embedding_gains(calibration, nsr, closed_loop, 4)
    assert set(gains) == set(context.names) and all(0 < g < np.inf for g in gains.values())
    activation.gains = gains
    activation.calibrate(calibration, 5.0, closed_loop)
    measured = policies.evaluate_per_input(calibration, activation, closed_loop)
    assert 4.5 * sum(sizes.values()) <= measured["bytes_fetched"] * 8 <= 5.0 * sum(sizes.values())
    # a higher price per bit never buys more bits
    name = context.names[0]
    cheap, dear = (activation.choose(name, statistics[name], price) for price in (1e-12, 1e-6))
    assert np.all(dear <= cheap)
    per_matrix = policies.evaluate_allocation(context, policies.greedy_allocation(nsr, sizes, 5.0, 8), weights)
    assert per_matrix["bytes_fetched"] == static5["bytes_fetched"]


def run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:      # argparse rejects bad choices itself, with exit code 2
        code = stop.code
    return code, capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["golden", "sweep", "--format", "int5"], "invalid choice"),
    (["golden", "sweep", "--rounding", "ceil"], "invalid choice"),
    (["golden", "sweep", "--k", "0"], "precisions in 1..B"),
    (["golden", "sweep", "--k", "x"], "comma list"),
    (["golden", "sweep", "--csv", "/nonexistent-dir/x.csv"], "cannot write CSV"),
    (["golden", "policies", "--budgets", "0.5"], "budget"),
    (["golden", "policies", "--budgets", "4,nine"], "comma list"),
    (["golden", "policies", "--format", "int4", "--budgets", "5"], "in 1..4"),
    (["golden"], "required"),
    (["demo", "--csv", "/nonexistent-dir/x.csv"], "cannot write CSV"),
])
def test_cli_bad_input_exits_2_with_a_message(argv, message, capsys):
    code, captured = run_cli(argv, capsys)
    assert code == 2 and message in captured.err and "Traceback" not in captured.err


def test_cli_sweep_prints_a_table_and_csv(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    code, captured = run_cli(["golden", "sweep", "--format", "int4", "--rounding", "midpoint", "--k", "4,9",
                              "--csv", str(path), "--no-progress"], capsys)
    assert code == 0
    assert "INT4 symmetric per-group 128" in captured.out and "midpoint" in captured.out
    with open(path) as handle:
        assert [row["k"] for row in csv.DictReader(handle)] == ["4"]
