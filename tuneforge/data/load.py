"""Readers for .jsonl/.json/.csv/.parquet that keep the source line of every record for errors.

Training calls `load_samples(path)` (first bad row stops it with file:line and a code); `scan(path)` collects all.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneforge.data.formats import FORMATS, REINFORCEMENT, Sample, detect_format, looks_like_reinforcement, to_sample
from tuneforge.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_WS = re.compile(r"[ \t\r\n]*")


def read_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line, record) pairs: the 1-based line where the record starts.

    jsonl: file lines (blank lines skipped). json: the line where each element of the top-level list
    starts. csv: file lines, the header is line 1 (a multi-line quoted cell counts its first line);
    empty cells are None. parquet: row number from 1. Raises DataError on the first problem.
    """
    for line, rec, err in _rows(path):
        if err is not None:
            raise err
        yield line, rec


def _rows(path: str | Path) -> Iterator[tuple[int, Any, DataError | None]]:
    """(line, record, error): a bad row yields its error and reading goes on where the format allows;
    file-level problems (missing, wrong type, empty, unparseable structure) raise."""
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found" if not p.exists() else "not a file", path=str(p), code="file_not_found")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"unsupported file type '{p.suffix}' (use {', '.join(SUFFIXES)})", path=str(p),
                        code="file_type")
    reader = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}[suffix]
    n = 0
    try:
        for row in reader(p):
            n += 1
            yield row
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=str(p), code="encoding") from None
    if n == 0:
        raise DataError("file has no examples", path=str(p), code="empty_file")


def _jsonl(p: Path) -> Iterator[tuple[int, Any, DataError | None]]:
    with open(p, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield i, None, DataError(f"not UTF-8 text ({e.reason} at column {e.start + 1})", path=str(p), line=i,
                                         code="encoding")
                continue
            if not line.strip():
                continue
            try:
                yield i, json.loads(line), None
            except json.JSONDecodeError as e:
                yield i, None, DataError(f"invalid JSON: {e.msg} (column {e.colno})", path=str(p), line=i,
                                         code="invalid_json")


def _json(p: Path) -> Iterator[tuple[int, Any, DataError | None]]:
    """Walk the top-level list element by element so each record gets the line it starts on."""
    text = p.read_text(encoding="utf-8-sig")
    dec = json.JSONDecoder()

    def bad(e: json.JSONDecodeError) -> DataError:
        return DataError(f"invalid JSON: {e.msg} (column {e.colno})", path=str(p), line=e.lineno, code="invalid_json")

    i = _WS.match(text).end()
    if not text[i:i + 1] == "[":
        if i == len(text):
            return  # empty file
        try:
            top = json.loads(text)
        except json.JSONDecodeError as e:
            raise bad(e) from None
        raise DataError(f"a .json file must hold a list of examples, got {type(top).__name__} "
                        "(one object per line is .jsonl)", path=str(p), code="data_type")
    line, last, i = 1, 0, _WS.match(text, i + 1).end()
    if text[i:i + 1] == "]":
        return
    while True:
        try:
            rec, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise bad(e) from None
        line += text.count("\n", last, i)
        last = i
        yield line, rec, None
        i = _WS.match(text, end).end()
        if text[i:i + 1] == ",":
            i = _WS.match(text, i + 1).end()
            continue
        if text[i:i + 1] == "]" and _WS.match(text, i + 1).end() == len(text):
            return
        try:
            json.loads(text)  # let the parser phrase the error and find its line
        except json.JSONDecodeError as e:
            raise bad(e) from None
        raise DataError("invalid JSON after the list", path=str(p), code="invalid_json")  # unreachable in practice


def _csv(p: Path) -> Iterator[tuple[int, Any, DataError | None]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents exceed the 128 KiB default
    with open(p, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader, [])]
            if not any(header):
                return  # no header: an empty file
            dup = [h for h, n in Counter(header).items() if n > 1 and h]
            if dup:
                raise DataError(f"duplicate column(s) {dup} in the header", path=str(p), line=1, code="invalid_csv")
            end = reader.line_num
            for row in reader:
                start, end = end + 1, reader.line_num
                if not any(c.strip() for c in row):
                    continue
                if len(row) > len(header):
                    yield start, None, DataError(f"row has {len(row)} cells but the header has {len(header)}",
                                                 path=str(p), line=start, code="invalid_csv")
                    continue
                yield start, {h: (row[j] if j < len(row) and row[j] != "" else None)
                              for j, h in enumerate(header) if h}, None
        except csv.Error as e:
            raise DataError(f"invalid CSV: {e}", path=str(p), line=reader.line_num, code="invalid_csv") from None


def _drop_null_keys(v: Any) -> Any:
    """Parquet stores a list of messages as structs with the union of all keys, absent ones as null."""
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return [{k: x for k, x in d.items() if x is not None} for d in v]
    return v


def _parquet(p: Path) -> Iterator[tuple[int, Any, DataError | None]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except Exception as e:  # noqa: BLE001 - a corrupt file is the user's input problem
        raise DataError(f"cannot read parquet: {e}", path=str(p), code="invalid_parquet") from None
    i = 0
    for batch in pf.iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            i += 1
            yield i, {k: _drop_null_keys(v) for k, v in rec.items()}, None


@dataclass
class ScanResult:
    """Every row of a file, aligned: records[i] (None if unparseable), samples[i] (None if invalid), lines[i]."""

    path: str
    samples: list[Sample | None] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)

    @property
    def main_format(self) -> str | None:
        return self.formats.most_common(1)[0][0] if self.formats else None

    @property
    def valid(self) -> list[tuple[int, Sample]]:
        """(line, sample) for every row that converted."""
        return [(ln, s) for ln, s in zip(self.lines, self.samples) if s is not None]


def _check_fmt(fmt: str, path: str | Path) -> None:
    if fmt != "auto" and fmt not in FORMATS and fmt != REINFORCEMENT:
        raise DataError(f"unknown format '{fmt}' (have: auto, {', '.join(FORMATS)}, {REINFORCEMENT})", path=str(path),
                        code="unknown_format")


def scan(path: str | Path, fmt: str = "auto") -> ScanResult:
    """Read and check every row, collecting every error (for `data check`); never raises DataError."""
    res = ScanResult(str(path))
    try:
        _check_fmt(fmt, path)
        for line, rec, err in _rows(path):
            res.lines.append(line)
            res.records.append(rec)
            res.samples.append(None)
            if err is not None:
                res.errors.append(err)
                continue
            where = f"{path}:{line}"
            try:
                f = detect_format(rec, where) if fmt == "auto" else fmt
                res.formats[f] += 1
                res.samples[-1] = to_sample(rec, f, where)
            except DataError as e:
                res.errors.append(e)
    except DataError as e:  # file-level: nothing more can be read
        res.errors.append(e)
    if fmt == "auto" and not res.valid and res.records and looks_like_reinforcement(res.records):
        return scan(path, REINFORCEMENT)  # prompts only, no answers: RL rows
    return res


def load_pairs(path: str | Path, fmt: str = "auto") -> list[tuple[Sample, Any]]:
    """(sample, raw record) for every row, or the first error; mixed formats in one file are an error."""
    _check_fmt(fmt, path)
    out: list[tuple[Sample, Any]] = []
    first: tuple[str, int] | None = None
    for line, rec in read_records(path):
        where = f"{path}:{line}"
        f = detect_format(rec, where) if fmt == "auto" else fmt
        if first is None:
            first = (f, line)
        elif f != first[0]:
            raise DataError(f"format '{f}' differs from '{first[0]}' (line {first[1]}); use one format per file",
                            path=str(path), line=line, code="inconsistent_format")
        out.append((to_sample(rec, f, where), rec))
    return out


def load_samples(path: str | Path, fmt: str = "auto") -> list[Sample]:
    """All samples of a file for training, or the first DataError (file:line, code)."""
    return [s for s, _ in load_pairs(path, fmt)]
