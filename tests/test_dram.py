"""Open-page row model (golden/dram.py): hand-counted activates on a tiny geometry, a brute-force cross-check,
and the plane-run property: with a row-aligned R, streaming a tensor at precision k activates k/B of the rows."""
import numpy as np
import pytest

from smartquant.errors import SmartquantError
from smartquant.golden.device import DeviceModel, region_csr_writes
from smartquant.golden.dram import DramGeometry, RowModel, count_activates
from smartquant.params import ControllerParams, Format, ReqOpcode, View

# 4 lines per row, 2 banks, 4 rows: line bits [1:0] column, [2] bank, [4:3] row (+ anything above)
TINY = DramGeometry(row_bytes=256, bankgroups=1, banks_per_group=2, rows=4, mapping="row:bank:column")


def test_activates_by_hand():
    stats = count_activates([0, 1, 2, 3, 4, 8, 0, 5], TINY)
    # 0: bank0 row0 act; 1-3 hits; 4: bank1 row0 act; 8: bank0 row1 act; 0: bank0 row0 act; 5: bank1 hit
    assert (stats.accesses, stats.activates, stats.row_hits) == (8, 4, 4)


def test_mapping_order_changes_banks():
    interleaved = DramGeometry(row_bytes=256, bankgroups=1, banks_per_group=2, rows=4, mapping="row:column:bank")
    # bank is bit 0 now: 0, 2 in bank 0 and 1, 3 in bank 1, all row 0
    assert count_activates([0, 1, 2, 3], interleaved).activates == 2
    assert count_activates([0, 1, 2, 3], TINY).activates == 1


def test_high_bits_extend_the_row_and_state_carries():
    model = RowModel(TINY)
    assert model.replay([0]).activates == 1
    assert model.replay([1]).activates == 0          # row still open from the previous call
    assert model.replay([32]).activates == 1         # bit 5 is above the 2 row bits: another row of bank 0
    assert (model.stats.accesses, model.stats.activates, model.stats.row_hits) == (3, 2, 1)


def test_matches_brute_force_loop():
    geometry = DramGeometry(row_bytes=512, bankgroups=2, banks_per_group=2, rows=8,
                            mapping="row:bankgroup:column:bank")
    lines = np.random.default_rng(7).integers(0, 2048, 3000)
    open_rows, expected = {}, 0
    for line in lines.tolist():      # bank = bit 0, column bits 3..1, bankgroup bit 4, row from bit 5 up
        bank = (line & 1) | (((line >> 4) & 1) << 1)
        row = line >> 5
        expected += open_rows.get(bank) != row
        open_rows[bank] = row
    assert count_activates(lines, geometry).activates == expected


def test_bad_geometry_is_a_clear_error():
    with pytest.raises(SmartquantError):
        DramGeometry(mapping="row:column")
    with pytest.raises(SmartquantError):
        DramGeometry(row_bytes=3000)


def stream_activates(R, k, n_superblocks, geometry, B=8, base_line=64):
    """Activates of streaming a whole region through packed-k (every block, lines j < k) in the device model."""
    params = ControllerParams()
    model = DeviceModel(params, 1 << 18)
    model.program(region_csr_writes(params, 0, base_line, n_superblocks, Format.INT, B, R, k, 0))
    for block in range(n_superblocks * R):
        for j in range(k):
            model.req(ReqOpcode.MEM_RD, model.address(View.PACKED_DEFAULT, base_line + block * B + j), 1)
    return count_activates(model.backend_lines(), geometry).activates


def test_row_aligned_plane_run_activates_fall_with_k():
    # rows of 8 lines, 16 banks: a plane run of R = 8 lines is exactly one row
    geometry = DramGeometry(row_bytes=512, mapping="row:bank:bankgroup:column")
    aligned = [stream_activates(8, k, 2, geometry) for k in range(1, 9)]
    assert aligned == [2 * k for k in range(1, 9)]     # k rows per superblock, all in distinct banks
    # R = 1: every block is its own row whatever k is
    assert [stream_activates(1, k, 16, geometry) for k in (1, 4, 8)] == [16, 16, 16]


def test_default_geometry_activates_do_not_grow_as_k_falls():
    activates = [stream_activates(64, k, 1, DramGeometry(), base_line=0) for k in (8, 6, 4, 2, 1)]
    assert all(a >= b for a, b in zip(activates, activates[1:])) and activates[0] > activates[-1]
