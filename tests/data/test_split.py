"""Splits: seeded, fractions of the whole file, stratified by label, never leaking an example."""

import json

import pytest

from tests.conftest import arithmetic_rows, write_jsonl
from tuneforge.data.split import kfold_indices, split_file, split_indices
from tuneforge.errors import DataError


def test_fractions_are_of_the_whole_file_and_reproducible():
    keys = [str(i) for i in range(100)]
    a = split_indices(keys, test=0.2, val=0.1, seed=7)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (70, 10, 20)
    assert a == split_indices(keys, test=0.2, val=0.1, seed=7) != split_indices(keys, test=0.2, val=0.1, seed=8)


def test_identical_examples_never_land_in_two_splits():
    keys = [str(i % 30) for i in range(120)]  # every example four times
    s = split_indices(keys, test=0.2, val=0.1, seed=0)
    where = {}
    for name, idx in s.items():
        for i in idx:
            assert where.setdefault(keys[i], name) == name


def test_stratified_split_keeps_label_proportions():
    keys = [str(i) for i in range(100)]
    labels = ["a"] * 80 + ["b"] * 20
    s = split_indices(keys, test=0.2, val=0.0, seed=0, stratify=labels)
    assert sum(labels[i] == "b" for i in s["test"]) == 4


def test_kfold_covers_every_example_once_and_keeps_duplicates_together():
    keys = [str(i % 25) for i in range(50)]
    folds = kfold_indices(keys, 5, seed=1)
    vals = [i for _, v in folds for i in v]
    assert sorted(vals) == list(range(50))
    for tr, va in folds:
        assert not {keys[i] for i in tr} & {keys[i] for i in va}


def test_split_file_writes_the_same_format_atomically(tmp_path):
    f = write_jsonl(tmp_path / "all.jsonl", arithmetic_rows(50))
    out = split_file(f, tmp_path / "out", test=0.2, val=0.1, seed=3)
    assert {k: n for k, (_, n) in out.items()} == {"train": 35, "val": 5, "test": 10}
    rows = [json.loads(x) for p, _ in out.values() for x in p.read_text().splitlines()]
    assert sorted(map(json.dumps, rows)) == sorted(json.dumps(r) for r in arithmetic_rows(50))
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left


def test_split_file_validates_first(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        split_file(f, tmp_path / "out")
    assert not (tmp_path / "out").exists()
