"""Plain-text aligned tables, the one formatter every report of the project prints with."""
from __future__ import annotations


def text_table(headers: list[str], rows: list[list[str]], left: frozenset[int] | set[int] = frozenset({0})) -> str:
    """Header, dashes and rows of already formatted cells; columns in `left` left-aligned, the rest right."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
