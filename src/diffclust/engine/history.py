"""Per-epoch metrics written as they come: JSON lines for programs, CSV for people."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from diffclust.engine.checkpoint import atomic_write_text


class MetricsLog:
    """Keeps every epoch's record; writes metrics.jsonl and metrics.csv in `folder` (if given)."""

    def __init__(self, folder: str | Path | None, records: list[dict[str, Any]] | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.records: list[dict[str, Any]] = list(records or [])

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))
        self.write()

    def write(self) -> None:
        if self.folder is None:
            return
        atomic_write_text(self.folder / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))
        columns: list[str] = []
        for record in self.records:
            columns.extend(key for key in record if key not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write_text(self.folder / "metrics.csv", buffer.getvalue())
