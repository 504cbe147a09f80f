"""Quantizers and precision-k reads (workloads/quant.py): hand-worked examples, error bounds, the bit-plane codec."""
import numpy as np
import pytest

from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.workloads import quant
from smartquant.params import Rounding

RNG = np.random.default_rng(7)


def test_per_channel_int8_scale_and_error_bound():
    weights = RNG.normal(0, 0.05, size=(16, 96)).astype(np.float32)
    quantized = quant.quantize_symmetric(weights, 8)
    np.testing.assert_allclose(quantized.scales[:, 0], np.abs(weights).max(axis=1) / 127, rtol=1e-6)
    assert quantized.scales.shape == (16, 1) and quantized.group_size == 96
    assert np.abs(quantized.ints).max(axis=1).tolist() == [127] * 16   # the row peak lands on the grid edge
    error = np.abs(quantized.dequantize() - weights)
    assert np.all(error <= quantized.scale_per_weight() / 2 * (1 + 1e-5))


def test_per_group_int4_shapes_and_bound():
    weights = RNG.normal(0, 1, size=(8, 384)).astype(np.float32)
    weights[3, 130] = 40.0          # an outlier only spoils its own group's scale
    quantized = quant.quantize_symmetric(weights, 4, group_size=128)
    assert quantized.scales.shape == (8, 3) and quantized.ints.min() >= -7 and quantized.ints.max() <= 7
    np.testing.assert_allclose(quantized.scales[3, 1], 40.0 / 7, rtol=1e-6)
    assert quantized.scales[3, 0] < 1.0 and quantized.scales[3, 2] < 1.0
    error = np.abs(quantized.dequantize() - weights)
    assert np.all(error <= quantized.scale_per_weight() / 2 * (1 + 1e-5))


def test_hand_worked_int4_row():
    quantized = quant.quantize_symmetric(np.array([[0.7, -0.35, 0.1, 0.0]], dtype=np.float32), 4)
    # scale = 0.7 / 7 = 0.1; -3.5 rounds half to even -> -4
    np.testing.assert_allclose(quantized.scales, [[0.1]], rtol=1e-6)
    assert quantized.ints.tolist() == [[7, -4, 1, 0]]
    np.testing.assert_allclose(quantized.dequantize(), [[0.7, -0.4, 0.1, 0.0]], rtol=1e-5)


def test_zero_row_gets_unit_scale_and_zero_codes():
    quantized = quant.quantize_symmetric(np.zeros((2, 8), dtype=np.float32), 8, group_size=4)
    assert np.all(quantized.scales == 1.0) and np.all(quantized.ints == 0)
    assert np.all(quantized.dequantize(3, "midpoint") == 16.0)   # midpoint fill of 0 at k=3: 0b0001_0000


@pytest.mark.parametrize("bad_call", [
    lambda: quant.quantize_symmetric(np.ones((4, 6), dtype=np.float32), 8, group_size=4),   # 4 does not divide 6
    lambda: quant.quantize_symmetric(np.ones((4, 6), dtype=np.float32), 8, group_size=0),
    lambda: quant.quantize_symmetric(np.ones((4, 6), dtype=np.float32), 3),
    lambda: quant.quantize_symmetric(np.ones((4, 6), dtype=np.int32), 8),
    lambda: quant.quantize_symmetric(np.ones(6, dtype=np.float32), 8),
    lambda: quant.quantize_symmetric(np.array([[1.0, np.nan]], dtype=np.float32), 8),
    lambda: quant.read_ints_at_k(np.array([128]), 8, 4),
    lambda: quant.read_ints_at_k(np.array([1.5]), 8, 4),
    lambda: quant.read_ints_at_k(np.array([1]), 8, 0),
    lambda: quant.read_ints_at_k(np.array([1]), 8, 9),
    lambda: quant.read_ints_at_k(np.array([1]), 8, 4, "ceil"),
    lambda: quant.read_bf16_at_k(np.array([0x3F80]), 17),
    lambda: quant.storage_format("int5"),
    lambda: quant.dequantize(np.zeros((2, 4), dtype=np.int32), np.ones((2, 3), dtype=np.float32), 4),
])
def test_bad_input_is_a_clear_error(bad_call):
    with pytest.raises(SmartquantError):
        bad_call()


def test_hand_worked_reads_of_int8_at_k3():
    codes = np.array([77, -77, 127, 0])       # 0100_1101, 1011_0011, 0111_1111, 0000_0000
    assert quant.read_ints_at_k(codes, 8, 3, "floor").tolist() == [64, -96, 96, 0]
    assert quant.read_ints_at_k(codes, 8, 3, "midpoint").tolist() == [80, -80, 112, 16]
    # nearest multiple of 32 in the 3-bit range -128..96: 2.41 -> 2, -2.41 -> -2, 3.97 -> 4 clipped to 3
    assert quant.read_ints_at_k(codes, 8, 3, "nearest").tolist() == [64, -64, 96, 0]
    assert quant.read_ints_at_k(np.array([127]), 8, 2, "nearest").tolist() == [64]
    # toward zero: dropped bits copy the sign, -77 = 1011_0011 -> 1011_1111 = -65
    assert quant.read_ints_at_k(codes, 8, 3, "toward-zero").tolist() == [64, -65, 96, 0]


@pytest.mark.parametrize("B", [4, 8, 16])
def test_toward_zero_shrinks_magnitudes_within_one_step(B):
    codes = RNG.integers(-(1 << (B - 1)) + 1, 1 << (B - 1), size=4096)
    for k in range(1, B + 1):
        read = quant.read_ints_at_k(codes, B, k, "toward-zero")
        assert np.all(np.abs(read) <= np.abs(codes)) and np.all(read * codes >= 0)
        assert np.all(np.abs(codes - read) < (1 << (B - k)))
        # the dropped bits of negative codes read as ones, of the others as zeros
        low = layout.fields_from_ints(read, B) & ((1 << (B - k)) - 1)
        assert np.all(low == np.where(codes < 0, (1 << (B - k)) - 1, 0))


@pytest.mark.parametrize("B", [2, 4, 8, 16])
def test_int_reads_match_the_bit_plane_codec(B):
    codes = RNG.integers(-(1 << (B - 1)), 1 << (B - 1), size=3 * 512)
    raw = layout.encode(codes, B)
    fields = layout.fields_from_ints(codes, B)
    for k in range(1, B + 1):
        # floor: what the device's planes 0..k-1 decode to
        assert np.array_equal(quant.read_ints_at_k(codes, B, k, "floor"), layout.decode(raw, B, codes.size, k=k))
        for rule, fill in (("floor", Rounding.FLOOR), ("midpoint", Rounding.MIDPOINT)):
            expected = layout.ints_from_fields(layout.truncate(fields, B, k, fill), B)
            assert np.array_equal(quant.read_ints_at_k(codes, B, k, rule), expected), (rule, k)


@pytest.mark.parametrize("B", [4, 8])
def test_nearest_is_never_worse_than_floor(B):
    # floor reads lie on the same k-bit grid, so the nearest grid point is at least as close (midpoint reads
    # lie on a grid shifted by half a step and can be closer, e.g. 3 -> 4 vs 0 at k = 1 of INT4)
    codes = np.arange(-(1 << (B - 1)) + 1, 1 << (B - 1))
    for k in range(1, B + 1):
        step = 1 << (B - k)
        nearest = quant.read_ints_at_k(codes, B, k, "nearest")
        assert np.all(nearest % step == 0)
        assert np.all(np.abs(nearest - codes) <= np.abs(quant.read_ints_at_k(codes, B, k, "floor") - codes))
        top = ((1 << (k - 1)) - 1) * step                    # largest k-bit value; only codes above it clip
        inside = codes <= top
        assert np.all(np.abs(nearest - codes)[inside] <= step // 2)


def test_bf16_reads_hand_worked_and_bounds():
    values = np.array([1.0, 1.75, 1.25, -1.75, 0.0], dtype=np.float32)
    fields = quant.to_bf16(values)
    assert np.array_equal(fields, layout.bf16_fields(values))
    # k = 9 keeps sign + exponent: the grid is the powers of two
    np.testing.assert_array_equal(quant.read_bf16_at_k(fields, 9, "floor"), [1.0, 1.0, 1.0, -1.0, 0.0])
    # midpoint fill of +0.0 is 0x0040, a subnormal: 2**-127
    np.testing.assert_array_equal(quant.read_bf16_at_k(fields, 9, "midpoint"), [1.5, 1.5, 1.5, -1.5, 2.0 ** -127])
    np.testing.assert_array_equal(quant.read_bf16_at_k(fields, 9, "nearest"), [1.0, 2.0, 1.0, -2.0, 0.0])
    np.testing.assert_array_equal(quant.read_bf16_at_k(fields, 9, "toward-zero"), [1.0, 1.0, 1.0, -1.0, 0.0])
    weights = RNG.normal(0, 0.05, size=4096).astype(np.float32)
    fields = quant.to_bf16(weights)
    exact = layout.floats_from_bf16(fields)
    for k in range(1, 17):
        floor = quant.read_bf16_at_k(fields, k, "floor")
        nearest = quant.read_bf16_at_k(fields, k, "nearest")
        assert np.all(np.abs(floor) <= np.abs(exact)) and np.all((floor == 0) | (np.sign(floor) == np.sign(exact)))
        assert np.all(np.abs(nearest - exact) <= np.abs(floor - exact))
        assert np.all(np.isfinite(nearest))
    assert np.array_equal(quant.read_bf16_at_k(fields, 16, "midpoint"), exact)


def test_stored_matrix_reads_at_full_precision_equal_the_quantizer():
    weights = RNG.normal(0, 0.05, size=(4, 256)).astype(np.float32)
    int4 = quant.StoredMatrix(weights, quant.STORAGE_FORMATS["int4"])
    assert int4.n_weights == 1024
    np.testing.assert_array_equal(int4.read(), quant.quantize_symmetric(weights, 4, 128).dequantize())
    bf16 = quant.StoredMatrix(weights, quant.STORAGE_FORMATS["bf16"])
    np.testing.assert_array_equal(bf16.read(), layout.floats_from_bf16(layout.bf16_fields(weights)))


def test_snr_db_hand_worked():
    assert quant.snr_db([3.0, 4.0], [3.0, 4.0]) == float("inf")
    assert quant.snr_db([3.0, 4.0], [3.0, 3.0]) == pytest.approx(10 * np.log10(25.0))
    assert quant.snr_db([3.0, 4.0], [3.0, 3.0], signal_power=25.0) == pytest.approx(13.9794, abs=1e-4)
