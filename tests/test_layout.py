"""Golden bit-plane codec (golden/layout.py) against hand-worked bytes, the _reference_* per-bit formulation
and numpy's own storage of the weights (docs/DEVICE.md sections 1-3)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from smartquant import cli
from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.params import Format, Rounding, View

INT_DTYPE = {2: np.int8, 4: np.int8, 8: np.int8, 16: np.int16}


def random_ints(rng: np.random.Generator, B: int, n: int) -> np.ndarray:
    return rng.integers(-(1 << (B - 1)), 1 << (B - 1), n).astype(INT_DTYPE[B])


def numpy_storage(values: np.ndarray, B: int) -> bytes:
    """How numpy stores B-bit ints (docs/DEVICE.md weight-major): int8/int16 bytes, INT4/INT2 low bits first."""
    if B in (8, 16):
        return values.astype(INT_DTYPE[B]).astype(f"<i{B // 8}").tobytes()
    per_byte = 8 // B
    fields = (values.astype(np.int64) & ((1 << B) - 1)).reshape(-1, per_byte)
    return (fields << (np.arange(per_byte) * B)).sum(axis=1).astype(np.uint8).tobytes()


# --- hand-worked examples (W = 64: 8-byte lines) -----------------------------------------------------------
HAND_WEIGHTS = np.zeros(64, dtype=np.int8)
HAND_WEIGHTS[[0, 1, 2, 3, 9]] = [1, -1, -8, 7, -1]      # INT4 patterns 0001 1111 1000 0111, and 1111


def test_int4_planes_by_hand():
    raw = layout.encode(HAND_WEIGHTS, 4, W=64)
    expected = np.zeros((4, 8), dtype=np.uint8)
    # plane 0 = sign bits: weights 1, 2, 9; plane 1 and 2: weights 1, 3, 9; plane 3 = bit 0: weights 0, 1, 3, 9
    expected[:, 0] = [0b0110, 0b1010, 0b1010, 0b1011]
    expected[:, 1] = 0b10                                 # weight 9 = bit 1 of byte 1 in every plane
    assert raw.tolist() == expected.tolist()
    assert layout.decode(raw, 4, 64).tolist() == HAND_WEIGHTS.tolist()


def test_packed_k3_line_bit_by_bit():
    raw = layout.encode(HAND_WEIGHTS, 4, W=64)
    lines = layout.view_lines(raw, 4, 1, View.PACKED_K, 3, 0, 4)
    # top 3 bits: w0 000, w1 111 at stream bits 3..5, w2 100 (bit 8), w3 011 (bits 9, 10), w9 111 at bits 27..29
    assert lines[0].tolist() == [0b00111000, 0b00000111, 0, 0b00111000, 0, 0, 0, 0]
    assert lines[1:3].tolist() == [[0] * 8, [0] * 8]      # 64 zeros weights past w9: the rest of the stream
    assert lines[3].tolist() == [0] * 8                   # j = 3 >= k: unmapped, answered with data 0
    assert layout.view_line_mapped(4, View.PACKED_K, 3, 0, 4).tolist() == [True, True, True, False]


def test_expanded_fill_by_hand():
    weights = np.zeros(64, dtype=np.int8)
    weights[:2] = [-1, 5]                                  # 1111_1111 and 0000_0101
    raw = layout.encode(weights, 8, W=64)
    floor = layout.view_lines(raw, 8, 1, View.EXPANDED_K, 3, 0, 1, rounding=Rounding.FLOOR)
    midpoint = layout.view_lines(raw, 8, 1, View.EXPANDED_K, 3, 0, 1, rounding=Rounding.MIDPOINT)
    assert floor[0, :3].tolist() == [0b1110_0000, 0b0000_0000, 0]
    assert midpoint[0, :3].tolist() == [0b1111_0000, 0b0001_0000, 0b0001_0000]   # fill 10000 after 3 bits
    assert layout.fill_pattern(8, 3, Rounding.MIDPOINT) == 0b10000
    assert layout.fill_pattern(8, 8, Rounding.MIDPOINT) == 0


def test_toward_zero_fill_by_hand():
    weights = np.zeros(64, dtype=np.int8)
    weights[:3] = [-1, 5, -100]                            # 1111_1111, 0000_0101, 1001_1100
    raw = layout.encode(weights, 8, W=64)
    toward_zero = layout.view_lines(raw, 8, 1, View.EXPANDED_K, 3, 0, 1, rounding=Rounding.TOWARD_ZERO)
    # top 3 bits kept, the 5 dropped bits copy the sign: 111_11111, 000_00000, 100_11111 (-97, nearer 0 than -128)
    assert toward_zero[0, :4].tolist() == [0b1111_1111, 0b0000_0000, 0b1001_1111, 0]
    # BF16 is sign-magnitude: dropping bits already truncates toward zero, the fill is 0..0 even for negatives
    bf16 = layout.bf16_fields(np.array([-1.5, 3.25], dtype=np.float32))      # 0xBFC0, 0x4050
    assert layout.truncate(bf16, 16, 9, Rounding.TOWARD_ZERO, Format.BF16).tolist() == [0xBF80, 0x4000]
    assert layout.truncate(bf16, 16, 9, Rounding.TOWARD_ZERO, Format.INT).tolist() == [0xBFFF, 0x4000]


@settings(max_examples=30, deadline=None)
@given(B=st.sampled_from([2, 4, 8, 16]), k=st.integers(1, 16), seed=st.integers(0, 2**32 - 1))
def test_property_toward_zero_fill_is_the_quant_rule(B, k, seed):
    """layout.truncate(TOWARD_ZERO) and workloads/quant.py's "toward-zero" read rule are the same numbers."""
    from smartquant.workloads import quant
    k = min(k, B)
    rng = np.random.default_rng(seed)
    values = random_ints(rng, B, 512)
    device = layout.ints_from_fields(layout.truncate(layout.fields_from_ints(values, B), B, k,
                                                     Rounding.TOWARD_ZERO), B)
    assert np.array_equal(device, quant.read_ints_at_k(values.astype(np.int32), B, k, "toward-zero"))
    floats = rng.normal(0, 3, 512).astype(np.float32)
    fields = layout.bf16_fields(floats)
    k16 = min(16, 2 * k)
    assert np.array_equal(layout.floats_from_bf16(layout.truncate(fields, 16, k16, Rounding.TOWARD_ZERO, Format.BF16)),
                          quant.read_bf16_at_k(fields, k16, "toward-zero"))


def test_raw_line_index_and_plane_runs_by_hand():
    assert layout.raw_line_index(1, 2, 1, 4, 2) == 1 * 2 * 4 + 2 * 2 + 1 == 13
    weights = np.zeros(4 * 64, dtype=np.int8)
    weights[3 * 64] = -1                                  # block 3 = superblock 1, slot 1 (R = 2), all planes set
    raw = layout.encode(weights, 4, R=2, W=64)
    set_lines = [line for line in range(raw.shape[0]) if raw[line].any()]
    assert set_lines == [layout.raw_line_index(1, p, 1, 4, 2) for p in range(4)] == [9, 11, 13, 15]
    assert all(raw[line].tolist() == [1, 0, 0, 0, 0, 0, 0, 0] for line in set_lines)


def test_bf16_planes_by_hand():
    # 1.0 = 0x3F80: sign 0, exponent 0111_1111, mantissa 000_0000; -2.0 = 0xC000
    raw = layout.encode(np.array([1.0, -2.0], dtype=np.float32), 16, Format.BF16, W=64)
    assert raw[:, 0].tolist() == [0b10, 0b10, 0b01, 0b01, 0b01, 0b01, 0b01, 0b01, 0b01] + [0] * 7
    assert layout.decode(raw, 16, 2, Format.BF16).tolist() == [1.0, -2.0]


def test_bf16_rounds_to_nearest_even_and_keeps_nan():
    bits = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0x7FC00001, 0xFF800001], dtype=np.uint32)
    raw = layout.encode(bits.view(np.float32), 16, Format.BF16)
    fields = layout.decode(raw, 16, 5, Format.BF16).view(np.uint32) >> 16
    assert fields[:3].tolist() == [0x3F80, 0x3F82, 0x3F80]   # tie to even (down, up), below half down
    assert np.isnan(layout.decode(raw, 16, 5, Format.BF16)[3:]).all()


# --- fast path against the reference formulation -----------------------------------------------------------
@pytest.mark.parametrize("B", [2, 4, 8, 16])
@pytest.mark.parametrize("R", [1, 2, 64])
@pytest.mark.parametrize("n", [1, 511, 513, 64 * 512 + 3])
def test_round_trip_and_reference(B, R, n):
    values = random_ints(np.random.default_rng(B * 1000 + R * 7 + n), B, n)
    raw = layout.encode(values, B, R=R)
    superblock_lines = R * B
    assert raw.shape == (-(-layout.n_blocks_for(n, 512, R) // R) * superblock_lines, 64)
    assert np.array_equal(raw, layout._reference_encode(values, B, R=R))
    assert np.array_equal(layout.decode(raw, B, n, R=R), values)
    k = max(1, B // 2 + 1)
    assert np.array_equal(layout.decode(raw, B, n, R=R, k=k), layout._reference_decode(raw, B, n, R=R, k=k))


@pytest.mark.parametrize("B", [4, 16])
@pytest.mark.parametrize("R", [1, 4, 64])
def test_many_chunks_and_a_ragged_tail(B, R, monkeypatch):
    monkeypatch.setattr(layout, "CHUNK_WEIGHTS", 2048)     # several chunks (R = 64: one superblock each)
    n = 3 * 64 * 512 + 333
    values = random_ints(np.random.default_rng(B + R), B, n)
    raw = layout.encode(values, B, R=R)
    assert np.array_equal(raw, layout._reference_encode(values, B, R=R))
    assert np.array_equal(layout.decode(raw, B, n, R=R), values)
    assert np.array_equal(layout.decode(raw, B, n, R=R, k=3), layout._reference_decode(raw, B, n, R=R, k=3))


@pytest.mark.parametrize("R", [1, 2, 64])
def test_bf16_round_trip(R):
    rng = np.random.default_rng(R)
    values = (rng.standard_normal(3 * 512 + 17) * 1e3).astype(np.float32)
    exact = layout.floats_from_bf16(layout.bf16_fields(values))       # already bfloat16 values
    raw = layout.encode(exact, 16, Format.BF16, R=R)
    assert np.array_equal(raw, layout._reference_encode(values, 16, Format.BF16, R=R))
    assert np.array_equal(layout.decode(raw, 16, values.size, Format.BF16, R=R), exact)


def test_padding_is_zero_weights_in_whole_superblocks():
    values = np.full(512 + 1, -1, dtype=np.int8)           # 2 blocks used, R = 4: 2 whole padding blocks
    raw = layout.encode(values, 8, R=4)
    planes = layout.raw_to_planes(raw, 8, 4)
    assert planes.shape == (4, 8, 64)
    assert (planes[0] == 0xFF).all() and (planes[1, :, 0] == 1).all()
    assert not planes[1, :, 1:].any() and not planes[2:].any()
    assert np.array_equal(layout.decode(raw, 8, 4 * 512, R=4)[values.size:], np.zeros(4 * 512 - 513))


@settings(max_examples=40, deadline=None)
@given(B=st.sampled_from([2, 4, 8, 16]), R=st.sampled_from([1, 2, 4, 8, 16, 32, 64]),
       W=st.sampled_from([64, 128, 512]), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1),
       k=st.integers(1, 16))
def test_property_fast_equals_reference(B, R, W, n, seed, k):
    k = min(k, B)
    values = random_ints(np.random.default_rng(seed), B, n)
    raw = layout.encode(values, B, R=R, W=W)
    assert np.array_equal(raw, layout._reference_encode(values, B, R=R, W=W))
    assert np.array_equal(layout.decode(raw, B, n, R=R), values)
    truncated = layout.ints_from_fields(layout.truncate(layout.fields_from_ints(values, B), B, k), B)
    assert np.array_equal(layout.decode(raw, B, n, R=R, k=k), truncated)
    blocks = layout.to_blocks(layout.fields_from_ints(values, B), W, R)
    assert np.array_equal(layout.block_planes(blocks, B), layout._reference_block_planes(blocks, B))
    assert np.array_equal(layout.planes_to_blocks(layout.block_planes(blocks, B), B, k),
                          layout._reference_planes_to_blocks(layout._reference_block_planes(blocks, B), B, k))
    assert np.array_equal(layout.packed_lines(blocks, B, k), layout._reference_packed_lines(blocks, B, k))


@settings(max_examples=30, deadline=None)
@given(F=st.integers(1, 16), groups=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
def test_property_pack_fields(F, groups, seed):
    fields = np.random.default_rng(seed).integers(0, 1 << 32, (2, 8 * groups), dtype=np.uint64).astype(np.uint32)
    packed = layout.pack_fields(fields, F)
    assert np.array_equal(packed, layout._reference_pack_fields(fields, F))       # bits above F ignored
    assert np.array_equal(layout.unpack_fields(packed, F, 8 * groups), fields & ((1 << F) - 1))


# --- views of line ranges ----------------------------------------------------------------------------------
def whole_region_view(values, B, R, W, view, k, rounding):
    """Every line of a view, from the reference functions, plus its mapped mask (docs/DEVICE.md 2-3)."""
    blocks = layout.to_blocks(layout.fields_from_ints(values, B), W, R)
    n_blocks = blocks.shape[0]
    per_block = np.zeros((n_blocks, B, W // 8), dtype=np.uint8)
    mapped = np.zeros((n_blocks, B), dtype=bool)
    if view == View.RAW:
        return layout._reference_encode(values, B, R=R, W=W), np.ones(n_blocks * B, dtype=bool)
    if view == View.WEIGHT_MAJOR:
        per_block[:], mapped[:] = layout._reference_expanded_lines(blocks, B, B), True
    elif view in (View.PACKED_K, View.PACKED_DEFAULT) and 1 <= k <= B:
        per_block[:, :k], mapped[:, :k] = layout._reference_packed_lines(blocks, B, k), True
    elif view in (View.EXPANDED_K, View.EXPANDED_DEFAULT) and 1 <= k <= B:
        per_block[:], mapped[:] = layout._reference_expanded_lines(blocks, B, k, rounding), True
    return per_block.reshape(-1, W // 8), mapped.reshape(-1)


@settings(max_examples=60, deadline=None)
@given(B=st.sampled_from([2, 4, 8, 16]), R=st.sampled_from([1, 2, 8, 64]), W=st.sampled_from([64, 512]),
       n=st.integers(1, 2000), view=st.integers(0, 7), k=st.integers(0, 17),
       rounding=st.sampled_from(list(Rounding)), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_property_view_lines_match_whole_region(B, R, W, n, view, k, rounding, seed, data):
    values = random_ints(np.random.default_rng(seed), B, n)
    raw = layout.encode(values, B, R=R, W=W)
    whole, mapped = whole_region_view(values, B, R, W, view, k, rounding)
    span = raw.shape[0]
    first = data.draw(st.integers(0, span - 1))
    count = data.draw(st.integers(0, span - first))
    lines = layout.view_lines(raw, B, R, view, k, first, count, rounding=rounding)
    assert np.array_equal(lines, whole[first:first + count])
    assert np.array_equal(layout.view_line_mapped(B, view, k, first, count), mapped[first:first + count])


@settings(max_examples=30, deadline=None)
@given(B=st.sampled_from([2, 4, 8, 16]), R=st.sampled_from([1, 4]), blocks=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
def test_property_weight_major_is_numpy_storage(B, R, blocks, seed):
    values = random_ints(np.random.default_rng(seed), B, blocks * 512)
    raw = layout.encode(values, B, R=R)
    span = raw.shape[0]
    weight_major = layout.view_lines(raw, B, R, View.WEIGHT_MAJOR, 0, 0, span)
    assert weight_major[: blocks * B].tobytes() == numpy_storage(values, B)
    # packed at k = B and expanded at k = B are both the weight-major bytes
    assert np.array_equal(layout.view_lines(raw, B, R, View.PACKED_K, B, 0, span), weight_major)
    assert np.array_equal(layout.view_lines(raw, B, R, View.EXPANDED_DEFAULT, B, 0, span), weight_major)


@settings(max_examples=30, deadline=None)
@given(B=st.sampled_from([4, 8, 16]), k=st.integers(1, 16), rounding=st.sampled_from(list(Rounding)),
       seed=st.integers(0, 2**32 - 1))
def test_property_expanded_is_truncated_weight_major(B, k, rounding, seed):
    k = min(k, B)
    values = random_ints(np.random.default_rng(seed), B, 2 * 512)
    raw = layout.encode(values, B)
    expanded = layout.view_lines(raw, B, 1, View.EXPANDED_K, k, 0, 2 * B, rounding=rounding)
    truncated = layout.ints_from_fields(layout.truncate(layout.fields_from_ints(values, B), B, k, rounding), B)
    assert expanded.tobytes() == numpy_storage(truncated, B)


def test_unmapped_views_read_zero():
    values = random_ints(np.random.default_rng(5), 8, 1024)
    raw = layout.encode(values, 8)
    for view, k in ((6, 3), (7, 8), (View.PACKED_K, 0), (View.EXPANDED_K, 9), (View.PACKED_DEFAULT, 31)):
        assert not layout.view_lines(raw, 8, 1, view, k, 0, 16).any()
        assert not layout.view_line_mapped(8, view, k, 0, 16).any()
    # views 0 and 1 ignore the k field, even an illegal one
    assert np.array_equal(layout.view_lines(raw, 8, 1, View.RAW, 0, 0, 16), raw)
    assert layout.view_line_mapped(8, View.WEIGHT_MAJOR, 0, 0, 16).all()


# --- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: layout.encode(np.zeros(8, dtype=np.float32), 8), "integer weights expected"),
    (lambda: layout.encode(np.zeros(8, dtype=bool), 8), "integer weights expected"),
    (lambda: layout.encode(np.zeros(8, dtype=np.int8), 16, Format.BF16), "float weights expected"),
    (lambda: layout.encode(np.array([8], dtype=np.int8), 4), r"outside the INT4 range -8\.\.7"),
    (lambda: layout.encode(np.array([-129], dtype=np.int16), 8), "outside the INT8 range"),
    (lambda: layout.encode(np.array([200], dtype=np.uint8), 8), "outside the INT8 range"),
    (lambda: layout.encode(np.zeros(8, dtype=np.int8), 3), "B must be one of"),
    (lambda: layout.encode(np.zeros(8, dtype=np.float32), 8, Format.BF16), "BF16 storage needs B = 16"),
    (lambda: layout.encode(np.zeros(8, dtype=np.int8), 8, fmt=2), "storage format must be"),
    (lambda: layout.encode(np.zeros(8, dtype=np.int8), 8, R=3), "plane run R must be a power of two"),
    (lambda: layout.encode(np.zeros(8, dtype=np.int8), 8, R=128), "plane run R must be a power of two"),
    (lambda: layout.encode(np.zeros(8, dtype=np.int8), 8, W=100), "line width W"),
    (lambda: layout.decode(layout.encode(np.zeros(8, dtype=np.int8), 8), 8, 8, k=0), "precision k"),
    (lambda: layout.decode(layout.encode(np.zeros(8, dtype=np.int8), 4), 4, 8, k=5), "precision k"),
    (lambda: layout.decode(layout.encode(np.zeros(8, dtype=np.int8), 8), 8, 513), "n_weights must be"),
    (lambda: layout.decode(np.zeros((3, 64), dtype=np.uint8), 8, 8), "not a whole number of superblocks"),
    (lambda: layout.decode(np.zeros((8, 64), dtype=np.int8), 8, 8), "2-D uint8"),
    (lambda: layout.packed_lines(np.zeros((1, 512), dtype=np.uint32), 8, 9), "precision k"),
    (lambda: layout.truncate(np.zeros(4, dtype=np.uint32), 4, 0), "precision k"),
    (lambda: layout.fill_pattern(8, 3, 3), "rounding must be"),
    (lambda: layout.fill_pattern(8, 3, Rounding.TOWARD_ZERO), "sign bit"),
    (lambda: layout.truncate(np.zeros(4, dtype=np.uint32), 8, 3, Rounding.TOWARD_ZERO, fmt=2), "storage format"),
    (lambda: layout.view_lines(np.zeros((8, 64), dtype=np.uint8), 8, 1, 8, 1, 0, 1), "view must be"),
    (lambda: layout.view_lines(np.zeros((8, 64), dtype=np.uint8), 8, 1, 2, 32, 0, 1), "5-bit HPA k field"),
    (lambda: layout.view_lines(np.zeros((8, 64), dtype=np.uint8), 8, 1, 2, 3, 4, 5), "outside the region"),
    (lambda: layout.view_lines(np.zeros((8, 64), dtype=np.uint8), 8, 1, 2, 3, -1, 1), "outside the region"),
    (lambda: layout.view_line_mapped(8, 2, 3, 0, -1), "line range must be non-negative"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(SmartquantError, match=message):
        call()


# --- benchmark command -------------------------------------------------------------------------------------
def test_bench_codec_command_prints_a_row_per_format(capsys):
    assert cli.main(["bench", "codec", "--weights", "5000", "--repeats", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    table = {row[0]: row for row in rows if row and row[0] in ("INT8", "INT4", "BF16")}
    assert sorted(table) == ["BF16", "INT4", "INT8"]
    assert [int(table[name][1]) for name in ("INT8", "INT4", "BF16")] == [5000] * 3


def test_bench_codec_measures_every_format():
    from smartquant.scripts import bench_golden
    results = bench_golden.bench_codec(n_weights=4096, repeats=1, clock="cpu")
    assert [(r.name, r.stored_bytes) for r in results] == [("INT8", 4096), ("INT4", 2048), ("BF16", 8192)]
    assert all(r.copy_seconds > 0 and r.encode_seconds > 0 and r.decode_seconds > 0 for r in results)
    with pytest.raises(SmartquantError, match="clock must be"):
        bench_golden.bench_codec(n_weights=4096, clock="sundial")


@pytest.mark.slow
@pytest.mark.parametrize("B", [2, 4, 8, 16])
def test_large_tensors_against_reference(B):
    """Several chunks and a ragged tail per plane run (default chunk is 65536 weights)."""
    rng = np.random.default_rng(B)
    for R in (1, 8, 64):
        n = 5 * layout.CHUNK_WEIGHTS + 12345
        values = random_ints(rng, B, n)
        raw = layout.encode(values, B, R=R)
        assert np.array_equal(raw, layout._reference_encode(values, B, R=R))
        assert np.array_equal(layout.decode(raw, B, n, R=R), values)
        assert np.array_equal(layout.decode(raw, B, n, R=R, k=1), layout._reference_decode(raw, B, n, R=R, k=1))
