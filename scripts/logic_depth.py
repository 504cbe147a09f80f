"""Logic levels between registers on the synthesised ECP5 netlist: every deep path, not only the worst one.

nextpnr reports one critical path per clock, so each timing round found the next path only after a 30..60
minute build. On this design 80..90 % of a path's delay is general routing, one hop per logic level (a LUT
input, a carry chain's entry, a wide mux's select), so the number of levels between two flip-flops ranks the
paths without placing and routing. The tool synthesises the controller as `smartquant build` does (yosys
synth_ecp5, flattened, abc9), walks the cell graph from every flip-flop and block RAM input back to the
flip-flops, block RAM outputs and input ports that start its paths, and prints the deepest endpoints grouped
by register (bits of one signal together) with one worst path each.

    python -m smartquant.scripts.logic_depth [--data-width 128 --b-max 8 --ram-kib 64] [--min-levels 6]

A level is a LUT4, or a CCU2C entered through a LUT input; the slice's own wide-function muxes (PFUMX from
its LUTs, L6MUX21 from PFUMXs) and the carry chain (CIN from the previous COUT) are dedicated wires and add
no level, but their selects are general routing and do. The flip-flop's clock enable (CE) and reset (LSR)
are endpoints like its data input (DI): a wide enable is a path too.
At 75 MHz (13.3 ns) with the ~1.5..2.5 ns per hop the builds show, about six levels fit.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from smartquant.errors import SmartquantError
from smartquant.fpga.build import tool_error
from smartquant.scripts.packer_area import yosys_command

# input pins reached over a dedicated wire (no routing hop): (cell type, pin)
DEDICATED_PINS = {("PFUMX", "ALUT"), ("PFUMX", "BLUT"), ("L6MUX21", "D0"), ("L6MUX21", "D1"), ("CCU2C", "CIN")}
# cells whose outputs depend combinationally on their inputs (a LUT RAM through its read address)
COMBINATIONAL = {"LUT4", "CCU2C", "PFUMX", "L6MUX21", "TRELLIS_DPR16X4"}
# pins of TRELLIS_DPR16X4 on its asynchronous read path; the others (write port) are endpoints
LUTRAM_READ_PINS = {"RAD"}
IGNORED = {"$scopeinfo", "VHI", "VLO"}
AUTONAME = re.compile(r"_(TRELLIS_FF|TRELLIS_DPR16X4|LUT4|CCU2C|PFUMX|L6MUX21|DP16KD)_")


@dataclass(frozen=True)
class Endpoint:
    register: str     # the signal whose flip-flop (or RAM) the path ends at, bit index dropped
    pin: str          # DI, CE, LSR, ... (the cell's input)
    levels: int
    start: str        # the signal the deepest path starts at
    path: tuple       # signal names along that path, start first
    cells: tuple      # (cell type, count) of the cells on that path, e.g. (("CCU2C", 4), ("LUT4", 9))


def synthesised_netlist(component, name: str = "top") -> dict:
    """The flattened synth_ecp5 netlist of `component` (yosys JSON module), as `smartquant build` maps it."""
    text = rtlil.convert(component, name=name)
    with tempfile.TemporaryDirectory(prefix="logic_depth_") as tmp:
        Path(tmp, "design.il").write_text(text)
        # relative paths: the WebAssembly yosys sees its working directory, not the whole file system
        script = f"read_rtlil design.il; synth_ecp5 -top {name}; write_json design.json"
        result = subprocess.run(yosys_command() + ["-q", "-p", script, "-l", "yosys.log"],
                                capture_output=True, text=True, cwd=tmp)
        if result.returncode != 0 or not Path(tmp, "design.json").exists():
            log = Path(tmp, "yosys.log").read_text() if Path(tmp, "yosys.log").exists() else ""
            raise tool_error("yosys failed", result.stderr or log)
        return json.loads(Path(tmp, "design.json").read_text())["modules"][name]


def _bit_names(module: dict) -> dict[int, str]:
    """A readable signal name per net bit: the shortest user-given name (no `$`), bit index dropped."""
    names = {}
    for name, info in module["netnames"].items():
        # yosys's own names ($-names, and autoname's "<net>_<CELL>_<PIN>..." for nets abc9 made) rank last
        hidden = info.get("hide_name", 0) or "$" in name or bool(AUTONAME.search(name))
        for bit in info["bits"]:
            if not isinstance(bit, int):
                continue
            rank = (hidden, len(name))
            if bit not in names or rank < names[bit][0]:
                names[bit] = (rank, name)
    return {bit: re.sub(r"\s+", " ", name) for bit, (_, name) in names.items()}


def _drivers(cells: dict) -> dict[int, tuple[str, str]]:
    """Net bit -> (cell name, output pin) of the cell that drives it."""
    driver = {}
    for cell_name, cell in cells.items():
        if cell["type"] in IGNORED:
            continue
        for pin, bits in cell["connections"].items():
            if cell["port_directions"].get(pin) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit] = (cell_name, pin)
    return driver


def _comb_inputs(cell: dict):
    """(input bit, hop) pairs that reach a combinational cell's output: hop 0 over a dedicated wire."""
    kind = cell["type"]
    for pin, bits in cell["connections"].items():
        if cell["port_directions"].get(pin) != "input":
            continue
        if kind == "TRELLIS_DPR16X4" and pin not in LUTRAM_READ_PINS:
            continue
        hop = 0 if (kind, pin) in DEDICATED_PINS else 1
        for bit in bits:
            if isinstance(bit, int):
                yield bit, hop


def _levels_into(root: int, cells: dict, driver: dict, levels: dict, start_level,
                 came_from: dict | None = None) -> int | None:
    """Levels on the deepest path into net bit `root` (memoised in `levels`, each bit's deepest input in
    `came_from`): a bit not driven by a combinational cell starts paths at `start_level(bit)` (None: none start
    there), and a combinational cell's output is its deepest reached input plus that input's hop."""
    stack = [root]
    while stack:
        bit = stack[-1]
        if bit in levels:
            stack.pop()
            continue
        source = driver.get(bit)
        if source is None or cells[source[0]]["type"] not in COMBINATIONAL:
            levels[bit] = start_level(bit)
            stack.pop()
            continue
        inputs = list(_comb_inputs(cells[source[0]]))
        pending = [b for b, _ in inputs if b not in levels]
        if pending:
            stack.extend(pending)
            continue
        best, best_bit = None, None
        for b, hop in inputs:
            if levels[b] is not None and (best_bit is None or levels[b] + hop > best):
                best, best_bit = levels[b] + hop, b
        levels[bit] = best if best_bit is not None else start_level(bit)
        if best_bit is not None and came_from is not None:
            came_from[bit] = best_bit
        stack.pop()
    return levels[root]


def analyse_netlist(module: dict) -> list[Endpoint]:
    """Every register endpoint (signal, pin) with the most levels any of its bits has, deepest first."""
    cells = module["cells"]
    driver = _drivers(cells)
    for cell_name, cell in cells.items():
        kind = cell["type"]
        if kind not in COMBINATIONAL and kind not in IGNORED and not kind.startswith(("TRELLIS_FF", "DP16KD",
                                                                                       "MULT18X18D")):
            raise SmartquantError(f"cell type {kind} is not modelled by logic_depth; add it")
    names = _bit_names(module)

    levels: dict[int, int] = {}       # net bit -> levels from the nearest start point
    came_from: dict[int, int] = {}    # net bit -> the input bit of its deepest path

    def level_of(root: int) -> int:
        # every flip-flop / RAM output, input port and constant starts paths
        return _levels_into(root, cells, driver, levels, lambda bit: 0, came_from)

    def trace(bit: int) -> tuple[tuple, tuple]:
        """The named signals along the deepest path into `bit`, start first (nets abc9 made are skipped), and
        the cells it passes."""
        trail, kinds = [], defaultdict(int)
        while True:
            name = names.get(bit, "")
            if (bit not in came_from or not AUTONAME.search(name) and "$" not in name) \
                    and (not trail or trail[-1] != name):
                trail.append(name or f"<net {bit}>")
            if bit not in came_from:
                return tuple(reversed(trail)), tuple(sorted(kinds.items()))
            kinds[cells[driver[bit][0]]["type"]] += 1
            bit = came_from[bit]

    deepest: dict[tuple, Endpoint] = {}
    for cell_name, cell in cells.items():
        kind = cell["type"]
        if kind in COMBINATIONAL and kind != "TRELLIS_DPR16X4" or kind in IGNORED:
            continue
        out_bits = [b for pin, bits in cell["connections"].items()
                    if cell["port_directions"].get(pin) == "output" for b in bits if isinstance(b, int)]
        register = _strip_index(names.get(out_bits[0], cell_name)) if out_bits else cell_name
        for pin, bits in cell["connections"].items():
            if cell["port_directions"].get(pin) != "input" or pin in ("CLK", "WCK", "CLKA", "CLKB"):
                continue
            if kind == "TRELLIS_DPR16X4" and pin in LUTRAM_READ_PINS:
                continue
            for bit in bits:
                if not isinstance(bit, int):
                    continue
                depth = level_of(bit)
                key = (register, _pin_class(pin))
                if key not in deepest or depth > deepest[key].levels:
                    trail, kinds = trace(bit)
                    deepest[key] = Endpoint(register, _pin_class(pin), depth, trail[0], trail, kinds)
    for port, info in module["ports"].items():     # output ports end paths too
        if info["direction"] == "output":
            for bit in info["bits"]:
                if isinstance(bit, int):
                    depth = level_of(bit)
                    key = (port, "output")
                    if key not in deepest or depth > deepest[key].levels:
                        trail, kinds = trace(bit)
                        deepest[key] = Endpoint(port, "output", depth, trail[0], trail, kinds)
    return sorted(deepest.values(), key=lambda e: (-e.levels, e.register, e.pin))


def levels_from_port(module: dict, port: str) -> dict[str, int]:
    """Per flip-flop signal: the most levels on a path from input port `port` alone (paths that start at
    registers or other ports do not count): how near the registers a late-arriving input enters."""
    return _levels_from(module, {bit for bit in module["ports"][port]["bits"] if isinstance(bit, int)})


def levels_from_register(module: dict, register: str) -> dict[str, int]:
    """As levels_from_port, from the Q outputs of the flip-flops of signal `register` (e.g. a skid's valid)."""
    return _levels_from(module, _register_outputs(module, register))


def output_ports_reached_from_register(module: dict, register: str) -> set[str]:
    """The output ports that flip-flops of signal `register` reach through logic alone (no flip-flop between)."""
    level_of = _level_from(module, _register_outputs(module, register))
    return {port for port, info in module["ports"].items() if info["direction"] == "output"
            and any(isinstance(bit, int) and level_of(bit) is not None for bit in info["bits"])}


def lut_ram_read_pointers(module: dict) -> list[str]:
    """The flip-flop signals that drive a LUT RAM's (TRELLIS_DPR16X4) read address: with levels_from_register,
    where the RAM's asynchronous read reaches."""
    names, driver, cells = _bit_names(module), _drivers(module["cells"]), module["cells"]
    pointers = set()
    for cell in cells.values():
        if cell["type"] == "TRELLIS_DPR16X4":
            for bit in cell["connections"]["RAD"]:
                source = driver.get(bit) if isinstance(bit, int) else None
                if source is not None and cells[source[0]]["type"].startswith("TRELLIS_FF"):
                    pointers.add(_strip_index(names.get(bit, "")))
    return sorted(pointers)


def _register_outputs(module: dict, register: str) -> set[int]:
    """The Q bits of the flip-flops of signal `register`."""
    names = _bit_names(module)
    start = {cell["connections"]["Q"][0] for cell in module["cells"].values()
             if cell["type"].startswith("TRELLIS_FF")
             and _strip_index(names.get(cell["connections"]["Q"][0], "")) == register}
    if not start:
        raise ValueError(f"no flip-flop of signal {register!r} in the netlist")
    return start


def _level_from(module: dict, start: set[int]):
    """level_of(bit): the most levels from the `start` bits into net bit `bit`, None when none of them reaches it."""
    cells = module["cells"]
    driver = _drivers(cells)
    levels: dict[int, int | None] = {}      # net bit -> levels from the start bits, None: not reached from them

    def level_of(root: int) -> int | None:
        return _levels_into(root, cells, driver, levels, lambda bit: 0 if bit in start else None)
    return level_of


def _levels_from(module: dict, start: set[int]) -> dict[str, int]:
    level_of = _level_from(module, start)
    names = _bit_names(module)
    result: dict[str, int] = {}
    for cell in module["cells"].values():
        if not cell["type"].startswith("TRELLIS_FF"):
            continue
        register = _strip_index(names.get(cell["connections"]["Q"][0], ""))
        for pin in ("DI", "CE", "LSR"):
            for bit in cell["connections"].get(pin, []):
                if isinstance(bit, int) and (depth := level_of(bit)) is not None:
                    result[register] = max(result.get(register, 0), depth)
    return result


def _strip_index(name: str) -> str:
    return re.sub(r"\[\d+\]$", "", name)


def _pin_class(pin: str) -> str:
    """DI / CE / LSR for a flip-flop, else the pin name without its bit index (a RAM's DIA, ADA ...)."""
    return re.sub(r"\d+$", "", pin) if pin not in ("DI", "CE", "LSR", "M") else pin


def analyse(component) -> list[Endpoint]:
    return analyse_netlist(synthesised_netlist(component))


def histogram(endpoints: list[Endpoint]) -> dict[int, int]:
    counts = defaultdict(int)
    for endpoint in endpoints:
        counts[endpoint.levels] += 1
    return dict(sorted(counts.items()))


def main(argv=None) -> int:
    from smartquant.fpga.system import board_params
    from smartquant.hdl.top import SmartQuantController
    parser = argparse.ArgumentParser(prog="python -m smartquant.scripts.logic_depth",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="The controller is synthesised with the board's parameters "
                                            "(fpga/system.py board_params), as `smartquant build` has it.")
    parser.add_argument("--data-width", type=int, default=128, help="line width W in bits (default 128)")
    parser.add_argument("--b-max", type=int, default=8, help="widest stored B (default 8)")
    parser.add_argument("--ram-kib", type=int, default=64, help="board RAM in KiB (default 64)")
    parser.add_argument("--min-levels", type=int, default=6,
                        help="list the endpoints with at least this many levels (default 6)")
    parser.add_argument("--show-paths", type=int, default=15, help="print the worst path of the N deepest (default 15)")
    parser.add_argument("--json", type=Path, help="also write every endpoint as JSON")
    args = parser.parse_args(argv)
    try:
        params = board_params(args.data_width, args.b_max, args.ram_kib * 1024)
    except SmartquantError as error:
        parser.error(str(error))
    print(f"synthesising SmartQuantController({params.key()}) with yosys synth_ecp5 ...", flush=True)
    began = time.monotonic()
    try:
        endpoints = analyse(SmartQuantController(params))
    except SmartquantError as error:
        print(f"error: {error}")
        return 1
    print(f"done in {time.monotonic() - began:.0f} s; {len(endpoints)} endpoints (register x pin)")
    print("levels: endpoints  " + "  ".join(f"{lv}: {n}" for lv, n in histogram(endpoints).items()))
    deep = [e for e in endpoints if e.levels >= args.min_levels]
    print(f"\n{len(deep)} endpoints with >= {args.min_levels} levels:")
    print(f"{'levels':>6}  {'pin':6} {'register':60} start")
    for e in deep:
        print(f"{e.levels:6}  {e.pin:6} {e.register[:60]:60} {e.start}")
    for e in deep[:args.show_paths]:
        cells = ", ".join(f"{count} {kind}" for kind, count in e.cells)
        print(f"\n{e.levels} levels to {e.register} ({e.pin}; {cells}):\n  " + "\n  -> ".join(e.path))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([e.__dict__ for e in endpoints], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
