"""`tuneforge grader run`: grade a file of answers against a file of rows, pairing them line by line.

Rows are any JSON objects (RL rows: messages + the keys the grader reads); answers are one per line, either a JSON
string or an object with `output_text` (and optionally `output_json`, `output_tools`). Errors name file and line.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.errors import DataError
from tuneforge.graders.core import Grader, Result, sample_from_text


def read_pairs(data: str | Path, samples: str | Path) -> tuple[list[dict], list[dict], list[str]]:
    """(samples, items, "file:line" of each row): equal counts, or a DataError naming the file."""
    from tuneforge.data.load import read_records

    items, where = [], []
    for line, rec in read_records(data):
        if not isinstance(rec, dict):
            raise DataError(f"expected an object, got {type(rec).__name__}", path=str(data), line=line,
                            code="data_type")
        items.append(rec)
        where.append(f"{data}:{line}")
    out = []
    for line, rec in read_records(samples):
        if isinstance(rec, str):
            out.append(sample_from_text(rec))
        elif isinstance(rec, dict) and isinstance(rec.get("output_text"), str):
            s = sample_from_text(rec["output_text"])
            s.update({k: rec[k] for k in ("output_json", "output_tools", "choices") if k in rec})
            out.append(s)
        else:
            raise DataError("expected a JSON string or an object with 'output_text'", path=str(samples), line=line,
                            field="output_text", code="data_type")
    if len(out) != len(items):
        raise DataError(f"{len(out)} answers for {len(items)} rows: answers pair with rows line by line",
                        path=str(samples), code="count_mismatch")
    return out, items, where


def grade_files(grader: Grader, data: str | Path, samples: str | Path) -> tuple[list[Result], list[str]]:
    s, items, where = read_pairs(data, samples)
    return grader.grade(s, items), where
