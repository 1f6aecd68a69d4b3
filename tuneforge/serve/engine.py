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
import os
import threading
import time

import torch

from tuneforge.models.decode import Batch, PrefixCache, prompt_logprobs, sample, top_logprobs
from tuneforge.serve.engine_api import Handle, QueuedEngine, SamplingParams, ServedModel
from tuneforge.serve.loading import BASE_ADAPTER, ModelGroup, same_base, attach_adapter, plan_adapter


class BuiltinEngine(QueuedEngine):
    """Continuous batching on transformers + peft (the CPU path, also works on one CUDA GPU).

    max_num_seqs: rows decoded together (vLLM's name). max_queue: requests waiting for a row; beyond it,
    submit raises QueueFull (→ 429). prefill_tokens: prompt tokens prefilled in one forward when many requests
    arrive together (bounds the activation memory of a burst, and how long running rows wait for a decode step:
    a larger burst is admitted over several steps). prefix_caching: reuse the KV of prompt prefixes shared by
    requests of one adapter (`models.decode.PrefixCache`). merged_copies: adapters that may hold a merged copy of
    the base for batches of that adapter alone (None: as many as fit in a quarter of free memory; 0: never)."""

    def __init__(self, groups: list[ModelGroup], *, max_num_seqs: int = 16, max_queue: int = 64,
                 prefill_tokens: int = 4096, prefix_caching: bool = True, merged_copies: int | None = None):
        self.groups = groups
        for g in groups:
            g.merged_copies = merged_copies
            g.prefix_cache = PrefixCache() if prefix_caching else None
            for adapter in g.names.values():  # build the merged copies now, not during a first request
                g.ensure_merged(adapter)
        self.max_num_seqs, self.prefill_tokens = max_num_seqs, prefill_tokens
        self._served: dict[str, tuple[ModelGroup, str, ServedModel]] = {}
        for g in groups:
            for name, adapter in g.names.items():
                self._register(g, name, adapter, g.tokenizer)
        self._init_queue(max_queue)
        self._model_lock = threading.RLock()  # held during a step; add_adapter waits for the step to end
        self._generators: dict[int, torch.Generator] = {}

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
        return self._enqueue(model, prompt_ids, params, loop)

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
            group.ensure_merged(adapter)
            group.defaults[name] = plan.defaults or group.defaults.get(BASE_ADAPTER, {})
            return self._register(group, name, adapter, tokenizer)

    def remove_adapter(self, name: str) -> None:
        """Stop serving adapter `name` and free its LoRA weights (vLLM's /v1/unload_lora_adapter). Refused while
        a request for it is waiting or running: unloading under a running row would change its answer."""
        from tuneforge.errors import TuneforgeError

        with self._model_lock:
            entry = self._served.get(name)
            if entry is None:
                raise KeyError(name)
            g, adapter, _ = entry
            if adapter == BASE_ADAPTER:
                raise TuneforgeError(f"'{name}' is a base model, not a LoRA adapter")
            with self._cv:
                busy = any(h.model == name for h in self._waiting) or \
                    any(h.model == name for grp in self.groups for h in (grp.batch.seqs if grp.batch else []))
            if busy:
                raise TuneforgeError(f"adapter '{name}' has requests in flight; retry when they finish")
            g.invalidate(adapter)  # its merged copy and cached prefixes go with it
            others = [a for n, a in g.names.items() if a not in (BASE_ADAPTER, adapter)]
            if others:
                g.model.delete_adapter(adapter)
                g.model.set_adapter(others[0])  # peft keeps an active adapter; it must still exist
            else:  # the last adapter: back to the plain base (no LoRA layers left to route around)
                g.model = g.model.unload()
            del g.names[name]
            g.defaults.pop(name, None)
            del self._served[name]

    @torch.no_grad()
    def score_prompt(self, model: str, prompt_ids: list[int], k: int) -> list[tuple[float | None, list]]:
        """One full forward of the prompt through the model's adapter, between decode steps (the model lock)."""
        g, adapter, _ = self._served[model]
        with self._model_lock:
            ids = torch.tensor([prompt_ids], device=g.model.device)
            kw = {"adapter_names": [adapter]} if g.is_peft else {}
            logits = g.model(input_ids=ids, use_cache=False, **kw).logits[0]
        return prompt_logprobs(logits, prompt_ids, k)

    def _cancel_running(self) -> None:
        for g in self.groups:
            for h in (g.batch.seqs if g.batch else []):
                h.finish("cancelled")
            g.batch = None

    def stats(self) -> dict:
        running = sum(len(g.batch) for g in self.groups if g.batch)
        paths: dict[str, int] = {}
        prefix: dict[str, int] = {}
        for g in self.groups:
            for k, v in g.path_counts.items():
                paths[k] = paths.get(k, 0) + v
            for k, v in (g.prefix_cache.stats.items() if g.prefix_cache is not None else ()):
                prefix[k] = prefix.get(k, 0) + v
        return {**self._counts, "running": running, "waiting": len(self._waiting), "forward_paths": paths,
                "prefix_cache": prefix}

    # --- the loop ---
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
                admitted, tokens = [], 0
                while self._waiting and len(admitted) < free:
                    if admitted and self._running() and tokens + len(self._waiting[0].prompt_ids) > self.prefill_tokens:
                        break  # the rest of a large burst joins after the next decode step
                    h = self._waiting.popleft()
                    if h.cancelled:
                        self._done(h, h.cancel_reason)
                    else:
                        admitted.append(h)
                        tokens += len(h.prompt_ids)
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
        """Sample one token per row, hand it to its requester, and drop the rows that finished.

        Rows asking for logprobs get the model's log-softmax (taken before `sample` masks the logits) of the
        token they drew and of the k most likely ones."""
        want = [i for i, h in enumerate(batch.seqs) if h.params.logprobs is not None]
        if want:
            lp, tops = top_logprobs(logits, want, [batch.seqs[i].params.logprobs for i in want])
        toks = sample(logits, batch.seqs, self._generators, g.eos_ids)
        token_lp: dict[int, tuple[float, list]] = {}
        if want:
            chosen = lp.gather(-1, torch.tensor([toks[i] for i in want], device=lp.device)[:, None])[:, 0].tolist()
            token_lp = {i: (chosen[j], tops[j]) for j, i in enumerate(want)}
        keep = []
        for i, (h, t) in enumerate(zip(batch.seqs, toks)):
            if h.cancelled:
                self._done(h, h.cancel_reason)
                continue
            is_eos = t in g.eos_ids and not h.params.ignore_eos
            if not is_eos:
                if i in token_lp:
                    h.logprobs_out.append(token_lp[i])
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
