"""Function calling (OpenAI's `tools`): one way to render tool specs and tool turns through a chat template, used
by training (`data.tokenize`) and serving (`serve.completions`), and the parser of the calls a model writes.

A template that knows tools (its source mentions `tools`: Qwen2.5, Hermes, SmolLM3, Llama 3.1...) gets them as
`apply_chat_template(..., tools=...)`, with each assistant call's `arguments` as an object, as those templates
expect. A template without tool support (SmolLM2's, the tiny test models') gets the documented fallback, the
Qwen2.5/Hermes convention:

- the tool specs go into the system message (`FALLBACK_SYSTEM`, one JSON spec per line inside `<tools>`),
- an assistant's calls become its content, each as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`,
- a `tool` message becomes a user turn `<tool_response>\\n...\\n</tool_response>`.

The model answers with the same `<tool_call>` blocks, which `parse_tool_calls` reads back (a bare
`{"name", "arguments"}` object as the whole answer is accepted too: Llama 3.1's style). Training rows in OpenAI's
fine-tuning shape (`tools` on the row, assistant `tool_calls`, `tool` messages) go through the same rendering,
so a model is served exactly the format it was tuned on; the loss falls on the assistant's turns (its calls
included), never on tool results.
"""

from __future__ import annotations

import json
import re

OPEN, CLOSE = "<tool_call>", "</tool_call>"
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule for function names

FALLBACK_SYSTEM = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def check_tools(tools) -> str | None:
    """The first problem with a `tools` list as "path: message" (OpenAI's shape), or None when it is valid."""
    if not isinstance(tools, list) or not tools:
        return "tools: must be a non-empty list of {type: function, function: {name, parameters}}"
    seen = set()
    for i, t in enumerate(tools):
        p = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function":
            return f"{p}.type: must be 'function'"
        f = t.get("function")
        if not isinstance(f, dict):
            return f"{p}.function: must be an object with a 'name'"
        name = f.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            return f"{p}.function.name: must be 1-64 letters, digits, '_' or '-', got {name!r:.60}"
        if name in seen:
            return f"{p}.function.name: duplicate function name {name!r}"
        seen.add(name)
        params = f.get("parameters")
        if params is not None and (not isinstance(params, dict) or params.get("type", "object") != "object"):
            return f"{p}.function.parameters: must be a JSON schema of type 'object'"
        if f.get("description") is not None and not isinstance(f["description"], str):
            return f"{p}.function.description: must be a string"
    return None


def check_tool_calls(calls, where: str) -> str | None:
    """The first problem with an assistant message's `tool_calls` (OpenAI's shape), or None."""
    if not isinstance(calls, list) or not calls:
        return f"{where}: must be a non-empty list"
    for i, c in enumerate(calls):
        p = f"{where}[{i}]"
        f = c.get("function") if isinstance(c, dict) else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            return f"{p}.function.name: required (a string)"
        args = f.get("arguments", "{}")
        if isinstance(args, str):
            try:
                json.loads(args or "{}")
            except json.JSONDecodeError:
                return f"{p}.function.arguments: not valid JSON"
        elif not isinstance(args, dict):
            return f"{p}.function.arguments: must be a JSON string"
    return None


def supports_tools(tokenizer) -> bool:
    """Does the tokenizer's chat template render `tools` itself?"""
    t = getattr(tokenizer, "chat_template", None)
    t = t if isinstance(t, str) else json.dumps(t or "")
    return "tools" in t


def _arguments(args) -> dict:
    if isinstance(args, dict):
        return args
    try:
        v = json.loads(args or "{}")
    except json.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def format_call(name: str, arguments) -> str:
    """One call in the fallback format (also what the grammar of a forced call produces)."""
    return f"{OPEN}\n" + json.dumps({"name": name, "arguments": _arguments(arguments)}, ensure_ascii=False) + \
        f"\n{CLOSE}"


def prepare(messages: list[dict], tools: list[dict] | None, tokenizer) -> tuple[list[dict], dict]:
    """(messages, extra apply_chat_template kwargs) for `messages` (OpenAI shape, tool turns included) and
    `tools` on this tokenizer's template: native tool rendering if it has it, else the fallback above."""
    if not tools and not any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
        return [{"role": m["role"], "content": m.get("content") or ""} for m in messages], {}
    if supports_tools(tokenizer):
        out = []
        for m in messages:
            d = {"role": m["role"], "content": m.get("content") or ""}
            if m.get("tool_calls"):
                d["tool_calls"] = [{"id": c.get("id"), "type": "function",
                                    "function": {"name": c["function"]["name"],
                                                 "arguments": _arguments(c["function"].get("arguments"))}}
                                   for c in m["tool_calls"]]
            if m.get("tool_call_id"):
                d["tool_call_id"] = m["tool_call_id"]
            if m.get("name"):
                d["name"] = m["name"]
            out.append(d)
        return out, ({"tools": tools} if tools else {})
    out = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if m.get("tool_calls"):
            calls = "\n".join(format_call(c["function"]["name"], c["function"].get("arguments"))
                              for c in m["tool_calls"])
            content = (content + "\n" if content else "") + calls
        if role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        if out and role == "user" and m.get("role") == "tool" and out[-1].get("_tool_turn"):
            out[-1]["content"] += "\n" + content  # consecutive results share one turn, as Qwen2.5's template
            continue
        out.append({"role": role, "content": content, **({"_tool_turn": True} if m.get("role") == "tool" else {})})
    out = [{"role": m["role"], "content": m["content"]} for m in out]
    if tools:
        spec = FALLBACK_SYSTEM.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + spec}
        else:
            out.insert(0, {"role": "system", "content": spec})
    return out, {}


def apply_template(tokenizer, messages: list[dict], tools: list[dict] | None = None, *,
                   add_generation_prompt: bool) -> str:
    """The chat as text, tools and tool turns rendered by `prepare`: the one rendering training and serving share."""
    msgs, kw = prepare(messages, tools, tokenizer)
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt, **kw)


def parse_tool_calls(text: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(content before the calls or None, [(name, arguments as a JSON string)]) from a model's answer.

    Every `<tool_call>` block must hold a `{"name": str, "arguments": object}` JSON object, else the answer is
    text (returned whole, no calls), as vLLM's parsers do: a malformed call is never half-reported."""
    at = text.find(OPEN)
    if at == -1:
        s = text.strip()
        if s.startswith("{") and s.endswith("}"):
            call = _call(s)
            if call is not None:
                return None, [call]
        return text, []
    calls = []
    for block in re.findall(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", text[at:], re.S):
        block = block.strip()
        try:  # SmolLM2's own habit: a JSON list of calls inside one block
            many = json.loads(block) if block.startswith("[") else None
        except json.JSONDecodeError:
            many = None
        found = [_call(json.dumps(x)) for x in many] if isinstance(many, list) and many else [_call(block)]
        if any(c is None for c in found):
            return text, []
        calls.extend(found)
    content = text[:at].strip()
    return (content or None), calls


def _call(s: str) -> tuple[str, str] | None:
    try:
        obj = json.loads(s)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return obj["name"], json.dumps(args, ensure_ascii=False)
