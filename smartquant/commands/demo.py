"""smartquant demo (not implemented yet)."""
from smartquant.errors import SmartquantError


def add_arguments(parser):
    pass


def run(args):
    raise SmartquantError("'demo' is not implemented yet")
