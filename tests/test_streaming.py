"""Streaming transformer weights through the device: the host plan and decoder (fast), and small RTL runs of
both workloads (MiniLM and SmolLM2)."""
import json

import numpy as np
import pytest

from smartquant.commands import demo_streaming
from smartquant.errors import SmartquantError
from smartquant.golden import layout
from smartquant.workloads import streaming
from smartquant.workloads.minilm import load_minilm, matrix_name
from smartquant.workloads.stream_workloads import MiniLMWorkload
from smartquant.params import ControllerParams
from smartquant.sim.runner import SIM_PARAMS


@pytest.fixture(scope="module")
def model():
    return load_minilm()


@pytest.fixture(scope="module")
def workload(model):
    return MiniLMWorkload(model)


def minilm_plan(workload, params=SIM_PARAMS, fmt_name="int8", layers=(0,), matrices=None, **options):
    return streaming.StreamingPlan(workload.layer_matrices(layers, matrices), params, fmt_name, **options)


@pytest.mark.parametrize("fmt_name, ks", [("int8", (1, 3, 8)), ("bf16", (2, 9, 16))])
def test_packed_lines_decode_to_the_quantizers_weights(model, workload, fmt_name, ks):
    # the decoder goes through the bit-plane layout; the expectation is quant's arithmetic read of the codes
    plan = minilm_plan(workload, fmt_name=fmt_name, layers=(1,), R=4, matrices=["query", "output"])
    for name in plan.names():
        fields = plan.fields(name)
        for k in ks:
            weights = plan.decode_packed(name, k, layout.packed_lines(fields, plan.B, k))
            golden = plan.golden_weights(name, k)
            assert weights.dtype == np.float32 and weights.shape == model.weights[name].shape
            assert np.array_equal(weights.view(np.uint32), golden.view(np.uint32)), (name, k)


def test_midpoint_rule_adds_the_fill_the_host_expects(workload):
    plan = minilm_plan(workload, rule="midpoint", matrices=["key"])
    name = plan.names()[0]
    stored = plan.stored[name].quantized
    weights = plan.decode_packed(name, 3, layout.packed_lines(plan.fields(name), 8, 3))
    # hand rule: top 3 bits kept, dropped 5 bits read as 10000b = 16
    expected_codes = ((stored.ints >> 5) << 5) | 16
    assert np.array_equal(weights, expected_codes.astype(np.float32) * stored.scales)


def test_toward_zero_rule_with_correction_is_what_the_host_expects(workload):
    plan = minilm_plan(workload, rule="toward-zero", corrected=True, matrices=["value"], R=4)
    name = plan.names()[0]
    stored = plan.stored[name].quantized
    weights = plan.decode_packed(name, 3, layout.packed_lines(plan.fields(name), 8, 3))
    # hand rule: top 3 bits kept, the 5 dropped bits are copies of the sign (11111b for negative codes), then
    # each row gets its mean error at k back: c = mean over the row of (stored code - read code) x scale
    read_codes = np.where(stored.ints < 0, ((stored.ints >> 5) << 5) | 31, (stored.ints >> 5) << 5)
    assert (read_codes[stored.ints == -1] == -1).all() and (read_codes[stored.ints == 40] == 32).all()
    correction = ((stored.ints - read_codes) * stored.scales).astype(np.float64).mean(axis=1)
    expected = read_codes.astype(np.float32) * stored.scales + correction.astype(np.float32)[:, None]
    assert np.allclose(weights, expected, rtol=0, atol=1e-7)
    assert np.abs((weights - stored.ints * stored.scales).mean(axis=1)).max() < 1e-6   # row mean error gone


def test_placement_geometry(workload):
    params = ControllerParams(dram_addr_bits=23)
    plan = minilm_plan(workload, params, layers=(2, 3, 4, 5, 0), R=2)
    # 384 x 384 = 147456 weights = 288 blocks; 1536 x 384 = 1152 blocks; R = 2 divides both
    blocks = [p.n_blocks for p in plan.regions[2].matrices]
    assert blocks == [288, 288, 288, 288, 1152, 1152]
    assert [p.first_block for p in plan.regions[2].matrices] == [0, 288, 576, 864, 1152, 2304]
    region = plan.regions[2]
    assert region.span == 3456 * 8 and region.n_superblocks == 3456 // 2
    # layers back to back, region entries reused round-robin over the 4 entries
    assert [plan.regions[layer].base_line for layer in (2, 3, 4)] == [0, 3456 * 8, 2 * 3456 * 8]
    assert [plan.regions[layer].index for layer in (2, 3, 4, 5, 0)] == [0, 1, 2, 3, 0]
    value = plan.regions[3].matrices[1]
    lines = plan.packed_read_lines(value.name, 3)
    assert lines[:4].tolist() == [3456 * 8 + 288 * 8 + j for j in (0, 1, 2)] + [3456 * 8 + 289 * 8]
    assert lines.size == 288 * 3
    written, data = plan.weight_major_writes(value.name)
    assert written.size == 288 * 8 and data.shape == (288 * 8, 64)
    assert streaming.StreamingPlan.required_addr_bits(plan.end_line, 64) == 24   # 5 x 1.77 MB


def test_forward_asks_for_missing_weights_and_keeps_fp32_for_unstreamed(model, workload):
    plan = minilm_plan(workload, matrices=["query"])
    query = matrix_name(0, "query")
    with pytest.raises(streaming.WeightsNeeded) as need:
        streaming.forward_with(workload, plan, workload.inputs, streaming.static_choice(5), {})
    assert (need.value.name, need.value.precision_k) == (query, 5)
    # the streamed matrix given its FP32 weights: the whole forward is the plain model's
    outputs, chosen = streaming.forward_with(workload, plan, workload.inputs, streaming.static_choice(5),
                                             {(query, 5): model.weights[query]})
    assert chosen == {query: 5}
    plain = model.hidden_states(workload.inputs)
    assert np.array_equal(outputs["layer 5 output"], plain[-1])
    assert np.array_equal(outputs["embeddings"], model.pool(plain[-1], workload.inputs.attention_mask))
    assert streaming.outputs_equal(outputs, outputs) == []
    golden, _ = streaming.golden_forward(workload, plan, workload.inputs, streaming.static_choice(3))
    assert streaming.outputs_equal(golden, outputs) == [f"layer {i} output" for i in range(6)] + ["embeddings"]


def test_bad_inputs_are_clear_errors(workload):
    with pytest.raises(SmartquantError, match="layers"):
        workload.layer_matrices((6,))
    with pytest.raises(SmartquantError, match="read rule"):
        minilm_plan(workload, rule="nearest")
    with pytest.raises(SmartquantError, match="matrices"):
        workload.layer_matrices((0,), ["qkv"])
    with pytest.raises(SmartquantError, match="b_max"):
        minilm_plan(workload, ControllerParams(b_max=8), "bf16")
    with pytest.raises(SmartquantError, match="at least one"):
        streaming.StreamingPlan({}, SIM_PARAMS)
    plan = minilm_plan(workload, matrices=["query"])
    with pytest.raises(SmartquantError, match="precision k"):
        plan.packed_read_lines(plan.names()[0], 9)
    with pytest.raises(SmartquantError, match="packed lines of shape"):
        plan.decode_packed(plan.names()[0], 2, np.zeros((3, 2, 64), dtype=np.uint8))
    with pytest.raises(SmartquantError, match="streaming view"):
        streaming.check_view("expanded")
    with pytest.raises(SmartquantError, match="stream-k"):
        demo_streaming.parse_ks("8,x", 8)
    with pytest.raises(SmartquantError, match="precision k"):
        demo_streaming.parse_ks("9", 8)
    with pytest.raises(SmartquantError, match="policies"):
        demo_streaming.parse_policies("greedy,oracle")


def test_rtl_streaming_matches_the_golden_model(tmp_path):
    """One matrix of layer 0 written through the weight-major path, streamed back at k = 8 and 3 (RTL)."""
    from smartquant.scripts.bench_device import simulate
    out = tmp_path / "stream.json"
    config = {"workload": "minilm", "format": "int8", "layers": [0], "ks": [8, 3], "policies": [], "budget": 5.0,
              "view": "default",
              "R": 1, "rule": "floor", "out": str(out), "matrices": ["query"],
              "sentences": ["Bit planes stream at run-time precision.", "A second, slightly longer sentence here."]}
    result = simulate(SIM_PARAMS, "smartquant.sim.stream_demo", "test_stream_layers", seed=3,
                      extra_env={"SQ_STREAM_CONFIG": json.dumps(config)})
    assert result.passed, result.describe()
    data = json.loads(out.read_text())
    blocks = 384 * 384 // 512
    assert data["load"]["rwd"] == blocks * 8
    # whole blocks are gathered: one DRAM beat per weight-major line, B per block (B x B before issue 13)
    assert data["load"]["counters"]["dram_lines_written"] == blocks * 8
    assert data["load"]["counters"]["write_bursts"] == blocks
    for run, k in zip(data["runs"], (8, 3)):
        assert run["exact"] and run["k"] == {matrix_name(0, "query"): k}
        assert run["counters"]["dram_lines_read"] == blocks * k             # exactly k/B of the stored lines
        assert run["traffic_ratio"] == k / 8
        assert run["counters"]["drs_sent"] == blocks * k
        assert run["link_bytes"] == blocks * k * 64
        assert run["counters"][f"reads_at_k{k}"] == blocks * k
    assert data["runs"][0]["embedding_cos_mean"] > data["runs"][1]["embedding_cos_mean"]
    payloads = np.load(out.with_suffix(".npz"))
    assert payloads[f"static k=3|{matrix_name(0, 'query')}|k=3"].shape == (blocks * 3, 64)


@pytest.mark.parametrize("R", [1, 4])
def test_raw_load_stores_the_same_planes_as_the_weight_major_load(workload, R):
    """The demo's fast raw-view load (host-side encoder) must leave DRAM exactly as the weight-major load does:
    decoding its planes gives back the weight-major lines, and it covers the same line range."""
    plan = minilm_plan(workload, R=R, matrices=["query", "key"])
    for name in plan.names():
        raw_lines, raw = plan.raw_writes(name)
        wm_lines, wm = plan.weight_major_writes(name)
        blocks = layout.planes_to_blocks(layout.raw_to_planes(raw, plan.B, R), plan.B)
        assert (layout.weight_major_lines(blocks, plan.B).reshape(wm.shape) == wm).all()
        assert sorted(raw_lines.tolist()) == sorted(wm_lines.tolist())
