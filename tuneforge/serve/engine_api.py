"""The engine interface: what the HTTP layer needs from a generation engine, and what an engine implements.

`serve.engine.BuiltinEngine` (transformers + peft, continuous batching) and `serve.vllm_engine.VLLMEngine`
implement `Engine`; routes, jobs and monitoring only ever see this module. A generation is a `Handle`: the
requester iterates or waits on it and may cancel it; the engine calls `emit` per token and `finish` once.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable


class QueueFull(Exception):
    """More waiting requests than the engine's queue holds; the caller answers 429 with `retry_after_s`."""

    def __init__(self, retry_after_s: int):
        super().__init__("queue full")
        self.retry_after_s = retry_after_s


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    # None: no log-probabilities; k >= 0: each sampled token's logprob and its k most likely alternatives
    logprobs: int | None = None
    # a fresh per-choice token constraint (`serve.structured.Constraint`: a JSON schema grammar), or None
    constraint: Callable[[], Any] | None = None


@dataclass
class ServedModel:
    """One name in /v1/models: a base, or an adapter whose `parent` is its base's name."""

    name: str
    parent: str | None
    max_model_len: int
    tokenizer: Any
    created: int = field(default_factory=lambda: int(time.time()))
    # decoding when a request leaves it out: {"temperature": t, "max_tokens": n} (see loading.decoding_defaults)
    defaults: dict = field(default_factory=dict)


class Handle:
    """One generation (one choice) as seen by its requester: iterate `tokens()`, or `cancel()` it.

    Timings (perf_counter seconds) are filled in by the engine: submitted, started (prefill began),
    first_token, finished. `finish_reason`: "stop" (end-of-turn token), "length", "cancelled" or "error"."""

    _ids = itertools.count()

    def __init__(self, model: str, prompt_ids: list[int], params: SamplingParams,
                 loop: asyncio.AbstractEventLoop | None):
        self.id = next(self._ids)
        self.model, self.prompt_ids, self.params = model, list(prompt_ids), params
        self.tokens_out: list[int] = []
        # with params.logprobs: (logprob, [(id, logprob) of the k most likely]) per token of tokens_out,
        # appended before the token is posted, so a consumer holding token i can read logprobs_out[i]
        self.logprobs_out: list[tuple[float, list[tuple[int, float]]]] = []
        self.constraint = params.constraint() if params.constraint is not None else None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.submitted = time.perf_counter()
        self.started: float | None = None
        self.first_token: float | None = None
        self.finished: float | None = None
        self.cancelled = False
        self.cancel_reason = "cancelled"
        self._loop = loop
        self._queue: asyncio.Queue | None = asyncio.Queue() if loop is not None else None
        self._done = threading.Event()

    # --- requester side ---
    def cancel(self, reason: str = "cancelled") -> None:
        """Stop generating; the engine drops the row before its next step. reason "stop": the requester found
        a stop sequence (a normal end); "cancelled": nobody wants the answer any more (client gone)."""
        if not self.cancelled:
            self.cancel_reason, self.cancelled = reason, True

    async def tokens(self) -> AsyncIterator[int]:
        """Each new token id as it is generated; ends when the sequence finishes. Leaving the loop early
        (break, client gone, task cancelled) cancels the generation."""
        assert self._queue is not None, "submit(..., loop=...) to iterate asynchronously"
        try:
            while True:
                tok = await self._queue.get()
                if tok is None:
                    return
                yield tok
        finally:
            if self.finish_reason is None:
                self.cancel()

    def wait(self, timeout: float | None = None) -> list[int]:
        """Blocking: all tokens once the sequence has finished (for non-async callers)."""
        self._done.wait(timeout)
        return self.tokens_out

    # --- engine side: what an `Engine` implementation calls ---
    def _post(self, item: int | None) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the requester's loop is closed (server shutting down)
            pass

    def emit(self, tok: int) -> None:
        """The engine produced token `tok` for this generation."""
        if self.first_token is None:
            self.first_token = time.perf_counter()
        self.tokens_out.append(tok)
        self._post(tok)

    def finish(self, reason: str, error: str | None = None) -> None:
        """The generation ended ("stop", "length", "cancelled", "error" with `error`); later calls are ignored."""
        if self.finish_reason is not None:
            return
        self.finish_reason, self.error, self.finished = reason, error, time.perf_counter()
        self._done.set()
        self._post(None)


class Engine(ABC):
    """What the HTTP layer needs from an engine; `BuiltinEngine` (CPU/GPU, transformers + peft) and
    `serve.vllm_engine.VLLMEngine` implement it."""

    on_step: Callable[[int], None] | None = None  # called with the batch size of every decode step

    @abstractmethod
    def models(self) -> list[ServedModel]: ...

    def get(self, name: str) -> ServedModel | None:
        return next((m for m in self.models() if m.name == name), None)

    @abstractmethod
    def submit(self, model: str, prompt_ids: list[int], params: SamplingParams, *,
               loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        """Queue one generation; raises QueueFull when the queue is at its bound, KeyError for an unknown model."""

    @abstractmethod
    def add_adapter(self, name: str, path: str, *, base: str | None = None) -> ServedModel:
        """Serve a LoRA adapter under `name` from now on (e.g. a fine-tuning job that just finished)."""

    def remove_adapter(self, name: str) -> None:
        """Stop serving adapter `name` (KeyError if it is not served)."""
        raise NotImplementedError("this engine cannot unload adapters")

    def score_prompt(self, model: str, prompt_ids: list[int], k: int) -> list[tuple[float | None, list]]:
        """Per prompt token: its logprob given the tokens before it and the k most likely (id, logprob) there
        (`echo` + `logprobs` on /v1/completions). Blocking: call it in an executor."""
        from tuneforge.serve.protocol import bad_request

        raise bad_request("prompt logprobs (echo with logprobs) are not supported by this engine", param="echo")

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    def stats(self) -> dict:
        return {}


class QueuedEngine(Engine):
    """An engine with one background thread that admits requests from a bounded queue: the admission, the
    Retry-After estimate and the thread's start/stop that `BuiltinEngine` and `LlamaCppEngine` share. A subclass
    implements `_run` (the loop: take from `_waiting` under `_cv`, step, finish handles, append their durations to
    `_recent`) and `_cancel_running` (finish every admitted row with "cancelled" at shutdown)."""

    thread_name = "tuneforge-engine"

    def _init_queue(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._waiting: deque[Handle] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._counts = {"steps": 0, "prefills": 0, "cancelled": 0, "finished": 0, "errors": 0,
                        "generated_tokens": 0}
        self._recent: deque[float] = deque(maxlen=32)  # recent request durations, for Retry-After

    def _enqueue(self, model: str, prompt_ids: list[int], params: SamplingParams,
                 loop: asyncio.AbstractEventLoop | None) -> Handle:
        h = Handle(model, prompt_ids, params, loop)
        with self._cv:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(self._retry_after())
            self._waiting.append(h)
            self._cv.notify()
        return h

    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely free: the mean recent request time (at least 1)."""
        return max(1, math.ceil(sum(self._recent) / len(self._recent))) if self._recent else 1

    @abstractmethod
    def _run(self) -> None: ...

    @abstractmethod
    def _cancel_running(self) -> None: ...

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Stop the loop (the current step ends first), then cancel what is waiting and what is running."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for h in list(self._waiting):
            h.finish("cancelled")
        self._waiting.clear()
        self._cancel_running()
