"""smartquant verilog (not implemented yet)."""
from smartquant.errors import SmartquantError


def add_arguments(parser):
    pass


def run(args):
    raise SmartquantError("'verilog' is not implemented yet")
