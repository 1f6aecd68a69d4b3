"""Structured outputs: `response_format` (`json_object`, `json_schema`) enforced while decoding, per request.

Each choice gets its own `Constraint` (a grammar matcher); `models.decode.sample` asks it which tokens are
allowed before sampling its row and advances it with the token drawn, so rows with and without a schema share
one continuous batch. Once the JSON value is complete the grammar allows only the end-of-turn token, so the
answer stops there ("stop"); a budget that runs out mid-value ends with "length", as OpenAI's API does.

Library: llguidance (maintained by Microsoft/guidance; the grammar engine behind llama.cpp's and vLLM's
`guidance` backend). Measured here (py3.11, CPU, a 4-property schema with an enum and an array; busy 2-core
machine): tokenizer setup 0.015 s (259-token tiny vocab) / 1.2 s (SmolLM2's 49,152), schema compile ~5 ms,
mask ~0.1 ms per token on both — against xgrammar 0.2.9: setup 0.005 s / 0.6 s, compile 2-14 ms, mask
0.004-0.009 ms per token. Both masks are far below one decode step of SmolLM2-135M (~10+ ms on CPU), so
speed does not decide; llguidance is chosen because its wheel has no dependencies (xgrammar declares torch,
transformers, triton and apache-tvm-ffi: triton is hundreds of MB on a CPU box and pins torch versions) and
because it reports an unsupported schema feature by name (`Unimplemented keys: ["if", "then"]`, a look-around
in a `pattern`), which becomes the 400 the API owes instead of a silently unconstrained answer.
outlines-core was not measured (its Python wheel compiles a full-vocabulary index per schema, seconds on 49k).

The tokenizer adapter (`LLTokenizer`) is built once per tokenizer and cached; grammars per request are cheap.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

import torch

from tuneforge.serve import protocol as P

_TOKENIZERS: dict[int, Any] = {}
_LOCK = threading.Lock()


def _ll_tokenizer(tokenizer, vocab_size: int):
    import llguidance.hf

    key = id(tokenizer)
    with _LOCK:
        hit = _TOKENIZERS.get(key)
        if hit is None or hit[0] is not tokenizer:
            hit = (tokenizer, llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size))
            _TOKENIZERS[key] = hit
        return hit[1]


class Constraint:
    """One choice's grammar state: `allowed(vocab) -> bool mask`, `advance(token)` (the decode core's protocol)."""

    def __init__(self, ll_tokenizer, grammar: str):
        import llguidance
        import llguidance.torch as lt

        self.matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
        self._lt = lt
        self._bitmask = lt.allocate_token_bitmask(1, ll_tokenizer.vocab_size)
        self._bits = torch.arange(32, dtype=torch.int32)

    def allowed(self, vocab_size: int) -> torch.Tensor | None:
        if self.matcher.is_error():
            return None  # cannot happen for tokens it allowed; never block the row on it
        self._lt.fill_next_token_bitmask(self.matcher, self._bitmask, 0)
        words = self._bitmask[0]
        mask = ((words[:, None] >> self._bits) & 1).bool().flatten()
        if mask.numel() >= vocab_size:
            return mask[:vocab_size]
        return torch.cat([mask, mask.new_zeros(vocab_size - mask.numel())])

    def advance(self, token: int) -> None:
        self.matcher.consume_token(int(token))

    @property
    def complete(self) -> bool:
        return self.matcher.is_accepting()


def schema_of(response_format: Any, extra: dict | None = None) -> tuple[dict | None, str]:
    """(JSON schema, param name) from OpenAI's `response_format` or vLLM's `guided_json` /
    `structured_outputs: {"json": ...}` extras; (None, "") for free text. Malformed → 400 naming the field."""
    extra = extra or {}
    if extra.get("guided_json") is not None:
        s = extra["guided_json"]
        return (json.loads(s) if isinstance(s, str) else s), "guided_json"
    so = extra.get("structured_outputs")
    if isinstance(so, dict) and so.get("json") is not None:
        s = so["json"]
        return (json.loads(s) if isinstance(s, str) else s), "structured_outputs.json"
    if response_format is None:
        return None, ""
    if not isinstance(response_format, dict):
        raise P.bad_request("response_format: must be an object", param="response_format")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None, ""
    if kind == "json_object":
        return {"type": "object"}, "response_format"
    if kind == "json_schema":
        js = response_format.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("name"), str):
            raise P.bad_request("response_format.json_schema: an object with a 'name' and a 'schema' is required",
                                param="response_format.json_schema")
        schema = js.get("schema", {})
        if not isinstance(schema, dict):
            raise P.bad_request("response_format.json_schema.schema: must be a JSON schema object",
                                param="response_format.json_schema.schema")
        return schema, "response_format.json_schema.schema"
    raise P.bad_request(f"response_format type {kind!r} is not supported (text, json_object, json_schema)",
                        param="response_format.type")


def json_constraint(schema: dict, tokenizer, vocab_size: int, param: str) -> Callable[[], Constraint]:
    """A factory of fresh per-choice constraints for `schema`; an unsupported feature is a 400 naming it."""
    import llguidance

    ll = _ll_tokenizer(tokenizer, vocab_size)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
    except Exception as e:  # noqa: BLE001 - the schema is the user's input
        raise P.bad_request(f"{param}: not a usable JSON schema: {e}", param=param) from None
    return _checked(grammar, ll, param)


def _checked(grammar: str, ll, param: str) -> Callable[[], Constraint]:
    import llguidance

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, ll)
    if is_error:
        raise P.bad_request(f"{param}: unsupported JSON schema feature: {'; '.join(messages)[:500]}",
                            param=param, code="unsupported_schema")
    return lambda: Constraint(ll, grammar)


# the JSON a forced call is written in: `json.dumps`'s separators, as `data.tools.format_call` writes calls in
# training data and prompts, so a forced call is spelled the way the model was shown calls
_CALL_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def tool_call_grammar(tools: list[dict], name: str | None, parallel: bool) -> str:
    """A Lark grammar (llguidance's dialect, `%json` embeds a schema) for `tool_choice` required / named: one
    `<tool_call>` block (or several, `parallel`) whose JSON is `{"name": <a tool's name>, "arguments": <an
    object valid against that tool's parameters schema>}` — the format `data.tools` renders and parses."""
    from tuneforge.data.tools import CLOSE, OPEN

    funcs = [t["function"] for t in tools if name is None or t["function"]["name"] == name]
    rules, alts = [], []
    for i, f in enumerate(funcs):
        schema = {"type": "object", "properties": {"name": {"const": f["name"]},
                                                   "arguments": f.get("parameters") or {"type": "object"}},
                  "required": ["name", "arguments"], "additionalProperties": False, "x-guidance": _CALL_JSON}
        rules.append(f"body{i}: %json " + json.dumps(schema))
        alts.append(f"body{i}")
    start = 'start: call ("\\n" call)*' if parallel else "start: call"
    return "\n".join([start, f"call: {json.dumps(OPEN + chr(10))} ({' | '.join(alts)}) {json.dumps(chr(10) + CLOSE)}",
                      *rules]) + "\n"


def tool_call_constraint(tools: list[dict], name: str | None, parallel: bool, tokenizer,
                         vocab_size: int) -> Callable[[], Constraint]:
    """Per-choice constraints that force a well-formed call whose arguments validate against the function's
    JSON schema; a parameters schema the grammar cannot enforce is a 400 naming it."""
    import llguidance

    ll = _ll_tokenizer(tokenizer, vocab_size)
    param = "tool_choice" if name else "tools"
    try:
        grammar = llguidance.LLMatcher.grammar_from_lark(tool_call_grammar(tools, name, parallel))
    except Exception as e:  # noqa: BLE001 - the schemas are the user's input
        raise P.bad_request(f"tools: a function's parameters are not a usable JSON schema: {e}", param=param) \
            from None
    return _checked(grammar, ll, param)
