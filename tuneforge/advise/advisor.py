"""The guide's "When to Fine-Tune", answered from the data: go / no-go / maybe, a method and starting
hyperparameters, each with a one-line reason and the evidence behind it.

Run: `tuneforge advise DATA [--base M] [--task "..."] [--json] [--write-config FILE]`; in code `advise(path)`.
Evidence: size against the guide's 1,000 examples (counting distinct examples), the data checks of `data check`
(format consistency, duplicates, label balance), prompt diversity, token lengths against the base's context,
a measured zero-shot score of the base on a small sample, and whether answers are copied from the prompts or
come from a small set (a prompt, a rule or retrieval may do).
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.config import DEFAULT_BASE, TrainConfig
from tuneforge.data.formats import Sample, near_key, near_dup_text
from tuneforge.data.validate import GUIDE_MIN_EXAMPLES, IMBALANCE_RATIO, check_file
from tuneforge.errors import ConfigError, TuneforgeError

TINY = 100  # distinct examples below which fine-tuning is not worth trying (far under the guide's 1,000)
DUPLICATE_RATE = 0.10  # share of rows repeating another (exact or near) that over-weights those examples
LOW_DIVERSITY = 0.05  # distinct bigrams / bigrams over all prompts; templated SQL questions score ~0.15
SOLVED, PARTLY = 0.80, 0.50  # zero-shot score of the base: already solved / partly solved
COPIED = 0.50  # share of examples whose answer is (almost) all in the prompt: extraction, not generation
FEW_ANSWERS = 0.10  # distinct answers / examples at or under this: a lookup over known answers may do
TOKEN_SAMPLE = 5000  # examples tokenized for length statistics (sampled when the file is larger)
SIGNALS = ("no-go", "maybe", "go", "info")


@dataclass
class Reason:
    """One piece of evidence: which check, what it says for the verdict, one line, and the numbers."""

    check: str
    signal: str  # one of SIGNALS
    message: str
    evidence: dict = field(default_factory=dict)


@dataclass
class Advice:
    data: str
    base: str
    task: str | None
    verdict: str  # go | no-go | maybe
    method: dict  # {"value", "reason"}
    hyperparameters: dict  # key -> {"value", "reason"}
    reasons: list[Reason]

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "method": self.method, "hyperparameters": self.hyperparameters,
                "reasons": [asdict(r) for r in self.reasons], "data": self.data, "base": self.base,
                "task": self.task}

    def render(self) -> str:
        out = [f"{self.data} on {self.base}" + (f" ({self.task})" if self.task else ""),
               f"verdict: {self.verdict.upper()}", "", "evidence:"]
        mark = {"no-go": "✗", "maybe": "?", "go": "✓", "info": "·"}
        out += [f"  {mark[r.signal]} {r.check}: {r.message}" for r in self.reasons]
        out += ["", f"method: {self.method['value']} — {self.method['reason']}", "hyperparameters:"]
        out += [f"  {k}: {v['value']} — {v['reason']}" for k, v in self.hyperparameters.items()]
        return "\n".join(out)


def verdict_of(reasons: list[Reason]) -> str:
    """Any no-go wins, then any maybe; only evidence that is all go (or neutral) says go."""
    signals = {r.signal for r in reasons}
    return "no-go" if "no-go" in signals else "maybe" if "maybe" in signals else "go"


# --- evidence from the data ----------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def size_and_duplicates(samples: list[Sample], n_rows: int) -> tuple[list[Reason], int]:
    """The guide's 1,000-example rule, counted on distinct examples (near-duplicates are one example)."""
    distinct = len({near_key(s) for s in samples})
    dup = 1 - distinct / max(len(samples), 1)
    ev = {"rows": n_rows, "valid": len(samples), "distinct": distinct, "duplicate_rate": round(dup, 4),
          "guide_minimum": GUIDE_MIN_EXAMPLES}
    if distinct < TINY:
        size = Reason("size", "no-go", f"only {distinct} distinct examples, far below the guide's "
                      f"{GUIDE_MIN_EXAMPLES:,}: prompt the base with a few of them (or use RAG), or collect more", ev)
    elif distinct < GUIDE_MIN_EXAMPLES:
        size = Reason("size", "maybe", f"{distinct} distinct examples, under the guide's {GUIDE_MIN_EXAMPLES:,}: "
                      "expect modest gains; LoRA with more epochs, or add data (`tuneforge data augment`)", ev)
    else:
        size = Reason("size", "go", f"{distinct:,} distinct examples, at or above the guide's "
                      f"{GUIDE_MIN_EXAMPLES:,}", ev)
    if dup > DUPLICATE_RATE:
        d = Reason("duplicates", "maybe", f"{_pct(dup)} of the rows repeat another (exact or near): they "
                   "over-weight those examples; de-duplicate (`tuneforge data check` lists them)", ev)
    else:
        d = Reason("duplicates", "go", f"{_pct(dup)} of the rows repeat another", ev)
    return [size, d], distinct


def format_consistency(report) -> list[Reason]:
    ev = {"formats": report.formats, "errors": len(report.errors)}
    if report.errors:
        e = report.errors[0]
        return [Reason("format", "no-go", f"{len(report.errors)} row(s) fail the data checks (first: {e['where']}: "
                       f"{e['code']}: {e['message']}); fix them first (`tuneforge data check`)", ev)]
    odd = [w for w in report.warnings if w.startswith("inconsistent formatting")]
    if odd:
        return [Reason("format", "maybe", odd[0], ev)]
    return [Reason("format", "go", f"one consistent format ({report.format}) in every row", ev)]


def label_balance(report) -> list[Reason]:
    bal = report.label_balance
    if not bal:
        return []
    counts = sorted(bal.values())
    ev = {"labels": bal}
    if len(counts) == 1:
        return [Reason("balance", "no-go", f"every example has the label '{next(iter(bal))}': nothing to learn", ev)]
    ratio = counts[-1] / counts[0]
    ev["ratio"] = round(ratio, 2)
    big, small = max(bal, key=bal.get), min(bal, key=bal.get)
    if ratio > IMBALANCE_RATIO:
        return [Reason("balance", "maybe", f"label '{big}' has {bal[big]} examples, '{small}' {bal[small]} (ratio "
                       f"{ratio:.1f} > {IMBALANCE_RATIO}): the model will favour '{big}'; collect or synthesize "
                       "examples of the rare labels (`tuneforge data augment --method synthesize`)", ev)]
    return [Reason("balance", "go", f"{len(counts)} labels, largest/smallest = {ratio:.1f}", ev)]


def _user_text(s: Sample) -> str:
    return s.text or "" if s.messages is None else (s.prompt_messages[-1]["content"] if s.prompt_messages else "")


def distinct_n(texts: list[list[str]], n: int) -> float:
    """Distinct n-grams / n-grams over all texts (1.0: nothing repeats)."""
    grams = [tuple(t[i:i + n]) for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def diversity(samples: list[Sample]) -> list[Reason]:
    toks = [near_dup_text(_user_text(s)).split() for s in samples]
    d1, d2 = distinct_n(toks, 1), distinct_n(toks, 2)
    ev = {"distinct_1": round(d1, 4), "distinct_2": round(d2, 4)}
    if d2 < LOW_DIVERSITY:
        return [Reason("diversity", "maybe", f"prompts are nearly all alike (distinct bigrams {d2:.3f}): the model "
                       "may learn the template rather than the task; add varied examples", ev)]
    return [Reason("diversity", "info", f"prompt diversity: distinct unigrams {d1:.3f}, bigrams {d2:.3f}", ev)]


def copying(samples: list[Sample]) -> list[Reason]:
    """Answers found (almost) word for word in their prompt: extraction, which a prompt or a rule can often do;
    few distinct answers for many prompts: a lookup or retrieval over known answers can often do."""
    pairs = [(near_dup_text(_user_text(s)).split(), near_dup_text(s.reference or "").split())
             for s in samples if s.messages is not None and s.label is None and s.reference]
    if not pairs:
        return []
    copied = sum(1 for p, a in pairs if a and sum(w in set(p) for w in a) / len(a) >= 0.9) / len(pairs)
    answers = len({" ".join(a) for _, a in pairs})
    ev = {"copied_rate": round(copied, 4), "distinct_answers": answers, "examples": len(pairs)}
    out = []
    if copied >= COPIED:
        out.append(Reason("copying", "maybe", f"in {_pct(copied)} of examples the answer is copied from the prompt: "
                          "an extraction task; a prompt to the base (or a rule) may do", ev))
    else:
        out.append(Reason("copying", "go", f"answers are not copied from the prompts ({_pct(copied)} are)", ev))
    if len(pairs) >= 50 and answers / len(pairs) <= FEW_ANSWERS:
        out.append(Reason("retrieval", "maybe", f"only {answers} distinct answers for {len(pairs)} examples: "
                          "retrieval over the known answers (RAG) or a classifier may do", ev))
    return out


def _context_of(tokenizer, base_path: Path | None) -> int | None:
    if base_path is not None and (base_path / "config.json").is_file():
        import json

        cfg = json.loads((base_path / "config.json").read_text())
        for k in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            if isinstance(cfg.get(k), int):
                return cfg[k]
    m = getattr(tokenizer, "model_max_length", None)
    return m if isinstance(m, int) and m < 10**7 else None


def token_lengths(samples: list[Sample], tokenizer, seed: int) -> tuple[list[int], list[int], int]:
    """(total tokens, supervised tokens) per example through the base's chat template, on at most
    TOKEN_SAMPLE sampled examples; also returns how many were measured."""
    from tuneforge.data.tokenize import encode

    picked = samples if len(samples) <= TOKEN_SAMPLE else random.Random(seed).sample(samples, TOKEN_SAMPLE)
    enc = [encode(s, tokenizer, max_seq_len=10**9) for s in picked]
    return [len(e.input_ids) for e in enc], [e.n_supervised for e in enc], len(picked)


def _quantile(xs: list[int], q: float) -> int:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def fitting_seq_len(lengths: list[int], context: int | None) -> int:
    """The smallest power of two >= the 99th-percentile example (at least 128), capped by the base's context."""
    p99 = _quantile(lengths, 0.99)
    n = max(128, 1 << max(0, math.ceil(math.log2(max(p99, 1)))))
    return min(n, context) if context else n


def lengths_reason(lengths: list[int], supervised: list[int], measured: int, context: int | None) -> list[Reason]:
    over = sum(1 for x in lengths if context and x > context)
    ev = {"measured": measured, "tokens_p50": _quantile(lengths, 0.5), "tokens_p95": _quantile(lengths, 0.95),
          "tokens_max": max(lengths), "answer_tokens_p50": _quantile(supervised, 0.5),
          "answer_tokens_p95": _quantile(supervised, 0.95), "context": context, "over_context": over}
    msg = (f"tokens per example p50 {ev['tokens_p50']}, p95 {ev['tokens_p95']}, max {ev['tokens_max']}; answers "
           f"p50 {ev['answer_tokens_p50']}, p95 {ev['answer_tokens_p95']} tokens")
    if over:
        return [Reason("length", "maybe", f"{over} of {measured} examples exceed the base's context of {context} "
                       f"tokens and would be truncated ({msg})", ev)]
    return [Reason("length", "go", msg + (f"; all fit the base's context of {context}" if context else ""), ev)]


# --- evidence from the base model ----------------------------------------------------------------------------
def zero_shot(samples: list[Sample], base: str, *, n: int, seed: int, task: str | None,
              max_new_tokens: int, progress: bool = False) -> tuple[Reason, list[dict]]:
    """Measure how well the base already answers: greedy answers on `n` sampled examples (with `task` as the
    system prompt when given), scored by accuracy (classification) or normalised exact match, with a 95%
    bootstrap interval. Returns the reason and the scored examples."""
    from tuneforge.eval import metrics as M
    from tuneforge.eval.harness import generate, load_for_inference

    scorable = [s for s in samples if s.messages is not None and s.reference]
    picked = random.Random(seed).sample(scorable, min(n, len(scorable)))
    loaded = load_for_inference(base)
    system = [{"role": "system", "content": task}] if task else []
    chats = [system + [m for m in s.prompt_messages if not (task and m["role"] == "system")] for s in picked]
    preds, _ = generate(loaded, chats, max_new_tokens=max_new_tokens, batch_size=8)
    refs = [s.reference for s in picked]
    classify = all(s.label is not None for s in picked)
    each = [int(p.strip() == r.strip()) for p, r in zip(preds, refs)] if classify else \
        M.exact_match_each(preds, refs, normalized=True)
    ci = M.bootstrap_ci(each, n=1000, seed=seed)
    metric = "accuracy" if classify else "exact match (normalised)"
    score = ci["mean"]
    ev = {"metric": metric, "score": round(score, 4), "ci95": [round(ci["low"], 4), round(ci["high"], 4)],
          "sample": len(picked), "max_new_tokens": max_new_tokens, "system_prompt": task}
    said = f"the base scores {metric} {score:.2f} (95% CI {ci['low']:.2f}..{ci['high']:.2f}) on {len(picked)} " \
           "sampled examples"
    if score >= SOLVED:
        r = Reason("zero_shot", "no-go", said + ": it already does the task; use it as it is, with a prompt", ev)
    elif score >= PARTLY:
        r = Reason("zero_shot", "maybe", said + ": it partly does the task; try a better prompt or few-shot "
                   "examples before fine-tuning", ev)
    else:
        r = Reason("zero_shot", "go", said + ": room for fine-tuning to help", ev)
    shown = [{"prompt": _user_text(s), "reference": s.reference, "prediction": p} for s, p in zip(picked, preds)]
    return r, shown


# --- recommendations -----------------------------------------------------------------------------------------
FULL_MIN_EXAMPLES = 10_000  # enough data to use full fine-tuning's capacity (and to need it)
FULL_BYTES_PER_PARAM = 16  # fp32 weights + gradients + AdamW's two moments


def recommend_method(base_dir: Path, device: str, n_distinct: int) -> dict:
    """`methods.choose` (LoRA, or QLoRA when the base does not fit), upgraded to full fine-tuning when there is
    enough data to use it and memory for weights, gradients and Adam states."""
    import psutil

    from tuneforge import methods

    name, why = methods.choose(base_dir, device)
    if not methods.get(name).quantized_base and n_distinct >= FULL_MIN_EXAMPLES and not device.startswith("cuda"):
        size = methods.weight_bytes(base_dir)
        need = size / 4 * FULL_BYTES_PER_PARAM * 1.5
        if need < psutil.virtual_memory().available:
            return {"value": methods.ALL_WEIGHTS, "reason": f"{n_distinct:,} distinct examples can use full "
                    f"fine-tuning's capacity and ~{need / 2**30:.1f} GB (weights, gradients, Adam, activations) fits the free RAM; "
                    "watch for catastrophic forgetting (or use lora: faster, far less memory)"}
    return {"value": name, "reason": why.split(": ", 1)[-1] if why.startswith("method auto") else why}


def recommend_hyperparameters(n_train: int, method: str, *, n_params: int | None = None, device: str = "cpu",
                              lengths: list[int] | None = None, context: int | None = None) -> dict:
    """Starting hyperparameters, each {"value", "reason"}: the learning rate and epochs `tuneforge train` would
    pick itself (train/auto.py, from the bench in bench/RESULTS.md "Defaults"), a batch size within the guide's
    4-32, warm-up 10%. The one place `advise` and `--write-config` take them from; TrainConfig keys and types."""
    from tuneforge import methods
    from tuneforge.train import auto

    hp: dict[str, dict] = {}

    def put(key: str, value, reason: str) -> None:
        hp[key] = {"value": value, "reason": reason}

    if n_params:
        lr, why = auto.learning_rate(method, n_params)
        put("learning_rate", lr, why.split(": ", 1)[1].replace("; --learning_rate to override", ""))
    else:
        put("learning_rate", "auto", "base size unknown here: `train` picks it from the base's size (train/auto.py)")
    p95 = _quantile(lengths, 0.95) if lengths else None
    if p95 and p95 > 512:
        bs, why = 4, f"long examples (p95 {p95} tokens): the guide's smallest batch (4) bounds activation memory"
    elif device.startswith("cuda"):
        bs, why = 16, "GPU: mid-range of the guide's 4-32"
    else:
        bs, why = 8, "CPU: lower end of the guide's 4-32 (step time grows with tokens per step)"
    put("per_device_train_batch_size", bs, why)
    epochs, why = auto.epochs(n_train, bs, 1)
    put("num_train_epochs", epochs, why.split(": ", 1)[1].replace("; --num_train_epochs or --max_steps to override",
                                                                  ""))
    kind, why = auto.lr_scheduler(epochs_auto=True, validated=True)  # what `train` picks with epochs auto
    put("lr_scheduler_type", kind, why.split(": ", 1)[1].replace("; --lr_scheduler_type to override", ""))
    put("warmup_ratio", 0.1, "the guide: warm-up over 10% of the planned steps")
    if lengths:
        n = fitting_seq_len(lengths, context)
        cut = sum(1 for x in lengths if x > n)
        put("max_seq_len", n, f"covers the 99th-percentile example ({_quantile(lengths, 0.99)} tokens); "
            f"{cut} of {len(lengths)} measured examples would be truncated")
    put("val_split", 0.1, "hold out 10% to watch validation loss (guide: monitor validation metrics)")
    put("early_stopping_patience", 3, "stop after 3 evaluations where neither validation loss nor exact match "
        "improved and keep the best weights (guide: early stopping against overfitting); with the epoch cap, "
        "this is what decides the run's length")
    if methods.get(method).lora_shaped:
        put("lora_r", 16, "the guide's LoRA rank (r=16, alpha=32)")
        put("lora_alpha", 32, "the guide's LoRA config")
        put("target_modules", ["all-linear"], "every linear layer: it learnt more than the guide's q_proj+v_proj "
            "on every task of the defaults bench, at ~1.5x the step time (bench/RESULTS.md, Defaults)")
    return hp


# --- the whole advice ------------------------------------------------------------------------------------------
def advise(path: str | Path, *, base: str = DEFAULT_BASE, task: str | None = None, sample: int = 20,
           seed: int = 0, progress: bool = False) -> Advice:
    """Read the data and the base, measure, and recommend. `sample` examples are answered by the base
    (0 skips the zero-shot measurement, which is the slow part: one batched generation)."""
    from tuneforge import methods
    from tuneforge.data.load import scan
    from tuneforge.models.load import default_device, load_tokenizer, resolve

    path = Path(path)
    tok = load_tokenizer(base)
    base_dir = resolve(base)
    base_dir = base_dir if base_dir.is_dir() else None
    context = _context_of(tok, base_dir)
    report = check_file(path, tokenizer=None)  # schema, formats, duplicates, balance (tokens below, sampled)
    samples = [s for _, s in scan(path).valid] if report.n_valid else []
    if not samples:
        raise TuneforgeError(f"{path}: no valid example to advise on ({len(report.errors)} error(s); run "
                             f"`tuneforge data check {path}`)")
    reasons = format_consistency(report)
    size, distinct = size_and_duplicates(samples, report.n_examples)
    reasons += size + label_balance(report) + diversity(samples)
    lengths, supervised, measured = token_lengths(samples, tok, seed)
    reasons += lengths_reason(lengths, supervised, measured, context) + copying(samples)
    if sample > 0 and any(s.reference for s in samples if s.messages is not None):
        max_new = min(512, _quantile(supervised, 1.0) + 16)
        if progress:
            print(f"tuneforge: measuring the base's zero-shot answers on {min(sample, len(samples))} examples",
                  file=sys.stderr)
        r, _ = zero_shot(samples, base, n=sample, seed=seed, task=task, max_new_tokens=max_new)
        reasons.append(r)
    elif sample > 0:
        reasons.append(Reason("zero_shot", "info", "plain text (no answers): nothing to score zero-shot; this is "
                              "continued pre-training, not instruction tuning"))
    device = default_device()
    try:
        method = recommend_method(base_dir, device, distinct) if base_dir else \
            {"value": methods.DEFAULT,
             "reason": "hub model not downloaded here: LoRA, the guide's parameter-efficient default"}
    except ConfigError as e:  # not even a 4-bit base fits: say so as evidence, recommend the smallest footprint
        reasons.append(Reason("memory", "no-go", f"{e}; use a smaller base or a machine with more memory"))
        method = {"value": methods.LOW_MEMORY,
                  "reason": "the smallest memory footprint, and it still does not fit here"}
    n_train = int(distinct * 0.9)
    try:
        from tuneforge.advise.cost import model_shape
        n_params = model_shape(base).params
    except Exception:  # noqa: BLE001 - a hub id not downloaded here: `train` resolves the rate itself
        n_params = None
    hp = recommend_hyperparameters(n_train, method["value"], n_params=n_params, device=device, lengths=lengths,
                                   context=context)
    return Advice(str(path), base, task, verdict_of(reasons), method, hp, reasons)


def config_values(advice: Advice) -> dict:
    """The advice as TrainConfig values (checked by TrainConfig, so the file always loads)."""
    values = {"base": advice.base, "data": advice.data, "method": advice.method["value"],
              **{k: v["value"] for k, v in advice.hyperparameters.items()}}
    TrainConfig(**values)
    return values


def write_config(advice: Advice, path: str | Path) -> Path:
    """A training config YAML with each value's reason as a comment: `tuneforge train --config FILE --output RUN`."""
    import yaml

    from tuneforge.run import write_atomic_text

    values = config_values(advice)
    why = {"method": advice.method["reason"], **{k: v["reason"] for k, v in advice.hyperparameters.items()}}
    lines = [f"# tuneforge advise {advice.data} (verdict: {advice.verdict}); each value says why it was chosen.",
             f"# train: tuneforge train --config {path} --output runs/NAME"]
    for k, v in values.items():
        dumped = yaml.safe_dump({k: v}, default_flow_style=True, width=10**6).strip()[1:-1]
        lines.append(dumped + (f"  # {why[k]}" if k in why else ""))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic_text(p, "\n".join(lines) + "\n")
