"""Shared fixtures: a tiny random model saved as a transformers dir, and small example files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tuneforge.models.tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def arithmetic_rows(n: int, seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = r.randint(0, 99), r.randint(0, 99)
        rows.append({"prompt": f"add {a} and {b}", "completion": str(a + b)})
    return rows


@pytest.fixture
def pc_file(tmp_path) -> Path:
    """A prompt/completion JSONL file of 64 rows."""
    return write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(64))
