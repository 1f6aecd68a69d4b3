"""Seeded, leakage-free train/val/test splits and k-fold, stratified by label for classification.

Generated rows (`data augment` tags them with metadata.augmented) only ever go to train, and only when none of
their source examples is held out (a paraphrase of a test question in train would leak it); the others are
dropped. Run: `tuneforge data split FILE --test 0.2 --val 0.1 --seed 0 --output DIR`; in code `split_samples`,
`kfold_samples`, `split_records`, `kfold`.
"""

from __future__ import annotations

import csv
import json
import os
import random
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Hashable, Sequence

from tuneforge.data.formats import Sample, augmented_from, detect_format, near_key, source_id, to_sample
from tuneforge.data.load import load_pairs
from tuneforge.errors import DataError

SPLITS = ("train", "val", "test")


def _groups(keys: Sequence[str]) -> list[list[int]]:
    """Indices grouped by identical key, in order of first appearance (deterministic)."""
    g: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        g[k].append(i)
    return list(g.values())


def _ordered_groups(keys: Sequence[str], stratify: Sequence[Hashable] | None, seed: int) -> list[list[int]]:
    """Groups in a random order in which every stratum is spread evenly (systematic stratified sampling):
    each group sits at its relative position within its shuffled stratum, and strata are merged by it.

    scikit-learn's splitters stratify or group but not both at once, hence this: any prefix of the
    order holds each label in proportion, so dealing it out in order stratifies every split.
    """
    if stratify is not None and len(stratify) != len(keys):
        raise ValueError(f"stratify has {len(stratify)} labels for {len(keys)} examples")
    rng = random.Random(seed)
    strata: dict[Hashable, list[list[int]]] = defaultdict(list)
    for grp in _groups(keys):
        strata[stratify[grp[0]] if stratify is not None else None].append(grp)
    placed = []
    for groups in strata.values():
        rng.shuffle(groups)
        n, c = sum(map(len, groups)), 0
        for g in groups:
            placed.append(((c + len(g) / 2) / n, rng.random(), g))
            c += len(g)
    placed.sort(key=lambda t: (t[0], t[1]))
    return [g for _, _, g in placed]


def _deal(groups: list[list[int]], targets: list[int]) -> list[list[int]]:
    """Each group goes to the first bucket it does not push further from its target; else the neediest."""
    out: list[list[int]] = [[] for _ in targets]
    got = [0] * len(targets)
    for g in groups:
        n = len(g)
        j = next((j for j, t in enumerate(targets) if 2 * got[j] + n <= 2 * t), None)
        if j is None:
            j = min(range(len(targets)), key=lambda j: got[j] - targets[j])
        out[j].extend(g)
        got[j] += n
    return [sorted(b) for b in out]


def split_indices(keys: Sequence[str], *, test: float = 0.2, val: float = 0.1, seed: int = 0,
                  stratify: Sequence[Hashable] | None = None) -> dict[str, list[int]]:
    """{"train", "val", "test"}: sorted indices; equal keys share a split (leakage-free).

    Fractions are of the WHOLE file: test=0.2, val=0.1 gives 70/10/20. The guide's snippet
    `train, test = train_test_split(data, test_size=0.2); train, val = train_test_split(train, test_size=0.1)`
    makes val 10% of the remaining 80% (72/8/20); pass val=0.08 to get that. Counts round half up;
    a group of duplicates is never cut, so sizes can miss by less than a group. Same keys + seed = same split.
    """
    if not (0 <= test < 1 and 0 <= val < 1 and test + val < 1):
        raise ValueError(f"test ({test}) and val ({val}) must be fractions in [0, 1) with test + val < 1")
    n = len(keys)
    n_test, n_val = int(test * n + 0.5), int(val * n + 0.5)  # round half up (round() rounds half to even)
    t, v, tr = _deal(_ordered_groups(keys, stratify, seed), [n_test, n_val, n])
    return {"train": tr, "val": v, "test": t}


def kfold_indices(keys: Sequence[str], k: int, *, seed: int = 0,
                  stratify: Sequence[Hashable] | None = None) -> list[tuple[list[int], list[int]]]:
    """K (train, val) index pairs: every example is in exactly one val fold; equal keys share a fold."""
    if k < 2:
        raise ValueError("k-fold needs k >= 2")
    groups = _ordered_groups(keys, stratify, seed)
    if len(groups) < k:
        raise ValueError(f"only {len(groups)} distinct examples for {k} folds")
    n = len(keys)
    folds = _deal(groups, [(j + 1) * n // k - j * n // k for j in range(k)])
    for j in range(k):  # big groups can starve a fold: give it the smallest group of the fold with most groups
        if not folds[j]:
            members: list[dict[str, list[int]]] = []
            for f in folds:
                by_key: dict[str, list[int]] = defaultdict(list)
                for i in f:
                    by_key[keys[i]].append(i)
                members.append(by_key)
            donor = max(range(k), key=lambda m: len(members[m]))
            moved = set(min(members[donor].values(), key=len))
            folds[donor] = [i for i in folds[donor] if i not in moved]
            folds[j] = sorted(moved)
    return [(sorted(i for m, f in enumerate(folds) if m != j for i in f), folds[j]) for j in range(k)]


def record_keys(records: Sequence[Any]) -> tuple[list[str], list[str | None]]:
    """(leakage key, label) per raw record; a record that is not a valid example is keyed by its JSON."""
    keys, labels, _ = _record_rows(records)
    return keys, labels


def _record_rows(records: Sequence[Any]) -> tuple[list[str], list[str | None], list[Sample | None]]:
    keys, labels, samples = [], [], []
    for rec in records:
        try:
            s = to_sample(rec, detect_format(rec))
            keys.append(near_key(s))
            labels.append(s.label)
            samples.append(s)
        except DataError:
            keys.append(json.dumps(rec, sort_keys=True, ensure_ascii=False, default=str))
            labels.append(None)
            samples.append(None)
    return keys, labels, samples


def _generated(samples: Sequence[Sample | None]) -> list[bool]:
    return [s is not None and augmented_from(s) is not None for s in samples]


def _held_out(i: int, samples: Sequence[Sample | None], keys: Sequence[str], held_ids: set[str],
              held_keys: set[str]) -> bool:
    """A generated row that must not train: one of its sources, or its own content, is held out."""
    sources = set((augmented_from(samples[i]) or {}).get("sources") or [])
    return bool(sources & held_ids) or keys[i] in held_keys


def _subset(stratify, rows: list[int]):
    """A per-record stratify sequence restricted to `rows`; None/True/False pass through."""
    return stratify if stratify is None or isinstance(stratify, bool) else [stratify[i] for i in rows]


def _split_rows(keys: list[str], labels: list, samples: Sequence[Sample | None], *, test: float, val: float,
                seed: int, stratify) -> dict[str, list[int]]:
    """Split the original rows; generated rows join train unless their source is held out (then no split)."""
    gen = _generated(samples)
    orig = [i for i, g in enumerate(gen) if not g]
    strat = _strata([labels[i] for i in orig], _subset(stratify, orig))
    sub = split_indices([keys[i] for i in orig], test=test, val=val, seed=seed, stratify=strat)
    out = {name: [orig[j] for j in sub[name]] for name in SPLITS}
    held = [i for name in ("val", "test") for i in out[name]]
    held_ids = {source_id(samples[i]) for i in held if samples[i] is not None}
    held_keys = {keys[i] for i in held}
    extra = [i for i, g in enumerate(gen) if g]
    out["train"] = sorted(out["train"] + [i for i in extra if not _held_out(i, samples, keys, held_ids, held_keys)])
    return out


def _kfold_rows(keys: list[str], labels: list, samples: Sequence[Sample | None], k: int, *, seed: int,
                stratify) -> list[tuple[list[int], list[int]]]:
    """K folds of the original rows; a generated row trains in every fold whose val holds none of its sources."""
    gen = _generated(samples)
    orig = [i for i, g in enumerate(gen) if not g]
    strat = _strata([labels[i] for i in orig], _subset(stratify, orig))
    folds = []
    for tr, va in kfold_indices([keys[i] for i in orig], k, seed=seed, stratify=strat):
        tr, va = [orig[j] for j in tr], [orig[j] for j in va]
        held_ids = {source_id(samples[i]) for i in va if samples[i] is not None}
        held_keys = {keys[i] for i in va}
        tr += [i for i, g in enumerate(gen) if g and not _held_out(i, samples, keys, held_ids, held_keys)]
        folds.append((sorted(tr), va))
    return folds


def split_samples(samples: Sequence[Sample], *, test: float = 0.2, val: float = 0.1, seed: int = 0,
                  stratify: Sequence[Hashable] | bool | None = None) -> dict[str, list[int]]:
    """Like `split_records` for loaded Samples. Fractions are of the original (non-generated) rows; a generated
    row whose source is held out is in no split."""
    keys = [near_key(s) for s in samples]
    return _split_rows(keys, [s.label for s in samples], samples, test=test, val=val, seed=seed, stratify=stratify)


def kfold_samples(samples: Sequence[Sample], k: int = 5, seed: int = 0,
                  stratify: Sequence[Hashable] | bool | None = None) -> list[tuple[list[int], list[int]]]:
    """Like `kfold` for loaded Samples: generated rows only ever appear in train folds."""
    keys = [near_key(s) for s in samples]
    return _kfold_rows(keys, [s.label for s in samples], samples, k, seed=seed, stratify=stratify)


def _strata(labels: list[str | None], stratify: Sequence[Hashable] | bool | None) -> Sequence[Hashable] | None:
    if stratify is None or stratify is True:  # auto: classification files stratify by label
        return labels if labels and all(x is not None for x in labels) else None
    return None if stratify is False else stratify


def split_records(records: Sequence[Any], *, test: float = 0.2, val: float = 0.1, seed: int = 0,
                  stratify: Sequence[Hashable] | bool | None = None) -> dict[str, list[int]]:
    """Indices into `records` for "train", "val", "test" (fractions of the whole; 0.2/0.1 → 70/10/20).

    `stratify`: None = by label when every record is a classification example; False = off; or one
    label per record. Rows with the same normalised content always share a split. Generated rows
    (metadata.augmented) go to train, or to no split when a source of theirs is held out.
    """
    keys, labels, samples = _record_rows(records)
    return _split_rows(keys, labels, samples, test=test, val=val, seed=seed, stratify=stratify)


def kfold(records: Sequence[Any], k: int = 5, seed: int = 0,
          stratify: Sequence[Hashable] | bool | None = None) -> list[tuple[list[int], list[int]]]:
    """K (train indices, val indices) pairs over `records`; leakage-free and stratified like `split_records`;
    generated rows only in train folds."""
    keys, labels, samples = _record_rows(records)
    return _kfold_rows(keys, labels, samples, k, seed=seed, stratify=stratify)


def _write(dest: Path, suffix: str, records: list[Any], template: Path) -> None:
    """Write to a temp file in the same folder, then rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        elif suffix == ".json":
            Path(tmp).write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        elif suffix == ".csv":
            with open(template, encoding="utf-8-sig", newline="") as f:  # the input's columns, in its order
                cols = [h.strip() for h in next(csv.reader(f)) if h.strip()]
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
                w.writeheader()
                w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in records)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # the input's schema keeps types (int labels, nested messages) even when a split lacks a value;
            # pandas metadata is dropped because it describes the input's row index
            schema = pq.read_schema(template).remove_metadata()
            pq.write_table(pa.Table.from_pylist(records, schema=schema), tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_file(path: str | Path, out_dir: str | Path, *, test: float = 0.2, val: float = 0.1,
               seed: int = 0) -> dict[str, tuple[Path, int]]:
    """Write OUT_DIR/STEM.{train,val,test}.EXT in the input's format: {split: (path, rows)}, empty splits omitted;
    "dropped" counts generated rows left out because their source is held out (nothing is written for it).

    The file is validated first (the first DataError is raised, nothing is written); classification
    files are stratified by label; generated rows only go to train; the input is never overwritten.
    """
    path, out_dir = Path(path), Path(out_dir)
    pairs = load_pairs(path)
    try:
        idx = split_samples([s for s, _ in pairs], test=test, val=val, seed=seed)
    except ValueError as e:
        raise DataError(str(e), path=str(path), code="bad_split") from None
    suffix = path.suffix.lower()
    dests = {name: out_dir / f"{path.stem}.{name}{suffix}" for name in SPLITS if idx[name]}
    for dest in dests.values():
        if dest.resolve() == path.resolve() or (dest.exists() and os.path.samefile(dest, path)):
            raise DataError(f"refusing to overwrite the input file with {dest}", path=str(path), code="bad_split")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, dest in dests.items():
        _write(dest, suffix, [pairs[i][1] for i in idx[name]], path)
        written[name] = (dest, len(idx[name]))
    dropped = len(pairs) - sum(len(v) for v in idx.values())
    if dropped:
        written["dropped"] = (None, dropped)
    return written
