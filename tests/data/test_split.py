"""Splits: seeded, fractions of the whole file, stratified by label, never leaking an example."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import arithmetic_rows, write_jsonl
from tuneforge.data.load import read_records
from tuneforge.data.split import kfold, kfold_indices, split_file, split_indices, split_records
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


def _pc(i):
    return {"prompt": f"question {i}", "completion": f"answer {i}"}


def _clf(n_pos, n_neg):
    return [{"text": f"review {i}", "label": "pos" if i < n_pos else "neg"} for i in range(n_pos + n_neg)]


def test_split_records_uses_fractions_of_the_whole_not_of_the_remainder():
    s = split_records([_pc(i) for i in range(100)], test=0.2, val=0.1, seed=0)
    # the guide's chained train_test_split would give 72/8/20
    assert {k: len(v) for k, v in s.items()} == {"train": 70, "val": 10, "test": 20}
    assert sorted(i for v in s.values() for i in v) == list(range(100))


def test_same_seed_same_split_other_seed_other_split():
    recs = [_pc(i) for i in range(60)]
    assert split_records(recs, seed=5) == split_records(list(recs), seed=5) != split_records(recs, seed=6)
    assert kfold(recs, 3, 5) == kfold(recs, 3, 5) != kfold(recs, 3, 6)


def test_classification_records_are_stratified_automatically():
    recs = _clf(90, 10)
    s = split_records(recs, test=0.2, val=0.1, seed=3)
    assert {k: Counter(recs[i]["label"] for i in v) for k, v in s.items()} == {
        "train": {"pos": 63, "neg": 7}, "val": {"pos": 9, "neg": 1}, "test": {"pos": 18, "neg": 2}}
    off = [split_records(recs, test=0.2, val=0.1, seed=x, stratify=False)["test"] for x in range(20)]
    assert {sum(recs[i]["label"] == "neg" for i in t) for t in off} != {2}  # unstratified drifts


def test_explicit_stratify_labels_are_used():
    recs = [_pc(i) for i in range(40)]
    groups = ["a"] * 30 + ["b"] * 10
    s = split_records(recs, test=0.5, val=0.0, seed=1, stratify=groups)
    assert Counter(groups[i] for i in s["test"]) == {"a": 15, "b": 5}


def test_no_example_leaks_across_splits_even_with_near_duplicates():
    recs = []
    for i in range(40):
        recs += [_pc(i), {"prompt": f"Question {i}!", "completion": f"answer {i}."}, _pc(i)]
    for seed in range(5):
        s = split_records(recs, test=0.2, val=0.1, seed=seed)
        side = {}
        for name, idx in s.items():
            for i in idx:
                assert side.setdefault(i // 3, name) == name
        assert all(s.values())


def test_kfold_records_are_leakage_free_and_stratified():
    recs = [r for r in _clf(40, 10) for _ in range(2)]  # every review twice
    folds = kfold(recs, 5, seed=0)
    assert sorted(i for _, va in folds for i in va) == list(range(100))
    for tr, va in folds:
        assert not {recs[i]["text"] for i in tr} & {recs[i]["text"] for i in va}
        assert Counter(recs[i]["label"] for i in va) == {"pos": 16, "neg": 4}


def test_kfold_never_leaves_a_fold_empty_when_one_group_is_huge():
    keys = ["big"] * 20 + ["a", "b", "c", "d"]
    folds = kfold_indices(keys, 5, seed=0)
    assert all(va for _, va in folds) and sorted(i for _, va in folds for i in va) == list(range(24))
    with pytest.raises(ValueError, match="distinct"):
        kfold_indices(["x"] * 10, 2)


@pytest.mark.parametrize("ext", ["jsonl", "json", "csv", "parquet"])
def test_split_file_round_trips_each_file_type(ext, tmp_path):
    rows = [{"text": f"review {i}, \"quoted\"\nsecond line", "label": "pos" if i % 4 else "neg", "id": i}
            for i in range(40)]
    f = tmp_path / f"all.{ext}"
    if ext == "jsonl":
        write_jsonl(f, rows)
    elif ext == "json":
        f.write_text(json.dumps(rows))
    elif ext == "csv":
        import csv

        with open(f, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["text", "label", "id"])
            w.writeheader()
            w.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), f)
    out = split_file(f, tmp_path / "out", test=0.2, val=0.2, seed=0)
    assert {k: (p.name, n) for k, (p, n) in out.items()} == {
        "train": (f"all.train.{ext}", 24), "val": (f"all.val.{ext}", 8), "test": (f"all.test.{ext}", 8)}
    back = [r for p, _ in out.values() for _, r in read_records(p)]
    key = (lambda r: int(r["id"]))  # csv reads the id back as text
    want = [{**r, "id": str(r["id"])} for r in rows] if ext == "csv" else rows
    assert sorted(back, key=key) == want
    for p, _ in out.values():  # stratified: 1 in 4 is "neg" in every split
        labels = Counter(r["label"] for _, r in read_records(p))
        assert labels["neg"] * 4 == sum(labels.values())
    if ext == "parquet":
        assert pq.read_schema(out["test"][0]).field("id").type == pa.int64()
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == sorted(p.name for p, _ in out.values())


def test_split_file_omits_empty_splits(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [_pc(i) for i in range(10)])
    out = split_file(f, tmp_path / "out", test=0.2, val=0.0, seed=0)
    assert set(out) == {"train", "test"} and not (tmp_path / "out" / "d.val.jsonl").exists()


def test_split_file_refuses_to_overwrite_the_input(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [_pc(i) for i in range(10)])
    before = f.read_text()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "d.train.jsonl").symlink_to(f)  # writing "train" would clobber the input through it
    with pytest.raises(DataError, match="refusing to overwrite"):
        split_file(f, tmp_path / "out", test=0.2, val=0.1, seed=0)
    assert f.read_text() == before and not (tmp_path / "out" / "d.test.jsonl").exists()


def test_bad_fractions_are_a_data_error(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [_pc(i) for i in range(10)])
    with pytest.raises(DataError, match="bad_split"):
        split_file(f, tmp_path / "out", test=0.7, val=0.3)
