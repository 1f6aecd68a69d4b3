"""`tuneforge eval` on RL rows: the grader's mean, tuned vs base, with CIs and the paired delta."""

import json

from tests.conftest import write_jsonl
from tuneforge.eval.reinforcement import evaluate_rl, is_rl_file, render


def test_rl_eval_scores_base_and_tuned_with_the_grader(tiny_lora_run, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"add {i} and {i}"}], "answer": str(2 * i)} for i in range(6)]
    data = write_jsonl(tmp_path / "rl.jsonl", rows)
    g = tmp_path / "g.json"
    g.write_text(json.dumps({"type": "python", "name": "len", "source":
                             "def grade(sample, item):\n    return min(1.0, len(sample['output_text']) / 10)\n"}))
    assert is_rl_file(data)
    res = evaluate_rl(str(tiny_lora_run), str(data), grader=str(g), max_new_tokens=8)
    assert res["n"] == 6 and set(res["models"]) == {"baseline", "tuned"}
    for m in res["models"].values():
        assert m["low"] <= m["mean"] <= m["high"] and m["errors"] == {}
    d = res["delta"]
    assert d["delta"] == __import__("pytest").approx(res["models"]["tuned"]["mean"] - res["models"]["baseline"]["mean"])
    ex = res["examples"][0]
    assert ex["tuned_score"] == min(1.0, len(ex["tuned_answer"]) / 10)
    assert "tuned - baseline" in render(res)
