"""The bundled text-to-SQL example: reproducible from its generator, leakage-free, every SQL statement valid."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL = ROOT / "examples" / "sql"


def _rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (SQL / f"{name}.jsonl").read_text().splitlines()]


def test_committed_files_are_what_the_generator_writes(tmp_path):
    subprocess.run([sys.executable, str(SQL / "make_dataset.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in ("train", "val", "test"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (SQL / f"{name}.jsonl").read_bytes()


def test_no_prompt_is_in_two_splits():
    prompts = {n: {r["prompt"] for r in _rows(n)} for n in ("train", "val", "test")}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["val"]
    assert not prompts["val"] & prompts["test"]
    assert (len(prompts["train"]), len(prompts["val"]), len(prompts["test"])) == (600, 60, 100)


def test_every_completion_runs_against_the_schema():
    db = sqlite3.connect(":memory:")
    db.executescript((SQL / "schema.sql").read_text())
    for n in ("train", "val", "test"):
        for r in _rows(n):
            db.execute(r["completion"])


def test_the_guides_own_row_is_in_training():
    assert {"prompt": "Translate to SQL: Show all users", "completion": "SELECT * FROM users;"} in _rows("train")


def test_config_is_a_valid_training_config():
    from tuneforge.config import load_config

    cfg = load_config(SQL / "config.yaml")
    assert cfg.base == "smollm2-135m-instruct" and cfg.method == "lora"
