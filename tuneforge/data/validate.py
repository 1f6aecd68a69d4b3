"""The pre-flight report for a data file: every schema error (OpenAI codes) with its line, token lengths,
truncation, duplicates, label balance and the guide's warnings. Run: `tuneforge data check FILE [--json]`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data.formats import REINFORCEMENT, Preference, exact_key, near_key
from tuneforge.data.load import scan
from tuneforge.data.tokenize import IGNORE, encode, encode_preference
from tuneforge.errors import DataError

GUIDE_MIN_EXAMPLES = 1000  # the guide: below this, prompting or RAG usually beats fine-tuning
IMBALANCE_RATIO = 5  # largest/smallest class above this is "heavy" imbalance
MAX_LISTED = 50  # errors and duplicate groups shown by render(); to_dict() has them all



@dataclass
class Report:
    """What `data check` prints; `to_dict()` keys are stable (the CLI's --json and CI scripts read them)."""

    path: str
    n_examples: int = 0  # rows read, valid or not
    n_valid: int = 0
    format: str | None = None
    formats: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tokens: dict | None = None  # per example, before truncation; None without a tokenizer
    supervised_tokens: int | None = None  # tokens that carry loss, after truncation (what training sees)
    n_truncated: int | None = None
    n_unsupervised: int | None = None  # truncation cut the whole answer: training skips these
    max_seq_len: int = 2048
    duplicates: dict = field(default_factory=lambda: {"exact": [], "near": []})
    label_balance: dict | None = None
    answer_tokens: dict | None = None  # preference data: {"chosen"|"rejected": {"mean", "max"}} answer tokens

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "n_examples": self.n_examples, "n_valid": self.n_valid,
                "format": self.format, "formats": self.formats, "errors": self.errors, "warnings": self.warnings,
                "tokens": self.tokens, "supervised_tokens": self.supervised_tokens, "n_truncated": self.n_truncated,
                "n_unsupervised": self.n_unsupervised, "max_seq_len": self.max_seq_len,
                "duplicates": self.duplicates, "label_balance": self.label_balance,
                "answer_tokens": self.answer_tokens}

    def render(self) -> str:
        """Plain text (no markup): the CLI echoes it, and it reads the same in a log file."""
        fmt = self.format or "unknown"
        if len(self.formats) > 1:
            fmt += " (mixed: " + ", ".join(f"{k} {v}" for k, v in sorted(self.formats.items())) + ")"
        out = [f"{self.path}", f"  examples: {self.n_examples} ({self.n_valid} valid), format: {fmt}"]
        if self.tokens:
            t = self.tokens
            out.append(f"  tokens per example: min {t['min']}, p50 {t['p50']}, mean {t['mean']}, p95 {t['p95']}, "
                       f"max {t['max']}; total {t['total']:,}, supervised {self.supervised_tokens:,}")
            if self.answer_tokens:
                a = self.answer_tokens
                out.append(f"  answer tokens: chosen mean {a['chosen']['mean']} (max {a['chosen']['max']}), "
                           f"rejected mean {a['rejected']['mean']} (max {a['rejected']['max']})")
            out.append(f"  truncated at max_seq_len={self.max_seq_len}: {self.n_truncated}"
                       + (f" ({self.n_unsupervised} lose their whole answer)" if self.n_unsupervised else ""))
        else:
            out.append("  tokens: not counted (no tokenizer)")
        if self.label_balance:
            out.append("  labels: " + ", ".join(f"{k} {v}" for k, v in self.label_balance.items()))
        d = self.duplicates
        out.append(f"  duplicates: {len(d['exact'])} exact group(s), {len(d['near'])} near group(s)")
        for kind in ("exact", "near"):
            for g in d[kind][:MAX_LISTED]:
                shown = ", ".join(map(str, g[:10])) + (f", ... ({len(g)} rows)" if len(g) > 10 else "")
                out.append(f"    {kind}: lines {shown}")
            if len(d[kind]) > MAX_LISTED:
                out.append(f"    ... {len(d[kind]) - MAX_LISTED} more {kind} group(s) (see --json)")
        if self.warnings:
            out.append(f"warnings ({len(self.warnings)}):")
            out += [f"  - {w}" for w in self.warnings]
        if self.errors:
            out.append(f"errors ({len(self.errors)}):")
            for e in self.errors[:MAX_LISTED]:
                out.append(f"  {e['where']}: {e['code']}" + (f" [{e['field']}]" if e["field"] else "")
                           + f": {e['message']}")
            if len(self.errors) > MAX_LISTED:
                out.append(f"  ... and {len(self.errors) - MAX_LISTED} more (see --json)")
        out.append("OK" if self.ok else f"FAILED: {len(self.errors)} error(s)")
        return "\n".join(out)


def _error_dict(e: DataError) -> dict:
    where = e.path + (f":{e.line}" if e.line is not None else "")
    return {"where": where, "line": e.line, "field": e.field, "code": e.code, "message": e.detail}


def _percentile(sorted_vals: list[int], q: float) -> int:
    """Nearest-rank percentile: an actual example length, not an interpolation."""
    return sorted_vals[min(len(sorted_vals) - 1, int(q * (len(sorted_vals) - 1) + 0.5))]


def _duplicates(good: list) -> dict:
    """Exact groups share `exact_key`; near groups share `near_key` but are not just an exact group again."""
    exact: dict[str, list[int]] = defaultdict(list)
    near: dict[str, list[int]] = defaultdict(list)
    for line, s in good:
        exact[exact_key(s)].append(line)
        near[near_key(s)].append(line)
    ex = [v for v in exact.values() if len(v) > 1]
    ex_sets = {tuple(v) for v in ex}
    return {"exact": ex, "near": [v for v in near.values() if len(v) > 1 and tuple(v) not in ex_sets]}


def histogram(sorted_lens: list[int], max_seq_len: int, bins: int = 20) -> dict:
    """Token lengths in `bins` equal-width bins from 0 to the longest example: `edges` (bins + 1 values) and
    `counts`; bins past `max_seq_len` are the truncated examples (the studio draws them red)."""
    top = max(sorted_lens[-1], 1)
    width = max(1, -(-top // bins))
    counts = [0] * bins
    for n in sorted_lens:
        counts[min(bins - 1, n // width)] += 1
    return {"edges": [i * width for i in range(bins + 1)], "counts": counts}


def _token_stats(rep: Report, good: list, tokenizer, max_seq_len: int) -> None:
    lens, sup, trunc, lost = [], 0, 0, 0
    answers: dict[str, list[int]] = {"chosen": [], "rejected": []}
    for _, s in good:
        if isinstance(s, Preference):  # two sequences: the longer one is what truncation cuts
            pair = encode_preference(s, tokenizer, max_seq_len=10**9)
            seqs = [pair.chosen, pair.rejected]
            answers["chosen"].append(pair.chosen.n_supervised)
            answers["rejected"].append(pair.rejected.n_supervised)
        else:
            seqs = [encode(s, tokenizer, max_seq_len=10**9)]  # full length, so the stats show how much is cut
        kept = [sum(1 for x in e.labels[:max_seq_len] if x != IGNORE) for e in seqs]
        lens.append(max(len(e.input_ids) for e in seqs))
        sup += sum(kept)
        trunc += any(len(e.input_ids) > max_seq_len for e in seqs)
        lost += min(kept) == 0
    srt = sorted(lens)
    rep.tokens = {"min": srt[0], "max": srt[-1], "mean": round(sum(srt) / len(srt), 1),
                  "p50": _percentile(srt, 0.5), "p95": _percentile(srt, 0.95), "total": sum(srt),
                  "histogram": histogram(srt, max_seq_len)}
    rep.supervised_tokens, rep.n_truncated, rep.n_unsupervised = sup, trunc, lost
    if answers["chosen"]:  # preference data: answer lengths per side (a length gap is a bias DPO can learn)
        rep.answer_tokens = {k: {"mean": round(sum(v) / len(v), 1), "max": max(v)} for k, v in answers.items()}
        c, r = (rep.answer_tokens[k]["mean"] for k in ("chosen", "rejected"))
        if min(c, r) > 0 and max(c, r) > 2 * min(c, r):
            rep.warnings.append(f"chosen answers average {c} tokens and rejected ones {r}: a length gap this large "
                                "can teach length instead of content (consider loss_type ipo or simpo, which "
                                "normalise by length)")
    if trunc:
        rep.warnings.append(f"{trunc} example(s) are longer than max_seq_len={max_seq_len} and will be truncated"
                            + (f"; {lost} lose their whole answer and will be skipped" if lost else "")
                            + " (raise --max-seq-len or shorten them)")


def check_file(path: str | Path, tokenizer=None, max_seq_len: int = 2048, fmt: str = "auto") -> Report:
    """Check every row of a file (never stops at the first error); token stats need a `tokenizer`."""
    res = scan(path, fmt)
    rep = Report(str(path), max_seq_len=max_seq_len, n_examples=len(res.records), formats=dict(res.formats),
                 format=res.main_format)
    rep.errors = [_error_dict(e) for e in res.errors]
    good = res.valid
    rep.n_valid = len(good)

    if len(res.formats) > 1:  # training refuses such a file, so it is an error here too
        first = next(s.format for _, s in good) if good else res.main_format
        line, other = next(((ln, s.format) for ln, s in good if s.format != first), (None, None))
        if line is not None:
            rep.errors.append(_error_dict(DataError(
                f"format '{other}' differs from '{first}' (line {good[0][0]}); use one format per file",
                path=str(path), line=line, code="inconsistent_format")))
        rep.warnings.append("inconsistent formatting: " + ", ".join(f"{v} {k}" for k, v in res.formats.most_common())
                            + " rows in one file; the guide asks for one consistent format")
    chats = [s for _, s in good if s.messages is not None and s.format == "chat"]
    with_system = sum(1 for s in chats if s.messages[0]["role"] == "system")
    if 0 < with_system < len(chats):
        rep.warnings.append(f"inconsistent formatting: {with_system} of {len(chats)} chats have a system prompt; "
                            "use the same system prompt in every example (and at inference)")
    if 0 < rep.n_valid < GUIDE_MIN_EXAMPLES:
        rep.warnings.append(f"only {rep.n_valid} valid examples: the guide advises against fine-tuning with "
                            f"< {GUIDE_MIN_EXAMPLES} examples; consider prompting or RAG, or collect more data")

    rep.duplicates = _duplicates(good)
    if rep.duplicates["exact"]:
        n = sum(len(v) - 1 for v in rep.duplicates["exact"])
        rep.warnings.append(f"{n} exact duplicate row(s) in {len(rep.duplicates['exact'])} group(s): they over-weight "
                            "those examples (splits keep each group on one side)")
    prefs = bool(good) and all(isinstance(s, Preference) for _, s in good)
    if rep.duplicates["near"] and prefs:
        rep.warnings.append(f"{len(rep.duplicates['near'])} prompt(s) have several preference pairs (or near-"
                            "duplicate prompts); splits keep each prompt's pairs on one side")
    elif rep.duplicates["near"]:
        rep.warnings.append(f"{len(rep.duplicates['near'])} group(s) of near duplicates (differ only in case, "
                            "spacing or punctuation)")

    labels = [s.label for _, s in good if s.label is not None]
    if labels:
        rep.label_balance = dict(sorted(Counter(labels).items()))
        counts = list(rep.label_balance.values())
        if len(counts) == 1:
            rep.warnings.append(f"every example has the label '{labels[0]}': nothing to classify")
        elif max(counts) > IMBALANCE_RATIO * min(counts):
            big = max(rep.label_balance, key=rep.label_balance.get)
            small = min(rep.label_balance, key=rep.label_balance.get)
            rep.warnings.append(f"label imbalance: '{big}' has {max(counts)} examples, '{small}' {min(counts)} "
                                f"(ratio > {IMBALANCE_RATIO}); the guide asks for a balanced distribution")

    if rep.format == REINFORCEMENT:
        _reinforcement_stats(rep, good, tokenizer, max_seq_len)
        return rep
    if tokenizer is not None and good:
        try:
            _token_stats(rep, good, tokenizer, max_seq_len)
        except DataError as e:  # e.g. the tokenizer has no chat template: a problem to report, not a crash
            rep.errors.append(_error_dict(e))
    if good and not any(s.reference is not None for _, s in good):
        rep.warnings.append("no example has an assistant reply: plain text trains language modelling on every "
                            "token (continued pre-training), not answering prompts")
    elif rep.n_examples and not good:
        rep.warnings.append("no valid example, so no assistant reply to learn from")
    return rep


def _reinforcement_stats(rep: Report, good: list, tokenizer, max_seq_len: int) -> None:
    """RL rows: prompt lengths (the model writes the answers, up to max_completion_length, in training) and the
    item keys a grader can read; there is no answer to supervise."""
    if tokenizer is not None and good:
        from tuneforge.data.tokenize import render_prompt

        try:
            lens = sorted(len(tokenizer(render_prompt(s, tokenizer), add_special_tokens=False)["input_ids"])
                          for _, s in good)
        except Exception as e:  # noqa: BLE001 - e.g. no chat template: a problem to report
            rep.errors.append({"where": rep.path, "line": None, "field": None, "code": "tokenizer",
                               "message": str(e)})
            return
        rep.tokens = {"min": lens[0], "max": lens[-1], "mean": round(sum(lens) / len(lens), 1),
                      "p50": _percentile(lens, 0.5), "p95": _percentile(lens, 0.95), "total": sum(lens)}
        rep.supervised_tokens, rep.n_truncated, rep.n_unsupervised = 0, sum(n > max_seq_len for n in lens), 0
        if rep.n_truncated:
            rep.warnings.append(f"{rep.n_truncated} prompt(s) are longer than max_seq_len={max_seq_len} and will "
                                "be cut from the left")
    keys = sorted({k for _, s in good for k in s.extra.get("item", {}) if k != "messages"})
    rep.warnings.append("reinforcement rows (prompts for GRPO): item keys a grader can read: "
                        + (", ".join(keys) if keys else "none (only messages)"))
