"""Graders against OpenAI's documented examples, validation errors, and python graders that raise or hang."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tuneforge.graders import GraderError, build, run_response, sample_from_text, summarize, validate


def grade(spec, text, item, **kw):
    with build(spec, **kw) as g:
        return g.grade_one(sample_from_text(text), item)


@pytest.mark.parametrize("op,text,ref,want", [
    ("eq", "Paris", "Paris", 1.0), ("eq", "paris", "Paris", 0.0), ("ne", "Rome", "Paris", 1.0),
    ("ne", "Paris", "Paris", 0.0), ("like", "It is Paris.", "Paris", 1.0), ("like", "it is paris", "Paris", 0.0),
    ("ilike", "it is PARIS", "paris", 1.0), ("ilike", "Rome", "paris", 0.0)])
def test_string_check_operations(op, text, ref, want):
    spec = {"type": "string_check", "name": "city", "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}", "operation": op}
    assert grade(spec, text, {"answer": ref}).score == want


def test_openai_multigrader_example_name_and_email():
    """The guide's multigrader: fuzzy name + exact email, (name + email) / 2, over sample.output_json."""
    spec = {"type": "multi", "graders": {
        "name": {"name": "name_grader", "type": "text_similarity", "input": "{{sample.output_json.name}}",
                 "reference": "{{item.name}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.9},
        "email": {"name": "email_grader", "type": "string_check", "input": "{{sample.output_json.email}}",
                  "reference": "{{item.email}}", "operation": "eq"}},
        "calculate_output": "(name + email) / 2"}
    item = {"name": "John Doe", "email": "john.doe@gmail.com"}
    exact = grade(spec, json.dumps(item), item)
    assert exact.score == 1.0 and exact.sub_rewards == {"name": 1.0, "email": 1.0}
    typo = grade(spec, json.dumps({"name": "Jon Doe", "email": "john.doe@gmail.com"}), item)
    assert 0.5 < typo.score < 1.0 and typo.sub_rewards["email"] == 1.0
    wrong_email = grade(spec, json.dumps({"name": "John Doe", "email": "x@y.z"}), item)
    assert wrong_email.score == 0.5
    not_json = grade(spec, "John Doe, john.doe@gmail.com", item)  # output_json is None: no such variable
    assert not_json.score == 0.0 and "invalid_variable_error" in not_json.errors


def test_openai_tool_call_multigrader_example():
    spec = {"type": "multi", "graders": {
        "function_name": {"name": "function_name", "type": "string_check", "input": "get_acceptors",
                          "reference": "{{sample.output_tools[0].function.name}}", "operation": "eq"},
        "arguments": {"name": "arguments", "type": "string_check", "input": "{\"smiles\": \"{{item.smiles}}\"}",
                      "reference": "{{sample.output_tools[0].function.arguments}}", "operation": "eq"}},
        "calculate_output": "0.5 * function_name + 0.5 * arguments"}
    sample = sample_from_text("")
    sample["output_tools"] = [{"type": "function", "function": {"name": "get_acceptors",
                                                                "arguments": "{\"smiles\": \"CCO\"}"}}]
    with build(spec) as g:
        assert g.grade_one(sample, {"smiles": "CCO"}).score == 1.0
        assert g.grade_one(sample, {"smiles": "CCC"}).score == 0.5


def test_openai_python_grader_example_matches_fuzzy_match():
    """The guide's python grader (rapidfuzz WRatio) and our fuzzy_match text_similarity agree."""
    source = ("from rapidfuzz import fuzz, utils\n\n"
              "def grade(sample, item) -> float:\n"
              "    output_text = sample[\"output_text\"]\n"
              "    reference_answer = item[\"reference_answer\"]\n"
              "    return fuzz.WRatio(output_text, reference_answer, processor=utils.default_process) / 100.0\n")
    item = {"reference_answer": "fuzzy wuzzy had no hair"}
    py = grade({"type": "python", "source": source}, "fuzzy wuzzy was a bear", item)
    ts = grade({"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}",
                "reference": "{{item.reference_answer}}", "evaluation_metric": "fuzzy_match"},
               "fuzzy wuzzy was a bear", item)
    assert py.errors == set() and 0.3 < py.score < 1.0
    assert py.score == pytest.approx(ts.score)


def test_text_similarity_agrees_with_eval_metrics():
    from tuneforge.eval.metrics import bleu_each, rouge_each

    hyp, ref = "the cat sat on the mat today", "the cat is on the mat"
    base = {"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}", "reference": "{{item.r}}"}
    got = {m: grade({**base, "evaluation_metric": m}, hyp, {"r": ref}).score
           for m in ("bleu", "rouge_1", "rouge_2", "rouge_l", "rouge_3", "gleu")}
    assert got["bleu"] == pytest.approx(bleu_each([hyp], [ref])[0] / 100)
    r = rouge_each([hyp], [ref])
    assert (got["rouge_1"], got["rouge_2"], got["rouge_l"]) == pytest.approx(
        (r["rouge1"][0], r["rouge2"][0], r["rougeL"][0]))
    assert 0 < got["rouge_3"] < got["rouge_2"] < got["rouge_1"] < 1
    assert 0 < got["gleu"] < 1
    assert grade({**base, "evaluation_metric": "bleu"}, ref, {"r": ref}).score == pytest.approx(1.0)


PY_OK = "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n"


@pytest.mark.integration  # waits on a looping grader subprocess's timeout
def test_python_grader_that_raises_or_loops_scores_zero_and_goes_on():
    source = ("import os\n"
              "def grade(sample, item):\n"
              "    t = sample['output_text']\n"
              "    if t == 'raise': raise RuntimeError('boom')\n"
              "    if t == 'loop':\n"
              "        while True: pass\n"
              "    if t == 'exit': os._exit(3)\n"
              "    if t == 'text': return 'one'\n"
              "    if t == 'print': print('noise on stdout'); return 0.25\n"
              "    return 1.0 if t == item['answer'] else 0.0\n")
    texts = ["42", "raise", "loop", "42", "exit", "text", "print", "41", "42"]
    with build({"type": "python", "name": "p", "source": source}, python_timeout=1.5) as g:
        t0 = time.monotonic()
        res = g.grade([sample_from_text(t) for t in texts], [{"answer": "42"}] * len(texts))
        assert time.monotonic() - t0 < 30
    assert [r.score for r in res] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.25, 0.0, 1.0]
    assert res[1].errors == {"python_grader_runtime_error"} and "boom" in res[1].details
    assert res[2].errors == {"unresponsive_reward_error"}
    assert res[4].errors == {"python_grader_server_error"}
    assert res[5].errors == {"python_grader_runtime_error"}
    s = summarize(res)
    assert s["errors"] == {"python_grader_runtime_error": 2, "python_grader_server_error": 1,
                           "unresponsive_reward_error": 1}


def test_a_program_that_exits_with_a_python_grader_still_open_exits_cleanly():
    """The grader's process is stopped by __del__ at interpreter shutdown; touching its pipe then, while the
    daemon reader thread is frozen inside a read, used to abort the interpreter ("Fatal Python error")."""
    code = ("from tuneforge.graders import build, sample_from_text\n"
            "g = build({'type': 'python', 'name': 'p', 'source': 'def grade(sample, item):\\n    return 1.0\\n'})\n"
            "assert g.grade_one(sample_from_text('x'), {}).score == 1.0\n"
            "raise SystemExit('leaving without close()')\n")
    for _ in range(3):  # the abort depended on where the reader thread was: try a few times
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "leaving without close()" in r.stderr, r.stderr[-2000:]
        assert "Fatal Python error" not in r.stderr, r.stderr[-2000:]


def test_python_grader_item_keys_and_bad_sources():
    assert grade({"type": "python", "source": PY_OK}, "x", {"answer": "x"}).score == 1.0
    with pytest.raises(GraderError, match="source"):
        build({"type": "python", "source": "import no_such_module_xyz\ndef grade(s, i):\n    return 1\n"})
    with pytest.raises(GraderError, match="two arguments"):
        build({"type": "python", "source": "def grade(s):\n    return 1\n"})
    with pytest.raises(GraderError, match="does not compile"):
        validate({"type": "python", "source": "def grade(s, i):\n  return (\n"})


def test_formula_is_never_executed_as_python():
    sub = {"type": "string_check", "input": "a", "reference": "a", "operation": "eq"}
    for bad in ("__import__('os').system('true')", "a.__class__", "[a]", "a if a else 0", "a % 2", "open(a)",
                "b + 1", ""):
        with pytest.raises(GraderError, match="calculate_output"):
            validate({"type": "multi", "graders": {"a": sub}, "calculate_output": bad})
    ok = {"type": "multi", "graders": {"a": sub, "b": {**sub, "reference": "b"}},
          "calculate_output": "max(a, b) ^ 2 + sqrt(4) - floor(1.5) + abs(-1) * min(1, 2) / ceil(0.5)"}
    assert grade(ok, "x", {}).score == pytest.approx(1 + 2 - 1 + 1)
    div0 = {"type": "multi", "graders": {"a": sub, "b": {**sub, "reference": "b"}}, "calculate_output": "a / b"}
    r = grade(div0, "x", {})
    assert r.score == 0.0 and "formula_parse_error" in r.errors


@pytest.mark.parametrize("spec,field,msg", [
    ({"type": "exact"}, "type", "must be one of"),
    ({"type": "label_model"}, "type", "label_model is not supported"),
    ({"type": "string_check", "input": "a", "reference": "b", "operation": "neq"}, "operation", "eq, ne"),
    ({"type": "string_check", "input": "a", "reference": "b", "operation": "eq", "refrence": 1}, "refrence",
     "did you mean 'reference'"),
    ({"type": "string_check", "input": "{{ output_text }}", "reference": "b", "operation": "eq"}, "input",
     "unknown namespace .output_text."),
    ({"type": "string_check", "input": "{{ model.x }}", "reference": "b", "operation": "eq"}, "input",
     "unknown namespace 'model'"),
    ({"type": "string_check", "reference": "b", "operation": "eq"}, "input", "required"),
    ({"type": "text_similarity", "input": "a", "reference": "b", "evaluation_metric": "meteor"},
     "evaluation_metric", "not supported"),
    ({"type": "score_model", "model": "m", "input": []}, "input", "non-empty"),
    ({"type": "score_model", "model": "m", "input": [{"role": "user", "content": "x"}], "range": [1, 0]},
     "range", "low < high"),
    ({"type": "multi", "graders": {"m": {"type": "multi", "graders": {}, "calculate_output": "1"}},
      "calculate_output": "m"}, "graders.m.type", "cannot contain another multi"),
    ({"type": "multi", "graders": {"a": {"type": "string_check", "input": "a", "reference": "b",
                                         "operation": "like", "x": 1}}, "calculate_output": "a"},
     "graders.a.x", "unknown key"),
])
def test_validation_names_the_field(spec, field, msg):
    with pytest.raises(GraderError, match=msg) as e:
        validate(spec)
    assert e.value.field == field


def test_score_model_judge_scores_clips_and_counts_parse_errors():
    """The guide's score_model example, with a judge function standing in for the grader model."""
    seen = []

    def judge(model, sampling):
        assert model == "o4-mini-2025-04-16" and sampling["top_p"] == 1

        def chat(chats):
            seen.extend(chats)
            out = []
            for msgs in chats:
                user = msgs[-1]["content"]
                out.append({"Reference: 1.0. Model answer: 0.9": '{"result": 0.8, "steps": []}',
                            "Reference: 1.0. Model answer: 7": "Score: 5",
                            }.get(user, "I refuse to grade this."))
            return out
        return chat

    grader = {"type": "score_model", "name": "my_score_model", "input": [
        {"role": "system", "content": "You are an expert grader. If the reference and model answer are exact "
                                      "matches, output a score of 1."},
        {"role": "user", "content": "Reference: {{ item.reference_answer }}. Model answer: {{ sample.output_text }}"}],
        "pass_threshold": 0.5, "model": "o4-mini-2025-04-16", "range": [0, 1],
        "sampling_params": {"max_completions_tokens": 32768, "top_p": 1, "reasoning_effort": "medium"}}
    with build(grader, judge=judge) as g:
        res = g.grade([sample_from_text(t) for t in ("0.9", "7", "x")], [{"reference_answer": 1.0}] * 3)
    assert [r.score for r in res] == [0.8, 1.0, 0.0]  # 5 is clipped to the range
    assert res[2].errors == {"model_grader_parse_error"}
    assert "JSON object" in seen[0][0]["content"]  # the response format is asked for

    def down(model, sampling):
        raise ConnectionError("judge unreachable")

    with build(grader, judge=down) as g:
        r = g.grade_one(sample_from_text("0.9"), {"reference_answer": 1.0})
    assert r.score == 0.0 and r.errors == {"model_grader_server_error"}


def test_run_response_has_openai_shape():
    from openai.types.fine_tuning.alpha import GraderRunResponse

    spec = {"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "{{item.a}}",
            "operation": "eq"}
    with build(spec) as g:
        body = run_response(g, sample_from_text("hi"), {"a": "hi"}, "hi")
        bad = run_response(g, sample_from_text("hi"), {}, "hi")
    parsed = GraderRunResponse.model_validate(body)
    assert parsed.reward == 1.0 and parsed.metadata.name == "s" and parsed.metadata.type == "string_check"
    assert GraderRunResponse.model_validate(bad).metadata.errors.invalid_variable_error is True
