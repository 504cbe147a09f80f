"""ControllerParams as command-line options, for every command that builds the controller (`smartquant verilog`,
`smartquant sim`): one option per field, named after it (--data-width, --n-regions, ...), with one help table."""
from __future__ import annotations

import dataclasses

from smartquant.errors import SmartquantError
from smartquant.params import ControllerParams

PARAMETER_HELP = {
    "data_width": "line width W in bits = weights per block: 64, 128, 256 or 512",
    "b_max": "widest storage format B the datapath supports: 2, 4, 8 or 16",
    "n_regions": "region-table entries, 1..16",
    "request_depth": "M2S reads the front end buffers",
    "buffer_slots": "assembled-block slots in the read engine's block buffer",
    "poison_entries": "poison list records (runs of poisoned DRAM lines) before the overflow rule applies",
    "dram_addr_bits": "AXI byte-address width = device capacity (log2 bytes)",
    "axi_id_bits": "AXI ID width of the DRAM port",
    "csr_addr_bits": "AXI4-Lite CSR address width",
    "host_port": "host interface: cxl (CXL.mem message ports) or axi (AXI4 subordinate, docs/DEVICE.md §10)",
    "host_axi_id_bits": "AXI ID width of the host port with --host-port axi, 1..16",
}
# older spellings still accepted
ALIASES = {"n_regions": ("--regions",)}


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_parameter_options(group, defaults: ControllerParams = ControllerParams(), notes: dict | None = None) -> None:
    """One option per ControllerParams field on `group` (a parser or argument group); `notes` adds a command's
    remark to a field's help (e.g. the range `smartquant sim` can simulate)."""
    for field in dataclasses.fields(ControllerParams):
        default = getattr(defaults, field.name)
        note = (notes or {}).get(field.name)
        group.add_argument(option_name(field.name), *ALIASES.get(field.name, ()), dest=field.name,
                           type=type(default), metavar=field.name.upper() if not isinstance(default, int) else "N",
                           default=default, help=f"{PARAMETER_HELP.get(field.name, field.name)}"
                                                 f"{f'; {note}' if note else ''} (default {default})")


def params_from_options(args) -> ControllerParams:
    """The ControllerParams of parsed options; ControllerParams' own checks become a clear command-line error."""
    try:
        return ControllerParams(**{field.name: getattr(args, field.name)
                                   for field in dataclasses.fields(ControllerParams)})
    except (TypeError, ValueError) as error:
        raise SmartquantError(str(error)) from None
