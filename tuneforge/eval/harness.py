"""Load a run or model for inference and answer prompts in batches with its chat template.

Used by `tuneforge generate`, `tuneforge eval` and the server: one way to turn prompts into answers. A run trained
on classification data (`Loaded.labels` set) answers with a label by constrained prediction (`eval.classify`)
unless free generation is asked for; `answer()` makes that choice for every caller the same way.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge import methods
from tuneforge.data.formats import Sample
from tuneforge.data.tokenize import render_prompt
from tuneforge.errors import TuneforgeError
from tuneforge.eval import preference
from tuneforge.eval.preference import is_preference_data, pair_logps
from tuneforge.run import is_run, read_run, write_json


@dataclass
class Loaded:
    model: object
    tokenizer: object
    name: str
    labels: list[str] | None = None  # a classification run's label set (run.json): answer by constrained prediction


def load_for_inference(target: str | Path, *, device: str | None = None) -> Loaded:
    """A run dir (merged model/ if present, else base + adapter/), a model dir (int8/int4 exports included),
    an ONNX export dir (onnxruntime), a GGUF file or export dir, an alias or a hub id."""
    from tuneforge.models.load import load_base

    target = str(target)
    if (Path(target) / "model.onnx").is_file():  # an ONNX export: onnxruntime behind the same interface
        from transformers import AutoTokenizer

        from tuneforge.export.onnx import OrtCausalLM

        tok = AutoTokenizer.from_pretrained(target)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return Loaded(OrtCausalLM(target), tok, target)
    if is_run(target):
        run = read_run(target)
        labels = run.info.get("labels") or None
        if run.model is not None:
            b = load_base(str(run.model), device=device)
            return Loaded(b.model.eval(), b.tokenizer, target, labels)
        if run.adapter is not None:
            from peft import PeftModel

            b = load_base(run.info["base"], device=device)
            model = PeftModel.from_pretrained(b.model, str(run.adapter))
            row = methods.METHODS.get(run.info.get("method"))
            if row is not None and row.mergeable:
                model = model.merge_and_unload()  # same outputs, no adapter overhead per token
            return Loaded(model.eval(), b.tokenizer, target, labels)
        raise TuneforgeError(f"{target}: run has neither model/ nor adapter/ (did training finish?)")
    b = load_base(target, device=device)
    return Loaded(b.model.eval(), b.tokenizer, target)


def answer(loaded: Loaded, prompts: list, *, free: bool = False, batch_size: int = 16,
           **generation) -> tuple[list[str], list[float], list[dict[str, float]] | None]:
    """What a run says to each prompt: its label (constrained prediction) for a classification run, else (or
    with `free`) generated text. Returns (answers, per-example latency s, per-label probabilities or None)."""
    if loaded.labels and not free:
        from tuneforge.eval.classify import predict

        preds, lat = predict(loaded, prompts, loaded.labels, batch_size=batch_size)
        return [p.label for p in preds], lat, [p.probabilities for p in preds]
    texts, lat = generate(loaded, prompts, batch_size=batch_size, **generation)
    return texts, lat, None


def base_of(target: str | Path) -> str:
    if not is_run(target):
        raise TuneforgeError(f"{target}: --baseline base needs a run directory (to know its base)")
    return read_run(target).info["base"]


@torch.no_grad()
def generate(loaded: Loaded, prompts: list, *, max_new_tokens: int = 128, batch_size: int = 16,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             progress=None) -> tuple[list[str], list[float]]:
    """Answers (special tokens stripped) and per-example latency in seconds (batch time / batch size).

    Prompts are sorted by length so batches pad little; results come back in input order.
    """
    tok, model = loaded.tokenizer, loaded.model
    texts = [render_prompt(p, tok) if not isinstance(p, str) else
             tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outs: list[str] = [""] * len(texts)
    lat: list[float] = [0.0] * len(texts)
    side = tok.padding_side
    tok.padding_side = "left"
    device = next(model.parameters()).device
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            t0 = time.perf_counter()
            kw = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
            if do_sample:
                kw.update(temperature=temperature, top_p=top_p)
            gen = model.generate(**enc, **kw)
            dt = (time.perf_counter() - t0) / len(idx)
            for row, i in enumerate(idx):
                outs[i] = tok.decode(gen[row, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
                lat[i] = dt
            if progress:
                progress(len(idx))
    finally:
        tok.padding_side = side
    return outs, lat


def local_chat(target: str | Path, *, temperature: float = 0.7, top_p: float = 0.95, max_new_tokens: int = 256,
               seed: int = 0, batch_size: int = 8, device: str | None = None):
    """(chat function, name) over a local run or model: a list of chats in, one reply each out. What
    `tuneforge data augment --with MODEL` calls; seeded, so the same calls give the same replies."""
    loaded = load_for_inference(target, device=device)
    calls = [0]

    def chat(chats: list[list[dict]]) -> list[str]:
        torch.manual_seed(seed * 1_000_003 + calls[0])
        calls[0] += 1
        outs, _ = generate(loaded, chats, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           do_sample=temperature > 0, temperature=temperature or 1.0, top_p=top_p)
        return outs

    return chat, str(target)


@torch.no_grad()
def reference_perplexity(loaded: Loaded, samples: list[Sample], *, max_seq_len: int = 2048,
                         batch_size: int = 16) -> float:
    """exp(mean NLL) of the reference answers (supervised tokens only) under the model."""
    from tuneforge.data.tokenize import encode
    from tuneforge.eval.metrics import perplexity
    from tuneforge.train.loss import loss_sum
    from tuneforge.train.packing import pad

    enc = [encode(s, loaded.tokenizer, max_seq_len=max_seq_len) for s in samples]
    total, n = 0.0, 0
    for i in range(0, len(enc), batch_size):
        s, k, _ = loss_sum(loaded.model, pad(enc[i:i + batch_size], loaded.tokenizer.pad_token_id))
        total, n = total + float(s), n + k
    return perplexity(total, n)


def metric_deltas(task: str, a: list[str], b: list[str], refs: list[str], labels=None) -> dict:
    """Per-metric delta (b - a) with a paired bootstrap 95% CI over examples."""
    from tuneforge.eval import metrics as M

    out = {}
    if task == "classification":
        acc = lambda p: [int(x.strip() == r.strip()) for x, r in zip(p, refs)]  # noqa: E731
        out["accuracy"] = M.bootstrap_delta(acc(a), acc(b))
        f1 = lambda p, r: M.classification_metrics(p, r, labels)["f1_macro"]  # noqa: E731
        out["f1_macro"] = M.bootstrap_corpus_delta(f1, a, b, refs, n=200)
        return out
    for norm, key in ((False, "exact_match"), (True, "exact_match_normalized")):
        out[key] = M.bootstrap_delta(M.exact_match_each(a, refs, norm), M.exact_match_each(b, refs, norm))
    ra, rb = M.rouge_each(a, refs), M.rouge_each(b, refs)
    for k in ra:
        out[k] = M.bootstrap_delta(ra[k], rb[k])
    out["bleu"] = M.bootstrap_corpus_delta(M.bleu, a, b, refs, n=200)
    out["chrf"] = M.bootstrap_corpus_delta(M.chrf, a, b, refs, n=200)
    return out


def check_against_training(target: str, data: str, samples: list[Sample]) -> list[str] | None:
    """For a run: refuse test data in another format than its training data (it would measure something else)
    or with a label the run never saw; returns the training label set for classification, else None."""
    if not is_run(target) or not samples:
        return None
    run = read_run(target)
    train_file = run.config.get("data")
    recorded = run.info.get("labels")
    trained = None
    if train_file and Path(train_file).is_file():
        from tuneforge.data.load import load_samples

        trained = load_samples(train_file)
        if trained and trained[0].format != samples[0].format:
            raise TuneforgeError(f"{data}: examples are {samples[0].format} but {target} was trained on "
                                 f"{trained[0].format} ({train_file}); evaluate on data in the training format")
    if samples[0].label is None:
        return None
    if recorded:
        labels = list(recorded)
    elif trained:
        labels = sorted({s.label for s in trained if s.label is not None})
    else:
        return None
    unknown = next((s for s in samples if s.label not in labels), None)
    if unknown:
        raise TuneforgeError(f"{unknown.where}: label '{unknown.label}' is not in the label set the run was "
                             f"trained on ({', '.join(labels)})")
    return labels


def task_of(samples: list[Sample]) -> str:
    return "classification" if samples and all(s.label is not None for s in samples) else "generation"


def _select(scores: dict, wanted: list[str] | None) -> dict:
    if not wanted:
        return scores
    unknown = [m for m in wanted if m not in scores]
    if unknown:
        raise TuneforgeError(f"--metrics: unknown metric(s) {', '.join(unknown)} (have: {', '.join(scores)})")
    return {k: v for k, v in scores.items() if k in wanted}


def evaluate_file(target: str, data: str, *, baseline: str | None = None, max_new_tokens: int = 128,
                  batch_size: int = 16, limit: int | None = None, progress: bool = True,
                  metrics: list[str] | None = None, temperature: float = 0.0, top_p: float = 1.0,
                  seed: int = 0, free: bool = False) -> dict:
    """Answer every example of `data` with target (and baseline), score, return the eval.json dict.

    Classification data is answered by constrained prediction over the label set (the run's, else the data's)
    for both models, so the comparison is like for like; `free` generates text instead, for both."""
    from tqdm.auto import tqdm

    from tuneforge.data.load import load_samples
    from tuneforge.eval import metrics as M

    samples = load_samples(data)[:limit]
    trained_labels = check_against_training(target, data, samples)
    refs = [s.reference if s.messages is not None else "" for s in samples]
    if any(r is None for r in refs):
        raise TuneforgeError(f"{data}: every evaluation example needs a reference answer (assistant turn)")
    task = task_of(samples)
    labels = (trained_labels or sorted({s.label for s in samples})) if task == "classification" else None
    mode = "constrained" if task == "classification" and not free else "free"
    if mode == "constrained" and len(labels) < 2:
        raise TuneforgeError(f"{data}: one label ({labels[0]}) and no training run to give the label set: "
                             "constrained prediction needs 2+ labels (or use --free)")
    if metrics:  # check the names before any generation: scoring one example lists what the task reports
        known = {**M.metrics_for(task, refs[:1], refs[:1], labels=labels), "perplexity": 0.0}
        _select({**known, "expected_calibration_error": 0.0} if mode == "constrained" else known, metrics)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0, "temperature": temperature,
                "top_p": top_p, "seed": seed, "batch_size": batch_size}
    models = {"tuned": target}
    if baseline:
        models = {"baseline": base_of(target) if baseline == "base" else baseline, "tuned": target}
    result: dict = {"data": str(data), "task": task, "mode": mode, "n_examples": len(samples),
                    "generation": settings, "models": {}, "examples": []}
    if labels is not None:
        result["labels"] = labels
    preds_by, probs_by, logps_by = {}, {}, {}
    for role, name in models.items():
        loaded = load_for_inference(name)
        bar = tqdm(total=len(samples), desc=f"{'score labels' if mode == 'constrained' else 'generate'} ({role})",
                   disable=not progress, file=sys.stderr)
        if mode == "constrained":
            from tuneforge.eval.classify import predict

            out, lat = predict(loaded, samples, labels, batch_size=batch_size, progress=bar.update)
            preds, probs_by[role] = [p.label for p in out], [p.probabilities for p in out]
        else:
            torch.manual_seed(seed)
            preds, lat = generate(loaded, samples, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  do_sample=temperature > 0, temperature=temperature or 1.0, top_p=top_p,
                                  progress=bar.update)
        bar.close()
        preds_by[role] = (preds, lat)
        scores = M.metrics_for(task, preds, refs, labels=labels)
        if mode == "constrained":
            scores["expected_calibration_error"] = M.expected_calibration_error(
                [pr[p] for pr, p in zip(probs_by[role], preds)], [p == r.strip() for p, r in zip(preds, refs)])
        if any(s.messages is not None for s in samples) and (not metrics or "perplexity" in metrics):
            scores["perplexity"] = reference_perplexity(loaded, samples)
        if mode == "free" and is_preference_data(samples) and isinstance(loaded.model, torch.nn.Module):
            logps_by[role] = pair_logps(loaded, samples)
            scores.update(preference.model_metrics(logps_by[role], preds, samples))
        scores = _select(scores, metrics)
        result["models"][role] = {"name": str(name), "metrics": scores,
                                  "mean_latency_s": sum(lat) / max(len(lat), 1)}
        del loaded
    for i, s in enumerate(samples):
        ex = {"where": s.where, "prompt": s.prompt_messages[-1]["content"] if s.messages else s.text,
              "reference": refs[i]}
        for role in models:
            ex[f"{role}_prediction"] = preds_by[role][0][i]
            if role in probs_by:
                ex[f"{role}_probabilities"] = probs_by[role][i]
            ex[f"{role}_latency_s"] = round(preds_by[role][1][i], 4)
        result["examples"].append(ex)
    if baseline:
        deltas = metric_deltas(task, preds_by["baseline"][0], preds_by["tuned"][0], refs, labels)
        if len(logps_by) == 2:  # preference data: paired CIs and DPO's implicit rewards (baseline = reference)
            for key, fn in (("preference_accuracy", lambda lp, _: preference.per_pair(lp)[0]),
                            ("logp_margin", lambda lp, _: preference.per_pair(lp)[1]),
                            ("greedy_prefers_chosen",
                             lambda _, role: preference.greedy_prefers_chosen(preds_by[role][0], samples))):
                deltas[key] = M.bootstrap_delta(fn(logps_by["baseline"], "baseline"), fn(logps_by["tuned"], "tuned"))
            result["preference"] = preference.reward_metrics(logps_by["tuned"], logps_by["baseline"],
                                                             _run_beta(target))
        result["delta"] = {k: v for k, v in deltas.items() if not metrics or k in metrics}
    return result


def _run_beta(target: str) -> float:
    """The β a preference run trained with (its config), else DPO's default: the scale of its implicit reward."""
    from tuneforge.train.objectives.dpo import default_beta

    if is_run(target):
        cfg = read_run(target).config or {}
        if cfg.get("beta"):
            return float(cfg["beta"])
        return default_beta(cfg.get("loss_type") or "sigmoid")
    return default_beta("sigmoid")


def save_eval(target: str, result: dict, output: str | Path | None = None) -> list[Path]:
    """Write eval.json (to `output`, else into the run) and, for a run's own eval.json, refresh report.html.
    Returns the paths written (none for a plain model without --output)."""
    own = Path(target) / "eval.json" if is_run(target) else None
    dest = Path(output) if output else own
    if dest is None:
        return []
    written = [write_json(dest, result)]
    if own is not None and dest.resolve() == own.resolve():
        from tuneforge.eval.report import write_report

        written.append(write_report(target))
    return written
