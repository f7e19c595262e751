"""The JSONL metrics log: one JSON object per finished epoch (and one final summary)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .checkpoint import write_text_atomic


class MetricsLog:
    """Appends records to ``path``; each line is one complete JSON object."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every complete record (a line torn by a kill is skipped)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_to(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the log as exactly ``history`` (the records of a checkpoint being resumed),
        dropping epochs a killed run logged after its last checkpoint."""
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
        write_text_atomic(text, self.path)
