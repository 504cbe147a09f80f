"""Where a command writes its results: one rule for every command."""
from __future__ import annotations

from pathlib import Path

from smartquant.errors import SmartquantError


def output_file(path, default) -> Path:
    """The file a command writes: `path`, or `default` when it is None or empty (relative paths are under the
    working directory), resolved to an absolute path (a simulator may write it from its own directory) and with
    its directory created. A directory given as the file, or a directory that cannot be created, is a clear
    error before any long run."""
    out = Path(path or default).resolve()
    if out.is_dir():
        raise SmartquantError(f"cannot write {out}: it is a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SmartquantError(f"cannot create directory {out.parent}: {error.strerror}") from None
    return out
