"""`tuneforge serve --engine vllm`: vLLM's AsyncLLMEngine behind the same routes, limits and metrics (CUDA GPUs).

One base per server; each run/adapter is a peft LoRA adapter served with a `LoRARequest` (vLLM's
`--enable-lora`). The HTTP layer does the chat template, detokenization and stop sequences exactly as with the
built-in engine, so answers and errors look the same; vLLM does the batching (paged attention) and sampling.

Not tested in this repository's CI (no GPU there); the built-in engine is the default and the CPU path.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import uuid

from tuneforge.errors import TuneforgeError
from tuneforge.serve.engine_api import Engine, Handle, QueueFull, SamplingParams, ServedModel


def _require_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise TuneforgeError("--engine vllm: vLLM is not installed (`pip install vllm` on a machine with a "
                             "CUDA GPU); the default --engine builtin runs anywhere") from None
    import torch

    if not torch.cuda.is_available():
        raise TuneforgeError("--engine vllm: no CUDA GPU is visible (vLLM serves on GPUs); use the default "
                             "--engine builtin on this machine")


class VLLMEngine(Engine):
    """plans: tuneforge.serve.loading.ServePlan rows (one base, any number of LoRA adapters on it)."""

    def __init__(self, plans, *, max_num_seqs: int = 256, max_queue: int = 1024, max_model_len: int | None = None,
                 max_lora_rank: int = 64, gpu_memory_utilization: float = 0.9):
        _require_vllm()
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        from tuneforge.models.load import load_tokenizer, resolve
        from tuneforge.serve.loading import same_base

        adapters = [p for p in plans if p.adapter is not None]
        base = adapters[0].base if adapters else plans[-1].base  # a full run's model/, or TARGET itself
        wrong = next((p for p in adapters if not same_base(p.base, base)), None)
        if wrong:
            raise TuneforgeError(f"--engine vllm serves one base per server; adapter {wrong.name} needs "
                                 f"{wrong.base}, not {base}")
        bases = [p for p in plans if p.adapter is None and same_base(p.base, base)]
        for p in plans:
            if p.adapter is None and p not in bases:  # e.g. the base of a full fine-tune: another model
                print(f"tuneforge: --engine vllm serves one model per server; {p.name} is not served",
                      file=sys.stderr)
        self.base_path = str(resolve(base))
        args = AsyncEngineArgs(model=self.base_path, enable_lora=bool(adapters), max_loras=max(1, len(adapters)),
                               max_lora_rank=max_lora_rank, max_num_seqs=max_num_seqs,
                               max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization)
        self.llm = AsyncLLMEngine.from_engine_args(args)
        self.max_queue, self.max_num_seqs = max_queue, max_num_seqs
        tok = load_tokenizer(base)
        self._eos = {tok.eos_token_id}
        from transformers import AutoConfig

        ctx = max_model_len or int(getattr(AutoConfig.from_pretrained(self.base_path),
                                           "max_position_embeddings", 2048))
        self._lora_ids = itertools.count(1)
        self._served: dict[str, tuple[ServedModel, object]] = {}
        from transformers import GenerationConfig

        from tuneforge.serve.loading import decoding_defaults

        try:
            base_defaults = decoding_defaults(GenerationConfig.from_pretrained(self.base_path))
        except OSError:  # no generation_config.json
            base_defaults = {}
        for p in bases:
            self._served[p.name] = (ServedModel(p.name, None, ctx, tok, defaults=p.defaults or base_defaults), None)
        self._base_name = bases[0].name
        for p in adapters:
            self._add(p.name, p.adapter, ctx, p.defaults or base_defaults)
        self._in_flight = 0

    def _add(self, name: str, path: str, ctx: int, defaults: dict) -> ServedModel:
        from vllm.lora.request import LoRARequest

        from tuneforge.serve.loading import check_lora

        check_lora(path, f"adapter {name}")
        tok = self._served[self._base_name][0].tokenizer
        sm = ServedModel(name, self._base_name, ctx, tok, defaults=defaults)
        self._served[name] = (sm, LoRARequest(name, next(self._lora_ids), str(path)))
        return sm

    def models(self) -> list[ServedModel]:
        return [sm for sm, _ in self._served.values()]

    def add_adapter(self, name: str, path: str, *, base: str | None = None) -> ServedModel:
        from tuneforge.serve.loading import plan_adapter

        if name in self._served:
            raise TuneforgeError(f"a model named '{name}' is already served")
        plan = plan_adapter(name, str(path))  # a run directory or an adapter directory
        base_sm = self._served[self._base_name][0]
        return self._add(name, plan.adapter, base_sm.max_model_len, plan.defaults or base_sm.defaults)

    def submit(self, model: str, prompt_ids: list[int], params: SamplingParams, *,
               loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        if model not in self._served:
            raise KeyError(model)
        if self._in_flight >= self.max_num_seqs + self.max_queue:
            raise QueueFull(1)
        loop = loop or asyncio.get_running_loop()
        h = Handle(model, prompt_ids, params, loop)
        self._in_flight += 1
        loop.create_task(self._generate(h, self._served[model][1]))
        return h

    async def _generate(self, h: Handle, lora) -> None:
        from vllm import SamplingParams as VSP
        from vllm.inputs import TokensPrompt

        p = h.params
        sp = VSP(n=1, temperature=p.temperature, top_p=p.top_p, seed=p.seed, max_tokens=p.max_tokens,
                 min_tokens=p.min_tokens, ignore_eos=p.ignore_eos, detokenize=False)
        rid = uuid.uuid4().hex
        seen = 0
        try:
            h.started = time.perf_counter()
            async for out in self.llm.generate(TokensPrompt(prompt_token_ids=h.prompt_ids), sp, rid,
                                               lora_request=lora):
                if h.cancelled:
                    await self.llm.abort(rid)
                    h.finish(h.cancel_reason)
                    return
                o = out.outputs[0]
                ids = list(o.token_ids)
                if out.finished and o.finish_reason == "stop" and ids and ids[-1] in self._eos:
                    ids = ids[:-1]  # the end-of-turn token ends the answer; it is not part of it
                for t in ids[seen:]:
                    h.emit(t)
                seen = len(ids)
                if out.finished:
                    h.finish("stop" if o.finish_reason == "stop" else "length")
                    return
        except asyncio.CancelledError:
            await self.llm.abort(rid)
            h.finish("cancelled")
            raise
        except Exception as e:  # noqa: BLE001 - the request fails, the server goes on
            h.finish("error", f"{type(e).__name__}: {e}")
        finally:
            self._in_flight -= 1

    def shutdown(self) -> None:
        stop = getattr(self.llm, "shutdown", None)
        if stop:
            stop()

    def stats(self) -> dict:
        return {"running": self._in_flight, "waiting": 0}

