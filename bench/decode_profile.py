"""Where a serving step's time goes: one prefill and one decode step of SmolLM2 through `models.decode.Batch`,
with an all-linear LoRA adapter applied four ways, on chat prompts like a short-answer workload's.

Rows: `base` (no adapter), `peft mixed` (peft's per-row `adapter_names` path, how the engine served every batch
before), `peft active` (peft's active-adapter path, one adapter for the whole batch), `merged copy` (the adapter
folded into a copy of the weights, what the engine now runs for a batch of one adapter). Each figure is the
median of --repeat timed calls after a warm-up; `--trace` prints torch.profiler's top ops for a decode step.

Run: `python bench/decode_profile.py [--run RUN] [--rows 1,16] [--trace]` (without --run: a random all-linear
r=16 adapter on the base; the speed is the same as a trained one's).
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


def json_prompt(i: int) -> str:
    import json

    rows = [json.loads(line)["prompt"] for line in (ROOT / "examples/sql/test.jsonl").read_text().splitlines()]
    return rows[i % len(rows)]


if __name__ == "__main__":
    main()
