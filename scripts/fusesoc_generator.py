#!/usr/bin/env python3
"""FuseSoC generator (smartquant.core): writes the controller's Verilog for the requested parameters and a core
file that provides it.

FuseSoC calls it as `python3 fusesoc_generator.py <input.yml>` in the directory where the generated files go; the input
holds `parameters` (module name and ControllerParams fields) and `vlnv` (the generated core's name). The Verilog
comes from `smartquant verilog` (found as $SMARTQUANT, else on PATH, else `python3 -m smartquant.cli`), so the
same Amaranth sources and parameter checks as the CLI apply; a bad parameter stops the build with its message.
Needs only `yaml` (PyYAML), which FuseSoC itself depends on.
"""
import os
import shutil
import subprocess
import sys

import yaml

def option(name: str) -> str:
    """The `smartquant verilog` option of a ControllerParams field (the CLI names them after the fields)."""
    return "--" + name.replace("_", "-")


def smartquant_command() -> list:
    if os.environ.get("SMARTQUANT"):
        return [os.environ["SMARTQUANT"]]
    found = shutil.which("smartquant")
    return [found] if found else [sys.executable, "-m", "smartquant.cli"]


def main(input_file: str) -> int:
    with open(input_file) as handle:
        request = yaml.safe_load(handle)
    parameters = dict(request.get("parameters") or {})
    module = str(parameters.pop("module", "smartquant_top"))
    verilog = f"{module}.v"
    command = smartquant_command() + ["verilog", "-o", verilog, "--name", module]
    for name, value in parameters.items():
        # the CLI checks every parameter (a known field, an int, in range) with its own message
        command += [option(str(name)), str(value)]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError as error:
        print(f"smartquant generator: cannot run {command[0]} ({error}); activate the environment where "
              f"smartquant is installed or set SMARTQUANT=/path/to/bin/smartquant", file=sys.stderr)
        return 2
    if result.returncode != 0:
        print(f"smartquant generator: {' '.join(command)} failed:\n{result.stderr}", file=sys.stderr)
        return result.returncode
    core = {"name": request["vlnv"],
            "filesets": {"rtl": {"files": [verilog], "file_type": "verilogSource"}},
            "targets": {"default": {"filesets": ["rtl"], "toplevel": module}}}
    with open(request["vlnv"].split(":")[2] + ".core", "w") as handle:
        handle.write("CAPI=2:\n" + yaml.safe_dump(core, sort_keys=False))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: fusesoc_generator.py <fusesoc generator input .yml>", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
