"""Where the area goes: yosys synth_ecp5 of the whole controller (not the board wrapper), per unit.

Usage: python -m smartquant.scripts.area_report [--data-width 128] [--b-max 8] [--ram-kib 64] [--no-flat]
                                                 [--json FILE]

Two yosys runs on SmartQuantController(board_params(W, b_max, RAM)) (fpga/system.py, the board's parameters):
- hierarchical (`synth_ecp5 -noflatten`): every Amaranth submodule is synthesised alone, so each unit's LUT4 /
  CCU2C / PFUMX / L6MUX21 / FF (and LUT RAM, block RAM) are its own; the rows below sum exactly to this run's
  total. A unit's row holds its own logic and every submodule not listed as a row of its own (FIFOs, skids).
  Its LUT mapping is yosys's `abc -lut 4:7`, not synth_ecp5's `abc9`: abc9 on the unflattened controller stops
  on an internal assertion in yosys 0.70 (ABC_OPS_REINTEGRATE, in the write path). Without flattening, no
  constant or unused port is optimised across a unit's boundary either, so these rows add up to more than
- the flattened run (plain `synth_ecp5`, what `smartquant build` gives nextpnr): the whole-design figure.
The projected TRELLIS_COMB is LUT4 + 2 x CCU2C (a CCU2C is one slice, two LUT4 positions), against the
ECP5-85F's 83,640. The table is printed and saved as JSON (--json, default build/area/area-W<W>-b<B>.json).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from smartquant.errors import SmartquantError
from smartquant.fpga.build import tool_error
from smartquant.scripts.packer_area import yosys_command

CELLS = ("LUT4", "CCU2C", "PFUMX", "L6MUX21", "TRELLIS_FF", "TRELLIS_DPR16X4", "DP16KD")
ECP5_85F_LUTS = 83_640
TOP = "top"
# Rows of the table: hierarchical paths below the top whose subtrees are reported apart from their parents'.
UNIT_PATHS = (
    "frontend", "read_engine", "read_engine.packer", "read_engine.reader", "write_path",
    "write_path.gather_buffer", "write_path.write_table", "write_path.axi_writer", "poison_list", "csr_block",
    "ndr_arbiter", "axi_drain",
)
UNIT_NAMES = {
    "": "top glue (DevLoad, counters' sums)",
    "read_engine": "read engine (rest: stages, serve, buffer)",
    "read_engine.packer": "  packer",
    "read_engine.reader": "  AxiReader",
    "write_path": "write path (rest: skid, held, decode)",
    "write_path.gather_buffer": "  GatherBuffer",
    "write_path.write_table": "  WriteTable",
    "write_path.axi_writer": "  AxiWriter",
}


def projected_comb(counts: dict[str, int]) -> int:
    """TRELLIS_COMB estimate before packing: a LUT4 each, a CCU2C two."""
    return counts["LUT4"] + 2 * counts["CCU2C"]


def _run_yosys(il_text: str, flatten: bool) -> tuple[dict, float]:
    """(yosys `stat -json` report, seconds) of synth_ecp5 on an RTLIL design whose top module is TOP."""
    with tempfile.TemporaryDirectory(prefix="area_report_") as tmp:
        (Path(tmp) / "design.il").write_text(il_text)
        # relative paths: the WebAssembly yosys sees its working directory, not the whole file system
        if flatten:
            synthesis = f"synth_ecp5 -top {TOP}"
        else:   # synth_ecp5 -noflatten with abc in place of abc9 (see the module's docstring)
            synthesis = (f"synth_ecp5 -noflatten -top {TOP} -run begin:map_luts; "
                         "techmap -map +/lattice/latches_map.v; abc -lut 4:7; clean; "
                         f"synth_ecp5 -noflatten -top {TOP} -run map_cells:edif")
        script = f"read_rtlil design.il; {synthesis}; tee -q -o stat.json stat -json"
        began = time.monotonic()
        result = subprocess.run(yosys_command() + ["-q", "-p", script, "-l", "yosys.log"],
                                capture_output=True, text=True, cwd=tmp)
        seconds = time.monotonic() - began
        stat_path = Path(tmp) / "stat.json"
        if result.returncode != 0 or not stat_path.exists():
            log = (Path(tmp) / "yosys.log").read_text() if (Path(tmp) / "yosys.log").exists() else ""
            raise tool_error("yosys failed", result.stderr or log)
        return json.loads(stat_path.read_text()), seconds


def module_cells(stat: dict) -> dict[str, dict[str, int]]:
    """Per module (hierarchical path below TOP, "" for TOP itself): cell type -> count, submodule instances
    included under their module's name."""
    modules = {}
    for name, report in stat["modules"].items():
        name = name.lstrip("\\")
        if name != TOP and not name.startswith(TOP + "."):
            raise SmartquantError(f"unexpected module {name!r} in the yosys report")
        modules[name[len(TOP) + 1:]] = dict(report["num_cells_by_type"])
    return modules


def unit_table(modules: dict[str, dict[str, int]], unit_paths=UNIT_PATHS) -> dict[str, dict[str, int]]:
    """Cells per row: each module's own cells go to the nearest listed ancestor (itself if listed, TOP's row
    "" if none), so the rows add up to the whole hierarchy."""
    rows = {"": dict.fromkeys(CELLS, 0)}
    rows.update({path: dict.fromkeys(CELLS, 0) for path in unit_paths})
    for path, cells in modules.items():
        owner = path
        while owner and owner not in rows:
            owner = owner.rpartition(".")[0]
        for cell, count in cells.items():
            if cell in CELLS:
                rows[owner][cell] += count
            elif not cell.lstrip("\\").startswith(TOP + "."):   # submodule instances are counted as modules
                raise SmartquantError(f"cell type {cell!r} is neither a reported cell nor a submodule; "
                                      "add it to CELLS")
    return rows


def flat_cells(stat: dict) -> dict[str, int]:
    """The reported cells of the whole design (of every module under the top, for a hierarchical run)."""
    cells = stat["design"]["num_cells_by_type"]
    return {cell: cells.get(cell, 0) for cell in CELLS}


def _measure_units(il_text: str) -> dict:
    """Per-unit rows of the hierarchical run and their sum, checked against yosys's own count."""
    hier_stat, hier_seconds = _run_yosys(il_text, flatten=False)
    rows = unit_table(module_cells(hier_stat))
    total = {cell: sum(row[cell] for row in rows.values()) for cell in CELLS}
    # yosys's own count over the hierarchy: the rows must add up to it
    if total != flat_cells(hier_stat):
        raise SmartquantError(f"the unit rows add up to {total}, yosys counts {flat_cells(hier_stat)}")
    return {"rows": rows, "hierarchical_total": total, "hierarchical_seconds": round(hier_seconds, 1)}


def measure(params, flatten: bool = True, per_unit: bool = True) -> dict:
    """The report for one parameter set: per-unit rows and their sum (if `per_unit`), the flattened whole (if
    `flatten`)."""
    from smartquant.hdl.top import SmartQuantController   # imported late: the top is the heaviest module
    il_text = rtlil.convert(SmartQuantController(params), name=TOP)
    report = {"params": params.key(), "data_width": params.data_width, "b_max": params.b_max}
    if per_unit:
        report.update(_measure_units(il_text))
    if flatten:
        try:
            flat_stat, flat_seconds = _run_yosys(il_text, flatten=True)
        except SmartquantError as error:   # keep the per-unit rows; say why the whole figure is missing
            report["flat_error"] = next((line for line in str(error).splitlines() if "ERROR" in line),
                                        str(error)[-300:])
        else:
            report["flat"] = flat_cells(flat_stat)
            report["flat_seconds"] = round(flat_seconds, 1)
    return report


def format_table(report: dict) -> str:
    header = f"{'unit':<42}" + "".join(f"{c.replace('TRELLIS_', ''):>9}" for c in CELLS) + f"{'~COMB':>8}{'%85F':>7}"
    lines = [f"W={report['data_width']} b_max={report['b_max']} ({report['params']})", header]

    def line(name, counts):
        comb = projected_comb(counts)
        return (f"{name:<42}" + "".join(f"{counts[c]:>9}" for c in CELLS)
                + f"{comb:>8}{100 * comb / ECP5_85F_LUTS:>6.1f}%")

    for path, counts in report.get("rows", {}).items():
        lines.append(line(UNIT_NAMES.get(path, path), counts))
    if "hierarchical_total" in report:
        lines.append(line("sum of the rows (hierarchical synthesis)", report["hierarchical_total"]))
    if "flat" in report:
        lines.append(line("whole controller, flattened", report["flat"]))
    if "flat_error" in report:
        lines.append(f"whole controller, flattened: yosys failed: {report['flat_error']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from smartquant.fpga.system import board_params
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-width", type=int, default=128, help="line width W in bits (default 128)")
    parser.add_argument("--b-max", type=int, default=8, help="widest stored B (default 8)")
    parser.add_argument("--ram-kib", type=int, default=64, help="board RAM in KiB, sets dram_addr_bits (default 64)")
    parser.add_argument("--no-flat", action="store_true", help="skip the flattened whole-design run")
    parser.add_argument("--flat-only", action="store_true", help="only the flattened run (no per-unit rows)")
    parser.add_argument("--json", metavar="FILE", default=None, help="where to save the report")
    args = parser.parse_args(argv)
    try:
        params = board_params(args.data_width, args.b_max, args.ram_kib * 1024)
        report = measure(params, flatten=not args.no_flat, per_unit=not args.flat_only)
    except SmartquantError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(report))
    out = Path(args.json or f"build/area/area-W{args.data_width}-b{args.b_max}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    seconds = [f"{report[key]} s {name}" for key, name in (("hierarchical_seconds", "hierarchical"),
                                                           ("flat_seconds", "flattened")) if key in report]
    print(f"saved {out} (yosys {', '.join(seconds)})")
    return 1 if "flat_error" in report else 0


if __name__ == "__main__":
    sys.exit(main())
