"""Functional coverage model (sim/coverage.py): bin definitions, sampling, merging, persistence, address decode."""
import json
import re

import pytest
from amaranth.hdl import Shape

from smartquant.golden.device import DeviceModel, region_csr_writes
from smartquant.hdl.cxl.messages import rwd_layout
from smartquant.params import (
    CONTROL_NXM_AS_POISON, CSR_CONTROL, ControllerParams, Counter, DrsOpcode, Format, ReqOpcode, Rounding, RwdOpcode,
    View,
)
from smartquant.sim.coverage import (
    AXI_CHANNELS, CXL_CHANNELS, Coverage, ReadDecode, decode_for_coverage, format_name,
)

DEFAULT = ControllerParams()
SMALL = ControllerParams(data_width=128, b_max=8)
MEMORY_BYTES = 1 << 16


def all_bins(cov):
    return {f"{group}/{name}" for group, bins in cov.bins().items() for name in bins}


def hit_bins(cov):
    return {f"{group}/{name}" for group, bins in cov.bins().items() for name, hits in bins.items() if hits}


# --- bin definitions ---------------------------------------------------------------------------------------
def test_group_sizes_default_params():
    sizes = {group: len(bins) for group, bins in Coverage(DEFAULT).bins().items()}
    assert sizes == {
        "read view x format": 6 * 5, "write view x format": 6 * 5,
        "format x k": 2 + 4 + 8 + 16 + 16, "format x plane run": 5 * 7, "fill x format": 3 * 5,
        "req opcode": 16, "rwd opcode": 16, "write enables": 5, "stall": 8 * 3, "axi errors": 2,
        "poison list": 11, "poisoned response": 1, "decode error": 4, "hole": 5, "tag reuse": 1,
        "region rewrite": 2, "write gather": 4, "reset": 3,
        "queued readers": 1, "dev load": 8,
    }
    assert sum(sizes.values()) == 259


def test_impossible_bins_not_defined_for_b_max_8():
    cov = Coverage(SMALL)
    names = all_bins(cov)
    assert not [n for n in names if "INT16" in n or "BF16" in n]
    assert not [n for n in names if re.search(r"k=(9|1\d)$", n)]
    assert sorted(cov.bins()["format x k"]) == sorted(
        [f"INT2/k={k}" for k in (1, 2)] + [f"INT4/k={k}" for k in range(1, 5)] + [f"INT8/k={k}" for k in range(1, 9)])
    assert len(cov.bins()["read view x format"]) == 6 * 3
    assert len(names) == 183


def test_opcode_bins_use_the_layout_width_and_names():
    width = Shape.cast(dict(rwd_layout(DEFAULT))["opcode"].shape).width
    bins = Coverage(DEFAULT).bins()
    assert len(bins["rwd opcode"]) == 1 << width == 16
    assert {"MEM_WR", "MEM_WR_PTL", "reserved_0b0000", "reserved_0b1111"} <= set(bins["rwd opcode"])
    assert {"MEM_INV", "MEM_RD", "MEM_SPEC_RD", "MEM_CLN_EVCT", "MEM_RD_TEE", "MEM_SPEC_RD_TEE",
            "reserved_0b0111"} <= set(bins["req opcode"])
    assert "reserved_0b0001" not in bins["req opcode"]


def test_b_stall_is_not_a_bin_but_is_kept_as_unexpected():
    cov = Coverage(DEFAULT)
    assert not [n for n in cov.bins()["stall"] if n.startswith("b/")]
    cov.sample_stall("b", 3)
    assert cov.unexpected == {"stall/b/2-7 cycles": 1}
    assert "unexpected: stall/b/2-7 cycles (1 hits)" in cov.table()
    assert cov.percent() == 0.0
    with pytest.raises(ValueError):
        cov.sample_stall("x", 1)
    with pytest.raises(ValueError):
        cov.sample_poison_list("full")


# --- sampling ----------------------------------------------------------------------------------------------
INT8_R4 = ReadDecode(view=View.EXPANDED_K, fmt=Format.INT, B=8, R=4, k=3, rounding=Rounding.MIDPOINT, mapped=True)


def sample_sequence(cov, part=None):
    """A hand-built sequence of samples; `part` 0 / 1 gives its two halves."""
    steps = [
        lambda: cov.sample_req({"opcode": ReqOpcode.MEM_RD, "tag": 5}, INT8_R4),
        lambda: cov.sample_req({"opcode": ReqOpcode.MEM_RD_DATA, "tag": 6},
                               ReadDecode(View.RAW, Format.BF16, 16, 64, 0, Rounding.FLOOR, True)),
        # unmapped read (packed line past k): opcode only
        lambda: cov.sample_req({"opcode": ReqOpcode.MEM_RD, "tag": 7},
                               ReadDecode(View.PACKED_K, Format.INT, 4, 1, 2, Rounding.FLOOR, False)),
        lambda: cov.sample_req({"opcode": 0b0011, "tag": 8}, None),
        lambda: cov.sample_drs({"opcode": DrsOpcode.MEM_DATA, "poison": 1, "tag": 5, "dev_load": 2}),
        # poisoned, but answering the unmapped read: not a "poisoned response"
        lambda: cov.sample_drs({"opcode": DrsOpcode.MEM_DATA, "poison": 1, "tag": 7, "dev_load": 0}),
        lambda: cov.sample_ndr({"opcode": 0, "tag": 8, "dev_load": 3}),
        lambda: cov.sample_rwd({"opcode": RwdOpcode.MEM_WR_PTL, "tag": 9, "byte_enable": 0x00FF},
                               ReadDecode(View.WEIGHT_MAJOR, Format.INT, 16, 1, 16, Rounding.FLOOR, True)),
        lambda: cov.sample_rwd({"opcode": RwdOpcode.MEM_WR, "tag": 10, "byte_enable": 0},
                               ReadDecode(View.PACKED_DEFAULT, Format.INT, 2, 2, 1, Rounding.FLOOR, True)),
        lambda: cov.sample_rwd({"opcode": 0b1111, "tag": 11, "byte_enable": 0}, None),
        lambda: cov.sample_axi_read_response(0),
        lambda: cov.sample_axi_write_response(2),
        lambda: cov.sample_stall("m2s_req", 1),
        lambda: cov.sample_stall("r", 8),
        lambda: cov.sample_stall("aw", 0),
        lambda: cov.sample_tag_reuse(),
        lambda: cov.sample_poison_list("overflow"),
        lambda: cov.sample_decode_error(True, True),
        lambda: cov.sample_region_rewrite(False),
        lambda: cov.sample_gather_flush("idle"),
        lambda: cov.sample_reset(0, 2, 0),
        lambda: cov.sample_queued_readers(DEFAULT.request_depth - 1),
        lambda: cov.sample_queued_readers(DEFAULT.request_depth),
    ]
    if part is not None:
        # tags 5..7 are read and answered within the first half
        steps = steps[:7] if part == 0 else steps[7:]
    for step in steps:
        step()


EXPECTED_HITS = {
    "req opcode/MEM_RD", "req opcode/MEM_RD_DATA", "req opcode/MEM_RD_FWD",
    "read view x format/EXPANDED_K/INT8", "format x plane run/INT8/R=4", "format x k/INT8/k=3",
    "fill x format/MIDPOINT/INT8",
    "read view x format/RAW/BF16", "format x plane run/BF16/R=64",
    "dev load/DRS/2", "dev load/DRS/0", "dev load/NDR/3", "poisoned response/mapped read",
    "rwd opcode/MEM_WR_PTL", "rwd opcode/MEM_WR", "rwd opcode/reserved_0b1111",
    "write enables/MemWrPtl some enabled", "write enables/MemWrPtl partial B-byte group", "write enables/MemWr",
    "write view x format/WEIGHT_MAJOR/INT16", "write view x format/PACKED_DEFAULT/INT2",
    "axi errors/write error", "stall/m2s_req/1 cycle", "stall/r/>=8 cycles", "tag reuse/tag reused",
    "poison list/overflow", "decode error/MemData-NXM poisoned", "region rewrite/at quiescence", "reset/B owed",
    "write gather/partial, idle boundary",
    "queued readers/>= request_depth",
}


def test_hand_built_sequence_hits_exactly_the_expected_bins():
    cov = Coverage(DEFAULT)
    sample_sequence(cov)
    assert hit_bins(cov) == EXPECTED_HITS
    assert {"axi errors/read error", "decode error/MemData", "stall/aw/1 cycle"} <= set(cov.missed())  # RRESP 0, 0-cycle run
    assert set(cov.missed()) == all_bins(cov) - EXPECTED_HITS
    assert cov.bins()["dev load"]["DRS/2"] == 1
    assert not cov.unexpected
    assert cov.percent() == pytest.approx(100 * len(EXPECTED_HITS) / 259)


def test_partial_group_needs_a_weight_major_mapped_write():
    cov = Coverage(DEFAULT)
    raw = ReadDecode(View.RAW, Format.INT, 8, 1, 0, Rounding.FLOOR, True)
    wm8 = ReadDecode(View.WEIGHT_MAJOR, Format.INT, 8, 1, 8, Rounding.FLOOR, True)
    cov.sample_rwd({"opcode": RwdOpcode.MEM_WR_PTL, "byte_enable": 0x0F}, raw)           # raw: strobes bytes
    cov.sample_rwd({"opcode": RwdOpcode.MEM_WR_PTL, "byte_enable": 0xFF00}, wm8)         # whole groups only
    cov.sample_rwd({"opcode": RwdOpcode.MEM_WR_PTL, "byte_enable": 0x0F}, None)           # unmapped
    assert cov.bins()["write enables"]["MemWrPtl partial B-byte group"] == 0
    assert cov.bins()["write enables"]["MemWrPtl some enabled"] == 3
    cov.sample_rwd({"opcode": RwdOpcode.MEM_WR_PTL, "byte_enable": 0x80 << 56}, wm8)      # top group, one byte
    cov.sample_rwd({"opcode": RwdOpcode.MEM_WR_PTL, "byte_enable": (1 << 64) - 1}, wm8)
    cov.sample_rwd({"opcode": RwdOpcode.MEM_WR_PTL, "byte_enable": 0}, wm8)
    assert cov.bins()["write enables"] == {"MemWr": 0, "MemWrPtl all enabled": 1, "MemWrPtl some enabled": 4,
                                           "MemWrPtl partial B-byte group": 1, "MemWrPtl none enabled": 1}


def test_stall_run_buckets():
    cov = Coverage(DEFAULT)
    for cycles in (1, 2, 7, 8, 100):
        cov.sample_stall("s2m_drs", cycles)
    assert cov.bins()["stall"]["s2m_drs/1 cycle"] == 1
    assert cov.bins()["stall"]["s2m_drs/2-7 cycles"] == 2
    assert cov.bins()["stall"]["s2m_drs/>=8 cycles"] == 2
    for channel in CXL_CHANNELS + AXI_CHANNELS:
        cov.sample_stall(channel, 1)
    assert set(cov.unexpected) == {"stall/b/1 cycle"}


def test_reset_drops_outstanding_reads():
    cov = Coverage(DEFAULT)
    cov.sample_req({"opcode": ReqOpcode.MEM_RD, "tag": 1}, INT8_R4)
    cov.sample_reset(1, 0, 3)
    cov.sample_drs({"opcode": DrsOpcode.MEM_DATA, "poison": 1, "tag": 1, "dev_load": 0})
    assert cov.bins()["poisoned response"]["mapped read"] == 0
    assert cov.bins()["reset"] == {"R beats owed": 1, "B owed": 0, "W beats owed": 1}


# --- results, merging, persistence -------------------------------------------------------------------------
def test_merge_of_two_halves_equals_the_whole():
    whole = Coverage(DEFAULT)
    sample_sequence(whole)
    first, second = Coverage(DEFAULT), Coverage(DEFAULT)
    sample_sequence(first, 0)
    sample_sequence(second, 1)
    first.merge(second)
    assert first.to_json() == whole.to_json()
    assert first.missed() == whole.missed()
    with pytest.raises(ValueError):
        first.merge(Coverage(SMALL))


def test_json_round_trip():
    cov = Coverage(DEFAULT)
    sample_sequence(cov)
    cov.sample_stall("b", 1)
    data = json.loads(json.dumps(cov.to_json()))
    back = Coverage.from_json(DEFAULT, data)
    assert back.to_json() == cov.to_json()
    assert back.bins() == cov.bins() and back.unexpected == cov.unexpected
    with pytest.raises(ValueError):
        Coverage.from_json(SMALL, data)
    data["bins"]["stall"]["nowhere/1 cycle"] = 1
    with pytest.raises(ValueError):
        Coverage.from_json(DEFAULT, data)


def test_summary_line_format():
    cov = Coverage(DEFAULT)
    assert cov.summary_line() == "coverage: 0.0% of 259 bins, 259 missed"
    sample_sequence(cov)
    assert cov.summary_line() == f"coverage: 11.9% of 259 bins, {259 - len(EXPECTED_HITS)} missed"
    full = Coverage.from_json(DEFAULT, {**cov.to_json(), "bins": {g: dict.fromkeys(b, 1)
                                                                     for g, b in cov.bins().items()}})
    assert full.summary_line() == "coverage: 100.0% of 259 bins"
    assert full.missed() == [] and full.percent() == 100.0
    # one bin short: never shown as 100.0%
    data = full.to_json()
    data["bins"]["decode error"]["MemData-NXM poisoned"] = 0
    assert Coverage.from_json(DEFAULT, data).summary_line() == "coverage: 99.6% of 259 bins, 1 missed"
    assert re.fullmatch(r"coverage: \d+\.\d% of \d+ bins(, \d+ missed)?", cov.summary_line())


def test_table_lists_every_group():
    cov = Coverage(SMALL)
    cov.sample_decode_error(False, False)
    lines = cov.table().splitlines()
    assert lines[0].split() == ["group", "bins", "hit", "percent"]
    assert any(re.fullmatch(r"decode error\s+1 / 4\s+25\.0%", line) for line in lines)
    assert re.fullmatch(r"total\s+1 / 183\s+0\.5%", lines[-1])
    assert len([line for line in lines if "/" in line]) == len(cov.bins()) + 1


# --- address decode against the golden model --------------------------------------------------------------
def programmed_model(params=DEFAULT, nxm_as_poison=False):
    model = DeviceModel(params, MEMORY_BYTES)
    # region 0: INT8, R = 4, default k 3, MIDPOINT, lines [32, 32 + 2*4*8)
    model.program(region_csr_writes(params, 0, 32, 2, Format.INT, 8, 4, 3, Rounding.MIDPOINT))
    # region 1: BF16, R = 1, default k 5, TOWARD_ZERO, lines [128, 128 + 3*16)
    model.program(region_csr_writes(params, 1, 128, 3, Format.BF16, 16, 1, 5, Rounding.TOWARD_ZERO))
    # region 2: INT4 with a base that is not a multiple of B: inactive (answers as unmapped)
    model.program(region_csr_writes(params, 2, 201, 1, Format.INT, 4, 1, 2, Rounding.FLOOR))
    if nxm_as_poison:
        model.csr_write(CSR_CONTROL, CONTROL_NXM_AS_POISON)
    return model


@pytest.mark.parametrize("view, line, k_field, expected", [
    (View.RAW, 40, 0, ReadDecode(View.RAW, Format.INT, 8, 4, 0, Rounding.MIDPOINT, True)),
    (View.WEIGHT_MAJOR, 40, 0, ReadDecode(View.WEIGHT_MAJOR, Format.INT, 8, 4, 8, Rounding.MIDPOINT, True)),
    (View.PACKED_K, 33, 2, ReadDecode(View.PACKED_K, Format.INT, 8, 4, 2, Rounding.MIDPOINT, True)),
    (View.PACKED_K, 34, 2, ReadDecode(View.PACKED_K, Format.INT, 8, 4, 2, Rounding.MIDPOINT, False)),  # j >= k
    (View.PACKED_K, 32, 0, ReadDecode(View.PACKED_K, Format.INT, 8, 4, 0, Rounding.MIDPOINT, False)),  # k = 0
    (View.EXPANDED_K, 39, 8, ReadDecode(View.EXPANDED_K, Format.INT, 8, 4, 8, Rounding.MIDPOINT, True)),
    (View.EXPANDED_K, 39, 9, ReadDecode(View.EXPANDED_K, Format.INT, 8, 4, 9, Rounding.MIDPOINT, False)),  # k > B
    (View.PACKED_DEFAULT, 42, 7, ReadDecode(View.PACKED_DEFAULT, Format.INT, 8, 4, 3, Rounding.MIDPOINT, True)),
    (View.PACKED_DEFAULT, 43, 0, ReadDecode(View.PACKED_DEFAULT, Format.INT, 8, 4, 3, Rounding.MIDPOINT, False)),
    (View.EXPANDED_DEFAULT, 95, 0, ReadDecode(View.EXPANDED_DEFAULT, Format.INT, 8, 4, 3, Rounding.MIDPOINT, True)),
    (6, 40, 0, ReadDecode(6, Format.INT, 8, 4, 0, Rounding.MIDPOINT, False)),
    (7, 40, 0, ReadDecode(7, Format.INT, 8, 4, 0, Rounding.MIDPOINT, False)),
    (View.EXPANDED_K, 175, 12, ReadDecode(View.EXPANDED_K, Format.BF16, 16, 1, 12, Rounding.TOWARD_ZERO, True)),
    (View.EXPANDED_DEFAULT, 128, 0,
     ReadDecode(View.EXPANDED_DEFAULT, Format.BF16, 16, 1, 5, Rounding.TOWARD_ZERO, True)),
    (View.WEIGHT_MAJOR, 130, 0, ReadDecode(View.WEIGHT_MAJOR, Format.BF16, 16, 1, 16, Rounding.TOWARD_ZERO, True)),
    (View.RAW, 31, 0, None),        # below region 0
    (View.RAW, 96, 0, None),        # one past region 0's span
    (View.PACKED_K, 176, 1, None),  # one past region 1's span
    (View.RAW, 201, 0, None),       # misaligned region 2 is inactive
])
def test_decode_for_coverage_matches_the_golden_model(view, line, k_field, expected):
    model = programmed_model()
    address = model.address(view, line, k_field)
    decode = decode_for_coverage(model, address)
    assert decode == expected
    # the model serves the read exactly when the decode says mapped; None is a decode error, else a hole
    model.req(ReqOpcode.MEM_RD, address, tag=1)
    assert (model.counter(Counter.NXM_READS), model.counter(Counter.HOLE_READS)) == (
        (1, 0) if decode is None else (0, 0) if decode.mapped else (0, 1))


def test_hole_bins_name_the_kind_of_hole_and_the_poison_mode():
    model = programmed_model()
    cov = Coverage(DEFAULT)
    for (view, line, k), poison in (((View.PACKED_K, 34, 2), False), ((View.EXPANDED_K, 39, 9), True),
                                    ((7, 40, 0), False)):
        cov.sample_hole(decode_for_coverage(model, model.address(view, line, k)), poison)
    assert cov.bins()["hole"] == {"packed j >= k": 1, "illegal k": 1, "reserved view": 1, "hole poison off": 2,
                                  "hole poison on": 1}


def test_decode_high_bits_and_disabled_region():
    params = SMALL
    model = programmed_model(params)
    address = model.address(View.RAW, 40)
    assert decode_for_coverage(model, address).mapped
    assert decode_for_coverage(model, address | (1 << (params.hpa_bits - params.line_offset_bits))) is None
    model.program(region_csr_writes(params, 0, 32, 2, Format.INT, 8, 4, 3, Rounding.MIDPOINT, enable=False))
    assert decode_for_coverage(model, address) is None


def test_decode_feeds_coverage_end_to_end():
    model = programmed_model()
    cov = Coverage(DEFAULT)
    for view, line, k in ((View.EXPANDED_K, 175, 12), (View.PACKED_K, 34, 2)):
        address = model.address(view, line, k)
        cov.sample_req({"opcode": ReqOpcode.MEM_RD, "tag": 3, "address": address},
                       decode_for_coverage(model, address))
    assert hit_bins(cov) == {"req opcode/MEM_RD", "read view x format/EXPANDED_K/BF16", "format x k/BF16/k=12",
                             "format x plane run/BF16/R=1", "fill x format/TOWARD_ZERO/BF16"}
    assert format_name(Format.BF16, 16) == "BF16" and format_name(Format.INT, 2) == "INT2"


def test_merge_coverage_command_adds_runs_and_lists_what_both_missed(tmp_path, capsys):
    from smartquant.cli import main
    first, second = Coverage(ControllerParams()), Coverage(ControllerParams())
    first.sample_tag_reuse()
    second.sample_decode_error(True, True)
    paths = []
    for name, coverage in (("a.json", first), ("b.json", second)):
        path = tmp_path / name
        path.write_text(json.dumps(coverage.to_json()))
        paths.append(str(path))
    out = tmp_path / "merged.json"
    assert main(["sim", "--merge-coverage", *paths, "--coverage-report", str(out)]) == 1   # bins still missed
    merged = Coverage.from_json(ControllerParams(), json.loads(out.read_text()))
    assert (merged.bins()["tag reuse"]["tag reused"] == 1
            and merged.bins()["decode error"]["MemData-NXM poisoned"] == 1)
    assert "decode error/MemData" in capsys.readouterr().out


def test_axi_host_port_bins_replace_the_cxl_only_ones():
    """host_port = "axi": the host AXI channels' stall runs, burst lengths and ID reuse instead of the CXL
    channels' stalls and DevLoad; opcodes and write enables the AXI port can make (sim/axi_host_tb.py)."""
    from dataclasses import replace
    cov = Coverage(replace(DEFAULT, host_port="axi"))
    bins = cov.bins()
    assert "dev load" not in bins and "host burst" not in Coverage(DEFAULT).bins()
    assert list(bins["req opcode"]) == ["MEM_RD"] and list(bins["rwd opcode"]) == ["MEM_WR", "MEM_WR_PTL"]
    assert not [name for name in bins["stall"] if name.startswith("m2s") or name.startswith("s2m")]
    assert len(bins["stall"]) == (5 + 4) * 3
    cov.sample_host_burst("read", 1, False)
    cov.sample_host_burst("read", 16, False)
    cov.sample_host_burst("write", 16, True)
    cov.sample_stall("host_b", 9)
    cov.sample_drs({"dev_load": 2, "tag": 1, "poison": 0, "opcode": DrsOpcode.MEM_DATA})
    assert {"host burst/read/1 beat", "host burst/read/2-16 beats", "host id reuse/write",
            "stall/host_b/>=8 cycles"} == hit_bins(cov)
    assert not cov.unexpected
