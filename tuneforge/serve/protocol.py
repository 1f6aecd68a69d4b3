"""The OpenAI wire format: request models, response builders and OpenAI-shaped errors.

Shared by every route on the server (chat and completions here; files, fine-tuning jobs and feedback in other
packages): raise `OpenAIError(...)` or one of its helpers anywhere in a handler and the app turns it into
`{"error": {"message", "type", "param", "code"}}` with the right status. No HTTP framework imports here.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneforge.data.tools import check_tool_calls, check_tools


# --- errors -------------------------------------------------------------------------------------------------
class OpenAIError(Exception):
    """An error answered with OpenAI's error body. `type` follows OpenAI's names
    (invalid_request_error, authentication_error, not_found_error, rate_limit_error, server_error)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(404, message, type="not_found_error", param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    return not_found(f"The model '{model}' does not exist (GET /v1/models lists the served models)",
                     param="model", code="model_not_found")


def unauthorized(message: str = "Missing or invalid API key: send 'Authorization: Bearer KEY'") -> OpenAIError:
    return OpenAIError(401, message, type="authentication_error", code="invalid_api_key")


def too_many_requests(retry_after_s: int, message: str | None = None) -> OpenAIError:
    return OpenAIError(429, message or "The server is at capacity (request queue full); retry later",
                       type="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": str(max(1, int(retry_after_s)))})


def too_large(limit: int) -> OpenAIError:
    return OpenAIError(413, f"Request body is larger than the server's limit of {limit} bytes",
                       code="request_too_large")


def parse_json_body(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"Request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise bad_request("Request body must be a JSON object", code="invalid_json")
    return obj


def validate(model: type[BaseModel], obj: dict) -> Any:
    """`model.model_validate(obj)`, with the first problem as a 400 naming its field in `param`."""
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err.get("loc", ())) or None
        kind = "missing required parameter" if err.get("type") == "missing" else err.get("msg", "invalid value")
        raise bad_request(f"{param}: {kind}" if param else kind, param=param,
                          code="missing_required_parameter" if err.get("type") == "missing" else "invalid_value")


# --- requests -----------------------------------------------------------------------------------------------
class _Request(BaseModel):
    """Fields both endpoints share. Unknown fields are accepted and ignored (clients send many)."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name; LangChain sends only this one
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = None
    # vLLM's extras, accepted under the same names
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)

    def stop_list(self) -> list[str]:
        s = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(s) > 4:
            raise bad_request("stop: at most 4 sequences", param="stop")
        return [x for x in s if x]

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict] | None = None
    name: str | None = None

    def text(self) -> str:
        """Content as text: a list of parts is joined from its text parts (images are not supported)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for p in self.content:
            if p.get("type") not in ("text", "input_text"):
                raise bad_request(f"content part of type '{p.get('type')}' is not supported (text only)",
                                  param="messages")
            parts.append(str(p.get("text", "")))
        return "".join(parts)


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None

    def template_messages(self) -> list[dict]:
        """Messages as `data.tools.prepare` wants them (OpenAI's shape: an assistant's `tool_calls`, a tool
        message's `tool_call_id` kept); OpenAI's `developer` role is the template's `system`. A malformed tool
        turn is a 400 naming it."""
        out = []
        for i, m in enumerate(self.messages):
            d: dict = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            extra = m.model_extra or {}
            if extra.get("tool_calls") is not None and m.role == "assistant":
                problem = check_tool_calls(extra["tool_calls"], f"messages[{i}].tool_calls")
                if problem:
                    raise bad_request(problem, param=problem.split(":")[0])
                d["tool_calls"] = extra["tool_calls"]
            if m.role == "tool":
                if not isinstance(extra.get("tool_call_id"), str):
                    raise bad_request(f"messages[{i}].tool_call_id: missing required parameter (a tool message "
                                      "answers one tool call)", param=f"messages[{i}].tool_call_id",
                                      code="missing_required_parameter")
                d["tool_call_id"] = extra["tool_call_id"]
            if m.name:
                d["name"] = m.name
            out.append(d)
        return out

    def tool_mode(self) -> tuple[list[dict] | None, str, str | None]:
        """(tools or None, mode, forced name): mode is "none" (no tools, or tool_choice none), "auto" (the
        model chooses; its answer is parsed), "required" (one call or more, any function) or "function" (the
        named one). Malformed tools or tool_choice → a 400 naming the field, as OpenAI answers."""
        tools, choice = self.tools, self.tool_choice
        if not tools:
            if tools is not None:
                raise bad_request("tools: must be a non-empty list (leave it out for no tools)", param="tools")
            if choice is not None and choice != "none":
                raise bad_request("tool_choice: only allowed when tools are specified", param="tool_choice")
            return None, "none", None
        problem = check_tools(tools)
        if problem:
            raise bad_request(problem, param=problem.split(":")[0])
        if choice is None or choice in ("auto", "none", "required"):
            return tools, choice or "auto", None
        if isinstance(choice, dict) and choice.get("type") == "function" \
                and isinstance((choice.get("function") or {}).get("name"), str):
            name = choice["function"]["name"]
            if name not in {t["function"]["name"] for t in tools}:
                raise bad_request(f"tool_choice.function.name: no tool named {name!r} in tools",
                                  param="tool_choice.function.name")
            return tools, "function", name
        raise bad_request("tool_choice: must be 'none', 'auto', 'required' or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")

    def logprobs_k(self) -> int | None:
        """None: no logprobs; k >= 0: the sampled token's logprob and its k most likely alternatives."""
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs: requires logprobs: true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)  # 0 with echo: score the prompt only (evaluation harnesses)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise bad_request("prompt: must not be empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)

    def logprobs_k(self) -> int | None:
        return self.logprobs


def reject_unsupported(req: _Request) -> None:
    """Fields we accept by name but cannot honour are an explicit 400, not a silent wrong answer."""
    if isinstance(req, CompletionRequest) and req.suffix:
        raise bad_request("suffix (insertion) is not supported by this server", param="suffix")
    if isinstance(req, CompletionRequest) and req.max_tokens == 0 and not req.echo:
        raise bad_request("max_tokens: 0 is only meaningful with echo: true (prompt scoring)", param="max_tokens")
    extra = req.model_extra or {}
    if extra.get("functions") or extra.get("function_call"):
        raise bad_request("functions / function_call (deprecated by OpenAI) are not supported: send tools and "
                          "tool_choice", param="functions")
    if isinstance(req, CompletionRequest) and extra.get("tools"):
        raise bad_request("tools is a chat completions parameter", param="tools")
    if isinstance(req, CompletionRequest) and extra.get("response_format"):
        raise bad_request("response_format is a chat completions parameter", param="response_format")


# --- responses ----------------------------------------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


FinishReason = Literal["stop", "length", "tool_calls"]


def chat_choice(index: int, text: str | None, finish_reason: str | None, *, logprobs: list[dict] | None = None,
                tool_calls: list[dict] | None = None) -> dict:
    """One choice of a chat completion. `refusal` is required (nullable) by OpenAI's schema; this server
    never refuses, so it is always null. `logprobs`: the `content` entries (see `token_logprob`) or None."""
    message: dict = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "finish_reason": finish_reason,
            "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None}}


def chat_completion(id: str, model: str, created: int, choices: list[dict], usage_: dict) -> dict:
    """`choices`: built with `chat_choice`, in index order."""
    return {"id": id, "object": "chat.completion", "created": created, "model": model, "choices": choices,
            "usage": usage_}


def tool_call(id: str, name: str, arguments: str) -> dict:
    """One entry of `message.tool_calls`: `arguments` is a JSON string, as OpenAI sends it."""
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_call_delta(index: int, call: dict) -> dict:
    """A streamed tool call (`delta.tool_calls[]`): the whole call in one delta, with its position `index`."""
    return {"index": index, **call}


def chat_chunk(id: str, model: str, created: int, index: int, *, content: str | None = None,
               role: str | None = None, finish_reason: str | None = None,
               logprobs: list[dict] | None = None, tool_calls: list[dict] | None = None) -> dict:
    delta: dict = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls:
        delta["tool_calls"] = tool_calls
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason,
                         "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None}}]}


def completion_choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None = None) -> dict:
    """`logprobs`: the legacy `{tokens, token_logprobs, top_logprobs, text_offset}` (see `completion_logprobs`)."""
    return {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}


def completion(id: str, model: str, created: int, choices: list[dict], usage_: dict) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices,
            "usage": usage_}


def completion_chunk(id: str, model: str, created: int, index: int, text: str,
                     finish_reason: str | None = None, logprobs: dict | None = None) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [completion_choice(index, text, finish_reason, logprobs)]}


# --- log-probabilities ----------------------------------------------------------------------------------------
def token_logprob(token: tuple[str, list[int]], logprob: float, top: list[tuple[tuple[str, list[int]], float]]) -> dict:
    """One entry of a chat choice's `logprobs.content`: the token as (text, bytes), its logprob and the most
    likely alternatives at that position (most likely first), each as ((text, bytes), logprob)."""
    return {"token": token[0], "logprob": logprob, "bytes": token[1],
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for (t, b), lp in top]}


def completion_logprobs(tokens: list[str], logprobs: list[float | None], tops: list[list[tuple[str, float]] | None],
                        start: int = 0) -> dict:
    """The legacy completions shape. `logprobs[i]` is None for the first token of an echoed prompt (nothing
    precedes it: OpenAI's API and vLLM send null there too); `text_offset` counts characters from `start`."""
    offsets, at = [], start
    for t in tokens:
        offsets.append(at)
        at += len(t)

    def as_dict(top: list[tuple[str, float]]) -> dict:
        d: dict = {}
        for t, lp in top:  # most likely first: two tokens with the same text (e.g. halves of a character) keep it
            d.setdefault(t, lp)
        return d
    return {"tokens": tokens, "token_logprobs": logprobs,
            "top_logprobs": [None if top is None else as_dict(top) for top in tops], "text_offset": offsets}


def usage_chunk(id: str, model: str, created: int, obj: str, usage_: dict) -> dict:
    return {"id": id, "object": obj, "created": created, "model": model, "choices": [], "usage": usage_}


def model_object(id: str, *, parent: str | None, max_model_len: int, created: int | None = None) -> dict:
    return {"id": id, "object": "model", "created": created or int(time.time()), "owned_by": "tuneforge",
            "root": parent or id, "parent": parent, "max_model_len": max_model_len}


def sse(obj: dict | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line; the stream ends with `data: [DONE]`."""
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
