"""smartquant build (not implemented yet)."""
from smartquant.errors import SmartquantError


def add_arguments(parser):
    pass


def run(args):
    raise SmartquantError("'build' is not implemented yet")
