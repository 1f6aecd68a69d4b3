"""POST /v1/chat/completions and /v1/completions: request → prompt tokens → engine → response or SSE stream.

The chat template saved with the served model renders the messages (as `tuneforge generate` does), the
context limit is checked before anything is queued, deterministic answers come from the response cache,
and every answered request is reported to the app's request hooks (the request log builds on them).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from tuneforge.data.tools import OPEN as TOOL_OPEN
from tuneforge.data.tools import apply_template, parse_tool_calls
from tuneforge.ids import new_id
from tuneforge.run import DEFAULT_MAX_NEW_TOKENS
from tuneforge.serve import protocol as P
from tuneforge.serve.cache import CachedChoice, ResponseCache
from tuneforge.serve.engine_api import Engine, Handle, QueueFull, SamplingParams, ServedModel
from tuneforge.serve.text import TextStream, TokenText


@dataclass
class RequestRecord:
    """One answered generation request, as handed to `on_request_done` hooks (the request log).

    Times are seconds; queue/ttft are the first choice's (None when not generated, e.g. a cache hit)."""

    id: str
    endpoint: str  # "chat.completions" | "completions"
    model: str | None
    created: float  # unix time of arrival
    status: int  # HTTP status answered (200 for a stream that started)
    prompt: object = None  # the messages list or the prompt(s) as sent
    completions: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_time_s: float | None = None
    ttft_s: float | None = None
    latency_s: float = 0.0
    error: str | None = None
    error_type: str | None = None
    cached: bool = False
    stream: bool = False


@dataclass
class Settings:
    # chat answers without max_tokens (and no budget saved with the model) stop here
    default_max_tokens: int = DEFAULT_MAX_NEW_TOKENS
    completions_default_max_tokens: int = 16  # OpenAI's default for the legacy completions endpoint
    disconnect_poll_s: float = 0.25


@dataclass
class _Choice:
    index: int
    handle: Handle | None
    text: TextStream | None
    finish_reason: str | None = None
    final_text: str = ""
    tokens: int = 0
    lp_sent: int = 0  # tokens whose logprobs were already handed out (streaming)
    streamed: str = ""  # text seen so far, when tool calls are parsed (streaming)
    shown: int = 0  # characters of `streamed` sent as content
    held: bool = False  # a `<tool_call>` began: the rest is held until the answer is parsed
    parsed: tuple | None = None  # (content, [tool_call dicts]) once the answer is complete


class Generation:
    """One request in flight: its prompt tokens, sampling, the engine handles of its choices, its record."""

    def __init__(self, engine: Engine, cache: ResponseCache, settings: Settings, kind: str,
                 req: P.ChatCompletionRequest | P.CompletionRequest, record: RequestRecord):
        self.engine, self.cache, self.settings, self.kind, self.req = engine, cache, settings, kind, req
        self.record = record
        self.id = record.id
        self.created = int(record.created)
        self.t0 = time.perf_counter()
        self.served: ServedModel = self._model()
        self.tools, self.tool_mode, self.tool_name = req.tool_mode() if kind == "chat" else (None, "none", None)
        # a classification run answers chat requests with one of its labels (scored, as `eval` predicts)
        self.labels: list[str] | None = self.served.defaults.get("labels") if kind == "chat" else None
        self.label_logprobs: list[float] | None = None  # log p(label | the label set), in label order
        if self.labels and (self.tools or req.response_format):
            param = "tools" if self.tools else "response_format"
            raise P.bad_request(f"{param}: model '{self.served.name}' is a classification run and answers with one "
                                f"of its labels {self.labels}", param=param)
        self.prompts = self._prompt_ids()
        self.stop = req.stop_list()
        self.params = self._params()
        self.choices: list[_Choice] = []
        n = req.n
        self.cache_key = None
        self.token_text = TokenText(self.served.tokenizer)
        self.prompt_scores: list[list[tuple[float | None, list]]] | None = None  # echo + logprobs
        if self.params.temperature == 0 and self.params.logprobs is None and self.params.constraint is None \
                and self.params.max_tokens > 0 and not self.labels:
            self.cache_key = ("chat" if kind == "chat" else "text",) + ResponseCache.key(
                self.served.name, [t for p in self.prompts for t in p + [-1]], max_tokens=self.params.max_tokens,
                stop=self.stop, n=n, ignore_eos=self.params.ignore_eos, min_tokens=self.params.min_tokens)
        record.prompt_tokens = sum(len(p) for p in self.prompts)

    # --- preparation: everything here can fail with a 4xx before anything is queued ---
    def _model(self) -> ServedModel:
        m = self.engine.get(self.req.model)
        if m is None:
            raise P.model_not_found(self.req.model)
        self.record.model = m.name
        return m

    def _prompt_ids(self) -> list[list[int]]:
        tok = self.served.tokenizer
        if self.kind == "chat":
            if not getattr(tok, "chat_template", None):
                raise P.bad_request(f"model '{self.served.name}' has no chat template: use /v1/completions",
                                    param="messages")
            messages = self.req.template_messages()
            try:
                text = apply_template(tok, messages, self.tools, add_generation_prompt=True)
            except Exception as e:  # noqa: BLE001 - jinja raises for messages the template refuses
                raise P.bad_request(f"messages: the model's chat template refused them: {e}", param="messages")
            prompts = [tok(text, add_special_tokens=False)["input_ids"]]
        else:
            prompts = []
            for p in self.req.prompts():
                if isinstance(p, str):
                    prompts.append(tok(p)["input_ids"])
                else:
                    bad = [t for t in p if not isinstance(t, int) or not 0 <= t < len(tok)]
                    if bad:
                        raise P.bad_request(f"prompt: token id {bad[0]} is outside the vocabulary", param="prompt")
                    prompts.append(list(p))
        ctx = self.served.max_model_len
        for p in prompts:
            if len(p) >= ctx:
                raise P.bad_request(f"The prompt is {len(p)} tokens; this model's context is {ctx} tokens",
                                    param="messages" if self.kind == "chat" else "prompt",
                                    code="context_length_exceeded")
            if not p:
                raise P.bad_request("prompt: empty", param="prompt")
        return prompts

    def _params(self) -> SamplingParams:
        r = self.req
        ctx, longest = self.served.max_model_len, max(len(p) for p in self.prompts)
        asked = r.max_completion_tokens if r.max_completion_tokens is not None else r.max_tokens
        if asked is not None:
            if longest + asked > ctx:
                param = "max_completion_tokens" if r.max_completion_tokens else "max_tokens"
                raise P.bad_request(f"{param}: the prompt ({longest} tokens) plus {asked} new tokens exceeds "
                                    f"this model's context of {ctx} tokens", param=param,
                                    code="context_length_exceeded")
            max_tokens = asked
        else:
            d = self.served.defaults
            cap = (d.get("max_tokens") or self.settings.default_max_tokens) if self.kind == "chat" else \
                self.settings.completions_default_max_tokens
            max_tokens = min(cap, ctx - longest)
        d = self.served.defaults
        temperature = r.temperature if r.temperature is not None else d.get("temperature", 1.0)
        top_p = r.top_p if r.top_p is not None else d.get("top_p", 1.0)
        return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=r.seed,
                              ignore_eos=r.ignore_eos, min_tokens=min(r.min_tokens, max_tokens),
                              logprobs=r.logprobs_k(), constraint=self._constraint())

    def _constraint(self):
        """A per-choice token constraint from the request's response format, or None (free text)."""
        from tuneforge.serve.structured import json_constraint, schema_of, tool_call_constraint

        schema, param = schema_of(getattr(self.req, "response_format", None), self.req.model_extra)
        tok = self.served.tokenizer
        if self.tool_mode in ("required", "function"):
            if schema is not None:
                raise P.bad_request(f"{param}: cannot be combined with tool_choice {self.tool_mode!r} (the answer "
                                    "is a tool call)", param=param)
            # a named function is called once (as vLLM does); `required` may call several unless
            # parallel_tool_calls is false
            parallel = self.tool_mode == "required" and self.req.parallel_tool_calls is not False
            return tool_call_constraint(self.tools, self.tool_name, parallel, tok, len(tok))
        if schema is None:
            return None
        return json_constraint(schema, tok, len(tok), param)

    # --- running ---
    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Queue every choice (n per prompt); False when the answer came from the cache. A full queue → 429."""
        cached = self.cache.get(self.cache_key) if self.cache_key else None
        if cached is not None:
            self.record.cached = True
            self.choices = [_Choice(i, None, None, c.finish_reason, c.text, c.completion_tokens)
                            for i, c in enumerate(cached)]
            return False
        if self.labels:  # no generation: `score_prompts` scores every label
            self.choices = [_Choice(j, None, None) for j in range(self.req.n)]
            return True
        if self.params.max_tokens == 0:  # echo only: the prompt is the answer (scored in `score_prompts`)
            self.choices = [_Choice(i * self.req.n + j, None, None, "length")
                            for i in range(len(self.prompts)) for j in range(self.req.n)]
            return True
        try:
            for i, p in enumerate(self.prompts):
                for j in range(self.req.n):
                    params = self.params
                    if params.seed is not None and j:
                        params = SamplingParams(**{**params.__dict__, "seed": params.seed + j})
                    h = self.engine.submit(self.served.name, p, params, loop=loop)
                    self.choices.append(_Choice(i * self.req.n + j, h, TextStream(self.served.tokenizer, self.stop)))
        except QueueFull as e:
            self.cancel()
            raise P.too_many_requests(e.retry_after_s) from None
        return True

    def cancel(self, reason: str = "cancelled") -> None:
        for c in self.choices:
            if c.handle is not None and c.handle.finish_reason is None:
                c.handle.cancel(reason)

    async def score_prompts(self) -> None:
        """echo + logprobs on /v1/completions: every prompt token's logprob, from one forward per prompt."""
        if self.labels:
            await self._score_labels()
            return
        k = self.params.logprobs
        if self.kind != "completion" or not self.req.echo or k is None or self.prompt_scores is not None:
            return
        loop = asyncio.get_running_loop()
        self.prompt_scores = [await loop.run_in_executor(None, self.engine.score_prompt, self.served.name, p, k)
                              for p in self.prompts]

    async def _score_labels(self) -> None:
        """A classification run's answer: each label's log-likelihood (label + end-of-turn, as training encoded
        it: `eval.classify.label_token_pairs`) from the engine's prompt scoring, the most likely label as the
        content (the first listed on ties, as `eval`), and its probability among the labels for `logprobs`."""
        from tuneforge.eval.classify import label_token_pairs, probabilities

        if self.label_logprobs is not None:
            return
        tok, loop = self.served.tokenizer, asyncio.get_running_loop()
        pairs = label_token_pairs(self.req.template_messages(), self.labels, tok)
        scores = []
        for prompt, answer in pairs:
            try:
                lps = await loop.run_in_executor(None, self.engine.score_prompt, self.served.name, prompt + answer, 0)
            except P.OpenAIError:
                raise P.bad_request(f"model '{self.served.name}' is a classification run, and this engine cannot "
                                    "score its labels (serve it with the builtin engine)", param="model") from None
            scores.append(sum(lp for lp, _ in lps[len(prompt):]))
        probs = probabilities(scores)
        self.label_logprobs = [math.log(max(p, 5e-324)) for p in probs]  # finite: JSON has no -inf
        best = max(range(len(probs)), key=lambda i: (probs[i], -i))
        for c in self.choices:
            c.final_text, c.finish_reason, c.tokens = self.labels[best], "stop", len(pairs[best][1])

    async def deltas(self, c: _Choice) -> AsyncIterator[str]:
        """Text deltas of one choice; sets its finish_reason when done."""
        if c.handle is None:  # nothing to generate (echo with max_tokens 0)
            return
        h, ts = c.handle, c.text
        async for tok in h.tokens():
            d = ts.push(tok)
            c.tokens += 1
            if d:
                yield d
            if ts.stopped:
                h.cancel("stop")
                break
        tail = ts.flush()
        if tail:
            yield tail
        if h.finish_reason == "error":
            raise P.OpenAIError(500, f"generation failed: {h.error}", type="server_error")
        c.finish_reason = "stop" if ts.stopped or h.finish_reason == "stop" else "length"
        c.final_text = ts.text

    async def collect(self, c: _Choice) -> None:
        async for _ in self.deltas(c):
            pass

    def finish(self) -> None:
        """Fill in the record and (for a complete deterministic answer) the cache."""
        rec = self.record
        rec.completions = [c.final_text or (c.text.text if c.text else "") for c in self.choices]  # partial if cut
        rec.finish_reasons = [c.finish_reason or "cancelled" for c in self.choices]
        rec.completion_tokens = sum(c.tokens for c in self.choices)
        rec.latency_s = time.perf_counter() - self.t0
        first = self.choices[0].handle if self.choices else None
        if first is not None:
            rec.queue_time_s = None if first.started is None else first.started - first.submitted
            rec.ttft_s = None if first.first_token is None else first.first_token - first.submitted
        if self.cache_key and not rec.cached and all(c.finish_reason in ("stop", "length") for c in self.choices):
            self.cache.put(self.cache_key, tuple(CachedChoice(c.final_text, c.finish_reason, c.tokens)
                                                 for c in self.choices))

    def usage(self) -> dict:
        return P.usage(self.record.prompt_tokens, sum(c.tokens for c in self.choices))

    # --- log-probabilities ---
    def _generated_lp(self, c: _Choice, start: int, end: int) -> list[tuple[int, float, list]]:
        """(token id, logprob, top) of generated tokens [start, end) of choice c."""
        if c.handle is None or self.params.logprobs is None:
            return []
        h = c.handle
        return [(h.tokens_out[i], *h.logprobs_out[i]) for i in range(start, min(end, len(h.logprobs_out)))]

    def chat_logprobs(self, c: _Choice, start: int = 0, end: int | None = None) -> list[dict] | None:
        if self.params.logprobs is None:
            return None
        if self.label_logprobs is not None:  # one entry: the label, its probability among the labels, the others
            if end is not None and end <= start:
                return []
            ranked = sorted(zip(self.labels, self.label_logprobs), key=lambda x: -x[1])
            enc = lambda t: (t, list(t.encode("utf-8")))  # noqa: E731
            lp = dict(ranked)[c.final_text]
            return [P.token_logprob(enc(c.final_text), lp, [(enc(t), v) for t, v in ranked[:self.params.logprobs]])]
        tt = self.token_text
        end = c.tokens if end is None else end
        return [P.token_logprob(tt(t), lp, [(tt(i), v) for i, v in top])
                for t, lp, top in self._generated_lp(c, start, end)]

    def completion_logprobs(self, c: _Choice, *, with_prompt: bool, start: int = 0, end: int | None = None,
                            text_start: int = 0) -> dict | None:
        if self.params.logprobs is None:
            return None
        tt = self.token_text
        toks: list[str] = []
        lps: list[float | None] = []
        tops: list = []
        if with_prompt and self.prompt_scores is not None:
            prompt = self.prompts[c.index // self.req.n]
            for t, (lp, top) in zip(prompt, self.prompt_scores[c.index // self.req.n]):
                toks.append(tt(t)[0])
                lps.append(lp)
                tops.append(None if lp is None else [(tt(i)[0], v) for i, v in top])
        end = c.tokens if end is None else end
        for t, lp, top in self._generated_lp(c, start, end):
            toks.append(tt(t)[0])
            lps.append(lp)
            tops.append([(tt(i)[0], v) for i, v in top])
        return P.completion_logprobs(toks, lps, tops, text_start)

    # --- tool calls ---
    @property
    def parses_tools(self) -> bool:
        return self.tool_mode != "none"

    def split(self, c: _Choice) -> tuple[str | None, list[dict]]:
        """(content, tool_calls) of a finished choice: its text parsed by `data.tools.parse_tool_calls` when the
        request has tools (and tool_choice is not none), else (text, [])."""
        if not self.parses_tools:
            return self._text(c), []
        if c.parsed is None:
            content, calls = parse_tool_calls(c.final_text)
            if self.tool_mode != "auto" and not calls:
                content = c.final_text  # a forced call cut by max_tokens: the partial text, finish "length"
            c.parsed = (content, [P.tool_call(new_id("call").replace("-", "_", 1), n, a) for n, a in calls])
        return c.parsed

    def finish_reason(self, c: _Choice) -> str | None:
        return "tool_calls" if self.parses_tools and self.split(c)[1] else c.finish_reason

    def visible(self, c: _Choice, delta: str) -> str:
        """The part of a streamed delta that is content: with tools, text from the first `<tool_call>` on is held
        (sent as tool calls, or as text if it does not parse, when the answer ends); forced calls send none."""
        if not self.parses_tools:
            return delta
        c.streamed += delta
        if self.tool_mode != "auto" or c.held:
            return ""
        buf, at = c.streamed, c.streamed.find(TOOL_OPEN)
        if at != -1:
            end, c.held = at, True
        else:  # keep back a tail that may be the start of `<tool_call>`
            end = len(buf) - next((k for k in range(min(len(TOOL_OPEN) - 1, len(buf)), 0, -1)
                                   if buf.endswith(TOOL_OPEN[:k])), 0)
        out, c.shown = buf[c.shown:end], max(c.shown, end)
        return out

    def stream_tail(self, c: _Choice) -> tuple[str, list[dict]]:
        """After a streamed choice ends: content still to send, and its tool calls as `delta.tool_calls`."""
        if not self.parses_tools:
            return "", []
        calls = self.split(c)[1]
        if calls:
            return "", [P.tool_call_delta(i, call) for i, call in enumerate(calls)]
        return c.streamed[c.shown:], []  # held text that was no call after all

    def _text(self, c: _Choice) -> str:
        if self.kind == "completion" and self.req.echo:
            prompt = self.req.prompts()[c.index // self.req.n]
            return (prompt if isinstance(prompt, str) else self.served.tokenizer.decode(prompt)) + c.final_text
        return c.final_text

    def response(self) -> dict:
        if self.kind == "chat":
            choices = []
            for c in self.choices:
                content, calls = self.split(c)
                choices.append(P.chat_choice(c.index, content, self.finish_reason(c), tool_calls=calls,
                                             logprobs=self.chat_logprobs(c)))
            return P.chat_completion(self.id, self.served.name, self.created, choices, self.usage())
        choices = [P.completion_choice(c.index, self._text(c), c.finish_reason,
                                       self.completion_logprobs(c, with_prompt=True)) for c in self.choices]
        return P.completion(self.id, self.served.name, self.created, choices, self.usage())


async def run_unary(gen: Generation, is_disconnected: Callable[[], "asyncio.Future"]) -> dict:
    """Generate every choice (after `gen.start`); a client that goes away meanwhile cancels them."""
    await gen.score_prompts()
    if not gen.record.cached:
        work = asyncio.ensure_future(asyncio.gather(*(gen.collect(c) for c in gen.choices)))
        try:
            while not work.done():
                done, _ = await asyncio.wait({work}, timeout=gen.settings.disconnect_poll_s)
                if not done and await is_disconnected():
                    gen.cancel()
                    work.cancel()
                    raise asyncio.CancelledError
            work.result()
        finally:
            if not work.done():
                work.cancel()
            gen.cancel()
    gen.finish()
    return gen.response()


async def run_stream(gen: Generation) -> AsyncIterator[bytes]:
    """SSE chunks of every choice as tokens arrive, then usage (if asked) and `data: [DONE]`.

    With logprobs, each content chunk carries the entries of the tokens consumed since the previous chunk.
    Closing this generator early (the client disconnected) cancels the generations."""
    chat = gen.kind == "chat"

    def mk(c: _Choice, content: str | None = None, *, role: str | None = None,
           finish_reason: str | None = None, echo: bool = False, tool_calls: list[dict] | None = None) -> dict:
        lp_start = c.lp_sent
        if role is None:  # the opening role chunk carries no token
            c.lp_sent = c.tokens
        if chat:
            if content is not None and role is None:
                content = gen.visible(c, content)
            lps = gen.chat_logprobs(c, lp_start, c.lp_sent) if content is not None else None
            return P.chat_chunk(gen.id, gen.served.name, gen.created, c.index, content=content, role=role,
                                finish_reason=finish_reason, logprobs=lps, tool_calls=tool_calls)
        lps = gen.completion_logprobs(c, with_prompt=echo, start=lp_start, end=c.tokens) \
            if content is not None or echo else None
        return P.completion_chunk(gen.id, gen.served.name, gen.created, c.index, content or "", finish_reason, lps)

    try:
        await gen.score_prompts()
        if chat:
            for c in gen.choices:
                yield P.sse(mk(c, role="assistant", content=""))
        if gen.choices and gen.choices[0].handle is None:  # cache hit or echo only: replay
            for c in gen.choices:
                yield P.sse(mk(c, gen._text(c), echo=True))
        elif len(gen.choices) == 1:
            c = gen.choices[0]
            if not chat and gen.req.echo:
                yield P.sse(mk(c, gen._text(_Choice(0, None, None)), echo=True))
            async for d in gen.deltas(c):
                yield P.sse(mk(c, d))
            if c.tokens > c.lp_sent and gen.params.logprobs is not None:  # tokens held back (a stop cut them)
                yield P.sse(mk(c, ""))
        else:
            queue: asyncio.Queue = asyncio.Queue()

            async def pump(c: _Choice) -> None:
                try:
                    async for d in gen.deltas(c):
                        queue.put_nowait((c, d, None))
                    queue.put_nowait((c, None, None))
                except BaseException as e:  # noqa: BLE001 - handed to the stream below
                    queue.put_nowait((c, None, e))

            tasks = [asyncio.ensure_future(pump(c)) for c in gen.choices]
            try:
                left = len(tasks)
                while left:
                    c, d, err = await queue.get()
                    if err is not None:
                        raise err
                    if d is None:
                        left -= 1
                    else:
                        yield P.sse(mk(c, d))
            finally:
                for t in tasks:
                    t.cancel()
        gen.finish()
        for c in gen.choices:
            if chat and gen.parses_tools:
                content, calls = gen.stream_tail(c)
                if content:
                    yield P.sse(P.chat_chunk(gen.id, gen.served.name, gen.created, c.index, content=content))
                if calls:
                    yield P.sse(P.chat_chunk(gen.id, gen.served.name, gen.created, c.index, tool_calls=calls))
            yield P.sse(mk(c, finish_reason=gen.finish_reason(c) if chat else c.finish_reason))
        if gen.req.include_usage():
            yield P.sse(P.usage_chunk(gen.id, gen.served.name, gen.created,
                                      "chat.completion.chunk" if chat else "text_completion", gen.usage()))
        yield P.sse("[DONE]")
    except P.OpenAIError as e:
        gen.record.status, gen.record.error, gen.record.error_type = e.status, e.message, e.type
        yield P.sse(e.body())
        yield P.sse("[DONE]")
    finally:
        gen.cancel()
