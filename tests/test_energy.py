"""Energy constants (golden/energy.py): the DRAMsim3 derivation worked by hand, and a report computed by hand."""
import pytest

from smartquant.errors import SmartquantError
from smartquant.golden.device import DeviceModel, region_csr_writes
from smartquant.golden.dram import count_activates
from smartquant.golden.energy import DDR4_3200_X8, LINK_PJ_PER_BIT, DramPowerSpec, energy_report
from smartquant.params import ControllerParams, Counter, Format, ReqOpcode, View


def test_ddr4_derivation_by_hand():
    spec = DDR4_3200_X8
    assert spec.trc == 74 and spec.devices_per_rank == 8
    # 1.2 V * (57*74 - (52*52 + 37*22)) mA*cycles = 1.2 * 700 = 840; * 0.63 ns = 529.2 pJ
    assert spec.activate_pj_per_device == pytest.approx(529.2)
    assert spec.activate_pj_per_rank == pytest.approx(8 * 529.2)
    # 1.2 * (168 - 52) * 4 cycles * 0.63 ns = 350.784 pJ per 64-bit burst of one device
    assert spec.read_pj_per_bit == pytest.approx(350.784 / 64)
    # 1.2 * (150 - 52) * 4 * 0.63 = 296.352 pJ per burst
    assert spec.write_pj_per_bit == pytest.approx(296.352 / 64)
    # the design card's rounded figures
    assert round(spec.activate_pj_per_device / 1000, 2) == 0.53
    assert round(spec.read_pj_per_bit, 1) == 5.5 and round(spec.write_pj_per_bit, 1) == 4.6


def test_spec_scales_with_device_width():
    x16 = DramPowerSpec(vdd=1.2, idd0=57, idd2n=37, idd3n=52, idd4r=168, idd4w=150, tck_ns=0.63, tras=52, trp=22,
                        burst_length=8, device_width=16)
    assert x16.devices_per_rank == 4
    assert x16.read_pj_per_bit == pytest.approx(DDR4_3200_X8.read_pj_per_bit / 2)   # same current, twice the bits


def test_energy_report_by_hand():
    counters = {"dram_lines_read": 10, "dram_lines_written": 2, "drs_sent": 4, "req_mem_rd": 4, "rwd_mem_wr": 1,
                "buffer_hits": 99}
    report = energy_report(counters, activates=3, line_bits=512, link_pj_per_bit=5.0, controller_pj_per_event=10.0)
    activate = 3 * 8 * 529.2
    read = 10 * 512 * 350.784 / 64
    written = 2 * 512 * 296.352 / 64
    link = (4 + 1) * 512 * 5.0                   # 4 DRS lines + 1 RwD line
    controller = (4 + 1 + 10 + 2) * 10.0         # host messages + backend lines
    total = activate + read + written + link + controller
    assert report["dram_activate_pj"] == pytest.approx(activate)
    assert report["dram_read_pj"] == pytest.approx(read)
    assert report["dram_write_pj"] == pytest.approx(written)
    assert report["dram_pj"] == pytest.approx(activate + read + written)
    assert report["link_pj"] == pytest.approx(link)
    assert report["controller_pj"] == pytest.approx(controller)
    assert report["total_pj"] == pytest.approx(total)
    assert report["pj_per_request"] == pytest.approx(total / 5)
    assert report["pj_per_line_delivered"] == pytest.approx(total / 4)
    # the same counters keyed by Counter give the same report
    by_enum = {Counter.DRAM_LINES_READ: 10, Counter.DRAM_LINES_WRITTEN: 2, Counter.DRS_SENT: 4,
               Counter.REQ_MEM_RD: 4, Counter.RWD_MEM_WR: 1}
    assert energy_report(by_enum, 3, link_pj_per_bit=5.0, controller_pj_per_event=10.0) == report
    assert energy_report({}, 0)["pj_per_request"] == 0.0
    with pytest.raises(SmartquantError):
        energy_report(counters, -1)


def test_streaming_energy_per_line_falls_with_k():
    """Packed-k streaming of a row-aligned region: DRAM and link energy both scale down with k."""
    params = ControllerParams()
    reports = []
    for k in (8, 4, 2):
        model = DeviceModel(params, 1 << 17)
        model.program(region_csr_writes(params, 0, 0, 1, Format.INT, 8, 64, k, 0))
        for block in range(64):
            for j in range(k):
                model.req(ReqOpcode.MEM_RD, model.address(View.PACKED_DEFAULT, block * 8 + j), 1)
        activates = count_activates(model.backend_lines()).activates
        reports.append(energy_report(model.counters, activates))
    assert reports[0]["dram_read_pj"] == pytest.approx(2 * reports[1]["dram_read_pj"])
    assert reports[0]["link_pj"] == pytest.approx(4 * reports[2]["link_pj"])
    assert reports[0]["link_pj"] == 64 * 8 * 512 * LINK_PJ_PER_BIT
    totals = [r["total_pj"] for r in reports]
    assert totals[0] > totals[1] > totals[2]
    # the energy of one delivered packed line hardly moves: DRAM cost per block is k lines for k lines out
    per_line = [r["pj_per_line_delivered"] for r in reports]
    assert max(per_line) / min(per_line) < 1.5
