"""The one exception type users see as a clean message (no traceback) from the CLI."""


class SmartquantError(Exception):
    """Bad input or a missing prerequisite, described in words a user can act on."""
