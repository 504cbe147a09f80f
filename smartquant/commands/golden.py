"""smartquant golden (not implemented yet)."""
from smartquant.errors import SmartquantError


def add_arguments(parser):
    pass


def run(args):
    raise SmartquantError("'golden' is not implemented yet")
