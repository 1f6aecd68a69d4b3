"""Where a serving step's time goes: one prefill and one decode step of SmolLM2 through `models.decode.Batch`,
with an all-linear LoRA adapter applied four ways, on chat prompts like a short-answer workload's.

Rows: `base` (no adapter), `peft mixed` (peft's per-row `adapter_names` path, how the engine served every batch
before), `peft active` (peft's active-adapter path, one adapter for the whole batch), `merged copy` (the adapter
folded into a copy of the weights, what the engine now runs for a batch of one adapter). Each figure is the
median of --repeat timed calls after a warm-up; `--trace` prints torch.profiler's top ops for a decode step.

Run: `python bench/decode_profile.py [--run RUN] [--rows 1,16] [--trace]` (without --run: a random all-linear
r=16 adapter on the base; the speed is the same as a trained one's).

`--ablation` measures what the decode step's remaining overhead is worth attacking, on the merged copy: a decode
loop of --steps tokens after a prefill, per row count, with (a) the engine's cache (transformers' DynamicCache: every
layer `torch.cat`s its keys and values each step), (b) a preallocated KV buffer that grows by doubling and is written
in place (a static cache that still admits rows of any length), (c) `torch.compile` of the forward (inductor,
dynamic shapes; the compile time is reported apart), (d) `torch.inference_mode` instead of `no_grad`. Each row
is one change from (a); the tokens of every row are checked equal to (a)'s.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _Group:
    """The `group` `Batch` drives: a model, a tokenizer and a forward that picks the adapter path."""

    def __init__(self, model, tokenizer, how: str):
        self.model, self.tokenizer, self.how = model, tokenizer, how

    def forward(self, adapters, **kw):
        import contextlib

        if self.how == "peft mixed":
            kw["adapter_names"] = adapters
        ctx = self.model.disable_adapter() if self.how == "base" else contextlib.nullcontext()
        with ctx:
            return self.model(**kw, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()


class _Seq:
    def __init__(self, i, ids):
        self.id, self.prompt_ids, self.tokens_out = i, ids, []


def timed(fn, repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from tuneforge.models.decode import Batch
    from tuneforge.models.load import load_base

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="A LoRA run dir (default: a random all-linear adapter on --model).")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", default="1,16", help="Batch sizes.")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--trace", action="store_true", help="torch.profiler top ops of a 16-row decode step.")
    ap.add_argument("--ablation", action="store_true", help="Decode-loop ablation on the merged copy (see above).")
    ap.add_argument("--steps", type=int, default=32, help="Decode steps per ablation loop.")
    ap.add_argument("--no-compile", action="store_true", help="Leave out the torch.compile row (minutes of compile).")
    a = ap.parse_args()
    if a.run:
        from tuneforge.run import read_run

        run = read_run(a.run)
        b = load_base(run.info["base"], device="cpu")
        model = PeftModel.from_pretrained(b.model, str(run.adapter), adapter_name="a0").eval()
    else:
        b = load_base(a.model, device="cpu")
        torch.manual_seed(0)
        model = get_peft_model(b.model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                   init_lora_weights=False), adapter_name="a0").eval()
    tok = b.tokenizer
    merged = copy.deepcopy(model).merge_and_unload().eval()
    rows_list = [int(r) for r in a.rows.split(",")]
    qs = [json_prompt(i) for i in range(max(rows_list))]
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"] for q in qs]
    print(f"prompt tokens: mean {statistics.mean(len(i) for i in ids):.0f}; torch threads {torch.get_num_threads()}")
    if a.ablation:
        ablation(merged, tok, ids, rows_list, a.steps, a.repeat, a.no_compile)
        return
    groups = {"base": _Group(model, tok, "base"), "peft mixed": _Group(model, tok, "peft mixed"),
              "peft active": _Group(model, tok, "peft active"), "merged copy": _Group(merged, tok, "merged")}
    print(f"\n{'path':<14}{'rows':>5}{'prefill ms':>12}{'decode ms':>11}{'ms/row-token':>14}")
    out = {}
    for n in rows_list:
        seqs = [_Seq(i, ids[i]) for i in range(n)]
        for name, g in groups.items():
            pre = timed(lambda: Batch.prefill(g, seqs, ["a0"] * n), a.repeat)
            batch, _ = Batch.prefill(g, seqs, ["a0"] * n)

            def step():
                batch.decode(g)

            dec = timed(step, a.repeat)
            out[(name, n)] = (pre, dec)
            print(f"{name:<14}{n:>5}{1000 * pre:>12.1f}{1000 * dec:>11.1f}{1000 * dec / n:>14.2f}", flush=True)
    if a.trace:
        from torch.profiler import ProfilerActivity, profile

        seqs = [_Seq(i, ids[i]) for i in range(16)]
        for name in ("peft mixed", "merged copy"):
            g = groups[name]
            batch, _ = Batch.prefill(g, seqs, ["a0"] * 16)
            batch.decode(g)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    batch.decode(g)
            print(f"\n--- {name}: 3 decode steps, 16 rows ---")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def _growing_layer():
    """A cache layer (transformers' DynamicLayer interface) with a preallocated buffer written in place; capacity
    doubles when full."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        n = 0

        def update(self, k, v, *args, **kwargs):
            return _grow_update(self, k, v)

        def get_seq_length(self) -> int:
            return self.n

    return GrowingLayer()


def _grow_update(layer, k, v):
    """Write this step's keys and values into the layer's buffer; return the filled part (a view, no copy)."""
    import torch

    need = layer.n + k.shape[-2]
    if not layer.is_initialized:
        layer.is_initialized = True
        layer.bk = k.new_empty((*k.shape[:2], max(need * 2, 64), k.shape[-1]))
        layer.bv = torch.empty_like(layer.bk)
    elif need > layer.bk.shape[2]:
        layer.bk = torch.cat([layer.bk, torch.empty_like(layer.bk)], dim=2)
        layer.bv = torch.cat([layer.bv, torch.empty_like(layer.bv)], dim=2)
    layer.bk[:, :, layer.n:need] = k
    layer.bv[:, :, layer.n:need] = v
    layer.n = need
    layer.keys, layer.values = layer.bk[:, :, :need], layer.bv[:, :, :need]
    return layer.keys, layer.values


def ablation(model, tok, ids: list, rows_list: list[int], steps: int, repeat: int,
             no_compile: bool = False) -> None:
    """Decode-loop time per step on the merged copy, one change at a time (see the module docstring)."""

    import torch
    from transformers import DynamicCache

    from tuneforge.models.decode import cache_kw

    kw_name = cache_kw(model)

    def make_cache(kind: str):
        cache = DynamicCache(config=model.config)
        if kind == "prealloc":
            cache.layers = [_growing_layer() for _ in cache.layers]
        return cache

    def loop(fwd, n: int, kind: str, mode) -> tuple[float, float, list]:
        width = max(len(x) for x in ids[:n])
        pad = tok.pad_token_id or 0
        inp = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i in range(n):
            inp[i, width - len(ids[i]):] = torch.tensor(ids[i])
            mask[i, width - len(ids[i]):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = make_cache(kind)
        with mode():
            t0 = time.perf_counter()
            logits = fwd(input_ids=inp, attention_mask=mask, position_ids=pos, **{kw_name: cache})
            t1 = time.perf_counter()
            nxt, out, p = logits.argmax(-1), [], mask.sum(-1)
            for _ in range(steps):
                out.append(nxt)
                mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
                logits = fwd(input_ids=nxt[:, None], attention_mask=mask, position_ids=p[:, None],
                             **{kw_name: cache})
                p = p + 1
                nxt = logits.argmax(-1)
            t2 = time.perf_counter()
        return t1 - t0, (t2 - t1) / steps, torch.stack(out, 1).tolist()

    def eager(**kw):
        return model(**kw, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()

    variants = [("(a) DynamicCache, no_grad (the engine)", eager, "dynamic", torch.no_grad),
                ("(b) preallocated KV buffer", eager, "prealloc", torch.no_grad),
                ("(d) inference_mode", eager, "dynamic", torch.inference_mode)]
    try:
        if no_compile:
            raise RuntimeError("--no-compile")
        compiled = torch.compile(model, dynamic=True)

        def comp(**kw):
            return compiled(**kw, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()

        variants.insert(2, ("(c) torch.compile (inductor, dynamic)", comp, "dynamic", torch.no_grad))
    except Exception as e:  # noqa: BLE001 - report, do not stop the other rows
        print(f"torch.compile unavailable: {type(e).__name__}: {e}")
    print(f"\n{'variant':<42}{'rows':>5}{'prefill ms':>12}{'step ms':>10}{'vs (a)':>8}  tokens = (a)")
    for n in rows_list:
        live, warm = [], {}
        for v in variants:  # warm-up (and the compile, for (c)); a variant that fails is reported and dropped
            try:
                t0 = time.perf_counter()
                loop(v[1], n, v[2], v[3])
                warm[v[0]] = time.perf_counter() - t0
                live.append(v)
            except Exception as e:  # noqa: BLE001
                print(f"{v[0]:<42}{n:>5}  failed: {type(e).__name__}: {str(e)[:120]}")
        runs = {v[0]: [] for v in live}
        for _ in range(repeat):  # interleaved, so a drift of the machine does not favour the first variant
            for name, fwd, kind, mode in live:
                runs[name].append(loop(fwd, n, kind, mode))
        base_step, base_toks = None, None
        for name, fwd, kind, mode in live:
            pre = statistics.median(r[0] for r in runs[name])
            step = statistics.median(r[1] for r in runs[name])
            toks = runs[name][0][2]
            if base_step is None:
                base_step, base_toks = step, toks
            extra = f" (first loop {warm[name]:.1f} s incl. compile)" if fwd is not eager else ""
            print(f"{name:<42}{n:>5}{1000 * pre:>12.1f}{1000 * step:>10.2f}{base_step / step:>7.2f}x  "
                  f"{toks == base_toks}{extra}", flush=True)


def json_prompt(i: int) -> str:
    import json

    rows = [json.loads(line)["prompt"] for line in (ROOT / "examples/sql/test.jsonl").read_text().splitlines()]
    return rows[i % len(rows)]


if __name__ == "__main__":
    main()
