"""Reading the CSV files people hand us (labels.csv, assignments.csv) with errors that name the
file, the row and the fix, instead of a decoder's or the csv module's traceback."""

from __future__ import annotations

import csv
from pathlib import Path

from diffclust.data.names import NAME_ERRORS
from diffclust.errors import DiffclustError


def read_csv_rows(path: str | Path, required: set[str], expected: str,
                  written_by_diffclust: bool = False) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(column names, [(row number as a spreadsheet shows it, row)]) of a UTF-8 CSV file that
    has the `required` columns; `expected` describes the layout for the error message. A file
    diffclust wrote keeps file names that are not UTF-8 as the disk's bytes (data.names)."""
    path = Path(path)
    if path.is_dir():
        raise DiffclustError(f"'{path}' is a folder; expected a CSV file ({expected}).")
    if not path.is_file():
        raise DiffclustError(f"'{path}' does not exist; expected a CSV file ({expected}).")
    try:
        with open(path, newline="", encoding="utf-8-sig", errors=NAME_ERRORS if written_by_diffclust else "strict") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            if not required <= set(columns):
                raise DiffclustError(f"{path}: needs the columns {', '.join(sorted(required))} (found {columns or 'none'}); "
                                     f"expected {expected}.")
            rows = [(number, {key: (value or "") for key, value in row.items() if key is not None})
                    for number, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as error:
        raise DiffclustError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8 "
                             "(in a spreadsheet: 'CSV UTF-8'), or is it a CSV file at all?") from None
    except csv.Error as error:
        raise DiffclustError(f"{path}: not a readable CSV file near line {reader.line_num}: {error}.") from None
    return columns, rows


def integer_cell(row: dict[str, str], column: str, path: Path | str, number: int, blank_ok: bool = False) -> int | None:
    """The integer in `column` of a row, or a clear error naming the file, row and value."""
    text = row.get(column, "").strip()
    if not text and blank_ok:
        return None
    try:
        return int(text)
    except ValueError:
        raise DiffclustError(f"{path}: row {number} has {column} '{text[:40]}'; {column} values must be integers"
                             + (" (put names in a 'class_name' column)." if column == "label" else ".")) from None


def label_cells(rows: list[tuple[int, dict[str, str]]], path: Path | str) -> tuple[dict[int, int | None], dict[int, str], bool]:
    """({row number: label or None when blank}, {label: class name}, whether the labels were names).

    Integer labels are kept (their names from a 'class_name' column). Labels written as names
    (circle, square) are numbered in sorted order, so the same names always get the same
    numbers, and the names become the class names."""
    texts = {number: row.get("label", "").strip() for number, row in rows}
    given = [text for text in texts.values() if text]
    if all(_parses_as(text, int) for text in given):
        labels = {number: int(text) if text else None for number, text in texts.items()}
        names = {labels[number]: row["class_name"].strip() for number, row in rows
                 if labels[number] is not None and (row.get("class_name") or "").strip()}
        return labels, names, False
    numbered = {name: index for index, name in enumerate(sorted(set(given)))}
    return {number: numbered[text] if text else None for number, text in texts.items()}, {i: n for n, i in numbered.items()}, True


#: a cell starting with one of these runs as a formula when a spreadsheet opens the CSV
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _parses_as(text: str, kind: type) -> bool:
    """Whether `kind(text)` reads the cell (int: a label number; float: any number)."""
    try:
        kind(text)
    except ValueError:
        return False
    return True


def spreadsheet_safe(value):
    """A text cell that a spreadsheet would run as a formula (a file named '=HYPERLINK(...).jpg'),
    prefixed with an apostrophe, the usual neutraliser; numbers and other cells unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _parses_as(value, float):
        return "'" + value
    return value


def from_spreadsheet_safe(text: str) -> str:
    """The original text of a cell written by `spreadsheet_safe`."""
    return text[1:] if text.startswith("'") and text[1:2] and text[1] in FORMULA_START and not _parses_as(text[1:], float) else text
