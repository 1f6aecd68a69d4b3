"""`tuneforge grader run|validate` in a subprocess: scores per row, the mean, errors counted, bad input exit 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cli
ROOT = Path(__file__).resolve().parents[2]


def tf(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], capture_output=True, text=True, env=env)


def test_grader_run_prints_scores_mean_and_errors(tmp_path):
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"type": "python", "name": "num", "source":
                             "def grade(sample, item):\n    if sample['output_text'] == 'boom': raise KeyError('x')\n"
                             "    return float(sample['output_text'].strip() == item['answer'])\n"}))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "q"}], "answer": a}) + "\n"
                            for a in ("4", "6", "8")))
    ans = tmp_path / "ans.jsonl"
    ans.write_text('"4"\n{"output_text": "7"}\n"boom"\n')
    r = tf("grader", "run", str(g), "--data", str(rows), "--samples", str(ans))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{rows}:1: 1" and lines[1] == f"{rows}:2: 0"
    assert lines[2].startswith(f"{rows}:3: 0  [python_grader_runtime_error: KeyError")
    assert lines[3] == "mean 0.3333 over 3 answers; errors: python_grader_runtime_error 1"
    ans.write_text('"4"\n')
    r = tf("grader", "run", str(g), "--data", str(rows), "--samples", str(ans))
    assert r.returncode == 2 and "1 answers for 3 rows" in r.stderr
    g.write_text(json.dumps({"type": "multi", "graders": {}, "calculate_output": "1"}))
    r = tf("grader", "validate", str(g))
    assert r.returncode == 2 and r.stderr.startswith(f"error: {g}: grader.graders:")
