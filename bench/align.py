"""Alignment bench: tuneforge's DPO and GRPO against TRL's DPOTrainer and GRPOTrainer, same machine, same settings.

Same base, LoRA (r 16, alpha 32, all linear layers, dropout 0.05), learning rate, batch, steps, beta and (GRPO)
group size, temperature, answer budget and grader; fp32 on CPU; each contender in its own process (its peak RSS is
its own). Printed per contender: training wall time, seconds per step, peak RSS, and the held-out metric, computed
by this script the same way for both adapters:
- DPO: held-out preference accuracy (share of test pairs whose implicit reward, policy minus reference
  log-probability of the answer, prefers the preferred answer; reference = the adapter disabled) and the share of
  greedy answers in the preferred style (`^Answer: ...\\.$`, examples/preference/make_style_prefs.py);
- GRPO: the grader's mean score of greedy answers to held-out prompts.

Run:   python bench/align.py                         # SmolLM2, DPO 30 steps x 8 pairs, GRPO 8 steps x 8 answers
       python bench/align.py --tiny DIR              # a tiny random model directory: plumbing only (seconds)
Figures: bench/RESULTS.md ("Alignment vs TRL").
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
STYLE = re.compile(r"^Answer: [^\n]{1,40}\.$")


# ------------------------------------------------------------------------------------------------- contenders
def tuneforge_dpo(spec: dict, out: Path) -> None:
    from tuneforge.config import load_config
    from tuneforge.train.recipe import train

    cfg = load_config(None, {**_tf_common(spec, out), "objective": "dpo", "data": spec["dpo_train"],
                             "learning_rate": spec["dpo_lr"], "beta": spec["beta"],
                             "per_device_train_batch_size": spec["dpo_batch"], "max_steps": spec["dpo_steps"]})
    train(cfg, progress=False)


def tuneforge_grpo(spec: dict, out: Path) -> None:
    from tuneforge.config import load_config
    from tuneforge.train.recipe import train

    cfg = load_config(None, {**_tf_common(spec, out), "objective": "grpo", "data": spec["grpo_train"],
                             "grader": spec["grader"], "learning_rate": spec["grpo_lr"],  # beta: 0 by default
                             "num_generations": spec["G"], "per_device_train_batch_size": spec["G"],
                             "max_completion_length": spec["max_completion"], "temperature": spec["temperature"],
                             "max_steps": spec["grpo_steps"]})
    train(cfg, progress=False)


def _warmup(spec: dict, out: Path) -> int:
    """10% of the run's steps (TRL 1.x dropped warmup_ratio from GRPOConfig: both sides get the same count)."""
    return max(1, round(0.1 * (spec["dpo_steps"] if "dpo" in out.name.lower() else spec["grpo_steps"])))


def _tf_common(spec: dict, out: Path) -> dict:
    n = 10 ** 6  # no mid-run validation or checkpoint: TRL runs without them too
    return {"output": str(out), "base": spec["base"], "method": "lora", "lora_r": LORA["r"],
            "lora_alpha": LORA["lora_alpha"], "lora_dropout": LORA["lora_dropout"],
            "target_modules": LORA["target_modules"], "val_split": 0, "eval_steps": n, "save_steps": n,
            "early_stopping_patience": 0, "seed": 42, "warmup_steps": _warmup(spec, out),
            "lr_scheduler_type": "linear"}


def _trl_common(spec: dict, out: Path) -> dict:
    return dict(output_dir=str(out), use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[],
                save_strategy="no", logging_steps=1000, disable_tqdm=True, seed=42, warmup_steps=_warmup(spec, out),
                lr_scheduler_type="linear", weight_decay=0.01, max_grad_norm=1.0)


def _hf(spec: dict):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = spec["base_path"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    peft_cfg = LoraConfig(task_type="CAUSAL_LM", bias="none", **LORA)
    return model, tok, peft_cfg


def trl_dpo(spec: dict, out: Path) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tok, peft_cfg = _hf(spec)
    rows = [{"prompt": r["input"]["messages"], "chosen": r["preferred_output"],
             "rejected": r["non_preferred_output"]} for r in _jsonl(spec["dpo_train"])]
    args = DPOConfig(**_trl_common(spec, out), per_device_train_batch_size=spec["dpo_batch"],
                     max_steps=spec["dpo_steps"], learning_rate=spec["dpo_lr"], beta=spec["beta"], max_length=512)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_cfg)
    trainer.train()
    trainer.model.save_pretrained(out / "adapter")


def trl_grpo(spec: dict, out: Path) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tuneforge import graders

    model, tok, peft_cfg = _hf(spec)
    grader = graders.build(graders.load(spec["grader"]))
    rows = [{"prompt": r["messages"], "item": json.dumps({k: v for k, v in r.items() if k != "messages"})}
            for r in _jsonl(spec["grpo_train"])]

    def reward(prompts, completions, item, **_):  # the same grader as tuneforge's run, on the same rows
        texts = [c[-1]["content"].strip() if isinstance(c, list) else str(c).strip() for c in completions]
        res = grader.grade([graders.sample_from_text(t) for t in texts], [json.loads(i) for i in item])
        return [r.score for r in res]

    args = GRPOConfig(**_trl_common(spec, out), per_device_train_batch_size=spec["G"],
                      num_generations=spec["G"], max_completion_length=spec["max_completion"],
                      temperature=spec["temperature"], beta=0.0, epsilon=0.2, learning_rate=spec["grpo_lr"],
                      max_steps=spec["grpo_steps"])
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tok, peft_config=peft_cfg)
    trainer.train()
    trainer.model.save_pretrained(out / "adapter")
    grader.close()


CONTENDERS = {"tuneforge dpo": tuneforge_dpo, "TRL DPOTrainer": trl_dpo,
              "tuneforge grpo": tuneforge_grpo, "TRL GRPOTrainer": trl_grpo}


# ------------------------------------------------------------------------------------------------- metrics
def _jsonl(path: str) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def _tuned(spec: dict, adapter: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["base_path"])
    base = AutoModelForCausalLM.from_pretrained(spec["base_path"], dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter)).eval(), tok


def _prompt_ids(tok, messages: list[dict]) -> list[int]:
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)


def _answer_logp(model, tok, messages: list[dict], answer: str) -> float:
    import torch

    p = _prompt_ids(tok, messages)
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True,
                                   return_dict=False)
    ids = torch.tensor([full])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    tgt = ids[0, 1:]
    return float(logp[torch.arange(len(p) - 1, len(full) - 1), tgt[len(p) - 1:]].sum())


def _greedy(model, tok, messages: list[dict], max_new: int) -> str:
    import torch

    ids = torch.tensor([_prompt_ids(tok, messages)])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                         do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def dpo_metric(spec: dict, adapter: Path) -> dict:
    import torch

    model, tok = _tuned(spec, adapter)
    rows, wins, styled = _jsonl(spec["dpo_test"])[: spec["n_test"]], 0, 0
    with torch.no_grad():
        for r in rows:
            msgs, good, bad = r["input"]["messages"], r["preferred_output"][-1]["content"], \
                r["non_preferred_output"][-1]["content"]
            pol = [_answer_logp(model, tok, msgs, a) for a in (good, bad)]
            with model.disable_adapter():
                ref = [_answer_logp(model, tok, msgs, a) for a in (good, bad)]
            wins += (pol[0] - ref[0]) > (pol[1] - ref[1])
            styled += bool(STYLE.match(_greedy(model, tok, msgs, 24)))
    return {"preference_accuracy": wins / len(rows), "style_share": styled / len(rows), "n": len(rows)}


def grpo_metric(spec: dict, adapter: Path) -> dict:
    import torch

    from tuneforge import graders

    model, tok = _tuned(spec, adapter)
    rows = _jsonl(spec["grpo_test"])[: spec["n_test"]]
    with torch.no_grad():
        texts = [_greedy(model, tok, r["messages"], spec["max_completion"]) for r in rows]
    with graders.build(graders.load(spec["grader"])) as g:
        res = g.grade([graders.sample_from_text(t) for t in texts],
                      [{k: v for k, v in r.items() if k != "messages"} for r in rows])
    return {"grader_mean": sum(r.score for r in res) / len(res), "n": len(rows)}


# ------------------------------------------------------------------------------------------------- driver
def worker(name: str, spec_path: str, out: str) -> None:
    """One contender in this process: train (timed), then the held-out metric (not timed)."""
    import torch

    spec = json.loads(Path(spec_path).read_text())
    torch.manual_seed(42)
    torch.set_num_threads(spec["threads"])
    from tuneforge.cli import quiet_libraries

    quiet_libraries()
    run = Path(out)
    t0 = time.perf_counter()
    CONTENDERS[name](spec, run)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    adapter = run / "adapter"
    metric = (dpo_metric if "dpo" in name.lower() else grpo_metric)(spec, adapter)
    steps = spec["dpo_steps"] if "dpo" in name.lower() else spec["grpo_steps"]
    (run / "bench.json").write_text(json.dumps({"name": name, "train_s": wall, "s_per_step": wall / steps,
                                                "peak_rss_gb": rss / 2**30, "steps": steps, **metric}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--tiny", default=None, help="A tiny model directory instead (plumbing check: seconds).")
    ap.add_argument("--dpo-steps", type=int, default=30)
    ap.add_argument("--grpo-steps", type=int, default=8)
    ap.add_argument("--n-test", type=int, default=40, help="Held-out pairs / prompts scored per contender.")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--work", default=None)
    ap.add_argument("--worker", nargs=3, metavar=("NAME", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    import torch

    from tuneforge.models.load import resolve

    work = Path(args.work or tempfile.mkdtemp(prefix="tuneforge-bench-align-"))
    pref = work / "pref"
    subprocess.run([sys.executable, str(ROOT / "examples/preference/make_style_prefs.py"), "--train", "240",
                    "--test", "100", "--output", str(pref)], check=True, capture_output=True)
    base = args.tiny or args.base
    spec = {"base": base, "base_path": str(resolve(base)) if not args.tiny else args.tiny,
            "dpo_train": str(pref / "prefs.train.jsonl"), "dpo_test": str(pref / "prefs.test.jsonl"),
            "grpo_train": str(ROOT / "examples/reinforcement/pick.train.jsonl"),
            "grpo_test": str(ROOT / "examples/reinforcement/pick.test.jsonl"),
            "grader": str(ROOT / "examples/reinforcement/pick_grader.json"),
            "dpo_steps": 2 if args.tiny else args.dpo_steps, "grpo_steps": 1 if args.tiny else args.grpo_steps,
            "dpo_batch": 8, "dpo_lr": 5e-5, "beta": 0.1, "G": 8, "max_completion": 32, "temperature": 0.5,
            "grpo_lr": 2e-4, "n_test": 4 if args.tiny else args.n_test, "threads": torch.get_num_threads()}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    results = []
    for name in args.contenders.split(","):
        out = work / name.replace(" ", "-")
        shutil.rmtree(out, ignore_errors=True)
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        r = subprocess.run([sys.executable, __file__, "--worker", name, str(spec_path), str(out)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads((out / "bench.json").read_text()))
    print(f"\nbase {base}; {spec['threads']} threads; fp32; LoRA r16/alpha32 all-linear; DPO {spec['dpo_steps']} "
          f"steps x {spec['dpo_batch']} pairs, lr {spec['dpo_lr']:g}, beta {spec['beta']}; GRPO "
          f"{spec['grpo_steps']} steps x 1 prompt x {spec['G']} answers (<= {spec['max_completion']} tokens, "
          f"T {spec['temperature']}), lr {spec['grpo_lr']:g}; held-out: {spec['n_test']} rows\n")
    print("| contender | train s | s/step | speed vs TRL | peak RSS GB | held-out metric |")
    print("|---|---|---|---|---|---|")
    for r in results:
        trl = next((x for x in results if x["name"].startswith("TRL") and
                    ("DPO" in x["name"]) == ("dpo" in r["name"].lower())), None)
        ratio = f"{trl['train_s'] / r['train_s']:.2f}x" if trl else "–"
        metric = (f"pref. accuracy {r['preference_accuracy']:.3f}, style {r['style_share']:.2f}"
                  if "preference_accuracy" in r else f"grader mean {r['grader_mean']:.3f}")
        print(f"| {r['name']} | {r['train_s']:.0f} | {r['s_per_step']:.2f} | {ratio} | {r['peak_rss_gb']:.2f} | "
              f"{metric} |")


if __name__ == "__main__":
    main()
