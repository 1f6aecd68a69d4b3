"""Training speed: tuneforge vs the guide's recipe (peft + transformers Trainer) vs TRL SFTTrainer, same machine.

Run: `python bench/train_speed.py [--model smollm2-135m-instruct] [--steps 30] [--repeats 2] [--json F]`
(`--tiny` for a seconds-long smoke run). Each contender runs in its own process, order alternating per repeat.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = ["tuneforge", "hf", "trl"]
# `--ablation`: tuneforge with one of its speed-ups turned off each, to show what each is worth
ABLATIONS = ["tf-all-logits", "tf-mask-attn", "tf-padded"]
LABEL = {"tuneforge": "tuneforge train()", "hf": "guide: peft+Trainer", "trl": "TRL SFTTrainer",
         "tf-all-logits": "tf: all-pos. logits", "tf-mask-attn": "tf: T×T mask attn", "tf-padded": "tf: padded rows"}
LORA = dict(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], lora_dropout=0.05, bias="none")
MAX_SEQ_LEN = 2048  # no example is truncated by any contender (the tiny byte-level model has long rows)

# What each contender runs with that is not its own default (printed with the results).
NON_DEFAULTS = {
    "tuneforge": "val_split=0, eval_steps=save_steps=steps+1, early_stopping_patience=0 (no mid-run eval or "
                 "checkpoint), warmup_steps set, max_seq_len=2048, seed; everything else default (packing on)",
    "hf": "bf16=False fp16=False (fp32, as the others), report_to=none, save_strategy=no, disable_tqdm, "
          "model loaded with dtype=float32; lr/warmup/weight_decay/seed as the others",
    "trl": "bf16=False (TRL's default bf16=True refuses a CPU-only machine without use_cpu=True, and was >10x "
           "slower in a trial), gradient_checkpointing=False (TRL default "
           "True: ~1.3x more compute; off so all do the same maths), per_device_train_batch_size=1 with "
           "max_length = batch x mean example length (packing counts packed rows, not examples), report_to=none, "
           "save_strategy=no, disable_tqdm; learning_rate set (TRL default 2e-5). TRL also puts loss on the newline "
           "after <|im_end|> (~1 more supervised token per example than the others)",
    "tf-all-logits": "as tuneforge, but the output layer and cross-entropy run at every position (as a plain "
                     "transformers forward with labels does), not only at supervised ones",
    "tf-mask-attn": "as tuneforge, but packed rows use transformers' own SDPA with a block-diagonal T x T mask "
                    "(built from position_ids) instead of one causal SDPA call per example",
    "tf-padded": "as tuneforge, but packing=false: padded rows (dynamic padding per micro-batch)",
}


# ----------------------------------------------------------------------------------------------- data
def sql_rows_fallback(n: int, seed: int) -> list[dict]:
    """Short text-to-SQL rows like examples/sql (used only if that file is missing)."""
    r = random.Random(seed)
    tables = {"users": ["name", "email", "country"], "products": ["name", "category", "price", "stock"],
              "orders": ["user_id", "quantity", "total", "status"]}
    rows = []
    for _ in range(n):
        t = r.choice(list(tables))
        c1, c2 = r.sample(tables[t], 2)
        k = r.randint(2, 20)
        rows.append(r.choice([
            {"prompt": f"Translate to SQL: Show all {t}", "completion": f"SELECT * FROM {t};"},
            {"prompt": f"Translate to SQL: List {c1} and {c2} of every row in {t}",
             "completion": f"SELECT {c1}, {c2} FROM {t};"},
            {"prompt": f"Translate to SQL: Show the top {k} {t} by {c1}",
             "completion": f"SELECT * FROM {t} ORDER BY {c1} DESC LIMIT {k};"},
            {"prompt": f"Translate to SQL: How many {t} are there?", "completion": f"SELECT COUNT(*) FROM {t};"}]))
    return rows


TOPICS = ["deploying a web service", "onboarding a new engineer", "migrating a database", "planning a vegetable garden",
          "preparing for a half marathon", "auditing cloud costs", "writing a grant proposal",
          "organising a small conference", "moving to a new flat", "running a code review", "launching a newsletter",
          "setting up a home network", "training a support team", "closing the books at month end",
          "publishing an open-source library", "renovating a kitchen"]
VERBS = ["check", "review", "document", "measure", "compare", "schedule", "test", "back up", "label", "confirm",
         "archive", "estimate", "share", "update", "clean up", "prioritise"]
NOUNS = ["inventory", "requirements", "budget", "timeline", "access list", "test plan", "backups", "dependencies",
         "risks", "metrics", "contact sheet", "open questions", "supplier quotes", "release notes", "floor plan"]
TAILS = ["before the first milestone", "with the whole team", "at the end of each week", "using the shared template",
         "so that nothing is missed later", "and record the result in the log", "against last year's figures",
         "with a second person watching", "in the order they were agreed", "while the details are still fresh"]


def long_rows(n: int, seed: int) -> list[dict]:
    """Longer answers (~100-300 tokens): deterministic numbered checklists from a small grammar."""
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        topic, k = r.choice(TOPICS), r.randint(4, 11)
        items = [f"{i}. {r.choice(VERBS).capitalize()} the {r.choice(NOUNS)} {r.choice(TAILS)}; then "
                 f"{r.choice(VERBS)} the {r.choice(NOUNS)} {r.choice(TAILS)}." for i in range(1, k + 1)]
        rows.append({"prompt": f"Write a {k}-step checklist for {topic}.",
                     "completion": f"Here is a {k}-step checklist for {topic}:\n" + "\n".join(items)
                     + "\nWork through the steps in order and tick each one off."})
    return rows


def build_data(d: Path, seed: int) -> tuple[Path, Path, str]:
    sql = ROOT / "examples/sql"
    if (sql / "train.jsonl").is_file() and (sql / "val.jsonl").is_file():
        read = lambda p: [json.loads(x) for x in p.read_text().splitlines() if x.strip()]  # noqa: E731
        tr_sql, va_sql, src = read(sql / "train.jsonl"), read(sql / "val.jsonl"), "examples/sql"
    else:
        tr_sql, va_sql, src = sql_rows_fallback(600, seed), sql_rows_fallback(60, seed + 1), "generated SQL rows"
    train = tr_sql + long_rows(150, seed + 2)
    val = va_sql + long_rows(20, seed + 3)
    tp, vp = d / "train.jsonl", d / "val.jsonl"
    tp.write_text("".join(json.dumps(x) + "\n" for x in train))
    vp.write_text("".join(json.dumps(x) + "\n" for x in val))
    return tp, vp, f"{len(tr_sql)} SQL ({src}) + 150 long-answer train rows; {len(va_sql)} + 20 val rows"


def encode_file(path: str, tok) -> list:
    """The data every contender trains/evaluates on: tuneforge's own loader and encode (chat template, mask)."""
    from tuneforge.data.load import load_samples
    from tuneforge.data.tokenize import encode

    return [encode(s, tok, max_seq_len=MAX_SEQ_LEN) for s in load_samples(path)]


# ------------------------------------------------------------------------------------ shared measures
def peak_matmul_flops(n: int = 2048, trials: int = 5, iters: int = 4) -> float:
    """Best fp32 matmul FLOP/s on this machine (all of torch's threads): the MFU denominator."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        best = max(best, 2 * n ** 3 * iters / (time.perf_counter() - t0))
    return best


def rss_now() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used so far (psutil: total minus idle/iowait)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def batch_stats(input_ids, labels, attention_mask, position_ids, label_shifted: bool) -> dict:
    """Token counts of one micro-batch, whatever its layout (padded rows or one packed row)."""
    if attention_mask is not None:
        lens = [int(x) for x in attention_mask.sum(-1).tolist()]
    else:
        pos = position_ids.reshape(-1)
        starts = (pos == 0).nonzero().flatten().tolist() + [pos.numel()]
        lens = [b - a for a, b in zip(starts, starts[1:]) if b > a]
    sup = labels != -100
    if not label_shifted:
        sup = sup[..., 1:]  # an unshifted label at a row's first position is never predicted
    return {"examples": len(lens), "tokens": sum(lens), "computed": int(input_ids.numel()),
            "supervised": int(sup.sum()), "sum_len_sq": sum(n * n for n in lens)}


def model_shape(model) -> dict:
    """Parameter counts for the FLOP model: body (no embeddings/lm_head), LoRA, vocab, width, layers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    total = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    emb = base.get_input_embeddings().weight
    out = base.get_output_embeddings().weight
    head = 0 if out is emb else out.numel()
    lora = sum(p.numel() for n, p in base.named_parameters() if "lora_" in n)
    cfg = base.config
    return {"n_body": total - emb.numel() - head, "n_lora": lora, "vocab": emb.shape[0],
            "d_model": cfg.hidden_size, "layers": cfg.num_hidden_layers,
            "d_attn": cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)}


def useful_flops(shape: dict, stats: list[dict]) -> float:
    """Useful training FLOPs of LoRA fine-tuning, one definition for every contender:
    per real (non-pad) token 4*N_body (forward 2N + activation gradients 2N; frozen weights get no weight
    gradient) + 6*N_lora; per supervised token 4*V*d (lm_head forward + its input gradient; tied/frozen);
    per example of n tokens causal attention 6*L*d_attn*n^2 (QK^T and AV on the causal half, backward 2x).
    Padding, lm_head rows at unsupervised positions and attention across packed neighbours are not useful."""
    tok = sum(s["tokens"] for s in stats)
    sup = sum(s["supervised"] for s in stats)
    sq = sum(s["sum_len_sq"] for s in stats)
    return ((4 * shape["n_body"] + 6 * shape["n_lora"]) * tok + 4 * shape["vocab"] * shape["d_model"] * sup
            + 6 * shape["layers"] * shape["d_attn"] * sq)


def val_loss(model, val: list, pad_id: int, batch: int = 8) -> float:
    """Mean CE per supervised token on the held-out set: one plain padded forward for every contender
    (rows sorted by length so padding is small; output layer at supervised positions only, to keep it cheap)."""
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model.eval()
    rows = sorted(val, key=lambda e: len(e.input_ids))
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            width = max(len(e.input_ids) for e in chunk)
            ids = torch.full((len(chunk), width), pad_id)
            tgt = torch.full((len(chunk), width), -100)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, e in enumerate(chunk):
                ids[j, :len(e.input_ids)] = torch.tensor(e.input_ids)
                tgt[j, :len(e.labels) - 1] = torch.tensor(e.labels[1:])
                mask[j, :len(e.input_ids)] = 1
            h = base.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            sup = tgt != -100
            logits = base.get_output_embeddings()(h[sup]).float()
            tot += float(F.cross_entropy(logits, tgt[sup], reduction="sum"))
            n += int(sup.sum())
    return tot / max(n, 1)


def cpu_s() -> float:
    """CPU seconds of this process, all threads: with the loop's wall time it shows whether we got the cores."""
    return time.process_time()


# ------------------------------------------------------------------------------------------ contenders
def run_tuneforge(spec: dict, ablation: str | None = None) -> dict:
    import contextlib

    from tuneforge.config import TrainConfig
    from tuneforge.train import recipe
    from tuneforge.train.recipe import micro_batch, prepare, train

    out = Path(tempfile.mkdtemp(prefix="tuneforge-", dir=spec["work"])) / "run"
    cfg = TrainConfig(base=spec["model"], method="lora", data=spec["train"], val_split=0.0, output=str(out),
                      max_steps=spec["steps"], per_device_train_batch_size=spec["batch"],
                      gradient_accumulation_steps=1, learning_rate=spec["lr"], warmup_steps=spec["warmup"],
                      weight_decay=0.01, lr_scheduler_type="linear", max_grad_norm=1.0,
                      logging_steps=spec["logging_steps"], eval_steps=spec["steps"] + 1,
                      save_steps=spec["steps"] + 1, early_stopping_patience=0, seed=spec["seed"],
                      max_seq_len=MAX_SEQ_LEN, lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                      lora_dropout=LORA["lora_dropout"], target_modules=LORA["target_modules"],
                      lora_bias=LORA["bias"], packing=ablation != "tf-padded")
    p = prepare(cfg)  # model load, tokenization, LoRA wrap: setup, not timed
    if ablation == "tf-all-logits":
        p.model._tf_generic_loss = True  # loss.py's generic path: full logits, standard CE
    if ablation == "tf-mask-attn":  # plain SDPA: transformers detects the packed row from position_ids
        recipe.packed_attention = lambda model, enabled=True: contextlib.nullcontext(model)
    rss0, c0 = rss_now(), cpu_s()
    t0 = time.perf_counter()
    train(cfg, progress=False, prepared=p)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    peak = rss_peak()
    info = json.loads((out / "run.json").read_text())
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    stats = []
    for i in range(spec["steps"]):  # the exact micro-batches the loop ran (data order is stateless)
        b = micro_batch(p, i)
        stats.append(batch_stats(b["input_ids"], b["targets"], b["attention_mask"], b["position_ids"], True))
    stats_lm = sum(s["supervised"] for s in stats)  # lm_head runs at supervised positions only (loss.py)
    val = encode_file(spec["val"], p.base.tokenizer)
    return {"loop_s": info["train_seconds"], "wall_s": wall, "cpu_s": cpu, "rss_before_train": rss0, "peak_rss": peak,
            "stats": stats, "lm_head_rows": stats_lm, "shape": model_shape(p.model),
            "final_train_loss": next((r["loss"] for r in reversed(logs) if "loss" in r), None),
            "val_loss": val_loss(p.model, val, p.base.tokenizer.pad_token_id)}


class _Recorder:
    """Wraps a data collator and records the token counts of every batch it builds."""

    def __init__(self, fn):
        self.fn, self.stats = fn, []

    def __call__(self, features):
        b = self.fn(features)
        self.stats.append(batch_stats(b["input_ids"], b["labels"], b.get("attention_mask"), b.get("position_ids"),
                                      False))
        return b

    def __getattr__(self, name):
        return getattr(self.fn, name)


def _timer_callback():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        """Loop time: on_train_begin → the last optimizer step's end (data fetch and logging included)."""

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = self.t_end = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.t_end = time.perf_counter()

    return Timer()


def _load_hf(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models.load import resolve

    path = str(resolve(spec["model"]))
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tok


def _common_args(spec: dict) -> dict:
    return dict(output_dir=tempfile.mkdtemp(dir=spec["work"]), max_steps=spec["steps"], learning_rate=spec["lr"],
                warmup_steps=spec["warmup"], weight_decay=0.01, lr_scheduler_type="linear", max_grad_norm=1.0,
                logging_steps=spec["logging_steps"], seed=spec["seed"], bf16=False, fp16=False, report_to="none",
                save_strategy="no", eval_strategy="no", disable_tqdm=True)


def _finish_trainer(trainer, timer, rec, spec, tok, t0, c0) -> dict:
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    peak = rss_peak()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    model = trainer.model
    return {"loop_s": timer.t_end - timer.t0, "wall_s": wall, "cpu_s": cpu, "peak_rss": peak,
            "stats": rec.stats[:spec["steps"]], "shape": model_shape(model),
            "final_train_loss": logs[-1]["loss"] if logs else None,
            "val_loss": val_loss(model, encode_file(spec["val"], tok), tok.pad_token_id)}


def run_hf(spec: dict) -> dict:
    """The guide's recipe as written: get_peft_model + Trainer + DataCollatorForSeq2Seq (dynamic padding)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    set_seed(spec["seed"])
    model, tok = _load_hf(spec)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))
    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
            for e in encode_file(spec["train"], tok)]
    args = TrainingArguments(per_device_train_batch_size=spec["batch"], **_common_args(spec))
    rec = _Recorder(DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    timer = _timer_callback()
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=rec,
                      callbacks=[timer])
    rss0, c0 = rss_now(), cpu_s()
    t0 = time.perf_counter()
    trainer.train()
    res = _finish_trainer(trainer, timer, rec, spec, tok, t0, c0)
    res["rss_before_train"] = rss0
    res["lm_head_rows"] = sum(s["computed"] for s in res["stats"])  # full logits at every padded position
    return res


def run_trl(spec: dict) -> dict:
    """TRL SFTTrainer: conversational prompt/completion, packing (BFD, padding-free), completion-only loss."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    model, tok = _load_hf(spec)
    rows = [json.loads(x) for x in Path(spec["train"]).read_text().splitlines() if x.strip()]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                             "completion": [{"role": "assistant", "content": r["completion"]}]} for r in rows])
    args = SFTConfig(per_device_train_batch_size=1, max_length=spec["trl_max_length"], packing=True,
                     completion_only_loss=True, gradient_checkpointing=False, **_common_args(spec))
    timer = _timer_callback()
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA), callbacks=[timer])
    rec = trainer.data_collator = _Recorder(trainer.data_collator)
    rss0, c0 = rss_now(), cpu_s()
    t0 = time.perf_counter()
    trainer.train()
    res = _finish_trainer(trainer, timer, rec, spec, tok, t0, c0)
    res["rss_before_train"] = rss0
    res["lm_head_rows"] = sum(s["supervised"] for s in res["stats"])  # TRL's fused head: labelled positions only
    return res


def worker(name: str, spec_path: str, out_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    spec["threads"] = torch.get_num_threads()
    res = run_tuneforge(spec, name) if name in ABLATIONS else {"tuneforge": run_tuneforge, "hf": run_hf,
                                                                "trl": run_trl}[name](spec)
    res["contender"], res["threads"] = name, spec["threads"]
    Path(out_path).write_text(json.dumps(res))


# ------------------------------------------------------------------------------------------ reporting
def summarize(res: dict, peak: float) -> dict:
    st = res["stats"]
    tok, sup, comp = (sum(s[k] for s in st) for k in ("tokens", "supervised", "computed"))
    f = useful_flops(res["shape"], st)
    t = res["loop_s"]
    return {"contender": res["contender"], "steps": len(st),
            "examples_per_step": sum(s["examples"] for s in st) / len(st), "tokens_per_step": tok / len(st),
            "pad_fraction": 1 - tok / comp, "supervised_tokens": sup,
            "tokens": tok, "loop_s": t, "wall_s": res["wall_s"], "supervised_tok_s": sup / t, "tok_s": tok / t,
            "useful_flops": f, "achieved_flop_s": f / t, "mfu": f / t / peak,
            "cpu_util": res["cpu_s"] / max(res["wall_s"] * res["threads"], 1e-9),
            "lm_head_rows_per_step": res["lm_head_rows"] / len(st),
            "peak_rss_mb": res["peak_rss"] / 2**20, "train_rss_mb": (res["peak_rss"] - res["rss_before_train"]) / 2**20,
            "final_train_loss": res["final_train_loss"], "val_loss": res["val_loss"]}


def med(rows: list[dict], k: str) -> float:
    return statistics.median(r[k] for r in rows)


def report(runs: list[dict], meta: dict) -> dict:
    by = {c: [r for r in runs if r["contender"] == c] for c in CONTENDERS + ABLATIONS}
    by = {c: v for c, v in by.items() if v}
    print(f"\nmodel {meta['model']} (fp32, CPU, {meta['threads']} threads); {meta['data']}\n"
          f"LoRA r=16 alpha=32 q_proj,v_proj dropout 0.05; {meta['steps']} optimizer steps x {meta['batch']} "
          f"examples; lr {meta['lr']}, warmup {meta['warmup']}, seed {meta['seed']}; {meta['repeats']} repeat(s), "
          f"medians shown\nmeasured fp32 matmul peak: {meta['peak_flop_s'] / 1e9:.1f} GFLOP/s "
          f"(2048x2048, best of 10, at start and end)\n")
    hdr = (f"{'contender':<21}{'ex/step':>8}{'tok/step':>9}{'pad%':>6}{'loop s':>8}{'sup tok/s':>10}{'tok/s':>8}"
           f"{'GFLOP/s':>8}{'MFU':>7}{'others':>7}{'peak MB':>8}{'+train MB':>10}{'val loss':>9}")
    print(hdr + "\n" + "-" * len(hdr))
    summary = {}
    for c, rows in by.items():
        s = {k: med(rows, k) for k in rows[0] if isinstance(rows[0][k], (int, float)) and rows[0][k] is not None}
        s["per_repeat_supervised_tok_s"] = [round(r["supervised_tok_s"], 1) for r in rows]
        summary[c] = s
        print(f"{LABEL[c]:<21}{s['examples_per_step']:>8.1f}{s['tokens_per_step']:>9.0f}"
              f"{100 * s['pad_fraction']:>5.0f}%{s['loop_s']:>8.1f}{s['supervised_tok_s']:>10.0f}{s['tok_s']:>8.0f}"
              f"{s['achieved_flop_s'] / 1e9:>8.1f}{100 * s['mfu']:>6.1f}%{s['others_cores']:>7.2f}"
              f"{s['peak_rss_mb']:>8.0f}{s['train_rss_mb']:>10.0f}{s['val_loss']:>9.4f}")
    busy = sorted({LABEL[r["contender"]] for r in runs if r["others_cores"] > 0.25})
    if busy:
        print(f"\nWARNING: other processes used > 0.25 of this machine's {meta['cpu_count']} cores while "
              f"{', '.join(busy)} ran ('others' column): throughput figures are unreliable; rerun on a quiet machine")
    print("\nsupervised tok/s per repeat: " + "; ".join(f"{c} {summary[c]['per_repeat_supervised_tok_s']}"
                                                       for c in summary))
    ratios = {}
    if "tuneforge" in summary:
        tf = summary["tuneforge"]
        for c in ("hf", "trl"):
            if c in summary:
                o = summary[c]
                ratios[c] = {"supervised_tok_s": tf["supervised_tok_s"] / o["supervised_tok_s"],
                             "tok_s": tf["tok_s"] / o["tok_s"], "peak_rss": tf["peak_rss_mb"] / o["peak_rss_mb"],
                             "train_rss": tf["train_rss_mb"] / max(o["train_rss_mb"], 1e-9),
                             "val_loss_delta": tf["val_loss"] - o["val_loss"]}
                r = ratios[c]
                print(f"tuneforge / {LABEL[c]}: supervised tok/s {r['supervised_tok_s']:.2f}x, tok/s "
                      f"{r['tok_s']:.2f}x, peak RSS {r['peak_rss']:.2f}x, training RSS growth {r['train_rss']:.2f}x, "
                      f"val loss {r['val_loss_delta']:+.4f}")
        for c in ABLATIONS:
            if c in summary:
                o = summary[c]
                ratios[c] = {"supervised_tok_s": tf["supervised_tok_s"] / o["supervised_tok_s"],
                             "train_rss": tf["train_rss_mb"] / max(o["train_rss_mb"], 1e-9),
                             "val_loss_delta": tf["val_loss"] - o["val_loss"]}
                print(f"tuneforge / {LABEL[c]}: supervised tok/s {ratios[c]['supervised_tok_s']:.2f}x (what that "
                      f"speed-up is worth), training RSS growth {ratios[c]['train_rss']:.2f}x, val loss "
                      f"{ratios[c]['val_loss_delta']:+.4f}")
    print("\nnotes: tok = real (non-pad) tokens; sup = tokens with loss; loop s = the optimizer steps only "
          "(tuneforge: run.json train_seconds; HF/TRL: on_train_begin → last on_step_end); peak MB = process RSS "
          "high-water (model load included), +train MB = its growth during training; val loss = one shared plain "
          "forward, mean CE per supervised token, on the same held-out rows. MFU = useful FLOPs (see "
          "useful_flops(): padding, lm_head rows at unsupervised positions and cross-example attention in a pack "
          "count as waste) / loop s / measured peak. others = cores used by other processes "
          "during the contender's run (machine CPU time minus the contender's own, / its wall time).")
    print("settings that differ from each tool's defaults:")
    for c in summary:
        print(f"  {LABEL[c]}: {NON_DEFAULTS[c]}")
    return {"meta": meta, "summary": summary, "ratios": ratios, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="alias, transformers dir or hub id")
    ap.add_argument("--tiny", action="store_true", help="build a tiny random model (tuneforge.models.tiny): smoke run")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per contender (20 x 2 repeats: ~11 min "
                    "on 2 quiet cores with SmolLM2-135M; 30: ~15 min)")
    ap.add_argument("--batch", type=int, default=8, help="examples per optimizer step")
    ap.add_argument("--repeats", type=int, default=2, help="runs per contender (order alternates)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per contender (0 = torch's default)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma list of tuneforge,hf,trl")
    ap.add_argument("--ablation", action="store_true", help="run tuneforge and its ablations (" +
                    ", ".join(ABLATIONS) + ") instead of the contenders")
    ap.add_argument("--json", default=None, help="write all figures here")
    ap.add_argument("--verbose", action="store_true", help="show the workers' stderr")
    ap.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="train-speed-"))
    try:
        bench(args, work, torch)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(args, work: Path, torch) -> None:
    from tuneforge.models.load import load_tokenizer

    model = args.model
    if args.tiny:
        from tuneforge.models.tiny import save_tiny

        model = str(save_tiny(work / "tiny", hidden_size=64, layers=2))
    train_p, val_p, data_desc = build_data(work, args.seed)
    enc = encode_file(str(train_p), load_tokenizer(model))
    lens = [len(e.input_ids) for e in enc]
    mean_len = sum(lens) / len(lens)
    spec = {"model": model, "train": str(train_p), "val": str(val_p), "steps": args.steps, "batch": args.batch,
            "lr": args.lr, "seed": args.seed, "warmup": math.ceil(0.1 * args.steps),
            "logging_steps": max(1, min(10, args.steps)), "threads": args.threads, "work": str(work),
            # TRL packs rows up to max_length and batches packed rows: one row of ~batch examples per step
            "trl_max_length": max(max(lens), math.ceil(args.batch * mean_len))}
    (work / "spec.json").write_text(json.dumps(spec))
    print(f"data: {len(enc)} train rows, tokens/example mean {mean_len:.0f} (min {min(lens)}, max {max(lens)}), "
          f"supervised/example {sum(e.n_supervised for e in enc) / len(enc):.0f}; TRL pack length "
          f"{spec['trl_max_length']}", file=sys.stderr)
    peak = peak_matmul_flops()  # measured again at the end; the best of both is the peak
    contenders = ["tuneforge", *ABLATIONS] if args.ablation else [c for c in args.contenders.split(",") if c]
    runs = []
    for rep in range(args.repeats):
        k = (rep // 2) % len(contenders)  # reverse every other repeat, rotate every two
        order = contenders[k:] + contenders[:k]
        order = order if rep % 2 == 0 else order[::-1]
        for c in order:
            out = work / f"{c}-{rep}.json"
            t0, busy0, kids0 = time.perf_counter(), machine_busy_s(), children_cpu_s()
            r = subprocess.run([sys.executable, __file__, "--worker", c, str(work / "spec.json"), str(out)],
                               stdout=None if args.verbose else subprocess.PIPE,
                               stderr=None if args.verbose else subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
                                    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"})
            if r.returncode or not out.is_file():
                print(f"{c} (repeat {rep + 1}): FAILED\n{(r.stderr or '')[-3000:]}", file=sys.stderr)
                continue
            wall = time.perf_counter() - t0
            s = summarize(json.loads(out.read_text()), peak)
            # cores used by OTHER processes while this contender ran (its own CPU time subtracted)
            s["others_cores"] = max(0.0, (machine_busy_s() - busy0) - (children_cpu_s() - kids0)) / wall
            s["repeat"] = rep
            runs.append(s)
            print(f"repeat {rep + 1}/{args.repeats} {c}: {s['supervised_tok_s']:.0f} sup tok/s, "
                  f"{s['tok_s']:.0f} tok/s, loop {s['loop_s']:.1f}s (process {time.perf_counter() - t0:.0f}s)",
                  file=sys.stderr)
    peak = max(peak, peak_matmul_flops())
    runs = [{**r, "achieved_flop_s": r["useful_flops"] / r["loop_s"], "mfu": r["useful_flops"] / r["loop_s"] / peak}
            for r in runs]
    meta = {"model": args.model if not args.tiny else "tiny (tuneforge.models.tiny)", "steps": args.steps,
            "batch": args.batch, "lr": args.lr, "warmup": spec["warmup"], "seed": args.seed,
            "repeats": args.repeats, "threads": torch.get_num_threads(), "peak_flop_s": peak, "data": data_desc,
            "mean_tokens_per_example": mean_len, "trl_max_length": spec["trl_max_length"],
            "non_defaults": NON_DEFAULTS, "cpu_count": os.cpu_count()}
    if not runs:
        sys.exit("no contender finished")
    out = report(runs, meta)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
