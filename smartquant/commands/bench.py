"""smartquant bench (not implemented yet)."""
from smartquant.errors import SmartquantError


def add_arguments(parser):
    pass


def run(args):
    raise SmartquantError("'bench' is not implemented yet")
