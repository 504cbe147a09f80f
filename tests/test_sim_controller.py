"""The SmartQuantController in Verilator (cocotb) against the golden model: directed tests and random stress.

The cocotb tests live in sim/test_controller.py; these pytest cases launch them through sim/runner.py and
fail when the cocotb results file records a failure (the message names the wave file of the failing rerun).
Random runs must also reach every functional-coverage bin (sim/coverage.py) defined for their parameters.
Parameter sets and seeds are pytest parameters, so `pytest -n 2` (pytest-xdist) spreads them over cores.
"""
import json
from pathlib import Path

import pytest

from smartquant.params import ControllerParams
from smartquant.sim import runner
from smartquant.sim.coverage import Coverage

DIRECTED = [
    "test_csr_identity_and_reset_state", "test_every_view_format_and_k", "test_region_edges_and_unmapped",
    "test_illegal_k_and_packed_lines_past_k", "test_writes_raw_weight_major_partial_and_dropped",
    "test_poison_list_lines_inject_clear_and_overflow", "test_opcodes_spec_read_invalidate_and_reserved",
    "test_streaming_hits_the_block_buffer", "test_dropped_and_unmapped_writes_keep_the_block_buffer",
    "test_raw_write_invalidates_and_poisons_its_own_block_with_plane_runs", "test_buffer_key_is_mode_and_k_not_view",
    "test_streaming_with_plane_runs_and_backpressure",
    "test_raw_write_in_second_superblock_keeps_other_blocks_buffered",
]
DIRECTED_CASES = 18          # three tests are parametrized twice, test_region_edges_and_unmapped three times


def sim_params(data_width, b_max, n_regions, request_depth, buffer_slots) -> ControllerParams:
    return ControllerParams(data_width=data_width, b_max=b_max, n_regions=n_regions, request_depth=request_depth,
                            buffer_slots=buffer_slots, dram_addr_bits=20)


# (data_width, b_max, n_regions, request_depth, buffer_slots): every value of every knob in README's sweep
# (W 128/256/512, b_max 8/16, request_depth 4/8/16, buffer_slots 1/2/4, n_regions 1..4) occurs, pairwise mixed.
SWEEP = [
    (512, 16, 4, 16, 2),    # the defaults
    (128, 16, 4, 4, 1),
    (256, 8, 3, 16, 1),
    (512, 8, 2, 4, 1),
    (512, 16, 1, 8, 4),
    (256, 16, 4, 4, 4),
    (256, 16, 2, 8, 2),
    (128, 8, 1, 16, 2),
    (128, 16, 3, 8, 4),
]
DEFAULT_RUN = {SWEEP[0]: 40_000, SWEEP[1]: 30_000, SWEEP[2]: 30_000}    # 10^5 transactions in the default run
RANDOM_SEED = 20261126       # fixed so CI is reproducible; `smartquant sim --seed N` replays any other


COVERAGE_DIR = (Path("build") / "coverage").resolve()   # one JSON per run: `smartquant sim --merge-coverage`


def check_random_run(params: ControllerParams, seed: int, transactions: int) -> dict:
    result = runner.run(params, testcase="test_random", seed=seed, transactions=transactions)
    assert result.passed, result.describe()
    summary = result.summary
    COVERAGE_DIR.mkdir(parents=True, exist_ok=True)
    (COVERAGE_DIR / f"{params.key()}-seed{seed}-{transactions}.json").write_text(json.dumps(summary["coverage"]))
    assert summary["transactions"] >= transactions
    assert summary["mismatches"] == 0 and summary["failed"] == 0, summary["error"]
    assert summary["drs_checked"] > transactions // 3 and summary["ndr_checked"] > transactions // 8, summary
    coverage = Coverage.from_json(params, summary["coverage"])
    assert not coverage.missed(), f"{coverage.summary_line()}; missed bins: {coverage.missed()}"
    return summary


def test_directed_views_formats_writes_poison_opcodes():
    result = runner.run(runner.SIM_PARAMS, testcase=DIRECTED, seed=5)
    assert result.passed, result.describe()
    assert result.tests == DIRECTED_CASES, result.describe()


@pytest.mark.parametrize("knobs", list(DEFAULT_RUN), ids=lambda k: "w{}_b{}_r{}_q{}_s{}".format(*k))
def test_random_traffic_matches_the_golden_model_with_full_coverage(knobs):
    check_random_run(sim_params(*knobs), RANDOM_SEED, DEFAULT_RUN[knobs])


def test_short_run_hits_every_bin_with_the_req_stall_drain():
    """5,000 transactions at seed 7 with the defaults: the random drain of the backpressure phase gave no one-cycle
    Req stall there on 4421e67 (258 of 259 bins); the generator's half-rate drain (sim/traffic.py
    half_rate_drain) closes it. Shares the defaults' Verilator build."""
    check_random_run(runner.SIM_PARAMS, 7, 5000)


# ---- host_port = "axi": the AXI4 host port driven by cocotbext-axi's AxiMaster (sim/axi_host_tb.py) -----------
def axi_params(data_width, b_max, n_regions, request_depth, buffer_slots, id_bits) -> ControllerParams:
    return ControllerParams(data_width=data_width, b_max=b_max, n_regions=n_regions, request_depth=request_depth,
                            buffer_slots=buffer_slots, dram_addr_bits=20, host_port="axi", host_axi_id_bits=id_bits)


# (data_width, b_max, n_regions, request_depth, buffer_slots, host_axi_id_bits): W = 128 keeps the extra
# Verilator build short; depth and slots as SIM_PARAMS, which the directed tests' buffer-hit counts assume
AXI_DEFAULT = (128, 16, 4, 16, 2, 8)
AXI_SWEEP = [(512, 16, 4, 16, 2, 8), (256, 8, 3, 16, 1, 12), (128, 16, 1, 8, 4, 4)]
AXI_IDS = "w{}_b{}_r{}_q{}_s{}_id{}".format


def test_axi_host_directed():
    """Every directed test through the AXI host port, and the AXI-only one (bursts, ID reuse, B after landing)."""
    result = runner.run(axi_params(*AXI_DEFAULT), testcase=DIRECTED + ["test_axi_host_bursts_ids_and_b_after_landing"],
                        seed=5)
    assert result.passed, result.describe()
    assert result.tests == DIRECTED_CASES + 1, result.describe()


def test_axi_host_random_traffic_matches_the_golden_model_with_full_coverage():
    check_random_run(axi_params(*AXI_DEFAULT), RANDOM_SEED, 20_000)


@pytest.mark.slow
@pytest.mark.parametrize("knobs", AXI_SWEEP, ids=lambda k: AXI_IDS(*k))
def test_axi_host_random_100k_transactions(knobs):
    check_random_run(axi_params(*knobs), AXI_SWEEP.index(knobs) + 101, 100_000)


@pytest.mark.slow
@pytest.mark.parametrize("knobs", SWEEP, ids=lambda k: "w{}_b{}_r{}_q{}_s{}".format(*k))
def test_random_100k_transactions_every_parameter_set(knobs):
    check_random_run(sim_params(*knobs), SWEEP.index(knobs) + 1, 100_000)


@pytest.mark.slow
@pytest.mark.parametrize("params, seed, transactions", [
    (runner.SIM_PARAMS, 990017, 100_000),
    (ControllerParams(data_width=128, buffer_slots=1, dram_addr_bits=20), 4401, 20_000),
], ids=["seed990017", "seed4401-w128-s1"])
def test_seeds_that_once_reported_false_poison_mismatches(params, seed, transactions):
    """Seeds whose poisoned writes once overflowed the poison table while reads of other blocks were in flight. When an
    overflow poisoned every read, those reads could legally see either state and once reported false
    mismatches; now an overflow changes no read (DEVICE.md §4), and these runs check exactly that."""
    check_random_run(params, seed, transactions)
