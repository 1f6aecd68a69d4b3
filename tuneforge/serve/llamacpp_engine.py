"""`tuneforge serve TARGET --engine llama.cpp`: a run's GGUF export served by llama.cpp on the CPU, behind the same
routes, auth, limits, metrics and request log as the built-in engine.

Why these bindings: llama-cpp-python's bundled server answers one request at a time, and a managed
`llama-server -np N` needs its own multi-minute build; llama.cpp's batch API (one `llama_decode` over tokens of
many sequences, each with its seq id and position) gives continuous batching from the Python bindings alone, with
the same engine thread design as `serve.engine.BuiltinEngine`: each step puts one token of every running sequence
and the next chunk (≤ n_batch tokens in all) of newly admitted prompts into one batch — prefill runs alongside
decodes — and samples with `models.decode.sample`, so temperature/top_p/seed/min_tokens behave exactly as the
built-in engine's. Sequences share one unified KV cache (`kv_unified`); a finished row's cells are removed.

Prefix sharing (llama.cpp's prompt cache, vLLM's automatic prefix caching): a new row whose prompt starts with
at least PREFIX_MIN_TOKENS tokens already in the cache — a running row's prompt, or the last finished row's,
which a spare sequence id keeps — gets those cells by `llama_memory_seq_cp` (in a unified cache the cells gain
the new sequence id; nothing is recomputed or copied) and prefills only the rest. The chat template's system
prompt and role header, a client's system prompt or few-shot block are computed once instead of per request.

LoRA: llama.cpp applies adapters per context, not per sequence, so this engine serves one model: a run is served
through its merged GGUF export (`tuneforge export gguf RUN --type q8_0`, the adapter folded in); `--lora-modules`
and runtime adapters are refused with a message naming the built-in engine.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.serve.engine_api import Handle, QueuedEngine, SamplingParams, ServedModel

INSTALL = "pip install 'tuneforge[llamacpp]' (builds llama-cpp-python from source: cmake and a C++ compiler, minutes)"
PREFIX_MIN_TOKENS = 16  # shorter shared prefixes are recomputed (as the builtin engine's PrefixCache)
GGUF_TYPES = ("q8_0", "f16")  # a run's exports, in order of preference (q8_0: ~2x faster on CPU, within verify)


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def run_export(target: str) -> Path | None:
    """The GGUF export directory of run TARGET that this engine would serve (GGUF_TYPES order), or None."""
    exports = [Path(target) / "exports" / f"gguf-{t}" for t in GGUF_TYPES]
    return next((d for d in exports if d.is_dir() and list(d.glob("*.gguf"))), None)


def resolve_target(target: str, served_name: str | None = None):
    """(gguf file, served name, tokenizer, decoding defaults) for TARGET: a run dir (its GGUF export), a GGUF
    export dir or a .gguf file."""
    from tuneforge.export.gguf import find_gguf
    from tuneforge.run import is_run, read_run
    from tuneforge.serve.loading import run_defaults

    if is_run(target):
        run = read_run(target)
        found = run_export(target)
        if found is None:
            raise TuneforgeError(f"{target}: no GGUF export for --engine llama.cpp; run "
                                 f"`tuneforge export gguf {target} --type q8_0` first")
        tok_dir = run.adapter if run.adapter is not None else run.model
        return find_gguf(found), served_name or Path(target).resolve().name, _tokenizer(str(tok_dir)), \
            run_defaults(run)
    p = Path(target)
    if not p.exists():
        raise TuneforgeError(f"{target}: --engine llama.cpp serves a run with a GGUF export, a GGUF export "
                             "directory or a .gguf file")
    f = find_gguf(p)
    tok_dir = f.parent
    tok = _tokenizer(str(tok_dir)) if (tok_dir / "tokenizer_config.json").is_file() else \
        _tokenizer(str(tok_dir), gguf_file=f.name)
    return f, served_name or target, tok, {}


def _tokenizer(path: str, **kw):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@dataclass
class _Row:
    h: Handle
    seq: int  # llama.cpp sequence id (a slot)
    pending: list[int]  # prompt tokens not yet decoded
    pos: int = 0  # position of the next token fed
    last: int = -1  # the token to feed at the next decode step
    prompt: tuple[int, ...] = ()  # the whole prompt (its first len(prompt) - len(pending) tokens are in the cache)


class LlamaCppEngine(QueuedEngine):
    """Continuous batching over llama.cpp's batch API (see the module docstring)."""

    thread_name = "tuneforge-llamacpp"

    def __init__(self, gguf: str | Path, name: str, tokenizer, *, defaults: dict | None = None,
                 max_num_seqs: int = 16, max_queue: int = 64, max_model_len: int | None = None,
                 n_batch: int = 512, n_threads: int | None = None, prefix_caching: bool = True):
        if not available():
            raise TuneforgeError(f"--engine llama.cpp: llama-cpp-python is not installed ({INSTALL})")
        import llama_cpp as L

        self._L = L
        self.gguf = str(gguf)
        self.max_num_seqs, self.n_batch, self.prefix_caching = max_num_seqs, n_batch, prefix_caching
        self._init_queue(max_queue)
        L.llama_backend_init()
        L.llama_log_set(_QUIET, None)
        self._model = L.llama_model_load_from_file(self.gguf.encode(), L.llama_model_default_params())
        if not self._model:
            raise TuneforgeError(f"{gguf}: llama.cpp cannot load this GGUF file")
        train_ctx = int(L.llama_model_n_ctx_train(self._model))
        ctx_len = min(train_ctx, max_model_len or train_ctx)
        cp = L.llama_context_default_params()
        cp.n_ctx = max(4096, min(max_num_seqs * ctx_len, 16384))  # KV cells shared by all rows (unified)
        cp.n_batch = cp.n_ubatch = n_batch
        cp.n_seq_max = max_num_seqs + 1  # + the sequence that keeps the last finished prompt (prefix sharing)
        cp.kv_unified = True
        cp.n_threads = cp.n_threads_batch = n_threads or os.cpu_count() or 1
        self._ctx = L.llama_init_from_model(self._model, cp)
        if not self._ctx:
            raise TuneforgeError(f"{gguf}: llama.cpp could not create a context (n_ctx {cp.n_ctx})")
        self._mem = L.llama_get_memory(self._ctx)
        self._vocab = L.llama_model_get_vocab(self._model)
        self._n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self._batch = L.llama_batch_init(n_batch, 0, 1)
        eos = {tokenizer.eos_token_id} | {t for t in range(self._n_vocab) if L.llama_vocab_is_eog(self._vocab, t)}
        self.eos_ids = eos - {None}
        self.served = ServedModel(name, None, min(ctx_len, cp.n_ctx), tokenizer, defaults=dict(defaults or {}))
        self._rows: list[_Row] = []
        self._free = list(range(max_num_seqs))
        self._keep_seq, self._kept = max_num_seqs, ()  # the last finished row's prompt, for prefix sharing
        self._generators: dict = {}

    # --- Engine API ---
    def models(self) -> list[ServedModel]:
        return [self.served]

    def submit(self, model: str, prompt_ids: list[int], params: SamplingParams, *,
               loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        if model != self.served.name:
            raise KeyError(model)
        return self._enqueue(model, prompt_ids, params, loop)

    def add_adapter(self, name: str, path: str, *, base: str | None = None) -> ServedModel:
        raise TuneforgeError("--engine llama.cpp serves one model: llama.cpp applies LoRA per context, not per "
                             "request; export the run (`tuneforge export gguf RUN --type q8_0`) and serve it, or "
                             "use --engine builtin for many adapters on one base")

    def _cancel_running(self) -> None:
        for r in self._rows:
            r.h.finish("cancelled")
        self._rows = []

    def shutdown(self) -> None:
        super().shutdown()
        L = self._L
        if self._ctx:  # the loop has stopped: nothing uses the context any more
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            self._ctx = self._model = None

    def stats(self) -> dict:
        return {**self._counts, "running": len(self._rows), "waiting": len(self._waiting)}

    # --- the loop ---
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._waiting and not self._rows:
                    self._cv.wait()
                if self._stop:
                    return
                while self._waiting and self._free:
                    h = self._waiting.popleft()
                    if h.cancelled:
                        self._done(None, h, h.cancel_reason)
                        continue
                    self._admit(h)
            try:
                self._step()
            except Exception as e:  # noqa: BLE001 - a failing step fails its requests, not the server
                msg = f"{type(e).__name__}: {e}"
                for r in list(self._rows):
                    self._done(r, r.h, "error", msg)

    def _admit(self, h: Handle) -> None:
        import torch

        h.started = time.perf_counter()
        if h.params.temperature > 0:
            gen = torch.Generator()
            gen.manual_seed(h.params.seed if h.params.seed is not None else int.from_bytes(os.urandom(7), "big"))
            self._generators[h.id] = gen
        seq = self._free.pop()
        self._L.llama_memory_seq_rm(self._mem, seq, -1, -1)
        prompt = tuple(h.prompt_ids)
        donor, shared = self._shared_prefix(prompt)
        if shared:
            self._L.llama_memory_seq_cp(self._mem, donor, seq, 0, shared)
            self._counts["prefix_hits"] = self._counts.get("prefix_hits", 0) + 1
            self._counts["prefix_hit_tokens"] = self._counts.get("prefix_hit_tokens", 0) + shared
        self._rows.append(_Row(h, seq, list(prompt[shared:]), pos=shared, prompt=prompt))
        self._counts["prefills"] += 1

    def _shared_prefix(self, prompt: tuple[int, ...]) -> tuple[int, int]:
        """(sequence id, length) of the longest prefix of `prompt` whose KV is in the cache (a running row's
        computed prompt, or the kept last prompt), if at least PREFIX_MIN_TOKENS long; (0, 0) otherwise. The last
        prompt token is never shared: its forward gives the first answer token."""
        from tuneforge.models.decode import common_prefix

        best = (0, 0)
        if not self.prefix_caching:
            return best
        have = [(r.seq, r.prompt[:len(r.prompt) - len(r.pending)]) for r in self._rows] + \
            [(self._keep_seq, self._kept)]
        for seq, done in have:
            n = min(common_prefix(prompt, done), len(prompt) - 1)
            if n >= PREFIX_MIN_TOKENS and n > best[1]:
                best = (seq, n)
        return best

    def _step(self) -> None:
        import numpy as np
        import torch

        from tuneforge.models.decode import sample, top_logprobs

        L, b = self._L, self._batch
        for r in [r for r in self._rows if r.h.cancelled]:
            self._done(r, r.h, r.h.cancel_reason)
        if not self._rows:
            return
        n, out = 0, []  # out: (row, batch index whose logits give its next token)

        def put(tok: int, pos: int, seq: int, logits: bool) -> None:
            nonlocal n
            b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, int(logits)
            b.seq_id[n][0] = seq
            n += 1

        decoding = [r for r in self._rows if not r.pending]
        for r in decoding:  # one token each: running rows never wait for a prefill
            put(r.last, r.pos, r.seq, True)
            r.pos += 1
            out.append((r, n - 1))
        if self.on_step and decoding:
            self.on_step(len(decoding))
        for r in [r for r in self._rows if r.pending]:  # then prompt chunks, as many as the batch holds
            take = r.pending[:self.n_batch - n]
            if not take:
                break
            for j, t in enumerate(take):
                put(t, r.pos + j, r.seq, j == len(take) - 1 and len(take) == len(r.pending))
            r.pos += len(take)
            r.pending = r.pending[len(take):]
            if not r.pending:
                out.append((r, n - 1))
        b.n_tokens = n
        rc = L.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} (1: the KV cache is full; lower --max-num-seqs or "
                               "--max-model-len)")
        self._counts["steps"] += 1
        if not out:
            return
        logits = torch.from_numpy(np.stack([
            np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, i), shape=(self._n_vocab,)) for _, i in out
        ]).astype(np.float32))
        want = [j for j, (r, _) in enumerate(out) if r.h.params.logprobs is not None]
        if want:  # the model's log-softmax, taken before `sample` masks the logits (as the builtin engine)
            lp, tops = top_logprobs(logits, want, [out[j][0].h.params.logprobs for j in want])
        toks = sample(logits, [r.h for r, _ in out], self._generators, self.eos_ids)
        token_lp = {}
        if want:
            chosen = lp.gather(-1, torch.tensor([toks[j] for j in want])[:, None])[:, 0].tolist()
            token_lp = {j: (chosen[k], tops[k]) for k, j in enumerate(want)}
        for j, ((r, _), t) in enumerate(zip(out, toks)):
            h = r.h
            if h.cancelled:
                self._done(r, h, h.cancel_reason)
                continue
            is_eos = t in self.eos_ids and not h.params.ignore_eos
            if not is_eos:
                if j in token_lp:
                    h.logprobs_out.append(token_lp[j])
                h.emit(t)
                self._counts["generated_tokens"] += 1
            if is_eos:
                self._done(r, h, "stop")
            elif len(h.tokens_out) >= h.params.max_tokens:
                self._done(r, h, "length")
            else:
                r.last = t

    def _done(self, r: _Row | None, h: Handle, reason: str, error: str | None = None) -> None:
        if r is not None and r in self._rows:
            self._rows.remove(r)
            if self.prefix_caching and not r.pending and len(r.prompt) >= PREFIX_MIN_TOKENS:
                # keep its prompt's cells for the next request (the spare sequence holds one prompt)
                self._L.llama_memory_seq_rm(self._mem, self._keep_seq, -1, -1)
                self._L.llama_memory_seq_cp(self._mem, r.seq, self._keep_seq, 0, len(r.prompt))
                self._kept = r.prompt
            self._L.llama_memory_seq_rm(self._mem, r.seq, -1, -1)
            self._free.append(r.seq)
        self._generators.pop(h.id, None)
        key = "cancelled" if reason == "cancelled" else "errors" if reason == "error" else "finished"
        self._counts[key] += 1
        h.finish(reason, error)
        if reason in ("stop", "length"):
            self._recent.append(h.finished - h.submitted)


def _quiet(level, text, user_data) -> None:  # llama.cpp logs every load to stderr; the server logs its own way
    pass


_QUIET = None
if available():
    import llama_cpp as _L

    _QUIET = _L.llama_log_callback(_quiet)
