"""Seeded, leakage-free train/val/test splits and k-fold, stratified by label for classification.

Fractions are of the whole file (`--test 0.2 --val 0.1` → 70/10/20), unlike chaining the guide's
`train_test_split` twice (which makes val 10% of the remaining 80%). CLI: `tuneforge data split FILE`.
"""

from __future__ import annotations

import csv
import json
import os
import random
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from tuneforge.data.load import load_samples, read_records
from tuneforge.data.validate import _key
from tuneforge.errors import DataError


def _groups(keys: list[str]) -> list[list[int]]:
    """Indices grouped by identical content: a group always lands in one split."""
    g: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        g[k].append(i)
    return list(g.values())


def split_indices(keys: list[str], *, test: float = 0.2, val: float = 0.1, seed: int = 0,
                  stratify: list[str] | None = None) -> dict[str, list[int]]:
    if not 0 <= test < 1 or not 0 <= val < 1 or test + val >= 1:
        raise ValueError(f"test ({test}) and val ({val}) must be fractions with test + val < 1")
    rng = random.Random(seed)
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for grp in _groups(keys):
        strata[stratify[grp[0]] if stratify else ""].append(grp)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for name in sorted(strata):
        groups = strata[name]
        rng.shuffle(groups)
        n = sum(len(g) for g in groups)
        want = {"test": round(test * n), "val": round(val * n)}
        got = {"test": 0, "val": 0}
        for g in groups:
            dest = next((s for s in ("test", "val") if got[s] < want[s]), "train")
            out[dest].extend(g)
            got[dest] = got.get(dest, 0) + len(g)
    return {k: sorted(v) for k, v in out.items()}


def kfold_indices(keys: list[str], k: int, *, seed: int = 0,
                  stratify: list[str] | None = None) -> list[tuple[list[int], list[int]]]:
    """K (train, val) index pairs; identical examples share a fold; folds are label-balanced when stratified."""
    if k < 2:
        raise ValueError("k-fold needs k >= 2")
    rng = random.Random(seed)
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for grp in _groups(keys):
        strata[stratify[grp[0]] if stratify else ""].append(grp)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for name in sorted(strata):
        groups = strata[name]
        rng.shuffle(groups)
        for j, g in enumerate(groups):
            folds[(j + offset) % k].extend(g)
        offset += len(groups)
    if any(not f for f in folds):
        raise ValueError(f"not enough distinct examples for {k} folds")
    return [(sorted(i for j, f in enumerate(folds) if j != n for i in f), sorted(folds[n])) for n in range(k)]


def _write(path: Path, suffix: str, records: list[Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        if suffix == ".jsonl":
            Path(tmp).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        elif suffix == ".json":
            Path(tmp).write_text(json.dumps(records, ensure_ascii=False, indent=1))
        elif suffix == ".csv":
            cols = list(dict.fromkeys(k for r in records for k in r))
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=cols)
                w.writeheader()
                w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in records])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_file(path: str | Path, out_dir: str | Path, *, test: float = 0.2, val: float = 0.1,
               seed: int = 0) -> dict[str, tuple[Path, int]]:
    """Write train/val/test files in the input's format; the input is validated first and never overwritten."""
    path, out_dir = Path(path), Path(out_dir)
    samples = load_samples(path)  # raises the first bad row
    records = [r for _, r in read_records(path)]
    labels = [s.label for s in samples]
    strat = labels if all(lab is not None for lab in labels) else None
    try:
        idx = split_indices([_key(s) for s in samples], test=test, val=val, seed=seed, stratify=strat)
    except ValueError as e:
        raise DataError(str(e), path=str(path), code="bad_split") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    written = {}
    for name in ("train", "val", "test"):
        if not idx[name]:
            continue
        dest = out_dir / f"{path.stem}.{name}{suffix}"
        if dest.resolve() == path.resolve():
            raise DataError("refusing to overwrite the input file", path=str(path), code="bad_split")
        _write(dest, suffix, [records[i] for i in idx[name]])
        written[name] = (dest, len(idx[name]))
    return written
