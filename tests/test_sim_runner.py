"""The cocotb runner and stream agents, on the register-slice stand-in (fast: a tiny Verilator build)."""
import pytest

from smartquant.sim import runner


def test_loopback_passes_with_and_without_backpressure():
    result = runner.run(runner.SIM_PARAMS, design="loopback", seed=11, transactions=400)
    assert result.tests == 2, result.describe()
    assert result.passed, result.describe()
    assert result.waves is None


def test_failing_run_is_reported_and_keeps_its_waves():
    # The test module corrupts one expected payload: the results file must say so, and the rerun with tracing
    # must leave a wave file whose path the report names.
    result = runner.run(runner.SIM_PARAMS, design="loopback", seed=11, transactions=50,
                        extra_env={"SQ_INJECT_ERROR": "1"})
    assert not result.passed
    assert len(result.failures) == 2
    assert all("payload 25 mismatch" in message for _, message in result.failures)
    assert result.waves is not None and result.waves.exists() and result.waves.stat().st_size > 0
    assert str(result.waves) in result.describe()


def test_build_is_cached_per_parameter_set():
    first = runner.build(runner.SIM_PARAMS, "loopback")
    again = runner.build(runner.SIM_PARAMS, "loopback")
    other = runner.build(runner.ControllerParams(dram_addr_bits=20, data_width=256), "loopback")
    assert first == again
    assert other != first and "w256" in other.name


def test_unknown_design_is_a_clear_error():
    with pytest.raises(runner.SmartquantError, match="unknown design"):
        runner.build(runner.SIM_PARAMS, "nonexistent")


def test_builds_go_under_the_working_directory_and_the_key_reads_the_installed_sources(tmp_path, monkeypatch):
    """After a plain `pip install .` the package directory is not the repository: builds must not go there, and
    the build key must find the RTL, harness and params through the imported modules (not a repository path)."""
    from smartquant.sim import runner
    digest = runner._design_sources_digest()
    monkeypatch.chdir(tmp_path)
    assert runner.build_root_dir() == tmp_path / "build" / "sim"
    assert runner._design_sources_digest() == digest            # the same sources, whatever the directory


def test_a_design_built_only_to_list_its_ports_is_marked_used_units_included():
    """With a cached Verilator build the design is never elaborated; Amaranth would warn (UnusedElaboratable)
    for it and for every unit the controller builds at construction (the CI log had 54 such warnings)."""
    top = runner.design_top(runner.SIM_PARAMS, "controller")
    units = list(top.inner._units.values())
    assert units and not any(unit._MustUse__used for unit in units)
    runner.mark_built(top)
    assert top._MustUse__used and all(unit._MustUse__used for unit in units)


def test_a_new_build_prunes_the_builds_it_replaces_but_not_kept_failures_or_recent_ones(tmp_path):
    """prune_stale_builds: same design and parameters with another digest, unused for an hour, no kept run."""
    import os
    now = 1_000_000.0
    hour = runner.STALE_BUILD_SECONDS

    def make(name: str, age: float, kept_run: bool = False):
        path = tmp_path / name
        (path / "runs").mkdir(parents=True)
        (path / "Vtop__pch.h.fast.gch").write_bytes(b"x")
        if kept_run:
            (path / "runs" / "test_random-seed7").mkdir()
        for item in (path / "runs", path):
            os.utime(item, (now - age, now - age))
        return path

    current = make("controller-w512_b16_r4_q16_s2_p8_a20-aaaaaaaaaaaa", 0)
    stale = make("controller-w512_b16_r4_q16_s2_p8_a20-bbbbbbbbbbbb", hour + 5)
    recent = make("controller-w512_b16_r4_q16_s2_p8_a20-cccccccccccc", hour - 5)
    failed = make("controller-w512_b16_r4_q16_s2_p8_a20-dddddddddddd", 3 * hour, kept_run=True)
    traced = make("controller-w512_b16_r4_q16_s2_p8_a20-traced-eeeeeeeeeeee", 3 * hour)
    other_params = make("controller-w128_b8_r4_q16_s2_p8_a20-ffffffffffff", 3 * hour)
    other_design = make("loopback-w512_b16_r4_q16_s2_p8_a20-999999999999", 3 * hour)
    (tmp_path / f".{stale.name}.lock").write_text("")

    assert runner.prune_stale_builds(current, now=now) == [stale]
    assert not stale.exists() and not (tmp_path / f".{stale.name}.lock").exists()
    for kept in (current, recent, failed, traced, other_params, other_design):
        assert kept.exists(), kept.name


def test_a_finished_controller_build_keeps_no_precompiled_headers():
    """The ~140 MB of precompiled headers a controller build makes are deleted once it is built."""
    build_dir = runner.build(runner.SIM_PARAMS, "controller")
    assert (build_dir / "build.ok").exists() and (build_dir / runner.TOPLEVEL).exists()
    assert not list(build_dir.glob("*.gch"))
