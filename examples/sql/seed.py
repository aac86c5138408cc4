"""Make the SQLite database the SQL example reads: a table of scores by name."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

SCORES = {"Tom": "630", "Jack": "589", "Sam": "567"}


def seed(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS scores (name TEXT PRIMARY KEY, score TEXT NOT NULL)")
        db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", SCORES.items())
    db.close()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("scores.db")
    seed(target)
    print(f"{target}: {len(SCORES)} scores")
