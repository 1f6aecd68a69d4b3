"""Example formats (prompt/completion, chat, alpaca, text, classification) mapped to one `Sample`.

`detect_format(record)` names the format of one parsed record; `to_sample` converts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


ROLES = {"system", "user", "assistant", "tool", "function"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id"}
FORMATS = ("chat", "prompt_completion", "alpaca", "classification", "text")


def detect_format(record, where: str = "") -> str:
    """Name the format of one parsed record by its keys; unknown shapes are an error."""
    from tuneforge.errors import DataError

    path, _, line = where.rpartition(":")
    loc = dict(path=path or where, line=int(line) if line.isdigit() else None)
    if not isinstance(record, dict):
        raise DataError(f"expected an object, got {type(record).__name__}", code="data_type", **loc)
    keys = set(record)
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
                    "instruction/input/output, text or text/label", code="unknown_format", **loc)


def _text_field(record: dict, name: str, loc: dict, *, required: bool = True) -> str:
    from tuneforge.errors import DataError

    v = record.get(name)
    if v is None or (isinstance(v, float) and v != v):  # None or NaN (empty CSV/parquet cell)
        if required:
            raise DataError(f"missing value for '{name}'", field=name, code="missing_field", **loc)
        return ""
    if not isinstance(v, (str, int, float, bool)):
        raise DataError(f"'{name}' must be a string, got {type(v).__name__}", field=name, code="data_type", **loc)
    v = str(v)
    if required and not v.strip():
        raise DataError(f"'{name}' is empty", field=name, code="missing_field", **loc)
    return v


def _check_chat(record: dict, loc: dict) -> list[dict]:
    """OpenAI's fine-tuning data checks, with their error codes."""
    from tuneforge.errors import DataError

    msgs = record.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise DataError("'messages' must be a non-empty list", field="messages", code="missing_messages_list", **loc)
    out = []
    for i, m in enumerate(msgs):
        f = f"messages[{i}]"
        if not isinstance(m, dict):
            raise DataError("message must be an object", field=f, code="data_type", **loc)
        for k in ("role", "content"):
            if k not in m and not (k == "content" and ("tool_calls" in m or "function_call" in m)):
                raise DataError(f"message has no '{k}'", field=f"{f}.{k}", code="message_missing_key", **loc)
        extra = set(m) - MESSAGE_KEYS
        if extra:
            raise DataError(f"unrecognized key(s) {sorted(extra)}", field=f, code="message_unrecognized_key", **loc)
        if m["role"] not in ROLES:
            raise DataError(f"unrecognized role '{m['role']}'", field=f"{f}.role", code="unrecognized_role", **loc)
        c = m.get("content")
        if not isinstance(c, str) or not c.strip():
            if not (c is None and ("tool_calls" in m or "function_call" in m)):
                raise DataError("content must be a non-empty string", field=f"{f}.content", code="missing_content",
                                **loc)
        out.append({"role": m["role"], "content": c or ""})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError("no assistant message to learn from", field="messages",
                        code="example_missing_assistant_message", **loc)
    return out


def to_sample(record: dict, fmt: str, where: str = "") -> Sample:
    """Convert a record of a known format to a Sample, checking its fields."""
    path, _, line = where.rpartition(":")
    loc = dict(path=path or where, line=int(line) if line.isdigit() else None)
    if fmt == "chat":
        return Sample(messages=_check_chat(record, loc), format=fmt, where=where)
    if fmt == "prompt_completion":
        p, c = _text_field(record, "prompt", loc), _text_field(record, "completion", loc)
        return Sample(messages=[{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                      format=fmt, where=where)
    if fmt == "alpaca":
        ins, inp = _text_field(record, "instruction", loc), _text_field(record, "input", loc, required=False)
        out = _text_field(record, "output", loc)
        user = ins + ("\n\n" + inp if inp.strip() else "")
        return Sample(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": out}],
                      format=fmt, where=where)
    if fmt == "classification":
        t, lab = _text_field(record, "text", loc), _text_field(record, "label", loc)
        return Sample(messages=[{"role": "user", "content": t}, {"role": "assistant", "content": lab}],
                      label=lab, format=fmt, where=where)
    if fmt == "text":
        return Sample(text=_text_field(record, "text", loc), format=fmt, where=where)
    from tuneforge.errors import DataError

    raise DataError(f"unknown format '{fmt}' (have: {', '.join(FORMATS)})", code="unknown_format", **loc)
