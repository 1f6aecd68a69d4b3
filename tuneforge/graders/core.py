"""Grader specs in OpenAI's JSON shapes → validated `Grader` objects that score (sample, item) pairs.

`build(spec)` validates the whole spec first (every problem is a `GraderError` naming the field, e.g.
`graders.email.operation`), then returns a grader whose `grade(samples, items)` gives one `Result` per pair.
Grading never raises on a bad sample: a missing variable, a python grader that raises or hangs, a judge that
answers nonsense, a formula that divides by zero — each scores 0 and sets the error flag OpenAI's
`/graders/run` reports (`Result.errors`), so a training step or an eval goes on.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneforge.errors import ConfigError
from tuneforge.graders import formula, similarity, template
from tuneforge.graders.sandbox import PythonSandbox, SandboxError

TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")
OPERATIONS = ("eq", "ne", "like", "ilike")
MAX_SOURCE = 256 * 1024  # OpenAI: python grader code under 256 kB
ERROR_FLAGS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
               "model_grader_refusal_error", "model_grader_server_error", "other_error",
               "python_grader_runtime_error", "python_grader_server_error", "sample_parse_error",
               "truncated_observation_error", "unresponsive_reward_error")
_KEYS = {  # allowed keys per type (OpenAI's schema); anything else is a typo worth an error
    "string_check": {"type", "name", "input", "reference", "operation"},
    "text_similarity": {"type", "name", "input", "reference", "evaluation_metric", "pass_threshold"},
    "python": {"type", "name", "source", "image_tag", "pass_threshold"},
    "score_model": {"type", "name", "input", "model", "range", "sampling_params", "pass_threshold"},
    "multi": {"type", "name", "graders", "calculate_output"},
}
ChatFn = Callable[[list[list[dict]]], list[str]]
JudgeFactory = Callable[[str, dict], ChatFn]  # (model, sampling_params) -> chat function


class GraderError(ConfigError):
    """An invalid grader spec; `field` is the dotted path of the offending key ("graders.a.operation")."""

    def __init__(self, message: str, field: str | None = None, path: str | None = None):
        self.field, self.detail, self.path = field, message, path
        super().__init__(f"{path + ': ' if path else ''}grader{'.' + field if field else ''}: {message}")


@dataclass
class Result:
    """One grade: `score`, the sub-graders' scores (multi), the error flags set, a short reason when one is."""

    score: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: set[str] = field(default_factory=set)
    details: str | None = None


def sample_from_text(text: str, finish_reason: str = "stop") -> dict:
    """The `sample` namespace for one completion: output_text, output_json (when the text is JSON), choices."""
    try:
        parsed = json.loads(text)
        output_json = parsed if isinstance(parsed, (dict, list)) else None
    except (ValueError, TypeError):
        output_json = None
    return {"output_text": text, "output_json": output_json, "output_tools": [],
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": text}}]}


def item_from_row(row: dict) -> dict:
    """The `item` namespace for a training/eval row: all its keys (messages included), as OpenAI does."""
    return {k: v for k, v in row.items()}


# ---- the graders -------------------------------------------------------------------------------------------

class Grader:
    type: str = ""

    def __init__(self, name: str):
        self.name = name

    def grade(self, samples: list[dict], items: list[dict]) -> list[Result]:
        if len(samples) != len(items):
            raise ValueError(f"{len(samples)} samples but {len(items)} items")
        return [self._one(s, i) for s, i in zip(samples, items)]

    def grade_one(self, sample: dict, item: dict) -> Result:
        return self.grade([sample], [item])[0]

    def _one(self, sample: dict, item: dict) -> Result:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        """Release processes (python graders); safe to call twice."""

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StringCheck(Grader):
    type = "string_check"

    def __init__(self, name: str, input: str, reference: str, operation: str):
        super().__init__(name)
        self.input, self.reference, self.operation = input, reference, operation

    def _one(self, sample: dict, item: dict) -> Result:
        try:
            a, b = template.render(self.input, sample, item), template.render(self.reference, sample, item)
        except template.InvalidVariable as e:
            return Result(0.0, errors={"invalid_variable_error"}, details=str(e))
        op = self.operation
        ok = a == b if op == "eq" else a != b if op == "ne" else b in a if op == "like" else b.lower() in a.lower()
        return Result(float(ok))


class TextSimilarity(Grader):
    type = "text_similarity"

    def __init__(self, name: str, input: str, reference: str, evaluation_metric: str,
                 pass_threshold: float | None = None):
        super().__init__(name)
        self.input, self.reference, self.metric, self.pass_threshold = input, reference, evaluation_metric, \
            pass_threshold

    def _one(self, sample: dict, item: dict) -> Result:
        try:
            a, b = template.render(self.input, sample, item), template.render(self.reference, sample, item)
        except template.InvalidVariable as e:
            return Result(0.0, errors={"invalid_variable_error"}, details=str(e))
        return Result(similarity.score(self.metric, a, b))


class Python(Grader):
    """`def grade(sample, item) -> float` in its own process (see `sandbox`)."""

    type = "python"

    def __init__(self, name: str, source: str, *, timeout: float | None = None):
        super().__init__(name)
        self.sandbox = PythonSandbox(source, timeout=timeout)

    def _one(self, sample: dict, item: dict) -> Result:
        out = self.sandbox.grade(sample, item)
        if out.error is None:
            return Result(out.score)
        flag = {"runtime": "python_grader_runtime_error", "timeout": "unresponsive_reward_error",
                "server": "python_grader_server_error"}[out.error]
        return Result(0.0, errors={flag}, details=out.details)

    def close(self) -> None:
        self.sandbox.close()


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_judgement(text: str) -> float | None:
    """A judge's score: the `result` of a JSON answer ({"result": 0.7, "steps": [...]}, OpenAI's response
    format), else the first number in the text; None when there is none."""
    s = text.strip()
    fence = re.search(r"\{.*\}", s, re.S)
    if fence:
        try:
            obj = json.loads(fence.group(0))
            if isinstance(obj, dict) and isinstance(obj.get("result"), (int, float)) and \
                    not isinstance(obj["result"], bool):
                return float(obj["result"])
        except ValueError:
            pass
    m = _NUMBER.search(s)
    return float(m.group(0)) if m else None


SCORE_FORMAT = ("Answer with a JSON object {\"result\": <a number from %g to %g>, \"steps\": [{\"description\": "
                "..., \"conclusion\": ...}]} and nothing else.")


class ScoreModel(Grader):
    """A judge model's number, clipped to `range` (OpenAI: "truncated to the given range"); a non-numeric
    answer scores 0 (model_grader_parse_error), a failed call too (model_grader_server_error)."""

    type = "score_model"

    def __init__(self, name: str, input: list[dict], model: str, range: list[float] | None = None,
                 sampling_params: dict | None = None, pass_threshold: float | None = None, *,
                 judge: JudgeFactory | None = None):
        super().__init__(name)
        self.messages, self.model = input, model
        self.low, self.high = (range or [0.0, 1.0])
        self.sampling = dict(sampling_params or {})
        self.pass_threshold = pass_threshold
        self._judge_factory = judge or openai_judge
        self._chat: ChatFn | None = None

    def _render(self, sample: dict, item: dict) -> list[dict]:
        msgs = [{"role": "developer" if m["role"] == "developer" else m["role"],
                 "content": template.render(_content_text(m["content"]), sample, item)} for m in self.messages]
        msgs = [{"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]} for m in msgs]
        hint = SCORE_FORMAT % (self.low, self.high)
        if msgs and msgs[0]["role"] == "system":
            msgs[0] = {"role": "system", "content": msgs[0]["content"] + "\n\n" + hint}
        else:
            msgs.insert(0, {"role": "system", "content": hint})
        return msgs

    def grade(self, samples: list[dict], items: list[dict]) -> list[Result]:
        if len(samples) != len(items):
            raise ValueError(f"{len(samples)} samples but {len(items)} items")
        results: list[Result | None] = [None] * len(samples)
        chats, where = [], []
        for k, (s, i) in enumerate(zip(samples, items)):
            try:
                chats.append(self._render(s, i))
                where.append(k)
            except template.InvalidVariable as e:
                results[k] = Result(0.0, errors={"invalid_variable_error"}, details=str(e))
        if chats:
            try:
                if self._chat is None:
                    self._chat = self._judge_factory(self.model, self.sampling)
                replies = self._chat(chats)
            except Exception as e:  # noqa: BLE001 - a judge outage scores 0, it does not stop training
                for k in where:
                    results[k] = Result(0.0, errors={"model_grader_server_error"}, details=str(e)[:500])
                return results  # type: ignore[return-value]
            for k, reply in zip(where, replies):
                v = parse_judgement(reply or "")
                if v is None or not math.isfinite(v):
                    results[k] = Result(0.0, errors={"model_grader_parse_error"},
                                        details=f"no number in the judge's answer {reply[:80]!r}")
                else:
                    results[k] = Result(min(self.high, max(self.low, v)))
        return results  # type: ignore[return-value]


def _content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of OpenAI's content arrays."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list):
        return "".join(_content_text(c) for c in content)
    return ""


def openai_judge(model: str, sampling: dict) -> ChatFn:
    """The default judge: `model` on an OpenAI-compatible server through the openai SDK. The server is
    $TUNEFORGE_JUDGE_BASE_URL, else $OPENAI_BASE_URL, else api.openai.com; the key $OPENAI_API_KEY."""
    from tuneforge.data.augment import openai_chat

    url = os.environ.get("TUNEFORGE_JUDGE_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or \
        "https://api.openai.com/v1"
    chat, _ = openai_chat(url, model=model, temperature=float(sampling.get("temperature", 0.0) or 0.0),
                          top_p=float(sampling.get("top_p", 1.0) or 1.0),
                          max_tokens=int(sampling.get("max_completions_tokens") or 256),
                          seed=int(sampling.get("seed") or 0))
    return chat


class Multi(Grader):
    type = "multi"

    def __init__(self, name: str, graders: dict[str, Grader], calculate_output: str):
        super().__init__(name)
        self.graders, self.text = graders, calculate_output
        self.tree = formula.compile_formula(calculate_output, set(graders))

    def grade(self, samples: list[dict], items: list[dict]) -> list[Result]:
        per = {k: g.grade(samples, items) for k, g in self.graders.items()}
        out = []
        for j in range(len(samples)):
            subs = {k: per[k][j].score for k in self.graders}
            errors = set().union(*(per[k][j].errors for k in self.graders))
            details = "; ".join(f"{k}: {per[k][j].details}" for k in self.graders if per[k][j].details) or None
            try:
                score = formula.evaluate(self.tree, subs)
            except (ArithmeticError, ValueError) as e:
                out.append(Result(0.0, subs, errors | {"formula_parse_error"}, f"calculate_output: {e}"))
                continue
            out.append(Result(score, subs, errors, details))
        return out

    def close(self) -> None:
        for g in self.graders.values():
            g.close()


# ---- validation and construction ---------------------------------------------------------------------------

def _req_str(spec: dict, key: str, at: str, *, templ: bool = True) -> str:
    v = spec.get(key)
    if not isinstance(v, str):
        raise GraderError(f"'{key}' is required and must be a string" if v is None else
                          f"'{key}' must be a string, got {type(v).__name__}", _join(at, key))
    if templ:
        try:
            template.check(v)
        except template.InvalidVariable as e:
            raise GraderError(str(e), _join(at, key)) from None
    return v


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _number(spec: dict, key: str, at: str) -> float | None:
    v = spec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GraderError(f"'{key}' must be a number, got {v!r}", _join(at, key))
    return float(v)


def validate(spec: Any, *, at: str = "", nested: bool = False) -> dict:
    """Check a grader spec without building it (no process started, no judge called); returns it normalised
    (with a `name`). Raises GraderError with the field path of the first problem."""
    if not isinstance(spec, dict):
        raise GraderError(f"expected a JSON object, got {type(spec).__name__}", at or None)
    kind = spec.get("type")
    if kind not in TYPES:
        extra = " (label_model is not supported: use score_model)" if kind == "label_model" else ""
        raise GraderError(f"'type' must be one of {', '.join(TYPES)}, got {kind!r}{extra}", _join(at, "type"))
    if nested and kind == "multi":
        raise GraderError("a multi grader cannot contain another multi grader", _join(at, "type"))
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], _KEYS[kind], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise GraderError(f"unknown key '{unknown[0]}' for a {kind} grader{hint}", _join(at, unknown[0]))
    out = dict(spec)
    name = spec.get("name", kind)
    if not isinstance(name, str) or not name.strip():
        raise GraderError("'name' must be a non-empty string", _join(at, "name"))
    out["name"] = name
    if kind == "string_check":
        _req_str(spec, "input", at), _req_str(spec, "reference", at)
        if spec.get("operation") not in OPERATIONS:
            raise GraderError(f"'operation' must be one of {', '.join(OPERATIONS)}, got {spec.get('operation')!r}",
                              _join(at, "operation"))
    elif kind == "text_similarity":
        _req_str(spec, "input", at), _req_str(spec, "reference", at)
        m = spec.get("evaluation_metric")
        if m in similarity.UNSUPPORTED:
            raise GraderError(f"evaluation_metric '{m}' is not supported here ({similarity.UNSUPPORTED[m]}); "
                              f"use one of {', '.join(similarity.METRICS)}", _join(at, "evaluation_metric"))
        if m not in similarity.METRICS:
            raise GraderError(f"'evaluation_metric' must be one of {', '.join(similarity.METRICS)}, got {m!r}",
                              _join(at, "evaluation_metric"))
        _number(spec, "pass_threshold", at)
    elif kind == "python":
        src = _req_str(spec, "source", at, templ=False)
        if len(src.encode()) > MAX_SOURCE:
            raise GraderError(f"'source' is {len(src.encode()):,} bytes; the limit is {MAX_SOURCE:,}",
                              _join(at, "source"))
        try:
            compile(src, "<grader>", "exec")
        except SyntaxError as e:
            raise GraderError(f"'source' does not compile: {e.msg} (line {e.lineno})", _join(at, "source")) from None
        if not re.search(r"^\s*(async\s+)?def\s+grade\s*\(", src, re.M):
            raise GraderError("'source' must define grade(sample, item) -> float", _join(at, "source"))
        _number(spec, "pass_threshold", at)
    elif kind == "score_model":
        _req_str(spec, "model", at, templ=False)
        msgs = spec.get("input")
        if not isinstance(msgs, list) or not msgs:
            raise GraderError("'input' must be a non-empty list of messages", _join(at, "input"))
        for i, m in enumerate(msgs):
            f = _join(at, f"input[{i}]")
            if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
                raise GraderError("each message needs a role (system, developer, user, assistant) and content", f)
            try:
                template.check(_content_text(m.get("content")))
            except template.InvalidVariable as e:
                raise GraderError(str(e), f + ".content") from None
        rng = spec.get("range")
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2 and
                                    all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rng)
                                    and rng[0] < rng[1]):
            raise GraderError(f"'range' must be [low, high] with low < high, got {rng!r}", _join(at, "range"))
        if spec.get("sampling_params") is not None and not isinstance(spec["sampling_params"], dict):
            raise GraderError("'sampling_params' must be an object", _join(at, "sampling_params"))
        _number(spec, "pass_threshold", at)
    else:  # multi
        subs = spec.get("graders")
        if isinstance(subs, dict) and "type" in subs and isinstance(subs.get("type"), str):
            subs = {subs.get("name") or subs["type"]: subs}  # the SDK types allow a single grader object
        if not isinstance(subs, dict) or not subs:
            raise GraderError("'graders' must be an object of named graders", _join(at, "graders"))
        norm = {}
        for key, sub in subs.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or key in formula.FUNCTIONS:
                raise GraderError(f"grader key {key!r} must be an identifier (and not a function name) to be "
                                  "used in calculate_output", _join(at, f"graders.{key}"))
            norm[key] = validate(sub, at=_join(at, f"graders.{key}"), nested=True)
        out["graders"] = norm
        try:
            formula.compile_formula(spec.get("calculate_output"), set(norm))
        except formula.FormulaError as e:
            raise GraderError(str(e), _join(at, "calculate_output")) from None
    return out


def build(spec: Any, *, judge: JudgeFactory | None = None, python_timeout: float | None = None) -> Grader:
    """Validate then construct; python graders start their process here (a source whose grade cannot be
    defined — an import error, say — is a GraderError now, not 0 on every sample later)."""
    spec = validate(spec)
    return _build(spec, judge, python_timeout, at="")


def _build(spec: dict, judge, timeout: float | None, at: str) -> Grader:
    kind, name = spec["type"], spec["name"]
    if kind == "string_check":
        return StringCheck(name, spec["input"], spec["reference"], spec["operation"])
    if kind == "text_similarity":
        return TextSimilarity(name, spec["input"], spec["reference"], spec["evaluation_metric"],
                              spec.get("pass_threshold"))
    if kind == "python":
        try:
            return Python(name, spec["source"], timeout=timeout)
        except SandboxError as e:
            raise GraderError(str(e).removeprefix("python grader: "), _join(at, "source")) from None
    if kind == "score_model":
        return ScoreModel(name, spec["input"], spec["model"], spec.get("range"), spec.get("sampling_params"),
                          spec.get("pass_threshold"), judge=judge)
    built: dict[str, Grader] = {}
    try:
        for key, sub in spec["graders"].items():
            built[key] = _build(sub, judge, timeout, _join(at, f"graders.{key}"))
    except GraderError:
        for g in built.values():
            g.close()
        raise
    return Multi(name, built, spec["calculate_output"])


def load(path: str | Path) -> dict:
    """Read and validate a grader JSON file (errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise GraderError(f"{p}: grader file not found")
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{p}: invalid JSON: {e}") from None
    try:
        return validate(spec)
    except GraderError as e:
        raise GraderError(e.detail, e.field, str(p)) from None


def summarize(results: list[Result]) -> dict:
    """Mean score and the count of each error flag over many grades (what `grader run` and training log)."""
    n = len(results)
    errors: dict[str, int] = {}
    for r in results:
        for e in r.errors:
            errors[e] = errors.get(e, 0) + 1
    mean = sum(r.score for r in results) / n if n else float("nan")
    return {"n": n, "mean": mean, "errors": dict(sorted(errors.items()))}


def run_response(grader: Grader, sample: dict, item: dict, model_sample: str) -> dict:
    """OpenAI's /fine_tuning/alpha/graders/run response body for one sample."""
    t0 = time.perf_counter()
    r = grader.grade_one(sample, item)
    errors: dict[str, Any] = {k: k in r.errors for k in ERROR_FLAGS}
    errors["python_grader_runtime_error_details"] = r.details if r.errors & {
        "python_grader_runtime_error", "unresponsive_reward_error"} else None
    errors["python_grader_server_error_type"] = None
    errors["model_grader_server_error_details"] = r.details if "model_grader_server_error" in r.errors else None
    return {"reward": r.score,
            "metadata": {"name": grader.name, "type": grader.type, "errors": errors,
                         "execution_time": round(time.perf_counter() - t0, 4),
                         "scores": r.sub_rewards or {grader.name: r.score}, "token_usage": None,
                         "sampled_model_name": None},
            "sub_rewards": r.sub_rewards, "model_grader_token_usage_per_model": {}}
