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
