"""The pre-flight report: counts, errors with lines, tokens, truncation, duplicates, balance, warnings."""

import json

from tests.conftest import write_jsonl
from tuneforge.data.validate import check_file
from tuneforge.models.tiny import tiny_tokenizer


def _pc(p, c):
    return {"prompt": p, "completion": c}


def test_report_counts_tokens_truncation_and_duplicates(tmp_path):
    rows = [_pc("Show all users", "SELECT * FROM users;"), _pc("Show all users", "SELECT * FROM users;"),
            _pc("show ALL users!", "select * from users"), _pc("x " * 200, "long")]
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer=tiny_tokenizer(), max_seq_len=128)
    d = rep.to_dict()
    assert d["n_examples"] == 4 and d["format"] == "prompt_completion" and rep.ok
    assert d["duplicates"]["exact"] == [[1, 2]] and d["duplicates"]["near"] == [[1, 2, 3]]
    assert d["n_truncated"] == 1 and d["tokens"]["max"] > 400
    assert any("1000" in w for w in d["warnings"]) and any("truncated" in w for w in d["warnings"])
    json.dumps(d)
    assert "OK" in rep.render()


def test_report_lists_every_error_with_its_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(_pc("a", "b")) + '\n{"messages": [{"role": "robot", "content": "x"}]}\n{"prompt": 1}\n')
    rep = check_file(f)
    assert not rep.ok
    assert [(e["line"], e["code"]) for e in rep.errors] == [(2, "unrecognized_role"), (3, "unknown_format")]
    assert "d.jsonl:2: unrecognized_role" in rep.render()


def test_label_balance_and_imbalance_warning(tmp_path):
    rows = [{"text": f"t{i}", "label": "a"} for i in range(12)] + [{"text": "u", "label": "b"}]
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert rep.label_balance == {"a": 12, "b": 1}
    assert any("imbalance" in w for w in rep.warnings)


def test_inconsistent_formatting_is_warned(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                          {"role": "assistant", "content": "a"}]},
            {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
            _pc("p", "c")]
    rep = check_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert sum("inconsistent formatting" in w for w in rep.warnings) == 2
