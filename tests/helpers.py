"""Helpers shared by the tests (plain functions; the fixtures built on them are in conftest.py).

`tf` runs the `tuneforge` command in a subprocess; `write_jsonl`/`arithmetic_rows` make example files;
`train_tiny_run` trains a real tiny run in-process; `wait_for_health` waits for a `tuneforge serve` subprocess.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tf(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd)


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


def train_tiny_run(base: Path, out: Path, *, rows: int = 120, seed: int = 0, **overrides) -> Path:
    """A LoRA run on the tiny model, trained in-process (a couple of seconds): a real run directory."""
    from tuneforge.config import TrainConfig
    from tuneforge.train.recipe import train

    data = write_jsonl(out.parent / f"{out.name}-train.jsonl", arithmetic_rows(rows, seed=seed))
    cfg = TrainConfig(base=str(base), data=str(data), output=str(out), num_train_epochs=1, learning_rate=1e-3,
                      seed=seed, **overrides)
    return train(cfg, progress=False)


def wait_for_health(proc, url: str, log=lambda: "", timeout: float = 120) -> None:
    """Block until a `tuneforge serve` subprocess answers /health; fail with its log if it dies or hangs."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log()
        time.sleep(0.2)
