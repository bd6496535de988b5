"""Small helpers for the label CSVs of the public datasets (stdlib csv, no pandas)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path


class LabelFileError(ValueError):
    """A label file that cannot be read as documented; the message names file, row and value."""


def read_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, row)`` of a CSV with a header that holds every ``required`` column.

    Raises
    ------
    LabelFileError
        When the file is missing or a required column is absent.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise LabelFileError(f"{path}: cannot read label file ({exc.strerror})") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [column for column in required if column not in header]
        if missing:
            raise LabelFileError(f"{path}: columns {missing} missing (header: {header})")
        reader.fieldnames = header
        for row in reader:
            yield reader.line_num, {key: (value or "").strip() for key, value in row.items() if key}


def binary(path: Path, line: int, column: str, value: str) -> int:
    """A 0/1 cell as int; anything else is an error that names the cell."""
    if value in ("0", "1"):
        return int(value)
    try:
        number = float(value)
    except ValueError:
        number = None
    if number in (0.0, 1.0):
        return int(number)
    raise LabelFileError(f"{path}:{line}: column {column} must be 0 or 1, found {value!r}")
