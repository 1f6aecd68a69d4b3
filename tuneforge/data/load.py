"""Readers for .jsonl/.json/.csv/.parquet that keep the source line of every record for errors.

`load_samples(path)` is what training uses: the first bad row stops it with file:line and a code.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneforge.data.formats import Sample, detect_format, to_sample
from tuneforge.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def read_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) pairs; csv lines count the header as line 1, parquet rows from 1."""
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", path=str(p), code="file_not_found")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"unsupported file type '{p.suffix}' (use {', '.join(SUFFIXES)})", path=str(p),
                        code="file_type")
    n = 0
    if suffix == ".jsonl":
        with open(p, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path=str(p), line=i,
                                    code="invalid_json") from None
                n += 1
                yield i, rec
    elif suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg}", path=str(p), line=e.lineno, code="invalid_json") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError("a .json file must hold a list of examples (line numbers are example numbers)",
                            path=str(p), code="data_type")
        for i, rec in enumerate(data, 1):
            n += 1
            yield i, rec
    elif suffix == ".csv":
        with open(p, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                n += 1
                rec = {k: (v if v != "" else None) for k, v in row.items() if k is not None}
                yield reader.line_num, rec
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - a corrupt file is the user's input problem
            raise DataError(f"cannot read parquet: {e}", path=str(p), code="invalid_parquet") from None
        for i, rec in enumerate(table.to_pylist(), 1):
            n += 1
            yield i, rec
    if n == 0:
        raise DataError("file has no examples", path=str(p), code="empty_file")


@dataclass
class ScanResult:
    """Every row of a file: samples (None where a row failed), errors, raw records, formats seen."""

    path: str
    samples: list[Sample | None] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)

    @property
    def main_format(self) -> str | None:
        return self.formats.most_common(1)[0][0] if self.formats else None


def scan(path: str | Path, fmt: str = "auto") -> ScanResult:
    """Read and check every row, collecting all errors (for `data check`)."""
    res = ScanResult(str(path))
    try:
        for line, rec in read_records(path):
            where = f"{path}:{line}"
            res.records.append(rec)
            res.lines.append(line)
            try:
                f = detect_format(rec, where) if fmt == "auto" else fmt
                res.formats[f] += 1
                res.samples.append(to_sample(rec, f, where))
            except DataError as e:
                res.errors.append(e)
                res.samples.append(None)
    except DataError as e:  # file-level or unparseable line: stop, report it
        res.errors.append(e)
    return res


def load_samples(path: str | Path, fmt: str = "auto") -> list[Sample]:
    """All samples of a file, or the first error; mixed formats in one file are an error."""
    out: list[Sample] = []
    first: tuple[str, str] | None = None
    for line, rec in read_records(path):
        where = f"{path}:{line}"
        f = detect_format(rec, where) if fmt == "auto" else fmt
        if first is None:
            first = (f, where)
        elif f != first[0]:
            raise DataError(f"format '{f}' differs from '{first[0]}' at {first[1]}; one format per file",
                            path=str(path), line=line, code="inconsistent_format")
        out.append(to_sample(rec, f, where))
    return out
