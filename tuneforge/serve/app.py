"""The OpenAI-compatible HTTP app: routes, auth, body limit, OpenAI-shaped errors, /metrics.

`create_app(engine, ...)` returns a FastAPI app. Other packages build on it (jobs API, monitoring):
- pass `routers=[...]` (or call `app.include_router` later): every route is behind the same auth, since auth
  is an ASGI middleware on the scope's path with an exact allow-list (`open_paths`), not a per-route dependency;
- raise `tuneforge.serve.protocol.OpenAIError` (or its helpers) in a handler for an OpenAI error body;
- `on_request_done=[fn]` (or `app.state.request_hooks.append(fn)`) receives a `RequestRecord` for every
  generation request answered (the request log); hooks run on the event loop and must return quickly;
- `body_limits={"/v1/files": 512 << 20}` raises the body limit for a path prefix (uploads);
- `on_startup=[fn]` / `on_shutdown=[fn]` run with the app's lifespan (flush a log on a clean shutdown);
- more Prometheus series go on `app.state.metrics.registry` (they appear on /metrics);
- `app.state.engine.add_adapter(name, run_or_adapter_dir)` serves a new adapter at once (blocking: call it in
  an executor);
- `app.state.engine` / `app.state.metrics` / `app.state.cache` are the engine, Prometheus metrics and response cache.

Run it with `tuneforge serve TARGET` (serve/server.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.ids import new_id
from tuneforge.serve import protocol as P
from tuneforge.serve.cache import ResponseCache
from tuneforge.serve.completions import Generation, RequestRecord, Settings, run_stream, run_unary
from tuneforge.serve.engine_api import Engine
from tuneforge.serve.metrics import ServeMetrics

log = logging.getLogger("tuneforge.serve")

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: a long chat fits many times over; uploads get their own limit
OPEN_PATHS = frozenset({"/health"})


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(limit)
        self.limit = limit


async def _send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data})


class AuthMiddleware:
    """Bearer-key check on every path except an exact allow-list, done on the ASGI scope's path (the one the
    router dispatches on), so `//v1/models`, `/v1/../v1/models` or percent-encoded variants are just other
    paths that need the key. Keys are compared in constant time (each one, every time)."""

    def __init__(self, app, keys: Iterable[str], open_paths: Iterable[str] = OPEN_PATHS, on_reject=None):
        self.app, self.keys = app, [k.encode() for k in keys if k]
        self.open_paths, self.on_reject = frozenset(open_paths), on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or not self.keys or scope.get("path") in self.open_paths:
            return await self.app(scope, receive, send)
        token = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                scheme, _, cred = v.partition(b" ")
                if scheme.lower() == b"bearer":
                    token = cred.strip()
                break
        ok = False
        for key in self.keys:  # no early exit: the time taken does not depend on which key matched
            ok |= hmac.compare_digest(token, key)
        if ok:
            return await self.app(scope, receive, send)
        if self.on_reject:
            self.on_reject()
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        err = P.unauthorized()
        await _send_json(send, err.status, err.body(), {"WWW-Authenticate": "Bearer"})


class BodyLimitMiddleware:
    """Refuses bodies over the limit: at once from Content-Length, and while reading for chunked or lying
    clients (the read raises BodyTooLarge → 413). Longest matching prefix in `overrides` wins."""

    def __init__(self, app, limit: int, overrides: dict[str, int] | None = None):
        self.app, self.limit = app, limit
        self.overrides = sorted((overrides or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int:
        return next((v for k, v in self.overrides if path.startswith(k)), self.limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope.get("path", ""))
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = 0
                if declared > limit:
                    err = P.too_large(limit)
                    return await _send_json(send, err.status, err.body(), {"Connection": "close"})
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return msg

        started = False

        async def tracking_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            err = P.too_large(e.limit)
            await _send_json(send, err.status, err.body(), {"Connection": "close"})


def create_app(engine: Engine, *, api_keys: Iterable[str] = (), max_body_bytes: int = DEFAULT_MAX_BODY,
               body_limits: dict[str, int] | None = None, response_cache_size: int = 1024,
               settings: Settings | None = None, routers: Iterable = (),
               on_request_done: Iterable[Callable[[RequestRecord], None]] = (),
               open_paths: Iterable[str] = OPEN_PATHS, manage_engine: bool = True,
               on_startup: Iterable[Callable] = (), on_shutdown: Iterable[Callable] = ()):
    """The server app around `engine`. manage_engine: start the engine on startup and shut it down on exit.
    on_startup / on_shutdown (also `app.state.startup_hooks` / `shutdown_hooks`): plain or async callables run
    after the engine starts / before it stops, e.g. a request-log writer that must flush on a clean shutdown."""
    cache = ResponseCache(response_cache_size)
    metrics = ServeMetrics(engine, cache)
    settings = settings or Settings()

    async def call(hook) -> None:
        res = hook()
        if asyncio.iscoroutine(res):
            await res

    @asynccontextmanager
    async def lifespan(app):
        if manage_engine:
            engine.start()
        for hook in app.state.startup_hooks:
            await call(hook)
        try:
            yield
        finally:
            for hook in app.state.shutdown_hooks:
                try:
                    await call(hook)
                except Exception:  # noqa: BLE001 - the other hooks and the engine still shut down
                    log.exception("shutdown hook failed")
            if manage_engine:
                await asyncio.get_running_loop().run_in_executor(None, engine.shutdown)

    app = FastAPI(title="tuneforge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.metrics, app.state.cache, app.state.settings = engine, metrics, cache, settings
    app.state.request_hooks = list(on_request_done)
    app.state.startup_hooks, app.state.shutdown_hooks = list(on_startup), list(on_shutdown)
    engine.on_step = metrics.batch_size.observe

    def error_response(e: P.OpenAIError) -> JSONResponse:
        metrics.errors.labels(e.type).inc()
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(P.OpenAIError)
    async def _openai_error(request, e: P.OpenAIError):
        return error_response(e)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, e: BodyTooLarge):
        return error_response(P.too_large(e.limit))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e: RequestValidationError):
        err = (e.errors() or [{}])[0]
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path")]
        param = ".".join(loc) or None
        return error_response(P.bad_request(f"{param}: {err.get('msg', 'invalid')}" if param else
                                            str(err.get("msg", "invalid request")), param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            e.status_code, "invalid_request_error" if e.status_code < 500 else "server_error")
        msg = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
        if e.status_code == 404 and msg == "Not Found":
            msg = f"Unknown route: {request.method} {request.url.path}"
        return error_response(P.OpenAIError(e.status_code, msg, type=kind, headers=dict(e.headers or {})))

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        log.exception("unhandled error")
        return error_response(P.OpenAIError(500, f"Internal server error: {type(e).__name__}",
                                            type="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [P.model_object(m.name, parent=m.parent, max_model_len=m.max_model_len,
                                                        created=m.created) for m in engine.models()]}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str):
        m = engine.get(model)
        if m is None:
            raise P.model_not_found(model)
        return P.model_object(m.name, parent=m.parent, max_model_len=m.max_model_len, created=m.created)

    def report(rec: RequestRecord, endpoint: str) -> None:
        metrics.requests.labels(rec.model or "", endpoint, str(rec.status)).inc()
        if rec.model and rec.status == 200:
            metrics.prompt_tokens.labels(rec.model).inc(rec.prompt_tokens)
            metrics.completion_tokens.labels(rec.model).inc(rec.completion_tokens)
        for hook in app.state.request_hooks:
            try:
                hook(rec)
            except Exception:  # noqa: BLE001 - a broken hook must not break serving
                log.exception("request hook failed")

    async def generate(request: Request, kind: str):
        endpoint = "chat.completions" if kind == "chat" else "completions"
        rec = RequestRecord(new_id("chatcmpl" if kind == "chat" else "cmpl"), endpoint, None, time.time(), 200)
        gen: Generation | None = None
        try:
            body = P.parse_json_body(await request.body())
            rec.model = body.get("model") if isinstance(body.get("model"), str) else None
            rec.prompt = body.get("messages" if kind == "chat" else "prompt")
            req = P.validate(P.ChatCompletionRequest if kind == "chat" else P.CompletionRequest, body)
            P.reject_unsupported(req)
            rec.stream = req.stream
            gen = Generation(engine, cache, settings, kind, req, rec)
            gen.start(asyncio.get_running_loop())
            if rec.cached:
                metrics.cache_hits.inc()
            elif gen.cache_key:
                metrics.cache_misses.inc()
        except P.OpenAIError as e:
            rec.status, rec.error, rec.error_type = e.status, e.message, e.type
            report(rec, endpoint)
            raise
        except BodyTooLarge as e:
            rec.status, rec.error, rec.error_type = 413, f"body over {e.limit} bytes", "invalid_request_error"
            report(rec, endpoint)
            raise

        def observe() -> None:
            for c in gen.choices:
                if c.handle is not None and c.handle.finished is not None:
                    if c.handle.finish_reason == "cancelled":
                        metrics.cancelled.inc()
                    else:
                        metrics.observe_generation(gen.served.name, c.handle)

        if not req.stream:
            try:
                body = await run_unary(gen, request.is_disconnected)
            except asyncio.CancelledError:
                rec.status, rec.error = 499, "client closed the connection"
                gen.finish()
                observe()
                report(rec, endpoint)
                raise
            except P.OpenAIError as e:
                rec.status, rec.error, rec.error_type = e.status, e.message, e.type
                gen.finish()
                observe()
                report(rec, endpoint)
                raise
            observe()
            report(rec, endpoint)
            return JSONResponse(body)

        async def stream():
            completed = False
            try:
                async for chunk in run_stream(gen):
                    yield chunk
                completed = True
            finally:
                if not completed:
                    rec.status, rec.error = 499, "client closed the connection"
                    gen.finish()
                observe()
                report(rec, endpoint)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generate(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generate(request, "completion")

    for r in routers:
        app.include_router(r)

    # Outermost first: auth before anything reads the body; the body limit inside it.
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes, overrides=body_limits)
    app.add_middleware(AuthMiddleware, keys=list(api_keys), open_paths=open_paths,
                       on_reject=lambda: metrics.errors.labels("authentication_error").inc())
    return app
