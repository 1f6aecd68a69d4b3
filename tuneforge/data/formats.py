"""Example formats (prompt/completion, chat, alpaca, text, classification, preference) mapped to one `Sample`.

Preference rows (OpenAI's `input`/`preferred_output`/`non_preferred_output`, TRL's `prompt`/`chosen`/`rejected`)
become a `Preference`, a Sample whose `messages` are the prompt plus the preferred answer, so every reader of
Samples (splits, dedup, eval references) works on them unchanged.

Use: `to_sample(rec, detect_format(rec), "file:line")`; `exact_key`/`near_key` name an example for dedup and splits.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field

from tuneforge.data.tools import check_tool_calls, check_tools
from tuneforge.errors import DataError


@dataclass
class Sample:
    """One training example in canonical form.

    `messages` is a chat (OpenAI shape: role/content dicts) for every format except plain
    text, which has `text` instead and is trained as language modelling on all its tokens.
    `label` is set for classification examples (the assistant's answer is the label).
    `where` is "file:line" so later errors can point at the source row.
    """

    messages: list[dict] | None = None
    text: str | None = None
    label: str | None = None
    format: str = ""
    where: str = ""
    extra: dict = field(default_factory=dict)
    tools: list[dict] | None = None  # OpenAI's function specs on a tool-calling chat row (data.tools renders them)

    @property
    def prompt_messages(self) -> list[dict]:
        """Messages up to (not including) the last assistant turn: what a model is asked."""
        msgs = self.messages or []
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=len(msgs))
        return msgs[:last]

    @property
    def reference(self) -> str | None:
        """The last assistant message: the expected answer for evaluation."""
        for m in reversed(self.messages or []):
            if m.get("role") == "assistant":
                return m.get("content")
        return None


@dataclass
class Preference(Sample):
    """One preference pair: a prompt, the preferred answer turns and the non-preferred answer turns.

    `messages` = prompt + chosen (what SFT-side code and eval see: the preferred chat); `prompt`, `chosen` and
    `rejected` keep the parts apart so the DPO objective can score both answers after the same prompt."""

    prompt: list[dict] = field(default_factory=list)
    chosen: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    @property
    def prompt_messages(self) -> list[dict]:
        return list(self.prompt)


ROLES = ("system", "user", "assistant", "tool", "function")
# OpenAI's checker knows role/content/name/weight/function_call; tool_calls/tool_call_id belong to the tools API.
MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call")
FORMATS = ("chat", "prompt_completion", "alpaca", "classification", "text", "preference")
# keys that make a row a preference row (either shape); a row with only some of them is a preference row with a
# missing side, reported as such rather than as an unknown format
PREFERENCE_KEYS = {"preferred_output", "non_preferred_output", "chosen", "rejected"}


def _loc(where: str) -> dict:
    """"file:line" → DataError location kwargs (rpartition: Windows drive letters have colons too)."""
    path, _, line = where.rpartition(":")
    return dict(path=path, line=int(line)) if line.isdigit() else dict(path=where, line=None)


def detect_format(record, where: str = "") -> str:
    """Name the format of one parsed record by its keys; extra keys (id, source...) are ignored."""
    loc = _loc(where)
    if not isinstance(record, dict):
        raise DataError(f"expected an object, got {type(record).__name__}", code="data_type", **loc)
    keys = set(record)
    if keys & PREFERENCE_KEYS:
        return "preference"
    if "messages" in keys:
        return "chat"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if {"text", "label"} <= keys:
        return "classification"
    if "text" in keys:
        return "text"
    raise DataError(f"unknown format: keys {sorted(keys)}; expected prompt/completion, messages, "
                    "instruction/input/output, text/label, text, input/preferred_output/non_preferred_output or "
                    "prompt/chosen/rejected", code="unknown_format", **loc)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)  # None, or NaN from an empty parquet/pandas cell


def _text_field(record: dict, name: str, loc: dict, *, required: bool = True, scalar: bool = False) -> str:
    """A field that must be a non-empty string (`scalar`: numbers and booleans too, as for labels)."""
    v = record.get(name)
    if _is_missing(v):
        if required:
            raise DataError(f"missing value for '{name}'", field=name, code="missing_field", **loc)
        return ""
    ok = (str, int, float, bool) if scalar else (str,)
    if not isinstance(v, ok):
        raise DataError(f"'{name}' must be a {'string or number' if scalar else 'string'}, got {type(v).__name__}",
                        field=name, code="missing_field", **loc)
    v = str(v)
    if required and not v.strip():
        raise DataError(f"'{name}' is empty", field=name, code="missing_field", **loc)
    return v


def _check_chat(record: dict, loc: dict) -> list[dict]:
    """OpenAI's fine-tuning data checks, with their error codes (first problem wins)."""
    msgs = record.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise DataError("'messages' must be a non-empty list", field="messages", code="missing_messages_list", **loc)
    out = []
    for i, m in enumerate(msgs):
        f = f"messages[{i}]"
        if not isinstance(m, dict):
            raise DataError(f"message must be an object, got {type(m).__name__}", field=f, code="data_type", **loc)
        calls = m.get("tool_calls") or m.get("function_call")
        for k in ("role", "content"):
            if k not in m and not (k == "content" and calls):
                raise DataError(f"message has no '{k}'", field=f"{f}.{k}", code="message_missing_key", **loc)
        extra = set(m) - set(MESSAGE_KEYS)
        if extra:
            raise DataError(f"unrecognized key(s) {sorted(map(str, extra))} (allowed: {', '.join(MESSAGE_KEYS)})",
                            field=f, code="message_unrecognized_key", **loc)
        role = m["role"]
        if not isinstance(role, str) or role not in ROLES:
            raise DataError(f"unrecognized role {role!r} (allowed: {', '.join(ROLES)})", field=f"{f}.role",
                            code="unrecognized_role", **loc)
        c = m.get("content")
        if not (isinstance(c, str) and c.strip()) and not (not c and calls):
            raise DataError(f"content must be a non-empty string, got {c!r:.40}", field=f"{f}.content",
                            code="missing_content", **loc)
        msg = {"role": role, "content": c or ""}
        if m.get("tool_calls") is not None:
            problem = check_tool_calls(m["tool_calls"], f"{f}.tool_calls")
            if problem:
                raise DataError(problem, field=problem.split(":")[0], code="invalid_tool_calls", **loc)
            msg["tool_calls"] = m["tool_calls"]
        if m.get("function_call") is not None:
            problem = check_tool_calls([{"function": m["function_call"]}], f"{f}.function_call")
            if problem:
                raise DataError(problem, field=f"{f}.function_call", code="invalid_tool_calls", **loc)
            msg["tool_calls"] = [{"type": "function", "function": m["function_call"]}]
        if isinstance(m.get("tool_call_id"), str):
            msg["tool_call_id"] = m["tool_call_id"]
        out.append(msg)
    if not any(m["role"] == "assistant" for m in out):
        raise DataError("no assistant message to learn from", field="messages",
                        code="example_missing_assistant_message", **loc)
    return out


def to_sample(record: dict, fmt: str, where: str = "") -> Sample:
    """Convert a record of a known format to a Sample, checking its fields; errors point at `where`.

    A record-level "metadata" object (any format) is kept as `Sample.extra["metadata"]`: augmentation
    tags its rows there (`augmented_from`), and splits read it to keep generated rows out of held-out sets."""
    sample = _to_sample(record, fmt, where)
    meta = record.get("metadata") if isinstance(record, dict) else None
    if isinstance(meta, dict):
        sample.extra["metadata"] = meta
    return sample


def augmented_from(record_or_sample) -> dict | None:
    """The provenance of a generated row (`{"method", "sources", ...}` under metadata.augmented), or None
    for an original example. Accepts a raw record or a Sample."""
    meta = (record_or_sample.extra.get("metadata") if isinstance(record_or_sample, Sample)
            else record_or_sample.get("metadata") if isinstance(record_or_sample, dict) else None)
    aug = meta.get("augmented") if isinstance(meta, dict) else None
    return aug if isinstance(aug, dict) else None


def source_id(sample: Sample) -> str:
    """A short content hash of an example: generated rows name their sources by it (robust to reordering)."""
    return hashlib.sha256(exact_key(sample).encode("utf-8")).hexdigest()[:16]


def _to_sample(record: dict, fmt: str, where: str) -> Sample:
    loc = _loc(where)
    if fmt == REINFORCEMENT:
        return _to_reinforcement(record, loc, where)
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}' (have: {', '.join(FORMATS)})", code="unknown_format", **loc)
    if not isinstance(record, dict):
        raise DataError(f"expected an object, got {type(record).__name__}", code="data_type", **loc)
    if fmt == "chat":
        tools = record.get("tools", record.get("functions"))
        if tools is not None:
            if isinstance(tools, list) and "functions" in record and "tools" not in record:  # the legacy key
                tools = [{"type": "function", "function": f} for f in tools]
            problem = check_tools(tools)
            if problem:
                raise DataError(problem, field=problem.split(":")[0], code="invalid_tools", **loc)
        return Sample(messages=_check_chat(record, loc), format=fmt, where=where, tools=tools)
    if fmt == "preference":
        return _to_preference(record, loc, where)
    if fmt == "text":
        return Sample(text=_text_field(record, "text", loc), format=fmt, where=where)
    if fmt == "prompt_completion":
        user, answer, label = _text_field(record, "prompt", loc), _text_field(record, "completion", loc), None
    elif fmt == "alpaca":
        ins, inp = _text_field(record, "instruction", loc), _text_field(record, "input", loc, required=False)
        user, answer, label = ins + ("\n\n" + inp if inp.strip() else ""), _text_field(record, "output", loc), None
    else:  # classification: the assistant answers with the label
        user, answer = _text_field(record, "text", loc), _text_field(record, "label", loc, scalar=True)
        label = answer
    return Sample(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                  label=label, format=fmt, where=where)


def _turns(v, name: str, loc: dict, *, answer: bool) -> list[dict]:
    """A string (one user/assistant turn) or a message list, checked like a chat's messages."""
    if _is_missing(v):
        raise DataError(f"missing value for '{name}'", field=name, code="missing_field", **loc)
    if isinstance(v, str):
        if not v.strip():
            raise DataError(f"'{name}' is empty", field=name, code="missing_content", **loc)
        return [{"role": "assistant" if answer else "user", "content": v}]
    if not isinstance(v, list) or not v:
        raise DataError(f"'{name}' must be a string or a non-empty list of messages, got {type(v).__name__}",
                        field=name, code="data_type", **loc)
    if answer:
        bad = next((i for i, m in enumerate(v) if isinstance(m, dict) and m.get("role") != "assistant"), None)
        if bad is not None:
            raise DataError(f"an answer holds assistant messages only, got role {v[bad].get('role')!r}",
                            field=f"{name}[{bad}].role", code="unrecognized_role", **loc)
    try:  # reuse the chat checks; a prompt has no assistant answer to require, so lend it one
        msgs = _check_chat({"messages": v if answer else v + [{"role": "assistant", "content": "x"}]}, loc)
    except DataError as e:
        fld = e.field.replace("messages", name, 1) if e.field else name
        raise DataError(e.detail, field=fld, code=e.code, **loc) from None
    return msgs if answer else msgs[:-1]


def _implicit_prompt(record: dict, loc: dict) -> dict:
    """TRL's implicit-prompt rows: `chosen`/`rejected` are whole conversations; the shared opening is the prompt."""
    c, r = record.get("chosen"), record.get("rejected")
    if not (isinstance(c, list) and isinstance(r, list)):
        raise DataError("missing value for 'prompt' (chosen/rejected without a prompt must be whole conversations "
                        "sharing their opening turns)", field="prompt", code="missing_field", **loc)
    n = 0
    while n < min(len(c), len(r)) and c[n] == r[n]:
        n += 1
    while n and isinstance(c[n - 1], dict) and c[n - 1].get("role") == "assistant":
        n -= 1  # the answers start at the first differing assistant turn
    if n == 0:
        raise DataError("missing value for 'prompt': chosen and rejected share no opening turns", field="prompt",
                        code="missing_field", **loc)
    return {**record, "prompt": c[:n], "chosen": c[n:], "rejected": r[n:]}


def _to_preference(record: dict, loc: dict, where: str) -> Preference:
    """OpenAI's DPO rows or TRL's preference rows; both sides present, non-empty and different."""
    if "input" in record or "preferred_output" in record or "non_preferred_output" in record:
        inp = record.get("input")
        if not isinstance(inp, dict) or "messages" not in inp:
            raise DataError("'input' must be an object with 'messages'", field="input", code="missing_field", **loc)
        pfield, sides = "input.messages", ("preferred_output", "non_preferred_output")
    else:
        pfield, sides = "prompt", ("chosen", "rejected")
        if "prompt" not in record:
            record = _implicit_prompt(record, loc)
    prompt = _turns(inp.get("messages") if pfield == "input.messages" else record.get("prompt"), pfield, loc,
                    answer=False)
    for name in sides:
        if name not in record or _is_missing(record[name]):
            raise DataError(f"missing side '{name}': a preference row needs both answers", field=name,
                            code="missing_field", **loc)
    chosen = _turns(record[sides[0]], sides[0], loc, answer=True)
    rejected = _turns(record[sides[1]], sides[1], loc, answer=True)
    if prompt[-1]["role"] == "assistant":
        raise DataError("the prompt ends with an assistant turn; the answers would follow an answer",
                        field=pfield,
                        code="invalid_prompt", **loc)
    norm = lambda ms: [unicodedata.normalize("NFC", m["content"].strip()) for m in ms]  # noqa: E731
    if norm(chosen) == norm(rejected):
        raise DataError(f"'{sides[0]}' and '{sides[1]}' are identical: nothing to prefer", field=sides[1],
                        code="identical_answers", **loc)
    return Preference(messages=prompt + chosen, prompt=prompt, chosen=chosen, rejected=rejected,
                      format="preference", where=where)


_SEP = "\u241e"  # SYMBOL FOR RECORD SEPARATOR: cannot be confused with ordinary text
# Punctuation that rarely changes meaning; operators (+ - * / < > = ...) are kept so "2+3" != "2*3".
_SOFT_PUNCT = set(".,;:!?'\"`\u2018\u2019\u201c\u201d\u2026\u00bf\u00a1")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def exact_key(sample: Sample) -> str:
    """The example's content (roles and text, each stripped): equal keys are exact duplicates. A preference
    pair's key covers both answers (the same prompt with two different pairs is not an exact duplicate)."""
    if isinstance(sample, Preference):
        return _chat_key(sample.prompt + sample.chosen) + _SEP + "rejected" + _SEP + _chat_key(sample.rejected)
    if sample.messages is None:
        return unicodedata.normalize("NFC", (sample.text or "").strip())
    return _chat_key(sample.messages)


def _chat_key(messages: list[dict]) -> str:
    def one(m: dict) -> str:
        calls = json.dumps(m["tool_calls"], sort_keys=True) if m.get("tool_calls") else ""
        return f"{m['role']}:{unicodedata.normalize('NFC', m['content'].strip())}{calls}"
    return _SEP.join(one(m) for m in messages)


def near_dup_text(text: str) -> str:
    """Case, width, whitespace and soft punctuation folded: "Show all users!" == "show  ALL users"."""
    toks = _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())
    return " ".join(t for t in toks if t not in _SOFT_PUNCT)


def near_key(sample: Sample) -> str:
    """`exact_key` normalised: equal keys are near duplicates, and always share a split (no leakage).

    A preference pair is keyed by its prompt alone: every pair for one prompt (and for its near duplicates)
    lands on one side of a split, so a held-out prompt was never seen in training with other answers."""
    if isinstance(sample, Preference):
        return _SEP.join(near_dup_text(part) for part in _chat_key(sample.prompt).split(_SEP))
    return _SEP.join(near_dup_text(part) for part in exact_key(sample).split(_SEP))


# --- reinforcement (RL) rows: OpenAI's reinforcement fine-tuning format ---------------------------------------
REINFORCEMENT = "reinforcement"


def _to_reinforcement(record, loc: dict, where: str) -> Sample:
    """`{"messages": [...the prompt...], ...any other keys}`: the messages are what the model is asked (no
    assistant answer to end on: the model writes it, the grader scores it); every key of the row, messages
    included, is the grader's `item` (`{{item.KEY}}`, `item["KEY"]`), kept in `Sample.extra["item"]`."""
    if not isinstance(record, dict):
        raise DataError(f"expected an object, got {type(record).__name__}", code="data_type", **loc)
    msgs = record.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise DataError("'messages' (the prompt) must be a non-empty list", field="messages",
                        code="missing_messages_list", **loc)
    checked = _check_chat({"messages": msgs + [{"role": "assistant", "content": "-"}]}, loc)[:-1]
    if checked[-1]["role"] == "assistant":
        raise DataError("the prompt ends with an assistant message: the model writes the answer, so end on a user "
                        "(or tool) message", field=f"messages[{len(msgs) - 1}].role", code="invalid_prompt", **loc)
    if not any(m["role"] == "user" for m in checked):
        raise DataError("the prompt has no user message", field="messages", code="invalid_prompt", **loc)
    return Sample(messages=checked, format=REINFORCEMENT, where=where, extra={"item": dict(record)})


def looks_like_reinforcement(records: list) -> bool:
    """A file whose rows all have `messages` and none has an assistant turn is a file of RL prompts (an SFT chat
    file always has answers): `data check` then reports it as reinforcement rows."""
    rows = [r for r in records if r is not None]
    return bool(rows) and all(
        isinstance(r, dict) and isinstance(r.get("messages"), list) and
        not any(isinstance(m, dict) and m.get("role") == "assistant" for m in r["messages"]) for r in rows)
