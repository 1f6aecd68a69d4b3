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

    def template_messages(self) -> list[dict]:
        """Messages as the chat template wants them; OpenAI's `developer` role is the template's `system`."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in self.messages]


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None
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


def reject_unsupported(req: _Request) -> None:
    """Fields we accept by name but cannot honour are an explicit 400, not a silent wrong answer."""
    if getattr(req, "logprobs", None):
        raise bad_request("logprobs are not supported by this server", param="logprobs")
    if isinstance(req, CompletionRequest) and req.suffix:
        raise bad_request("suffix (insertion) is not supported by this server", param="suffix")
    extra = req.model_extra or {}
    if extra.get("tools") or extra.get("functions"):
        raise bad_request("tools / function calling are not supported by this server", param="tools")
    fmt = extra.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise bad_request(f"response_format {fmt.get('type')!r} is not supported (text only)",
                          param="response_format")


# --- responses ----------------------------------------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


FinishReason = Literal["stop", "length"]


def chat_completion(id: str, model: str, created: int, choices: list[tuple[str, str]], usage_: dict) -> dict:
    """`choices`: (text, finish_reason) per choice, in index order."""
    return {"id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                         "finish_reason": fr, "logprobs": None} for i, (text, fr) in enumerate(choices)],
            "usage": usage_}


def chat_chunk(id: str, model: str, created: int, index: int, *, content: str | None = None,
               role: str | None = None, finish_reason: str | None = None) -> dict:
    delta: dict = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}


def completion(id: str, model: str, created: int, choices: list[tuple[str, str]], usage_: dict) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": i, "text": text, "finish_reason": fr, "logprobs": None}
                        for i, (text, fr) in enumerate(choices)],
            "usage": usage_}


def completion_chunk(id: str, model: str, created: int, index: int, text: str,
                     finish_reason: str | None = None) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}]}


def usage_chunk(id: str, model: str, created: int, obj: str, usage_: dict) -> dict:
    return {"id": id, "object": obj, "created": created, "model": model, "choices": [], "usage": usage_}


def model_object(id: str, *, parent: str | None, max_model_len: int, created: int | None = None) -> dict:
    return {"id": id, "object": "model", "created": created or int(time.time()), "owned_by": "tuneforge",
            "root": parent or id, "parent": parent, "max_model_len": max_model_len}


def sse(obj: dict | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line; the stream ends with `data: [DONE]`."""
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()
