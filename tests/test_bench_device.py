"""Device benchmarks: a tiny RTL run of the traffic and latency benchmarks, tables and plots from their JSON."""
import json
from types import SimpleNamespace

import pytest

from smartquant.commands import bench
from smartquant.errors import SmartquantError
from smartquant.scripts import bench_device, plots


def test_tiny_traffic_latency_and_throughput_run():
    """Traffic exactly k/B; throughput streams of both views at every k of B = 8 run at one line per cycle
    between the first and the last DRS (the packer's full-rate gearbox at non-pow2 k too)."""
    config = {"traffic_b": [8], "blocks": 3, "random_reads": 6, "latency_k": [1, 5], "throughput_b": [8],
              "throughput_lines": 48}
    found, result = bench_device.run_benchmarks(["traffic", "latency", "throughput"], config, seed=5)
    assert result.passed, result.describe()
    streams = found["throughput"]["rows"]
    assert [(r["view"], r["k"]) for r in streams] == [(view, k) for view in ("packed", "expanded")
                                                      for k in range(1, 9)]
    for r in streams:
        lines_per_block = r["k"] if r["view"] == "packed" else 8
        assert r["reads"] == -(-48 // lines_per_block) * lines_per_block and r["format"] == "INT"
        assert r["steady_lines_per_cycle"] >= 0.95, r
        assert r["cycles"] == r["fill_cycles"] + (r["reads"] - 1) / r["steady_lines_per_cycle"] + 1
    assert bench_device.throughput_table(found["throughput"]).splitlines()[0].split()[:4] == [
        "B", "format", "view", "k"]
    rows = found["traffic"]["rows"]
    assert [r["k"] for r in rows] == list(range(1, 9))
    for r in rows:
        # sequential packed-k streaming reads exactly k of the B plane lines of every block (hardware counter)
        assert r["dram_lines_read"] == 3 * r["k"] and r["full_lines"] == 3 * 8
        assert r["traffic_ratio"] == r["k"] / 8
        assert r["drs_sent"] == 3 * r["k"]
        # a random packed line costs at most one block fetch of k lines
        assert r["random_dram_lines_read"] <= r["random_reads"] * r["k"]
    table = bench_device.traffic_table(found["traffic"])
    assert table.splitlines()[0].split()[:2] == ["B", "k"] and "NO" not in table
    latency = {r["read"]: r for r in found["latency"]["rows"]}
    assert set(latency) == {"raw", "packed k=1", "packed k=5", "expanded k=1", "expanded k=5"}
    assert latency["packed k=5"]["beats"] == latency["expanded k=5"]["beats"] == 5 and latency["raw"]["beats"] == 1
    for r in latency.values():
        assert r["req_to_ar"] >= 1 and r["last_r_to_drs"] >= 1
        assert r["req_to_drs"] >= r["req_to_ar"] + r["ar_to_first_r"] + r["beats"] - 1
    assert bench_device.summary_lines("traffic", found["traffic"])[0].startswith(
        "sequential packed-k traffic ratio == k/B exactly at every k: yes")


def test_plots_are_written_from_result_files(tmp_path):
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    traffic = {"rows": [{"B": 8, "k": k, "traffic_ratio": k / 8} for k in range(1, 9)]}
    rows = {"rows": [{"R": R, "B": 8, "k": k, "activates": a} for R in (1, 64)
                     for k, a in zip(range(1, 9), [8] * 8 if R == 1 else [2, 2, 4, 4, 6, 6, 8, 8])]}
    (bench_dir / "traffic.json").write_text(json.dumps({"results": traffic}))
    (bench_dir / "rows.json").write_text(json.dumps({"results": rows}))
    energy = {"dram_activate_pj": 1e3, "dram_read_pj": 2e3, "link_pj": 3e3, "controller_pj": 4e2}
    demo = {"config": {"format": "int8", "layers": [0]}, "tokens": 10,
            "runs": [{"label": "static k=8", "counters": {"dram_lines_read": 100}, "embedding_cos_mean": 0.99,
                      "energy": energy},
                     {"label": "greedy 5 b/w", "counters": {"dram_lines_read": 60}, "embedding_cos_mean": 0.97,
                      "energy": energy}]}
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    smollm2 = {"config": {"layers": [0], "R": 64}, "tokens": 1024, "reference": {"perplexity": 34.6},
               "runs": [{"label": label, "counters": {"dram_lines_read": lines}, "perplexity": ppl,
                         "energy": {"total_pj": lines * 1e3}}
                        for label, lines, ppl in (("static k=8", 800, 34.7), ("static k=5", 500, 46.4),
                                                  ("per-matrix 5.78 b/w", 578, 38.0))]}
    (tmp_path / "smollm2.json").write_text(json.dumps(smollm2))
    written = plots.write_plots(bench_dir, tmp_path / "demo.json", tmp_path / "img",
                                smollm2_json=tmp_path / "smollm2.json")
    assert sorted(p.name for p in written) == ["accuracy_traffic.png", "energy_per_token.png",
                                               "perplexity_traffic.png", "row_activates.png", "traffic_ratio.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_missing_inputs_and_bad_options_are_clear_errors(tmp_path):
    args = SimpleNamespace(benchmark="plots", bench_dir=str(tmp_path), demo_json=str(tmp_path / "none.json"),
                           smollm2_json=str(tmp_path / "none2.json"), img_dir=str(tmp_path / "img"))
    with pytest.raises(SmartquantError, match="no input found"):
        bench.run(args)
    (tmp_path / "traffic.json").write_text("{not json")
    with pytest.raises(SmartquantError, match="not valid JSON"):
        bench.run(args)
    with pytest.raises(SmartquantError, match="--blocks"):
        bench_device.run("traffic", SimpleNamespace(blocks=0, out=None, bench_seed=1, no_plots=True))
    with pytest.raises(SmartquantError, match="--lines"):
        bench_device.run("throughput", SimpleNamespace(blocks=None, lines=0, out=None, bench_seed=1, no_plots=True))
    with pytest.raises(SmartquantError, match="does not exist"):
        bench_device.run("traffic", SimpleNamespace(blocks=None, out=str(tmp_path / "no" / "x.json"), bench_seed=1,
                                                    no_plots=True))
    assert set(bench.BENCHMARKS) >= {"traffic", "rows", "throughput", "latency", "simspeed", "all", "plots"}


def test_throughput_summary_names_every_stream_below_the_goal():
    rows = [{"B": 8, "view": view, "k": k, "lines_per_cycle": rate, "steady_lines_per_cycle": 1.0,
             "fill_cycles": fill} for view, k, rate, fill in (("packed", 1, 0.98, 12), ("packed", 3, 0.75, 14),
                                                               ("expanded", 3, 0.97, 14), ("expanded", 5, 0.949, 15))]
    lines = bench_device.summary_lines("throughput", {"rows": rows, "lines_wanted": 640})
    assert lines[0] == ("lines/cycle with fill (640+ lines per stream): min 0.750 (B=8 packed k=3); >= 0.95 at "
                        "every k: NO: B=8 packed k=3, B=8 expanded k=5")
    assert lines[1] == "steady state (first to last DRS): min 1.000; fill (Req -> first DRS) 12..15 cycles"
    rows = [dict(row, lines_per_cycle=0.96) for row in rows]
    assert bench_device.summary_lines("throughput", {"rows": rows, "lines_wanted": 640})[0].endswith(
        ">= 0.95 at every k: yes")


def test_default_output_directory_is_created_in_a_fresh_clone(tmp_path, monkeypatch):
    """`smartquant bench latency` in a fresh clone (no build/ yet) writes build/bench/latency.json."""
    monkeypatch.chdir(tmp_path)            # the default place is build/bench under the working directory
    finished = SimpleNamespace(wall_seconds=0.0, passed=True, describe=lambda: "")
    monkeypatch.setattr(bench_device, "run_benchmarks", lambda names, config, seed: ({}, finished))
    bench_device.run("latency", SimpleNamespace(blocks=None, out=None, bench_seed=1, no_plots=True))
    assert (tmp_path / "build" / "bench" / "latency.json").exists()
