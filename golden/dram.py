"""Open-page DRAM row model: activates and row hits of a backend line-address stream.

Each bank keeps its last row open (open-page policy, as DRAMsim3's `row_buf_policy = OPEN_PAGE`). An access to
the open row is a row hit; any other access activates its row (the precharge of the old row is implied). The
model counts commands only: no timing, no refresh, no scheduling (accesses are served in the order given).

Default geometry, one rank of DDR4 (DRAMsim3 configs/DDR4_8Gb_x8_3200.ini, [dram_structure] and [system]):
4 bank groups x 4 banks, 65536 rows, 1024 columns of an x8 device = 1 KiB page per device, 8 devices on the
64-bit bus -> 8 KiB row per rank; one 64-byte line = one BL8 burst. Address mapping MSB -> LSB is
"row:bank:bankgroup:column", DRAMsim3's `rochrababgco` with one channel and one rank. A DDR5-like geometry
(8 bank groups x 4 banks) is `DramGeometry(bankgroups=8)`.

The mapping is a ':'-separated list of the fields row, bank, bankgroup and column, most significant first,
in units of lines (the byte offset inside a line is below them). Column takes log2(row_bytes / line_bytes) bits,
bank log2(banks_per_group), bankgroup log2(bankgroups), row log2(rows); line-address bits above all of them
extend the row number (a larger device), so no address is rejected.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smartquant.errors import SmartquantError

FIELDS = ("row", "bank", "bankgroup", "column")


def _log2(value: int, name: str) -> int:
    if value < 1 or value & (value - 1):
        raise SmartquantError(f"{name} must be a power of two >= 1, got {value}")
    return value.bit_length() - 1


@dataclass(frozen=True)
class DramGeometry:
    row_bytes: int = 8192            # per rank: 1 KiB page x 8 devices
    bankgroups: int = 4
    banks_per_group: int = 4
    rows: int = 65536
    line_bytes: int = 64             # one backend beat (the device's W/8)
    mapping: str = "row:bank:bankgroup:column"

    def __post_init__(self):
        names = self.mapping.split(":")
        if sorted(names) != sorted(FIELDS) and not (self.bankgroups == 1 and sorted(names) == sorted(
                name for name in FIELDS if name != "bankgroup")):
            raise SmartquantError(f"address mapping must order the fields {', '.join(FIELDS)} (bankgroup may be "
                                  f"left out when bankgroups = 1), got {self.mapping!r}")
        if self.row_bytes < self.line_bytes:
            raise SmartquantError(f"row_bytes ({self.row_bytes}) must hold at least one line ({self.line_bytes})")
        for name in ("row_bytes", "bankgroups", "banks_per_group", "rows", "line_bytes"):
            _log2(getattr(self, name), name)

    @property
    def banks(self) -> int:
        return self.bankgroups * self.banks_per_group

    @property
    def lines_per_row(self) -> int:
        return self.row_bytes // self.line_bytes

    def field_bits(self) -> dict[str, int]:
        return {"row": _log2(self.rows, "rows"), "bank": _log2(self.banks_per_group, "banks_per_group"),
                "bankgroup": _log2(self.bankgroups, "bankgroups"),
                "column": _log2(self.lines_per_row, "lines per row")}

    def decode(self, lines) -> tuple[np.ndarray, np.ndarray]:
        """(bank id, row) of each line address; bank id = bankgroup * banks_per_group + bank."""
        lines = np.asarray(lines, dtype=np.int64)
        if lines.size and lines.min() < 0:
            raise SmartquantError("line addresses must be >= 0")
        widths = self.field_bits()
        values, shift = {}, 0
        for name in reversed(self.mapping.split(":")):
            values[name] = (lines >> shift) & ((1 << widths[name]) - 1)
            shift += widths[name]
        row = values["row"] | ((lines >> shift) << widths["row"])
        bank = values.get("bankgroup", 0) * self.banks_per_group + values["bank"]
        return np.asarray(bank, dtype=np.int64), row


@dataclass
class RowStats:
    accesses: int = 0
    activates: int = 0
    row_hits: int = 0


@dataclass
class RowModel:
    """Open rows per bank, carried across `replay` calls (one device, accesses in issue order)."""
    geometry: DramGeometry = field(default_factory=DramGeometry)
    open_rows: dict[int, int] = field(default_factory=dict)
    stats: RowStats = field(default_factory=RowStats)

    def replay(self, lines) -> RowStats:
        """Apply a stream of line addresses; returns the counts of this stream (totals stay in `stats`)."""
        bank, row = self.geometry.decode(lines)
        if bank.size == 0:
            return RowStats()
        # an access activates unless the previous access to the same bank opened the same row: group the
        # stream by bank (stable, so each bank keeps its order) and compare neighbours
        order = np.argsort(bank, kind="stable")
        bank, row = bank[order], row[order]
        first_of_bank = np.ones(bank.size, dtype=bool)
        first_of_bank[1:] = bank[1:] != bank[:-1]
        activates = np.ones(bank.size, dtype=bool)
        activates[1:] = first_of_bank[1:] | (row[1:] != row[:-1])
        for position in np.flatnonzero(first_of_bank):
            activates[position] = self.open_rows.get(int(bank[position])) != int(row[position])
        last_of_bank = np.append(first_of_bank[1:], True)
        self.open_rows.update(zip(bank[last_of_bank].tolist(), row[last_of_bank].tolist()))
        result = RowStats(accesses=int(bank.size), activates=int(activates.sum()),
                          row_hits=int(bank.size - activates.sum()))
        self.stats.accesses += result.accesses
        self.stats.activates += result.activates
        self.stats.row_hits += result.row_hits
        return result


def count_activates(lines, geometry: DramGeometry | None = None) -> RowStats:
    """Activates and row hits of one stream from all banks closed."""
    return RowModel(geometry or DramGeometry()).replay(lines)
