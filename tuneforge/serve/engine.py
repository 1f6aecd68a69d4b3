"""The generation engine behind the server: continuous batching over a KV cache, many LoRA adapters on one base.

No HTTP here. `BuiltinEngine` runs one background thread that owns the models. Requests are submitted from any
thread (`submit` → `Handle`); each decode step feeds every running sequence one token. New sequences are
prefilled together and join the running batch between decode steps; finished or cancelled ones leave it.
The batch is the abstraction (TGI's design): `Batch.prefill`, `Batch.decode`, `Batch.filter`, `Batch.extend`.
The KV cache is left-padded, with a 2-D attention mask and explicit position ids per row, so rows of different
lengths share one tensor; tensors are copied only when rows join or leave, not per step.

Rows for different adapters of one base share the batch: peft's mixed-adapter forward (`adapter_names=[...]`,
`"__base__"` for the plain base) applies each row's LoRA weights, so an adapter costs its LoRA matrices only.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections import deque

import torch

from tuneforge.models.decode import Batch, sample
from tuneforge.serve.engine_api import Engine, Handle, QueueFull, SamplingParams, ServedModel
from tuneforge.serve.loading import BASE_ADAPTER, ModelGroup, same_base, attach_adapter, plan_adapter


class BuiltinEngine(Engine):
    """Continuous batching on transformers + peft (the CPU path, also works on one CUDA GPU).

    max_num_seqs: rows decoded together (vLLM's name). max_queue: requests waiting for a row; beyond it,
    submit raises QueueFull (→ 429). prefill_tokens: prompt tokens prefilled in one forward when many requests
    arrive together (bounds the activation memory of a burst)."""

    def __init__(self, groups: list[ModelGroup], *, max_num_seqs: int = 16, max_queue: int = 64,
                 prefill_tokens: int = 4096):
        self.groups = groups
        self.max_num_seqs, self.max_queue, self.prefill_tokens = max_num_seqs, max_queue, prefill_tokens
        self._served: dict[str, tuple[ModelGroup, str, ServedModel]] = {}
        for g in groups:
            for name, adapter in g.names.items():
                self._register(g, name, adapter, g.tokenizer)
        self._waiting: deque[Handle] = deque()
        self._cv = threading.Condition()
        self._model_lock = threading.RLock()  # held during a step; add_adapter waits for the step to end
        self._generators: dict[int, torch.Generator] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self._counts = {"steps": 0, "prefills": 0, "cancelled": 0, "finished": 0, "errors": 0,
                        "generated_tokens": 0}
        self._recent: deque[float] = deque(maxlen=32)  # recent request durations, for Retry-After

    def _register(self, g: ModelGroup, name: str, adapter: str, tokenizer) -> ServedModel:
        parent = next((n for n, a in g.names.items() if a == BASE_ADAPTER), None) if adapter != BASE_ADAPTER else None
        sm = ServedModel(name, parent, g.max_model_len, tokenizer, defaults=dict(g.defaults.get(name, {})))
        self._served[name] = (g, adapter, sm)
        return sm

    # --- Engine API ---
    def models(self) -> list[ServedModel]:
        return [sm for _, _, sm in list(self._served.values())]

    def get(self, name: str) -> ServedModel | None:
        entry = self._served.get(name)
        return entry[2] if entry else None

    def submit(self, model: str, prompt_ids: list[int], params: SamplingParams, *,
               loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        if model not in self._served:
            raise KeyError(model)
        h = Handle(model, prompt_ids, params, loop)
        with self._cv:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(self._retry_after())
            self._waiting.append(h)
            self._cv.notify()
        return h

    def add_adapter(self, name: str, path: str, *, base: str | None = None) -> ServedModel:
        """`path`: a finished run directory or a peft LoRA adapter directory. Blocks until the current decode
        step ends and the adapter is loaded (call it off the event loop, e.g. in an executor)."""
        from tuneforge.errors import TuneforgeError

        plan = plan_adapter(name, str(path))
        with self._model_lock:
            if name in self._served:
                raise TuneforgeError(f"a model named '{name}' is already served")
            if base is not None:
                if base not in self._served:
                    raise TuneforgeError(f"base '{base}' is not served")
                group = self._served[base][0]
            else:
                group = next((g for g in self.groups if same_base(g.base_path, plan.base)), None)
                if group is None and len(self.groups) == 1:
                    group = self.groups[0]  # peft checks the shapes: a foreign adapter fails to load
                if group is None:
                    raise TuneforgeError(f"{path}: its base {plan.base} is not loaded by this server")
            adapter, tokenizer = attach_adapter(group, name, plan.adapter)
            group.defaults[name] = plan.defaults or group.defaults.get(BASE_ADAPTER, {})
            return self._register(group, name, adapter, tokenizer)

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="tuneforge-engine", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for h in list(self._waiting):
            h.finish("cancelled")
        for g in self.groups:
            for h in (g.batch.seqs if g.batch else []):
                h.finish("cancelled")
            g.batch = None

    def stats(self) -> dict:
        running = sum(len(g.batch) for g in self.groups if g.batch)
        return {**self._counts, "running": running, "waiting": len(self._waiting)}

    # --- the loop ---
    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely free: the mean recent request time (at least 1)."""
        return max(1, math.ceil(sum(self._recent) / len(self._recent))) if self._recent else 1

    def _running(self) -> int:
        return sum(len(g.batch) for g in self.groups if g.batch)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._waiting and not self._running():
                    self._cv.wait()
                if self._stop:
                    return
                free = self.max_num_seqs - self._running()
                admitted = []
                while self._waiting and len(admitted) < free:
                    h = self._waiting.popleft()
                    if h.cancelled:
                        self._done(h, h.cancel_reason)
                    else:
                        admitted.append(h)
            try:
                with self._model_lock:
                    if admitted:
                        self._admit(admitted)
                    for g in self.groups:
                        if g.batch is not None and len(g.batch):
                            self._decode(g)
            except Exception as e:  # noqa: BLE001 - a failing step fails its requests, not the server
                self._fail_all(admitted, e)

    def _admit(self, handles: list[Handle]) -> None:
        by_group: dict[int, list[Handle]] = {}
        for h in handles:
            h.started = time.perf_counter()
            if h.params.temperature > 0:
                gen = torch.Generator()
                gen.manual_seed(h.params.seed if h.params.seed is not None else int.from_bytes(os.urandom(7), "big"))
                self._generators[h.id] = gen
            by_group.setdefault(id(self._served[h.model][0]), []).append(h)
        for hs in by_group.values():
            g = self._served[hs[0].model][0]
            hs.sort(key=lambda h: len(h.prompt_ids))  # similar lengths prefill together: less padding
            chunk: list[Handle] = []
            for h in hs + [None]:
                if h is not None and (not chunk or (len(chunk) + 1) * len(h.prompt_ids) <= self.prefill_tokens):
                    chunk.append(h)
                    continue
                self._prefill(g, chunk)
                chunk = [h] if h is not None else []

    def _prefill(self, g: ModelGroup, hs: list[Handle]) -> None:
        adapters = [self._served[h.model][1] for h in hs]
        batch, logits = Batch.prefill(g, hs, adapters)
        self._counts["prefills"] += 1
        self._advance(g, batch, logits)
        if len(batch):
            if g.batch is None or not len(g.batch):
                g.batch = batch
            else:
                g.batch.extend(batch)

    def _decode(self, g: ModelGroup) -> None:
        batch = g.batch
        keep = [i for i, h in enumerate(batch.seqs) if not h.cancelled]
        for i, h in enumerate(batch.seqs):
            if h.cancelled:
                self._done(h, h.cancel_reason)
        batch.filter(keep)
        if not len(batch):
            g.batch = None
            return
        if self.on_step:
            self.on_step(len(batch))
        logits = batch.decode(g)
        self._counts["steps"] += 1
        self._advance(g, batch, logits)
        if not len(batch):
            g.batch = None

    def _advance(self, g: ModelGroup, batch: Batch, logits: torch.Tensor) -> None:
        """Sample one token per row, hand it to its requester, and drop the rows that finished."""
        toks = sample(logits, batch.seqs, self._generators, g.eos_ids)
        keep = []
        for i, (h, t) in enumerate(zip(batch.seqs, toks)):
            if h.cancelled:
                self._done(h, h.cancel_reason)
                continue
            is_eos = t in g.eos_ids and not h.params.ignore_eos
            if not is_eos:
                h.emit(t)
                self._counts["generated_tokens"] += 1
            if is_eos:
                self._done(h, "stop")
            elif len(h.tokens_out) >= h.params.max_tokens:
                self._done(h, "length")
            else:
                keep.append(i)
        batch.last = torch.tensor(toks, dtype=torch.long, device=batch.mask.device)
        batch.filter(keep)

    def _done(self, h: Handle, reason: str, error: str | None = None) -> None:
        self._generators.pop(h.id, None)
        key = "cancelled" if reason == "cancelled" else "errors" if reason == "error" else "finished"
        self._counts[key] += 1
        h.finish(reason, error)
        if reason in ("stop", "length"):
            self._recent.append(h.finished - h.submitted)

    def _fail_all(self, admitted: list[Handle], e: Exception) -> None:
        msg = f"{type(e).__name__}: {e}"
        for h in admitted:
            self._done(h, "error", msg)
        for g in self.groups:
            for h in (g.batch.seqs if g.batch else []):
                self._done(h, "error", msg)
            g.batch = None
