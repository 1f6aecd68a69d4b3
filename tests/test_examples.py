"""The bundled text-to-SQL example: reproducible from its generator, leakage-free, every SQL statement valid."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SQL = ROOT / "examples" / "sql"
SPLITS = ("train", "val", "test")


def _rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (SQL / f"{name}.jsonl").read_text().splitlines()]


def _generator(monkeypatch):
    """Import examples/sql/make_dataset.py (not a package) as a module, registered so dataclasses resolve."""
    spec = importlib.util.spec_from_file_location("make_dataset", SQL / "make_dataset.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_dataset", mod)
    spec.loader.exec_module(mod)
    return mod


def test_committed_files_are_what_the_generator_writes(tmp_path):
    r = subprocess.run([sys.executable, str(SQL / "make_dataset.py"), "--output", str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "123"})  # hash order must not matter
    assert r.returncode == 0, r.stderr
    for name in SPLITS:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (SQL / f"{name}.jsonl").read_bytes(), name


def test_sizes_and_shape():
    sizes = {n: len(_rows(n)) for n in SPLITS}
    assert sizes == {"train": 600, "val": 60, "test": 100}
    for n in SPLITS:
        for r in _rows(n):
            assert set(r) == {"prompt", "completion"} and r["prompt"].startswith("Translate to SQL: ")
            assert len(r["prompt"].split()) <= 20 and len(r["completion"].split()) <= 30


def test_no_prompt_is_in_two_splits_or_twice_in_one():
    prompts = {n: [r["prompt"] for r in _rows(n)] for n in SPLITS}
    for n in SPLITS:
        assert len(set(prompts[n])) == len(prompts[n]), n
    train, val, test = (set(prompts[n]) for n in SPLITS)
    assert not train & val and not train & test and not val & test


def test_test_set_asks_mostly_for_sql_never_trained_on():
    # Only the few-valued templates (select all, count all, group by, distinct) repeat a training answer,
    # and then with a phrasing held out of training.
    train_sql = {r["completion"] for r in _rows("train")}
    seen = [r for r in _rows("test") if r["completion"] in train_sql]
    assert len(seen) <= 20, seen


def test_every_completion_is_canonical_and_runs_against_the_schema():
    db = sqlite3.connect(":memory:")
    db.executescript((SQL / "schema.sql").read_text())
    assert {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == \
        {"users", "products", "orders"}
    for n in SPLITS:
        for r in _rows(n):
            sql = r["completion"]
            assert sql.startswith("SELECT ") and sql.endswith(";") and sql == " ".join(sql.split()), sql
            assert '"' not in sql and not re.search(r"\b(select|from|where|join|order by|group by)\b", sql), sql
            db.execute(sql).fetchall()


def test_generator_fails_loudly_on_invalid_sql(monkeypatch):
    md = _generator(monkeypatch)
    templates = md.templates

    def broken() -> dict:
        t = templates()
        t["select_all"] = [md.kind(["Show all {t}", "List every {one}", "Get all rows from the {t} table"],
                                   "SELECT * FROM {t}s;", [{"t": x, "one": md.ONE[x]} for x in md.ONE])]
        return t

    monkeypatch.setattr(md, "templates", broken)
    with pytest.raises(sqlite3.Error):
        md.build()
    monkeypatch.setattr(md, "templates", templates)
    with pytest.raises(ValueError, match="non-canonical"):
        md.check_canonical("select * FROM users;")


def test_the_guides_own_row_is_in_training():
    assert {"prompt": "Translate to SQL: Show all users", "completion": "SELECT * FROM users;"} in _rows("train")


def test_config_is_a_valid_training_config():
    from tuneforge.config import load_config

    cfg = load_config(SQL / "config.yaml")
    assert cfg.base == "smollm2-135m-instruct" and cfg.method == "lora"
    assert (ROOT / cfg.data).is_file() and (ROOT / cfg.val_data).is_file()
